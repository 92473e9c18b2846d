/* pool.h -- a bounded pool of worker threads (internal). */
#ifndef MAILFILTER_POOL_H
#define MAILFILTER_POOL_H

typedef struct mf_job {
  void (*fn)(struct mf_job *job);
  struct mf_job *next;
} mf_job;

typedef struct mf_pool mf_pool;

/* Start n threads.  Returns 0, MF_E_NOMEM or MF_E_INVAL. */
int mf_pool_new(mf_pool **out, unsigned n);
/* Queue a job (intrusive: no allocation).  Any thread.  Returns 0 or
 * MF_E_STATE after shutdown began. */
int mf_pool_push(mf_pool *p, mf_job *job);
/* Queue the jobs first..last (linked by next) with one lock and at most
 * one wake-up.  Same returns. */
int mf_pool_push_list(mf_pool *p, mf_job *first, mf_job *last);
/* Workers asleep waiting for a job (a snapshot; for tests). */
unsigned mf_pool_sleeping(mf_pool *p);
/* Run what is queued, then join the threads and free the pool. */
void mf_pool_free(mf_pool *p);

#endif
