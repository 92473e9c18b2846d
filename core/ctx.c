/* ctx.c -- milter_ctx accessors, custom replies, pending replies. */
#include "session.h"

#include <stdlib.h>
#include <string.h>

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
  return ctx->data_size;
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
  if (rc < 0) {
    milter_buf_free(&b);
    return rc;
  }
  free(ctx->reply);
  ctx->reply = b.data; /* 4-byte length, 'y', "5xx ..." */
  ctx->reply_len = (uint32_t)b.len;
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
