/* test_example_external.c -- examples/external.c under testtrx: the Subject
 * tag for unauthenticated senders, the spam trap in every spelling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#define MF_TESTTRX_CMOCKA
#include <mailfilter/testtrx.h>

mf_decision external_decide(mf_trx *trx, void *ud);

#define TAG "[⚠️EXTERNAL] "

/* external.c compares recipients' keys with the trap's, written out:
 * it must be the key of the trap as parsed. */
static void test_trap_key(void **state) {
  (void)state;
  mf_addr *trap = NULL;
  assert_int_equal(mf_addr_parse("spam-trap@スパム.example.com", 0, &trap,
                                 NULL),
                   0);
  assert_string_equal(mf_addr_key(trap), "spam-trap@xn--zck5b2b.example.com");
  mf_addr_free(trap);
}

/* A message at end of headers, as Postfix sends it. */
static mf_testtrx *trx(const char *auth, const char *rcpt,
                       const char *subject) {
  mf_testtrx *t;
  mf_opts o;
  mf_opts_init(&o);
  o.stage = MF_STAGE_EOH;
  assert_int_equal(mf_testtrx_new(&t, &o), 0);
  assert_trx_ok(mf_testtrx_mail(t, "<sender@example.org>", NULL));
  assert_trx_ok(mf_testtrx_rcpt(t, "<user@example.net>", NULL));
  if (rcpt)
    assert_trx_ok(mf_testtrx_rcpt(t, rcpt, NULL));
  assert_trx_ok(mf_testtrx_macro(t, "{auth_authen}", auth ? auth : ""));
  assert_trx_ok(mf_testtrx_header(t, "From", "<sender@example.org>"));
  if (subject)
    assert_trx_ok(mf_testtrx_header(t, "Subject", subject));
  assert_trx_ok(mf_testtrx_header(t, "Message-ID", "<1@example.org>"));
  assert_trx_ok(mf_testtrx_body(t, "hello\r\n", 7));
  assert_trx_ok(mf_testtrx_run(t, external_decide, NULL));
  return t;
}

static void test_unauthenticated_subject_tagged(void **state) {
  (void)state;
  mf_testtrx *t = trx(NULL, NULL, "Lunch?");
  assert_trx_decision(t, MF_ACCEPT);
  /* exactly one action: change the first Subject */
  assert_trx_action_count(t, 1);
  assert_trx_action(t, 0, MILTER_ACTION_CHGHEADER, "Subject", NULL);
  const milter_action *a = mf_testtrx_action(t, 0);
  assert_int_equal(a->index, 1);
  /* on the wire: RFC 2047, ASCII only, LEADSPC convention */
  assert_non_null(strstr(a->value, "=?UTF-8?") ? a->value
                                                : strstr(a->value, "=?utf-8?"));
  for (const char *p = a->value; *p; p++)
    assert_true((unsigned char)*p < 0x80);
  assert_trx_header(t, "Subject", 1, TAG "Lunch?");
  /* the body was never requested: decision at end of headers */
  assert_int_equal(mf_testtrx_body_requested(t), 0);
  mf_testtrx_free(t);
}

static void test_authenticated_untouched(void **state) {
  (void)state;
  mf_testtrx *t = trx("alice", NULL, "Lunch?");
  assert_trx_decision(t, MF_ACCEPT);
  assert_trx_action_count(t, 0);
  assert_trx_header(t, "Subject", 1, "Lunch?");
  mf_testtrx_free(t);
}

static void test_already_tagged_not_twice(void **state) {
  (void)state;
  mf_testtrx *t = trx(NULL, NULL, "=?UTF-8?Q?=5B=E2=9A=A0=EF=B8=8FEXTERNAL=5D_Re=3A_x?=");
  assert_trx_decision(t, MF_ACCEPT);
  assert_trx_action_count(t, 0);
  mf_testtrx_free(t);
}

static void test_no_subject_gets_one(void **state) {
  (void)state;
  mf_testtrx *t = trx(NULL, NULL, NULL);
  assert_trx_action_count(t, 1);
  assert_trx_action(t, 0, MILTER_ACTION_ADDHEADER, "Subject", NULL);
  assert_trx_header(t, "Subject", 1, "[⚠️EXTERNAL]");
  mf_testtrx_free(t);
}

static void test_non_ascii_subject(void **state) {
  (void)state;
  mf_testtrx *t = trx(NULL, NULL, "=?ISO-8859-1?Q?R=E9union?=");
  assert_trx_action_count(t, 1);
  assert_trx_header(t, "Subject", 1, TAG "Réunion");
  mf_testtrx_free(t);
}

static void test_spam_trap_every_spelling(void **state) {
  (void)state;
  const char *spellings[] = {
      "<spam-trap@スパム.example.com>",
      "<spam-trap@xn--zck5b2b.example.com>",
      "<spam-trap@XN--ZCK5B2B.EXAMPLE.COM>",
      "<spam-trap@スパム.Example.COM>",
      /* NFD: ス パ(=ハ+U+309A) ム */
      "<spam-trap@\xe3\x82\xb9\xe3\x83\x8f\xe3\x82\x9a\xe3\x83\xa0.example.com>",
  };
  for (size_t i = 0; i < sizeof spellings / sizeof *spellings; i++) {
    /* authenticated, so the only effect is the quarantine */
    mf_testtrx *t = trx("alice", spellings[i], "hi");
    if (mf_testtrx_decision(t) != MF_QUARANTINE)
      fail_msg("spelling %zu (%s) not caught", i, spellings[i]);
    assert_trx_action_count(t, 1);
    assert_trx_action(t, 0, MILTER_ACTION_QUARANTINE, NULL, "spam trap");
    assert_string_equal(mf_testtrx_quarantine_reason(t), "spam trap");
    mf_testtrx_free(t);
  }
}

static void test_spam_trap_near_misses(void **state) {
  (void)state;
  const char *misses[] = {
      "<Spam-Trap@スパム.example.com>", /* local part is case-sensitive */
      "<spam-trap@スパム.example.org>",
      "<spam-trap@sub.スパム.example.com>",
      "<spam-trap2@xn--zck5b2b.example.com>",
  };
  for (size_t i = 0; i < sizeof misses / sizeof *misses; i++) {
    mf_testtrx *t = trx("alice", misses[i], "hi");
    if (mf_testtrx_decision(t) != MF_ACCEPT)
      fail_msg("near miss %zu (%s) caught", i, misses[i]);
    assert_trx_action_count(t, 0);
    mf_testtrx_free(t);
  }
}

static void test_trap_and_unauthenticated(void **state) {
  (void)state;
  mf_testtrx *t = trx(NULL, "<spam-trap@xn--zck5b2b.example.com>", "x");
  assert_trx_decision(t, MF_QUARANTINE);
  assert_trx_action_count(t, 2);
  assert_trx_action(t, 0, MILTER_ACTION_CHGHEADER, "Subject", NULL);
  assert_trx_action(t, 1, MILTER_ACTION_QUARANTINE, NULL, "spam trap");
  assert_trx_header(t, "Subject", 1, TAG "x");
  mf_testtrx_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trap_key),
      cmocka_unit_test(test_unauthenticated_subject_tagged),
      cmocka_unit_test(test_authenticated_untouched),
      cmocka_unit_test(test_already_tagged_not_twice),
      cmocka_unit_test(test_no_subject_gets_one),
      cmocka_unit_test(test_non_ascii_subject),
      cmocka_unit_test(test_spam_trap_every_spelling),
      cmocka_unit_test(test_spam_trap_near_misses),
      cmocka_unit_test(test_trap_and_unauthenticated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
