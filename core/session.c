/* session.c -- the milter-side state machine: stages, dispatch, replies.
 *
 * The stage table and the handling of out-of-order commands follow
 * sendmail's libmilter/engine.c (trans_ok(), the NX_* masks, fix_stm()):
 * a command whose stage is not reachable from the current one makes
 * libmilter call xxfi_abort (if a message was in progress), jump to the HELO
 * stage and retry from there; if the command is still not reachable it is
 * ignored without a reply.  Differences are marked "DEVIATION" below.
 *
 * Deferred status.  When the MTA agreed that a command gets no reply (an
 * NR_* bit in milter_nr_sent) and its callback (or milter_ctx_reply after PENDING)
 * still returns a final status -- REJECT, TEMPFAIL, DISCARD or ACCEPT --
 * libmilter drops it and so the message goes on as if nothing had happened
 * (or, worse, the stage jumps to HELO and the end of message is ignored as
 * out of order: the MTA waits for its own timeout).  We keep it instead
 * (ctx->deferred, with the custom reply set by milter_ctx_setreply) and the
 * stage is not reset:
 *   - from then on no callback runs for the message: later commands of the
 *     message whose reply was negotiated away are swallowed silently;
 *   - the first command whose reply is due does not reach its callback: the
 *     deferred status is its reply.  At RCPT (and UNKNOWN) a REJECT,
 *     TEMPFAIL or DISCARD concerns that command only, so the status answers
 *     each such command and stays deferred; at DATA, EOH, BODY and EOB (and
 *     anywhere for ACCEPT) it ends the message, in the state such a reply
 *     leaves.  Answering EOB runs the abort callback (the eom callback did
 *     not run), so per-message state is freed exactly once;
 *   - a status deferred at CONNECT or HELO concerns the connection: it
 *     answers every later command that gets a reply until the connection
 *     ends or QUIT_NC (no message callback runs meanwhile);
 *   - a message-level deferred status is dropped (logged) when the message
 *     ends without a reply due: ABORT, a new MAIL or HELO, an out-of-order
 *     command, the connection ending;
 *   - UNKNOWN with NR_UNKN: its status concerns that command only, which
 *     the MTA has already answered itself; it is dropped with a warning.
 * One line is logged when a status is deferred and one when it is first
 * delivered, with the command names.  A failure status (REJECT, TEMPFAIL,
 * DISCARD) answering EOB drops the queued end-of-message actions. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mf_alloc.h"

#define MASK(s) (1u << (s))

/* engine.c next_states[]: which stages may follow each stage. */
static const uint32_t next_states[MST_COUNT] = {
    [MST_INIT] = MASK(MST_OPTS),
    [MST_OPTS] = MASK(MST_CONN) | MASK(MST_UNKN),
    [MST_CONN] = MASK(MST_HELO) | MASK(MST_MAIL) | MASK(MST_UNKN),
    [MST_HELO] = MASK(MST_HELO) | MASK(MST_MAIL) | MASK(MST_UNKN),
    [MST_MAIL] = MASK(MST_RCPT) | MASK(MST_ABRT) | MASK(MST_UNKN),
    [MST_RCPT] = MASK(MST_HDRS) | MASK(MST_EOHS) | MASK(MST_DATA) |
                 MASK(MST_BODY) | MASK(MST_ENDM) | MASK(MST_RCPT) |
                 MASK(MST_ABRT) | MASK(MST_UNKN),
    [MST_DATA] = MASK(MST_EOHS) | MASK(MST_HDRS) | MASK(MST_ABRT),
    [MST_HDRS] = MASK(MST_EOHS) | MASK(MST_HDRS) | MASK(MST_ABRT),
    [MST_EOHS] = MASK(MST_BODY) | MASK(MST_ENDM) | MASK(MST_ABRT),
    [MST_BODY] = MASK(MST_ENDM) | MASK(MST_BODY) | MASK(MST_ABRT),
    [MST_ENDM] =
        MASK(MST_QUIT) | MASK(MST_MAIL) | MASK(MST_UNKN) | MASK(MST_Q_NC),
    [MST_QUIT] = 0,
    [MST_ABRT] = 0,
    [MST_UNKN] = MASK(MST_HELO) | MASK(MST_MAIL) | MASK(MST_RCPT) |
                 MASK(MST_ABRT) | MASK(MST_DATA) | MASK(MST_BODY) |
                 MASK(MST_UNKN) | MASK(MST_QUIT) | MASK(MST_Q_NC),
    [MST_Q_NC] = MASK(MST_CONN) | MASK(MST_UNKN),
};

static const char *const stage_names[MST_COUNT] = {
    "init", "optneg", "connect", "helo", "mail",  "rcpt",    "data",   "header",
    "eoh",  "body",   "eom",     "quit", "abort", "unknown", "quit_nc"};

/* trans_ok(): a stage the filter switched off with NO* may be skipped. */
static int trans_ok(const milter_ctx *ctx, int from, int to) {
  int s = from;
  for (;;) {
    if (next_states[s] & MASK(to))
      return 1;
    int n = s + 1;
    if (n >= MST_COUNT || !(ctx->skip_states & MASK(n)))
      return 0;
    s = n;
  }
}

static int stage_of(uint8_t cmd) {
  switch (cmd) {
  case MILTER_CMD_CONNECT:
    return MST_CONN;
  case MILTER_CMD_HELO:
    return MST_HELO;
  case MILTER_CMD_MAIL:
    return MST_MAIL;
  case MILTER_CMD_RCPT:
    return MST_RCPT;
  case MILTER_CMD_DATA:
    return MST_DATA;
  case MILTER_CMD_HEADER:
    return MST_HDRS;
  case MILTER_CMD_EOH:
    return MST_EOHS;
  case MILTER_CMD_BODY:
    return MST_BODY;
  case MILTER_CMD_EOB:
    return MST_ENDM;
  default:
    return MST_UNKN; /* MILTER_CMD_UNKNOWN */
  }
}

/* get_nr_bit(): the "no reply" bit of a command.  It is one of
 * MILTER_P_ALL_NR: "nr_bit(cmd) & ctx->protocol" is "& milter_nr_sent(ctx)"
 * without the mask. */
static uint32_t nr_bit(uint8_t cmd) {
  switch (cmd) {
  case MILTER_CMD_CONNECT:
    return MILTER_P_NR_CONN;
  case MILTER_CMD_HELO:
    return MILTER_P_NR_HELO;
  case MILTER_CMD_MAIL:
    return MILTER_P_NR_MAIL;
  case MILTER_CMD_RCPT:
    return MILTER_P_NR_RCPT;
  case MILTER_CMD_DATA:
    return MILTER_P_NR_DATA;
  case MILTER_CMD_UNKNOWN:
    return MILTER_P_NR_UNKN;
  case MILTER_CMD_HEADER:
    return MILTER_P_NR_HDR;
  case MILTER_CMD_EOH:
    return MILTER_P_NR_EOH;
  case MILTER_CMD_BODY:
    return MILTER_P_NR_BODY;
  default:
    return 0;
  }
}

/* ctx->frag: where a streamed BODY packet stands. */
enum { FRAG_NONE = 0, FRAG_ACTIVE = 1, FRAG_IGNORE = 2 };

void milter_session_init(milter_ctx *ctx, const milter_filter_desc *desc,
                         const milter_session_env *env, void *glue,
                         const char *peer) {
  memset(ctx, 0, sizeof *ctx);
  ctx->desc = desc;
  ctx->env = env;
  ctx->glue = glue;
  ctx->peer = peer ? peer : "?";
}

static void clear_reply(milter_ctx *ctx) {
  struct milter_msg *m = ctx->msg;
  if (m != NULL) {
    free(m->reply);
    m->reply = NULL;
    m->reply_len = 0;
  }
}

static const char *status_name(int st) {
  switch (st) {
  case MILTER_CONTINUE:
    return "CONTINUE";
  case MILTER_REJECT:
    return "REJECT";
  case MILTER_DISCARD:
    return "DISCARD";
  case MILTER_ACCEPT:
    return "ACCEPT";
  case MILTER_TEMPFAIL:
    return "TEMPFAIL";
  case MILTER_NOREPLY:
    return "NOREPLY";
  case MILTER_SKIP:
    return "SKIP";
  case MILTER_PENDING:
    return "PENDING";
  case MILTER_CLOSE:
    return "CLOSE";
  default:
    return "invalid";
  }
}

#define MSG_ENDED "the message ended before a reply was due"

/* Forget the deferred status; why != NULL: it was never delivered, log. */
static void drop_deferred(milter_ctx *ctx, const char *why) {
  if (!ctx->deferred)
    return;
  if (why != NULL && !ctx->deferred_told)
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "deferred %s (from %s) dropped: %s",
                   status_name(ctx->deferred),
                   milter_cmd_name(ctx->deferred_cmd), why);
  ctx->deferred = 0;
  ctx->deferred_cmd = 0;
  ctx->deferred_conn = 0;
  ctx->deferred_told = 0;
  if (ctx->msg != NULL) {
    free(ctx->msg->deferred_reply);
    ctx->msg->deferred_reply = NULL;
    ctx->msg->deferred_reply_len = 0;
  }
}

void milter_session_free(milter_ctx *ctx) {
  milter_buf_free(&ctx->out);
  if (ctx->in != NULL) {
    milter_buf_free(&ctx->in->backlog);
    milter_decoder_free(&ctx->in->dec);
    free(ctx->in);
    ctx->in = NULL;
  }
  milter_macros_clear(ctx, 0);
  milter_actions_clear(ctx);
  clear_reply(ctx);
  drop_deferred(ctx, NULL);
  free(ctx->msg);
  ctx->msg = NULL;
}

int milter_session_paused(const milter_ctx *ctx) {
  return ctx->pending != 0;
}

size_t milter_session_held_input(const milter_ctx *ctx) {
  return ctx->in != NULL ? ctx->in->backlog.len : 0;
}

int milter_session_mid_packet(const milter_ctx *ctx) {
  return ctx->in != NULL && milter_decoder_busy(&ctx->in->dec);
}

int milter_session_busy(const milter_ctx *ctx) {
  return ctx->pending != 0 || ctx->in_msg;
}

/* The message in progress ends without EOM: abort callback, exactly once.
 * Macros of stages >= from are dropped (MAIL keeps its fresh MAIL macros). */
static void end_message(milter_ctx *ctx, int from) {
  if (ctx->deferred && !ctx->deferred_conn)
    drop_deferred(ctx, MSG_ENDED);
  if (!ctx->in_msg)
    return;
  ctx->in_msg = 0;
  ctx->in_eom = 0;
  if (ctx->desc->cb.abort != NULL)
    ctx->desc->cb.abort(ctx);
  milter_actions_clear(ctx);
  milter_macros_clear(ctx, from);
  clear_reply(ctx);
}

static void close_conn_state(milter_ctx *ctx) {
  end_message(ctx, MAC_MAIL);
  if (!ctx->closed) {
    ctx->closed = 1;
    if (ctx->desc->cb.close != NULL)
      ctx->desc->cb.close(ctx);
  }
  milter_macros_clear(ctx, 0);
  clear_reply(ctx);
  drop_deferred(ctx, "the connection ended before a reply was due");
  milter_msg_trim(ctx);
}

int milter_session_gone(milter_ctx *ctx) {
  ctx->gone = 1;
  if (ctx->pending)
    return 1;
  if (ctx->negotiated)
    close_conn_state(ctx);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Negotiation                                                              */
/* ------------------------------------------------------------------------ */

static const char *const act_names[] = {"ADDHDRS", "CHGBODY",     "ADDRCPT",
                                        "DELRCPT", "CHGHDRS",     "QUARANTINE",
                                        "CHGFROM", "ADDRCPT_PAR", "SETSYMLIST"};
static const char *const proto_names[] = {
    "NOCONNECT", "NOHELO",  "NOMAIL",     "NORCPT",  "NOBODY",  "NOHDRS",
    "NOEOH",     "NR_HDR",  "NOUNKNOWN",  "NODATA",  "SKIP",    "RCPT_REJ",
    "NR_CONN",   "NR_HELO", "NR_MAIL",    "NR_RCPT", "NR_DATA", "NR_UNKN",
    "NR_EOH",    "NR_BODY", "HDR_LEADSPC"};

static void bit_names(char *out, size_t n, uint32_t bits,
                      const char *const *names, size_t count) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < 32; i++) {
    if (!(bits & (1u << i)))
      continue;
    char tmp[16];
    const char *nm = i < count ? names[i] : NULL;
    if (nm == NULL) {
      snprintf(tmp, sizeof tmp, "0x%x", 1u << i);
      nm = tmp;
    }
    int w = snprintf(out + used, n - used, "%s%s", used ? "|" : "", nm);
    if (w < 0 || (size_t)w >= n - used)
      break;
    used += (size_t)w;
  }
}

/* NO* bits for the events the filter has no callback for (libmilter computes
 * the same in mi_listener() from the registered callbacks). */
static uint32_t no_bits(const milter_callbacks *cb) {
  uint32_t p = 0;
  if (!cb->connect)
    p |= MILTER_P_NOCONNECT;
  if (!cb->helo)
    p |= MILTER_P_NOHELO;
  if (!cb->envfrom)
    p |= MILTER_P_NOMAIL;
  if (!cb->envrcpt)
    p |= MILTER_P_NORCPT;
  if (!cb->body)
    p |= MILTER_P_NOBODY;
  if (!cb->header)
    p |= MILTER_P_NOHDRS;
  if (!cb->eoh)
    p |= MILTER_P_NOEOH;
  if (!cb->unknown)
    p |= MILTER_P_NOUNKNOWN;
  if (!cb->data)
    p |= MILTER_P_NODATA;
  return p;
}

static uint32_t skip_states_of(uint32_t p) {
  uint32_t s = 0;
  if (p & MILTER_P_NOCONNECT)
    s |= MASK(MST_CONN);
  if (p & MILTER_P_NOHELO)
    s |= MASK(MST_HELO);
  if (p & MILTER_P_NOMAIL)
    s |= MASK(MST_MAIL);
  if (p & MILTER_P_NORCPT)
    s |= MASK(MST_RCPT);
  if (p & MILTER_P_NOHDRS)
    s |= MASK(MST_HDRS);
  if (p & MILTER_P_NOEOH)
    s |= MASK(MST_EOHS);
  if (p & MILTER_P_NOBODY)
    s |= MASK(MST_BODY);
  if (p & MILTER_P_NODATA)
    s |= MASK(MST_DATA);
  if (p & MILTER_P_NOUNKNOWN)
    s |= MASK(MST_UNKN);
  return s;
}

static int refuse(milter_ctx *ctx, const char *what, uint32_t missing,
                  uint32_t offered, const char *const *names, size_t count) {
  char buf[300];
  bit_names(buf, sizeof buf, missing, names, count);
  milter_ctx_log(ctx, MILTER_LOG_ERROR,
                 "refusing MTA: required %s %s not offered (MTA offers "
                 "0x%x)",
                 what, buf, offered);
  return MILTER_E_NEGOTIATE;
}

static int negotiate(milter_ctx *ctx, const milter_optneg *o) {
  const milter_filter_desc *d = ctx->desc;
  if (o->version < MILTER_PROTO_VERSION_MIN) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR,
                   "refusing MTA: protocol version %u < %u", o->version,
                   MILTER_PROTO_VERSION_MIN);
    return MILTER_E_NEGOTIATE;
  }
  uint32_t v =
      o->version > MILTER_PROTO_VERSION ? MILTER_PROTO_VERSION : o->version;
  /* st_optionneg(): zero means the v1 defaults. */
  uint32_t mta_act = o->actions ? o->actions : 0x0Fu;
  uint32_t mta_proto = o->protocol ? o->protocol : 0x3Fu;
  uint32_t mds = mta_proto & (MILTER_P_MDS_256K | MILTER_P_MDS_1M);
  /* Never answer with bits the MTA's version does not know. */
  if (v == 2) {
    mta_act &= MILTER_ACT_V2;
    mta_proto &= 0x7Fu;
  } else if (v < 6) {
    mta_act &= MILTER_ACT_V2;
    mta_proto &= v == 3 ? 0x17Fu : 0x37Fu;
  }
  mta_proto &= MILTER_P_ALL_STEPS;
  mta_act &= MILTER_ACT_ALL;

  uint32_t missing = d->actions_required & ~mta_act;
  if (missing)
    return refuse(ctx, "actions", missing, mta_act, act_names, 9);
  /* NR_* can always be faked, as libmilter does (fake_pflags). */
  missing =
      d->protocol_required & MILTER_P_ALL_STEPS & ~MILTER_P_ALL_NR & ~mta_proto;
  if (missing)
    return refuse(ctx, "protocol steps", missing, mta_proto, proto_names, 21);

  uint32_t act = (d->actions_required | d->actions_wanted) & mta_act;
  int want_macros = 0;
  for (int i = 0; i < MILTER_M_COUNT; i++)
    if (d->macros[i] != NULL && d->macros[i][0] != '\0')
      want_macros = 1;
  if (want_macros && (mta_act & MILTER_ACT_SETSYMLIST))
    act |= MILTER_ACT_SETSYMLIST;
  else
    act &= ~MILTER_ACT_SETSYMLIST;

  uint32_t want =
      ((d->protocol_required | d->protocol_wanted) & MILTER_P_ALL_STEPS) |
      no_bits(&d->cb);
  /* SMFIS_ALL_OPTS: SKIP whenever the MTA supports it. */
  if (d->cb.body != NULL && (mta_proto & MILTER_P_SKIP))
    want |= MILTER_P_SKIP;
  uint32_t send = want & mta_proto;

  uint32_t fmax = d->max_data_size ? d->max_data_size : MILTER_DATA_64K;
  uint32_t size = MILTER_DATA_64K, mdsbit = 0;
  if ((mds & MILTER_P_MDS_1M) && fmax >= MILTER_DATA_1M) {
    size = MILTER_DATA_1M;
    mdsbit = MILTER_P_MDS_1M;
  } else if (mds && fmax >= MILTER_DATA_256K) {
    size = MILTER_DATA_256K;
    mdsbit = MILTER_P_MDS_256K;
  }

  ctx->version = (uint8_t)v;
  ctx->actions = act;
  ctx->protocol = send | mdsbit;
  ctx->skip_states = (uint16_t)skip_states_of(want);
  int rc =
      milter_enc_optneg_reply(&ctx->out, v, act, ctx->protocol,
                              (act & MILTER_ACT_SETSYMLIST) ? d->macros : NULL);
  if (rc < 0)
    return rc;
  /* The decoder's limit is now the hard cap (max_len). */
  ctx->negotiated = 1;
  milter_ctx_log(ctx, MILTER_LOG_DEBUG,
                 "negotiated v%u actions 0x%x protocol 0x%x data %u (MTA v%u "
                 "actions 0x%x protocol 0x%x)",
                 v, act, ctx->protocol, size, o->version, o->actions,
                 o->protocol);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */

/* sendreply(): the custom reply is used only when its class matches the
 * status (5xx with REJECT, 4xx with TEMPFAIL). */
static int reply_matches(const milter_ctx *ctx, milter_status st) {
  const uint8_t *r = ctx->msg != NULL ? ctx->msg->reply : NULL;
  return r != NULL && ((st == MILTER_REJECT && r[5] == '5') ||
                       (st == MILTER_TEMPFAIL && r[5] == '4'));
}

static void append_status(milter_ctx *ctx, uint8_t cmd, milter_status st) {
  uint8_t code;
  switch (st) {
  case MILTER_CONTINUE:
    code = MILTER_REPLY_CONTINUE;
    break;
  case MILTER_ACCEPT:
    code = MILTER_REPLY_ACCEPT;
    break;
  case MILTER_DISCARD:
    code = MILTER_REPLY_DISCARD;
    break;
  case MILTER_SKIP:
    code = MILTER_REPLY_SKIP;
    break;
  case MILTER_REJECT:
    code = MILTER_REPLY_REJECT;
    break;
  case MILTER_TEMPFAIL:
    code = MILTER_REPLY_TEMPFAIL;
    break;
  default:
    milter_ctx_log(ctx, MILTER_LOG_ERROR,
                   "callback for %s returned invalid status %d: tempfail",
                   milter_cmd_name(cmd), (int)st);
    code = MILTER_REPLY_TEMPFAIL;
    st = MILTER_TEMPFAIL;
  }
  if (reply_matches(ctx, st)) {
    int rc = milter_buf_append(&ctx->out, ctx->msg->reply, ctx->msg->reply_len);
    clear_reply(ctx);
    if (rc == 0)
      return;
  }
  if (milter_enc_reply_simple(&ctx->out, code) < 0)
    milter_session_oom(ctx, "a reply");
}

/* Out of memory where losing the data would change what the MTA is told
 * (a reply, the actions, the macros a callback reads): close the
 * connection; the MTA applies its default action at once. */
void milter_session_oom(milter_ctx *ctx, const char *what) {
  if (!ctx->close_req)
    milter_ctx_log(ctx, MILTER_LOG_ERROR, "closing: out of memory for %s",
                   what);
  ctx->close_req = 1;
}

static int is_failure(milter_status st) {
  return st == MILTER_REJECT || st == MILTER_DISCARD || st == MILTER_TEMPFAIL;
}

/* mi_engine(): after ACCEPT, and after REJECT/DISCARD/TEMPFAIL of any
 * command but RCPT and UNKNOWN (CT_IGNO), the message is over for the MTA
 * and the next stage is HELO. */
static int ends_message(uint8_t cmd, milter_status st) {
  return st == MILTER_ACCEPT ||
         (is_failure(st) && cmd != MILTER_CMD_RCPT && cmd != MILTER_CMD_UNKNOWN);
}

/* Send the reply to cmd (the MTA waits for one, or NR was negotiated and st
 * is CONTINUE/NOREPLY/SKIP: nothing is sent). */
static void emit(milter_ctx *ctx, uint8_t cmd, milter_status st) {
  if (nr_bit(cmd) & ctx->protocol)
    return; /* the MTA waits for nothing: sending would desynchronise it */
  size_t mark = ctx->out.len; /* where this reply starts */
  /* NOREPLY where the MTA expects a reply (NR faked, or never asked for):
   * CONTINUE, as libmilter's sendreply() fakes it.  DEVIATION: with a faked
   * NR bit libmilter also turns REJECT etc. into CONTINUE; the MTA waits for
   * a reply anyway, so we send the real one. */
  if (st == MILTER_NOREPLY)
    st = MILTER_CONTINUE;
  if (st == MILTER_SKIP &&
      !(cmd == MILTER_CMD_BODY && (ctx->protocol & MILTER_P_SKIP)))
    st = MILTER_CONTINUE;
  if (cmd == MILTER_CMD_EOB) {
    if (is_failure(st)) {
      /* The message is refused: its changes mean nothing. */
      if ((ctx->msg != NULL && ctx->msg->acts.len > 0) || ctx->has_newbody)
        milter_ctx_log(ctx, MILTER_LOG_DEBUG,
                       "queued actions dropped: end of message answered %s",
                       status_name(st));
      milter_actions_clear(ctx);
    } else if (milter_actions_flush(ctx) < 0) {
      /* Some changes but not all would reach the MTA: none must. */
      ctx->out.len = mark;
      milter_session_oom(ctx, "the end-of-message actions");
      return;
    }
  }
  append_status(ctx, cmd, st);
  if (ctx->close_req)
    ctx->out.len = mark;
}

/* The reply st to cmd and the state it leaves. */
static void finish_reply(milter_ctx *ctx, uint8_t cmd, milter_status st) {
  emit(ctx, cmd, st);
  if (cmd == MILTER_CMD_EOB) {
    /* The message ended normally: its state goes, no abort callback. */
    ctx->in_msg = 0;
    ctx->in_eom = 0;
    milter_actions_clear(ctx);
    milter_macros_clear(ctx, MAC_MAIL);
    clear_reply(ctx);
  }
  /* The message stays "in progress" for us until ABORT/MAIL/close, so that
   * the abort callback still runs exactly once. */
  if (ends_message(cmd, st))
    ctx->state = MST_HELO;
}

/* A final status for a command whose reply was negotiated away: keep it for
 * the next command that gets a reply (see "Deferred status" above). */
static void defer(milter_ctx *ctx, uint8_t cmd, milter_status st) {
  if (!is_failure(st) && st != MILTER_ACCEPT) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR,
                   "callback for %s returned invalid status %d: tempfail",
                   milter_cmd_name(cmd), (int)st);
    st = MILTER_TEMPFAIL;
  }
  if (cmd == MILTER_CMD_UNKNOWN) {
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "status %s for %s dropped: no reply was negotiated and "
                   "it concerns that command only",
                   status_name(st), milter_cmd_name(cmd));
    return;
  }
  if (ctx->deferred)
    return; /* no callback runs once deferred: cannot happen */
  ctx->deferred = (uint8_t)st;
  ctx->deferred_cmd = cmd;
  ctx->deferred_conn = cmd == MILTER_CMD_CONNECT || cmd == MILTER_CMD_HELO;
  ctx->deferred_told = 0;
  /* The custom reply goes with it when it would be used with st. */
  if (reply_matches(ctx, st)) { /* then there is a block */
    struct milter_msg *m = ctx->msg;
    m->deferred_reply = m->reply;
    m->deferred_reply_len = m->reply_len;
    m->reply = NULL;
    m->reply_len = 0;
  }
  milter_ctx_log(ctx, MILTER_LOG_WARNING,
                 "%s at %s kept: no reply was negotiated there; it answers "
                 "the next command that gets one (%s)",
                 status_name(st), milter_cmd_name(cmd),
                 ctx->deferred_conn ? "connection-wide" : "this message");
}

/* cmd gets a reply and a status is deferred: that is the reply. */
static void deliver_deferred(milter_ctx *ctx, uint8_t cmd) {
  milter_status st = (milter_status)ctx->deferred;
  if (!ctx->deferred_told) {
    ctx->deferred_told = 1;
    milter_ctx_log(ctx, MILTER_LOG_INFO, "deferred %s (from %s) answers %s",
                   status_name(st), milter_cmd_name(ctx->deferred_cmd),
                   milter_cmd_name(cmd));
  }
  /* A deferred custom reply is in the message block, which stays while
   * this command is handled (milter_msg_trim runs after it). */
  struct milter_msg *m = ctx->msg;
  const uint8_t *kept = m != NULL ? m->deferred_reply : NULL;
  uint8_t *rep = NULL;
  uint32_t rep_len = kept != NULL ? m->deferred_reply_len : 0;
  int last = !ctx->deferred_conn && (cmd == MILTER_CMD_EOB ||
                                     ends_message(cmd, st));
  if (last) {
    if (kept != NULL) { /* taken */
      rep = m->deferred_reply;
      m->deferred_reply = NULL;
      m->deferred_reply_len = 0;
    }
    drop_deferred(ctx, NULL);
  } else if (kept != NULL && (rep = xmalloc(rep_len)) != NULL) {
    memcpy(rep, kept, rep_len);
  } else if (kept != NULL) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR,
                   "out of memory for a custom reply: plain %s sent",
                   status_name(st));
  }
  /* The eom callback did not run: the message ends without it. */
  if (cmd == MILTER_CMD_EOB)
    end_message(ctx, MAC_MAIL);
  if (rep != NULL) {
    clear_reply(ctx);
    m->reply = rep;
    m->reply_len = rep_len;
  }
  finish_reply(ctx, cmd, st);
  if (rep != NULL)
    clear_reply(ctx); /* not used (class mismatch): not for later */
}

void milter_session_finish(milter_ctx *ctx, uint8_t cmd, milter_status st) {
  if (st == MILTER_PENDING) {
    ctx->pending = cmd;
    /* The slot of the milter_ctx_post() that usually hands the reply back
     * (post.h) is in the message block: have one while the reply is
     * pending (a message has one already, with its MAIL macros).  Without
     * it the post allocates its item. */
    if (ctx->msg == NULL)
      (void)milter_msg_get(ctx);
    return;
  }
  if (st == MILTER_CLOSE) {
    /* No reply: the MTA sees the connection end and applies its
     * milter_default_action (Postfix) / F= flags (Sendmail). */
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "closing: the filter dropped the connection at %s",
                   milter_cmd_name(cmd));
    ctx->close_req = 1;
    milter_actions_clear(ctx);
    return;
  }
  if ((nr_bit(cmd) & ctx->protocol) && st != MILTER_CONTINUE &&
      st != MILTER_NOREPLY && st != MILTER_SKIP) {
    defer(ctx, cmd, st);
    return;
  }
  finish_reply(ctx, cmd, st);
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */
/* ------------------------------------------------------------------------ */

static milter_status call_args(milter_ctx *ctx, const milter_strlist *l,
                               milter_status (*fn)(milter_ctx *, size_t,
                                                   const char *const *)) {
  const char *stackv[32];
  const char **argv = stackv;
  size_t n = l->count ? l->count : 1;
  if (n > 32) {
    argv = xmalloc(n * sizeof *argv);
    if (argv == NULL) {
      milter_ctx_log(ctx, MILTER_LOG_ERROR, "out of memory for arguments");
      return MILTER_TEMPFAIL;
    }
  }
  const char *cur = NULL, *s;
  size_t i = 0;
  while (i < n && (s = milter_strlist_next(l, &cur)) != NULL)
    argv[i++] = s;
  if (i == 0)
    argv[i++] = "";
  milter_status st = fn(ctx, i, argv);
  if (argv != stackv)
    free(argv);
  return st;
}

static milter_status dispatch(milter_ctx *ctx, const milter_cmd *c,
                              const milter_packet *pkt) {
  const milter_callbacks *cb = &ctx->desc->cb;
  ctx->closed = 0;
  switch (c->code) {
  case MILTER_CMD_CONNECT:
    milter_macros_clear(ctx, MAC_HELO); /* st_connectinfo() */
    return cb->connect ? cb->connect(ctx, &c->u.connect) : MILTER_CONTINUE;
  case MILTER_CMD_HELO:
    end_message(ctx, MAC_MAIL);
    milter_macros_clear(ctx, MAC_MAIL); /* st_helo() */
    return cb->helo ? cb->helo(ctx, c->u.helo) : MILTER_CONTINUE;
  case MILTER_CMD_MAIL:
    /* A new MAIL while a message is in progress (Postfix after a rejected
     * or accepted message, or MAIL after RCPT): implicit abort. */
    end_message(ctx, MAC_RCPT);
    milter_macros_clear(ctx, MAC_RCPT); /* st_sender() */
    ctx->in_msg = 1;
    return cb->envfrom ? call_args(ctx, &c->u.args, cb->envfrom)
                       : MILTER_CONTINUE;
  case MILTER_CMD_RCPT:
    milter_macros_clear(ctx, MAC_DATA); /* st_rcpt() */
    ctx->in_msg = 1;
    return cb->envrcpt ? call_args(ctx, &c->u.args, cb->envrcpt)
                       : MILTER_CONTINUE;
  case MILTER_CMD_DATA:
    ctx->in_msg = 1;
    return cb->data ? cb->data(ctx) : MILTER_CONTINUE;
  case MILTER_CMD_HEADER:
    ctx->in_msg = 1;
    return cb->header ? cb->header(ctx, c->u.header.name, c->u.header.value)
                      : MILTER_CONTINUE;
  case MILTER_CMD_EOH:
    ctx->in_msg = 1;
    return cb->eoh ? cb->eoh(ctx) : MILTER_CONTINUE;
  case MILTER_CMD_BODY:
    ctx->in_msg = 1;
    return cb->body ? cb->body(ctx, c->u.body.data, c->u.body.len)
                    : MILTER_CONTINUE;
  case MILTER_CMD_EOB:
    ctx->in_msg = 1;
    /* st_bodyend(): a payload with EOB is a last body chunk. */
    if (pkt->len > 0 && cb->body != NULL) {
      milter_status st = cb->body(ctx, pkt->data, pkt->len);
      if (st != MILTER_CONTINUE)
        return st;
    }
    ctx->in_eom = 1;
    if (ctx->env->eom_count != NULL) /* read by another loop: STATUS= */
      __atomic_fetch_add(ctx->env->eom_count, 1, __ATOMIC_RELAXED);
    return cb->eom ? cb->eom(ctx) : MILTER_CONTINUE;
  default: /* MILTER_CMD_UNKNOWN */
    return cb->unknown ? cb->unknown(ctx, c->u.unknown) : MILTER_CONTINUE;
  }
}

static int on_packet(milter_ctx *ctx, const milter_packet *pkt) {
  milter_cmd c;
  const char *why = NULL;
  if (milter_parse_cmd(pkt, &c, &why) < 0) {
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "closing: malformed %s (0x%02x, %u bytes) from MTA: %s",
                   milter_cmd_name(pkt->cmd), pkt->cmd, pkt->len,
                   why ? why : "invalid");
    return MILTER_E_PROTO;
  }
  switch (c.code) {
  case MILTER_CMD_MACRO: {
    /* st_macros(): allowed in any stage; an unknown command code is
     * ignored (libmilter fails the packet without reply). */
    static const char codes[MAC_COUNT] = {'C', 'H', 'M', 'R', 'T', 'N', 'E'};
    const char *hit = memchr(codes, c.u.macro.for_cmd, sizeof codes);
    if (hit != NULL && c.u.macro.for_cmd != 0)
      milter_macros_store(ctx, (int)(hit - codes), c.u.macro.pairs.p,
                          c.u.macro.pairs.len);
    return 0;
  }
  case MILTER_CMD_OPTNEG:
    if (ctx->state != MST_INIT) {
      /* trans_ok() fails from any stage but INIT: ignored, no reply. */
      milter_ctx_log(ctx, MILTER_LOG_WARNING, "ignoring repeated SMFIC_OPTNEG");
      return 0;
    }
    ctx->state = MST_OPTS;
    return negotiate(ctx, &c.u.optneg);
  default:
    break;
  }
  if (!ctx->negotiated) {
    /* DEVIATION: libmilter would jump to HELO and serve commands without
     * negotiation; without it we know neither version nor reply rules. */
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "closing: %s before option negotiation",
                   milter_cmd_name(c.code));
    return MILTER_E_PROTO;
  }
  switch (c.code) {
  case MILTER_CMD_QUIT:
    /* libmilter accepts QUIT after EOM or UNKNOWN and ignores it elsewhere,
     * then sees EOF (the MTA closes) and closes the same way: abort if in a
     * message, then close.  We do that at once. */
    close_conn_state(ctx);
    return MILTER_E_EOF;
  case MILTER_CMD_QUIT_NC:
    /* st_quit(): close callback, macros cleared, connection state reset; a
     * new CONNECT follows on this socket.  DEVIATION: libmilter accepts it
     * only after EOM/UNKNOWN (ignored elsewhere, which would then make it
     * ignore the following CONNECT too); the MTA means it, so we take it
     * anywhere. */
    close_conn_state(ctx);
    ctx->state = MST_Q_NC;
    return 0;
  case MILTER_CMD_ABORT:
    /* st_abortfct(): abort callback, no reply.  After ABORT libmilter's
     * stage is ABRT, whose successors are found from HELO.  Postfix sends
     * ABORT after every message, sometimes twice: libmilter ignores those
     * (not reachable from ENDM/HELO); we reset the message once, when one
     * is in progress (also after a reject, where libmilter never calls
     * xxfi_abort). */
    end_message(ctx, MAC_MAIL);
    ctx->state = MST_HELO;
    return 0;
  default:
    break;
  }
  int to = stage_of(c.code);
  if (!trans_ok(ctx, ctx->state, to)) {
    int from = ctx->state;
    /* mi_engine(): abort the message in progress, retry from HELO. */
    end_message(ctx, c.code == MILTER_CMD_MAIL ? MAC_RCPT : MAC_MAIL);
    ctx->state = MST_HELO;
    if (!trans_ok(ctx, MST_HELO, to)) {
      milter_ctx_log(ctx, MILTER_LOG_WARNING,
                     "ignoring out-of-order %s in stage %s (no reply, as "
                     "libmilter does)",
                     milter_cmd_name(c.code), stage_names[from]);
      return 0;
    }
  }
  ctx->state = (uint8_t)to;
  if (ctx->deferred) {
    /* A new message (or session) drops a message's deferred status. */
    if (!ctx->deferred_conn &&
        (c.code == MILTER_CMD_MAIL || c.code == MILTER_CMD_HELO))
      drop_deferred(ctx, MSG_ENDED);
    if (ctx->deferred) {
      /* No callback: swallowed, or answered with the deferred status. */
      if (!(nr_bit(c.code) & ctx->protocol))
        deliver_deferred(ctx, c.code);
      return 0;
    }
  }
  milter_status st = dispatch(ctx, &c, pkt);
  if ((pkt->frag & MILTER_FRAG_MORE) && st == MILTER_PENDING) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR,
                   "body callback returned PENDING for a streamed piece: "
                   "answering TEMPFAIL");
    st = MILTER_TEMPFAIL;
  }
  if (pkt->frag & MILTER_FRAG_MORE) {
    /* The first piece of a streamed BODY packet: its reply comes after the
     * last piece. */
    ctx->frag = FRAG_ACTIVE;
    ctx->frag_st = (uint8_t)st;
    return 0;
  }
  milter_session_finish(ctx, c.code, st);
  return 0;
}

/* A later piece of a streamed BODY packet (MILTER_DESC_STREAM_BODY).  The
 * body callback sees each piece until one returns something other than
 * CONTINUE/NOREPLY; that status (or the last one) answers the packet. */
static void on_body_piece(milter_ctx *ctx, const milter_packet *pkt) {
  if (ctx->frag == FRAG_ACTIVE) {
    milter_status st = (milter_status)ctx->frag_st;
    if ((st == MILTER_CONTINUE || st == MILTER_NOREPLY) && pkt->len > 0 &&
        ctx->desc->cb.body != NULL) {
      st = ctx->desc->cb.body(ctx, pkt->data, pkt->len);
      if (st == MILTER_PENDING) {
        /* Documented as not allowed with MILTER_DESC_STREAM_BODY. */
        milter_ctx_log(ctx, MILTER_LOG_ERROR,
                       "body callback returned PENDING for a streamed "
                       "piece: answering TEMPFAIL");
        st = MILTER_TEMPFAIL;
      }
      ctx->frag_st = (uint8_t)st;
    }
  }
  if (!(pkt->frag & MILTER_FRAG_MORE)) {
    if (ctx->frag == FRAG_ACTIVE)
      milter_session_finish(ctx, MILTER_CMD_BODY,
                            (milter_status)ctx->frag_st);
    ctx->frag = FRAG_NONE;
  }
}

/* ------------------------------------------------------------------------ */
/* Held input                                                               */
/* ------------------------------------------------------------------------ */

/* Between whole packets a decoder holds only its limit and stream_cmd, both
 * given by the ctx: a feed decodes with a decoder on its stack, and
 * ctx->in (decoder and backlog) is allocated only when a packet is left in
 * part or input arrives while a reply is pending.  It stays while a
 * message is in progress (one allocation per message at most) and goes
 * once it holds nothing outside one: an idle connection has none. */

/* The largest packet accepted: until OPTNEG only a small one may come;
 * after it, packets above the negotiated size are tolerated (Postfix sends
 * long header values unasked) up to the hard cap. */
static uint32_t max_len(const milter_ctx *ctx) {
  uint32_t cap =
      ctx->env->hard_cap ? ctx->env->hard_cap : MILTER_DEFAULT_HARD_CAP;
  if (!ctx->negotiated && cap > MILTER_DATA_64K + 1)
    cap = MILTER_DATA_64K + 1;
  return cap;
}

static void decoder_start(const milter_ctx *ctx, milter_decoder *d) {
  milter_decoder_init(d, max_len(ctx));
  if (ctx->desc->flags & MILTER_DESC_STREAM_BODY)
    d->stream_cmd = MILTER_CMD_BODY;
}

/* ctx->in, allocated if there is none yet (its decoder idle); NULL when
 * out of memory. */
static struct milter_input *input_get(milter_ctx *ctx) {
  if (ctx->in == NULL && (ctx->in = xmalloc(sizeof *ctx->in)) != NULL) {
    milter_buf_init(&ctx->in->backlog);
    decoder_start(ctx, &ctx->in->dec);
  }
  return ctx->in;
}

/* Free ctx->in when it holds nothing and no message is in progress. */
static void input_trim(milter_ctx *ctx) {
  struct milter_input *in = ctx->in;
  if (in == NULL || ctx->in_msg || in->backlog.len != 0 ||
      milter_decoder_busy(&in->dec))
    return;
  milter_buf_free(&in->backlog);
  milter_decoder_free(&in->dec);
  free(in);
  ctx->in = NULL;
}

/* Keep n input bytes unprocessed (a reply is pending): 0 or
 * MILTER_E_NOMEM. */
static int hold(milter_ctx *ctx, const uint8_t *p, size_t n) {
  struct milter_input *in = input_get(ctx);
  return in != NULL ? milter_buf_append(&in->backlog, p, n) : MILTER_E_NOMEM;
}

/* End of a feed that decoded with d (local: the stack's, when there was no
 * ctx->in): keep what must be kept, drop the rest.  Returns r, or
 * MILTER_E_NOMEM when a partial packet cannot be kept. */
static int feed_end(milter_ctx *ctx, milter_decoder *d, int r) {
  struct milter_input *in = ctx->in;
  if (r >= 0 && milter_decoder_busy(d)) {
    if (in != NULL && d == &in->dec)
      return r;
    if ((in = input_get(ctx)) == NULL) {
      milter_decoder_free(d);
      milter_ctx_log(ctx, MILTER_LOG_ERROR,
                     "closing: out of memory for a partial packet");
      return MILTER_E_NOMEM;
    }
    in->dec = *d; /* its partial packet moves with it */
    return r;
  }
  /* Between packets: the last packet's buffer, if any, is no longer
   * needed (its callback has returned). */
  if (d->part != NULL)
    milter_decoder_free(d);
  input_trim(ctx);
  return r;
}

int milter_session_feed(milter_ctx *ctx, const uint8_t *buf, size_t len) {
  if (ctx->pending)
    return hold(ctx, buf, len) < 0 ? MILTER_E_NOMEM : MILTER_SESSION_PAUSED;
  milter_decoder local, *d = &local;
  if (ctx->in != NULL)
    d = &ctx->in->dec;
  else
    decoder_start(ctx, &local);
  size_t off = 0;
  int r = 0;
  while (off < len) {
    size_t used = 0;
    milter_packet pkt;
    r = milter_decoder_feed(d, buf + off, len - off, &used, &pkt);
    off += used;
    if (r == 0)
      break;
    if (r < 0) {
      if (r == MILTER_E_TOOBIG)
        milter_ctx_log(ctx, MILTER_LOG_WARNING,
                       "closing: packet length %u over the limit %u", d->need,
                       d->max_len);
      else if (r == MILTER_E_PROTO)
        milter_ctx_log(ctx, MILTER_LOG_WARNING, "closing: zero-length packet");
      else
        milter_ctx_log(ctx, MILTER_LOG_ERROR, "closing: %s",
                       milter_strerror(r));
      break;
    }
    r = 0;
    if (pkt.frag & MILTER_FRAG_CONT) {
      on_body_piece(ctx, &pkt);
    } else {
      if (d->need > MILTER_DATA_64K + 1 && ctx->negotiated &&
          d->need > milter_data_size(ctx) + 1)
        milter_ctx_log(ctx, MILTER_LOG_DEBUG,
                       "%s of %u bytes over the negotiated size %u "
                       "(tolerated)",
                       milter_cmd_name(pkt.cmd), d->need - 1,
                       milter_data_size(ctx));
      r = on_packet(ctx, &pkt);
      if (r < 0)
        break;
      if (pkt.cmd == MILTER_CMD_OPTNEG)
        milter_decoder_set_max(d, max_len(ctx));
      if ((pkt.frag & MILTER_FRAG_MORE) && ctx->frag != FRAG_ACTIVE &&
          !ctx->pending)
        ctx->frag = FRAG_IGNORE; /* not taken (out of order ...): skip */
    }
    if (ctx->msg != NULL && !ctx->in_msg)
      milter_msg_trim(ctx);
    if (ctx->close_req) {
      r = MILTER_E_CLOSED;
      break;
    }
    if (ctx->pending) {
      r = off < len && hold(ctx, buf + off, len - off) < 0
              ? MILTER_E_NOMEM
              : MILTER_SESSION_PAUSED;
      break;
    }
  }
  return feed_end(ctx, d, r);
}

int milter_session_resume(milter_ctx *ctx) {
  if (ctx->close_req)
    return MILTER_E_CLOSED;
  if (ctx->pending)
    return MILTER_SESSION_PAUSED;
  if (ctx->in == NULL || ctx->in->backlog.len == 0) {
    input_trim(ctx); /* a pending end of message may have kept it */
    return 0;
  }
  milter_buf b = ctx->in->backlog;
  milter_buf_init(&ctx->in->backlog);
  int r = milter_session_feed(ctx, b.data, b.len);
  milter_buf_free(&b);
  return r;
}
