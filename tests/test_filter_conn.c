/* test_filter_conn.c -- mf_filter's per-connection state across messages.
 *
 * Between messages a connection keeps only its connection data (hostname,
 * address, port, HELO name) and the connection-stage decision; the
 * transaction is allocated for each message, and for a decision at CONNECT
 * or HELO, and freed when it is over.  These tests drive mf_filter over a
 * socket with the blocking client and check what decide() sees in each
 * message of one connection, and that a connection-stage verdict applies
 * to every message after it (and is kept through later HELOs), a HELO
 * name equal to the hostname, QUIT_NC and a new CONNECT, a missing
 * CONNECT. */
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

/* decide() at stage, returning d, on the loop thread (on_loop) or on the
 * worker pool. */
static void filter_start_on(mf_stage stage, mf_decision d, int on_loop) {
  mf_opts o;
  mf_opts_init(&o);
  o.stage = stage;
  if (on_loop)
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

static void filter_start(mf_stage stage, mf_decision d) {
  filter_start_on(stage, d, 1);
}

static void filter_stop(void) {
  mf_filter_stop(filt);
  pthread_join(filt_thread, NULL);
  mf_filter_free(filt);
  filt = NULL;
}

/* A client past negotiation. */
static milter_client *client_open(void) {
  milter_client *c = NULL;
  milter_client_opts o;
  milter_client_opts_init(&o);
  assert_int_equal(milter_client_new(&c, &o), 0);
  assert_int_equal(milter_client_open(c, filt_spec), 0);
  milter_client_nego nego;
  assert_int_equal(milter_client_negotiate(c, &nego), 0);
  return c;
}

/* A client past CONNECT from client.example [192.0.2.7]:2525. */
static milter_client *client_connect(void) {
  milter_client *c = client_open();
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

/* HELO name, its reply ignored. */
static void helo(milter_client *c, const char *name) {
  milter_client_result r = {0};
  assert_int_equal(milter_client_helo(c, name, &r), 0);
  milter_client_result_free(&r);
}

/* One message whose end of message is answered reply. */
static void message_replied(milter_client *c, uint8_t reply) {
  milter_client_result r = {0};
  message(c, &r);
  assert_int_equal(r.reply, reply);
  milter_client_result_free(&r);
}

/* One message, accepted with the QUARANTINE record() gives. */
static void message_quarantined(milter_client *c) {
  milter_client_result r = {0};
  message(c, &r);
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 1);
  assert_int_equal(r.actions[0].type, MILTER_ACTION_QUARANTINE);
  assert_string_equal(r.actions[0].value, "held at the connection");
  milter_client_result_free(&r);
}

/* HELO and an accepted message whose decide() (at end of message) saw the
 * connection with that HELO name. */
static void helo_and_message(milter_client *c, const char *name) {
  helo(c, name);
  int calls = last.calls;
  message_replied(c, MILTER_REPLY_ACCEPT);
  assert_int_equal(last.calls, calls + 1);
  assert_conn(name);
}

/* Decided at end of message: every message of the connection sees the
 * connection's data, a later HELO included; an aborted message leaves it
 * as it was. */
static void test_conn_data_across_messages(void **state) {
  (void)state;
  filter_start(MF_STAGE_EOM, MF_ACCEPT);
  milter_client *c = client_connect();
  last.calls = 0;
  helo_and_message(c, "one.example");
  message_replied(c, MILTER_REPLY_ACCEPT);
  assert_int_equal(last.calls, 2);
  assert_conn("one.example");

  /* A message given up before its end, then a new HELO. */
  milter_client_result r = {0};
  assert_int_equal(milter_client_mail(c, "<s@example.org>", 0, NULL, &r), 0);
  milter_client_result_free(&r);
  assert_int_equal(milter_client_abort(c), 0);
  helo_and_message(c, "two.example");
  assert_int_equal(last.calls, 3);
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
  for (int i = 0; i < 2; i++)
    message_quarantined(c);
  assert_int_equal(last.calls, 1);
  client_close(c);
  filter_stop();
}

/* A HELO name that is the hostname is stored once: decide() sees both the
 * same, and a later different name, and the same names again, as sent. */
static void test_helo_is_hostname(void **state) {
  (void)state;
  filter_start(MF_STAGE_EOM, MF_ACCEPT);
  milter_client *c = client_connect();
  last.calls = 0;
  helo_and_message(c, "client.example");
  helo_and_message(c, "other.example");
  helo_and_message(c, "other.example");
  helo_and_message(c, "client.example");
  helo_and_message(c, "client.example.longer.than.before.example");
  assert_int_equal(last.calls, 5);
  client_close(c);
  filter_stop();
}

/* Decided at CONNECT on a worker: a QUARANTINE's reason is kept through
 * the HELOs that follow (the connection's strings change around it) and
 * applies to each message without another call. */
static void test_connect_quarantine_kept_through_helo(void **state) {
  (void)state;
  filter_start_on(MF_STAGE_CONNECT, MF_QUARANTINE, 0);
  last.calls = 0;
  milter_client *c = client_connect();
  assert_int_equal(last.calls, 1);
  assert_int_equal(last.stage, MF_STAGE_CONNECT);
  assert_conn("(null)");
  const char *helos[] = {"one.example", "client.example", "client.example",
                         "a-much-longer-name-than-the-first.example"};
  for (size_t i = 0; i < sizeof helos / sizeof helos[0]; i++) {
    helo(c, helos[i]);
    message_quarantined(c);
  }
  assert_int_equal(last.calls, 1);
  client_close(c);
  filter_stop();
}

/* Decided at CONNECT: DISCARD applies to each message, on the loop and on
 * a worker. */
static void test_connect_discard(void **state) {
  (void)state;
  for (int on_loop = 0; on_loop < 2; on_loop++) {
    filter_start_on(MF_STAGE_CONNECT, MF_DISCARD, on_loop);
    last.calls = 0;
    milter_client *c = client_connect();
    helo(c, "one.example");
    message_replied(c, MILTER_REPLY_DISCARD);
    message_replied(c, MILTER_REPLY_DISCARD);
    assert_int_equal(last.calls, 1);
    client_close(c);
    filter_stop();
  }
}

/* QUIT_NC ends the connection but not the socket: the next CONNECT is a
 * new connection, with its own data and no decision held from the last. */
static void test_quit_nc_new_connection(void **state) {
  (void)state;
  filter_start(MF_STAGE_HELO, MF_DISCARD);
  milter_client *c = client_connect();
  last.calls = 0;
  helo(c, "one.example");
  assert_int_equal(last.calls, 1);
  message_replied(c, MILTER_REPLY_DISCARD);
  assert_int_equal(milter_client_quit_nc(c), 0);
  milter_client_result r = {0};
  assert_int_equal(milter_client_connect(c, "second.example",
                                         MILTER_FAMILY_INET6, 587,
                                         "2001:db8::25", &r),
                   0);
  milter_client_result_free(&r);
  helo(c, "second.example");
  assert_int_equal(last.calls, 2); /* decided again */
  assert_string_equal(last.host, "second.example");
  assert_string_equal(last.ip, "2001:db8::25");
  assert_string_equal(last.helo, "second.example");
  assert_int_equal(last.port, 587);
  message_replied(c, MILTER_REPLY_DISCARD);
  client_close(c);
  filter_stop();
}

/* An MTA that skips CONNECT: the message's decision sees empty connection
 * data and no HELO name. */
static void test_no_connect(void **state) {
  (void)state;
  filter_start(MF_STAGE_EOM, MF_ACCEPT);
  milter_client *c = client_open();
  last.calls = 0;
  message_replied(c, MILTER_REPLY_ACCEPT);
  assert_int_equal(last.calls, 1);
  assert_string_equal(last.host, "");
  assert_string_equal(last.ip, "");
  assert_string_equal(last.helo, "(null)");
  assert_int_equal(last.port, 0);
  client_close(c);
  filter_stop();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conn_data_across_messages),
      cmocka_unit_test(test_helo_decision_held_for_messages),
      cmocka_unit_test(test_helo_is_hostname),
      cmocka_unit_test(test_connect_quarantine_kept_through_helo),
      cmocka_unit_test(test_connect_discard),
      cmocka_unit_test(test_quit_nc_new_connection),
      cmocka_unit_test(test_no_connect),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
