/* pool.c -- worker threads for decision functions.  One mutex, one
 * condition variable, an intrusive FIFO: a hand-off is one push and one
 * signal. */
#include "pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "mf_alloc.h"
#include <mailfilter/mailfilter.h>

struct mf_pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  mf_job *head, *tail;
  int stopping;
  unsigned idle; /* workers waiting on cv: signal only when one is */
  unsigned n;
  pthread_t *threads;
};

static void *worker(void *arg) {
  mf_pool *p = arg;
  /* decide() runs here: a write of its own to a closed socket gets EPIPE,
   * never SIGPIPE (milter.h, SIGNALS).  The disposition stays the
   * application's. */
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &only, NULL);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->head == NULL && !p->stopping) {
      p->idle++;
      pthread_cond_wait(&p->cv, &p->mu);
      p->idle--;
    }
    mf_job *j = p->head;
    if (j == NULL)
      break; /* stopping and drained */
    p->head = j->next;
    if (p->head == NULL)
      p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    j->fn(j);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
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
  pthread_cond_init(&p->cv, NULL);
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

int mf_pool_push(mf_pool *p, mf_job *job) {
  job->next = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    return MF_E_STATE;
  }
  if (p->tail)
    p->tail->next = job;
  else
    p->head = job;
  p->tail = job;
  /* A busy worker picks the job up when it finishes its own: waking an
   * idle one is needed only when there is one. */
  if (p->idle > 0)
    pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

void mf_pool_free(mf_pool *p) {
  if (p == NULL)
    return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->n; i++)
    pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p->threads);
  free(p);
}
