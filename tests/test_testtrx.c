/* test_testtrx.c -- the testtrx harness itself: misuse, stages, pending
 * decisions, validator, limits, the resulting message under Postfix's and
 * Sendmail's rules (exact bytes, the engine told or not told the MTA),
 * body replacement sizes. */
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


/* ---- the MTA models ------------------------------------------------------ */

static const char *FOO = "From: a@example.org\r\n"
                         "Subject: s\r\n"
                         "X-Foo: one\r\n"
                         "X-Bar: b\r\n"
                         "Date: Tue, 1 Dec 2026 21:00:00 +0000\r\n"
                         "Message-ID: <1@example.org>\r\n"
                         "\r\n"
                         "body\r\n";

typedef void (*edit_fn)(mf_hdrs *h);
static char *filter_list; /* the filter's list after its edit, CRLF lines */
static mf_mta engine_mta; /* what the engine knew at the decision */

static mf_decision run_edit(mf_trx *trx, void *ud) {
  mf_hdrs *h = mf_trx_headers(trx);
  ((edit_fn)(uintptr_t)ud)(h);
  char *out;
  size_t n;
  assert_int_equal(mf_hdr_write(h, "\r\n", &out, &n), 0);
  free(filter_list);
  filter_list = out;
  engine_mta = mf_trx_mta(trx);
  return MF_ACCEPT;
}

/* Run msg through the engine told `told` (and macro v if not NULL), the
 * actions applied by `sim`; the caller frees. */
static mf_testtrx *run_mta(const char *msg, mf_mta told, const char *v,
                           mf_mta sim, edit_fn fn) {
  mf_testtrx *t;
  assert_int_equal(mf_testtrx_new(&t, NULL), 0);
  assert_trx_ok(mf_testtrx_set_mta(t, told));
  assert_trx_ok(mf_testtrx_set_simulated_mta(t, sim));
  if (v != NULL)
    assert_trx_ok(mf_testtrx_macro(t, "v", v));
  assert_trx_ok(mf_testtrx_mail(t, "<a@example.org>", NULL));
  assert_trx_ok(mf_testtrx_rcpt(t, "<b@example.net>", NULL));
  assert_trx_ok(mf_testtrx_message(t, msg, (size_t)-1));
  assert_trx_ok(mf_testtrx_run(t, run_edit, (void *)(uintptr_t)fn));
  assert_trx_decision(t, MF_ACCEPT);
  return t;
}

/* The result's fields (up to the empty line). */
static char *result_fields(const mf_testtrx *t) {
  size_t len;
  const char *r = mf_testtrx_result(t, &len);
  const char *end = strncmp(r, "\r\n", 2) == 0 ? r - 2 : strstr(r, "\r\n\r\n");
  assert_non_null(end);
  size_t n = (size_t)(end + 2 - r);
  char *o = malloc(n + 1);
  assert_non_null(o);
  memcpy(o, r, n);
  o[n] = '\0';
  return o;
}

/* The delivery equals the filter's list, every field below the MTA's
 * Received:, no CHGHEADER astray. */
static void assert_delivers_list(const mf_testtrx *t) {
  char *got = result_fields(t);
  assert_string_equal(got, filter_list); /* each line with its CRLF */
  assert_int_equal(mf_testtrx_result_above_received(t), 0);
  assert_int_equal(mf_testtrx_result_unmatched(t), 0);
  free(got);
}

static void insert_at_2(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 2, "X-New", "v"), 0);
}
static void add_second_foo(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add(h, "X-Foo", "two"), 0);
}
static void insert_top(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 0, "X-Top", "t"), 0);
}
static void add_templates(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add(h, "Date", "x"), 0);
  assert_int_equal(mf_hdr_add_raw(h, "Message-Id", "", 0), 0);
}
static void add_empty(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add_raw(h, "X-New", "", 0), 0);
}
static void add_no_space(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add_raw(h, "X-A", "v", 1), 0);
  assert_int_equal(mf_hdr_set_nth(h, "X-Bar", 1, "c"), 0);
}
static void mixed_edits(mf_hdrs *h) {
  insert_at_2(h);
  add_second_foo(h);
  assert_int_equal(mf_hdr_delete_nth(h, "X-Bar", 1), 0);
  assert_int_equal(mf_hdr_set_nth(h, "Date", 1, "Wed, 2 Dec 2026"), 0);
  assert_int_equal(mf_hdr_insert(h, 0, "X-Top", "t"), 0);
}

/* Sendmail with an m4-built .cf: the cases, with the engine told
 * Sendmail (right) and told Postfix (what the issue saw). */
static void test_sendmail_model(void **state) {
  (void)state;
  /* insert at 2: where the filter put it */
  mf_testtrx *t = run_mta(FOO, MF_MTA_SENDMAIL, NULL, MF_MTA_AUTO, insert_at_2);
  assert_int_equal(mf_testtrx_result_mta(t), MF_MTA_SENDMAIL);
  assert_delivers_list(t);
  char *got = result_fields(t);
  assert_string_equal(got, "From: a@example.org\r\n"
                           "Subject: s\r\n"
                           "X-New: v\r\n"
                           "X-Foo: one\r\n"
                           "X-Bar: b\r\n"
                           "Date: Tue, 1 Dec 2026 21:00:00 +0000\r\n"
                           "Message-ID: <1@example.org>\r\n");
  free(got);
  mf_testtrx_free(t);
  /* Postfix's INSHEADER 3 on Sendmail: after template 3, above From */
  t = run_mta(FOO, MF_MTA_POSTFIX, NULL, MF_MTA_SENDMAIL, insert_at_2);
  assert_trx_action_count(t, 1);
  assert_trx_action(t, 0, MILTER_ACTION_INSHEADER, "X-New", " v");
  assert_int_equal(mf_testtrx_action(t, 0)->index, 3);
  assert_string_equal(mf_testtrx_result(t, NULL),
                      "X-New: v\r\nFrom: a@example.org\r\nSubject: s\r\n"
                      "X-Foo: one\r\nX-Bar: b\r\n"
                      "Date: Tue, 1 Dec 2026 21:00:00 +0000\r\n"
                      "Message-ID: <1@example.org>\r\n\r\nbody\r\n");
  mf_testtrx_free(t);

  /* a second X-Foo: below the first; Postfix's ADDHEADER goes above it */
  t = run_mta(FOO, MF_MTA_SENDMAIL, NULL, MF_MTA_AUTO, add_second_foo);
  assert_delivers_list(t);
  assert_string_equal(mf_testtrx_result_header(t, "X-Foo", 2), "two");
  mf_testtrx_free(t);
  t = run_mta(FOO, MF_MTA_POSTFIX, NULL, MF_MTA_SENDMAIL, add_second_foo);
  assert_trx_action(t, 0, MILTER_ACTION_ADDHEADER, "X-Foo", " two");
  assert_string_equal(mf_testtrx_result_header(t, "X-Foo", 1), "two");
  assert_string_equal(mf_testtrx_result_header(t, "X-Foo", 2), "one");
  mf_testtrx_free(t);

  /* Postfix's ADDHEADER of a template's name fills the template, at the
   * top; an empty one is not delivered at all */
  t = run_mta(FOO, MF_MTA_POSTFIX, NULL, MF_MTA_SENDMAIL, add_templates);
  assert_trx_action_count(t, 2);
  assert_trx_action(t, 0, MILTER_ACTION_ADDHEADER, "Date", " x");
  assert_trx_action(t, 1, MILTER_ACTION_ADDHEADER, "Message-Id", "");
  assert_string_equal(mf_testtrx_result(t, NULL),
                      "Date: x\r\nFrom: a@example.org\r\nSubject: s\r\n"
                      "X-Foo: one\r\nX-Bar: b\r\n"
                      "Date: Tue, 1 Dec 2026 21:00:00 +0000\r\n"
                      "Message-ID: <1@example.org>\r\n\r\nbody\r\n");
  assert_int_equal(mf_testtrx_result_header_count(t), 7);
  mf_testtrx_free(t);

  /* a .cf whose Received: is its third H line: INSHEADER 1 (the top of
   * the filter's list) lands above it */
  assert_int_equal(mf_testtrx_new(&t, NULL), 0);
  assert_int_equal(mf_testtrx_set_sendmail_templates(t, "Bad:Name"),
                   MF_E_INVAL);
  assert_int_equal(mf_testtrx_set_simulated_mta(t, (mf_mta)7), MF_E_INVAL);
  assert_trx_ok(mf_testtrx_set_mta(t, MF_MTA_SENDMAIL));
  assert_trx_ok(mf_testtrx_set_sendmail_templates(t, "Return-Path, X-Pre,"
                                                     "Received"));
  assert_trx_ok(mf_testtrx_mail(t, "<a@example.org>", NULL));
  assert_trx_ok(mf_testtrx_rcpt(t, "<b@example.net>", NULL));
  assert_trx_ok(mf_testtrx_message(t, FOO, (size_t)-1));
  assert_trx_ok(mf_testtrx_run(t, run_edit, (void *)(uintptr_t)insert_top));
  assert_trx_action(t, 0, MILTER_ACTION_INSHEADER, "X-Top", " t");
  assert_int_equal(mf_testtrx_action(t, 0)->index, 1);
  assert_int_equal(mf_testtrx_result_above_received(t), 1);
  assert_string_equal(mf_testtrx_result_header(t, "X-Top", 1), "t");
  static const char top[] = "X-Top: t\r\nFrom:";
  assert_memory_equal(mf_testtrx_result(t, NULL), top, sizeof top - 1);
  mf_testtrx_free(t);
}

/* Exact bytes on both MTAs: name ":" value as sent with HDR_LEADSPC, one
 * space more without it; the message's own fields as received. */
static void test_exact_values_both_mtas(void **state) {
  (void)state;
  static const char *raw = "X-Raw:v\r\nX-Empty:\r\nX-Bar:  two spaces\r\n"
                           "\r\nbody\r\n";
  for (int sm = 0; sm < 2; sm++) {
    mf_mta mta = sm ? MF_MTA_SENDMAIL : MF_MTA_POSTFIX;
    mf_testtrx *t = run_mta(raw, mta, NULL, MF_MTA_AUTO, add_empty);
    assert_delivers_list(t);
    assert_string_equal(mf_testtrx_result(t, NULL),
                        "X-Raw:v\r\nX-Empty:\r\nX-Bar:  two spaces\r\n"
                        "X-New:\r\n\r\nbody\r\n");
    assert_string_equal(mf_testtrx_result_header(t, "X-New", 1), "");
    assert_string_equal(mf_testtrx_result_header(t, "X-Raw", 1), "v");
    assert_string_equal(mf_testtrx_result_header(t, "X-Bar", 1), " two spaces");
    assert_int_equal(mf_testtrx_result_header_count(t), 4);
    mf_testtrx_free(t);

    t = run_mta(raw, mta, NULL, MF_MTA_AUTO, add_no_space);
    assert_delivers_list(t);
    assert_string_equal(mf_testtrx_result(t, NULL),
                        "X-Raw:v\r\nX-Empty:\r\nX-Bar: c\r\nX-A:v\r\n"
                        "\r\nbody\r\n");
    mf_testtrx_free(t);

    /* without HDR_LEADSPC the MTA adds the space */
    assert_int_equal(mf_testtrx_new(&t, NULL), 0);
    assert_trx_ok(mf_testtrx_set_mta(t, mta));
    assert_trx_ok(mf_testtrx_set_negotiated(t, MILTER_ACT_ALL, 0,
                                            MILTER_DATA_64K));
    assert_trx_ok(mf_testtrx_mail(t, "<a@example.org>", NULL));
    assert_trx_ok(mf_testtrx_rcpt(t, "<b@example.net>", NULL));
    assert_trx_ok(mf_testtrx_message(t, raw, (size_t)-1));
    assert_trx_ok(mf_testtrx_run(t, run_edit, (void *)(uintptr_t)add_empty));
    assert_string_equal(mf_testtrx_result(t, NULL),
                        "X-Raw:v\r\nX-Empty:\r\nX-Bar:  two spaces\r\n"
                        "X-New: \r\n\r\nbody\r\n");
    mf_testtrx_free(t);
  }
}

/* The engine not told the MTA (no "v"): its actions, applied by either
 * model, deliver the filter's list; with "v" the engine detects the MTA and
 * that one is simulated. */
static void test_unknown_mta_both_models(void **state) {
  (void)state;
  static const edit_fn edits[] = {insert_at_2, add_second_foo, add_empty,
                                  add_no_space, mixed_edits};
  static const char *tmpls[] = {NULL, "Return-Path Received",
                                "Return-Path Received A B C D E F G H I J K"};
  for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
    mf_testtrx *pf = run_mta(FOO, MF_MTA_AUTO, NULL, MF_MTA_POSTFIX, edits[e]);
    assert_int_equal(engine_mta, MF_MTA_AUTO);
    assert_int_equal(mf_testtrx_result_mta(pf), MF_MTA_POSTFIX);
    assert_delivers_list(pf);
    for (size_t k = 0; k < sizeof tmpls / sizeof tmpls[0]; k++) {
      mf_testtrx *t;
      assert_int_equal(mf_testtrx_new(&t, NULL), 0);
      assert_trx_ok(mf_testtrx_set_mta(t, MF_MTA_AUTO));
      assert_trx_ok(mf_testtrx_set_simulated_mta(t, MF_MTA_SENDMAIL));
      assert_trx_ok(mf_testtrx_set_sendmail_templates(t, tmpls[k]));
      assert_trx_ok(mf_testtrx_mail(t, "<a@example.org>", NULL));
      assert_trx_ok(mf_testtrx_rcpt(t, "<b@example.net>", NULL));
      assert_trx_ok(mf_testtrx_message(t, FOO, (size_t)-1));
      assert_trx_ok(mf_testtrx_run(t, run_edit, (void *)(uintptr_t)edits[e]));
      assert_int_equal(mf_testtrx_result_mta(t), MF_MTA_SENDMAIL);
      assert_delivers_list(t);
      /* the same actions as for the Postfix run */
      assert_int_equal(mf_testtrx_action_count(t), mf_testtrx_action_count(pf));
      for (size_t i = 0; i < mf_testtrx_action_count(t); i++) {
        const milter_action *a = mf_testtrx_action(t, i);
        const milter_action *b = mf_testtrx_action(pf, i);
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->index, b->index);
        assert_string_equal(a->name, b->name);
        assert_string_equal(a->value, b->value);
      }
      mf_testtrx_free(t);
    }
    mf_testtrx_free(pf);
    /* detected from v: that MTA's list, that MTA simulated */
    static const struct {
      const char *v;
      mf_mta mta;
    } det[] = {{"Postfix 3.7.11", MF_MTA_POSTFIX}, {"8.17.1.9", MF_MTA_SENDMAIL}};
    for (size_t d = 0; d < 2; d++) {
      mf_testtrx *t = run_mta(FOO, MF_MTA_AUTO, det[d].v, MF_MTA_AUTO, edits[e]);
      assert_int_equal(engine_mta, det[d].mta);
      assert_int_equal(mf_testtrx_result_mta(t), det[d].mta);
      assert_delivers_list(t);
      mf_testtrx_free(t);
    }
  }
  free(filter_list);
  filter_list = NULL;
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
      cmocka_unit_test(test_sendmail_model),
      cmocka_unit_test(test_exact_values_both_mtas),
      cmocka_unit_test(test_unknown_mta_both_models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
