/* test_example_rcptcount.c -- examples/rcptcount.c under testtrx. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#define MF_TESTTRX_CMOCKA
#include <mailfilter/testtrx.h>

mf_decision rcptcount_decide(mf_trx *trx, void *ud);

static mf_decision refuse_bad(mf_trx *trx, const mf_addr *rcpt,
                              const mf_addr_params *p, void *ud) {
  (void)p;
  (void)ud;
  if (rcpt && strcmp(mf_addr_local(rcpt), "bad") == 0) {
    mf_trx_set_reply(trx, "550", "5.1.1", "unknown user");
    return MF_REJECT;
  }
  return MF_ACCEPT;
}

static void run_with(size_t nrcpt, int with_bad, const char *want) {
  mf_testtrx *t;
  mf_opts o;
  mf_opts_init(&o);
  o.stage = MF_STAGE_EOM;
  if (with_bad)
    o.validate_rcpt = refuse_bad;
  assert_int_equal(mf_testtrx_new(&t, &o), 0);
  assert_trx_ok(mf_testtrx_mail(t, "<s@example.org>", "SIZE=100"));
  for (size_t i = 0; i < nrcpt; i++) {
    char a[64];
    snprintf(a, sizeof a, "<user%zu@example.net>", i);
    assert_trx_ok(mf_testtrx_rcpt(t, a, NULL));
  }
  if (with_bad)
    assert_trx_ok(mf_testtrx_rcpt(t, "<bad@example.net>", NULL));
  assert_trx_ok(mf_testtrx_message(
      t, "From: s@example.org\r\nSubject: count\r\n\r\nbody\r\n", (size_t)-1));
  assert_trx_ok(mf_testtrx_run(t, rcptcount_decide, NULL));
  assert_trx_decision(t, MF_ACCEPT);
  assert_int_equal(mf_testtrx_body_requested(t), 1);
  assert_trx_action_count(t, 1);
  char v[16];
  snprintf(v, sizeof v, " %s", want); /* LEADSPC: the value's own space */
  assert_trx_action(t, 0, MILTER_ACTION_ADDHEADER, "X-Rcpt-Count", v);
  assert_trx_header(t, "X-Rcpt-Count", 1, want);
  /* appended after the original fields */
  assert_int_equal(mf_testtrx_result_header_count(t), 3);
  if (with_bad) {
    assert_int_equal(mf_testtrx_rcpt_result(t, nrcpt), MF_REJECT);
    assert_string_equal(mf_testtrx_rcpt_reply(t, nrcpt),
                        "550 5.1.1 unknown user");
  }
  mf_testtrx_free(t);
}

static void test_one(void **state) {
  (void)state;
  run_with(1, 0, "1");
}
static void test_two(void **state) {
  (void)state;
  run_with(2, 0, "2");
}
static void test_five(void **state) {
  (void)state;
  run_with(5, 0, "5");
}
static void test_rejected_recipient_not_counted(void **state) {
  (void)state;
  run_with(2, 1, "2");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one),
      cmocka_unit_test(test_two),
      cmocka_unit_test(test_five),
      cmocka_unit_test(test_rejected_recipient_not_counted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
