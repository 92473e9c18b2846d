/* test_filter_conn.c -- mf_filter's per-connection state across messages.
 *
 * Between messages a connection keeps only its connection data (hostname,
 * address, port, HELO name) and the connection-stage decision; the
 * transaction is allocated for each message, and for a decision at CONNECT
 * or HELO, and freed when it is over.  These tests drive mf_filter over a
 * socket with the blocking client and check what decide() sees in each
 * message of one connection, and that a connection-stage verdict applies
 * to every message after it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_proto.h>

/* What the last decide() saw (the filter runs with MF_OPT_NONBLOCKING on
 * the loop thread; the client waits for each reply, so the test thread
 * reads it after the reply that follows the call). */
typedef struct seen {
  int calls;
  mf_stage stage;
  char host[64], ip[64], helo[64];
  unsigned port;
} seen;

static seen last;

static void copy(char *dst, const char *src) {
  snprintf(dst, 64, "%s", src != NULL ? src : "(null)");
}

static mf_decision record(mf_trx *trx, void *ud) {
  mf_decision d = (mf_decision)(intptr_t)ud;
  last.calls++;
  last.stage = mf_trx_stage(trx);
  copy(last.host, mf_trx_client_hostname(trx));
  copy(last.ip, mf_trx_client_ip(trx));
  copy(last.helo, mf_trx_helo(trx));
  last.port = mf_trx_client_port(trx);
  if (d == MF_QUARANTINE &&
      mf_trx_quarantine(trx, "held at the connection") != 0)
    return MF_FAIL;
  return d;
}

/* The filter under test, served by its own thread. */
static mf_filter *filt;
static pthread_t filt_thread;
static char filt_spec[64];

static void *serve(void *arg) {
  (void)arg;
  mf_filter_run(filt);
  return NULL;
}

/* decide() at stage, returning d. */
static void filter_start(mf_stage stage, mf_decision d) {
  mf_opts o;
  mf_opts_init(&o);
  o.stage = stage;
  o.flags |= MF_OPT_NONBLOCKING;
  o.server.handle_signals = 0;
  o.server.log_level = MILTER_LOG_ERROR;
  o.server.drain_timeout_ms = 2000;
  assert_int_equal(mf_filter_new(&filt, record, (void *)(intptr_t)d, &o), 0);
  assert_int_equal(mf_filter_listen(filt, "inet:0@127.0.0.1"), 0);
  snprintf(filt_spec, sizeof filt_spec, "inet:%d@127.0.0.1",
           milter_server_port(mf_filter_server(filt)));
  assert_int_equal(pthread_create(&filt_thread, NULL, serve, NULL), 0);
}

static void filter_stop(void) {
  mf_filter_stop(filt);
  pthread_join(filt_thread, NULL);
  mf_filter_free(filt);
  filt = NULL;
}

/* A client past CONNECT from client.example [192.0.2.7]:2525. */
static milter_client *client_connect(void) {
  milter_client *c = NULL;
  milter_client_opts o;
  milter_client_opts_init(&o);
  assert_int_equal(milter_client_new(&c, &o), 0);
  assert_int_equal(milter_client_open(c, filt_spec), 0);
  milter_client_nego nego;
  assert_int_equal(milter_client_negotiate(c, &nego), 0);
  milter_client_result r = {0};
  assert_int_equal(milter_client_connect(c, "client.example",
                                         MILTER_FAMILY_INET, 2525,
                                         "192.0.2.7", &r),
                   0);
  milter_client_result_free(&r);
  return c;
}

static void client_close(milter_client *c) {
  milter_client_quit(c);
  milter_client_free(c);
}

/* One message; its end-of-message result in *r. */
static void message(milter_client *c, milter_client_result *r) {
  milter_client_result x = {0};
  assert_int_equal(milter_client_mail(c, "<s@example.org>", 0, NULL, &x), 0);
  milter_client_result_free(&x);
  assert_int_equal(milter_client_rcpt(c, "<r@example.net>", 0, NULL, &x), 0);
  milter_client_result_free(&x);
  assert_int_equal(milter_client_eom(c, r), 0);
}

static void assert_conn(const char *helo) {
  assert_string_equal(last.host, "client.example");
  assert_string_equal(last.ip, "192.0.2.7");
  assert_int_equal(last.port, 2525);
  assert_string_equal(last.helo, helo);
}

/* Decided at end of message: every message of the connection sees the
 * connection's data, a later HELO included; an aborted message leaves it
 * as it was. */
static void test_conn_data_across_messages(void **state) {
  (void)state;
  filter_start(MF_STAGE_EOM, MF_ACCEPT);
  milter_client *c = client_connect();
  milter_client_result r = {0};
  assert_int_equal(milter_client_helo(c, "one.example", &r), 0);
  milter_client_result_free(&r);
  last.calls = 0;
  message(c, &r);
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  milter_client_result_free(&r);
  assert_int_equal(last.calls, 1);
  assert_conn("one.example");

  message(c, &r);
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  milter_client_result_free(&r);
  assert_int_equal(last.calls, 2);
  assert_conn("one.example");

  /* A message given up before its end, then a new HELO. */
  assert_int_equal(milter_client_mail(c, "<s@example.org>", 0, NULL, &r), 0);
  milter_client_result_free(&r);
  assert_int_equal(milter_client_abort(c), 0);
  assert_int_equal(milter_client_helo(c, "two.example", &r), 0);
  milter_client_result_free(&r);
  message(c, &r);
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  milter_client_result_free(&r);
  assert_int_equal(last.calls, 3);
  assert_conn("two.example");
  client_close(c);
  filter_stop();
}

/* Decided at HELO: the decision sees the connection's data, and its
 * QUARANTINE applies to each message after it without another call. */
static void test_helo_decision_held_for_messages(void **state) {
  (void)state;
  filter_start(MF_STAGE_HELO, MF_QUARANTINE);
  milter_client *c = client_connect();
  milter_client_result r = {0};
  last.calls = 0;
  assert_int_equal(milter_client_helo(c, "one.example", &r), 0);
  assert_int_equal(r.reply, MILTER_REPLY_CONTINUE);
  milter_client_result_free(&r);
  assert_int_equal(last.calls, 1);
  assert_int_equal(last.stage, MF_STAGE_HELO);
  assert_conn("one.example");
  for (int i = 0; i < 2; i++) {
    message(c, &r);
    assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(r.n_actions, 1);
    assert_int_equal(r.actions[0].type, MILTER_ACTION_QUARANTINE);
    assert_string_equal(r.actions[0].value, "held at the connection");
    milter_client_result_free(&r);
  }
  assert_int_equal(last.calls, 1);
  client_close(c);
  filter_stop();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conn_data_across_messages),
      cmocka_unit_test(test_helo_decision_held_for_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
