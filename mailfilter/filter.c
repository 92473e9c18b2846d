/* filter.c -- mf_filter: core's callbacks feed the engine (trx.c), the
 * decision runs on the worker pool (pool.c), the diff engine (diff.c) turns
 * the result into actions.
 *
 * Which events need an answer: only the event at which the decision runs
 * (and RCPT when there is a validator).  Every other event is answered
 * MILTER_NOREPLY, and the matching NR_* bit is asked for, so that an MTA
 * that has NR_* sends the next event at once.  Events nobody reads are
 * switched off with NO* (no body before a decision at end of headers, no
 * headers before one at DATA...).
 *
 * End of headers is no exception: NR_EOH is asked for too.  Where the MTA
 * has it (protocol v6: Postfix, Sendmail 8.14+) a decision at end of
 * headers starts there (on the loop, or on a worker while the MTA goes on
 * receiving the body it does not send us: NOBODY) and its verdict, whatever
 * it is, is held and given at end of message, the one reply of the
 * message: one round trip instead of two.  An MTA without NR_EOH gets the
 * verdict at end of headers as before (see "held" below).
 *
 * Failures (spool I/O, allocation, limits, validator, decide(), changes that
 * cannot be sent) answer on_error through on_failure(), logged once with
 * the queue id and the cause.  In an event whose reply was negotiated away
 * core keeps that status and answers it at the next event that gets a reply
 * (milter.h, DEFERRED STATUS); no callback of ours runs meanwhile, and the
 * abort callback resets the message.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_int.h"
#include "pool.h"

#include <mailfilter/milter_proto.h>
#include "mf_alloc.h"

typedef struct fconn fconn;

struct mf_filter {
  mf_opts opts;
  char *user_macros; /* copy of opts.macros */
  mf_decide_fn decide;
  void *ud;
  milter_filter_desc desc;
  char *symlist[MILTER_M_COUNT];
  char **snap; /* macro names copied into the trx before a decision */
  size_t nsnap;
  milter_server *srv;
  mf_pool *pool;
};

enum { JOB_DECIDE = 0, JOB_RCPT = 1 };

/* fconn.held: what end of message answers. */
enum {
  HELD_NONE = 0,
  HELD_VERDICT = 1, /* verdict(held_d) */
  HELD_LIMIT = 2    /* limit_st: a limit hit before a quiet decision */
};

struct fconn {
  mf_filter *f;
  milter_ctx *ctx;
  /* A message's trx (or a CONNECT/HELO-stage decision's), allocated by
   * its first event and freed when it is over (ensure_trx, drop_trx): an
   * idle connection keeps only conn. */
  mf_trx *trx;
  mf_conn conn; /* the connection's data while trx is NULL (else trx->conn) */
  mf_job job;
  int kind;
  uint8_t event;    /* MILTER_CMD_* being decided */
  uint8_t limit_st; /* HELD_LIMIT: the milter_status end of message gets */
  mf_stage stage;   /* stage handed to decide() */
  _Atomic int result;
  int decided;     /* this message's decision has run */
  int held;        /* ...and its answer waits for end of message: HELD_* */
  mf_decision held_d;
  int conn_decided; /* CONNECT/HELO stage: the connection's decision ran */
  int conn_held;    /* ...and DISCARD/QUARANTINE applies to each message */
  mf_decision conn_d;
  char *conn_reason;
  int limit_logged;
};

/* ------------------------------------------------------------------------ */
/* Macros                                                                   */
/* ------------------------------------------------------------------------ */

/* Postfix's default milter_*_macros, per SMFIM_* stage: what SETSYMLIST must
 * keep when the user adds names (a symbol list replaces the MTA's). */
static const char *const default_macros[MILTER_M_COUNT] = {
    [MILTER_M_CONNECT] = "j {daemon_name} {daemon_addr} v _ {client_addr} "
                         "{client_name} {client_port} {client_ptr}",
    [MILTER_M_HELO] = "{tls_version} {cipher} {cipher_bits} {cert_subject} "
                      "{cert_issuer}",
    [MILTER_M_ENVFROM] = "i {auth_type} {auth_authen} {auth_author} "
                         "{mail_addr} {mail_host} {mail_mailer}",
    [MILTER_M_ENVRCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    [MILTER_M_DATA] = "i",
    [MILTER_M_EOM] = "i",
    [MILTER_M_EOH] = "i",
};

static int add_name(mf_filter *f, const char *name, size_t len) {
  if (len >= 2 && name[0] == '{' && name[len - 1] == '}') {
    name++;
    len -= 2;
  }
  if (len == 0)
    return 0;
  for (size_t i = 0; i < f->nsnap; i++)
    if (strlen(f->snap[i]) == len && memcmp(f->snap[i], name, len) == 0)
      return 0;
  char **s = xrealloc(f->snap, (f->nsnap + 1) * sizeof(*s));
  if (s == NULL)
    return MF_E_NOMEM;
  f->snap = s;
  if ((s[f->nsnap] = xstrndup(name, len)) == NULL)
    return MF_E_NOMEM;
  f->nsnap++;
  return 0;
}

static int add_names(mf_filter *f, const char *list) {
  for (const char *p = list; p && *p;) {
    p += strspn(p, " \t,");
    size_t n = strcspn(p, " \t,");
    if (n > 0 && add_name(f, p, n) != 0)
      return MF_E_NOMEM;
    p += n;
  }
  return 0;
}

static void snapshot_macros(fconn *fc) {
  mf_engine_clear_macros(fc->trx);
  for (size_t i = 0; i < fc->f->nsnap; i++) {
    const char *v = milter_ctx_macro(fc->ctx, fc->f->snap[i]);
    if (v != NULL)
      mf_engine_macro(fc->trx, fc->f->snap[i], v);
  }
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void complete_hook(mf_trx *trx, mf_decision d, void *arg);

static fconn *get_fc(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  if (fc != NULL)
    return fc;
  fc = xcalloc(1, sizeof(*fc));
  if (fc == NULL)
    return NULL;
  fc->f = milter_ctx_filter_data(ctx);
  fc->ctx = ctx;
  milter_ctx_set_data(ctx, fc);
  return fc;
}

/* fc->trx, allocated if needed; it takes the connection's data over. */
static int ensure_trx(fconn *fc) {
  if (fc->trx != NULL)
    return 0;
  mf_trx *t = xmalloc(sizeof(*t));
  if (t == NULL)
    return MF_E_NOMEM;
  mf_trx_init(t, &fc->f->opts);
  mf_engine_set_complete_hook(t, complete_hook, fc);
  mf_engine_set_negotiated(t, milter_ctx_actions(fc->ctx),
                           milter_ctx_protocol(fc->ctx),
                           milter_ctx_data_size(fc->ctx));
  t->conn = fc->conn;
  memset(&fc->conn, 0, sizeof(fc->conn));
  fc->trx = t;
  return 0;
}

/* The message (or the connection-stage decision) is over: its trx goes,
 * the connection's data stays in fc. */
static void drop_trx(fconn *fc) {
  mf_trx *t = fc->trx;
  if (t == NULL)
    return;
  fc->conn = t->conn;
  memset(&t->conn, 0, sizeof(t->conn));
  mf_trx_fini(t);
  free(t);
  fc->trx = NULL;
}

static mf_conn *conn_of(fconn *fc) {
  return fc->trx != NULL ? &fc->trx->conn : &fc->conn;
}

/* fc with its trx for an event of a message; NULL when out of memory
 * (no_trx() answers). */
static fconn *get_msg_fc(milter_ctx *ctx) {
  fconn *fc = get_fc(ctx);
  return fc != NULL && ensure_trx(fc) == 0 ? fc : NULL;
}

static void msg_reset(fconn *fc) {
  drop_trx(fc);
  fc->decided = 0;
  fc->held = HELD_NONE;
  fc->limit_logged = 0;
}

static const char *qid(const fconn *fc) {
  const char *q = milter_ctx_macro(fc->ctx, "i");
  return q && q[0] ? q : "-";
}

/* ------------------------------------------------------------------------ */
/* Verdicts                                                                 */
/* ------------------------------------------------------------------------ */

static milter_status from_action(mf_action_kind k) {
  switch (k) {
  case MF_DO_ACCEPT: return MILTER_ACCEPT;
  case MF_DO_REJECT: return MILTER_REJECT;
  case MF_DO_CLOSE: return MILTER_CLOSE;
  case MF_DO_TRUNCATE: /* not meaningful for errors */
  case MF_DO_TEMPFAIL:
  default: return MILTER_TEMPFAIL;
  }
}

static milter_status on_failure(fconn *fc, const char *why) {
  milter_ctx_log(fc->ctx, MILTER_LOG_ERROR, "queue id %s: %s", qid(fc), why);
  milter_status st = from_action(fc->f->opts.on_error);
  if (st == MILTER_TEMPFAIL)
    milter_ctx_setreply(fc->ctx, "451", "4.3.0",
                        "Temporary failure in the mail filter");
  return st;
}

static milter_status no_trx(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  if (fc == NULL) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR, "out of memory for a connection");
    return MILTER_TEMPFAIL;
  }
  return on_failure(fc, "out of memory");
}

static void set_user_reply(fconn *fc, mf_decision d) {
  const char *rc = mf_engine_reply_rcode(fc->trx);
  if (rc == NULL)
    return;
  if ((d == MF_REJECT && rc[0] == '5') || (d == MF_TEMPFAIL && rc[0] == '4'))
    milter_ctx_setreply(fc->ctx, rc, mf_engine_reply_xcode(fc->trx),
                        mf_engine_reply_text(fc->trx));
  else
    milter_ctx_log(fc->ctx, MILTER_LOG_WARNING,
                   "queue id %s: reply %s does not match the decision; "
                   "plain reply sent",
                   qid(fc), rc);
}

/* Returns core's MILTER_E_* code as is (mf_engine_replbody passes it on). */
static int body_piece(void *arg, const void *p, size_t n) {
  return milter_ctx_replacebody(arg, p, n);
}

/* End of message with verdict d (ACCEPT or QUARANTINE): queue the actions,
 * return the final status. */
static milter_status send_actions(fconn *fc, mf_decision d) {
  milter_action *a = NULL;
  size_t n = 0;
  int rc = mf_engine_actions(fc->trx, d, MF_ENGINE_BODY_REF, &a, &n);
  if (rc != 0) {
    char why[400];
    snprintf(why, sizeof(why), "cannot apply the changes: %s",
             mf_engine_last_error(fc->trx));
    return on_failure(fc, why);
  }
  milter_ctx *ctx = fc->ctx;
  for (size_t i = 0; i < n && rc == 0; i++) {
    milter_action *x = &a[i];
    switch (x->type) {
    case MILTER_ACTION_ADDHEADER:
      rc = milter_ctx_addheader(ctx, x->name, x->value);
      break;
    case MILTER_ACTION_INSHEADER:
      rc = milter_ctx_insheader(ctx, x->index, x->name, x->value);
      break;
    case MILTER_ACTION_CHGHEADER:
      rc = milter_ctx_chgheader(ctx, x->name, x->index, x->value);
      break;
    case MILTER_ACTION_ADDRCPT:
      rc = milter_ctx_addrcpt(ctx, x->name, NULL);
      break;
    case MILTER_ACTION_ADDRCPT_PAR:
      rc = milter_ctx_addrcpt(ctx, x->name, x->value);
      break;
    case MILTER_ACTION_DELRCPT:
      rc = milter_ctx_delrcpt(ctx, x->name);
      break;
    case MILTER_ACTION_CHGFROM:
      rc = milter_ctx_chgfrom(ctx, x->name, x->value);
      break;
    case MILTER_ACTION_QUARANTINE:
      rc = milter_ctx_quarantine(ctx, x->value);
      break;
    case MILTER_ACTION_REPLBODY:
      if (x->body_len == 0)
        rc = milter_ctx_replacebody(ctx, "", 0);
      else
        rc = mf_engine_replbody(fc->trx, milter_ctx_data_size(ctx),
                                body_piece, ctx);
      break;
    }
  }
  mf_engine_actions_free(a, n);
  if (rc != 0) {
    /* Half the changes must not go out followed by a final reply. */
    milter_ctx_clear_actions(ctx);
    char why[400];
    if (rc == MF_E_IO) /* reading the replacement body back */
      snprintf(why, sizeof(why), "cannot send the changes: %s",
               mf_engine_last_error(fc->trx));
    else if (rc == MF_E_NOMEM)
      snprintf(why, sizeof(why), "cannot send the changes: out of memory");
    else
      snprintf(why, sizeof(why), "cannot queue a milter action: %s",
               milter_strerror(rc));
    return on_failure(fc, why);
  }
  return MILTER_ACCEPT;
}

static int is_conn_event(uint8_t ev) {
  return ev == MILTER_CMD_CONNECT || ev == MILTER_CMD_HELO;
}

/* The decision runs at end of headers and the MTA waits for no reply there
 * (NR_EOH): its verdict is given at end of message, the next reply due. */
static int eoh_quiet(const fconn *fc) {
  return fc->event == MILTER_CMD_EOH &&
         (milter_ctx_protocol(fc->ctx) & MILTER_P_NR_EOH) != 0;
}

/* The decision d of the decision function, at event fc->event. */
static milter_status verdict(fconn *fc, mf_decision d) {
  if (eoh_quiet(fc)) {
    /* Every verdict, REJECT and ACCEPT included, waits for end of message:
     * cb_eom gives it with fc->event EOB. */
    fc->held = HELD_VERDICT;
    fc->held_d = d;
    return MILTER_NOREPLY;
  }
  switch (d) {
  case MF_REJECT:
  case MF_TEMPFAIL:
    set_user_reply(fc, d);
    return d == MF_REJECT ? MILTER_REJECT : MILTER_TEMPFAIL;
  case MF_DISCARD:
  case MF_QUARANTINE:
    if (is_conn_event(fc->event)) {
      fc->conn_held = 1;
      fc->conn_d = d;
      free(fc->conn_reason);
      fc->conn_reason = xstrdup(mf_engine_quarantine_reason(fc->trx));
      return MILTER_CONTINUE;
    }
    if (d == MF_DISCARD)
      return MILTER_DISCARD;
    /* quarantine is an end-of-message action, as an accept with changes */
    __attribute__((fallthrough));
  case MF_ACCEPT:
    if (is_conn_event(fc->event))
      return MILTER_ACCEPT;
    if (fc->event == MILTER_CMD_EOB)
      return send_actions(fc, d);
    if (d == MF_ACCEPT && !mf_engine_has_changes(fc->trx))
      return MILTER_ACCEPT;
    fc->held = HELD_VERDICT; /* modifications only at end of message */
    fc->held_d = d;
    return MILTER_CONTINUE;
  case MF_FAIL:
  default: {
    const char *e = mf_engine_last_error(fc->trx);
    char why[400];
    snprintf(why, sizeof(why), "the decision function failed%s%s%s",
             e[0] ? " (last error: " : "", e, e[0] ? ")" : "");
    return on_failure(fc, why);
  }
  }
}

static milter_status rcpt_verdict(fconn *fc, mf_decision d) {
  milter_status st = MILTER_CONTINUE;
  switch (d) {
  case MF_REJECT:
  case MF_TEMPFAIL:
    set_user_reply(fc, d);
    st = d == MF_REJECT ? MILTER_REJECT : MILTER_TEMPFAIL;
    break;
  case MF_FAIL:
    st = on_failure(fc, "the recipient validator failed");
    if (st == MILTER_ACCEPT)
      st = MILTER_CONTINUE; /* ACCEPT at RCPT would accept the message */
    break;
  default:
    break; /* ACCEPT, and nonsense like DISCARD: keep the recipient */
  }
  if (st == MILTER_REJECT || st == MILTER_TEMPFAIL)
    mf_engine_rcpt_drop_last(fc->trx);
  /* The reply was for this recipient only. */
  mf_engine_clear_reply(fc->trx);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Running the decision                                                     */
/* ------------------------------------------------------------------------ */

static const char *decision_name(mf_decision d) {
  static const char *const names[] = {"accept",  "reject",     "tempfail",
                                      "discard", "quarantine", "pending"};
  if (d == MF_FAIL)
    return "fail";
  return (unsigned)d < sizeof names / sizeof names[0] ? names[d] : "invalid";
}

static void on_done(milter_ctx *ctx, void *arg) {
  fconn *fc = arg;
  mf_decision d = (mf_decision)atomic_load(&fc->result);
  if (milter_ctx_closed(ctx)) {
    /* The MTA gave up waiting (its timeout; the server logged it): no
     * verdict to compute or send.  The reply releases the transaction. */
    milter_ctx_log(ctx, MILTER_LOG_INFO,
                   "queue id %s: decision %s dropped: the MTA has left",
                   qid(fc), decision_name(d));
    milter_ctx_reply(ctx, MILTER_TEMPFAIL);
    return;
  }
  milter_status st =
      fc->kind == JOB_RCPT ? rcpt_verdict(fc, d) : verdict(fc, d);
  /* The answer is complete (actions and reply are core's copies). */
  if (fc->kind == JOB_DECIDE &&
      (is_conn_event(fc->event) || fc->event == MILTER_CMD_EOB))
    drop_trx(fc);
  milter_ctx_reply(ctx, st);
}

static void complete_hook(mf_trx *trx, mf_decision d, void *arg) {
  (void)trx;
  fconn *fc = arg;
  atomic_store(&fc->result, (int)d);
  milter_ctx_post(fc->ctx, on_done, fc);
}

static mf_decision run_user(fconn *fc) {
  mf_filter *f = fc->f;
  if (fc->kind == JOB_RCPT)
    return mf_engine_validate_rcpt(fc->trx, f->opts.validate_rcpt, f->ud);
  return mf_engine_decide(fc->trx, fc->stage, f->decide, f->ud);
}

static fconn *fc_of_job(mf_job *job);

static void job_fn(mf_job *job) {
  fconn *fc = fc_of_job(job);
  mf_decision d = run_user(fc);
  if (d != MF_PENDING)
    complete_hook(fc->trx, d, fc);
}

/* Hand-off to the pool in batches.  A loop thread collects the decisions
 * it starts while it serves the connections that were ready together, and
 * pushes them to the pool at once from a call it posts to itself (run at
 * its next pass, right after the reads of this one): one lock and at most
 * one wake-up of a worker for the whole batch, not one per message.  The
 * batch is the thread's own (thread-local): no lock, and every loop of the
 * server has its own. */
typedef struct job_batch {
  mf_pool *pool;
  mf_job *head, *tail;
} job_batch;
static _Thread_local job_batch batch;

static fconn *fc_of_job(mf_job *job) {
  return (fconn *)((char *)job - offsetof(fconn, job));
}

static void flush_batch(milter_ctx *ctx, void *arg) {
  (void)ctx;
  (void)arg;
  job_batch b = batch;
  batch = (job_batch){0};
  if (b.head == NULL || mf_pool_push_list(b.pool, b.head, b.tail) == 0)
    return;
  for (mf_job *j = b.head, *next; j != NULL; j = next) {
    next = j->next;
    fconn *fc = fc_of_job(j);
    milter_ctx_reply(fc->ctx, on_failure(fc, "worker pool is shutting down"));
  }
}

/* Queue fc's job; 0 or MF_E_STATE (the pool is shutting down). */
static int queue_job(fconn *fc) {
  mf_pool *pool = fc->f->pool;
  fc->job.fn = job_fn;
  fc->job.next = NULL;
  if (batch.head != NULL && batch.pool == pool) {
    batch.tail->next = &fc->job;
    batch.tail = &fc->job;
    return 0;
  }
  /* The first of a batch: its ctx carries the flush (its reply is
   * PENDING from our return until the worker's result is posted, which
   * cannot happen before the flush ran). */
  if (batch.head != NULL ||
      milter_ctx_post(fc->ctx, flush_batch, NULL) != 0)
    return mf_pool_push(pool, &fc->job); /* no batch: at once */
  batch.pool = pool;
  batch.head = batch.tail = &fc->job;
  return 0;
}

/* Limits hit before the decision: the configured action, or on to the
 * decision (TRUNCATE). */
static int limit_status(fconn *fc, milter_status *st) {
  int lim = mf_engine_limit_hit(fc->trx);
  if (lim == 0)
    return 0;
  const mf_opts *o = &fc->f->opts;
  mf_action_kind k = lim == 1   ? o->header_limit
                     : lim == 2 ? o->body_limit
                                : o->rcpt_limit;
  const char *what = lim == 1 ? "header" : lim == 2 ? "body" : "recipients";
  milter_ctx_log(fc->ctx, MILTER_LOG_WARNING,
                 "queue id %s: %s over the limit (%s): %s", qid(fc), what,
                 mf_engine_last_error(fc->trx),
                 k == MF_DO_TRUNCATE ? "truncated"
                 : k == MF_DO_ACCEPT ? "accepted unchanged"
                 : k == MF_DO_CLOSE  ? "closing"
                 : k == MF_DO_REJECT ? "rejected"
                                     : "tempfailed");
  switch (k) {
  case MF_DO_TRUNCATE:
    return 0;
  case MF_DO_ACCEPT:
    *st = MILTER_ACCEPT;
    return 1;
  case MF_DO_CLOSE:
    *st = MILTER_CLOSE;
    return 1;
  case MF_DO_REJECT:
    if (lim == 3)
      milter_ctx_setreply(fc->ctx, "550", "5.5.3", "Too many recipients");
    else
      milter_ctx_setreply(fc->ctx, "552", "5.3.4",
                          lim == 1 ? "Message header too large"
                                   : "Message size exceeds fixed limit");
    *st = MILTER_REJECT;
    return 1;
  case MF_DO_TEMPFAIL:
  default:
    if (lim == 3)
      milter_ctx_setreply(fc->ctx, "452", "4.5.3", "Too many recipients");
    else
      milter_ctx_setreply(fc->ctx, "452", "4.3.4",
                          "Message too large for the mail filter");
    *st = MILTER_TEMPFAIL;
    return 1;
  }
}

static milter_status start(fconn *fc, uint8_t event, int kind) {
  mf_filter *f = fc->f;
  fc->event = event;
  fc->kind = kind;
  fc->stage = f->opts.stage;
  if (kind == JOB_DECIDE) {
    if (is_conn_event(event))
      fc->conn_decided = 1;
    else
      fc->decided = 1;
    milter_status st;
    if (!is_conn_event(event) && limit_status(fc, &st)) {
      if (st == MILTER_CLOSE || !eoh_quiet(fc))
        return st;
      fc->held = HELD_LIMIT; /* answered at end of message (reply kept) */
      fc->limit_st = (uint8_t)st;
      return MILTER_NOREPLY;
    }
  }
  snapshot_macros(fc);
  if (f->opts.flags & MF_OPT_NONBLOCKING) {
    mf_decision d = run_user(fc);
    if (d == MF_PENDING)
      return MILTER_PENDING;
    return kind == JOB_RCPT ? rcpt_verdict(fc, d) : verdict(fc, d);
  }
  if (queue_job(fc) != 0)
    return on_failure(fc, "worker pool is shutting down");
  return MILTER_PENDING;
}

/* ------------------------------------------------------------------------ */
/* Core callbacks                                                           */
/* ------------------------------------------------------------------------ */

/* A decision at CONNECT or HELO: its trx lives as long as it runs. */
static milter_status conn_decide(fconn *fc, uint8_t event) {
  if (ensure_trx(fc) != 0)
    return on_failure(fc, "out of memory");
  milter_status st = start(fc, event, JOB_DECIDE);
  if (st != MILTER_PENDING)
    drop_trx(fc);
  return st;
}

static milter_status cb_connect(milter_ctx *ctx, const milter_connect_info *ci) {
  fconn *fc = get_fc(ctx);
  if (fc == NULL) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR, "out of memory for a connection");
    return MILTER_TEMPFAIL;
  }
  msg_reset(fc);
  mf_conn_free(&fc->conn);
  fc->conn_decided = fc->conn_held = 0;
  free(fc->conn_reason);
  fc->conn_reason = NULL;
  if (mf_conn_connect(&fc->conn, ci->hostname, ci->family, ci->port,
                      ci->address) != 0)
    return on_failure(fc, "out of memory");
  if (fc->f->opts.stage == MF_STAGE_CONNECT)
    return conn_decide(fc, MILTER_CMD_CONNECT);
  return MILTER_NOREPLY;
}

static milter_status cb_helo(milter_ctx *ctx, const char *helo) {
  fconn *fc = get_fc(ctx);
  if (fc == NULL)
    return MILTER_TEMPFAIL;
  if (helo == NULL || mf_conn_helo(conn_of(fc), helo) != 0)
    return on_failure(fc, "out of memory");
  if (fc->f->opts.stage == MF_STAGE_HELO && !fc->conn_decided)
    return conn_decide(fc, MILTER_CMD_HELO);
  return MILTER_NOREPLY;
}

static milter_status cb_envfrom(milter_ctx *ctx, size_t argc,
                                const char *const *argv) {
  fconn *fc = get_fc(ctx);
  if (fc == NULL)
    return MILTER_TEMPFAIL;
  msg_reset(fc);
  if (ensure_trx(fc) != 0)
    return on_failure(fc, "out of memory");
  int rc = mf_engine_mail(fc->trx, argc, argv);
  if (rc == MF_E_NOMEM)
    return on_failure(fc, "out of memory");
  if (rc != 0)
    milter_ctx_log(ctx, MILTER_LOG_INFO, "%s (kept as text)",
                   mf_engine_last_error(fc->trx));
  if (fc->f->opts.stage == MF_STAGE_MAIL && !fc->conn_held)
    return start(fc, MILTER_CMD_MAIL, JOB_DECIDE);
  return MILTER_NOREPLY;
}

static milter_status cb_envrcpt(milter_ctx *ctx, size_t argc,
                                const char *const *argv) {
  fconn *fc = get_msg_fc(ctx);
  if (fc == NULL)
    return no_trx(ctx);
  int rc = mf_engine_rcpt(fc->trx, argc, argv);
  if (rc == MF_E_NOMEM)
    return on_failure(fc, "out of memory");
  if (rc == MF_E_LIMIT)
    return MILTER_NOREPLY; /* acted upon at the decision */
  if (rc != 0)
    milter_ctx_log(ctx, MILTER_LOG_INFO, "%s (kept as text)",
                   mf_engine_last_error(fc->trx));
  if (fc->f->opts.validate_rcpt != NULL && !fc->decided && !fc->conn_held)
    return start(fc, MILTER_CMD_RCPT, JOB_RCPT);
  return MILTER_NOREPLY;
}

static milter_status cb_data(milter_ctx *ctx) {
  fconn *fc = get_msg_fc(ctx);
  if (fc == NULL)
    return no_trx(ctx);
  mf_stage s = fc->f->opts.stage;
  if ((s == MF_STAGE_RCPT || s == MF_STAGE_DATA) && !fc->decided &&
      !fc->conn_held)
    return start(fc, MILTER_CMD_DATA, JOB_DECIDE);
  return MILTER_NOREPLY;
}

static milter_status cb_header(milter_ctx *ctx, const char *name,
                               const char *value) {
  fconn *fc = get_msg_fc(ctx);
  if (fc == NULL)
    return no_trx(ctx);
  if (fc->decided || fc->conn_held)
    return MILTER_NOREPLY;
  int lead = (milter_ctx_protocol(ctx) & MILTER_P_HDR_LEADSPC) != 0;
  int rc = mf_engine_header(fc->trx, name, value, strlen(value), lead);
  if (rc == MF_E_NOMEM)
    return on_failure(fc, "out of memory");
  if (rc != 0 && rc != MF_E_LIMIT)
    milter_ctx_log(ctx, MILTER_LOG_WARNING, "queue id %s: %s (field dropped)",
                   qid(fc), mf_engine_last_error(fc->trx));
  return MILTER_NOREPLY;
}

static milter_status cb_eoh(milter_ctx *ctx) {
  fconn *fc = get_msg_fc(ctx);
  if (fc == NULL)
    return no_trx(ctx);
  mf_engine_eoh(fc->trx);
  /* EOH decides; so do RCPT/DATA with an MTA too old to send DATA. */
  if (!fc->decided && !fc->conn_held && fc->f->opts.stage >= MF_STAGE_MAIL &&
      fc->f->opts.stage <= MF_STAGE_EOH)
    return start(fc, MILTER_CMD_EOH, JOB_DECIDE);
  return MILTER_NOREPLY;
}

static milter_status cb_body(milter_ctx *ctx, const uint8_t *chunk,
                             size_t len) {
  fconn *fc = get_msg_fc(ctx);
  if (fc == NULL)
    return no_trx(ctx);
  if (fc->decided || fc->conn_held)
    return MILTER_NOREPLY;
  int rc = mf_engine_body(fc->trx, chunk, len);
  if (rc != 0 && rc != MF_E_LIMIT && !fc->limit_logged) {
    fc->limit_logged = 1;
    return on_failure(fc, mf_engine_last_error(fc->trx));
  }
  return MILTER_NOREPLY;
}

static milter_status eom_status(fconn *fc) {
  milter_ctx *ctx = fc->ctx;
  fc->event = MILTER_CMD_EOB;
  if (fc->conn_held) {
    if (fc->conn_d == MF_DISCARD)
      return MILTER_DISCARD;
    if (milter_ctx_quarantine(ctx, fc->conn_reason ? fc->conn_reason
                                                   : "quarantined") != 0)
      return on_failure(fc, "cannot quarantine");
    return MILTER_ACCEPT;
  }
  if (fc->held == HELD_LIMIT)
    return (milter_status)fc->limit_st;
  if (fc->held == HELD_VERDICT)
    return verdict(fc, fc->held_d);
  if (!fc->decided)
    return start(fc, MILTER_CMD_EOB, JOB_DECIDE);
  return MILTER_CONTINUE;
}

static milter_status cb_eom(milter_ctx *ctx) {
  fconn *fc = get_msg_fc(ctx);
  if (fc == NULL)
    return no_trx(ctx);
  milter_status st = eom_status(fc);
  if (st != MILTER_PENDING)
    drop_trx(fc); /* on_done drops it after a decision on a worker */
  return st;
}

static void cb_abort(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  if (fc != NULL)
    msg_reset(fc);
}

static void cb_close(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  if (fc == NULL)
    return;
  drop_trx(fc);
  mf_conn_free(&fc->conn);
  free(fc->conn_reason);
  free(fc);
  milter_ctx_set_data(ctx, NULL);
}

/* ------------------------------------------------------------------------ */
/* The filter                                                               */
/* ------------------------------------------------------------------------ */

static int macro_stage_of(mf_stage s) {
  switch (s) {
  case MF_STAGE_CONNECT: return MILTER_M_CONNECT;
  case MF_STAGE_HELO: return MILTER_M_HELO;
  case MF_STAGE_MAIL: return MILTER_M_ENVFROM;
  case MF_STAGE_RCPT: return MILTER_M_ENVRCPT;
  case MF_STAGE_DATA: return MILTER_M_DATA;
  case MF_STAGE_EOH: return MILTER_M_EOH;
  case MF_STAGE_EOM:
  default: return MILTER_M_EOM;
  }
}

/* Protocol order of the SMFIM_* stages. */
static const int macro_order[] = {MILTER_M_CONNECT, MILTER_M_HELO,
                                  MILTER_M_ENVFROM, MILTER_M_ENVRCPT,
                                  MILTER_M_DATA,    MILTER_M_EOH,
                                  MILTER_M_EOM};

static int build_desc(mf_filter *f) {
  const mf_opts *o = &f->opts;
  milter_filter_desc *d = &f->desc;
  memset(d, 0, sizeof(*d));
  d->name = "mailfilter";
  d->userdata = f;
  d->cb.connect = cb_connect;
  d->cb.helo = cb_helo;
  d->cb.envfrom = cb_envfrom;
  d->cb.envrcpt = cb_envrcpt;
  d->cb.eom = cb_eom;
  d->cb.abort = cb_abort;
  d->cb.close = cb_close;
  mf_stage s = o->stage;
  if (s == MF_STAGE_RCPT || s == MF_STAGE_DATA)
    d->cb.data = cb_data;
  if (s >= MF_STAGE_EOH)
    d->cb.header = cb_header;
  if (s >= MF_STAGE_MAIL && s <= MF_STAGE_EOH)
    d->cb.eoh = cb_eoh;
  if (s == MF_STAGE_EOM)
    d->cb.body = cb_body;
  /* the body goes to the spool piece by piece: no per-connection packet
   * buffer (cb_body never answers PENDING) */
  d->flags |= MILTER_DESC_STREAM_BODY;
  d->actions_wanted = MILTER_ACT_ALL;
  uint32_t nr = MILTER_P_NR_HDR | MILTER_P_NR_BODY | MILTER_P_NR_UNKN;
  if (s != MF_STAGE_CONNECT)
    nr |= MILTER_P_NR_CONN;
  if (s != MF_STAGE_HELO)
    nr |= MILTER_P_NR_HELO;
  if (s != MF_STAGE_MAIL)
    nr |= MILTER_P_NR_MAIL;
  if (o->validate_rcpt == NULL)
    nr |= MILTER_P_NR_RCPT;
  if (s != MF_STAGE_RCPT && s != MF_STAGE_DATA)
    nr |= MILTER_P_NR_DATA;
  /* A decision at end of headers is answered at end of message where the
   * MTA has NR_EOH (see the top of this file); without it, at once. */
  nr |= MILTER_P_NR_EOH;
  d->protocol_wanted = nr | MILTER_P_HDR_LEADSPC;
  d->max_data_size = MILTER_DATA_1M;

  /* Names copied into the trx before a decision. */
  for (int m = 0; m < MILTER_M_COUNT; m++)
    if (add_names(f, default_macros[m]) != 0)
      return MF_E_NOMEM;
  if (add_names(f, "auth_ssf") != 0 || add_names(f, f->user_macros) != 0)
    return MF_E_NOMEM;
  /* Symbol lists only when the user asks for more than the MTA's default
   * (a list replaces the MTA's own for that stage). */
  if (f->user_macros != NULL && f->user_macros[0] != '\0') {
    int last = macro_stage_of(s);
    for (size_t i = 0; i < sizeof(macro_order) / sizeof(macro_order[0]); i++) {
      int m = macro_order[i];
      size_t n = strlen(default_macros[m]) + strlen(f->user_macros) + 2;
      if ((f->symlist[m] = xmalloc(n)) == NULL)
        return MF_E_NOMEM;
      snprintf(f->symlist[m], n, "%s %s", default_macros[m], f->user_macros);
      d->macros[m] = f->symlist[m];
      if (m == last)
        break;
    }
  }
  return 0;
}

int mf_filter_new(mf_filter **out, mf_decide_fn decide, void *ud,
                  const mf_opts *opts) {
  if (out == NULL || decide == NULL)
    return MF_E_INVAL;
  *out = NULL;
  mf_filter *f = xcalloc(1, sizeof(*f));
  if (f == NULL)
    return MF_E_NOMEM;
  if (opts != NULL)
    f->opts = *opts;
  else
    mf_opts_init(&f->opts);
  if (f->opts.stage < MF_STAGE_CONNECT || f->opts.stage > MF_STAGE_EOM) {
    free(f);
    return MF_E_INVAL;
  }
  if (f->opts.workers == 0) {
    mf_opts d;
    mf_opts_init(&d);
    f->opts.workers = d.workers;
  }
  f->decide = decide;
  f->ud = ud;
  int rc = 0;
  if (f->opts.macros != NULL &&
      (f->user_macros = xstrdup(f->opts.macros)) == NULL)
    rc = MF_E_NOMEM;
  f->opts.macros = f->user_macros;
  if (rc == 0)
    rc = build_desc(f);
  if (rc == 0 && !(f->opts.flags & MF_OPT_NONBLOCKING))
    rc = mf_pool_new(&f->pool, f->opts.workers);
  /* PROGRESS while a decision runs: the server's, on every loop. */
  if (f->opts.progress_ms > 0)
    f->opts.server.progress_ms = f->opts.progress_ms;
  if (rc == 0 &&
      milter_server_new(&f->srv, NULL, &f->desc, &f->opts.server) != 0)
    rc = MF_E_SERVER;
  if (rc != 0) {
    mf_filter_free(f);
    return rc;
  }
  *out = f;
  return 0;
}

int mf_filter_listen(mf_filter *f, const char *spec) {
  if (f == NULL || spec == NULL)
    return MF_E_INVAL;
  return milter_server_listen(f->srv, spec) == 0 ? 0 : MF_E_SERVER;
}

int mf_filter_run(mf_filter *f) {
  if (f == NULL)
    return MF_E_INVAL;
  milter_server_run(f->srv);
  return 0;
}

void mf_filter_stop(mf_filter *f) {
  if (f != NULL)
    milter_server_stop(f->srv);
}

milter_server *mf_filter_server(const mf_filter *f) {
  return f ? f->srv : NULL;
}

void mf_filter_free(mf_filter *f) {
  if (f == NULL)
    return;
  /* Workers first: a running decision finishes and posts its reply; no
   * worker touches a connection after this. */
  mf_pool_free(f->pool);
  milter_server_free(f->srv);
  for (size_t i = 0; i < f->nsnap; i++)
    free(f->snap[i]);
  free(f->snap);
  for (int m = 0; m < MILTER_M_COUNT; m++)
    free(f->symlist[m]);
  free(f->user_macros);
  free(f);
}
