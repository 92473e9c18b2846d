/* server_uv.c -- the libuv glue around the sans-I/O session.
 *
 * A server runs N event loops (milter.h, LOOPS), each on its own thread;
 * loop 0 is the one milter_server_run() runs (or the application's).  Loop 0
 * accepts every connection and hands it to the loop with the fewest open
 * connections, through that loop's inbox (a list under a mutex and a
 * uv_async_t); a connection then stays on its loop for its whole life.
 * Within a loop: reads go into one read buffer per loop (alloc_cb); the
 * decoder copies only a partial packet into the connection, so an idle
 * connection holds no buffer.  Replies produced by one read are written with
 * one write.  A reply left PENDING keeps reading into the session's backlog
 * until milter_ctx_reply(); its wake-up is deferred to an idle handle so
 * that user code is never re-entered. */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

/* A connection's handle: a uv_poll_t on the socket (160 bytes against 264
 * for a uv_pipe_t); reads and writes are ours (recv, send MSG_NOSIGNAL). */
typedef union conn_h {
  uv_poll_t poll;
  uv_handle_t handle;
  struct { /* before the handle exists: in a loop's inbox */
    int fd;
    int is_unix;
    const char *peer; /* the server's shared peer text, or NULL */
  } pre;
} conn_h;

/* Timeout modes: the one running for a conn, and the list it is on.
 * TM_HELD is no timeout: the queue of conns held unread at max_pending,
 * first held first read again. */
enum { TM_OFF, TM_IDLE, TM_PACKET, TM_PROGRESS, TM_HELD, TM_COUNT };

typedef struct conn {
  conn_h h;
  struct conn *prev, *next;   /* every live conn of the loop */
  struct conn *wnext;         /* wake list; the inbox before that */
  struct conn *tprev, *tnext; /* the loop's list for tmode */
  uint64_t due;               /* loop time when tmode's timeout fires */
  uint8_t handles;            /* open libuv handles */
  uint8_t tmode;              /* TM_*: the timeout running, and its list */
  uint8_t pmask;              /* UV_READABLE/UV_WRITABLE being polled */
  unsigned sock_open : 1;
  unsigned reading : 1; /* want input (off while a reply waits, backlog full) */
  unsigned on_wake : 1;
  unsigned kept : 1; /* socket gone, reply still pending */
  unsigned pend : 1; /* counted in the loop's npending */
  size_t woff;       /* bytes of ctx.out already sent */
  milter_ctx ctx;
  char peer[]; /* ctx.peer, in the same block (else a server peer_name) */
} conn;

/* A peer text shared by the conns of a unix listener ("unix:/path"),
 * kept until the server is freed. */
typedef struct peer_name {
  struct peer_name *next;
  char s[];
} peer_name;

/* One event loop and the connections on it.  Only its thread touches it,
 * except the fields marked otherwise. */
typedef struct mloop {
  /* First: a conn's session environment is its loop's (CLOOP). */
  milter_session_env env;
  milter_server *srv;
  uv_loop_t *loop;
  uv_loop_t own_loop;
  unsigned idx;
  uv_thread_t thread;
  int thread_started;
  conn *conns;
  atomic_uint nconns; /* open sockets; loop 0 reads it to spread */
  unsigned nctx;      /* conn structs alive */
  conn *wake_head;
  milter_poster poster;
  /* The inbox: conns handed over by loop 0, and stop requests (any
   * thread, under inbox_mu). */
  uv_async_t inbox_async;
  uv_mutex_t inbox_mu;
  conn *inbox_head, *inbox_tail;
  int stop_req; /* 1: stop and drain, 2: stop now */
  uv_idle_t idle;
  uv_timer_t drain;
  /* Connection timeouts (arm_timer): the conns of each TM_* mode in the
   * order of their deadlines, and one timer for them all. */
  conn *thead[TM_COUNT], *ttail[TM_COUNT];
  uv_timer_t ctimer;
  uint64_t ctimer_due; /* when ctimer fires, while active */
  mf_sigpipe_pair sigpipe; /* SIGPIPE blocked in the poll phase */
  /* opts.max_pending: conns of this loop with a reply pending (those held
   * unread meanwhile are on thead[TM_HELD]). */
  unsigned npending;
  uint64_t messages; /* end-of-message commands (env.eom_count), counted
                      * and read with __atomic builtins (STATUS= on loop 0) */
  int stopping;
  int handles_open;
  int closed;
  char rbuf[65536];
} mloop;

struct milter_server {
  mloop *loops;
  unsigned nloops;
  unsigned next_loop; /* where the search for the least busy starts */
  int own;            /* the loops are ours (milter_server_new, NULL) */
  unsigned nrun;      /* loops taking connections: 1 + the threads running */
  milter_filter_desc desc;
  milter_server_opts opts;
  milter_acceptor acc; /* listeners (loop 0); inited by the first listen */
  int port;
  atomic_uint nconns; /* open sockets, every loop */
  atomic_int stop_req;
  uv_signal_t sigs[2];
  int nsigs;
  /* The service manager (notify.h): on when NOTIFY_SOCKET was set. */
  mf_notify notify;
  uv_timer_t notify_timer; /* inited only when notify is on */
  unsigned st_conns; /* counts of the last STATUS= sent */
  uint64_t st_msgs;
  int ready; /* READY=1 sent */
  int stopping;
  atomic_int closed; /* loop 0 closing: stop() is a no-op */
  peer_name *peers; /* loop 0 */
};

/* A conn's loop, from its session's environment (a pointer less). */
#define CLOOP(c) ((mloop *)(void *)(c)->ctx.env)
#define LOOP0(srv) (&(srv)->loops[0])

/* Input kept while a reply is pending before reading stops. */
#define PAUSED_BACKLOG_MAX (MILTER_DATA_1M + 5)

#define SLOG(srv, lvl, ...) milter_logf(&LOOP0(srv)->env, lvl, __VA_ARGS__)

/* Most loops a server runs (MAILFILTER_LOOPS and opts.loops are capped). */
enum { LOOPS_MAX = 1024 };

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
  o->max_pending = 128;
  o->log = milter_log_stderr;
  o->log_level = MILTER_LOG_INFO;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void loop_check_done(mloop *L);
static void conn_close(conn *c);
static int conn_poll(conn *c);

/* An open socket more (d = 1) or less (-1) on loop L, and on the server. */
static void conn_count(mloop *L, int d) {
  if (d > 0) {
    atomic_fetch_add_explicit(&L->nconns, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&L->srv->nconns, 1, memory_order_relaxed);
  } else {
    atomic_fetch_sub_explicit(&L->nconns, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&L->srv->nconns, 1, memory_order_relaxed);
  }
}

static void conn_maybe_free(conn *c) {
  if (c->handles != 0 || c->kept || c->on_wake)
    return;
  mloop *L = CLOOP(c);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    L->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  milter_session_free(&c->ctx);
  free(c);
  L->nctx--;
  loop_check_done(L);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  c->handles--;
  conn_maybe_free(c);
}

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

static void on_poll(uv_poll_t *h, int status, int events);

/* Poll for what the conn wants: input while reading, writability while
 * output waits.  libuv re-arms epoll on every uv_poll_start: only on a
 * change.  Returns 0 or a libuv error. */
static int conn_poll(conn *c) {
  int want = (c->reading ? UV_READABLE : 0) |
             (c->woff < c->ctx.out.len ? UV_WRITABLE : 0);
  if (want == c->pmask)
    return 0;
  int rc = want != 0 ? uv_poll_start(&c->h.poll, want, on_poll)
                     : uv_poll_stop(&c->h.poll);
  if (rc == 0)
    c->pmask = (uint8_t)want;
  return rc;
}

/* Write ctx->out from woff, as much as the socket takes now (send with
 * MSG_NOSIGNAL: never SIGPIPE); the rest when it is writable again.
 * Returns 0 or an error. */
static int conn_flush(conn *c) {
  milter_buf *out = &c->ctx.out;
  if (!c->sock_open) {
    milter_buf_free(out);
    c->woff = 0;
    return 0;
  }
  while (c->woff < out->len) {
    ssize_t n = send(c->h.poll.io_watcher.fd, out->data + c->woff,
                     out->len - c->woff, MSG_NOSIGNAL);
    if (n > 0) {
      c->woff += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    log_write_error(c, n < 0 ? -errno : UV_EPIPE);
    return MILTER_E_IO;
  }
  if (c->woff == out->len) {
    out->len = 0;
    c->woff = 0;
    /* Between messages the buffer goes: an idle connection holds none
     * (bench/MEMORY.md); within a message it is kept for the next reply. */
    if (out->cap > 4096 || !milter_session_busy(&c->ctx))
      milter_buf_free(out);
  }
  return conn_poll(c) == 0 ? 0 : MILTER_E_IO;
}

/* Connection timeouts.  A uv_timer_t per connection would cost 152 bytes
 * each; instead every timeout kind (idle, packet, progress) has one fixed
 * duration, so a deadline set now is never earlier than any already in its
 * list: appending keeps each list sorted by deadline, re-arming is an unlink
 * and an append, and one timer per loop runs for the earliest head.  The
 * timer may fire early (its head was re-armed since): it then only runs
 * again. */
static void tl_unlink(conn *c) {
  mloop *L = CLOOP(c);
  int m = c->tmode;
  if (m == TM_OFF)
    return;
  if (c->tprev != NULL)
    c->tprev->tnext = c->tnext;
  else
    L->thead[m] = c->tnext;
  if (c->tnext != NULL)
    c->tnext->tprev = c->tprev;
  else
    L->ttail[m] = c->tprev;
  c->tprev = c->tnext = NULL;
  c->tmode = TM_OFF;
}

static void on_conn_timers(uv_timer_t *t);

static void tl_schedule(mloop *L) {
  uint64_t due = UINT64_MAX;
  for (int m = TM_IDLE; m < TM_HELD; m++)
    if (L->thead[m] != NULL && L->thead[m]->due < due)
      due = L->thead[m]->due;
  if (due == UINT64_MAX ||
      (uv_is_active((uv_handle_t *)&L->ctimer) && L->ctimer_due <= due))
    return;
  uint64_t now = uv_now(L->loop);
  L->ctimer_due = due;
  uv_timer_start(&L->ctimer, on_conn_timers, due > now ? due - now : 0, 0);
}

/* c (on no list) to the tail of list m. */
static void tl_append(conn *c, int m) {
  mloop *L = CLOOP(c);
  c->tmode = (uint8_t)m;
  c->tprev = L->ttail[m];
  if (c->tprev != NULL)
    c->tprev->tnext = c;
  else
    L->thead[m] = c;
  L->ttail[m] = c;
}

/* Start timeout mode m of ms milliseconds from now (0: none). */
static void tl_arm(conn *c, int m, uint64_t ms) {
  mloop *L = CLOOP(c);
  tl_unlink(c);
  if (ms == 0)
    return;
  c->due = uv_now(L->loop) + ms;
  tl_append(c, m);
  tl_schedule(L);
}

static void on_conn_timers(uv_timer_t *t) {
  mloop *L = t->data;
  const milter_server_opts *o = &L->srv->opts;
  uint64_t now = uv_now(L->loop);
  conn *c;
  /* A reply still pending: PROGRESS, and again after progress_ms (the
   * write and the re-arm happen in conn_after, via the wake-up). */
  while ((c = L->thead[TM_PROGRESS]) != NULL && c->due <= now) {
    tl_unlink(c);
    milter_ctx_progress(&c->ctx);
  }
  for (int m = TM_IDLE; m <= TM_PACKET; m++) {
    while ((c = L->thead[m]) != NULL && c->due <= now) {
      tl_unlink(c);
      milter_ctx_log(&c->ctx, MILTER_LOG_WARNING,
                     m == TM_PACKET ? "closing: packet not complete after %llu ms"
                                    : "closing: idle for %llu ms",
                     (unsigned long long)(m == TM_PACKET ? o->packet_timeout_ms
                                                         : o->idle_timeout_ms));
      conn_close(c);
    }
  }
  tl_schedule(L);
}

static void arm_timer(conn *c) {
  const milter_server_opts *o = &CLOOP(c)->srv->opts;
  if (c->tmode == TM_HELD)
    return; /* waits for held_release, no timeout */
  if (milter_session_paused(&c->ctx)) {
    if (c->tmode != TM_PROGRESS)
      tl_arm(c, TM_PROGRESS, o->progress_ms);
  } else if (milter_session_mid_packet(&c->ctx)) {
    /* The packet clock runs from the packet's first byte (slowloris). */
    if (c->tmode != TM_PACKET)
      tl_arm(c, TM_PACKET, o->packet_timeout_ms);
  } else {
    tl_arm(c, TM_IDLE, o->idle_timeout_ms);
  }
}

/* Bound on replies pending (opts.max_pending): a conn whose reply is
 * pending holds its message until a worker (or whoever completes it)
 * answers; past the bound the loop reads no other connection, so that
 * no new message starts and none grows, and their MTAs wait in the
 * kernel's socket buffers, as libmilter's threads make them wait.  When
 * half of them have been answered, the conns held first are read again,
 * as many as there are free places. */
static void held_release(mloop *L) {
  unsigned max = L->srv->opts.max_pending;
  unsigned places = L->npending < max ? max - L->npending : 0;
  conn *c;
  while (places > 0 && (c = L->thead[TM_HELD]) != NULL) {
    places--;
    tl_unlink(c);
    c->reading = 1;
    if (conn_poll(c) != 0)
      conn_close(c);
    else
      arm_timer(c);
  }
}

/* Keep npending in step with the session (after each feed, resume or
 * gone). */
static void pend_note(conn *c) {
  mloop *L = CLOOP(c);
  unsigned p = milter_session_paused(&c->ctx) ? 1u : 0u;
  if (p == c->pend)
    return;
  c->pend = p;
  if (p) {
    L->npending++;
    return;
  }
  L->npending--;
  if (L->thead[TM_HELD] != NULL &&
      L->npending <= L->srv->opts.max_pending / 2)
    held_release(L);
}

/* Before reading c: hold it when the loop is at its bound (1: held). */
static int held_check(conn *c) {
  mloop *L = CLOOP(c);
  unsigned max = L->srv->opts.max_pending;
  if (max == 0 || L->npending < max || c->pend)
    return 0;
  tl_unlink(c);
  tl_append(c, TM_HELD);
  c->reading = 0;
  if (conn_poll(c) != 0)
    conn_close(c);
  return 1;
}

/* After the session consumed input (r from feed/resume). */
static void conn_after(conn *c, int r) {
  pend_note(c);
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
  c->reading = c->tmode != TM_HELD && !(r == MILTER_SESSION_PAUSED &&
                               milter_session_held_input(&c->ctx) >=
                                   PAUSED_BACKLOG_MAX);
  if (conn_poll(c) != 0) {
    conn_close(c);
    return;
  }
  if (CLOOP(c)->stopping && !milter_session_busy(&c->ctx)) {
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
  else if (milter_session_mid_packet(ctx))
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

/* Input (one read per wake-up: epoll is level-triggered, the rest comes
 * at the next iteration, fair to the other connections of the loop), or
 * room to write. */
static void on_poll(uv_poll_t *h, int status, int events) {
  conn *c = h->data;
  if (status < 0) {
    /* libuv reports POLLERR as UV_EBADF: the socket's pending error says
     * what happened (a reset is the MTA, or a health check, leaving). */
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(h->io_watcher.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
    if (err == ECONNRESET || err == EPIPE)
      log_mta_closed(c);
    else
      milter_ctx_log(&c->ctx, MILTER_LOG_WARNING, "closing: socket error: %s",
                     err != 0 ? strerror(err) : uv_strerror(status));
    conn_close(c);
    return;
  }
  if ((events & UV_WRITABLE) && conn_flush(c) < 0) {
    conn_close(c);
    return;
  }
  if (!(events & UV_READABLE) || !c->reading || held_check(c))
    return;
  mloop *L = CLOOP(c);
  ssize_t n;
  do
    n = recv(h->io_watcher.fd, L->rbuf, sizeof L->rbuf, 0);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    conn_after(c, milter_session_feed(&c->ctx, (const uint8_t *)L->rbuf,
                                      (size_t)n));
  } else if (n == 0 || errno == ECONNRESET) {
    /* A reset is the MTA leaving too (it closed with unread data). */
    log_mta_closed(c);
    conn_close(c);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    milter_ctx_log(&c->ctx, MILTER_LOG_WARNING, "closing: read error: %s",
                   strerror(errno));
    conn_close(c);
  }
}

static void conn_close(conn *c) {
  if (!c->sock_open)
    return;
  mloop *L = CLOOP(c);
  c->sock_open = 0;
  c->reading = 0;
  conn_count(L, -1);
  /* The poll handle leaves the fd to us; closing it removed the fd from
   * epoll already. */
  int fd = c->h.poll.io_watcher.fd;
  uv_close(&c->h.handle, on_conn_handle_closed);
  close(fd);
  c->woff = 0;
  tl_unlink(c);
  c->kept = milter_session_gone(&c->ctx) == 1;
  milter_buf_free(&c->ctx.out); /* nobody to send it to */
}

/* Deferred service of a woken conn (reply given, progress queued). */
static void conn_service(conn *c) {
  if (!c->sock_open) {
    if (c->kept && !milter_session_paused(&c->ctx))
      c->kept = milter_session_gone(&c->ctx) == 1;
    pend_note(c);
    milter_buf_free(&c->ctx.out);
    return;
  }
  conn_after(c, milter_session_resume(&c->ctx));
}

static void on_idle(uv_idle_t *h) {
  mloop *L = h->data;
  conn *list = L->wake_head;
  L->wake_head = NULL;
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
  mloop *L = CLOOP(c);
  if (c->on_wake)
    return;
  c->on_wake = 1;
  c->wnext = L->wake_head;
  L->wake_head = c;
  uv_idle_start(&L->idle, on_idle);
}

/* Loop L takes a conn whose fd is in c->h.pre: its handle, its session. */
static void conn_start(mloop *L, conn *c) {
  int fd = c->h.pre.fd, is_unix = c->h.pre.is_unix;
  const char *peer = c->h.pre.peer != NULL ? c->h.pre.peer : c->peer;
  if (!is_unix) {
    int one = 1; /* replies go out whole: no Nagle delay */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  int rc = uv_poll_init_socket(L->loop, &c->h.poll, fd);
  if (rc < 0) {
    milter_logf(&L->env, MILTER_LOG_ERROR, "%s: closing: %s", peer,
                uv_strerror(rc));
    close(fd);
    conn_count(L, -1);
    free(c);
    return;
  }
  c->h.handle.data = c;
  c->handles = 1;
  milter_session_init(&c->ctx, &L->srv->desc, &L->env, c, peer);
  c->next = L->conns;
  if (L->conns != NULL)
    L->conns->prev = c;
  L->conns = c;
  L->nctx++;
  c->sock_open = 1;
  c->reading = 1;
  if (conn_poll(c) != 0) {
    conn_close(c);
    return;
  }
  arm_timer(c);
}

/* The loop with the fewest open connections, from a rotating start (ties
 * go round).  Loop 0 only while the other loops' threads do not run. */
static mloop *pick_loop(milter_server *srv) {
  if (srv->nrun == 1)
    return LOOP0(srv);
  unsigned n = srv->nrun, best = srv->next_loop % n;
  unsigned least = atomic_load_explicit(&srv->loops[best].nconns,
                                        memory_order_relaxed);
  for (unsigned k = 1; k < n && least > 0; k++) {
    unsigned i = (srv->next_loop + k) % n;
    unsigned v =
        atomic_load_explicit(&srv->loops[i].nconns, memory_order_relaxed);
    if (v < least) {
      least = v;
      best = i;
    }
  }
  srv->next_loop = best + 1;
  return &srv->loops[best];
}

/* The server's copy of a unix peer text, or NULL (out of memory: the
 * conn keeps its own). */
static const char *peer_intern(milter_server *srv, const char *peer) {
  for (peer_name *p = srv->peers; p != NULL; p = p->next)
    if (strcmp(p->s, peer) == 0)
      return p->s;
  size_t n = strlen(peer) + 1;
  peer_name *p = xmalloc(sizeof *p + n);
  if (p == NULL)
    return NULL;
  memcpy(p->s, peer, n);
  p->next = srv->peers;
  srv->peers = p;
  return p->s;
}

/* An accepted socket (listen.c, loop 0): a connection on the least busy
 * loop, or refused at once when max_connections are open (the MTA applies
 * its default action now rather than after its connect timeout). */
static int on_accepted(void *data, int fd, int is_unix, const char *peer) {
  milter_server *srv = data;
  if (atomic_load_explicit(&srv->nconns, memory_order_relaxed) >=
      srv->opts.max_connections) {
    close(fd);
    return MILTER_ACCEPT_REFUSED;
  }
  /* Every conn of a unix listener has the same peer text: one copy. */
  const char *shared = is_unix ? peer_intern(srv, peer) : NULL;
  size_t plen = shared != NULL ? 0 : strlen(peer) + 1;
  conn *c = xcalloc(1, sizeof *c + plen);
  if (c == NULL) {
    close(fd);
    return -ENOMEM;
  }
  c->h.pre.peer = shared;
  if (shared == NULL)
    memcpy(c->peer, peer, plen);
  c->h.pre.fd = fd;
  c->h.pre.is_unix = is_unix;
  mloop *L = pick_loop(srv);
  conn_count(L, 1);
  if (L == LOOP0(srv)) {
    conn_start(L, c);
    return MILTER_ACCEPT_TAKEN;
  }
  uv_mutex_lock(&L->inbox_mu);
  if (L->inbox_tail != NULL)
    L->inbox_tail->wnext = c;
  else
    L->inbox_head = c;
  L->inbox_tail = c;
  uv_mutex_unlock(&L->inbox_mu);
  uv_async_send(&L->inbox_async);
  return MILTER_ACCEPT_TAKEN;
}

/* ------------------------------------------------------------------------ */
/* The service manager (milter.h, SYSTEMD)                                  */
/* ------------------------------------------------------------------------ */

enum { NOTIFY_TICK_MS = 1000 };

static uint64_t server_messages(const milter_server *srv) {
  uint64_t m = 0;
  for (unsigned i = 0; i < srv->nloops; i++)
    m += __atomic_load_n(&srv->loops[i].messages, __ATOMIC_RELAXED);
  return m;
}

/* first ("READY=1\n", "STOPPING=1\n" or "") and STATUS= with the counts. */
static void notify_send(milter_server *srv, const char *first) {
  char msg[160];
  unsigned nc = atomic_load_explicit(&srv->nconns, memory_order_relaxed);
  uint64_t nm = server_messages(srv);
  snprintf(msg, sizeof msg, "%sSTATUS=%s%u connection%s, %llu message%s", first,
           srv->stopping ? "stopping: " : "", nc, nc == 1 ? "" : "s",
           (unsigned long long)nm, nm == 1 ? "" : "s");
  if (mf_notify_send(&srv->notify, msg) < 0)
    return;
  if (first[0] == 'R')
    srv->ready = 1;
  srv->st_conns = nc;
  srv->st_msgs = nm;
}

/* The first tick runs once the loop runs with a listener: READY=1 (retried
 * at the next tick if the send failed); then STATUS= when the counts
 * changed, and WATCHDOG=1 when the manager wants it. */
static void on_notify_tick(uv_timer_t *t) {
  milter_server *srv = ((mloop *)t->data)->srv;
  if (!srv->ready && !srv->stopping)
    notify_send(srv, "READY=1\n");
  else if (srv->st_conns != atomic_load(&srv->nconns) ||
           srv->st_msgs != server_messages(srv))
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
  LOOP0(srv)->handles_open--;
  loop_check_done(LOOP0(srv));
}

int milter_server_listen(milter_server *srv, const char *spec) {
  if (srv == NULL || spec == NULL)
    return MILTER_E_INVAL;
  if (!srv->acc.inited) {
    milter_acceptor_init(&srv->acc, LOOP0(srv)->loop, &LOOP0(srv)->env,
                         on_accepted, srv, acceptor_closed);
    LOOP0(srv)->handles_open++;
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

static void loop_handle_closed(uv_handle_t *h) {
  mloop *L = h->data;
  L->handles_open--;
}

/* A stopping loop with no conn left closes its handles (loop 0: once the
 * listeners are closed too, and the server's own handles with them); its
 * uv_run then returns. */
static void loop_check_done(mloop *L) {
  milter_server *srv = L->srv;
  if (!L->stopping || L->nctx != 0 || L->closed)
    return;
  if (L->idx == 0 && srv->acc.listeners != NULL)
    return;
  L->closed = 1;
  if (L->idx == 0) {
    atomic_store(&srv->closed, 1);
    if (srv->notify.fd >= 0)
      uv_close((uv_handle_t *)&srv->notify_timer, loop_handle_closed);
    for (int i = 0; i < srv->nsigs; i++)
      if (!uv_is_closing((uv_handle_t *)&srv->sigs[i]))
        uv_close((uv_handle_t *)&srv->sigs[i], loop_handle_closed);
  }
  uv_close((uv_handle_t *)&L->inbox_async, loop_handle_closed);
  uv_close((uv_handle_t *)&L->idle, loop_handle_closed);
  uv_close((uv_handle_t *)&L->drain, loop_handle_closed);
  uv_close((uv_handle_t *)&L->ctimer, loop_handle_closed);
  milter_poster_close(&L->poster, loop_handle_closed);
  mf_sigpipe_pair_close(&L->sigpipe, loop_handle_closed);
}

static void on_drain_timeout(uv_timer_t *t) {
  mloop *L = t->data;
  for (conn *c = L->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->sock_open) {
      milter_ctx_log(&c->ctx, MILTER_LOG_WARNING,
                     "closing: drain timeout with a message in progress");
      conn_close(c);
    }
  }
}

/* Stop one loop (its own thread): idle conns close now, the others when
 * their message ends or the drain timeout passes (now: at once). */
static void loop_stop(mloop *L, int now) {
  if (!L->stopping) {
    L->stopping = 1;
    for (conn *c = L->conns, *next; c != NULL; c = next) {
      next = c->next;
      if (c->sock_open && !milter_session_busy(&c->ctx)) {
        milter_ctx_log(&c->ctx, MILTER_LOG_INFO,
                       "closing: server stopping, no message in progress");
        conn_close(c);
      }
    }
    if (L->srv->opts.drain_timeout_ms && !now)
      uv_timer_start(&L->drain, on_drain_timeout, L->srv->opts.drain_timeout_ms,
                     0);
    else
      now = 1;
  }
  if (now)
    on_drain_timeout(&L->drain);
  loop_check_done(L);
}

/* Ask loop L (another thread) to stop; 2 = now. */
static void loop_request_stop(mloop *L, int how) {
  uv_mutex_lock(&L->inbox_mu);
  if (L->stop_req < how)
    L->stop_req = how;
  uv_mutex_unlock(&L->inbox_mu);
  uv_async_send(&L->inbox_async);
}

/* Loop 0: the server stops accepting, then every loop stops. */
static void do_stop(milter_server *srv, int now) {
  if (!srv->stopping) {
    srv->stopping = 1;
    SLOG(srv, MILTER_LOG_INFO, "stopping (%u connections)",
         atomic_load(&srv->nconns));
    if (srv->ready) /* a server that never served announces nothing */
      notify_send(srv, "STOPPING=1\n");
    milter_acceptor_close(&srv->acc);
    for (int i = 0; i < srv->nsigs; i++)
      uv_close((uv_handle_t *)&srv->sigs[i], loop_handle_closed);
  }
  for (unsigned i = 1; i < srv->nloops; i++)
    if (srv->loops[i].thread_started)
      loop_request_stop(&srv->loops[i], now ? 2 : 1);
  loop_stop(LOOP0(srv), now);
}

/* The inbox: conns to start, stop requests (loop 0: milter_server_stop). */
static void on_inbox(uv_async_t *a) {
  mloop *L = a->data;
  uv_mutex_lock(&L->inbox_mu);
  conn *list = L->inbox_head;
  L->inbox_head = L->inbox_tail = NULL;
  int stop = L->stop_req;
  uv_mutex_unlock(&L->inbox_mu);
  while (list != NULL) {
    conn *c = list;
    list = c->wnext;
    c->wnext = NULL;
    conn_start(L, c);
  }
  if (L->idx == 0) {
    if (atomic_exchange(&L->srv->stop_req, 0))
      do_stop(L->srv, 0);
  } else if (stop) {
    loop_stop(L, stop == 2);
  }
}

static void on_signal(uv_signal_t *s, int signum) {
  milter_server *srv = ((mloop *)s->data)->srv;
  SLOG(srv, MILTER_LOG_INFO, "signal %d: stopping", signum);
  do_stop(srv, 0);
}

/* How many loops: opts.loops, else MAILFILTER_LOOPS, else the CPUs. */
static unsigned loops_wanted(const milter_server_opts *o,
                             const milter_session_env *log_env) {
  if (o->loops > 0)
    return o->loops > LOOPS_MAX ? LOOPS_MAX : o->loops;
  const char *e = getenv("MAILFILTER_LOOPS");
  if (e != NULL && e[0] != '\0') {
    char *end;
    unsigned long v = strtoul(e, &end, 10);
    if (*end == '\0' && v >= 1 && e[0] != '-')
      return v > LOOPS_MAX ? LOOPS_MAX : (unsigned)v;
    milter_logf(log_env, MILTER_LOG_WARNING,
                "MAILFILTER_LOOPS=%s is not a number from 1 to %d: ignored", e,
                LOOPS_MAX);
  }
  unsigned n = uv_available_parallelism();
  return n == 0 ? 1 : n > LOOPS_MAX ? LOOPS_MAX : n;
}

static void loop_env_init(milter_server *srv, mloop *L) {
  L->env.server = srv;
  L->env.wake = on_wake;
  L->env.poster = &L->poster;
  L->env.log = srv->opts.log ? srv->opts.log : milter_log_stderr;
  L->env.log_data = srv->opts.log_data;
  L->env.log_level = srv->opts.log_level;
  L->env.hard_cap = srv->opts.hard_cap;
  L->env.eom_count = &L->messages;
}

static void loop_fini(mloop *L);

/* Loop L's handles on loop (L's own when NULL).  Returns 0 or an error
 * with nothing left to undo but the loop itself (see loop_fini). */
static int loop_init(milter_server *srv, mloop *L, unsigned idx,
                     uv_loop_t *loop) {
  L->srv = srv;
  L->idx = idx;
  loop_env_init(srv, L);
  if (loop == NULL) {
    if (uv_loop_init(&L->own_loop) != 0)
      return MILTER_E_IO;
    loop = &L->own_loop;
  }
  L->loop = loop;
  if (uv_mutex_init(&L->inbox_mu) != 0)
    return MILTER_E_NOMEM;
  if (milter_poster_init(&L->poster, loop) < 0) {
    uv_mutex_destroy(&L->inbox_mu);
    return MILTER_E_NOMEM;
  }
  L->poster.async.data = &L->poster;
  uv_async_init(loop, &L->inbox_async, on_inbox);
  L->inbox_async.data = L;
  uv_idle_init(loop, &L->idle);
  L->idle.data = L;
  uv_timer_init(loop, &L->drain);
  L->drain.data = L;
  uv_unref((uv_handle_t *)&L->drain);
  uv_timer_init(loop, &L->ctimer);
  L->ctimer.data = L;
  uv_unref((uv_handle_t *)&L->ctimer);
  mf_sigpipe_pair_init(&L->sigpipe, loop, L);
  L->handles_open = 7; /* the pair is two */
  return 0;
}

/* Run loop L until its handles are closed (the application's loop too:
 * milter_server_free), then close it if it is ours. */
static void loop_fini(mloop *L) {
  mf_sigpipe_enter();
  while (L->handles_open > 0 || L->nctx > 0)
    if (uv_run(L->loop, UV_RUN_ONCE) == 0 && L->handles_open > 0)
      break;
  mf_sigpipe_leave();
  if (L->loop == &L->own_loop)
    uv_loop_close(L->loop);
  uv_mutex_destroy(&L->inbox_mu);
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
  srv->desc = *desc;
  if (opts != NULL)
    srv->opts = *opts;
  else
    milter_server_opts_init(&srv->opts);
  if (srv->opts.hard_cap == 0)
    srv->opts.hard_cap = MILTER_DEFAULT_HARD_CAP;
  if (srv->opts.backlog <= 0)
    srv->opts.backlog = 4096;
  if (loop != NULL && srv->opts.loops > 1) {
    free(srv);
    return MILTER_E_INVAL;
  }
  srv->own = loop == NULL;
  srv->nrun = 1;
  srv->notify.fd = -1;
  /* The loop count is read before the first loop exists: log through a
   * loop-less environment then. */
  milter_session_env tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.log = srv->opts.log ? srv->opts.log : milter_log_stderr;
  tmp.log_data = srv->opts.log_data;
  tmp.log_level = srv->opts.log_level;
  unsigned n = srv->own ? loops_wanted(&srv->opts, &tmp) : 1;
  if ((srv->loops = xcalloc(n, sizeof *srv->loops)) == NULL) {
    free(srv);
    return MILTER_E_NOMEM;
  }
  for (; srv->nloops < n; srv->nloops++) {
    mloop *L = &srv->loops[srv->nloops];
    int rc = loop_init(srv, L, srv->nloops, srv->nloops == 0 ? loop : NULL);
    if (rc != 0) {
      if (L->loop == &L->own_loop)
        uv_loop_close(L->loop);
      for (unsigned i = 0; i < srv->nloops; i++) {
        srv->loops[i].stopping = 1;
        loop_check_done(&srv->loops[i]);
        loop_fini(&srv->loops[i]);
      }
      free(srv->loops);
      free(srv);
      return rc;
    }
  }
  mloop *L0 = LOOP0(srv);
  if (srv->opts.notify)
    mf_notify_open(&srv->notify, &L0->env);
  if (srv->notify.fd >= 0) {
    uv_timer_init(L0->loop, &srv->notify_timer);
    srv->notify_timer.data = L0;
    uv_unref((uv_handle_t *)&srv->notify_timer);
    L0->handles_open++;
  }
  if (srv->opts.handle_signals) {
    static const int signums[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
      uv_signal_init(L0->loop, &srv->sigs[i]);
      srv->sigs[i].data = L0;
      uv_signal_start(&srv->sigs[i], on_signal, signums[i]);
      srv->nsigs++;
      L0->handles_open++;
    }
  }
  *out = srv;
  return 0;
}

static void loop_thread(void *arg) {
  mloop *L = arg;
  mf_sigpipe_enter();
  uv_run(L->loop, UV_RUN_DEFAULT);
  mf_sigpipe_leave();
}

int milter_server_run(milter_server *srv) {
  if (srv == NULL)
    return MILTER_E_INVAL;
  mf_sigpipe_enter(); /* the whole run: the pair's guards nest for free */
  if (srv->own && srv->nloops > 1 && !srv->stopping) {
    srv->nrun = srv->nloops;
    for (unsigned i = 1; i < srv->nloops; i++) {
      mloop *L = &srv->loops[i];
      if (uv_thread_create(&L->thread, loop_thread, L) == 0) {
        L->thread_started = 1;
        continue;
      }
      /* No thread for loops i..N-1: run with fewer (the others are
       * finished by milter_server_free). */
      SLOG(srv, MILTER_LOG_WARNING,
           "could not start the thread of loop %u: running %u loops", i, i);
      srv->nrun = i;
      break;
    }
  }
  uv_run(LOOP0(srv)->loop, UV_RUN_DEFAULT);
  for (unsigned i = 1; i < srv->nloops; i++)
    if (srv->loops[i].thread_started) {
      uv_thread_join(&srv->loops[i].thread);
      srv->loops[i].thread_started = 0;
    }
  srv->nrun = 1;
  mf_sigpipe_leave();
  return 0;
}

void milter_server_stop(milter_server *srv) {
  if (srv != NULL && !atomic_load(&srv->closed)) {
    atomic_store(&srv->stop_req, 1);
    uv_async_send(&LOOP0(srv)->inbox_async);
  }
}

/* Replies still pending on loop L: nobody will give them now. */
static void loop_abandon(mloop *L) {
  for (conn *c = L->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->kept) {
      c->ctx.pending = 0;
      c->kept = milter_session_gone(&c->ctx) == 1;
      conn_maybe_free(c);
    }
  }
}

void milter_server_free(milter_server *srv) {
  if (srv == NULL)
    return;
  /* Not running (run returned, or never called): every loop is ours to
   * finish here, on this thread. */
  if (!atomic_load(&srv->closed))
    do_stop(srv, 1);
  for (unsigned i = 1; i < srv->nloops; i++) {
    mloop *L = &srv->loops[i];
    on_inbox(&L->inbox_async); /* conns handed over, never started */
    if (!L->closed)
      loop_stop(L, 1);
  }
  for (unsigned i = 0; i < srv->nloops; i++) {
    loop_abandon(&srv->loops[i]);
    loop_fini(&srv->loops[i]);
  }
  mf_notify_close(&srv->notify);
  while (srv->peers != NULL) {
    peer_name *p = srv->peers;
    srv->peers = p->next;
    free(p);
  }
  free(srv->loops);
  free(srv);
}

uv_loop_t *milter_server_loop(const milter_server *srv) {
  return LOOP0(srv)->loop;
}

unsigned milter_server_connections(const milter_server *srv) {
  return atomic_load(&srv->nconns);
}

unsigned milter_server_loops(const milter_server *srv) {
  return srv->nloops;
}
