/* test_engine_sendmail_defaults.c -- the header fields Sendmail adds
 * itself when the message lacks them (the Date:, From:, Message-Id: and,
 * on a resent message, Resent-* templates of its sendmail.cf), never
 * sending them to the milter: the first such field the filter adds is an
 * ADDHEADER on Sendmail and on an MTA not known (it fills the template:
 * one field), not an INSHEADER (two).  Postfix, which sends the fields it
 * adds, is unchanged.  mailfilter.h, HEADER EDITS ON EACH MTA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/mf_engine.h>
#include <mailfilter/milter_proto.h>

#define APPEND 1000000u
#define DATE "Mon, 1 Jan 2024 00:00:00 +0000"

/* A trx told `mta`, HDR_LEADSPC negotiated, whose header is `head`: lines
 * "Name: value", each ended by '\n'. */
static mf_trx *message(mf_mta mta, const mf_opts *o, const char *head) {
  mf_trx *t = NULL;
  assert_int_equal(mf_engine_trx_new(&t, o), 0);
  mf_engine_set_negotiated(t, MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC,
                           MILTER_DATA_64K);
  mf_engine_set_mta(t, mta);
  const char *from[] = {"<s@example.org>"};
  assert_int_equal(mf_engine_mail(t, 1, from), 0);
  for (const char *p = head; *p;) {
    const char *colon = strchr(p, ':'), *nl = strchr(p, '\n');
    assert_non_null(colon);
    assert_non_null(nl);
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(colon - p), p);
    assert_int_equal(mf_engine_header(t, name, colon + 1,
                                      (size_t)(nl - colon - 1), 1),
                     0);
    p = nl + 1;
  }
  assert_int_equal(mf_engine_eoh(t), 0);
  return t;
}

typedef void (*edit_fn)(mf_hdrs *h);
static mf_decision edit(mf_trx *t, void *ud) {
  ((edit_fn)(uintptr_t)ud)(mf_trx_headers(t));
  return MF_ACCEPT;
}

/* One expected action: type, index (ADDHEADER: not checked), name, value
 * as sent (HDR_LEADSPC: byte for byte). */
typedef struct want {
  char type;
  uint32_t index;
  const char *name, *value;
} want;

/* head through the engine told mta, edited by fn: the actions must be
 * w[0..nw). */
static void check(mf_mta mta, const mf_opts *o, const char *head, edit_fn fn,
                  const want *w, size_t nw) {
  mf_trx *t = message(mta, o, head);
  mf_decision d =
      mf_engine_decide(t, MF_STAGE_EOM, edit, (void *)(uintptr_t)fn);
  milter_action *a = NULL;
  size_t n = 0;
  assert_int_equal(mf_engine_actions(t, d, 0, &a, &n), 0);
  for (size_t i = 0; i < n && getenv("MF_TEST_VERBOSE"); i++)
    fprintf(stderr, "mta %d: %c %u %s:%s\n", (int)mta, a[i].type, a[i].index,
            a[i].name, a[i].value);
  assert_int_equal(n, nw);
  for (size_t i = 0; i < nw; i++) {
    assert_int_equal(a[i].type, w[i].type);
    if (w[i].type != MILTER_ACTION_ADDHEADER)
      assert_int_equal(a[i].index, w[i].index);
    assert_string_equal(a[i].name, w[i].name);
    assert_string_equal(a[i].value, w[i].value);
  }
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);
}

/* Sendmail and an MTA not known (no macro v) get the same actions. */
static void check_sm(const mf_opts *o, const char *head, edit_fn fn,
                     const want *w, size_t nw) {
  check(MF_MTA_SENDMAIL, o, head, fn, w, nw);
  check(MF_MTA_AUTO, o, head, fn, w, nw);
}

static const char NO_DATE[] = "From: a@example.org\nSubject: s\nX-A: 1\n";
static const char WITH_DATE[] =
    "From: a@example.org\nSubject: s\nDate: Tue, 1 Dec 2026 21:00:00 +0000\n"
    "Message-ID: <1@example.org>\nX-A: 1\n";

static void add_date(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add(h, "Date", DATE), 0);
}

/* the case found on the real Sendmail: a Date added to a message without
 * one is an ADDHEADER: one Date, in the template's place */
static void test_date_added_where_none(void **state) {
  (void)state;
  static const want sm[] = {{'h', 0, "Date", " " DATE}};
  check_sm(NULL, NO_DATE, add_date, sm, 1);
  static const want pf[] = {{'h', 0, "Date", " " DATE}};
  check(MF_MTA_POSTFIX, NULL, NO_DATE, add_date, pf, 1);
}

/* the message has one: a second Date is an append as before */
static void test_date_added_to_one(void **state) {
  (void)state;
  static const want sm[] = {{'i', APPEND, "Date", " " DATE}};
  check_sm(NULL, WITH_DATE, add_date, sm, 1);
  static const want pf[] = {{'h', 0, "Date", " " DATE}};
  check(MF_MTA_POSTFIX, NULL, WITH_DATE, add_date, pf, 1);
}

static void insert_date_mid(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 1, "Date", DATE), 0);
}

/* in the middle: it needs no place (Sendmail puts it where its template
 * is), so nothing is re-created around it; Postfix: where the filter put
 * it */
static void test_date_inserted_mid(void **state) {
  (void)state;
  static const want sm[] = {{'h', 0, "Date", " " DATE}};
  check_sm(NULL, NO_DATE, insert_date_mid, sm, 1);
  static const want pf[] = {{'i', 2, "Date", " " DATE}};
  check(MF_MTA_POSTFIX, NULL, NO_DATE, insert_date_mid, pf, 1);
}

static void add_two_dates(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 0, "Date", "first"), 0);
  assert_int_equal(mf_hdr_add(h, "Date", "second"), 0);
}

/* only the first is an ADDHEADER; the second goes where the filter put it */
static void test_second_keeps_rules(void **state) {
  (void)state;
  static const want sm[] = {{'h', 0, "Date", " first"},
                            {'i', APPEND, "Date", " second"}};
  check_sm(NULL, NO_DATE, add_two_dates, sm, 2);
}

static void add_each_default(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add(h, "MESSAGE-ID", "<2@example.org>"), 0);
  assert_int_equal(mf_hdr_add(h, "From", "b@example.org"), 0);
  assert_int_equal(mf_hdr_add(h, "Resent-Date", DATE), 0);
  assert_int_equal(mf_hdr_add(h, "Resent-From", "r@example.org"), 0);
  assert_int_equal(mf_hdr_add(h, "Resent-Message-Id", "<3@example.org>"),
                   0);
  assert_int_equal(mf_hdr_add(h, "X-Date", "x"), 0);
}

/* each name, ASCII case-insensitive; one the message has (From) and one
 * Sendmail does not fill (X-Date) are appends */
static void test_each_name(void **state) {
  (void)state;
  static const want sm[] = {{'h', 0, "MESSAGE-ID", " <2@example.org>"},
                            {'i', APPEND, "From", " b@example.org"},
                            {'h', 0, "Resent-Date", " " DATE},
                            {'h', 0, "Resent-From", " r@example.org"},
                            {'h', 0, "Resent-Message-Id", " <3@example.org>"},
                            {'i', APPEND, "X-Date", " x"}};
  check_sm(NULL, NO_DATE, add_each_default, sm, 6);
}

static void add_from(mf_hdrs *h) {
  assert_int_equal(mf_hdr_delete(h, 0), 0); /* From */
  assert_int_equal(mf_hdr_add(h, "From", "b@example.org"), 0);
}

/* a From the message had, deleted and added again: Sendmail's template was
 * not used, the INSHEADER is right */
static void test_replaced_original(void **state) {
  (void)state;
  static const want sm[] = {{'i', APPEND, "From", " b@example.org"},
                            {'m', 1, "From", ""}};
  check_sm(NULL, NO_DATE, add_from, sm, 2);
}

static void add_empty_date(mf_hdrs *h) {
  assert_int_equal(mf_hdr_add_raw(h, "Date", "", 0), 0);
}

/* an empty value: the template filled with it is delivered "Date:" */
static void test_empty_value(void **state) {
  (void)state;
  static const want sm[] = {{'h', 0, "Date", ""}};
  check_sm(NULL, NO_DATE, add_empty_date, sm, 1);
}

static void date_and_subject(mf_hdrs *h) {
  assert_int_equal(mf_hdr_insert(h, 0, "Date", DATE), 0);
  assert_int_equal(mf_hdr_set_nth(h, "Subject", 1, "t"), 0);
}

/* MF_OPT_RECREATE_HEADERS: every original deleted, the list appended,
 * the Date as an ADDHEADER among the appends */
static void test_recreate(void **state) {
  (void)state;
  mf_opts o;
  mf_opts_init(&o);
  o.flags |= MF_OPT_RECREATE_HEADERS;
  static const want sm[] = {{'h', 0, "Date", " " DATE},
                            {'i', APPEND, "From", " a@example.org"},
                            {'i', APPEND, "Subject", " t"},
                            {'i', APPEND, "X-A", " 1"},
                            {'m', 1, "X-A", ""},
                            {'m', 1, "Subject", ""},
                            {'m', 1, "From", ""}};
  check_sm(&o, NO_DATE, date_and_subject, sm, 7);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_date_added_where_none),
      cmocka_unit_test(test_date_added_to_one),
      cmocka_unit_test(test_date_inserted_mid),
      cmocka_unit_test(test_second_keeps_rules),
      cmocka_unit_test(test_each_name),
      cmocka_unit_test(test_replaced_original),
      cmocka_unit_test(test_empty_value),
      cmocka_unit_test(test_recreate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
