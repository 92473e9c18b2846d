/* test_mailfilter.c -- the transaction layer over a real socket: mf_filter
 * on a thread, driven by core's blocking MTA-side client.  Checks what goes
 * on the wire: which events get replies (NR/NO negotiation), the decision
 * at each stage, held modifications, the minimal action list, pending
 * decisions with PROGRESS, errors and limits, the body spool, and that
 * nothing (fd, temp file) is left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_proto.h>

#include "testutil.h"
#include "mftest.h"

/* ---- what the decision function does, per test -------------------------- */

typedef struct scen {
  mf_decision (*fn)(mf_trx *trx, struct scen *s);
  atomic_int calls;
  atomic_int rcpt_calls;
  mf_stage seen_stage;
  size_t seen_rcpts;
  uint64_t seen_body;
  int seen_body_fd; /* 1 if the body was in a file during decide */
  int body_ok;
  char seen_auth[64];
  int delay_ms;
} scen;

static scen S;

/* Decision functions run on worker threads, where cmocka's assertions must
 * not be used: they record the first failing line, checked by the test. */
static atomic_int bad_line;
#define CHK(cond)                                                              \
  do {                                                                         \
    if (!(cond))                                                               \
      atomic_compare_exchange_strong(&bad_line, &(int){0}, __LINE__);          \
  } while (0)

static mf_decision decide(mf_trx *trx, void *ud) {
  scen *s = ud;
  atomic_fetch_add(&s->calls, 1);
  s->seen_stage = mf_trx_stage(trx);
  s->seen_rcpts = mf_trx_rcpt_count(trx);
  s->seen_body = mf_trx_body_size(trx);
  s->seen_body_fd = mf_trx_body_fd(trx) >= 0;
  const char *a = mf_trx_auth_authen(trx);
  snprintf(s->seen_auth, sizeof s->seen_auth, "%s", a ? a : "(none)");
  if (s->delay_ms)
    usleep((useconds_t)s->delay_ms * 1000);
  return s->fn ? s->fn(trx, s) : MF_ACCEPT;
}

static mf_decision validate(mf_trx *trx, const mf_addr *rcpt,
                            const mf_addr_params *p, void *ud) {
  (void)p;
  scen *s = ud;
  atomic_fetch_add(&s->rcpt_calls, 1);
  if (rcpt != NULL && strcmp(mf_addr_local(rcpt), "bad") == 0) {
    mf_trx_set_reply(trx, "550", "5.1.1", "no such user here");
    return MF_REJECT;
  }
  return MF_ACCEPT;
}

/* ---- the filter on a thread --------------------------------------------- */

static void quiet_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  if (getenv("MF_TEST_VERBOSE") != NULL || lvl <= MILTER_LOG_ERROR)
    fprintf(stderr, "[filter] %s\n", msg);
}

static void base_opts(mf_opts *o, mf_stage stage) {
  mf_opts_init(o);
  o->stage = stage;
  o->server.handle_signals = 0;
  o->server.log = quiet_log;
  o->server.drain_timeout_ms = 2000;
  o->workers = 2;
}

static void tf_start(tf *t, const mf_opts *o) {
  atomic_store(&S.calls, 0);
  atomic_store(&S.rcpt_calls, 0);
  tf_launch(t, o, decide, &S);
}

static void tf_stop(tf *t) {
  int line = atomic_exchange(&bad_line, 0);
  if (line != 0)
    fail_msg("check in the decision function failed at line %d", line);
  tf_halt(t);
}

static milter_client *open_client(const tf *t, milter_client_nego *nego) {
  return tf_client(t, 0, nego);
}

static const char *const two_rcpts[] = {"<a@example.net>", "<b@example.net>"};

static void headers(milter_client *c, milter_client_result *r) {
  OK(milter_client_header(c, "From", " a@example.org", r));
  OK(milter_client_header(c, "Subject", " hello", r));
  OK(milter_client_header(c, "X-A", " 1", r));
  OK(milter_client_header(c, "X-A", " 2", r));
}

/* End of headers then end of message.  The client offers NR_EOH (as Postfix
 * does): a decision at end of headers gets no reply there, its verdict
 * answers end of message.  Returns milter_client_eom's code. */
static int eoh_eom(milter_client *c, milter_client_result *r) {
  OK(milter_client_eoh(c, r));
  assert_int_equal(r->status, MILTER_CLIENT_NOREPLY);
  return milter_client_eom(c, r);
}

/* ---- stages and replies ------------------------------------------------- */

static void test_eom_untouched_zero_actions(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  S = (scen){0};
  tf_start(&t, &o);
  milter_client_nego n;
  milter_client *c = open_client(&t, &n);
  /* Nothing before end of message needs an answer. */
  uint32_t nr = MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL |
                MILTER_P_NR_RCPT | MILTER_P_NR_HDR | MILTER_P_NR_BODY;
  assert_int_equal(n.protocol & nr, nr);
  assert_true(n.protocol & MILTER_P_HDR_LEADSPC);
  assert_true(n.protocol & MILTER_P_NOEOH);
  assert_true(n.protocol & MILTER_P_NOUNKNOWN);
  tf_envelope(c, "<s@example.org>", 2, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_body(c, "hi\r\n", 4, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 0);
  assert_int_equal(atomic_load(&S.calls), 1);
  assert_int_equal(S.seen_stage, MF_STAGE_EOM);
  assert_int_equal(S.seen_rcpts, 2);
  assert_int_equal(S.seen_body, 4);
  assert_string_equal(S.seen_auth, "(none)");
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static void test_eoh_accept_no_body(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOH);
  S = (scen){0};
  tf_start(&t, &o);
  milter_client_nego n;
  milter_client *c = open_client(&t, &n);
  assert_true(n.protocol & MILTER_P_NOBODY);
  assert_true(n.protocol & MILTER_P_NR_EOH);
  tf_envelope(c, "<s@example.org>", 2, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  OK(milter_client_eoh(c, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  /* The MTA transmits no body at all. */
  OK(milter_client_body(c, "x\r\n", 3, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 0);
  assert_int_equal(S.seen_stage, MF_STAGE_EOH);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static mf_decision tag_subject(mf_trx *trx, scen *s) {
  (void)s;
  mf_hdrs *h = mf_trx_headers(trx);
  size_t i;
  if (mf_hdr_find(h, "Subject", 1, &i) == 0)
    mf_hdr_set(h, i, "[EXT] hello");
  return MF_ACCEPT;
}

static void test_eoh_change_held_until_eom(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOH);
  S = (scen){.fn = tag_subject};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  OK(milter_client_eoh(c, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_body(c, "x\r\n", 3, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 1);
  assert_int_equal(r.actions[0].type, MILTER_ACTION_CHGHEADER);
  assert_string_equal(r.actions[0].name, "Subject");
  assert_int_equal(r.actions[0].index, 1);
  assert_string_equal(r.actions[0].value, " [EXT] hello");
  assert_int_equal(atomic_load(&S.calls), 1);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static mf_decision reject_ml(mf_trx *trx, scen *s) {
  (void)s;
  CHK((mf_trx_set_reply(trx, "550", "5.7.1",
                                    "first line\nsecond line")) == (0));
  return MF_REJECT;
}

static void test_mail_stage_custom_reject(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_MAIL);
  S = (scen){.fn = reject_ml};
  tf_start(&t, &o);
  milter_client_nego n;
  milter_client *c = open_client(&t, &n);
  assert_false(n.protocol & MILTER_P_NR_MAIL);
  assert_true(n.protocol & MILTER_P_NOHDRS);
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET, 25, "192.0.2.1", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_helo(c, "h", &r));
  OK(milter_client_mail(c, "<s@example.org>", 0, NULL, &r));
  assert_int_equal(r.reply, MILTER_REPLY_REPLYCODE);
  assert_string_equal(r.text, "550-5.7.1 first line\r\n550 5.7.1 second line");
  assert_int_equal(S.seen_stage, MF_STAGE_MAIL);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static mf_decision quarantine(mf_trx *trx, scen *s) {
  (void)s;
  CHK((mf_trx_quarantine(trx, "spam trap")) == (0));
  return MF_QUARANTINE;
}

static void test_quarantine_at_eoh(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOH);
  S = (scen){.fn = quarantine};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 2, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  OK(eoh_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 1);
  assert_int_equal(r.actions[0].type, MILTER_ACTION_QUARANTINE);
  assert_string_equal(r.actions[0].value, "spam trap");
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static void test_connect_stage_reject(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_CONNECT);
  S = (scen){.fn = reject_ml};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET, 25, "192.0.2.1", &r));
  assert_int_equal(r.reply, MILTER_REPLY_REPLYCODE);
  assert_int_equal(S.seen_stage, MF_STAGE_CONNECT);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

/* ---- errors ------------------------------------------------------------- */

static mf_decision dfail(mf_trx *trx, scen *s) {
  (void)trx;
  (void)s;
  return MF_FAIL;
}

static void test_fail_default_tempfail_and_accept(void **state) {
  (void)state;
  for (int mode = 0; mode < 3; mode++) {
    tf t;
    mf_opts o;
    base_opts(&o, MF_STAGE_EOH);
    o.on_error = mode == 0 ? MF_DO_TEMPFAIL
                 : mode == 1 ? MF_DO_ACCEPT
                             : MF_DO_CLOSE;
    S = (scen){.fn = dfail};
    tf_start(&t, &o);
    milter_client *c = open_client(&t, NULL);
    tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
    milter_client_result r = {0};
    headers(c, &r);
    int rc = eoh_eom(c, &r);
    if (mode == 0) {
      assert_int_equal(rc, 0);
      assert_int_equal(r.reply, MILTER_REPLY_REPLYCODE);
      assert_string_equal(r.text,
                          "451 4.3.0 Temporary failure in the mail filter");
    } else if (mode == 1) {
      assert_int_equal(rc, 0);
      assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
    } else {
      assert_true(rc < 0); /* the milter dropped the connection */
    }
    milter_client_result_free(&r);
    milter_client_free(c);
    tf_stop(&t);
  }
}

/* ---- pending decisions and PROGRESS ------------------------------------- */

static void *later(void *arg) {
  usleep(300 * 1000);
  mf_trx_complete(arg, MF_REJECT);
  return NULL;
}

static pthread_t later_thread;

static mf_decision go_pending(mf_trx *trx, scen *s) {
  (void)s;
  pthread_create(&later_thread, NULL, later, trx);
  return MF_PENDING;
}

static void test_pending_with_progress(void **state) {
  (void)state;
  for (int nonblocking = 0; nonblocking < 2; nonblocking++) {
    tf t;
    mf_opts o;
    base_opts(&o, MF_STAGE_EOH);
    o.progress_ms = 40;
    if (nonblocking)
      o.flags |= MF_OPT_NONBLOCKING;
    S = (scen){.fn = go_pending};
    tf_start(&t, &o);
    milter_client *c = open_client(&t, NULL);
    tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
    milter_client_result r = {0};
    headers(c, &r);
    OK(eoh_eom(c, &r));
    assert_int_equal(r.reply, MILTER_REPLY_REJECT);
    assert_true(r.progress >= 2);
    pthread_join(later_thread, NULL);
    milter_client_result_free(&r);
    milter_client_quit(c);
    milter_client_free(c);
    tf_stop(&t);
  }
}

static void test_slow_decision_other_connections_served(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_CONNECT);
  o.workers = 4;
  S = (scen){.delay_ms = 400};
  tf_start(&t, &o);
  enum { N = 4 };
  milter_client *c[N];
  for (int i = 0; i < N; i++)
    c[i] = open_client(&t, NULL);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  /* Four blocking decisions on four workers run side by side. */
  milter_client_result r = {0};
  for (int i = 0; i < N; i++) {
    milter_client *cc = c[i];
    if (milter_client_connect(cc, "h", MILTER_FAMILY_INET, 25, "192.0.2.1",
                              &r) != 0)
      fail_msg("connect failed");
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(atomic_load(&S.calls), N);
  /* Not a timing assertion on speed: a sanity check that the pool exists
   * (sequential would be >= 1.6 s). */
  double secs = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  (void)secs;
  for (int i = 0; i < N; i++) {
    milter_client_quit(c[i]);
    milter_client_free(c[i]);
  }
  milter_client_result_free(&r);
  tf_stop(&t);
}

/* ---- recipients ------------------------------------------------------------
 */

static void test_rcpt_validator(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOH);
  o.validate_rcpt = validate;
  S = (scen){0};
  tf_start(&t, &o);
  milter_client_nego n;
  milter_client *c = open_client(&t, &n);
  assert_false(n.protocol & MILTER_P_NR_RCPT);
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET, 25, "192.0.2.1", &r));
  OK(milter_client_helo(c, "h", &r));
  OK(milter_client_mail(c, "<s@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<good@example.net>", 0, NULL, &r));
  assert_int_equal(r.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_rcpt(c, "<bad@example.net>", 0, NULL, &r));
  assert_int_equal(r.reply, MILTER_REPLY_REPLYCODE);
  assert_string_equal(r.text, "550 5.1.1 no such user here");
  OK(milter_client_rcpt(c, "<other@example.net>", 0, NULL, &r));
  assert_int_equal(r.reply, MILTER_REPLY_CONTINUE);
  headers(c, &r);
  OK(eoh_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(S.seen_rcpts, 2); /* the rejected one is gone */
  assert_int_equal(atomic_load(&S.rcpt_calls), 3);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static mf_decision envelope_edits(mf_trx *trx, scen *s) {
  (void)s;
  CHK((mf_trx_del_rcpt(trx, "<A@EXAMPLE.NET>")) == (0)); /* case */
  CHK((mf_trx_del_rcpt(trx, "<a@EXAMPLE.NET>")) == (1));
  CHK((mf_trx_add_rcpt(trx, "<c@example.net>", "NOTIFY=NEVER")) == (0));
  CHK((mf_trx_add_rcpt(trx, "<d@example.net>", NULL)) == (0));
  /* added then deleted: nothing on the wire */
  CHK((mf_trx_add_rcpt(trx, "<e@example.net>", NULL)) == (0));
  CHK((mf_trx_del_rcpt(trx, "<e@example.net>")) == (1));
  CHK((mf_trx_change_from(trx, "<new@example.org>", "BODY=8BITMIME")) == (0));
  CHK((mf_trx_rcpt_count(trx)) == (3));
  CHK((mf_trx_add_rcpt(trx, "not an address", NULL)) == (MF_E_ADDR));
  return MF_ACCEPT;
}

static void test_envelope_actions(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  S = (scen){.fn = envelope_edits};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 2, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 4);
  assert_int_equal(r.actions[0].type, MILTER_ACTION_DELRCPT);
  assert_string_equal(r.actions[0].name, "<a@example.net>");
  assert_int_equal(r.actions[1].type, MILTER_ACTION_ADDRCPT_PAR);
  assert_string_equal(r.actions[1].name, "<c@example.net>");
  assert_string_equal(r.actions[1].value, "NOTIFY=NEVER");
  assert_int_equal(r.actions[2].type, MILTER_ACTION_ADDRCPT);
  assert_string_equal(r.actions[2].name, "<d@example.net>");
  assert_int_equal(r.actions[3].type, MILTER_ACTION_CHGFROM);
  assert_string_equal(r.actions[3].name, "<new@example.org>");
  assert_string_equal(r.actions[3].value, "BODY=8BITMIME");
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

/* ---- headers ------------------------------------------------------------ */

static mf_decision header_edits(mf_trx *trx, scen *s) {
  (void)s;
  mf_hdrs *h = mf_trx_headers(trx);
  CHK((mf_hdr_count(h)) == (4));
  CHK((mf_hdr_insert(h, 0, "X-First", "top")) == (0));
  CHK((mf_hdr_add(h, "X-Last", "bottom")) == (0));
  CHK((mf_hdr_delete_nth(h, "x-a", 2)) == (0));
  CHK((mf_hdr_set_nth(h, "X-A", 1, "one")) == (0));
  return MF_ACCEPT;
}

static void test_header_actions_minimal(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  S = (scen){.fn = header_edits};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.n_actions, 4);
  const milter_action *a = r.actions;
  /* appends first, then the rest from the bottom up */
  assert_int_equal(a[0].type, MILTER_ACTION_ADDHEADER);
  assert_string_equal(a[0].name, "X-Last");
  assert_string_equal(a[0].value, " bottom");
  assert_int_equal(a[1].type, MILTER_ACTION_CHGHEADER);
  assert_string_equal(a[1].name, "X-A");
  assert_int_equal(a[1].index, 2);
  assert_string_equal(a[1].value, "");
  assert_int_equal(a[2].type, MILTER_ACTION_CHGHEADER);
  assert_int_equal(a[2].index, 1);
  assert_string_equal(a[2].value, " one");
  assert_int_equal(a[3].type, MILTER_ACTION_INSHEADER);
  assert_int_equal(a[3].index, 1); /* after the MTA's hidden Received: */
  assert_string_equal(a[3].name, "X-First");
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

/* ---- body: spool, replace, limit ---------------------------------------- */

#define BODY_N (300u * 1024u)

static mf_decision read_and_replace(mf_trx *trx, scen *s) {
  uint8_t *want = tf_pattern(BODY_N, 1);
  uint8_t *got = malloc(BODY_N);
  ssize_t n = mf_trx_body_read(trx, 0, got, BODY_N);
  s->body_ok = n == (ssize_t)BODY_N && memcmp(want, got, BODY_N) == 0 &&
               mf_trx_body_mem(trx) == NULL;
  free(got);
  free(want);
  uint8_t *nb = tf_pattern(BODY_N, 7);
  mf_trx_replace_body(trx, nb, BODY_N);
  free(nb);
  return MF_ACCEPT;
}

static void test_body_spool_and_replace(void **state) {
  (void)state;
  char dir[] = "/tmp/mf-spool-XXXXXX";
  assert_non_null(mkdtemp(dir));
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  o.body_mem_max = 64 * 1024;
  o.spool_dir = dir;
  S = (scen){.fn = read_and_replace};
  tf_start(&t, &o);
  int fds0 = tu_count_fds();
  milter_client_nego n;
  milter_client *c = open_client(&t, &n);
  tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  uint8_t *b = tf_pattern(BODY_N, 1);
  OK(milter_client_body(c, b, BODY_N, &r));
  free(b);
  OK(milter_client_eom(c, &r));
  assert_true(S.body_ok);
  assert_true(S.seen_body_fd);
  assert_int_equal(S.seen_body, BODY_N);
  assert_int_equal(r.n_actions, 1);
  assert_int_equal(r.actions[0].type, MILTER_ACTION_REPLBODY);
  assert_int_equal(r.actions[0].body_len, BODY_N);
  size_t ds = n.data_size;
  assert_int_equal(r.actions[0].chunks, (BODY_N + ds - 1) / ds);
  uint8_t *want = tf_pattern(BODY_N, 7);
  assert_memory_equal(r.actions[0].body, want, BODY_N);
  free(want);
  milter_client_result_free(&r);
  /* Nothing on disk, and the spool fd is closed after end of message. */
  assert_int_equal(tf_count_dir(dir), 0);
  milter_client_quit(c);
  milter_client_free(c);
  usleep(100 * 1000);
  assert_int_equal(tu_count_fds(), fds0);
  tf_stop(&t);
  rmdir(dir);
}

static void test_body_limit_reject(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  o.max_body = 1000;
  S = (scen){0};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  uint8_t *b = tf_pattern(5000, 0);
  OK(milter_client_body(c, b, 5000, &r));
  free(b);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_REPLYCODE);
  assert_string_equal(r.text, "552 5.3.4 Message size exceeds fixed limit");
  assert_int_equal(atomic_load(&S.calls), 0);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

static void test_mta_vanishes_mid_body(void **state) {
  (void)state;
  char dir[] = "/tmp/mf-spool-XXXXXX";
  assert_non_null(mkdtemp(dir));
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  o.body_mem_max = 1024;
  o.spool_dir = dir;
  S = (scen){0};
  tf_start(&t, &o);
  int fds0 = tu_count_fds();
  for (int round = 0; round < 3; round++) {
    milter_client *c = open_client(&t, NULL);
    tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
    milter_client_result r = {0};
    headers(c, &r);
    uint8_t *b = tf_pattern(100000, 0);
    OK(milter_client_body(c, b, 100000, &r));
    free(b);
    milter_client_result_free(&r);
    milter_client_free(c); /* gone without EOM or QUIT */
  }
  /* The next connection is served normally. */
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 1, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  usleep(200 * 1000);
  assert_int_equal(tu_count_fds(), fds0);
  assert_int_equal(tf_count_dir(dir), 0);
  tf_stop(&t);
  rmdir(dir);
}

/* ---- two messages on one connection ------------------------------------- */

static mf_decision count_only(mf_trx *trx, scen *s) {
  (void)s;
  char v[32];
  snprintf(v, sizeof v, "%zu", mf_trx_rcpt_count(trx));
  mf_hdr_add(mf_trx_headers(trx), "X-Rcpt-Count", v);
  return MF_ACCEPT;
}

static void test_two_messages_without_abort(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  base_opts(&o, MF_STAGE_EOM);
  S = (scen){.fn = count_only};
  tf_start(&t, &o);
  milter_client *c = open_client(&t, NULL);
  tf_envelope(c, "<s@example.org>", 2, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  headers(c, &r);
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.n_actions, 1);
  assert_string_equal(r.actions[0].value, " 2");
  /* Postfix: the next MAIL without ABORT. */
  OK(milter_client_mail(c, "<t@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<x@example.net>", 0, NULL, &r));
  OK(milter_client_header(c, "Subject", " two", &r));
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.n_actions, 1);
  assert_string_equal(r.actions[0].value, " 1");
  /* ABORT then a third. */
  OK(milter_client_mail(c, "<u@example.org>", 0, NULL, &r));
  OK(milter_client_abort(c));
  OK(milter_client_mail(c, "<v@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<y@example.net>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<z@example.net>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<w@example.net>", 0, NULL, &r));
  OK(milter_client_eom(c, &r));
  assert_string_equal(r.actions[0].value, " 3");
  assert_int_equal(atomic_load(&S.calls), 3);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_stop(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_eom_untouched_zero_actions),
      cmocka_unit_test(test_eoh_accept_no_body),
      cmocka_unit_test(test_eoh_change_held_until_eom),
      cmocka_unit_test(test_mail_stage_custom_reject),
      cmocka_unit_test(test_quarantine_at_eoh),
      cmocka_unit_test(test_connect_stage_reject),
      cmocka_unit_test(test_fail_default_tempfail_and_accept),
      cmocka_unit_test(test_pending_with_progress),
      cmocka_unit_test(test_slow_decision_other_connections_served),
      cmocka_unit_test(test_rcpt_validator),
      cmocka_unit_test(test_envelope_actions),
      cmocka_unit_test(test_header_actions_minimal),
      cmocka_unit_test(test_body_spool_and_replace),
      cmocka_unit_test(test_body_limit_reject),
      cmocka_unit_test(test_mta_vanishes_mid_body),
      cmocka_unit_test(test_two_messages_without_abort),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
