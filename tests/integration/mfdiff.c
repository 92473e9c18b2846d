/* mfdiff.c -- the milter and the oracle of the differential header test
 * (test_header_diff_mta.py, issue 15 item 4).
 *
 *   mfdiff serve SOCKETSPEC [--stage eoh|eom] [--engine postfix|sendmail]
 *   mfdiff predict postfix|sendmail [--stage eoh|eom]
 *          [--engine unknown|postfix|sendmail] SENDER RCPT MSGFILE...
 *
 * Both run the same decide(): the first recipient's local part names a
 * seed ("d1234@test.example"), and the seed alone chooses a sequence of
 * header edits -- insert, add, delete, set, rename, by position and by
 * name, raw values (folded, 8-bit, RFC 2047, empty, without a leading
 * space) and text values (encoded by the library) -- applied to the
 * message's fields.  "serve" is the milter in front of a real MTA (the MTA
 * detected from macro v); "predict" runs each MSGFILE through testtrx with
 * the simulated MTA named and prints what that MTA would deliver below its
 * own Received, for each file:
 *
 *   == MSGFILE above=N unmatched=M actions=I,A,C,D
 *   <header fields, LF line ends and folds>
 *   -- list
 *   <the filter's final list, as mf_hdr_write() gives it>
 *
 * (N: fields the MTA would put above its Received, M: CHGHEADER actions
 * that would find no field, both 0 from a correct engine; I, A, C, D: the
 * INSHEADER, ADDHEADER, CHGHEADER and deleting CHGHEADER actions sent).
 *
 * RCPT may hold "%s", replaced by the file's base name without extension
 * (d1234.eml -> d1234).  --engine: what the engine is told (default: the
 * MTA named, as it detects it from macro v); "unknown" gives the actions
 * safe on both, another MTA's name that MTA's actions -- the simulation
 * stays the MTA named.  serve --engine forces mf_opts.mta: a Sendmail
 * sent Postfix's actions checks testtrx's Sendmail model where the engine
 * does not make its rules harmless.
 *
 * serve prints "mfdiff: <rcpt> mta=<n>" for each message it decides, so
 * the test can check which MTA the engine detected.
 *
 * Fields called From (or any address field) are never edited nor created:
 * Sendmail rewrites address fields it delivers ("1" -> "1@host"), which is
 * not a header-list question (test_mta_differences.py shows it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/testtrx.h>

/* ---- the edits of one seed ---------------------------------------------- */

/* The seed's generator (splitmix64); one per decision: decisions of
 * several loops may run at once. */
typedef struct rng {
  uint64_t s;
} rng;

static unsigned rnd(rng *g, unsigned n) {
  uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return n ? (unsigned)(z % n) : 0;
}

/* Names of new fields and renames: repeated, in other case, trace fields;
 * no address fields. */
static const char *const names[] = {"X-A",      "x-a",     "X-B",      "Subject",
                                    "Keywords", "Comments", "Received", "X-Empty",
                                    "X-Long",   "Date",     "Message-ID", "X-A"};

/* Raw values, as the bytes after the colon. */
static const char *const raws[] = {
    " v",
    "",
    " ",
    "v",
    "  two leading spaces",
    " w x",
    " a\n b",
    " a\n\tfolded\n value",
    " =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?Q?K=F6ln?=",
    " Gr\xc3\xbc\xc3\x9f""e 8-bit",
    " trailing space ",
    " a rather long value that is there to be longer than seventy-eight "
    "columns when it is written out on one line",
};

/* UTF-8 text, encoded and folded by the library. */
static const char *const texts[] = {
    "plain text",
    "Gr\xc3\xbc\xc3\x9f""e aus K\xc3\xb6ln \xe2\x98\x83",
    "=?looks like an encoded word?=",
    "one two three four five six seven eight nine ten eleven twelve "
    "thirteen fourteen fifteen sixteen seventeen",
    "",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int is_address_field(const char *name) {
  static const char *const a[] = {
      "From",        "To",          "Cc",           "Bcc",           "Sender",
      "Reply-To",    "Resent-From", "Resent-To",    "Resent-Cc",     "Resent-Bcc",
      "Resent-Sender", "Resent-Reply-To", "Return-Path", "Errors-To",
      "Apparently-To", "Disposition-Notification-To"};
  for (size_t i = 0; i < NELEM(a); i++)
    if (strcasecmp(name, a[i]) == 0)
      return 1;
  return 0;
}

/* A field that may be edited, chosen at random; -1 if there is none. */
static long pick(rng *g, mf_hdrs *h) {
  size_t n = mf_hdr_count(h);
  if (n == 0)
    return -1;
  for (unsigned tries = 0; tries < 8; tries++) {
    size_t i = rnd(g, (unsigned)n);
    if (!is_address_field(mf_hdr_name(h, i)))
      return (long)i;
  }
  return -1;
}

static void edit(rng *g, mf_hdrs *h) {
  const char *name = names[rnd(g, NELEM(names))];
  const char *raw = raws[rnd(g, NELEM(raws))];
  const char *text = texts[rnd(g, NELEM(texts))];
  size_t n = mf_hdr_count(h);
  long i;
  switch (rnd(g, 10)) {
  case 0:
    mf_hdr_insert_raw(h, rnd(g, (unsigned)n + 1), name, raw, strlen(raw));
    break;
  case 1:
    mf_hdr_insert(h, rnd(g, (unsigned)n + 1), name, text);
    break;
  case 2:
    mf_hdr_add_raw(h, name, raw, strlen(raw));
    break;
  case 3:
    mf_hdr_add(h, name, text);
    break;
  case 4:
    if ((i = pick(g, h)) >= 0)
      mf_hdr_delete(h, (size_t)i);
    break;
  case 5:
    if ((i = pick(g, h)) >= 0)
      mf_hdr_set_raw(h, (size_t)i, raw, strlen(raw));
    break;
  case 6:
    if ((i = pick(g, h)) >= 0)
      mf_hdr_set(h, (size_t)i, text);
    break;
  case 7:
    if ((i = pick(g, h)) >= 0)
      mf_hdr_rename(h, (size_t)i, name);
    break;
  case 8: /* by name: the nth of a repeated name */
    if (mf_hdr_count_name(h, name) > 0)
      mf_hdr_set_nth(h, name, 1 + rnd(g, (unsigned)mf_hdr_count_name(h, name)), text);
    break;
  default:
    if (mf_hdr_count_name(h, name) > 0)
      mf_hdr_delete_nth(h, name, 1 + rnd(g, (unsigned)mf_hdr_count_name(h, name)));
    break;
  }
}

/* decide()'s userdata: serve logs, predict keeps the filter's final list. */
typedef struct run {
  int log;
  char *list; /* mf_hdr_write(), LF line ends */
  size_t list_len;
} run;

static mf_decision decide(mf_trx *trx, void *ud) {
  run *u = ud;
  const char *r = mf_trx_rcpt_count(trx) ? mf_trx_rcpt_raw(trx, 0) : NULL;
  unsigned long long seed;
  if (r == NULL || sscanf(r, "<d%llu@", &seed) != 1)
    return MF_ACCEPT;
  if (u->log)
    fprintf(stderr, "mfdiff: %s mta=%d\n", r, (int)mf_trx_mta(trx));
  rng g = {seed};
  mf_hdrs *h = mf_trx_headers(trx);
  for (unsigned k = 1 + rnd(&g, 8); k > 0; k--)
    edit(&g, h);
  if (!u->log && mf_hdr_write(h, "\n", &u->list, &u->list_len) != 0)
    return MF_FAIL;
  return MF_ACCEPT;
}

/* ---- serve ---------------------------------------------------------------- */

static int serve(const char *spec, const mf_opts *o) {
  mf_filter *f;
  static run u = {1, NULL, 0};
  int rc = mf_filter_new(&f, decide, &u, o);
  if (rc == 0 && (rc = mf_filter_listen(f, spec)) != 0)
    mf_filter_free(f);
  if (rc != 0) {
    fprintf(stderr, "mfdiff: %s\n", mf_strerror(rc));
    return 1;
  }
  mf_filter_run(f);
  mf_filter_free(f);
  return 0;
}

/* ---- predict -------------------------------------------------------------- */

/* "d1234" of ".../d1234.eml" into rcpt's "%s". */
static void rcpt_for(char *out, size_t cap, const char *fmt, const char *path) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  char base[128];
  snprintf(base, sizeof base, "%s", b);
  char *dot = strrchr(base, '.');
  if (dot)
    *dot = '\0';
  const char *p = strstr(fmt, "%s");
  if (p == NULL)
    snprintf(out, cap, "%s", fmt);
  else
    snprintf(out, cap, "%.*s%s%s", (int)(p - fmt), fmt, base, p + 2);
}

/* Writes len bytes of s without CRs. */
static void put_lf(const char *s, size_t len) {
  for (size_t k = 0; k < len; k++)
    if (s[k] != '\r')
      putchar(s[k]);
}

/* engine: what the engine is told (MF_MTA_AUTO: nothing); mta: simulated. */
static int predict_one(const mf_opts *o, mf_mta mta, mf_mta engine, const char *sender,
                       const char *rcptfmt, const char *path) {
  mf_testtrx *t;
  char rcpt[256];
  rcpt_for(rcpt, sizeof rcpt, rcptfmt, path);
  int rc = mf_testtrx_new(&t, o);
  if (rc != 0)
    return rc;
  run u = {0, NULL, 0};
  if ((rc = mf_testtrx_set_mta(t, engine)) == 0 &&
      (rc = mf_testtrx_set_simulated_mta(t, mta)) == 0 &&
      (rc = mf_testtrx_mail(t, sender, NULL)) == 0 &&
      (rc = mf_testtrx_rcpt(t, rcpt, NULL)) == 0 &&
      (rc = mf_testtrx_message_file(t, path)) == 0)
    rc = mf_testtrx_run(t, decide, &u);
  if (rc != 0 || u.list == NULL) {
    fprintf(stderr, "mfdiff: %s: %s\n", path, rc ? mf_testtrx_errmsg(t) : "no list");
    mf_testtrx_free(t);
    free(u.list);
    return rc ? rc : 1;
  }
  size_t len;
  const char *text = mf_testtrx_result(t, &len);
  /* the fields: up to the empty line */
  const char *end = strncmp(text, "\r\n", 2) == 0 ? text : strstr(text, "\r\n\r\n");
  size_t hlen = end == NULL ? len : (size_t)(end - text) + (end == text ? 0 : 2);
  unsigned kinds[4] = {0}; /* INSHEADER, ADDHEADER, CHGHEADER, CHGHEADER "" */
  for (size_t i = 0; i < mf_testtrx_action_count(t); i++) {
    const milter_action *a = mf_testtrx_action(t, i);
    if (a->type == MILTER_ACTION_INSHEADER)
      kinds[0]++;
    else if (a->type == MILTER_ACTION_ADDHEADER)
      kinds[1]++;
    else if (a->type == MILTER_ACTION_CHGHEADER)
      kinds[a->value && a->value[0] ? 2 : 3]++;
  }
  printf("== %s above=%zu unmatched=%zu actions=%u,%u,%u,%u\n", path,
         mf_testtrx_result_above_received(t), mf_testtrx_result_unmatched(t), kinds[0],
         kinds[1], kinds[2], kinds[3]);
  put_lf(text, hlen);
  printf("-- list\n");
  put_lf(u.list, u.list_len);
  free(u.list);
  mf_testtrx_free(t);
  return 0;
}

static mf_mta mta_of(const char *s) {
  return strcmp(s, "postfix") == 0    ? MF_MTA_POSTFIX
         : strcmp(s, "sendmail") == 0 ? MF_MTA_SENDMAIL
                                      : MF_MTA_AUTO;
}

int main(int argc, char **argv) {
  mf_opts o;
  mf_opts_init(&o);
  o.stage = MF_STAGE_EOM;
  const char *engine = NULL;
  int n = 0; /* argv without the options */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--stage") == 0 && i + 1 < argc)
      o.stage = strcmp(argv[++i], "eoh") == 0 ? MF_STAGE_EOH : MF_STAGE_EOM;
    else if (strcmp(argv[i], "--engine") == 0 && i + 1 < argc)
      engine = argv[++i];
    else
      argv[n++] = argv[i];
  }
  if (n >= 2 && strcmp(argv[0], "serve") == 0) {
    o.mta = engine ? mta_of(engine) : MF_MTA_AUTO;
    return serve(argv[1], &o);
  }
  if (n >= 5 && strcmp(argv[0], "predict") == 0) {
    mf_mta mta = mta_of(argv[1]);
    mf_mta told = engine == NULL ? mta : mta_of(engine);
    for (int i = 4; i < n; i++)
      if (mta == MF_MTA_AUTO || predict_one(&o, mta, told, argv[2], argv[3], argv[i]) != 0)
        return 1;
    return fflush(stdout) == 0 ? 0 : 1;
  }
  fprintf(stderr, "usage: mfdiff serve SOCKETSPEC [--stage eoh|eom] [--engine postfix|sendmail]\n"
                  "       mfdiff predict postfix|sendmail [--stage eoh|eom] "
                  "[--engine unknown|postfix|sendmail] SENDER RCPT MSGFILE...\n");
  return 2;
}
