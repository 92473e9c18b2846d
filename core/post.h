/* post.h -- thread-safe hand-off of work to the loop thread (internal).
 *
 * One poster per loop: a lock-free list and one uv_async_t.  Any thread
 * may push (one compare-and-swap, no lock for the loop to contend with);
 * the loop thread takes the whole list at once (one atomic exchange) and
 * runs the queued functions in push order from the async callback.  libuv
 * coalesces wake-ups: a push while the loop already has one pending costs
 * no system call, so a batch of results costs one wake-up of the loop. */
#ifndef MF_CORE_POST_H
#define MF_CORE_POST_H

#include <stdatomic.h>

#include <uv.h>

#include <mailfilter/milter.h>

/* One queued call.  A message's block (struct milter_msg, session.h)
 * holds one, used whenever it is free: handing a decision back (one post
 * per ctx at a time, while its reply is PENDING: the session makes sure
 * the block exists then) allocates nothing, so it cannot fail for lack of
 * memory.  A post with no block, or a second concurrent post on the same
 * ctx, is allocated. */
struct milter_post_item {
  struct milter_post_item *next;
  milter_ctx *ctx;
  milter_post_fn fn;
  void *arg;
  atomic_int *busy; /* the block's slot: release it; NULL: free the item */
};

typedef struct milter_poster {
  uv_async_t async;
  /* Pushed items, the most recent first (reversed when run). */
  _Atomic(struct milter_post_item *) head;
} milter_poster;

/* Loop thread.  Returns 0 or MILTER_E_NOMEM / MILTER_E_IO. */
int milter_poster_init(milter_poster *p, uv_loop_t *loop);
/* Any thread.  Returns 0, or MILTER_E_NOMEM when ctx's slot is in use (or
 * there is no block) and no memory is left for another item. */
int milter_poster_push(milter_poster *p, milter_ctx *ctx, milter_post_fn fn,
                       void *arg);
/* Loop thread: run what is queued (also done by the async callback). */
void milter_poster_run(milter_poster *p);
/* Loop thread: close the async handle; queued items run first.  cb gets
 * the async handle; free p after it (or after uv_run when cb is NULL). */
void milter_poster_close(milter_poster *p, uv_close_cb cb);

#endif
