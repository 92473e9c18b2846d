/* post.c -- milter_ctx_post(): hand work from any thread to the loop. */
#include "post.h"

#include <stdlib.h>

#include "session.h"
#include "mf_alloc.h"

struct milter_post_item {
  struct milter_post_item *next;
  milter_ctx *ctx;
  milter_post_fn fn;
  void *arg;
};

static void on_async(uv_async_t *a) {
  milter_poster_run(a->data);
}

int milter_poster_init(milter_poster *p, uv_loop_t *loop) {
  p->head = p->tail = NULL;
  if (uv_mutex_init(&p->mu) != 0)
    return MILTER_E_NOMEM;
  if (uv_async_init(loop, &p->async, on_async) != 0) {
    uv_mutex_destroy(&p->mu);
    return MILTER_E_IO;
  }
  p->async.data = p;
  return 0;
}

int milter_poster_push(milter_poster *p, milter_ctx *ctx, milter_post_fn fn,
                       void *arg) {
  struct milter_post_item *it = xmalloc(sizeof *it);
  if (it == NULL)
    return MILTER_E_NOMEM;
  it->next = NULL;
  it->ctx = ctx;
  it->fn = fn;
  it->arg = arg;
  uv_mutex_lock(&p->mu);
  if (p->tail != NULL)
    p->tail->next = it;
  else
    p->head = it;
  p->tail = it;
  uv_mutex_unlock(&p->mu);
  uv_async_send(&p->async);
  return 0;
}

void milter_poster_run(milter_poster *p) {
  uv_mutex_lock(&p->mu);
  struct milter_post_item *it = p->head;
  p->head = p->tail = NULL;
  uv_mutex_unlock(&p->mu);
  while (it != NULL) {
    struct milter_post_item *next = it->next;
    it->fn(it->ctx, it->arg);
    free(it);
    it = next;
  }
}

void milter_poster_close(milter_poster *p, uv_close_cb cb) {
  milter_poster_run(p);
  uv_mutex_destroy(&p->mu);
  uv_close((uv_handle_t *)&p->async, cb);
}

int milter_ctx_post(milter_ctx *ctx, milter_post_fn fn, void *arg) {
  if (ctx == NULL || fn == NULL || ctx->env->poster == NULL)
    return MILTER_E_INVAL;
  return milter_poster_push(ctx->env->poster, ctx, fn, arg);
}
