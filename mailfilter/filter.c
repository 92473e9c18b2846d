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
typedef struct fmsg fmsg;

struct mf_filter {
  mf_opts opts;
  char *user_macros; /* copy of opts.macros */
  mf_decide_fn decide;
  void *ud;
  milter_filter_desc desc;
  char *symlist[MILTER_M_COUNT];
  char **snap; /* macro names copied into the trx before a decision */
  size_t *snaplen;
  size_t nsnap;
  milter_server *srv;
  mf_pool *pool;
};

enum { JOB_DECIDE = 0, JOB_RCPT = 1 };

/* fmsg.held: what end of message answers. */
enum {
  HELD_NONE = 0,
  HELD_VERDICT = 1, /* verdict(held_d) */
  HELD_LIMIT = 2    /* limit_st: a limit hit before a quiet decision */
};

/* A message, or a decision at CONNECT/HELO, while it runs: allocated by its
 * first event and freed when it is over (ensure_msg, drop_msg), one
 * allocation as the bare trx was.  Everything a decision in progress needs
 * is here, not in the connection.  The job and the pointer posted back to
 * the loop are this block's: it does not move while a reply is PENDING
 * (no callback of the connection runs then). */
struct fmsg {
  mf_trx trx; /* its conn points into the fconn's strings (not owned);
                 its opts are its filter's (filter_of) */
  milter_ctx *ctx;
  mf_job job;
  _Atomic int result;
  mf_decision held_d;  /* HELD_VERDICT: the verdict end of message gives */
  uint8_t event;       /* MILTER_CMD_* being decided */
  uint8_t kind;        /* JOB_* */
  uint8_t held;        /* HELD_*: the answer waits for end of message */
  uint8_t limit_st;    /* HELD_LIMIT: the milter_status end of message gets */
  uint8_t decided : 1; /* this message's decision has run */
  uint8_t limit_logged : 1;
};

/* m's filter: trx.opts is &f->opts (ensure_msg). */
static mf_filter *filter_of(const fmsg *m) {
  return (mf_filter *)((const char *)m->trx.opts - offsetof(mf_filter, opts));
}

/* fconn.flags */
enum {
  FC_DECIDED = 0x01,   /* CONNECT/HELO stage: the connection's decision ran */
  FC_HELD = 0x02,      /* ...and DISCARD/QUARANTINE applies to each message */
  FC_DISCARD = 0x04,   /* FC_HELD: DISCARD (else QUARANTINE) */
  FC_HELO = 0x08,      /* a HELO name is known */
  FC_HELO_HOST = 0x10, /* ...and it is the hostname: not stored twice */
  FC_REASON = 0x20     /* FC_HELD QUARANTINE: its reason is stored */
};

/* What an idle connection keeps (ctx's data): one block, allocated by the
 * first callback (CONNECT) and rebuilt when its strings change (fc_build).
 * Its strings, NUL-terminated one after the other: the hostname, the
 * address, the HELO name (FC_HELO and not FC_HELO_HOST), the quarantine
 * reason of a connection-stage QUARANTINE (FC_REASON). */
struct fconn {
  fmsg *msg; /* the message in progress, NULL between messages */
  uint16_t port;
  char family;
  uint8_t flags; /* FC_* */
  char strs[];
};

/* ------------------------------------------------------------------------ */
/* Macros                                                                   */
/* ------------------------------------------------------------------------ */

/* What the library reads, per SMFIM_* stage: Postfix's default
 * milter_*_macros with Sendmail's defaults (Milter.macros.*) that Postfix
 * lacks ({if_name} {if_addr} at connect, {auth_ssf} at MAIL, {msg_id} at
 * end of message).  A symbol list replaces the MTA's list for its stage, so
 * a list the library sends starts with these.  A connect list is always
 * sent (where the MTA offers SETSYMLIST): it asks for "v", which stock
 * Sendmail does not send at connect and without which the MTA is not
 * known (mailfilter.h, HEADER EDITS ON EACH MTA); connect_always when the
 * user asks for nothing more. */
static const char *const default_macros[MILTER_M_COUNT] = {
    [MILTER_M_CONNECT] = "j {daemon_name} {daemon_addr} v _ {client_addr} "
                         "{client_name} {client_port} {client_ptr} "
                         "{if_name} {if_addr}",
    [MILTER_M_HELO] = "{tls_version} {cipher} {cipher_bits} {cert_subject} "
                      "{cert_issuer}",
    [MILTER_M_ENVFROM] = "i {auth_type} {auth_authen} {auth_author} "
                         "{auth_ssf} {mail_addr} {mail_host} {mail_mailer}",
    [MILTER_M_ENVRCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    [MILTER_M_DATA] = "i",
    [MILTER_M_EOM] = "i {msg_id}",
    [MILTER_M_EOH] = "i",
};

/* The connect list sent when the user asks for no macro: Postfix's
 * default (3.x) and Sendmail's, and "v": what the MTA sent before, no
 * more (the connection keeps these values as long as it lives). */
static const char connect_always[] =
    "j {daemon_name} {daemon_addr} v _ {if_name} {if_addr}";

static int add_name(mf_filter *f, const char *name, size_t len) {
  if (len >= 2 && name[0] == '{' && name[len - 1] == '}') {
    name++;
    len -= 2;
  }
  if (len == 0)
    return 0;
  for (size_t i = 0; i < f->nsnap; i++)
    if (f->snaplen[i] == len && memcmp(f->snap[i], name, len) == 0)
      return 0;
  char **s = xrealloc(f->snap, (f->nsnap + 1) * sizeof(*s));
  if (s == NULL)
    return MF_E_NOMEM;
  f->snap = s;
  size_t *l = xrealloc(f->snaplen, (f->nsnap + 1) * sizeof(*l));
  if (l == NULL)
    return MF_E_NOMEM;
  f->snaplen = l;
  if ((s[f->nsnap] = xstrndup(name, len)) == NULL)
    return MF_E_NOMEM;
  l[f->nsnap++] = len;
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

/* The snapshot: one walk over what the MTA sent (milter_ctx_macros), each
 * wanted name taken at its newest stage. */
enum { SNAP_MAX = 256 };
typedef struct snap_walk {
  const mf_filter *f;
  mf_trx *trx;
  uint64_t taken[SNAP_MAX / 64];
  int rc;
} snap_walk;

static int snap_pair(void *ud, const char *name, size_t len,
                     const char *value) {
  snap_walk *w = ud;
  const mf_filter *f = w->f;
  for (size_t i = 0; i < f->nsnap; i++) {
    if (f->snaplen[i] != len || f->snap[i][0] != name[0] ||
        memcmp(f->snap[i], name, len) != 0)
      continue;
    uint64_t bit = (uint64_t)1 << (i % 64);
    if (w->taken[i / 64] & bit)
      return 0; /* an older stage's value */
    w->taken[i / 64] |= bit;
    w->rc = mf_trx_macro_put(w->trx, name, len, value);
    return w->rc;
  }
  return 0;
}

/* 0, or MF_E_NOMEM: the decision must not run without them (no
 * {auth_authen}: an authenticated sender taken for a stranger). */
static int snapshot_macros(fmsg *m) {
  const mf_filter *f = filter_of(m);
  mf_engine_clear_macros(&m->trx);
  if (f->nsnap <= SNAP_MAX) {
    snap_walk w = {f, &m->trx, {0}, 0};
    milter_ctx_macros(m->ctx, snap_pair, &w);
    return w.rc;
  }
  for (size_t i = 0; i < f->nsnap; i++) {
    const char *v = milter_ctx_macro(m->ctx, f->snap[i]);
    int rc = v != NULL ? mf_engine_macro(&m->trx, f->snap[i], v) : 0;
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void complete_hook(mf_trx *trx, mf_decision d, void *arg);

/* fc's data as a trx's connection data: pointers into fc's strings. */
static void conn_view(fconn *fc, mf_conn *c) {
  c->hostname = fc->strs;
  c->ip = c->hostname + strlen(c->hostname) + 1;
  if (!(fc->flags & FC_HELO))
    c->helo = NULL;
  else if (fc->flags & FC_HELO_HOST)
    c->helo = c->hostname;
  else
    c->helo = c->ip + strlen(c->ip) + 1;
  c->family = fc->family;
  c->port = fc->port;
}

/* The stored reason of a connection-stage QUARANTINE, or NULL. */
static const char *conn_reason(fconn *fc) {
  if (!(fc->flags & FC_REASON))
    return NULL;
  mf_conn c;
  conn_view(fc, &c);
  const char *last = c.helo != NULL && c.helo != c.hostname ? c.helo : c.ip;
  return last + strlen(last) + 1;
}

static void put_str(char **p, const char *s, size_t len) {
  if (len > 0)
    memcpy(*p, s, len);
  *p += len;
}

/* ctx's connection block with these strings (helo, reason: NULL for none;
 * any of them may point into old), keeping old's message, family, port
 * and connection-stage decision (old NULL: a new connection, all zero).
 * The new block becomes ctx's data and old is freed.  NULL when out of
 * memory: old is unchanged. */
static fconn *fc_build(milter_ctx *ctx, fconn *old, const char *host,
                       const char *ip, const char *helo, const char *reason) {
  int helo_host = helo != NULL && strcmp(helo, host) == 0;
  size_t hl = strlen(host) + 1, al = strlen(ip) + 1;
  size_t el = helo != NULL && !helo_host ? strlen(helo) + 1 : 0;
  size_t rl = reason != NULL ? strlen(reason) + 1 : 0;
  fconn *fc = xmalloc(offsetof(fconn, strs) + hl + al + el + rl);
  if (fc == NULL)
    return NULL;
  fc->msg = old != NULL ? old->msg : NULL;
  fc->port = old != NULL ? old->port : 0;
  fc->family = old != NULL ? old->family : 0;
  fc->flags =
      old != NULL ? old->flags & (FC_DECIDED | FC_HELD | FC_DISCARD) : 0;
  if (helo != NULL)
    fc->flags |= helo_host ? FC_HELO | FC_HELO_HOST : FC_HELO;
  if (reason != NULL)
    fc->flags |= FC_REASON;
  char *p = fc->strs;
  put_str(&p, host, hl);
  put_str(&p, ip, al);
  put_str(&p, helo, el);
  put_str(&p, reason, rl);
  free(old);
  milter_ctx_set_data(ctx, fc);
  if (fc->msg != NULL)
    conn_view(fc, &fc->msg->trx.conn);
  return fc;
}

/* ctx's connection block, allocated empty if the MTA skipped CONNECT. */
static fconn *get_fc(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  return fc != NULL ? fc : fc_build(ctx, NULL, "", "", NULL, NULL);
}

/* fc->msg, allocated if needed. */
static fmsg *ensure_msg(milter_ctx *ctx, fconn *fc) {
  if (fc->msg != NULL)
    return fc->msg;
  fmsg *m = xmalloc(sizeof(*m));
  if (m == NULL)
    return NULL;
  mf_filter *f = milter_ctx_filter_data(ctx);
  m->ctx = ctx;
  mf_trx_init(&m->trx, &f->opts);
  mf_engine_set_complete_hook(&m->trx, complete_hook, m);
  mf_engine_set_negotiated(&m->trx, milter_ctx_actions(ctx),
                           milter_ctx_protocol(ctx), milter_ctx_data_size(ctx));
  conn_view(fc, &m->trx.conn);
  m->job = (mf_job){0};
  atomic_init(&m->result, 0);
  m->held_d = MF_ACCEPT;
  m->event = m->kind = m->held = m->limit_st = 0;
  m->decided = m->limit_logged = 0;
  fc->msg = m;
  return m;
}

/* The message (or the connection-stage decision) is over: it goes, the
 * connection's block stays. */
static void drop_msg(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  if (fc == NULL || fc->msg == NULL)
    return;
  fmsg *m = fc->msg;
  memset(&m->trx.conn, 0, sizeof(m->trx.conn)); /* fc's strings */
  mf_trx_fini(&m->trx);
  free(m);
  fc->msg = NULL;
}

/* The message of an event of a message, with its connection in *fcp;
 * NULL when out of memory (no_trx() answers).  Every header and body
 * piece comes here: the message exists but at its first event. */
static inline fmsg *get_msg(milter_ctx *ctx, fconn **fcp) {
  fconn *fc = *fcp = milter_ctx_get_data(ctx);
  if (fc != NULL && fc->msg != NULL)
    return fc->msg;
  if (fc == NULL && (fc = *fcp = get_fc(ctx)) == NULL)
    return NULL;
  return ensure_msg(ctx, fc);
}

static const char *qid(const milter_ctx *ctx) {
  const char *q = milter_ctx_macro(ctx, "i");
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

static milter_status on_failure(milter_ctx *ctx, const char *why) {
  const mf_filter *f = milter_ctx_filter_data(ctx);
  milter_ctx_log(ctx, MILTER_LOG_ERROR, "queue id %s: %s", qid(ctx), why);
  milter_status st = from_action(f->opts.on_error);
  if (st == MILTER_TEMPFAIL)
    milter_ctx_setreply(ctx, "451", "4.3.0",
                        "Temporary failure in the mail filter");
  return st;
}

static milter_status no_trx(milter_ctx *ctx) {
  if (milter_ctx_get_data(ctx) == NULL) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR, "out of memory for a connection");
    return MILTER_TEMPFAIL;
  }
  return on_failure(ctx, "out of memory");
}

static void set_user_reply(fmsg *m, mf_decision d) {
  const char *rc = mf_engine_reply_rcode(&m->trx);
  if (rc == NULL)
    return;
  if ((d == MF_REJECT && rc[0] == '5') || (d == MF_TEMPFAIL && rc[0] == '4'))
    milter_ctx_setreply(m->ctx, rc, mf_engine_reply_xcode(&m->trx),
                        mf_engine_reply_text(&m->trx));
  else
    milter_ctx_log(m->ctx, MILTER_LOG_WARNING,
                   "queue id %s: reply %s does not match the decision; "
                   "plain reply sent",
                   qid(m->ctx), rc);
}

/* Returns core's MILTER_E_* code as is (mf_engine_replbody passes it on). */
static int body_piece(void *arg, const void *p, size_t n) {
  return milter_ctx_replacebody(arg, p, n);
}

/* End of message with verdict d (ACCEPT or QUARANTINE): queue the actions,
 * return the final status. */
static milter_status send_actions(fmsg *m, mf_decision d) {
  milter_action *a = NULL;
  size_t n = 0;
  int rc = mf_engine_actions(&m->trx, d, MF_ENGINE_BODY_REF, &a, &n);
  if (rc != 0) {
    char why[400];
    snprintf(why, sizeof(why), "cannot apply the changes: %s",
             mf_engine_last_error(&m->trx));
    return on_failure(m->ctx, why);
  }
  milter_ctx *ctx = m->ctx;
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
        rc = mf_engine_replbody(&m->trx, milter_ctx_data_size(ctx),
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
               mf_engine_last_error(&m->trx));
    else if (rc == MF_E_NOMEM)
      snprintf(why, sizeof(why), "cannot send the changes: out of memory");
    else
      snprintf(why, sizeof(why), "cannot queue a milter action: %s",
               milter_strerror(rc));
    return on_failure(m->ctx, why);
  }
  return MILTER_ACCEPT;
}

static int is_conn_event(uint8_t ev) {
  return ev == MILTER_CMD_CONNECT || ev == MILTER_CMD_HELO;
}

/* The decision runs at end of headers and the MTA waits for no reply there
 * (NR_EOH): its verdict is given at end of message, the next reply due. */
static int eoh_quiet(const fmsg *m) {
  return m->event == MILTER_CMD_EOH &&
         (milter_ctx_protocol(m->ctx) & MILTER_P_NR_EOH) != 0;
}

/* A DISCARD or QUARANTINE at CONNECT/HELO: it applies to every message of
 * the connection.  The reason goes into the connection's block (out of
 * memory: the default reason, "quarantined"). */
static void hold_conn(fmsg *m, mf_decision d) {
  fconn *fc = milter_ctx_get_data(m->ctx);
  fc->flags |= FC_HELD;
  if (d == MF_DISCARD) {
    fc->flags |= FC_DISCARD;
    return;
  }
  const mf_conn *c = &m->trx.conn;
  (void)fc_build(m->ctx, fc, c->hostname, c->ip, c->helo,
                 mf_engine_quarantine_reason(&m->trx));
}

/* The decision d of the decision function, at event m->event. */
static milter_status verdict(fmsg *m, mf_decision d) {
  if (eoh_quiet(m)) {
    /* Every verdict, REJECT and ACCEPT included, waits for end of message:
     * cb_eom gives it with m->event EOB. */
    m->held = HELD_VERDICT;
    m->held_d = d;
    return MILTER_NOREPLY;
  }
  switch (d) {
  case MF_REJECT:
  case MF_TEMPFAIL:
    set_user_reply(m, d);
    return d == MF_REJECT ? MILTER_REJECT : MILTER_TEMPFAIL;
  case MF_DISCARD:
  case MF_QUARANTINE:
    if (is_conn_event(m->event)) {
      hold_conn(m, d);
      return MILTER_CONTINUE;
    }
    if (d == MF_DISCARD)
      return MILTER_DISCARD;
    /* quarantine is an end-of-message action, as an accept with changes */
    __attribute__((fallthrough));
  case MF_ACCEPT:
    if (is_conn_event(m->event))
      return MILTER_ACCEPT;
    if (m->event == MILTER_CMD_EOB)
      return send_actions(m, d);
    if (d == MF_ACCEPT && !mf_engine_has_changes(&m->trx))
      return MILTER_ACCEPT;
    m->held = HELD_VERDICT; /* modifications only at end of message */
    m->held_d = d;
    return MILTER_CONTINUE;
  case MF_FAIL:
  default: {
    const char *e = mf_engine_last_error(&m->trx);
    char why[400];
    snprintf(why, sizeof(why), "the decision function failed%s%s%s",
             e[0] ? " (last error: " : "", e, e[0] ? ")" : "");
    return on_failure(m->ctx, why);
  }
  }
}

static milter_status rcpt_verdict(fmsg *m, mf_decision d) {
  milter_status st = MILTER_CONTINUE;
  switch (d) {
  case MF_REJECT:
  case MF_TEMPFAIL:
    set_user_reply(m, d);
    st = d == MF_REJECT ? MILTER_REJECT : MILTER_TEMPFAIL;
    break;
  case MF_FAIL:
    st = on_failure(m->ctx, "the recipient validator failed");
    if (st == MILTER_ACCEPT)
      st = MILTER_CONTINUE; /* ACCEPT at RCPT would accept the message */
    break;
  default:
    break; /* ACCEPT, and nonsense like DISCARD: keep the recipient */
  }
  if (st == MILTER_REJECT || st == MILTER_TEMPFAIL)
    mf_engine_rcpt_drop_last(&m->trx);
  /* The reply was for this recipient only. */
  mf_engine_clear_reply(&m->trx);
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
  fmsg *m = arg;
  mf_decision d = (mf_decision)atomic_load(&m->result);
  if (milter_ctx_closed(ctx)) {
    /* The MTA gave up waiting (its timeout; the server logged it): no
     * verdict to compute or send.  The reply releases the transaction. */
    milter_ctx_log(ctx, MILTER_LOG_INFO,
                   "queue id %s: decision %s dropped: the MTA has left",
                   qid(ctx), decision_name(d));
    milter_ctx_reply(ctx, MILTER_TEMPFAIL);
    return;
  }
  milter_status st = m->kind == JOB_RCPT ? rcpt_verdict(m, d) : verdict(m, d);
  /* The answer is complete (actions and reply are core's copies). */
  if (m->kind == JOB_DECIDE &&
      (is_conn_event(m->event) || m->event == MILTER_CMD_EOB))
    drop_msg(ctx);
  milter_ctx_reply(ctx, st);
}

static void complete_hook(mf_trx *trx, mf_decision d, void *arg) {
  (void)trx;
  fmsg *m = arg;
  atomic_store(&m->result, (int)d);
  milter_ctx_post(m->ctx, on_done, m);
}

static mf_decision run_user(fmsg *m) {
  mf_filter *f = filter_of(m);
  if (m->kind == JOB_RCPT)
    return mf_engine_validate_rcpt(&m->trx, f->opts.validate_rcpt, f->ud);
  return mf_engine_decide(&m->trx, f->opts.stage, f->decide, f->ud);
}

static fmsg *msg_of_job(mf_job *job);

static void job_fn(mf_job *job) {
  fmsg *m = msg_of_job(job);
  mf_decision d = run_user(m);
  if (d != MF_PENDING)
    complete_hook(&m->trx, d, m);
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

static fmsg *msg_of_job(mf_job *job) {
  return (fmsg *)((char *)job - offsetof(fmsg, job));
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
    fmsg *m = msg_of_job(j);
    milter_ctx_reply(m->ctx,
                     on_failure(m->ctx, "worker pool is shutting down"));
  }
}

/* Queue m's job; 0 or MF_E_STATE (the pool is shutting down). */
static int queue_job(fmsg *m) {
  mf_pool *pool = filter_of(m)->pool;
  m->job.fn = job_fn;
  m->job.next = NULL;
  if (batch.head != NULL && batch.pool == pool) {
    batch.tail->next = &m->job;
    batch.tail = &m->job;
    return 0;
  }
  /* The first of a batch: its ctx carries the flush (its reply is
   * PENDING from our return until the worker's result is posted, which
   * cannot happen before the flush ran). */
  if (batch.head != NULL || milter_ctx_post(m->ctx, flush_batch, NULL) != 0)
    return mf_pool_push(pool, &m->job); /* no batch: at once */
  batch.pool = pool;
  batch.head = batch.tail = &m->job;
  return 0;
}

/* Limits hit before the decision: the configured action, or on to the
 * decision (TRUNCATE). */
static int limit_status(fmsg *m, milter_status *st) {
  int lim = mf_engine_limit_hit(&m->trx);
  if (lim == 0)
    return 0;
  const mf_opts *o = &filter_of(m)->opts;
  mf_action_kind k = lim == 1   ? o->header_limit
                     : lim == 2 ? o->body_limit
                                : o->rcpt_limit;
  const char *what = lim == 1 ? "header" : lim == 2 ? "body" : "recipients";
  milter_ctx_log(m->ctx, MILTER_LOG_WARNING,
                 "queue id %s: %s over the limit (%s): %s", qid(m->ctx), what,
                 mf_engine_last_error(&m->trx),
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
      milter_ctx_setreply(m->ctx, "550", "5.5.3", "Too many recipients");
    else
      milter_ctx_setreply(m->ctx, "552", "5.3.4",
                          lim == 1 ? "Message header too large"
                                   : "Message size exceeds fixed limit");
    *st = MILTER_REJECT;
    return 1;
  case MF_DO_TEMPFAIL:
  default:
    if (lim == 3)
      milter_ctx_setreply(m->ctx, "452", "4.5.3", "Too many recipients");
    else
      milter_ctx_setreply(m->ctx, "452", "4.3.4",
                          "Message too large for the mail filter");
    *st = MILTER_TEMPFAIL;
    return 1;
  }
}

static milter_status start(fmsg *m, uint8_t event, int kind) {
  mf_filter *f = filter_of(m);
  m->event = event;
  m->kind = (uint8_t)kind;
  if (kind == JOB_DECIDE && !is_conn_event(event)) {
    m->decided = 1;
    milter_status st;
    if (limit_status(m, &st)) {
      if (st == MILTER_CLOSE || !eoh_quiet(m))
        return st;
      m->held = HELD_LIMIT; /* answered at end of message (reply kept) */
      m->limit_st = (uint8_t)st;
      return MILTER_NOREPLY;
    }
  }
  if (snapshot_macros(m) != 0) {
    milter_status st = on_failure(m->ctx, "out of memory for the macros");
    return kind == JOB_RCPT && st == MILTER_ACCEPT ? MILTER_CONTINUE : st;
  }
  if (f->opts.flags & MF_OPT_NONBLOCKING) {
    mf_decision d = run_user(m);
    if (d == MF_PENDING)
      return MILTER_PENDING;
    return kind == JOB_RCPT ? rcpt_verdict(m, d) : verdict(m, d);
  }
  if (queue_job(m) != 0)
    return on_failure(m->ctx, "worker pool is shutting down");
  return MILTER_PENDING;
}

/* ------------------------------------------------------------------------ */
/* Core callbacks                                                           */
/* ------------------------------------------------------------------------ */

/* A decision at CONNECT or HELO: its fmsg lives as long as it runs. */
static milter_status conn_decide(milter_ctx *ctx, fconn *fc, uint8_t event) {
  fmsg *m = ensure_msg(ctx, fc);
  if (m == NULL)
    return on_failure(ctx, "out of memory");
  fc->flags |= FC_DECIDED;
  milter_status st = start(m, event, JOB_DECIDE);
  if (st != MILTER_PENDING)
    drop_msg(ctx); /* fc may have moved (hold_conn) */
  return st;
}

static milter_status cb_connect(milter_ctx *ctx,
                                const milter_connect_info *ci) {
  fconn *old = milter_ctx_get_data(ctx);
  const char *helo = NULL;
  if (old != NULL) { /* a second CONNECT: a new connection, the HELO kept */
    drop_msg(ctx);
    mf_conn c;
    conn_view(old, &c);
    helo = c.helo;
  }
  fconn *fc = fc_build(ctx, old, ci->hostname != NULL ? ci->hostname : "",
                       ci->address != NULL ? ci->address : "", helo, NULL);
  if (fc == NULL && old == NULL) {
    milter_ctx_log(ctx, MILTER_LOG_ERROR, "out of memory for a connection");
    return MILTER_TEMPFAIL;
  }
  if (fc == NULL) {
    old->flags &= (uint8_t)~(FC_DECIDED | FC_HELD | FC_DISCARD | FC_REASON);
    return on_failure(ctx, "out of memory");
  }
  fc->flags &= (uint8_t)~(FC_DECIDED | FC_HELD | FC_DISCARD);
  fc->family = ci->family;
  fc->port = ci->port;
  if (((mf_filter *)milter_ctx_filter_data(ctx))->opts.stage ==
      MF_STAGE_CONNECT)
    return conn_decide(ctx, fc, MILTER_CMD_CONNECT);
  return MILTER_NOREPLY;
}

static milter_status cb_helo(milter_ctx *ctx, const char *helo) {
  fconn *fc = get_fc(ctx);
  if (fc == NULL)
    return MILTER_TEMPFAIL;
  if (helo == NULL)
    return on_failure(ctx, "out of memory");
  mf_conn c;
  conn_view(fc, &c);
  /* The same name again (Postfix repeats HELO after STARTTLS): kept. */
  if ((c.helo == NULL || strcmp(c.helo, helo) != 0) &&
      (fc = fc_build(ctx, fc, c.hostname, c.ip, helo, conn_reason(fc))) ==
          NULL)
    return on_failure(ctx, "out of memory");
  if (((mf_filter *)milter_ctx_filter_data(ctx))->opts.stage ==
          MF_STAGE_HELO &&
      !(fc->flags & FC_DECIDED))
    return conn_decide(ctx, fc, MILTER_CMD_HELO);
  return MILTER_NOREPLY;
}

static milter_status cb_envfrom(milter_ctx *ctx, size_t argc,
                                const char *const *argv) {
  fconn *fc = get_fc(ctx);
  if (fc == NULL)
    return MILTER_TEMPFAIL;
  drop_msg(ctx); /* a message not ended by end of message or ABORT */
  fmsg *m = ensure_msg(ctx, fc);
  if (m == NULL)
    return on_failure(ctx, "out of memory");
  int rc = mf_engine_mail(&m->trx, argc, argv);
  if (rc == MF_E_NOMEM)
    return on_failure(ctx, "out of memory");
  if (rc != 0)
    milter_ctx_log(ctx, MILTER_LOG_INFO, "%s (kept as text)",
                   mf_engine_last_error(&m->trx));
  if (filter_of(m)->opts.stage == MF_STAGE_MAIL && !(fc->flags & FC_HELD))
    return start(m, MILTER_CMD_MAIL, JOB_DECIDE);
  return MILTER_NOREPLY;
}

static milter_status cb_envrcpt(milter_ctx *ctx, size_t argc,
                                const char *const *argv) {
  fconn *fc;
  fmsg *m = get_msg(ctx, &fc);
  if (m == NULL)
    return no_trx(ctx);
  int rc = mf_engine_rcpt(&m->trx, argc, argv);
  if (rc == MF_E_NOMEM)
    return on_failure(ctx, "out of memory");
  if (rc == MF_E_LIMIT)
    return MILTER_NOREPLY; /* acted upon at the decision */
  if (rc != 0)
    milter_ctx_log(ctx, MILTER_LOG_INFO, "%s (kept as text)",
                   mf_engine_last_error(&m->trx));
  if (filter_of(m)->opts.validate_rcpt != NULL && !m->decided &&
      !(fc->flags & FC_HELD))
    return start(m, MILTER_CMD_RCPT, JOB_RCPT);
  return MILTER_NOREPLY;
}

static milter_status cb_data(milter_ctx *ctx) {
  fconn *fc;
  fmsg *m = get_msg(ctx, &fc);
  if (m == NULL)
    return no_trx(ctx);
  mf_stage s = filter_of(m)->opts.stage;
  if ((s == MF_STAGE_RCPT || s == MF_STAGE_DATA) && !m->decided &&
      !(fc->flags & FC_HELD))
    return start(m, MILTER_CMD_DATA, JOB_DECIDE);
  return MILTER_NOREPLY;
}

static milter_status cb_header(milter_ctx *ctx, const char *name,
                               const char *value) {
  fconn *fc;
  fmsg *m = get_msg(ctx, &fc);
  if (m == NULL)
    return no_trx(ctx);
  if (m->decided || (fc->flags & FC_HELD))
    return MILTER_NOREPLY;
  int lead = (milter_ctx_protocol(ctx) & MILTER_P_HDR_LEADSPC) != 0;
  int rc = mf_engine_header(&m->trx, name, value, strlen(value), lead);
  if (rc == MF_E_NOMEM)
    return on_failure(ctx, "out of memory");
  if (rc != 0 && rc != MF_E_LIMIT)
    milter_ctx_log(ctx, MILTER_LOG_WARNING, "queue id %s: %s (field dropped)",
                   qid(ctx), mf_engine_last_error(&m->trx));
  return MILTER_NOREPLY;
}

static milter_status cb_eoh(milter_ctx *ctx) {
  fconn *fc;
  fmsg *m = get_msg(ctx, &fc);
  if (m == NULL)
    return no_trx(ctx);
  mf_engine_eoh(&m->trx);
  /* EOH decides; so do RCPT/DATA with an MTA too old to send DATA. */
  mf_stage s = m->trx.opts->stage;
  if (!m->decided && !(fc->flags & FC_HELD) && s >= MF_STAGE_MAIL &&
      s <= MF_STAGE_EOH)
    return start(m, MILTER_CMD_EOH, JOB_DECIDE);
  return MILTER_NOREPLY;
}

static milter_status cb_body(milter_ctx *ctx, const uint8_t *chunk,
                             size_t len) {
  fconn *fc;
  fmsg *m = get_msg(ctx, &fc);
  if (m == NULL)
    return no_trx(ctx);
  if (m->decided || (fc->flags & FC_HELD))
    return MILTER_NOREPLY;
  int rc = mf_engine_body(&m->trx, chunk, len);
  if (rc != 0 && rc != MF_E_LIMIT && !m->limit_logged) {
    m->limit_logged = 1;
    return on_failure(ctx, mf_engine_last_error(&m->trx));
  }
  return MILTER_NOREPLY;
}

static milter_status eom_status(fconn *fc, fmsg *m) {
  milter_ctx *ctx = m->ctx;
  m->event = MILTER_CMD_EOB;
  if (fc->flags & FC_HELD) {
    if (fc->flags & FC_DISCARD)
      return MILTER_DISCARD;
    const char *reason = conn_reason(fc);
    if (milter_ctx_quarantine(ctx, reason ? reason : "quarantined") != 0)
      return on_failure(ctx, "cannot quarantine");
    return MILTER_ACCEPT;
  }
  if (m->held == HELD_LIMIT)
    return (milter_status)m->limit_st;
  if (m->held == HELD_VERDICT)
    return verdict(m, m->held_d);
  if (!m->decided)
    return start(m, MILTER_CMD_EOB, JOB_DECIDE);
  return MILTER_CONTINUE;
}

static milter_status cb_eom(milter_ctx *ctx) {
  fconn *fc;
  fmsg *m = get_msg(ctx, &fc);
  if (m == NULL)
    return no_trx(ctx);
  milter_status st = eom_status(fc, m);
  if (st != MILTER_PENDING)
    drop_msg(ctx); /* on_done drops it after a decision on a worker */
  return st;
}

static void cb_abort(milter_ctx *ctx) {
  drop_msg(ctx);
}

static void cb_close(milter_ctx *ctx) {
  fconn *fc = milter_ctx_get_data(ctx);
  if (fc == NULL)
    return;
  drop_msg(ctx);
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
  if (add_names(f, f->user_macros) != 0)
    return MF_E_NOMEM;
  /* Symbol lists: at connect always (for "v"); at the later stages up to
   * the decision only when the user asks for more than the MTA's default
   * (a list replaces the MTA's own for that stage). */
  int user = f->user_macros != NULL && f->user_macros[0] != '\0';
  int last = macro_stage_of(s);
  for (size_t i = 0; i < sizeof(macro_order) / sizeof(macro_order[0]); i++) {
    int m = macro_order[i];
    const char *base = user ? default_macros[m] : connect_always;
    size_t n = strlen(base) + 2 + (user ? strlen(f->user_macros) : 0);
    if ((f->symlist[m] = xmalloc(n)) == NULL)
      return MF_E_NOMEM;
    snprintf(f->symlist[m], n, "%s%s%s", base, user ? " " : "",
             user ? f->user_macros : "");
    d->macros[m] = f->symlist[m];
    if (m == last || !user)
      break;
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
  free(f->snaplen);
  for (int m = 0; m < MILTER_M_COUNT; m++)
    free(f->symlist[m]);
  free(f->user_macros);
  free(f);
}
