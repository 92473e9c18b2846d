/* mfscen.c -- a milter on the transaction layer whose behaviour the
 * integration tests choose: the stage and a fixed decision on the command
 * line, or, per message, a scenario named by the first recipient's local
 * part ("scen-hdr-insert0@test.example").
 *
 *   mfscen SOCKETSPEC [--stage connect|helo|mail|rcpt|data|eoh|eom]
 *                     [--decide accept|reject|tempfail|discard|quarantine]
 *                     [--max-body N] [--progress-ms N] [--spool DIR]
 *                     [--gate FILE] [--log-level error|warning|info|debug]
 *                     [--tag NAME]
 *
 * --tag NAME adds "X-Filtered-By: NAME" to every message that reaches
 * decide(), before its scenario: which of several processes filtered it.
 *
 * A scenario "gate-REST" ("scen-gate-hdr-add@...") holds decide() until
 * FILE (--gate) exists -- as long as the test wants, e.g. past the MTA's
 * timeout -- then runs scenario REST; it prints "mfscen: gate wait <rcpt>"
 * before and "mfscen: gate open <rcpt>" after the wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>

static const char *fixed; /* --decide */
static const char *gate;  /* --gate */
static const char *tag;   /* --tag */

/* Wait until the gate file exists (at most 10 minutes). */
static void gate_wait(const char *rcpt) {
  fprintf(stderr, "mfscen: gate wait %s\n", rcpt);
  for (int i = 0; i < 60000 && (gate == NULL || access(gate, F_OK) != 0); i++)
    usleep(10000);
  fprintf(stderr, "mfscen: gate open %s\n", rcpt);
}

static mf_decision by_name(mf_trx *trx, const char *d) {
  if (strcmp(d, "reject") == 0) {
    mf_trx_set_reply(trx, "550", "5.7.1", "scenario says no\nsecond line");
    return MF_REJECT;
  }
  if (strcmp(d, "tempfail") == 0) {
    mf_trx_set_reply(trx, "451", "4.7.1", "scenario says later");
    return MF_TEMPFAIL;
  }
  if (strcmp(d, "discard") == 0)
    return MF_DISCARD;
  if (strcmp(d, "quarantine") == 0) {
    mf_trx_quarantine(trx, "scenario quarantine");
    return MF_QUARANTINE;
  }
  return MF_ACCEPT;
}

static int replace_body(mf_trx *trx, size_t n) {
  char *b = malloc(n);
  if (b == NULL)
    return -1;
  /* lines of 76 characters + CRLF */
  for (size_t i = 0; i < n; i++)
    b[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (char)('a' + i % 26);
  b[n - 2] = '\r'; /* the last line is complete */
  b[n - 1] = '\n';
  int rc = mf_trx_replace_body(trx, b, n);
  free(b);
  return rc;
}

static mf_decision decide(mf_trx *trx, void *ud) {
  (void)ud;
  if (tag != NULL)
    mf_hdr_add(mf_trx_headers(trx), "X-Filtered-By", tag);
  if (fixed != NULL)
    return by_name(trx, fixed);
  const char *r = mf_trx_rcpt_count(trx) ? mf_trx_rcpt_raw(trx, 0) : NULL;
  if (r == NULL || strncmp(r, "<scen-", 6) != 0)
    return MF_ACCEPT;
  char buf[64];
  snprintf(buf, sizeof buf, "%s", r + 6);
  char *at = strchr(buf, '@');
  if (at)
    *at = '\0';
  const char *s = buf;
  if (strncmp(s, "gate-", 5) == 0) {
    gate_wait(r);
    s += 5;
  }
  mf_hdrs *h = mf_trx_headers(trx);
  if (strcmp(s, "hdr-change-first") == 0)
    mf_hdr_set(h, 0, "Changed First <first@test.example>");
  else if (strcmp(s, "hdr-insert0") == 0)
    mf_hdr_insert(h, 0, "X-Top", "inserted at 0 ☃");
  else if (strcmp(s, "hdr-add") == 0)
    mf_hdr_add(h, "X-Added", "Grüße aus dem Filter");
  else if (strcmp(s, "hdr-delete-rep") == 0)
    mf_hdr_delete_nth(h, "X-Rep", 2);
  else if (strcmp(s, "hdr-change-rep") == 0)
    mf_hdr_set_nth(h, "X-Rep", 2, "zwei → ändert");
  else if (strcmp(s, "hdr-delete-first") == 0)
    mf_hdr_delete(h, 0);
  else if (strcmp(s, "hdr-insert2") == 0) /* Sendmail: not its index 2 */
    mf_hdr_insert(h, 2, "X-Mid", "inserted at 2");
  else if (strcmp(s, "hdr-add-rep") == 0) /* after the X-Rep already there */
    mf_hdr_add(h, "X-Rep", "four");
  else if (strcmp(s, "hdr-add-empty") == 0) /* delivered as "X-Empty:" */
    mf_hdr_add_raw(h, "X-Empty", "", 0);
  else if (strcmp(s, "hdr-rcpt-count") == 0) { /* this message's recipients */
    char n[32];
    snprintf(n, sizeof n, "%zu", mf_trx_rcpt_count(trx));
    mf_hdr_add(h, "X-Rcpt-Count", n);
  } else if (strcmp(s, "hdr-from-bare") == 0) /* Sendmail: "1@<its host>" */
    mf_hdr_set_nth(h, "From", 1, "1");
  else if (strcmp(s, "hdr-add-date") == 0) /* the MTA may have added one */
    mf_hdr_add(h, "Date", "Mon, 1 Jan 2024 00:00:00 +0000");
  else if (strcmp(s, "rcpt-add") == 0)
    mf_trx_add_rcpt(trx, "<added@test.example>", "NOTIFY=NEVER");
  else if (strcmp(s, "rcpt-del") == 0)
    mf_trx_del_rcpt(trx, mf_trx_rcpt_raw(trx, 1));
  else if (strcmp(s, "from-change") == 0)
    mf_trx_change_from(trx, "<bounces@test.example>", NULL);
  else if (strcmp(s, "body-1k") == 0)
    replace_body(trx, 1024);
  else if (strcmp(s, "body-100k") == 0)
    replace_body(trx, 100 * 1024);
  else if (strcmp(s, "body-1m") == 0)
    replace_body(trx, 1024 * 1024);
  else if (strncmp(s, "slow", 4) == 0)
    usleep((useconds_t)atoi(s + 4) * 1000u); /* "slow2500" */
  else if (strcmp(s, "fail") == 0)
    return MF_FAIL;
  else
    return by_name(trx, s);
  return MF_ACCEPT;
}

static mf_stage stage_of(const char *s) {
  const char *n[] = {"connect", "helo", "mail", "rcpt", "data", "eoh", "eom"};
  for (int i = 0; i < 7; i++)
    if (strcmp(s, n[i]) == 0)
      return (mf_stage)(MF_STAGE_CONNECT + i);
  return (mf_stage)0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: mfscen SOCKETSPEC [options]\n");
    return 2;
  }
  mf_opts o;
  mf_opts_init(&o);
  for (int i = 2; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--stage") == 0 && (o.stage = stage_of(argv[i + 1])) == 0)
      return 2;
    else if (strcmp(argv[i], "--decide") == 0)
      fixed = argv[i + 1];
    else if (strcmp(argv[i], "--max-body") == 0)
      o.max_body = strtoull(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--progress-ms") == 0)
      o.progress_ms = strtoull(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--spool") == 0)
      o.spool_dir = argv[i + 1];
    else if (strcmp(argv[i], "--gate") == 0)
      gate = argv[i + 1];
    else if (strcmp(argv[i], "--tag") == 0)
      tag = argv[i + 1];
    else if (strcmp(argv[i], "--log-level") == 0)
      o.server.log_level = strcmp(argv[i + 1], "debug") == 0 ? MILTER_LOG_DEBUG
                           : strcmp(argv[i + 1], "warning") == 0 ? MILTER_LOG_WARNING
                           : strcmp(argv[i + 1], "error") == 0 ? MILTER_LOG_ERROR
                                                                : MILTER_LOG_INFO;
  }
  mf_filter *f;
  int rc = mf_filter_new(&f, decide, NULL, &o);
  if (rc == 0 && (rc = mf_filter_listen(f, argv[1])) != 0)
    mf_filter_free(f);
  if (rc != 0) {
    fprintf(stderr, "mfscen: %s\n", mf_strerror(rc));
    return 1;
  }
  mf_filter_run(f);
  mf_filter_free(f);
  return 0;
}
