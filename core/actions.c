/* actions.c -- end-of-message actions (add/change headers, recipients,
 * sender, body, quarantine).
 *
 * Actions are encoded into a queue as they are called and written just
 * before the final reply to SMFIC_BODYEOB, in call order; the replacement
 * body is collected apart and sent after them in one uninterrupted run of
 * SMFIR_REPLBODY packets of at most the negotiated data size.  Both live in
 * the message's block (ctx->msg). */
#include "session.h"

static int check(const milter_ctx *ctx, uint32_t need) {
  if (ctx == NULL)
    return MILTER_E_INVAL;
  if (ctx->gone)
    return MILTER_E_CLOSED;
  if (!ctx->in_eom)
    return MILTER_E_STATE;
  if ((ctx->actions & need) != need)
    return MILTER_E_NOTSUP;
  return 0;
}

/* Check state and negotiation, then encode into the queue (acts, the
 * message block's); a failed encode leaves the queue as it was. */
#define QUEUE(ctx, need, call)                                                 \
  do {                                                                         \
    int rc_ = check(ctx, need);                                                \
    if (rc_ < 0)                                                               \
      return rc_;                                                              \
    struct milter_msg *m_ = milter_msg_get(ctx);                               \
    if (m_ == NULL)                                                            \
      return MILTER_E_NOMEM;                                                   \
    milter_buf *acts = &m_->acts;                                              \
    size_t len_ = acts->len;                                                   \
    rc_ = call;                                                                \
    if (rc_ < 0)                                                               \
      acts->len = len_;                                                        \
    return rc_;                                                                \
  } while (0)

int milter_ctx_addheader(milter_ctx *ctx, const char *name, const char *value) {
  QUEUE(ctx, MILTER_ACT_ADDHDRS, milter_enc_addheader(acts, name, value));
}

int milter_ctx_insheader(milter_ctx *ctx, uint32_t index, const char *name,
                         const char *value) {
  QUEUE(ctx, MILTER_ACT_ADDHDRS,
        milter_enc_insheader(acts, index, name, value));
}

int milter_ctx_chgheader(milter_ctx *ctx, const char *name, uint32_t index,
                         const char *value) {
  QUEUE(ctx, MILTER_ACT_CHGHDRS,
        milter_enc_chgheader(acts, index, name,
                             value != NULL ? value : ""));
}

int milter_ctx_addrcpt(milter_ctx *ctx, const char *rcpt, const char *args) {
  QUEUE(ctx, args != NULL ? MILTER_ACT_ADDRCPT_PAR : MILTER_ACT_ADDRCPT,
        milter_enc_addrcpt(acts, rcpt, args));
}

int milter_ctx_delrcpt(milter_ctx *ctx, const char *rcpt) {
  QUEUE(ctx, MILTER_ACT_DELRCPT, milter_enc_delrcpt(acts, rcpt));
}

int milter_ctx_chgfrom(milter_ctx *ctx, const char *from, const char *args) {
  QUEUE(ctx, MILTER_ACT_CHGFROM, milter_enc_chgfrom(acts, from, args));
}

int milter_ctx_quarantine(milter_ctx *ctx, const char *reason) {
  QUEUE(ctx, MILTER_ACT_QUARANTINE, milter_enc_quarantine(acts, reason));
}

int milter_ctx_replacebody(milter_ctx *ctx, const void *data, size_t len) {
  int rc = check(ctx, MILTER_ACT_CHGBODY);
  if (rc < 0)
    return rc;
  if (data == NULL && len > 0)
    return MILTER_E_INVAL;
  if (len > 0) {
    struct milter_msg *m = milter_msg_get(ctx);
    if (m == NULL)
      return MILTER_E_NOMEM;
    if ((rc = milter_buf_append(&m->newbody, data, len)) < 0)
      return rc;
  }
  ctx->has_newbody = 1;
  return 0;
}

int milter_ctx_clear_actions(milter_ctx *ctx) {
  if (ctx == NULL)
    return MILTER_E_INVAL;
  if (!ctx->in_eom)
    return MILTER_E_STATE;
  milter_actions_clear(ctx);
  return 0;
}

int milter_actions_flush(milter_ctx *ctx) {
  int rc = 0;
  const struct milter_msg *m = ctx->msg;
  if (m != NULL && m->acts.len > 0)
    rc = milter_buf_append(&ctx->out, m->acts.data, m->acts.len);
  if (rc == 0 && ctx->has_newbody) /* replacebody(0 bytes): no block */
    rc = milter_enc_replbody(&ctx->out, m != NULL ? m->newbody.data : NULL,
                             m != NULL ? m->newbody.len : 0,
                             milter_data_size(ctx));
  milter_actions_clear(ctx);
  return rc;
}

void milter_actions_clear(milter_ctx *ctx) {
  if (ctx->msg != NULL) {
    milter_buf_free(&ctx->msg->acts);
    milter_buf_free(&ctx->msg->newbody);
  }
  ctx->has_newbody = 0;
}
