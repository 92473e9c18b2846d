/* post.c -- milter_ctx_post(): hand work from any thread to the loop. */
#include "post.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "mf_alloc.h"
#include "session.h"

static void on_async(uv_async_t *a) {
  milter_poster_run(a->data);
}

int milter_poster_init(milter_poster *p, uv_loop_t *loop) {
  atomic_init(&p->head, NULL);
  if (uv_async_init(loop, &p->async, on_async) != 0)
    return MILTER_E_IO;
  p->async.data = p;
  return 0;
}

int milter_poster_push(milter_poster *p, milter_ctx *ctx, milter_post_fn fn,
                       void *arg) {
  /* While a reply is pending the loop neither allocates nor frees the
   * block (milter_session_finish, milter_msg_trim); the pointer is
   * published with release (milter_msg_get). */
  struct milter_msg *m = __atomic_load_n(&ctx->msg, __ATOMIC_ACQUIRE);
  struct milter_post_item *it;
  if (m != NULL && atomic_exchange(&m->post_busy, 1) == 0) {
    it = &m->post_slot;
    it->busy = &m->post_busy;
  } else {
    if ((it = xmalloc(sizeof *it)) == NULL)
      return MILTER_E_NOMEM;
    it->busy = NULL;
  }
  it->ctx = ctx;
  it->fn = fn;
  it->arg = arg;
  /* Only the loop takes items, and it takes them all: no ABA. */
  it->next = atomic_load_explicit(&p->head, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(
      &p->head, &it->next, it, memory_order_release, memory_order_relaxed))
    ;
  uv_async_send(&p->async);
  return 0;
}

void milter_poster_run(milter_poster *p) {
  struct milter_post_item *it =
      atomic_exchange_explicit(&p->head, NULL, memory_order_acquire);
  /* Most recent first: reverse into push order. */
  struct milter_post_item *fifo = NULL;
  while (it != NULL) {
    struct milter_post_item *next = it->next;
    it->next = fifo;
    fifo = it;
    it = next;
  }
  it = fifo;
  while (it != NULL) {
    struct milter_post_item *next = it->next;
    milter_ctx *ctx = it->ctx;
    milter_post_fn fn = it->fn;
    void *arg = it->arg;
    /* Released before the call: fn may post again (or end the ctx). */
    if (it->busy != NULL)
      atomic_store(it->busy, 0);
    else
      free(it);
    fn(ctx, arg);
    it = next;
  }
}

void milter_poster_close(milter_poster *p, uv_close_cb cb) {
  milter_poster_run(p);
  uv_close((uv_handle_t *)&p->async, cb);
}

int milter_ctx_post(milter_ctx *ctx, milter_post_fn fn, void *arg) {
  if (ctx == NULL || fn == NULL || ctx->env->poster == NULL)
    return MILTER_E_INVAL;
  return milter_poster_push(ctx->env->poster, ctx, fn, arg);
}
