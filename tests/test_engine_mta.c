/* test_engine_mta.c -- the header actions of the diff engine applied by a
 * model of each MTA, compared field by field with the filter's list.
 *
 * The models follow the MTAs' sources as read for issue 15 (mailfilter.h,
 * HEADER EDITS ON EACH MTA):
 *   Postfix (cleanup_milter.c): its own Received: first; CHGHEADER finds
 *     the nth field of that name after it, "" unlinks it; INSHEADER index
 *     i goes before the (i+1)th field of the list, past the end appends;
 *     ADDHEADER appends.
 *   Sendmail (milter.c, headers.c): the .cf's H templates first
 *     (Return-Path, Received, ... most not carried: no value), then the
 *     message's fields; CHGHEADER counts the fields of that name that came
 *     from the message or a milter, deleted ones included ("" only marks
 *     the field); INSHEADER index i goes after entry i of the list, past
 *     the end appends; ADDHEADER fills a template of that name, else goes
 *     above the first entry of that name, else appends.
 * Both get the values raw (HDR_LEADSPC negotiated): a line is name ":"
 * value.  What must still be confirmed against the real MTAs: these
 * models (the differential test of issue 15 item 4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mailfilter/mf_engine.h>
#include <mailfilter/milter_proto.h>

/* ---- the MTA models ----------------------------------------------------- */

#define SIM_MAX 512

typedef struct ent {
  char name[32];
  char value[96];
  int has_value; /* 0: deleted, or a template the message does not carry */
  int user;      /* came from the message or a milter (Sendmail's H_USER) */
  int trace;     /* Received (Sendmail's H_TRACE) */
  int tmpl;      /* the MTA's own field: not in the filter's list */
} ent;

typedef struct sim {
  ent e[SIM_MAX];
  size_t n;
  int sendmail;
  int miss; /* a CHGHEADER that found no field */
} sim;

static void put(ent *e, const char *name, const char *value) {
  memset(e, 0, sizeof(*e));
  snprintf(e->name, sizeof e->name, "%s", name);
  if (value != NULL) {
    snprintf(e->value, sizeof e->value, "%s", value);
    e->has_value = 1;
  }
}

static void sim_insert_at(sim *s, size_t pos, const char *name,
                          const char *value) {
  assert_true(s->n < SIM_MAX);
  memmove(&s->e[pos + 1], &s->e[pos], (s->n - pos) * sizeof(ent));
  put(&s->e[pos], name, value);
  s->e[pos].user = 1;
  s->n++;
}

/* Sendmail's list with ntmpl templates (the stock .cf's nine, then more). */
static void sim_sendmail(sim *s, size_t ntmpl) {
  static const char *const names[] = {
      "Return-Path", "Received",   "Resent-Date",       "Date",
      "Resent-From", "From",       "Full-Name",         "Resent-Message-Id",
      "Message-Id"};
  memset(s, 0, sizeof(*s));
  s->sendmail = 1;
  for (size_t i = 0; i < ntmpl; i++) {
    char nm[32];
    if (i < 9)
      snprintf(nm, sizeof nm, "%s", names[i]);
    else
      snprintf(nm, sizeof nm, "X-Tmpl-%zu", i);
    put(&s->e[i], nm, i == 1 ? " by mta" : NULL);
    s->e[i].trace = i == 1;
    s->e[i].tmpl = 1;
  }
  s->n = ntmpl;
}

static void sim_postfix(sim *s) {
  memset(s, 0, sizeof(*s));
  put(&s->e[0], "Received", " by postfix");
  s->e[0].tmpl = 1;
  s->n = 1;
}

/* A field of the message as received. */
static void sim_field(sim *s, const char *name, const char *value) {
  sim_insert_at(s, s->n, name, value);
}

static void sim_apply(sim *s, const milter_action *a) {
  switch (a->type) {
  case MILTER_ACTION_CHGHEADER: {
    long want = (long)a->index;
    for (size_t i = s->sendmail ? 0 : 1; i < s->n; i++) {
      ent *e = &s->e[i];
      if (strcasecmp(e->name, a->name) != 0)
        continue;
      if (s->sendmail ? !e->user : !e->has_value)
        continue;
      if (--want > 0)
        continue;
      if (a->value[0] == '\0') {
        if (s->sendmail)
          e->has_value = 0; /* marked; still counted */
        else {
          memmove(e, e + 1, (s->n - i - 1) * sizeof(ent));
          s->n--;
        }
      } else {
        snprintf(e->value, sizeof e->value, "%s", a->value);
        e->has_value = 1;
      }
      return;
    }
    s->miss++;
    return;
  }
  case MILTER_ACTION_INSHEADER:
    if (s->sendmail) {
      size_t pos = s->n == 0 ? 0 : (a->index < s->n - 1 ? a->index : s->n - 1) + 1;
      sim_insert_at(s, pos, a->name, a->value);
    } else {
      size_t pos = a->index < s->n ? a->index : s->n;
      sim_insert_at(s, pos, a->name, a->value);
    }
    return;
  case MILTER_ACTION_ADDHEADER:
    if (s->sendmail) {
      for (size_t i = 0; i < s->n; i++) {
        ent *e = &s->e[i];
        if (strcasecmp(e->name, a->name) == 0 && !e->user && !e->trace) {
          snprintf(e->value, sizeof e->value, "%s", a->value);
          e->has_value = 1;
          e->user = 1;
          e->tmpl = 0;
          return;
        }
      }
      for (size_t i = 0; i < s->n; i++)
        if (strcasecmp(s->e[i].name, a->name) == 0) {
          sim_insert_at(s, i, a->name, a->value);
          return;
        }
    }
    sim_insert_at(s, s->n, a->name, a->value);
    return;
  default:
    return;
  }
}

/* The filter's fields as the MTA would deliver them, one "name:value"
 * per line; every one of them below the MTA's Received. */
static char *sim_out(const sim *s) {
  size_t cap = 1, len = 0;
  for (size_t i = 0; i < s->n; i++)
    cap += strlen(s->e[i].name) + strlen(s->e[i].value) + 2;
  char *out = malloc(cap);
  assert_non_null(out);
  out[0] = '\0';
  int received = 0;
  for (size_t i = 0; i < s->n; i++) {
    const ent *e = &s->e[i];
    if (e->tmpl) {
      received |= strcmp(e->name, "Received") == 0;
      continue;
    }
    if (!e->has_value)
      continue;
    assert_true(received); /* nothing of the filter's above Received */
    len += (size_t)sprintf(out + len, "%s:%s\n", e->name, e->value);
  }
  return out;
}

/* The filter's list, lines as mf_hdr_line() gives them (LF folds). */
static char *want_out(mf_trx *t) {
  mf_hdrs *h = mf_trx_headers(t);
  size_t cap = 1, len = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  out[0] = '\0';
  for (size_t i = 0; i < mf_hdr_count(h); i++) {
    char *line;
    size_t n;
    assert_int_equal(mf_hdr_line(h, i, &line, &n), 0);
    out = realloc(out, cap += n + 1);
    assert_non_null(out);
    for (size_t k = 0; k < n; k++)
      if (!(line[k] == '\r' && k + 1 < n && line[k + 1] == '\n'))
        out[len++] = line[k];
    out[len++] = '\n';
    out[len] = '\0';
    free(line);
  }
  return out;
}

/* ---- trx, edits --------------------------------------------------------- */

typedef struct hdr {
  const char *name, *value; /* value: every byte after the colon */
} hdr;

static mf_trx *make(const mf_opts *o, mf_mta mta, const char *v,
                    const hdr *h, size_t n) {
  mf_trx *t = NULL;
  assert_int_equal(mf_engine_trx_new(&t, o), 0);
  mf_engine_set_negotiated(t, MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC,
                           MILTER_DATA_64K);
  mf_engine_set_mta(t, mta);
  const char *from[] = {"<s@example.org>"};
  assert_int_equal(mf_engine_mail(t, 1, from), 0);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(
        mf_engine_header(t, h[i].name, h[i].value, strlen(h[i].value), 1), 0);
  assert_int_equal(mf_engine_eoh(t), 0);
  /* after MAIL, which starts a message: as mf_filter's snapshot */
  if (v != NULL)
    assert_int_equal(mf_engine_macro(t, "v", v), 0);
  return t;
}

typedef void (*edit_fn)(mf_hdrs *h);
static edit_fn current;
static mf_decision run_edit(mf_trx *t, void *ud) {
  (void)ud;
  current(mf_trx_headers(t));
  return MF_ACCEPT;
}

static milter_action *actions(mf_trx *t, edit_fn fn, size_t *n) {
  current = fn;
  mf_decision d = mf_engine_decide(t, MF_STAGE_EOM, run_edit, NULL);
  milter_action *a = NULL;
  assert_int_equal(mf_engine_actions(t, d, 0, &a, n), 0);
  return a;
}

/* The MTA (a model built with ntmpl templates; 0 = Postfix) applies a[]
 * to the message h[]: what it delivers must be the filter's list. */
static void check_delivery(mf_trx *t, const milter_action *a, size_t na,
                           const hdr *h, size_t n, size_t ntmpl,
                           const char *what) {
  static sim s;
  if (ntmpl == 0)
    sim_postfix(&s);
  else
    sim_sendmail(&s, ntmpl);
  for (size_t i = 0; i < n; i++)
    sim_field(&s, h[i].name, h[i].value);
  for (size_t i = 0; i < na; i++)
    sim_apply(&s, &a[i]);
  char *got = sim_out(&s);
  char *want = want_out(t);
  if (strcmp(got, want) != 0 || s.miss != 0)
    fail_msg("%s (%s, %zu templates): delivered\n%s-- but the filter's list "
             "is\n%s-- (%d CHGHEADER missed)",
             what, ntmpl ? "Sendmail" : "Postfix", ntmpl, got, want, s.miss);
  free(got);
  free(want);
}

static void expect(const milter_action *a, milter_action_type type,
                   uint32_t index, const char *name, const char *value) {
  if (getenv("MF_TEST_VERBOSE") != NULL)
    fprintf(stderr, "%c %u %s:%s\n", a->type, a->index, a->name, a->value);
  assert_int_equal(a->type, type);
  if (type != MILTER_ACTION_ADDHEADER)
    assert_int_equal(a->index, index);
  assert_string_equal(a->name, name);
  assert_string_equal(a->value, value);
}

#define APPEND 1000000u

typedef struct want_act {
  char type; /* MILTER_ACTION_* */
  uint32_t index;
  const char *name, *value;
} want_act;

static void expect_all(const milter_action *a, size_t n, const want_act *w,
                       size_t nw) {
  assert_int_equal(n, nw);
  for (size_t i = 0; i < nw; i++)
    expect(&a[i], (milter_action_type)w[i].type, w[i].index, w[i].name,
           w[i].value);
}

/* ---- (a) empty values ---------------------------------------------------- */

static const hdr empty_msg[] = {{"From", " a@example.org"},
                                {"X-Empty", ""},
                                {"Subject", " s"},
                                {"X-A", " 1"}};
#define N_EMPTY (sizeof empty_msg / sizeof empty_msg[0])

static void add_empty(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add_raw(h, "X-New", "", 0), 0);
}

static void rename_empty(mf_hdrs *h) {
  assert_int_equal(mf_hdr_rename(h, 1, "X-Renamed"), 0);
}

static void set_empty(mf_hdrs *h) {
  assert_int_equal(mf_hdr_set_raw(h, 2, "", 0), 0); /* Subject: */
}

static void set_last_empty(mf_hdrs *h) {
  assert_int_equal(mf_hdr_set_raw(h, 3, "", 0), 0); /* X-A: */
}

/* The empty-value message through the engine for mta, edited by fn; the
 * actions are checked by the caller, then delivered by the MTA's model. */
static mf_trx *empty_trx;
static milter_action *empty_case(mf_mta mta, edit_fn fn, size_t *n) {
  empty_trx = make(NULL, mta, NULL, empty_msg, N_EMPTY);
  return actions(empty_trx, fn, n);
}
static void empty_done(milter_action *a, size_t n, int sm, const char *what) {
  check_delivery(empty_trx, a, n, empty_msg, N_EMPTY, sm ? 9 : 0, what);
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(empty_trx);
}

static void test_empty_values(void **state) {
  (void)state;
  for (int sm = 0; sm < 2; sm++) {
    mf_mta mta = sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX;
    size_t n;
    /* an added empty field: "X-New:", no space */
    milter_action *a = empty_case(mta, add_empty, &n);
    assert_int_equal(n, 1);
    expect(&a[0], sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER,
           APPEND, "X-New", "");
    empty_done(a, n, sm, "add empty");

    /* "X-Empty:" renamed: "X-Renamed:" where it was (Postfix: insert
     * before Subject, delete; Sendmail: see below) */
    /* Sendmail: keep From (saves 2) or Subject+X-A (4): the latter; From
     * and X-Renamed go to the top */
    static const want_act rename_pf[] = {{'i', 3, "X-Renamed", ""},
                                         {'m', 1, "X-Empty", ""}};
    static const want_act rename_sm[] = {{'m', 1, "X-Empty", ""},
                                         {'m', 1, "From", ""},
                                         {'i', 1, "X-Renamed", ""},
                                         {'i', 1, "From", " a@example.org"}};
    a = empty_case(mta, rename_empty, &n);
    if (!sm)
      expect_all(a, n, rename_pf, 2);
    else
      expect_all(a, n, rename_sm, 4);
    empty_done(a, n, sm, "rename empty");

    /* a value set to "": CHGHEADER cannot say it (empty deletes) */
    a = empty_case(mta, set_empty, &n);
    /* Postfix, bottom up: "Subject:" before X-A, then the old one goes */
    static const want_act set_pf[] = {{'i', 4, "Subject", ""},
                                      {'m', 1, "Subject", ""}};
    if (!sm)
      expect_all(a, n, set_pf, 2);
    for (size_t i = 0; i < n; i++)
      if (a[i].type == MILTER_ACTION_CHGHEADER)
        assert_string_equal(a[i].value, ""); /* only deletes */
    empty_done(a, n, sm, "set empty");

    /* the last field set to "": delete + append, on both */
    a = empty_case(mta, set_last_empty, &n);
    assert_int_equal(n, 2);
    expect(&a[0], sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER,
           APPEND, "X-A", "");
    expect(&a[1], MILTER_ACTION_CHGHEADER, 1, "X-A", "");
    empty_done(a, n, sm, "set last empty");
  }
}

static void touch_subject(mf_hdrs *h) {
  assert_int_equal(mf_hdr_set_raw(h, 2, " t", 2), 0);
}

/* MF_OPT_RECREATE_HEADERS: every field re-added with its value as is, an
 * empty one "X-Empty:" */
static void test_recreate_keeps_empty(void **state) {
  (void)state;
  mf_opts o;
  mf_opts_init(&o);
  o.flags |= MF_OPT_RECREATE_HEADERS;
  for (int sm = 0; sm < 2; sm++) {
    mf_trx *t = make(&o, sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX, NULL,
                     empty_msg, N_EMPTY);
    size_t n;
    milter_action *a = actions(t, touch_subject, &n);
    assert_int_equal(n, 8);
    expect(&a[1], sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER,
           APPEND, "X-Empty", "");
    expect(&a[2], sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER,
           APPEND, "Subject", " t");
    check_delivery(t, a, n, empty_msg, N_EMPTY, sm ? 9 : 0, "recreate");
    mf_engine_actions_free(a, n);
    mf_engine_trx_free(t);
  }
}

/* ---- (b) the MTA from macro v, and the list right on both ---------------- */

static const hdr foo_msg[] = {{"From", " a@example.org"},
                              {"Subject", " s"},
                              {"X-Foo", " one"},
                              {"X-Bar", " b"},
                              {"Date", " Tue, 1 Dec 2026 21:00:00 +0000"},
                              {"Message-ID", " <1@example.org>"}};
#define N_FOO (sizeof foo_msg / sizeof foo_msg[0])

static void add_foo(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add(h, "X-Foo", "two"), 0);
}

static void test_mta_from_v(void **state) {
  (void)state;
  static const struct {
    const char *v;
    mf_mta mta;
  } cases[] = {{"8.17.1", MF_MTA_SENDMAIL},
               {"8.17.1.9", MF_MTA_SENDMAIL},
               {"Postfix 3.7.11", MF_MTA_POSTFIX},
               {"postfix 2.11", MF_MTA_POSTFIX},
               {NULL, MF_MTA_AUTO},
               {"Exim 4.96", MF_MTA_AUTO},
               {"", MF_MTA_AUTO}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mf_trx *t = make(NULL, MF_MTA_AUTO, cases[i].v, foo_msg, N_FOO);
    size_t n;
    milter_action *a = actions(t, add_foo, &n);
    assert_int_equal(mf_trx_mta(t), cases[i].mta);
    assert_int_equal(mf_engine_is_sendmail(t), cases[i].mta == MF_MTA_SENDMAIL);
    assert_int_equal(n, 1);
    /* ADDHEADER only where it surely appends: Sendmail puts it above
     * "X-Foo: one" */
    expect(&a[0],
           cases[i].mta == MF_MTA_POSTFIX ? MILTER_ACTION_ADDHEADER
                                          : MILTER_ACTION_INSHEADER,
           APPEND, "X-Foo", " two");
    if (cases[i].mta != MF_MTA_SENDMAIL)
      check_delivery(t, a, n, foo_msg, N_FOO, 0, "append X-Foo");
    if (cases[i].mta != MF_MTA_POSTFIX)
      check_delivery(t, a, n, foo_msg, N_FOO, 9, "append X-Foo");
    mf_engine_actions_free(a, n);
    mf_engine_trx_free(t);
  }
  /* set explicitly: v does not matter */
  mf_trx *t = make(NULL, MF_MTA_POSTFIX, "8.17.1", foo_msg, N_FOO);
  assert_int_equal(mf_trx_mta(t), MF_MTA_POSTFIX);
  mf_engine_trx_free(t);
}

/* ---- (c) positional inserts ---------------------------------------------- */

static void insert_mid(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 2, "X-New", "v"), 0);
}

static void insert_late(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 4, "X-New", "v"), 0);
}

static void insert_top(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 0, "X-Top", "t"), 0);
  assert_int_equal(mf_hdr_set_nth(h, "X-Foo", 1, "changed"), 0);
}

static void test_positional_inserts(void **state) {
  (void)state;
  size_t n;
  /* Postfix: one INSHEADER, before visible field 2 under Received */
  mf_trx *t = make(NULL, MF_MTA_POSTFIX, NULL, foo_msg, N_FOO);
  milter_action *a = actions(t, insert_mid, &n);
  assert_int_equal(n, 1);
  expect(&a[0], MILTER_ACTION_INSHEADER, 3, "X-New", " v");
  check_delivery(t, a, n, foo_msg, N_FOO, 0, "insert at 2");
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);

  /* Sendmail and an MTA not known: the case.  The four fields
   * below stay; From and Subject are re-made at the top with X-New. */
  for (int k = 0; k < 2; k++) {
    t = make(NULL, k ? MF_MTA_AUTO : MF_MTA_SENDMAIL, NULL, foo_msg, N_FOO);
    a = actions(t, insert_mid, &n);
    assert_int_equal(n, 5);
    expect(&a[0], MILTER_ACTION_CHGHEADER, 1, "Subject", "");
    expect(&a[1], MILTER_ACTION_CHGHEADER, 1, "From", "");
    expect(&a[2], MILTER_ACTION_INSHEADER, 1, "X-New", " v");
    expect(&a[3], MILTER_ACTION_INSHEADER, 1, "Subject", " s");
    expect(&a[4], MILTER_ACTION_INSHEADER, 1, "From", " a@example.org");
    for (size_t tm = 2; tm <= 20; tm += 7)
      check_delivery(t, a, n, foo_msg, N_FOO, tm, "insert at 2");
    if (k)
      check_delivery(t, a, n, foo_msg, N_FOO, 0, "insert at 2");
    mf_engine_actions_free(a, n);
    mf_engine_trx_free(t);
  }

  /* lower down the fields below move instead: Date, Message-ID appended */
  t = make(NULL, MF_MTA_SENDMAIL, NULL, foo_msg, N_FOO);
  a = actions(t, insert_late, &n);
  assert_int_equal(n, 5);
  expect(&a[0], MILTER_ACTION_INSHEADER, APPEND, "X-New", " v");
  expect(&a[1], MILTER_ACTION_INSHEADER, APPEND, "Date",
         " Tue, 1 Dec 2026 21:00:00 +0000");
  expect(&a[2], MILTER_ACTION_INSHEADER, APPEND, "Message-ID",
         " <1@example.org>");
  expect(&a[3], MILTER_ACTION_CHGHEADER, 1, "Message-ID", "");
  expect(&a[4], MILTER_ACTION_CHGHEADER, 1, "Date", "");
  check_delivery(t, a, n, foo_msg, N_FOO, 9, "insert at 4");
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);

  /* at the top: one INSHEADER at 1 (under Received), as on Postfix; the
   * change goes first */
  for (int sm = 0; sm < 2; sm++) {
    t = make(NULL, sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX, NULL, foo_msg,
             N_FOO);
    a = actions(t, insert_top, &n);
    assert_int_equal(n, 2);
    expect(&a[0], MILTER_ACTION_CHGHEADER, 1, "X-Foo", " changed");
    expect(&a[1], MILTER_ACTION_INSHEADER, 1, "X-Top", " t");
    check_delivery(t, a, n, foo_msg, N_FOO, sm ? 9 : 0, "insert at 0");
    mf_engine_actions_free(a, n);
    mf_engine_trx_free(t);
  }
}

/* ---- random edits through both models ------------------------------------ */

static uint64_t rng;
static unsigned rnd(unsigned n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned)(rng % n);
}

static const char *const names[] = {"From", "To",    "Subject", "X-A",
                                    "x-a",  "X-B",   "Date",    "Received",
                                    "Message-Id", "X-Empty"};
static const char *const values[] = {" v", "", " ", " w x", "v", " a\n b",
                                     " 1", " 2"};
#define NNAMES (sizeof names / sizeof names[0])
#define NVALUES (sizeof values / sizeof values[0])

static uint64_t edit_seed;
static void random_edits(mf_hdrs *h) {
  uint64_t keep = rng;
  rng = edit_seed;
  unsigned k = 1 + rnd(6);
  for (unsigned i = 0; i < k; i++) {
    size_t c = mf_hdr_count(h);
    const char *v = values[rnd(NVALUES)];
    const char *nm = names[rnd(NNAMES)];
    switch (rnd(6)) {
    case 0:
      assert_int_equal(mf_hdr_insert_raw(h, rnd((unsigned)c + 1), nm, v,
                                         strlen(v)),
                       0);
      break;
    case 1:
      assert_int_equal(mf_hdr_add_raw(h, nm, v, strlen(v)), 0);
      break;
    case 2:
      if (c > 0)
        assert_int_equal(mf_hdr_delete(h, rnd((unsigned)c)), 0);
      break;
    case 3:
    case 4:
      if (c > 0)
        assert_int_equal(mf_hdr_set_raw(h, rnd((unsigned)c), v, strlen(v)),
                         0);
      break;
    default:
      if (c > 0)
        assert_int_equal(mf_hdr_rename(h, rnd((unsigned)c), nm), 0);
      break;
    }
  }
  rng = keep;
}

static void test_random_edits_both_mtas(void **state) {
  (void)state;
  unsigned runs = getenv("MF_MTA_RUNS") ? (unsigned)atoi(getenv("MF_MTA_RUNS"))
                                        : 3000;
  rng = getenv("MF_MTA_SEED") ? strtoull(getenv("MF_MTA_SEED"), NULL, 0)
                              : 0x9e3779b97f4a7c15ull;
  mf_opts re;
  mf_opts_init(&re);
  re.flags |= MF_OPT_RECREATE_HEADERS;
  for (unsigned run = 0; run < runs; run++) {
    uint64_t seed = rng;
    hdr msg[12];
    size_t n = rnd(10);
    for (size_t i = 0; i < n; i++)
      msg[i] = (hdr){names[rnd(NNAMES)], values[rnd(NVALUES)]};
    edit_seed = rng ^ 0x5555;
    const mf_opts *o = rnd(8) == 0 ? &re : NULL;
    char what[64];
    snprintf(what, sizeof what, "seed 0x%llx", (unsigned long long)seed);
    for (int mode = 0; mode < 3; mode++) {
      mf_mta mta = mode == 0   ? MF_MTA_POSTFIX
                   : mode == 1 ? MF_MTA_SENDMAIL
                               : MF_MTA_AUTO;
      mf_trx *t = make(o, mta, NULL, msg, n);
      size_t na;
      milter_action *a = actions(t, random_edits, &na);
      if (mode != 1)
        check_delivery(t, a, na, msg, n, 0, what);
      if (mode != 0)
        for (size_t tm = 2; tm <= 20; tm += 9)
          check_delivery(t, a, na, msg, n, tm, what);
      mf_engine_actions_free(a, na);
      mf_engine_trx_free(t);
    }
    rng = seed;
    rnd(2); /* the next run's seed */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_values),
      cmocka_unit_test(test_recreate_keeps_empty),
      cmocka_unit_test(test_mta_from_v),
      cmocka_unit_test(test_positional_inserts),
      cmocka_unit_test(test_random_edits_both_mtas),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
