/*
 * session.h -- the milter-side session state machine (internal, sans-I/O).
 *
 * A session is fed raw bytes read from the MTA (milter_session_feed), decodes
 * them, checks each command against the stage (libmilter's engine.c is the
 * reference for what is tolerated), answers option negotiation, keeps the
 * macros, calls the filter's callbacks and appends every reply to ctx->out.
 * It never touches a socket: the libuv server (server_uv.c) and the tests
 * are the glue that moves bytes in and out.
 *
 * The session is the milter_ctx handed to callbacks; the glue embeds it.
 *
 * Glue contract:
 *   - after every feed/resume/wake, write ctx->out (and empty it);
 *   - feed returning MILTER_SESSION_PAUSED: a reply is PENDING; stop reading
 *     (unprocessed bytes are kept in the session); when env->wake is called,
 *     call milter_session_resume() later from the loop (never from inside
 *     wake: wake may run inside user code);
 *   - a negative return: close the connection, then milter_session_gone();
 *   - when the MTA vanishes, call milter_session_gone(); if it returns 1 the
 *     ctx waits for its pending reply: keep it until wake, then call
 *     milter_session_gone() again, which then returns 0;
 *   - after gone() returned 0, milter_session_free().
 */
#ifndef MF_CORE_SESSION_H
#define MF_CORE_SESSION_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <mailfilter/milter.h>

#include "post.h"

/* Per-server (or per-test) environment shared by its sessions. */
typedef struct milter_session_env {
  milter_server *server;
  /* Output queued or a pending reply completed outside a feed call. */
  void (*wake)(milter_ctx *ctx);
  /* The poster behind milter_ctx_post (see post.h), or NULL. */
  struct milter_poster *poster;
  milter_log_fn log;
  void *log_data;
  milter_log_level log_level;
  uint32_t hard_cap; /* largest packet accepted (0 = default) */
  /* Counted up at each end-of-message command given to the filter (the
   * server's STATUS=), or NULL. */
  uint64_t *eom_count;
} milter_session_env;

/* Libmilter's stages (engine.c ST_*), same numbering. */
enum milter_stage {
  MST_INIT = 0,
  MST_OPTS,
  MST_CONN,
  MST_HELO,
  MST_MAIL,
  MST_RCPT,
  MST_DATA,
  MST_HDRS,
  MST_EOHS,
  MST_BODY,
  MST_ENDM,
  MST_QUIT,
  MST_ABRT,
  MST_UNKN,
  MST_Q_NC,
  MST_COUNT
};

/* Macro storage, chronological order (newest stage searched first). */
enum {
  MAC_CONN,
  MAC_HELO,
  MAC_MAIL,
  MAC_RCPT,
  MAC_DATA,
  MAC_EOH,
  MAC_EOM,
  MAC_COUNT
};

/* What only a message needs (and a custom reply, which is mostly a
 * message's): allocated when first needed -- the MAIL macros, usually --
 * and freed once the message is over and it is empty (milter_msg_trim), so
 * that an idle connection carries none of it (bench/MEMORY.md). */
struct milter_msg {
  /* SMFIC_MACRO copies of stages MAC_MAIL.. (see milter_ctx.macros). */
  char *macros[MAC_COUNT - MAC_MAIL];
  milter_buf acts;         /* queued end-of-message actions (encoded) */
  milter_buf newbody;      /* replacement body bytes */
  uint8_t *reply;          /* encoded custom SMFIR_REPLYCODE packet */
  uint8_t *deferred_reply; /* the one kept with a deferred status */
  uint32_t reply_len;
  uint32_t deferred_reply_len;
  /* milter_ctx_post() without allocating (post.c): the slot of a decision
   * handed back while a reply is pending, which keeps the block (see
   * milter_session_finish and milter_msg_trim); busy while queued. */
  struct milter_post_item post_slot;
  atomic_int post_busy;
};

/* Input kept between feeds: the bytes that arrived while a reply was
 * pending, and the decoder while a packet has arrived in part.  Between
 * whole packets the decoder holds nothing that the ctx does not say (its
 * limit, its stream_cmd): a feed then decodes with one on its stack, and
 * this block exists only while there is something to keep (session.c,
 * "Held input"). */
struct milter_input {
  milter_buf backlog; /* unprocessed input while a reply is pending */
  milter_decoder dec;
};

struct milter_ctx {
  const milter_filter_desc *desc;
  const milter_session_env *env;
  void *glue;         /* the server connection, or the test harness */
  void *user_data;    /* milter_ctx_set_data */
  milter_buf out;     /* bytes to send to the MTA */
  struct milter_input *in; /* NULL unless input is held (session.c) */
  /* The CONNECT and HELO stages' SMFIC_MACRO payload: a 4-byte length
   * (host order), then the copy of name\0value\0... (macros.c), or NULL.
   * Later stages' are in msg. */
  char *macros[MAC_MAIL];
  struct milter_msg *msg; /* NULL when no message state is held */
  const char *peer; /* as given to milter_session_init (not copied) */
  /* Negotiated with the MTA.  protocol holds the NR_* bits the MTA agreed
   * to (it waits for nothing: milter_nr_sent) and the MDS bit of the data
   * size (milter_data_size). */
  uint32_t actions, protocol;
  uint16_t skip_states; /* MASK of stages NO* allows to skip (fix_stm) */
  uint8_t version;
  uint8_t state;   /* enum milter_stage */
  uint8_t pending; /* command whose reply is PENDING, or 0 */
  uint8_t frag;    /* a streamed BODY packet: FRAG_* (session.c) */
  uint8_t frag_st; /* its status so far (milter_status) */
  /* A final status returned for a command whose reply was negotiated away
   * (session.c, "Deferred status"): 0 (none) or the milter_status, and the
   * command it came from; the custom reply kept with it is in msg. */
  uint8_t deferred;
  uint8_t deferred_cmd;
  unsigned negotiated : 1;
  unsigned in_msg : 1;      /* a message is in progress (reset exactly once) */
  unsigned in_eom : 1;      /* eom callback running or its reply pending */
  unsigned has_newbody : 1; /* replacebody called (even with 0 bytes) */
  unsigned gone : 1;        /* the MTA connection is closed */
  unsigned closed : 1;      /* close callback has run for this connect */
  unsigned close_req : 1;   /* the filter returned MILTER_CLOSE */
  unsigned deferred_conn : 1; /* deferred at CONNECT/HELO: whole connection */
  unsigned deferred_told : 1; /* its delivery was logged */
};

/* The NR_* bits the MTA agreed to (a subset of ctx->protocol). */
static inline uint32_t milter_nr_sent(const milter_ctx *ctx) {
  return ctx->protocol & MILTER_P_ALL_NR;
}

/* The negotiated data size, from the MDS bit in ctx->protocol (64K before
 * negotiation). */
static inline uint32_t milter_data_size(const milter_ctx *ctx) {
  if (ctx->protocol & MILTER_P_MDS_1M)
    return MILTER_DATA_1M;
  return (ctx->protocol & MILTER_P_MDS_256K) ? MILTER_DATA_256K
                                             : MILTER_DATA_64K;
}

#define MILTER_SESSION_PAUSED 1

/* peer (for log lines and milter_ctx_peer) is kept by pointer: it must
 * outlive the session (the server keeps it in the connection's block). */
void milter_session_init(milter_ctx *ctx, const milter_filter_desc *desc,
                         const milter_session_env *env, void *glue,
                         const char *peer);
/* Feed bytes read from the MTA.  Returns 0 (all consumed, read on),
 * MILTER_SESSION_PAUSED (a reply is pending; the rest is kept), or a negative
 * error: close the connection (the reason has been logged; MILTER_E_EOF
 * after QUIT is not an error). */
int milter_session_feed(milter_ctx *ctx, const uint8_t *buf, size_t len);
/* Process input kept while a reply was pending.  Same returns as feed. */
int milter_session_resume(milter_ctx *ctx);
/* A reply is pending (reading must stay stopped). */
int milter_session_paused(const milter_ctx *ctx);
/* Bytes of input kept unprocessed while a reply is pending. */
size_t milter_session_held_input(const milter_ctx *ctx);
/* A packet has arrived in part (its first bytes, not all of it). */
int milter_session_mid_packet(const milter_ctx *ctx);
/* A message is in progress or a reply pending (drain on stop). */
int milter_session_busy(const milter_ctx *ctx);
/* The MTA connection is gone.  Returns 1 while a reply is pending (keep the
 * ctx), 0 once abort/close callbacks have run. */
int milter_session_gone(milter_ctx *ctx);
void milter_session_free(milter_ctx *ctx);

/* ---- helpers shared inside core ---- */
void milter_logv(const milter_session_env *env, milter_log_level level,
                 const char *fmt, va_list ap);
void milter_logf(const milter_session_env *env, milter_log_level level,
                 const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Macro lookup in the session (macros.c). */
void milter_macros_store(milter_ctx *ctx, int stage, const char *p, size_t len);
void milter_macros_clear(milter_ctx *ctx, int from_stage);
/* ctx->msg, allocated (zeroed) if there is none yet; NULL when out of
 * memory (ctx.c). */
struct milter_msg *milter_msg_get(milter_ctx *ctx);
/* Free ctx->msg when no message is in progress and it holds nothing
 * (ctx.c); called once a command has been handled, never in the middle. */
void milter_msg_trim(milter_ctx *ctx);
/* End-of-message actions (actions.c): flush queue into out; drop queue. */
int milter_actions_flush(milter_ctx *ctx);
void milter_actions_clear(milter_ctx *ctx);
/* Out of memory for what: log, and close the connection (session.c). */
void milter_session_oom(milter_ctx *ctx, const char *what);
/* Emit the reply to cmd with status (session.c), used by milter_ctx_reply. */
void milter_session_finish(milter_ctx *ctx, uint8_t cmd, milter_status st);

#endif
