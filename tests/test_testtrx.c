/* test_testtrx.c -- the testtrx harness itself: misuse, stages, pending
 * decisions, validator, limits, the resulting message under Postfix's
 * rules, body replacement sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MF_TESTTRX_CMOCKA
#include <mailfilter/milter_proto.h>
#include <mailfilter/testtrx.h>

static const char *MSG = "From: a@example.org\r\n"
                         "To: b@example.net\r\n"
                         "Subject: one\r\n"
                         "X-A: 1\r\n"
                         "X-A: 2\r\n"
                         "\r\n"
                         "body line\r\n";

static mf_testtrx *make(mf_stage stage) {
  mf_testtrx *t;
  mf_opts o;
  mf_opts_init(&o);
  o.stage = stage;
  assert_int_equal(mf_testtrx_new(&t, &o), 0);
  assert_trx_ok(mf_testtrx_mail(t, "<a@example.org>", NULL));
  assert_trx_ok(mf_testtrx_rcpt(t, "<b@example.net>", "NOTIFY=NEVER"));
  assert_trx_ok(mf_testtrx_message(t, MSG, (size_t)-1));
  return t;
}

static mf_decision accept_fn(mf_trx *trx, void *ud) {
  (void)trx;
  (void)ud;
  return MF_ACCEPT;
}

static void test_misuse_errors_not_aborts(void **state) {
  (void)state;
  mf_testtrx *t;
  assert_int_equal(mf_testtrx_new(&t, NULL), 0);
  /* run without MAIL */
  assert_int_equal(mf_testtrx_run(t, accept_fn, NULL), MF_E_STATE);
  assert_non_null(strstr(mf_testtrx_errmsg(t), "MAIL"));
  assert_int_equal(mf_testtrx_mail(t, "<a@example.org>", NULL), 0);
  assert_int_equal(mf_testtrx_mail(t, "<b@example.org>", NULL), MF_E_STATE);
  assert_int_equal(mf_testtrx_run(t, accept_fn, NULL), MF_E_STATE);
  assert_non_null(strstr(mf_testtrx_errmsg(t), "recipient"));
  assert_int_equal(mf_testtrx_header(t, "Bad Name", "x"), MF_E_INVAL);
  assert_int_equal(mf_testtrx_set_negotiated(t, 0, 0, 1234), MF_E_INVAL);
  assert_int_equal(mf_testtrx_message_file(t, "/nonexistent/x.eml"), MF_E_IO);
  assert_int_equal(mf_testtrx_rcpt(t, "<b@example.net>", NULL), 0);
  assert_int_equal(mf_testtrx_run(t, accept_fn, NULL), 0);
  assert_int_equal(mf_testtrx_run(t, accept_fn, NULL), MF_E_STATE);
  assert_int_equal(mf_testtrx_rcpt(t, "<c@example.net>", NULL), MF_E_STATE);
  mf_testtrx_free(t);
}

static mf_decision edit_headers(mf_trx *trx, void *ud) {
  (void)ud;
  mf_hdrs *h = mf_trx_headers(trx);
  mf_hdr_insert(h, 0, "X-Top", "top");
  mf_hdr_set(h, 0, "x@example.org"); /* now index 1 after the insert?  no: */
  return MF_ACCEPT;
}

/* Insert at 0, change the first field, delete the second X-A, add one:
 * the resulting header as Postfix builds it. */
static mf_decision edit_many(mf_trx *trx, void *ud) {
  (void)ud;
  mf_hdrs *h = mf_trx_headers(trx);
  mf_hdr_set_nth(h, "From", 1, "changed@example.org");
  mf_hdr_delete_nth(h, "X-A", 2);
  mf_hdr_insert(h, 0, "X-Top", "top");
  mf_hdr_add(h, "X-End", "end");
  return MF_ACCEPT;
}

static void test_resulting_message_postfix_rules(void **state) {
  (void)state;
  mf_testtrx *t = make(MF_STAGE_EOM);
  assert_trx_ok(mf_testtrx_run(t, edit_many, NULL));
  assert_trx_decision(t, MF_ACCEPT);
  assert_trx_action_count(t, 4);
  size_t len;
  const char *r = mf_testtrx_result(t, &len);
  assert_string_equal(r, "X-Top: top\r\n"
                         "From: changed@example.org\r\n"
                         "To: b@example.net\r\n"
                         "Subject: one\r\n"
                         "X-A: 1\r\n"
                         "X-End: end\r\n"
                         "\r\n"
                         "body line\r\n");
  assert_int_equal(len, strlen(r));
  mf_testtrx_free(t);
  (void)edit_headers;
}

static mf_decision envelope(mf_trx *trx, void *ud) {
  (void)ud;
  mf_trx_add_rcpt(trx, "<new@example.net>", "NOTIFY=SUCCESS");
  mf_trx_del_rcpt(trx, "<b@example.net>");
  mf_trx_change_from(trx, "<bounce@example.org>", NULL);
  return MF_ACCEPT;
}

static void test_envelope_result(void **state) {
  (void)state;
  mf_testtrx *t = make(MF_STAGE_RCPT);
  assert_trx_ok(mf_testtrx_run(t, envelope, NULL));
  /* decided after the last RCPT, changes held until end of message */
  assert_trx_action_count(t, 3);
  assert_trx_action(t, 0, MILTER_ACTION_DELRCPT, "<b@example.net>", NULL);
  assert_trx_action(t, 1, MILTER_ACTION_ADDRCPT_PAR, "<new@example.net>",
                    "NOTIFY=SUCCESS");
  assert_trx_action(t, 2, MILTER_ACTION_CHGFROM, "<bounce@example.org>",
                    NULL);
  assert_string_equal(mf_testtrx_result_from(t), "<bounce@example.org>");
  assert_int_equal(mf_testtrx_result_rcpt_count(t), 1);
  assert_string_equal(mf_testtrx_result_rcpt(t, 0), "<new@example.net>");
  assert_int_equal(mf_testtrx_body_requested(t), 0);
  mf_testtrx_free(t);
}

static size_t body_size;
static mf_decision replace(mf_trx *trx, void *ud) {
  (void)ud;
  uint8_t *b = malloc(body_size);
  for (size_t i = 0; i < body_size; i++)
    b[i] = (uint8_t)('a' + i % 26);
  mf_trx_replace_body(trx, b, body_size);
  free(b);
  return MF_ACCEPT;
}

static void test_replace_body_sizes(void **state) {
  (void)state;
  size_t sizes[] = {1024, 100 * 1024, 1024 * 1024};
  for (size_t k = 0; k < 3; k++) {
    body_size = sizes[k];
    mf_testtrx *t = make(MF_STAGE_EOM);
    assert_trx_ok(mf_testtrx_set_negotiated(t, MILTER_ACT_ALL,
                                            MILTER_P_HDR_LEADSPC,
                                            MILTER_DATA_64K));
    assert_trx_ok(mf_testtrx_run(t, replace, NULL));
    assert_trx_action_count(t, 1);
    const milter_action *a = mf_testtrx_action(t, 0);
    assert_int_equal(a->type, MILTER_ACTION_REPLBODY);
    assert_int_equal(a->body_len, body_size);
    assert_int_equal(a->chunks,
                     (body_size + MILTER_DATA_64K - 1) / MILTER_DATA_64K);
    size_t bl;
    const uint8_t *b = mf_testtrx_result_body(t, &bl);
    assert_int_equal(bl, body_size);
    assert_int_equal(b[body_size - 1], 'a' + (body_size - 1) % 26);
    mf_testtrx_free(t);
  }
}

static void *complete_later(void *arg) {
  usleep(50 * 1000);
  mf_trx_complete(arg, MF_TEMPFAIL);
  return NULL;
}
static pthread_t th;
static mf_decision pending(mf_trx *trx, void *ud) {
  (void)ud;
  mf_trx_set_reply(trx, "451", "4.7.1", "try later\nreally");
  pthread_create(&th, NULL, complete_later, trx);
  return MF_PENDING;
}
static mf_decision pending_forever(mf_trx *trx, void *ud) {
  (void)trx;
  (void)ud;
  return MF_PENDING;
}

static void test_pending(void **state) {
  (void)state;
  mf_testtrx *t = make(MF_STAGE_EOH);
  assert_trx_ok(mf_testtrx_run(t, pending, NULL));
  pthread_join(th, NULL);
  assert_trx_decision(t, MF_TEMPFAIL);
  assert_string_equal(mf_testtrx_reply(t),
                      "451-4.7.1 try later\r\n451 4.7.1 really");
  mf_testtrx_free(t);
  t = make(MF_STAGE_EOH);
  assert_int_equal(mf_testtrx_set_timeout(t, 100), 0);
  assert_int_equal(mf_testtrx_run(t, pending_forever, NULL), MF_E_STATE);
  assert_non_null(strstr(mf_testtrx_errmsg(t), "mf_trx_complete"));
  mf_testtrx_free(t);
}

static mf_decision failing(mf_trx *trx, void *ud) {
  (void)trx;
  (void)ud;
  return MF_FAIL;
}

static void test_on_error_and_limits(void **state) {
  (void)state;
  mf_testtrx *t = make(MF_STAGE_EOM);
  assert_trx_ok(mf_testtrx_run(t, failing, NULL));
  assert_trx_decision(t, MF_TEMPFAIL);
  assert_int_equal(mf_testtrx_raw_decision(t), MF_FAIL);
  assert_string_equal(mf_testtrx_reply(t),
                      "451 4.3.0 Temporary failure in the mail filter");
  mf_testtrx_free(t);

  mf_opts o;
  mf_opts_init(&o);
  o.max_body = 4;
  assert_int_equal(mf_testtrx_new(&t, &o), 0);
  assert_trx_ok(mf_testtrx_mail(t, "<a@example.org>", NULL));
  assert_trx_ok(mf_testtrx_rcpt(t, "<b@example.net>", NULL));
  assert_trx_ok(mf_testtrx_message(t, MSG, (size_t)-1));
  assert_trx_ok(mf_testtrx_run(t, accept_fn, NULL));
  assert_trx_decision(t, MF_REJECT);
  assert_int_equal(mf_testtrx_calls(t), 0);
  assert_string_equal(mf_testtrx_reply(t),
                      "552 5.3.4 Message size exceeds fixed limit");
  mf_testtrx_free(t);
}

static mf_decision quarantine_at_connect(mf_trx *trx, void *ud) {
  (void)ud;
  mf_trx_quarantine(trx, "bad neighbourhood");
  return MF_QUARANTINE;
}

static void test_connect_stage(void **state) {
  (void)state;
  mf_testtrx *t = make(MF_STAGE_CONNECT);
  assert_trx_ok(mf_testtrx_run(t, quarantine_at_connect, NULL));
  assert_trx_decision(t, MF_QUARANTINE);
  assert_int_equal(mf_testtrx_calls(t), 1);
  assert_trx_action_count(t, 1);
  assert_trx_action(t, 0, MILTER_ACTION_QUARANTINE, NULL, "bad neighbourhood");
  mf_testtrx_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_misuse_errors_not_aborts),
      cmocka_unit_test(test_resulting_message_postfix_rules),
      cmocka_unit_test(test_envelope_result),
      cmocka_unit_test(test_replace_body_sizes),
      cmocka_unit_test(test_pending),
      cmocka_unit_test(test_on_error_and_limits),
      cmocka_unit_test(test_connect_stage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
