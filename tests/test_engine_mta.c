/* test_engine_mta.c -- the header actions of the diff engine applied by a
 * model of each MTA, compared field by field with the filter's list.
 *
 * The models are testtrx's (testtrx.h, MTA MODEL: Postfix's
 * cleanup_milter.c, Sendmail's milter.c and headers.c), the same that
 * predict the real MTAs' delivery in the differential test of issue 15 item
 * 4: each case runs the engine through mf_testtrx, told one MTA (or none:
 * no "v"), and has the actions applied by the simulated Postfix, or by a
 * simulated Sendmail with 2, 9 (an m4-built .cf) or more header templates.
 * Every delivery must be the filter's list byte for byte (values raw,
 * HDR_LEADSPC negotiated: a line is name ":" value), all of it below the
 * MTA's Received:, with no CHGHEADER that finds no field. */
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
#include <mailfilter/testtrx.h>

/* ---- a case: the message, the edit, the engine's MTA, the model --------- */

typedef struct hdr {
  const char *name, *value; /* value: every byte after the colon */
} hdr;

typedef void (*edit_fn)(mf_hdrs *h);

/* What the decision saw: the filter's list after the edit (lines as
 * mf_hdr_line() gives them, LF folds, each with "\n"), the MTA the engine
 * knew. */
static char *filter_list;
static mf_mta seen_mta;
static int seen_is_sendmail;

/* The names Sendmail fills itself when the message lacks them (mailfilter.h,
 * HEADER EDITS ON EACH MTA): the first field the filter added of such a
 * name that the message did not carry is delivered once, but where the
 * MTA puts it (Sendmail: its template's place; Postfix: appended).
 * fills[]: those fields' lines as in filter_list ("Name:value\n"). */
static const char *const sm_defaults[] = {"Date", "From", "Message-Id",
                                          "Resent-Date", "Resent-From",
                                          "Resent-Message-Id"};
#define N_SM_DEFAULTS (sizeof sm_defaults / sizeof sm_defaults[0])
static char fills[N_SM_DEFAULTS][512];
static size_t nfills;

static int has_name(const mf_hdrs *h, const char *name) {
  for (size_t i = 0; i < mf_hdr_count(h); i++)
    if (strcasecmp(mf_hdr_name(h, i), name) == 0)
      return 1;
  return 0;
}

static mf_decision run_edit(mf_trx *t, void *ud) {
  mf_hdrs *h = mf_trx_headers(t);
  int had[N_SM_DEFAULTS];
  for (size_t k = 0; k < N_SM_DEFAULTS; k++)
    had[k] = has_name(h, sm_defaults[k]);
  ((edit_fn)(uintptr_t)ud)(h);
  nfills = 0;
  for (size_t k = 0; k < N_SM_DEFAULTS; k++)
    for (size_t i = 0; i < mf_hdr_count(h) && !had[k]; i++)
      if (strcasecmp(mf_hdr_name(h, i), sm_defaults[k]) == 0) {
        size_t n;
        const char *raw = mf_hdr_raw(h, i, &n);
        size_t o = (size_t)snprintf(fills[nfills], sizeof fills[0], "%s:",
                                    mf_hdr_name(h, i));
        for (size_t c = 0; c < n && o + 2 < sizeof fills[0]; c++)
          if (!(raw[c] == '\r' && c + 1 < n && raw[c + 1] == '\n'))
            fills[nfills][o++] = raw[c];
        fills[nfills][o++] = '\n';
        fills[nfills++][o] = '\0';
        break;
      }
  seen_mta = mf_trx_mta(t);
  seen_is_sendmail = mf_engine_is_sendmail(t);
  size_t cap = 1, len = 0;
  char *out = malloc(cap);
  assert_non_null(out);
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
    free(line);
  }
  out[len] = '\0';
  free(filter_list);
  filter_list = out;
  return MF_ACCEPT;
}

/* The simulated Sendmail's templates: the m4-built .cf's nine, cut at
 * ntmpl or followed by X-Tmpl-<i>. */
static void templates(char *out, size_t cap, size_t ntmpl) {
  static const char *const names[] = {
      "Return-Path", "Received",   "Resent-Date",       "Date",
      "Resent-From", "From",       "Full-Name",         "Resent-Message-Id",
      "Message-Id"};
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < ntmpl && len < cap; i++)
    len += (size_t)(i < 9 ? snprintf(out + len, cap - len, " %s", names[i])
                          : snprintf(out + len, cap - len, " X-Tmpl-%zu", i));
  assert_true(len < cap);
}

/* The message h[] through the engine told `mta` (with macro v when not
 * NULL), edited by fn at end of message; the actions applied by Postfix
 * (ntmpl 0) or by Sendmail with ntmpl templates. */
static mf_testtrx *run(const mf_opts *o, mf_mta mta, const char *v,
                       const hdr *h, size_t n, edit_fn fn, size_t ntmpl) {
  mf_testtrx *t;
  assert_int_equal(mf_testtrx_new(&t, o), 0);
  assert_int_equal(mf_testtrx_set_negotiated(t, MILTER_ACT_ALL,
                                             MILTER_P_HDR_LEADSPC,
                                             MILTER_DATA_64K),
                   0);
  assert_int_equal(mf_testtrx_set_mta(t, mta), 0);
  assert_int_equal(mf_testtrx_set_simulated_mta(
                       t, ntmpl ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX),
                   0);
  char tm[1024];
  templates(tm, sizeof tm, ntmpl);
  if (ntmpl)
    assert_int_equal(mf_testtrx_set_sendmail_templates(t, tm), 0);
  if (v != NULL)
    assert_int_equal(mf_testtrx_macro(t, "v", v), 0);
  assert_int_equal(mf_testtrx_mail(t, "<s@example.org>", NULL), 0);
  assert_int_equal(mf_testtrx_rcpt(t, "<r@example.net>", NULL), 0);
  /* the message: each field name ":" value, LF folds as CRLF */
  size_t cap = 16;
  for (size_t i = 0; i < n; i++)
    cap += strlen(h[i].name) + 2 * strlen(h[i].value) + 3;
  char *msg = malloc(cap), *m = msg;
  assert_non_null(msg);
  for (size_t i = 0; i < n; i++) {
    m += sprintf(m, "%s:", h[i].name);
    for (const char *c = h[i].value; *c; c++) {
      if (*c == '\n')
        *m++ = '\r';
      *m++ = *c;
    }
    m += sprintf(m, "\r\n");
  }
  sprintf(m, "\r\nbody\r\n");
  assert_int_equal(mf_testtrx_message(t, msg, (size_t)-1), 0);
  free(msg);
  if (mf_testtrx_run(t, run_edit, (void *)(uintptr_t)fn) != 0)
    fail_msg("run: %s", mf_testtrx_errmsg(t));
  assert_int_equal(mf_testtrx_decision(t), MF_ACCEPT);
  return t;
}

/* Take every copy of the line out of text (name compared ASCII
 * case-insensitively, the rest byte for byte); how many there were. */
static size_t take_lines(char *text, const char *line) {
  const char *colon = strchr(line, ':');
  size_t nl = (size_t)(colon - line), len = strlen(line), taken = 0;
  for (char *p = text; *p;) {
    char *q = p; /* the field's end: past its folds */
    do {
      char *end = strchr(q, '\n');
      q = end ? end + 1 : q + strlen(q);
    } while (*q == ' ' || *q == '\t');
    if ((size_t)(q - p) == len && strncasecmp(p, line, nl) == 0 &&
        memcmp(p + nl, line + nl, len - nl) == 0) {
      memmove(p, q, strlen(q) + 1);
      taken++;
      continue;
    }
    p = q;
  }
  return taken;
}

/* What the model delivered must be the filter's list, but the fills
 * (and fields equal to them) may be anywhere: only their number must be
 * right. */
static void check_delivery(mf_testtrx *t, const char *what) {
  size_t len;
  const char *r = mf_testtrx_result(t, &len);
  char *got = malloc(len + 1), *g = got;
  assert_non_null(got);
  for (size_t i = 0; i < len; i++) {
    if (r[i] == '\r')
      continue;
    if (r[i] == '\n' && (g == got || g[-1] == '\n'))
      break; /* the empty line */
    *g++ = r[i];
  }
  *g = '\0';
  char *want = strdup(filter_list);
  assert_non_null(want);
  int fills_ok = 1;
  for (size_t k = 0; k < nfills; k++)
    fills_ok &= take_lines(want, fills[k]) == take_lines(got, fills[k]);
  if (!fills_ok || strcmp(got, want) != 0 ||
      mf_testtrx_result_unmatched(t) != 0 ||
      mf_testtrx_result_above_received(t) != 0) {
    char acts[2048];
    size_t al = 0;
    acts[0] = '\0';
    for (size_t i = 0; i < mf_testtrx_action_count(t) && al < sizeof acts; i++) {
      const milter_action *a = mf_testtrx_action(t, i);
      al += (size_t)snprintf(acts + al, sizeof acts - al, "%s %u %s:%s\n",
                             mf_testtrx_action_name((int)a->type), a->index,
                             a->name ? a->name : "",
                             a->value ? a->value : "");
    }
    fail_msg("%s (%s): delivered\n%s-- but the filter's list is\n%s-- "
             "(%zu CHGHEADER missed, %zu fields above Received)\nactions:\n%s",
             what,
             mf_testtrx_result_mta(t) == MF_MTA_SENDMAIL ? "Sendmail"
                                                         : "Postfix",
             got, filter_list, mf_testtrx_result_unmatched(t),
             mf_testtrx_result_above_received(t), acts);
  }
  free(got);
  free(want);
}

/* run() then check_delivery(), for the models only. */
static void deliver(const mf_opts *o, mf_mta mta, const char *v, const hdr *h,
                    size_t n, edit_fn fn, size_t ntmpl, const char *what) {
  mf_testtrx *t = run(o, mta, v, h, n, fn, ntmpl);
  check_delivery(t, what);
  mf_testtrx_free(t);
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

static void expect_all(const mf_testtrx *t, const want_act *w, size_t nw) {
  assert_int_equal(mf_testtrx_action_count(t), nw);
  for (size_t i = 0; i < nw; i++)
    expect(mf_testtrx_action(t, i), (milter_action_type)w[i].type,
           w[i].index, w[i].name, w[i].value);
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

/* The empty-value message through the engine told mta (the same MTA
 * simulated), edited by fn; the caller checks the actions, then frees. */
static mf_testtrx *empty_case(int sm, edit_fn fn, const char *what) {
  mf_testtrx *t = run(NULL, sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX, NULL,
                      empty_msg, N_EMPTY, fn, sm ? 9 : 0);
  check_delivery(t, what);
  return t;
}

static void test_empty_values(void **state) {
  (void)state;
  for (int sm = 0; sm < 2; sm++) {
    /* an added empty field: "X-New:", no space */
    mf_testtrx *t = empty_case(sm, add_empty, "add empty");
    assert_int_equal(mf_testtrx_action_count(t), 1);
    expect(mf_testtrx_action(t, 0),
           sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER, APPEND,
           "X-New", "");
    mf_testtrx_free(t);

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
    t = empty_case(sm, rename_empty, "rename empty");
    if (!sm)
      expect_all(t, rename_pf, 2);
    else
      expect_all(t, rename_sm, 4);
    mf_testtrx_free(t);

    /* a value set to "": CHGHEADER cannot say it (empty deletes) */
    t = empty_case(sm, set_empty, "set empty");
    /* Postfix, bottom up: "Subject:" before X-A, then the old one goes */
    static const want_act set_pf[] = {{'i', 4, "Subject", ""},
                                      {'m', 1, "Subject", ""}};
    if (!sm)
      expect_all(t, set_pf, 2);
    for (size_t i = 0; i < mf_testtrx_action_count(t); i++)
      if (mf_testtrx_action(t, i)->type == MILTER_ACTION_CHGHEADER)
        assert_string_equal(mf_testtrx_action(t, i)->value, ""); /* deletes */
    mf_testtrx_free(t);

    /* the last field set to "": delete + append, on both */
    t = empty_case(sm, set_last_empty, "set last empty");
    assert_int_equal(mf_testtrx_action_count(t), 2);
    expect(mf_testtrx_action(t, 0),
           sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER, APPEND,
           "X-A", "");
    expect(mf_testtrx_action(t, 1), MILTER_ACTION_CHGHEADER, 1, "X-A", "");
    mf_testtrx_free(t);
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
    mf_testtrx *t = run(&o, sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX, NULL,
                        empty_msg, N_EMPTY, touch_subject, sm ? 9 : 0);
    assert_int_equal(mf_testtrx_action_count(t), 8);
    expect(mf_testtrx_action(t, 1),
           sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER, APPEND,
           "X-Empty", "");
    expect(mf_testtrx_action(t, 2),
           sm ? MILTER_ACTION_INSHEADER : MILTER_ACTION_ADDHEADER, APPEND,
           "Subject", " t");
    check_delivery(t, "recreate");
    mf_testtrx_free(t);
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

static void no_edit(mf_hdrs *h) { (void)h; }

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
    /* each model the engine's list must be right on */
    for (size_t ntmpl = 0; ntmpl <= 9; ntmpl += 9) {
      if ((cases[i].mta == MF_MTA_SENDMAIL && ntmpl == 0) ||
          (cases[i].mta == MF_MTA_POSTFIX && ntmpl != 0))
        continue;
      mf_testtrx *t =
          run(NULL, MF_MTA_AUTO, cases[i].v, foo_msg, N_FOO, add_foo, ntmpl);
      assert_int_equal(seen_mta, cases[i].mta);
      assert_int_equal(seen_is_sendmail, cases[i].mta == MF_MTA_SENDMAIL);
      assert_int_equal(mf_testtrx_action_count(t), 1);
      /* ADDHEADER only where it surely appends: Sendmail puts it above
       * "X-Foo: one" */
      expect(mf_testtrx_action(t, 0),
             cases[i].mta == MF_MTA_POSTFIX ? MILTER_ACTION_ADDHEADER
                                            : MILTER_ACTION_INSHEADER,
             APPEND, "X-Foo", " two");
      check_delivery(t, "append X-Foo");
      mf_testtrx_free(t);
    }
  }
  /* set explicitly: v does not matter */
  mf_testtrx *t =
      run(NULL, MF_MTA_POSTFIX, "8.17.1", foo_msg, N_FOO, no_edit, 0);
  assert_int_equal(seen_mta, MF_MTA_POSTFIX);
  mf_testtrx_free(t);
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
  /* Postfix: one INSHEADER, before visible field 2 under Received */
  mf_testtrx *t = run(NULL, MF_MTA_POSTFIX, NULL, foo_msg, N_FOO, insert_mid, 0);
  assert_int_equal(mf_testtrx_action_count(t), 1);
  expect(mf_testtrx_action(t, 0), MILTER_ACTION_INSHEADER, 3, "X-New", " v");
  check_delivery(t, "insert at 2");
  mf_testtrx_free(t);

  /* Sendmail and an MTA not known: the case.  The four fields
   * below stay; From and Subject are re-made at the top with X-New. */
  for (int k = 0; k < 2; k++) {
    mf_mta mta = k ? MF_MTA_AUTO : MF_MTA_SENDMAIL;
    for (size_t tm = k ? 0 : 2; tm <= 20; tm = tm ? tm + 7 : 2) {
      t = run(NULL, mta, NULL, foo_msg, N_FOO, insert_mid, tm);
      assert_int_equal(mf_testtrx_action_count(t), 5);
      expect(mf_testtrx_action(t, 0), MILTER_ACTION_CHGHEADER, 1, "Subject",
             "");
      expect(mf_testtrx_action(t, 1), MILTER_ACTION_CHGHEADER, 1, "From", "");
      expect(mf_testtrx_action(t, 2), MILTER_ACTION_INSHEADER, 1, "X-New",
             " v");
      expect(mf_testtrx_action(t, 3), MILTER_ACTION_INSHEADER, 1, "Subject",
             " s");
      expect(mf_testtrx_action(t, 4), MILTER_ACTION_INSHEADER, 1, "From",
             " a@example.org");
      check_delivery(t, "insert at 2");
      mf_testtrx_free(t);
    }
  }

  /* lower down the fields below move instead: Date, Message-ID appended */
  static const want_act late[] = {
      {'i', APPEND, "X-New", " v"},
      {'i', APPEND, "Date", " Tue, 1 Dec 2026 21:00:00 +0000"},
      {'i', APPEND, "Message-ID", " <1@example.org>"},
      {'m', 1, "Message-ID", ""},
      {'m', 1, "Date", ""}};
  t = run(NULL, MF_MTA_SENDMAIL, NULL, foo_msg, N_FOO, insert_late, 9);
  expect_all(t, late, 5);
  check_delivery(t, "insert at 4");
  mf_testtrx_free(t);

  /* at the top: one INSHEADER at 1 (under Received), as on Postfix; the
   * change goes first */
  for (int sm = 0; sm < 2; sm++) {
    t = run(NULL, sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX, NULL, foo_msg, N_FOO,
            insert_top, sm ? 9 : 0);
    assert_int_equal(mf_testtrx_action_count(t), 2);
    expect(mf_testtrx_action(t, 0), MILTER_ACTION_CHGHEADER, 1, "X-Foo",
           " changed");
    expect(mf_testtrx_action(t, 1), MILTER_ACTION_INSHEADER, 1, "X-Top", " t");
    check_delivery(t, "insert at 0");
    mf_testtrx_free(t);
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
    for (int mode = 0; mode < 3; mode++) {
      mf_mta mta = mode == 0   ? MF_MTA_POSTFIX
                   : mode == 1 ? MF_MTA_SENDMAIL
                               : MF_MTA_AUTO;
      char what[96];
      snprintf(what, sizeof what, "seed 0x%llx, engine told %s",
               (unsigned long long)seed,
               mode == 0 ? "Postfix" : mode == 1 ? "Sendmail" : "nothing");
      if (mode != 1)
        deliver(o, mta, NULL, msg, n, random_edits, 0, what);
      if (mode != 0)
        for (size_t tm = 2; tm <= 20; tm += 9)
          deliver(o, mta, NULL, msg, n, random_edits, tm, what);
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
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  free(filter_list);
  return rc;
}
