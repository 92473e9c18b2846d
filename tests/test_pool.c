/* test_pool.c -- the worker pool of the mailfilter layer (mailfilter/pool.c,
 * internal): every job runs exactly once, a batch pushed at once is spread
 * over the workers so that a blocking job never holds up the ones queued
 * behind it, and freeing the pool runs what is still queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>

#include "mailfilter/pool.h"

typedef struct tjob {
  mf_job job; /* first: the job pointer is the tjob's */
  atomic_int runs;
  sem_t *wait_for; /* a blocking job: waits for this (bounded) */
  sem_t *post;     /* posted when the job has run */
  atomic_int timed_out;
} tjob;

/* sem_wait bounded by 30 s: 0, or -1 when the time is up.  Not a timing
 * assertion: a bound so that a pool that never runs a job fails the test
 * instead of hanging it. */
static int wait_bounded(sem_t *s) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 30;
  while (sem_timedwait(s, &ts) != 0)
    if (errno == ETIMEDOUT)
      return -1;
  return 0;
}

static void run_tjob(mf_job *j) {
  tjob *t = (tjob *)j;
  atomic_fetch_add(&t->runs, 1);
  if (t->wait_for != NULL && wait_bounded(t->wait_for) != 0)
    atomic_store(&t->timed_out, 1);
  if (t->post != NULL)
    sem_post(t->post);
}

static void tjob_init(tjob *t) {
  t->job.fn = run_tjob;
  t->job.next = NULL;
  atomic_init(&t->runs, 0);
  atomic_init(&t->timed_out, 0);
  t->wait_for = t->post = NULL;
}

/* Until all n workers sleep (bounded: a pool whose workers never sleep
 * fails here). */
static void all_asleep(mf_pool *p, unsigned n) {
  for (int i = 0; i < 30000 && mf_pool_sleeping(p) != n; i++)
    usleep(1000);
  assert_int_equal(mf_pool_sleeping(p), n);
}

/* A blocks until B has run: B must get a worker of its own, from workers
 * that were all asleep. */
static void blocking_first(int as_batch) {
  mf_pool *p;
  assert_int_equal(mf_pool_new(&p, 2), 0);
  all_asleep(p, 2);
  sem_t b_ran, a_ran;
  sem_init(&b_ran, 0, 0);
  sem_init(&a_ran, 0, 0);
  tjob a, b;
  tjob_init(&a);
  tjob_init(&b);
  a.wait_for = &b_ran;
  a.post = &a_ran;
  b.post = &b_ran;
  if (as_batch) {
    a.job.next = &b.job;
    assert_int_equal(mf_pool_push_list(p, &a.job, &b.job), 0);
  } else {
    assert_int_equal(mf_pool_push(p, &a.job), 0);
    assert_int_equal(mf_pool_push(p, &b.job), 0);
  }
  /* Both ran while the pool runs (not drained by mf_pool_free). */
  assert_int_equal(wait_bounded(&a_ran), 0);
  assert_int_equal(atomic_load(&a.timed_out), 0);
  assert_int_equal(atomic_load(&b.runs), 1);
  mf_pool_free(p);
  assert_int_equal(atomic_load(&a.runs), 1);
  assert_int_equal(atomic_load(&b.runs), 1);
  sem_destroy(&a_ran);
  sem_destroy(&b_ran);
}

static void test_blocking_job_does_not_hold_up_the_next(void **state) {
  (void)state;
  blocking_first(0);
  blocking_first(1);
}

/* Workers asleep (waited for), then a batch: each job runs once. */
static void test_batches_run_once(void **state) {
  (void)state;
  enum { ROUNDS = 50, BATCH = 20 };
  static tjob jobs[ROUNDS][BATCH];
  mf_pool *p;
  assert_int_equal(mf_pool_new(&p, 3), 0);
  sem_t done;
  sem_init(&done, 0, 0);
  for (int r = 0; r < ROUNDS; r++) {
    for (int i = 0; i < BATCH; i++) {
      tjob_init(&jobs[r][i]);
      jobs[r][i].post = &done;
      if (i > 0)
        jobs[r][i - 1].job.next = &jobs[r][i].job;
    }
    if (r % 4 == 0)
      all_asleep(p, 3);
    if (r % 2 == 0) {
      assert_int_equal(
          mf_pool_push_list(p, &jobs[r][0].job, &jobs[r][BATCH - 1].job), 0);
    } else {
      for (int i = 0; i < BATCH; i++)
        assert_int_equal(mf_pool_push(p, &jobs[r][i].job), 0);
    }
    /* Every job of the round has run before the next round. */
    for (int i = 0; i < BATCH; i++)
      assert_int_equal(wait_bounded(&done), 0);
  }
  mf_pool_free(p);
  for (int r = 0; r < ROUNDS; r++)
    for (int i = 0; i < BATCH; i++)
      assert_int_equal(atomic_load(&jobs[r][i].runs), 1);
  sem_destroy(&done);
}

/* Freeing the pool right after a push still runs every queued job. */
static void test_free_drains(void **state) {
  (void)state;
  enum { N = 200 };
  static tjob jobs[N];
  mf_pool *p;
  assert_int_equal(mf_pool_new(&p, 2), 0);
  for (int i = 0; i < N; i++) {
    tjob_init(&jobs[i]);
    assert_int_equal(mf_pool_push(p, &jobs[i].job), 0);
  }
  mf_pool_free(p);
  for (int i = 0; i < N; i++)
    assert_int_equal(atomic_load(&jobs[i].runs), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_blocking_job_does_not_hold_up_the_next),
      cmocka_unit_test(test_batches_run_once),
      cmocka_unit_test(test_free_drains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
