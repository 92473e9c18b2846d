/* ctx.c -- milter_ctx accessors, custom replies, pending replies. */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "mf_alloc.h"

struct milter_msg *milter_msg_get(milter_ctx *ctx) {
  if (ctx->msg == NULL) {
    /* malloc and memset, not calloc: glibc's calloc skips the per-thread
     * cache, and a block per message is the hot path (the empty asm keeps
     * the compiler from merging the two into calloc). */
    struct milter_msg *m = xmalloc(sizeof *m);
    if (m == NULL)
      return NULL;
    __asm__ volatile("" : : "r"(m) : "memory");
    memset(m, 0, sizeof *m);
    atomic_init(&m->post_busy, 0);
    /* Read by milter_ctx_post's thread (post.c). */
    __atomic_store_n(&ctx->msg, m, __ATOMIC_RELEASE);
  }
  return ctx->msg;
}

void milter_msg_trim(milter_ctx *ctx) {
  const struct milter_msg *m = ctx->msg;
  /* While a reply is pending the block may be another thread's; a post
   * queued in its slot keeps it until it has run. */
  if (m == NULL || ctx->in_msg || ctx->pending ||
      atomic_load_explicit(&m->post_busy, memory_order_relaxed) ||
      m->acts.data != NULL ||
      m->newbody.data != NULL || m->reply != NULL || m->deferred_reply != NULL)
    return;
  for (int i = 0; i < MAC_COUNT - MAC_MAIL; i++)
    if (m->macros[i] != NULL)
      return;
  free(ctx->msg);
  ctx->msg = NULL;
}

void milter_ctx_set_data(milter_ctx *ctx, void *data) {
  ctx->user_data = data;
}

void *milter_ctx_get_data(const milter_ctx *ctx) {
  return ctx->user_data;
}

void *milter_ctx_filter_data(const milter_ctx *ctx) {
  return ctx->desc->userdata;
}

milter_server *milter_ctx_server(const milter_ctx *ctx) {
  return ctx->env->server;
}

uint32_t milter_ctx_version(const milter_ctx *ctx) {
  return ctx->version;
}

uint32_t milter_ctx_actions(const milter_ctx *ctx) {
  return ctx->actions;
}

uint32_t milter_ctx_protocol(const milter_ctx *ctx) {
  return ctx->protocol;
}

uint32_t milter_ctx_data_size(const milter_ctx *ctx) {
  return milter_data_size(ctx);
}

const char *milter_ctx_peer(const milter_ctx *ctx) {
  return ctx->peer;
}

int milter_ctx_closed(const milter_ctx *ctx) {
  return ctx != NULL && ctx->gone;
}

int milter_ctx_setreply(milter_ctx *ctx, const char *rcode, const char *xcode,
                        const char *text) {
  if (ctx == NULL || rcode == NULL || (rcode[0] != '4' && rcode[0] != '5'))
    return MILTER_E_INVAL;
  milter_buf b;
  milter_buf_init(&b);
  int rc = milter_enc_replycode(&b, rcode, xcode, text);
  struct milter_msg *m = rc < 0 ? NULL : milter_msg_get(ctx);
  if (m == NULL) {
    milter_buf_free(&b);
    return rc < 0 ? rc : MILTER_E_NOMEM;
  }
  free(m->reply);
  m->reply = b.data; /* 4-byte length, 'y', "5xx ..." */
  m->reply_len = (uint32_t)b.len;
  return 0;
}

static void wake(milter_ctx *ctx) {
  if (ctx->env->wake != NULL)
    ctx->env->wake(ctx);
}

int milter_ctx_reply(milter_ctx *ctx, milter_status status) {
  if (ctx == NULL || status == MILTER_PENDING)
    return MILTER_E_INVAL;
  if (!ctx->pending)
    return MILTER_E_STATE;
  uint8_t cmd = ctx->pending;
  ctx->pending = 0;
  if (ctx->gone) {
    ctx->in_eom = 0;
    milter_actions_clear(ctx);
    wake(ctx);
    return MILTER_E_CLOSED;
  }
  milter_session_finish(ctx, cmd, status);
  milter_msg_trim(ctx);
  wake(ctx);
  return 0;
}

int milter_ctx_progress(milter_ctx *ctx) {
  if (ctx == NULL)
    return MILTER_E_INVAL;
  if (ctx->gone)
    return MILTER_E_CLOSED;
  if (!ctx->negotiated)
    return MILTER_E_STATE;
  if (ctx->version < 6)
    return MILTER_E_NOTSUP;
  int rc = milter_enc_reply_simple(&ctx->out, MILTER_REPLY_PROGRESS);
  if (rc == 0)
    wake(ctx);
  return rc;
}
