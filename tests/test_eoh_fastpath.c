/* test_eoh_fastpath.c -- a decision at end of headers costs one round trip.
 *
 * An mf_filter at MF_STAGE_EOH, on the worker pool and on the loop
 * (MF_OPT_NONBLOCKING), driven by core's blocking MTA-side client:
 *   - negotiation: NR_EOH and NOBODY are asked for when the MTA offers them
 *     (the client's default offer is Postfix's: every step), and NR_EOH is
 *     not there when the MTA does not offer it;
 *   - with NR_EOH, decide() starts at end of headers (it has run before end
 *     of message is even sent), end of headers gets no reply, and the
 *     verdict with its modifications (or an early REJECT / TEMPFAIL /
 *     DISCARD / plain ACCEPT) answers end of message, also when end of
 *     message arrives while decide() still runs;
 *   - a header limit hit before the decision is answered at end of message;
 *   - without NR_EOH the verdict answers end of headers, as before;
 *   - an MTA that leaves while decide() runs: the decision is dropped,
 *     logged, and the next connection is served.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_proto.h>

#include "testutil.h"
#include "mftest.h"

/* ---- the decision ------------------------------------------------------- */

enum verdict_kind {
  V_ACCEPT_TAGGED, /* ACCEPT after adding a header */
  V_ACCEPT,        /* ACCEPT, nothing changed */
  V_REJECT,        /* REJECT with a custom reply */
  V_TEMPFAIL,      /* TEMPFAIL, plain */
  V_DISCARD,
  V_COUNT
};

static struct {
  atomic_int kind;
  atomic_int calls;
  atomic_int stage;   /* mf_trx_stage() seen by the last call */
  atomic_int hold;    /* wait for `go` before returning */
  sem_t entered, go;
} D;

static mf_decision decide(mf_trx *trx, void *ud) {
  (void)ud;
  atomic_fetch_add(&D.calls, 1);
  atomic_store(&D.stage, (int)mf_trx_stage(trx));
  int hold = atomic_load(&D.hold);
  if (hold) {
    sem_post(&D.entered);
    while (sem_wait(&D.go) != 0)
      ;
  }
  switch (atomic_load(&D.kind)) {
  case V_ACCEPT_TAGGED:
    mf_hdr_add(mf_trx_headers(trx), "X-Tag", "eoh");
    return MF_ACCEPT;
  case V_REJECT:
    mf_trx_set_reply(trx, "550", "5.7.1", "not here");
    return MF_REJECT;
  case V_TEMPFAIL:
    return MF_TEMPFAIL;
  case V_DISCARD:
    return MF_DISCARD;
  default:
    return MF_ACCEPT;
  }
}

/* ---- the filter and its log --------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[16384];

static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(logbuf);
  snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
  pthread_mutex_unlock(&log_mu);
  if (getenv("MF_TEST_VERBOSE") != NULL)
    fprintf(stderr, "[filter %d] %s\n", (int)lvl, msg);
}

static int log_has(const char *s) {
  pthread_mutex_lock(&log_mu);
  int r = strstr(logbuf, s) != NULL;
  pthread_mutex_unlock(&log_mu);
  return r;
}

static void start(tf *t, int on_loop, unsigned max_headers) {
  mf_opts o;
  mf_opts_init(&o);
  o.stage = MF_STAGE_EOH;
  o.workers = 2;
  if (on_loop)
    o.flags |= MF_OPT_NONBLOCKING;
  if (max_headers) {
    o.max_headers = max_headers;
    o.header_limit = MF_DO_REJECT;
  }
  o.server.handle_signals = 0;
  o.server.log = t_log;
  o.server.log_level = MILTER_LOG_DEBUG;
  o.server.drain_timeout_ms = 2000;
  pthread_mutex_lock(&log_mu);
  logbuf[0] = '\0';
  pthread_mutex_unlock(&log_mu);
  atomic_store(&D.calls, 0);
  atomic_store(&D.hold, 0);
  tf_launch(t, &o, decide, NULL);
}

/* Everything Postfix offers but NR_EOH. */
#define NO_NR_EOH                                                              \
  ((MILTER_P_ALL_STEPS | MILTER_P_MDS_256K | MILTER_P_MDS_1M) &                \
   ~MILTER_P_NR_EOH)

static const char *const rcpts[] = {"<a@example.net>", "<b@example.net>"};

/* MAIL .. the headers of one message (CONNECT and HELO when first); the
 * last header only when all3. */
static void until_headers_n(milter_client *c, int first, int all3) {
  milter_client_result r = {0};
  if (first) {
    tf_envelope(c, "<s@example.org>", 2, rcpts, MILTER_CLIENT_NOREPLY);
  } else {
    OK(milter_client_mail(c, "<s@example.org>", 0, NULL, &r));
    assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
    OK(milter_client_rcpt(c, rcpts[0], 0, NULL, &r));
  }
  OK(milter_client_header(c, "From", " a@example.org", &r));
  OK(milter_client_header(c, "Subject", " hi", &r));
  if (all3)
    OK(milter_client_header(c, "To", " b@example.net", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  milter_client_result_free(&r);
}

static void until_headers(milter_client *c, int first) {
  until_headers_n(c, first, 1);
}

/* The answer of verdict kind k, at end of message or end of headers. */
static void check_answer(const milter_client_result *r, int k, int at_eoh) {
  assert_int_equal(r->status, MILTER_CLIENT_REPLIED);
  switch (k) {
  case V_ACCEPT_TAGGED:
    if (at_eoh) { /* the change waits for end of message */
      assert_int_equal(r->reply, MILTER_REPLY_CONTINUE);
      break;
    }
    assert_int_equal(r->reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(r->n_actions, 1);
    assert_int_equal(r->actions[0].type, MILTER_ACTION_ADDHEADER);
    assert_string_equal(r->actions[0].name, "X-Tag");
    assert_string_equal(r->actions[0].value, " eoh"); /* HDR_LEADSPC */
    break;
  case V_ACCEPT:
    assert_int_equal(r->reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(r->n_actions, 0);
    break;
  case V_REJECT:
    assert_int_equal(r->reply, MILTER_REPLY_REPLYCODE);
    assert_string_equal(r->text, "550 5.7.1 not here");
    assert_int_equal(r->n_actions, 0);
    break;
  case V_TEMPFAIL:
    assert_int_equal(r->reply, MILTER_REPLY_TEMPFAIL);
    break;
  default:
    assert_int_equal(r->reply, MILTER_REPLY_DISCARD);
    break;
  }
}

/* ---- negotiation -------------------------------------------------------- */

static void test_negotiation(void **state) {
  (void)state;
  for (int on_loop = 0; on_loop < 2; on_loop++) {
    tf t;
    start(&t, on_loop, 0);
    milter_client_nego n;
    milter_client *c = tf_client(&t, 0, &n);
    /* End of headers needs no reply, no body is sent, headers are. */
    assert_true(n.protocol & MILTER_P_NR_EOH);
    assert_true(n.protocol & MILTER_P_NOBODY);
    assert_true(n.protocol & MILTER_P_NR_HDR);
    assert_false(n.protocol & MILTER_P_NOHDRS);
    assert_false(n.protocol & MILTER_P_NOEOH);
    milter_client_quit(c);
    milter_client_free(c);
    /* An MTA without NR_EOH: end of headers is answered. */
    c = tf_client(&t, NO_NR_EOH, &n);
    assert_false(n.protocol & MILTER_P_NR_EOH);
    assert_true(n.protocol & MILTER_P_NOBODY);
    milter_client_quit(c);
    milter_client_free(c);
    tf_halt(&t);
  }
}

/* ---- with NR_EOH: decided at EOH, answered at EOM ----------------------- */

/* End of message arrives while decide() still runs: its answer waits. */
static void *release_later(void *arg) {
  (void)arg;
  while (sem_wait(&D.entered) != 0)
    ;
  usleep(50 * 1000); /* most likely after EOM arrived; either order is
                        correct and gives the same answer */
  sem_post(&D.go);
  return NULL;
}

/* Every verdict kind, one message each on one connection (the next MAIL
 * follows without ABORT, as from Postfix).  eom_early: end of message is
 * sent while decide() runs; otherwise once decide() has returned. */
static void verdicts_at_eom(int on_loop, int eom_early) {
  tf t;
  start(&t, on_loop, 0);
  atomic_store(&D.hold, 1);
  milter_client *c = tf_client(&t, 0, NULL);
  for (int k = 0; k < V_COUNT; k++) {
    atomic_store(&D.kind, k);
    atomic_store(&D.calls, 0);
    until_headers(c, k == 0);
    pthread_t th;
    if (eom_early)
      assert_int_equal(pthread_create(&th, NULL, release_later, NULL), 0);
    milter_client_result r = {0};
    OK(milter_client_eoh(c, &r));
    assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
    if (!eom_early) {
      /* decide() runs now, before end of message is sent. */
      while (sem_wait(&D.entered) != 0)
        ;
      assert_int_equal(atomic_load(&D.calls), 1);
      assert_int_equal(atomic_load(&D.stage), MF_STAGE_EOH);
      sem_post(&D.go);
    }
    OK(milter_client_body(c, "x\r\n", 3, &r));
    assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT); /* NOBODY */
    OK(milter_client_eom(c, &r));
    if (eom_early)
      pthread_join(th, NULL);
    check_answer(&r, k, 0);
    assert_int_equal(atomic_load(&D.calls), 1);
    assert_int_equal(atomic_load(&D.stage), MF_STAGE_EOH);
    milter_client_result_free(&r);
  }
  milter_client_quit(c);
  milter_client_free(c);
  tf_halt(&t);
}

static void test_verdict_at_eom(void **state) {
  (void)state;
  verdicts_at_eom(0, 0);
  verdicts_at_eom(1, 0);
}

static void test_eom_while_deciding(void **state) {
  (void)state;
  verdicts_at_eom(0, 1);
  verdicts_at_eom(1, 1);
}

/* A limit hit before the decision is answered at end of message too. */
static void test_limit_at_eom(void **state) {
  (void)state;
  for (int on_loop = 0; on_loop < 2; on_loop++) {
    tf t;
    start(&t, on_loop, 2); /* until_headers sends 3 */
    milter_client *c = tf_client(&t, 0, NULL);
    until_headers(c, 1);
    milter_client_result r = {0};
    OK(milter_client_eoh(c, &r));
    assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
    OK(milter_client_eom(c, &r));
    assert_int_equal(r.reply, MILTER_REPLY_REPLYCODE);
    assert_string_equal(r.text, "552 5.3.4 Message header too large");
    assert_int_equal(atomic_load(&D.calls), 0);
    /* The connection goes on: the next message is decided again. */
    atomic_store(&D.kind, V_ACCEPT);
    until_headers_n(c, 0, 0);
    OK(milter_client_eoh(c, &r));
    OK(milter_client_eom(c, &r));
    assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(atomic_load(&D.calls), 1);
    milter_client_result_free(&r);
    milter_client_quit(c);
    milter_client_free(c);
    tf_halt(&t);
  }
}

/* ---- without NR_EOH: answered at EOH, as before ------------------------- */

static void test_no_nr_eoh_answers_at_eoh(void **state) {
  (void)state;
  for (int on_loop = 0; on_loop < 2; on_loop++) {
    tf t;
    start(&t, on_loop, 0);
    milter_client *c = tf_client(&t, NO_NR_EOH, NULL);
    for (int k = 0; k < V_COUNT; k++) {
      atomic_store(&D.kind, k);
      atomic_store(&D.calls, 0);
      until_headers(c, k == 0);
      milter_client_result r = {0};
      OK(milter_client_eoh(c, &r));
      assert_int_equal(atomic_load(&D.calls), 1);
      check_answer(&r, k, 1);
      if (k == V_ACCEPT_TAGGED) { /* held: end of message brings it */
        OK(milter_client_eom(c, &r));
        check_answer(&r, k, 0);
      }
      milter_client_result_free(&r);
    }
    milter_client_quit(c);
    milter_client_free(c);
    tf_halt(&t);
  }
}

/* ---- the MTA leaves while decide() runs --------------------------------- */

static void test_mta_leaves_while_deciding(void **state) {
  (void)state;
  tf t;
  start(&t, 0, 0);
  atomic_store(&D.kind, V_ACCEPT_TAGGED);
  atomic_store(&D.hold, 1);
  milter_client *c = tf_client(&t, 0, NULL);
  until_headers(c, 1);
  milter_client_result r = {0};
  OK(milter_client_eoh(c, &r));
  while (sem_wait(&D.entered) != 0)
    ;
  milter_client_free(c); /* closes the socket, no QUIT: the MTA gave up */
  /* The server sees the MTA go while the reply is still owed. */
  for (int i = 0; i < 2000 && !log_has("MTA closed the connection"); i++)
    usleep(5000);
  assert_true(log_has("MTA closed the connection"));
  sem_post(&D.go);
  for (int i = 0; i < 2000 && !log_has("dropped: the MTA has left"); i++)
    usleep(5000);
  assert_true(log_has("decision accept dropped: the MTA has left"));
  /* Served as usual afterwards. */
  atomic_store(&D.hold, 0);
  c = tf_client(&t, 0, NULL);
  until_headers(c, 1);
  OK(milter_client_eoh(c, &r));
  OK(milter_client_eom(c, &r));
  check_answer(&r, V_ACCEPT_TAGGED, 0);
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
  tf_halt(&t);
}

int main(void) {
  sem_init(&D.entered, 0, 0);
  sem_init(&D.go, 0, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_negotiation),
      cmocka_unit_test(test_verdict_at_eom),
      cmocka_unit_test(test_eom_while_deciding),
      cmocka_unit_test(test_limit_at_eom),
      cmocka_unit_test(test_no_nr_eoh_answers_at_eoh),
      cmocka_unit_test(test_mta_leaves_while_deciding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
