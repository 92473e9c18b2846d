/* test_spool_budget.c -- the process-wide memory budget of the body spools
 * (mf_opts.body_mem_total, mailfilter/spool.c): spools count their memory
 * together; one that would pass its budget goes to its temp file at once,
 * whole; memory given back is taken again; without a temp file the body
 * stays in memory; the count is exact under concurrent spools. */
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

#include <mailfilter/mailfilter.h>
#include <mailfilter/mf_engine.h>

#include "mailfilter/spool.h"

enum { MEM_MAX = 200 * 1024 };

static uint8_t *pattern(size_t n, unsigned seed) {
  uint8_t *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++)
    b[i] = (uint8_t)(i * 31 + seed);
  return b;
}

static void assert_holds(const mf_spool *s, const uint8_t *want, size_t n) {
  uint8_t *got = malloc(n + 1);
  assert_non_null(got);
  assert_int_equal(s->size, n);
  assert_int_equal(mf_spool_read(s, 0, got, n + 1), (ssize_t)n);
  assert_memory_equal(got, want, n);
  free(got);
}

static void budget_spool(mf_spool *s, size_t budget) {
  mf_spool_init(s, MEM_MAX, NULL);
  s->budget = budget;
}

static void test_budget(void **state) {
  (void)state;
  const size_t t0 = mf_spool_mem_total(), B = 20000;
  uint8_t *b = pattern(30000, 7);
  mf_spool s1, s2, s3, s4;
  budget_spool(&s1, B);
  budget_spool(&s2, B);
  budget_spool(&s3, B);
  budget_spool(&s4, B);
  /* Exactly what one piece needs (10000, not 16 KiB). */
  assert_int_equal(mf_spool_write(&s1, b, 10000), 0);
  assert_int_equal(s1.fd, -1);
  assert_int_equal(mf_spool_mem_total(), t0 + 10000);
  assert_int_equal(mf_spool_write(&s2, b, 10000), 0);
  assert_int_equal(s2.fd, -1);
  assert_int_equal(mf_spool_mem_total(), t0 + 20000);
  /* The budget is used up: the next body goes to a file at once. */
  assert_int_equal(mf_spool_write(&s3, b, 1), 0);
  assert_true(s3.fd >= 0);
  assert_int_equal(mf_spool_write(&s3, b + 1, 29999), 0);
  assert_holds(&s3, b, 30000);
  assert_int_equal(mf_spool_mem_total(), t0 + 20000);
  /* Memory given back is there for the next one. */
  mf_spool_reset(&s1);
  assert_int_equal(mf_spool_mem_total(), t0 + 10000);
  assert_int_equal(mf_spool_write(&s4, b, 5000), 0);
  assert_int_equal(s4.fd, -1);
  assert_int_equal(mf_spool_mem_total(), t0 + 15000);
  /* s2 growing past the budget moves, what it had included, and gives
   * its memory back. */
  assert_int_equal(mf_spool_write(&s2, b + 10000, 10), 0);
  assert_true(s2.fd >= 0);
  assert_holds(&s2, b, 10010);
  assert_int_equal(mf_spool_mem_total(), t0 + 5000);
  assert_holds(&s4, b, 5000);
  mf_spool_reset(&s2);
  mf_spool_reset(&s3);
  mf_spool_reset(&s4);
  assert_int_equal(mf_spool_mem_total(), t0);
  /* No budget: memory up to mem_max, whatever the others hold. */
  budget_spool(&s1, B);
  assert_int_equal(mf_spool_write(&s1, b, 15000), 0);
  budget_spool(&s2, 0);
  assert_int_equal(mf_spool_write(&s2, b, 30000), 0);
  assert_int_equal(s2.fd, -1);
  assert_int_equal(mf_spool_mem_total(), t0 + 45000);
  /* Over the budget and no temp file possible: memory after all. */
  mf_spool_init(&s3, MEM_MAX, "/nonexistent/mf-spool-budget");
  s3.budget = B;
  assert_int_equal(mf_spool_write(&s3, b, 100), 0);
  assert_int_equal(s3.fd, -1);
  assert_int_equal(s3.err, 0);
  assert_holds(&s3, b, 100);
  mf_spool_reset(&s1);
  mf_spool_reset(&s2);
  mf_spool_reset(&s3);
  assert_int_equal(mf_spool_mem_total(), t0);
  free(b);
}

/* Spools on several threads at once, with a budget that some of them
 * meet: every body reads back whole, and the count comes back to where it
 * was. */
static void *churn(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  uint8_t *b = pattern(40000, seed);
  int ok = 1;
  for (int round = 0; round < 300 && ok; round++) {
    mf_spool s;
    budget_spool(&s, 64 * 1024);
    size_t n = 0;
    for (int piece = 0; piece < 4; piece++) {
      size_t len = 1000 + (size_t)((seed + (unsigned)round * 7 +
                                    (unsigned)piece * 13) % 9000);
      ok &= mf_spool_write(&s, b + n, len) == 0;
      n += len;
    }
    uint8_t got[40000];
    ok &= mf_spool_read(&s, 0, got, sizeof got) == (ssize_t)n &&
          memcmp(got, b, n) == 0;
    mf_spool_reset(&s);
  }
  free(b);
  return (void *)(intptr_t)ok;
}

static void test_threads(void **state) {
  (void)state;
  const size_t t0 = mf_spool_mem_total();
  enum { N = 8 };
  pthread_t t[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)), 0);
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    assert_int_equal(pthread_join(t[i], &r), 0);
    assert_int_equal((intptr_t)r, 1);
  }
  assert_int_equal(mf_spool_mem_total(), t0);
}

/* Through the transaction: the budget is mf_opts.body_mem_total (default
 * 1 MiB); the body of a message past it is a file (mf_trx_body_fd). */
static void test_trx(void **state) {
  (void)state;
  mf_opts o;
  mf_opts_init(&o);
  assert_int_equal(o.body_mem_total, 1024 * 1024);
  o.body_mem_total = 16 * 1024;
  const char *from[] = {"<s@example.org>"};
  uint8_t *b = pattern(10240, 3);
  mf_trx *t[3];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(mf_engine_trx_new(&t[i], &o), 0);
    assert_int_equal(mf_engine_mail(t[i], 1, from), 0);
    assert_int_equal(mf_engine_eoh(t[i]), 0);
  }
  assert_int_equal(mf_engine_body(t[0], b, 10240), 0);
  assert_non_null(mf_trx_body_mem(t[0]));
  assert_int_equal(mf_engine_body(t[1], b, 10240), 0);
  assert_null(mf_trx_body_mem(t[1]));
  int fd = mf_trx_body_fd(t[1]);
  assert_true(fd >= 0);
  uint8_t got[10240];
  assert_int_equal(pread(fd, got, sizeof got, 0), 10240);
  assert_memory_equal(got, b, 10240);
  mf_engine_reset_message(t[0]); /* gives its 10 KiB back */
  assert_int_equal(mf_engine_body(t[2], b, 10240), 0);
  assert_int_equal(mf_trx_body_fd(t[2]), -1);
  assert_memory_equal(mf_trx_body_mem(t[2]), b, 10240);
  for (int i = 0; i < 3; i++)
    mf_engine_trx_free(t[i]);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_budget),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_trx),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
