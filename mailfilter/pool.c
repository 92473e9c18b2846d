/* pool.c -- worker threads for decision functions.
 *
 * One mutex, an intrusive FIFO of jobs, and a stack of sleeping workers,
 * each waiting on a condition variable of its own.  What a hand-off costs
 * is the wake-up of a sleeping worker (a futex call for the pusher, a
 * thread switch for the worker), so jobs wake a worker only when no worker
 * is awake to take them:
 *   - "looking" counts the workers that are awake and not running a job
 *     (just woken, or between two jobs).  A push while one of them is
 *     looking wakes nobody: that worker takes the job.  The loop pushes
 *     its jobs in batches (mf_pool_push_list, filter.c): one lock and at
 *     most one wake-up per batch, and the woken worker runs job after job
 *     without sleeping in between.
 *   - A worker that takes a job and leaves more behind wakes one more
 *     sleeper (when no other worker is looking), so that a slow decide()
 *     (DNS, a scanner) never holds up the jobs queued behind it while
 *     workers sleep.
 *   - A sleeper is woken by name (its own condition variable, a flag set
 *     under the mutex): one push wakes at most one worker, and a worker
 *     already woken is not woken again by the next push.
 * A worker that runs out of jobs sleeps at once: spinning a while first
 * saved no measurable time once jobs came in batches, and burned CPU.
 */
#include "pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "mf_alloc.h"
#include <mailfilter/mailfilter.h>

typedef struct sleeper {
  pthread_cond_t cv;
  int woken; /* set (under mu) by whoever wakes it */
  struct sleeper *next;
} sleeper;

struct mf_pool {
  pthread_mutex_t mu;
  mf_job *head, *tail;
  int stopping;
  sleeper *sleepers; /* idle workers, the most recent first */
  unsigned looking;  /* awake workers not running a job */
  unsigned n;
  pthread_t *threads;
};

/* Under mu, with p->sleepers != NULL. */
static void wake_one(mf_pool *p) {
  sleeper *s = p->sleepers;
  p->sleepers = s->next;
  s->woken = 1;
  p->looking++;
  pthread_cond_signal(&s->cv);
}

static void *worker(void *arg) {
  mf_pool *p = arg;
  /* decide() runs here: a write of its own to a closed socket gets EPIPE,
   * never SIGPIPE (milter.h, SIGNALS).  The disposition stays the
   * application's. */
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &only, NULL);
  sleeper self;
  pthread_cond_init(&self.cv, NULL);
  pthread_mutex_lock(&p->mu);
  p->looking++;
  for (;;) {
    while (p->head == NULL && !p->stopping) {
      p->looking--;
      self.woken = 0;
      self.next = p->sleepers;
      p->sleepers = &self;
      while (!self.woken)
        pthread_cond_wait(&self.cv, &p->mu);
      /* the waker counted us as looking again */
    }
    mf_job *j = p->head;
    if (j == NULL)
      break; /* stopping and drained */
    p->head = j->next;
    if (p->head == NULL)
      p->tail = NULL;
    p->looking--;
    if (p->head != NULL && p->looking == 0 && p->sleepers != NULL)
      wake_one(p);
    pthread_mutex_unlock(&p->mu);
    j->fn(j);
    pthread_mutex_lock(&p->mu);
    p->looking++;
  }
  p->looking--;
  pthread_mutex_unlock(&p->mu);
  pthread_cond_destroy(&self.cv);
  return NULL;
}

int mf_pool_new(mf_pool **out, unsigned n) {
  if (out == NULL || n == 0)
    return MF_E_INVAL;
  mf_pool *p = xcalloc(1, sizeof(*p));
  if (p == NULL || (p->threads = xcalloc(n, sizeof(pthread_t))) == NULL) {
    free(p);
    return MF_E_NOMEM;
  }
  pthread_mutex_init(&p->mu, NULL);
  for (; p->n < n; p->n++)
    if (pthread_create(&p->threads[p->n], NULL, worker, p) != 0)
      break;
  if (p->n == 0) {
    mf_pool_free(p);
    return MF_E_NOMEM;
  }
  *out = p;
  return 0;
}

int mf_pool_push_list(mf_pool *p, mf_job *first, mf_job *last) {
  last->next = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    return MF_E_STATE;
  }
  if (p->tail)
    p->tail->next = first;
  else
    p->head = first;
  p->tail = last;
  /* A worker that is looking takes them; a busy one after its own job,
   * unless another wakes up first (see the top of this file). */
  if (p->looking == 0 && p->sleepers != NULL)
    wake_one(p);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int mf_pool_push(mf_pool *p, mf_job *job) {
  return mf_pool_push_list(p, job, job);
}

unsigned mf_pool_sleeping(mf_pool *p) {
  unsigned n = 0;
  pthread_mutex_lock(&p->mu);
  for (sleeper *s = p->sleepers; s != NULL; s = s->next)
    n++;
  pthread_mutex_unlock(&p->mu);
  return n;
}

void mf_pool_free(mf_pool *p) {
  if (p == NULL)
    return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  while (p->sleepers != NULL)
    wake_one(p);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->n; i++)
    pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->mu);
  free(p->threads);
  free(p);
}
