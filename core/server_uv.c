/* server_uv.c -- the libuv glue around the sans-I/O session.
 *
 * One loop thread serves every connection.  Reads go into one read buffer
 * per server (alloc_cb); the decoder copies only a partial packet into the
 * connection, so an idle connection holds no buffer.  Replies produced by
 * one read are written with one write.  A reply left PENDING stops reading
 * until milter_ctx_reply(); its wake-up is deferred to an idle handle so
 * that user code is never re-entered. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listen.h"
#include "mf_alloc.h"
#include "notify.h"
#include "post.h"
#include "session.h"
#include "sigpipe.h"

typedef union stream_u {
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_stream_t stream;
  uv_handle_t handle;
} stream_u;

enum { TM_OFF, TM_IDLE, TM_PACKET };

typedef struct conn {
  stream_u h;
  struct conn *prev, *next;   /* every live conn (the server: CSRV) */
  struct conn *wnext;         /* wake list */
  struct conn *tprev, *tnext; /* the server's list for tmode */
  uint64_t due;               /* loop time when tmode's timeout fires */
  uint8_t handles;            /* open libuv handles */
  uint8_t tmode;              /* TM_*: the timeout running, and its list */
  unsigned sock_open : 1;
  unsigned reading : 1;
  unsigned on_wake : 1;
  unsigned kept : 1;   /* socket gone, reply still pending */
  unsigned writes : 1; /* a uv_write in flight (one at a time) */
  milter_ctx ctx;
  char peer[]; /* ctx.peer: the MTA's address, in the same block */
} conn;

/* A conn's server, from its session's environment (a pointer less). */
#define CSRV(c) ((c)->ctx.env->server)

struct milter_server {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int own;
  milter_filter_desc desc;
  milter_server_opts opts;
  milter_session_env env;
  milter_acceptor acc; /* listeners; inited by the first listen */
  int port;
  conn *conns;
  unsigned nconns; /* open sockets */
  unsigned nctx;   /* conn structs alive */
  conn *wake_head;
  milter_poster poster;
  uv_async_t stop_async;
  uv_idle_t idle;
  uv_timer_t drain;
  /* Connection timeouts (arm_timer): the conns of each TM_* mode in the
   * order of their deadlines, and one timer for them all. */
  conn *thead[3], *ttail[3];
  uv_timer_t ctimer;
  uint64_t ctimer_due; /* when ctimer fires, while active */
  uv_signal_t sigs[2];
  int nsigs;
  mf_sigpipe_pair sigpipe; /* SIGPIPE blocked in the poll phase */
  /* The service manager (notify.h): on when NOTIFY_SOCKET was set. */
  mf_notify notify;
  uv_timer_t notify_timer; /* inited only when notify is on */
  uint64_t messages; /* end-of-message commands (env.eom_count) */
  unsigned st_conns; /* counts of the last STATUS= sent */
  uint64_t st_msgs;
  int ready; /* READY=1 sent */
  int stopping;
  int handles_open;
  atomic_int closed; /* server handles closing: stop() is a no-op */
  char rbuf[65536];
};

/* Input kept while a reply is pending before reading stops. */
#define PAUSED_BACKLOG_MAX (MILTER_DATA_1M + 5)

#define SLOG(srv, lvl, ...) milter_logf(&(srv)->env, lvl, __VA_ARGS__)

void milter_server_opts_init(milter_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_connections = 10000;
  o->packet_timeout_ms = 30000;
  o->idle_timeout_ms = 1800000;
  o->hard_cap = MILTER_DEFAULT_HARD_CAP;
  o->backlog = 4096;
  o->unix_mode = 0660;
  o->drain_timeout_ms = 30000;
  o->handle_signals = 1;
  o->notify = 1;
  o->log = milter_log_stderr;
  o->log_level = MILTER_LOG_INFO;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void server_check_done(milter_server *srv);
static void conn_close(conn *c);

static void conn_maybe_free(conn *c) {
  if (c->handles != 0 || c->kept || c->on_wake)
    return;
  milter_server *srv = CSRV(c);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  milter_session_free(&c->ctx);
  free(c);
  srv->nctx--;
  server_check_done(srv);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  c->handles--;
  conn_maybe_free(c);
}

typedef struct wreq {
  uv_write_t req;
  milter_buf buf;
} wreq;

/* The one line for a failed write (the caller closes the connection). */
static void log_write_error(conn *c, int err) {
  if (err == UV_EPIPE || err == UV_ECONNRESET)
    milter_ctx_log(&c->ctx, MILTER_LOG_INFO,
                   "closing: MTA left before the reply (write: %s)",
                   uv_strerror(err));
  else
    milter_ctx_log(&c->ctx, MILTER_LOG_WARNING, "closing: write error: %s",
                   uv_strerror(err));
}

static int conn_flush(conn *c);

static void on_written(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  conn *c = req->data;
  c->writes = 0;
  milter_buf_free(&w->buf);
  free(w);
  if (!c->sock_open || status == UV_ECANCELED)
    return;
  if (status < 0) {
    log_write_error(c, status);
    conn_close(c);
  } else if (conn_flush(c) < 0) { /* what came meanwhile */
    conn_close(c);
  }
}

/* Write ctx->out: try at once (send, no SIGPIPE), hand the rest to libuv
 * (written with SIGPIPE blocked, see sigpipe.h).  While that write is in
 * flight, new output waits in ctx->out for on_written.  Returns 0 or an
 * error. */
static int conn_flush(conn *c) {
  milter_buf *out = &c->ctx.out;
  if (out->len == 0)
    return 0;
  if (!c->sock_open) {
    milter_buf_free(out);
    return 0;
  }
  if (c->writes)
    return 0;
  int n = mf_send_nosig(&c->h.stream, out->data, out->len);
  if (n == (int)out->len) {
    out->len = 0;
    /* Between messages the buffer goes: an idle connection holds none
     * (bench/MEMORY.md); within a message it is kept for the next reply. */
    if (out->cap > 4096 || !milter_session_busy(&c->ctx))
      milter_buf_free(out);
    return 0;
  }
  if (n < 0) {
    log_write_error(c, n);
    return MILTER_E_IO;
  }
  if (n > 0)
    milter_buf_consume(out, (size_t)n);
  wreq *w = xmalloc(sizeof *w);
  if (w == NULL)
    return MILTER_E_NOMEM;
  w->buf = *out;
  milter_buf_init(out);
  w->req.data = c;
  uv_buf_t b = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
  int rc = mf_uv_write(&w->req, &c->h.stream, &b, 1, on_written);
  if (rc < 0) {
    milter_buf_free(&w->buf);
    free(w);
    return MILTER_E_IO;
  }
  c->writes = 1;
  return 0;
}

/* Connection timeouts.  A uv_timer_t per connection would cost 152 bytes
 * each; instead every timeout kind (idle, packet) has one fixed duration, so
 * a deadline set now is never earlier than any already in its list:
 * appending keeps each list sorted by deadline, re-arming is an unlink and
 * an append, and one timer runs for the earliest head.  The timer may fire
 * early (its head was re-armed since): it then only runs again. */
static void tl_unlink(conn *c) {
  milter_server *srv = CSRV(c);
  int m = c->tmode;
  if (m == TM_OFF)
    return;
  if (c->tprev != NULL)
    c->tprev->tnext = c->tnext;
  else
    srv->thead[m] = c->tnext;
  if (c->tnext != NULL)
    c->tnext->tprev = c->tprev;
  else
    srv->ttail[m] = c->tprev;
  c->tprev = c->tnext = NULL;
  c->tmode = TM_OFF;
}

static void on_conn_timers(uv_timer_t *t);

static void tl_schedule(milter_server *srv) {
  uint64_t due = UINT64_MAX;
  for (int m = TM_IDLE; m <= TM_PACKET; m++)
    if (srv->thead[m] != NULL && srv->thead[m]->due < due)
      due = srv->thead[m]->due;
  if (due == UINT64_MAX ||
      (uv_is_active((uv_handle_t *)&srv->ctimer) && srv->ctimer_due <= due))
    return;
  uint64_t now = uv_now(srv->loop);
  srv->ctimer_due = due;
  uv_timer_start(&srv->ctimer, on_conn_timers, due > now ? due - now : 0, 0);
}

/* Start timeout mode m of ms milliseconds from now (0: none). */
static void tl_arm(conn *c, int m, uint64_t ms) {
  milter_server *srv = CSRV(c);
  tl_unlink(c);
  if (ms == 0)
    return;
  c->tmode = (uint8_t)m;
  c->due = uv_now(srv->loop) + ms;
  c->tprev = srv->ttail[m];
  if (c->tprev != NULL)
    c->tprev->tnext = c;
  else
    srv->thead[m] = c;
  srv->ttail[m] = c;
  tl_schedule(srv);
}

static void on_conn_timers(uv_timer_t *t) {
  milter_server *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  for (int m = TM_IDLE; m <= TM_PACKET; m++) {
    conn *c;
    while ((c = srv->thead[m]) != NULL && c->due <= now) {
      tl_unlink(c);
      milter_ctx_log(&c->ctx, MILTER_LOG_WARNING,
                     m == TM_PACKET ? "closing: packet not complete after %llu ms"
                                    : "closing: idle for %llu ms",
                     (unsigned long long)(m == TM_PACKET
                                              ? srv->opts.packet_timeout_ms
                                              : srv->opts.idle_timeout_ms));
      conn_close(c);
    }
  }
  tl_schedule(srv);
}

static void arm_timer(conn *c) {
  const milter_server_opts *o = &CSRV(c)->opts;
  if (milter_session_paused(&c->ctx)) {
    tl_unlink(c);
  } else if (milter_decoder_busy(&c->ctx.dec)) {
    /* The packet clock runs from the packet's first byte (slowloris). */
    if (c->tmode != TM_PACKET)
      tl_arm(c, TM_PACKET, o->packet_timeout_ms);
  } else {
    tl_arm(c, TM_IDLE, o->idle_timeout_ms);
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn *c = h->data;
  (void)hint;
  *buf = uv_buf_init(CSRV(c)->rbuf, sizeof CSRV(c)->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* After the session consumed input (r from feed/resume). */
static void conn_after(conn *c, int r) {
  if (!c->sock_open)
    return;
  if (conn_flush(c) < 0 && r >= 0)
    r = MILTER_E_IO;
  if (r < 0) {
    conn_close(c);
    return;
  }
  /* While a reply is pending the MTA normally sends nothing: reading on
   * sees at once that it gave up (its timeout) and closed.  Bytes it does
   * send wait in the session's backlog, up to a bound. */
  if (r == MILTER_SESSION_PAUSED && c->ctx.backlog.len >= PAUSED_BACKLOG_MAX) {
    if (c->reading)
      uv_read_stop(&c->h.stream);
    c->reading = 0;
  } else if (!c->reading) {
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
      c->reading = 1;
  }
  if (CSRV(c)->stopping && !milter_session_busy(&c->ctx)) {
    milter_ctx_log(&c->ctx, MILTER_LOG_INFO,
                   "closing: server stopping, no message in progress");
    conn_close(c);
    return;
  }
  arm_timer(c);
}

/* The MTA closed the connection (EOF): say what that cost. */
static void log_mta_closed(conn *c) {
  milter_ctx *ctx = &c->ctx;
  const char *q = milter_ctx_macro(ctx, "i");
  if (q == NULL || q[0] == '\0')
    q = "-";
  if (ctx->pending)
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "MTA closed the connection while the reply to %s was "
                   "pending (queue id %s): it gave up waiting; that reply "
                   "will be dropped",
                   milter_cmd_name(ctx->pending), q);
  else if (milter_decoder_busy(&ctx->dec))
    milter_ctx_log(ctx, MILTER_LOG_WARNING,
                   "closing: MTA closed the connection mid-packet (queue id "
                   "%s)",
                   q);
  else if (ctx->in_msg)
    milter_ctx_log(ctx, MILTER_LOG_INFO,
                   "MTA closed the connection mid-message (queue id %s)", q);
  else
    milter_ctx_log(ctx, MILTER_LOG_DEBUG, "MTA closed the connection");
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = s->data;
  if (n > 0) {
    conn_after(
        c, milter_session_feed(&c->ctx, (const uint8_t *)buf->base, (size_t)n));
  } else if (n < 0) {
    /* A reset is the MTA leaving too (it closed with unread data). */
    if (n != UV_EOF && n != UV_ECONNRESET)
      milter_ctx_log(&c->ctx, MILTER_LOG_WARNING, "closing: read error: %s",
                     uv_strerror((int)n));
    else
      log_mta_closed(c);
    conn_close(c);
  }
}

static void conn_close(conn *c) {
  if (!c->sock_open)
    return;
  milter_server *srv = CSRV(c);
  c->sock_open = 0;
  c->reading = 0;
  srv->nconns--;
  uv_close(&c->h.handle, on_conn_handle_closed);
  tl_unlink(c);
  c->kept = milter_session_gone(&c->ctx) == 1;
  milter_buf_free(&c->ctx.out); /* nobody to send it to */
}

/* Deferred service of a woken conn (reply given, progress queued). */
static void conn_service(conn *c) {
  if (!c->sock_open) {
    if (c->kept && !milter_session_paused(&c->ctx))
      c->kept = milter_session_gone(&c->ctx) == 1;
    milter_buf_free(&c->ctx.out);
    return;
  }
  conn_after(c, milter_session_resume(&c->ctx));
}

static void on_idle(uv_idle_t *h) {
  milter_server *srv = h->data;
  conn *list = srv->wake_head;
  srv->wake_head = NULL;
  uv_idle_stop(h);
  while (list != NULL) {
    conn *c = list;
    list = c->wnext;
    c->on_wake = 0;
    conn_service(c);
    conn_maybe_free(c);
  }
}

static void on_wake(milter_ctx *ctx) {
  conn *c = ctx->glue;
  milter_server *srv = CSRV(c);
  if (c->on_wake)
    return;
  c->on_wake = 1;
  c->wnext = srv->wake_head;
  srv->wake_head = c;
  uv_idle_start(&srv->idle, on_idle);
}

static void free_data_cb(uv_handle_t *h) {
  free(h->data);
}

/* An accepted socket (listen.c): a connection, or refused at once when
 * max_connections are open (the MTA applies its default action now rather
 * than after its connect timeout). */
static int on_accepted(void *data, int fd, int is_unix, const char *peer) {
  milter_server *srv = data;
  if (srv->nconns >= srv->opts.max_connections) {
    close(fd);
    return MILTER_ACCEPT_REFUSED;
  }
  size_t plen = strlen(peer) + 1;
  conn *c = xcalloc(1, sizeof *c + plen);
  if (c == NULL) {
    close(fd);
    return -ENOMEM;
  }
  memcpy(c->peer, peer, plen);
  int rc;
  if (is_unix) {
    uv_pipe_init(srv->loop, &c->h.pipe, 0);
    rc = uv_pipe_open(&c->h.pipe, fd);
  } else {
    uv_tcp_init(srv->loop, &c->h.tcp);
    rc = uv_tcp_open(&c->h.tcp, fd);
    if (rc == 0)
      uv_tcp_nodelay(&c->h.tcp, 1);
  }
  c->h.handle.data = c;
  if (rc < 0) {
    SLOG(srv, MILTER_LOG_ERROR, "%s: closing: %s", peer, uv_strerror(rc));
    close(fd); /* a handle takes the fd only when open succeeds */
    uv_close(&c->h.handle, free_data_cb);
    return MILTER_ACCEPT_TAKEN;
  }
  c->handles = 1;
  milter_session_init(&c->ctx, &srv->desc, &srv->env, c, c->peer);
  c->next = srv->conns;
  if (srv->conns != NULL)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  srv->nctx++;
  c->sock_open = 1;
  if (uv_read_start(&c->h.stream, on_alloc, on_read) != 0) {
    conn_close(c);
    return MILTER_ACCEPT_TAKEN;
  }
  c->reading = 1;
  arm_timer(c);
  return MILTER_ACCEPT_TAKEN;
}

/* ------------------------------------------------------------------------ */
/* The service manager (milter.h, SYSTEMD)                                  */
/* ------------------------------------------------------------------------ */

enum { NOTIFY_TICK_MS = 1000 };

/* first ("READY=1\n", "STOPPING=1\n" or "") and STATUS= with the counts. */
static void notify_send(milter_server *srv, const char *first) {
  char msg[160];
  snprintf(msg, sizeof msg, "%sSTATUS=%s%u connection%s, %llu message%s", first,
           srv->stopping ? "stopping: " : "", srv->nconns,
           srv->nconns == 1 ? "" : "s", (unsigned long long)srv->messages,
           srv->messages == 1 ? "" : "s");
  if (mf_notify_send(&srv->notify, msg) < 0)
    return;
  if (first[0] == 'R')
    srv->ready = 1;
  srv->st_conns = srv->nconns;
  srv->st_msgs = srv->messages;
}

/* The first tick runs once the loop runs with a listener: READY=1 (retried
 * at the next tick if the send failed); then STATUS= when the counts
 * changed, and WATCHDOG=1 when the manager wants it. */
static void on_notify_tick(uv_timer_t *t) {
  milter_server *srv = t->data;
  if (!srv->ready && !srv->stopping)
    notify_send(srv, "READY=1\n");
  else if (srv->st_conns != srv->nconns || srv->st_msgs != srv->messages)
    notify_send(srv, "");
  if (srv->notify.watchdog_usec != 0)
    mf_notify_send(&srv->notify, "WATCHDOG=1");
}

static void notify_start(milter_server *srv) {
  if (srv->notify.fd < 0 || srv->stopping ||
      uv_is_active((uv_handle_t *)&srv->notify_timer))
    return;
  uint64_t tick = NOTIFY_TICK_MS;
  uint64_t half_ms = srv->notify.watchdog_usec / 2000;
  if (srv->notify.watchdog_usec != 0 && half_ms < tick)
    tick = half_ms > 0 ? half_ms : 1;
  uv_timer_start(&srv->notify_timer, on_notify_tick, 0, tick);
}

/* ------------------------------------------------------------------------ */
/* Listening                                                                */
/* ------------------------------------------------------------------------ */

static void acceptor_closed(void *data) {
  milter_server *srv = data;
  srv->handles_open--;
  server_check_done(srv);
}

int milter_server_listen(milter_server *srv, const char *spec) {
  if (srv == NULL || spec == NULL)
    return MILTER_E_INVAL;
  if (!srv->acc.inited) {
    milter_acceptor_init(&srv->acc, srv->loop, &srv->env, on_accepted, srv,
                         acceptor_closed);
    srv->handles_open++;
  }
  srv->acc.limit = srv->opts.max_connections;
  int rc = milter_acceptor_listen(&srv->acc, spec, srv->opts.backlog,
                                  srv->opts.unix_mode, srv->opts.reuseport,
                                  &srv->port);
  if (rc == 0)
    notify_start(srv);
  return rc;
}

int milter_server_port(const milter_server *srv) {
  return srv->port;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

static void server_handle_closed(uv_handle_t *h) {
  milter_server *srv = h->data;
  srv->handles_open--;
}

static void server_check_done(milter_server *srv) {
  if (!srv->stopping || srv->nctx != 0 || srv->acc.listeners != NULL ||
      atomic_load(&srv->closed))
    return;
  atomic_store(&srv->closed, 1);
  uv_close((uv_handle_t *)&srv->stop_async, server_handle_closed);
  uv_close((uv_handle_t *)&srv->idle, server_handle_closed);
  uv_close((uv_handle_t *)&srv->drain, server_handle_closed);
  uv_close((uv_handle_t *)&srv->ctimer, server_handle_closed);
  milter_poster_close(&srv->poster, server_handle_closed);
  mf_sigpipe_pair_close(&srv->sigpipe, server_handle_closed);
  if (srv->notify.fd >= 0)
    uv_close((uv_handle_t *)&srv->notify_timer, server_handle_closed);
  for (int i = 0; i < srv->nsigs; i++)
    if (!uv_is_closing((uv_handle_t *)&srv->sigs[i]))
      uv_close((uv_handle_t *)&srv->sigs[i], server_handle_closed);
}

static void on_drain_timeout(uv_timer_t *t) {
  milter_server *srv = t->data;
  for (conn *c = srv->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->sock_open) {
      milter_ctx_log(&c->ctx, MILTER_LOG_WARNING,
                     "closing: drain timeout with a message in progress");
      conn_close(c);
    }
  }
}

static void do_stop(milter_server *srv, int now) {
  if (!srv->stopping) {
    srv->stopping = 1;
    SLOG(srv, MILTER_LOG_INFO, "stopping (%u connections)", srv->nconns);
    if (srv->ready) /* a server that never served announces nothing */
      notify_send(srv, "STOPPING=1\n");
    milter_acceptor_close(&srv->acc);
    for (int i = 0; i < srv->nsigs; i++)
      uv_close((uv_handle_t *)&srv->sigs[i], server_handle_closed);
    for (conn *c = srv->conns, *next; c != NULL; c = next) {
      next = c->next;
      if (c->sock_open && !milter_session_busy(&c->ctx)) {
        milter_ctx_log(&c->ctx, MILTER_LOG_INFO,
                       "closing: server stopping, no message in progress");
        conn_close(c);
      }
    }
    if (srv->opts.drain_timeout_ms && !now)
      uv_timer_start(&srv->drain, on_drain_timeout, srv->opts.drain_timeout_ms,
                     0);
    else
      now = 1;
  }
  if (now)
    on_drain_timeout(&srv->drain);
  server_check_done(srv);
}

static void on_stop_async(uv_async_t *a) {
  do_stop(a->data, 0);
}

static void on_signal(uv_signal_t *s, int signum) {
  milter_server *srv = s->data;
  SLOG(srv, MILTER_LOG_INFO, "signal %d: stopping", signum);
  do_stop(srv, 0);
}

int milter_server_new(milter_server **out, uv_loop_t *loop,
                      const milter_filter_desc *desc,
                      const milter_server_opts *opts) {
  if (out == NULL || desc == NULL)
    return MILTER_E_INVAL;
  *out = NULL;
  milter_server *srv = xcalloc(1, sizeof *srv);
  if (srv == NULL)
    return MILTER_E_NOMEM;
  if (loop == NULL) {
    if (uv_loop_init(&srv->own_loop) != 0) {
      free(srv);
      return MILTER_E_IO;
    }
    loop = &srv->own_loop;
    srv->own = 1;
  }
  srv->loop = loop;
  srv->desc = *desc;
  if (opts != NULL)
    srv->opts = *opts;
  else
    milter_server_opts_init(&srv->opts);
  if (srv->opts.hard_cap == 0)
    srv->opts.hard_cap = MILTER_DEFAULT_HARD_CAP;
  if (srv->opts.backlog <= 0)
    srv->opts.backlog = 4096;
  srv->env.server = srv;
  srv->env.wake = on_wake;
  srv->env.poster = &srv->poster;
  srv->env.log = srv->opts.log ? srv->opts.log : milter_log_stderr;
  srv->env.log_data = srv->opts.log_data;
  srv->env.log_level = srv->opts.log_level;
  srv->env.hard_cap = srv->opts.hard_cap;
  srv->env.eom_count = &srv->messages;
  if (milter_poster_init(&srv->poster, loop) < 0) {
    if (srv->own)
      uv_loop_close(loop);
    free(srv);
    return MILTER_E_NOMEM;
  }
  srv->notify.fd = -1;
  if (srv->opts.notify)
    mf_notify_open(&srv->notify, &srv->env);
  srv->poster.async.data = &srv->poster;
  uv_async_init(loop, &srv->stop_async, on_stop_async);
  srv->stop_async.data = srv;
  uv_idle_init(loop, &srv->idle);
  srv->idle.data = srv;
  uv_timer_init(loop, &srv->drain);
  srv->drain.data = srv;
  uv_unref((uv_handle_t *)&srv->drain);
  uv_timer_init(loop, &srv->ctimer);
  srv->ctimer.data = srv;
  uv_unref((uv_handle_t *)&srv->ctimer);
  mf_sigpipe_pair_init(&srv->sigpipe, loop, srv);
  srv->handles_open = 7;
  if (srv->notify.fd >= 0) {
    uv_timer_init(loop, &srv->notify_timer);
    srv->notify_timer.data = srv;
    uv_unref((uv_handle_t *)&srv->notify_timer);
    srv->handles_open++;
  }
  if (srv->opts.handle_signals) {
    static const int signums[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
      uv_signal_init(loop, &srv->sigs[i]);
      srv->sigs[i].data = srv;
      uv_signal_start(&srv->sigs[i], on_signal, signums[i]);
      srv->nsigs++;
      srv->handles_open++;
    }
  }
  *out = srv;
  return 0;
}

int milter_server_run(milter_server *srv) {
  if (srv == NULL)
    return MILTER_E_INVAL;
  mf_sigpipe_enter(); /* the whole run: the pair's guards nest for free */
  uv_run(srv->loop, UV_RUN_DEFAULT);
  mf_sigpipe_leave();
  return 0;
}

void milter_server_stop(milter_server *srv) {
  if (srv != NULL && !atomic_load(&srv->closed))
    uv_async_send(&srv->stop_async);
}

void milter_server_free(milter_server *srv) {
  if (srv == NULL)
    return;
  if (!atomic_load(&srv->closed)) {
    do_stop(srv, 1);
    /* Replies still pending: nobody will give them now. */
    for (conn *c = srv->conns, *next; c != NULL; c = next) {
      next = c->next;
      if (c->kept) {
        c->ctx.pending = 0;
        c->kept = milter_session_gone(&c->ctx) == 1;
        conn_maybe_free(c);
      }
    }
  }
  if (srv->own) {
    mf_sigpipe_enter();
    while (srv->handles_open > 0 || srv->nctx > 0)
      if (uv_run(srv->loop, UV_RUN_ONCE) == 0 && srv->handles_open > 0)
        break;
    mf_sigpipe_leave();
    uv_loop_close(srv->loop);
  }
  mf_notify_close(&srv->notify);
  free(srv);
}

uv_loop_t *milter_server_loop(const milter_server *srv) {
  return srv->loop;
}

unsigned milter_server_connections(const milter_server *srv) {
  return srv->nconns;
}
