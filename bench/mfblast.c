/*
 * mfblast.c -- a lean MTA-side milter load generator: one thread, plain
 * epoll, nonblocking sockets, no library.
 *
 * mfload (bench/mfload.c) drives a filter through core's libuv client,
 * which encodes every command and decodes every reply in full; on a small
 * machine it then costs about as much CPU per transaction as the filter
 * it measures.  mfblast plays the same Postfix-like session with as
 * little work per transaction as the protocol allows:
 *
 *   - negotiation offers what mfload offers (version 6, every action,
 *     every NO* and NR_* step, the 64K data size); the filter's answer
 *     decides which events are sent (NO* bits off) and where a reply is
 *     awaited (NR_* bits off), as Postfix does (an event switched off is
 *     not sent, nor are its macros);
 *   - CONNECT (macros j, {daemon_name}, v) and HELO; then -m messages per
 *     connection: MAIL (macros i, {mail_mailer}, and {auth_authen} with
 *     --auth), -r RCPTs, DATA, -H headers, EOH, the body in chunks of at
 *     most the data size, EOM (macro i); the next MAIL follows without
 *     ABORT; then QUIT, and a new connection takes the slot;
 *   - each session's byte stream is encoded once per negotiated option set
 *     (and body size) before it is needed, as a list of segments that each
 *     end at a command whose reply is due.  A connection writes one segment
 *     (with what precedes it when no reply was due there) with one
 *     sendmsg(), then waits; the queue id in MAIL's macros is a counter
 *     patched in place;
 *   - replies are read with large reads into one buffer and looked at only
 *     as far as their 4-byte length and command byte (OPTNEG's 12 bytes
 *     apart).  A final reply before end of message ends the message, as
 *     Postfix does (a refused RCPT refuses that recipient only, a refused
 *     CONNECT or HELO the session), SKIP during the body goes on with EOM;
 *     modification packets at EOM are counted, not decoded.
 *
 * Checked on every run, counted as errors (never silent): a packet that
 * arrives while no reply is due or before the command it answers was
 * written, a second reply in the same read after a final one, a
 * modification before EOM or one not negotiated, SKIP where it is not
 * allowed, a malformed OPTNEG, end of stream, a reply overdue by 60 s.
 * --verify[=N] also counts every EOM not answered with exactly N (default
 * 1) ADDHEADER packets (the compared filters add X-Rcpt-Count) as an
 * error.
 *
 *   mfblast -s SPEC [-c CONNS] [-d SECONDS | -n MESSAGES] [-m MSGS_PER_CONN]
 *           [-b BYTES[:WEIGHT][,BYTES[:WEIGHT]...]] [-H HEADERS] [-r RCPTS]
 *           [-p MILTER_PID] [--auth USER] [--offer-steps HEX] [--seed N]
 *           [--verify[=N]] [--json]
 *
 * SPEC: unix:/path, local:/path, /path, inet:PORT@HOST, inet6:PORT@HOST.
 * The report has mfload's keys (tps, p50/p99/max latency from MAIL written
 * to the message's final reply, errors, rejected, decided_early, and with
 * -p the milter's peak VmRSS, VmHWM, threads and CPU s per 1000
 * transactions from /proc/PID), plus driver_cpu_s_per_1000: mfblast's own
 * utime+stime per 1000 transactions.  At most 128 connections are opening
 * at once (a unix socket refuses a burst beyond its backlog with EAGAIN;
 * such a connect is retried and counted in connect_retries).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/milter_proto.h>

#define MAX_BODIES 8
#define MAX_PLANS (2 * (MAX_BODIES + 1)) /* two option sets at once */
#define MAX_OPENING 128  /* connections connecting or negotiating */
#define MAX_ERRORS 1000  /* then the run stops: the milter is gone */
#define REPLY_TIMEOUT 60 /* seconds a due reply may take */
#define QID_DIGITS 8

/* ---- configuration and counters ------------------------------------------ */

static struct {
  const char *spec;
  int conns, per_conn, headers, rcpts, pid, json;
  double seconds;
  long messages; /* 0: run for seconds */
  size_t bodies[MAX_BODIES], body_max;
  unsigned weights[MAX_BODIES], weight_sum;
  int nbodies;
  const char *body_arg, *auth;
  uint32_t offer; /* the steps offered */
  uint64_t seed;
  int verify; /* ADDHEADERs expected per EOM, or -1 */
} C = {.conns = 10,
       .seconds = 10,
       .per_conn = 5,
       .headers = 20,
       .rcpts = 2,
       .seed = 1,
       .verify = -1,
       .offer = MILTER_P_ALL_STEPS}; /* what Postfix 3.x offers; 64K data */

static struct {
  long done, errors, rejected, early, started;
  long eom_replies, eom_refused, mods, adds, progress, verify_errors;
  long opened, connect_retries;
  uint64_t bytes_out;
  uint32_t protocol;
  int have_protocol;
  double *lat;
  size_t nlat, caplat;
  long rss_max_kb, threads_max, anon_max_kb, file_max_kb;
} S;

/* ---- the pre-encoded streams --------------------------------------------- */

/* One run of bytes that ends with a command whose reply is due (await is
 * that command), or with no reply due (await 0: only at the end of the
 * connection's opening). */
typedef struct seg {
  uint32_t off, len;
  uint8_t await;
} seg;

typedef struct plan {
  uint32_t version, protocol;
  int body; /* index in C.bodies; -1: the opening (CONNECT, HELO) */
  uint8_t *buf;
  size_t len, cap, pkt, seg_start;
  seg *segs;
  int nsegs, segcap;
  int eob_seg;    /* the segment that starts EOM's macros (SKIP), or -1 */
  size_t qid_off; /* the queue id's counter digits in buf, or 0 */
} plan;

static plan plans[MAX_PLANS];
static int nplans;

static void *must(void *p) {
  if (p == NULL) {
    fprintf(stderr, "mfblast: out of memory\n");
    exit(1);
  }
  return p;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void emit(plan *pl, const void *data, size_t n) {
  if (pl->len + n > pl->cap) {
    while (pl->len + n > pl->cap)
      pl->cap = pl->cap ? pl->cap * 2 : 4096;
    pl->buf = must(realloc(pl->buf, pl->cap));
  }
  memcpy(pl->buf + pl->len, data, n);
  pl->len += n;
}

static void emit_str(plan *pl, const char *s) {
  emit(pl, s, strlen(s) + 1);
}

/* A packet: open it with its command, add the payload, close it. */
static void pkt_open(plan *pl, uint8_t cmd) {
  static const uint8_t zero[4];
  pl->pkt = pl->len;
  emit(pl, zero, 4);
  emit(pl, &cmd, 1);
}

static void pkt_close(plan *pl) {
  put_be32(pl->buf + pl->pkt, (uint32_t)(pl->len - pl->pkt - 4));
}

/* Ends the segment after a command whose reply is due. */
static void seg_cut(plan *pl, uint8_t await) {
  if (pl->nsegs == pl->segcap) {
    pl->segcap = pl->segcap ? pl->segcap * 2 : 16;
    pl->segs = must(realloc(pl->segs, (size_t)pl->segcap * sizeof *pl->segs));
  }
  pl->segs[pl->nsegs++] = (seg){(uint32_t)pl->seg_start,
                                (uint32_t)(pl->len - pl->seg_start), await};
  pl->seg_start = pl->len;
}

enum { NOT_SENT, NO_REPLY, REPLY };

/* How an event goes out under the negotiated version and steps. */
static int event_mode(const plan *pl, uint8_t cmd) {
  static const struct {
    uint8_t cmd;
    uint32_t no, nr, minv;
  } ev[] = {
      {MILTER_CMD_CONNECT, MILTER_P_NOCONNECT, MILTER_P_NR_CONN, 2},
      {MILTER_CMD_HELO, MILTER_P_NOHELO, MILTER_P_NR_HELO, 2},
      {MILTER_CMD_MAIL, MILTER_P_NOMAIL, MILTER_P_NR_MAIL, 2},
      {MILTER_CMD_RCPT, MILTER_P_NORCPT, MILTER_P_NR_RCPT, 2},
      {MILTER_CMD_DATA, MILTER_P_NODATA, MILTER_P_NR_DATA, 4},
      {MILTER_CMD_HEADER, MILTER_P_NOHDRS, MILTER_P_NR_HDR, 2},
      {MILTER_CMD_EOH, MILTER_P_NOEOH, MILTER_P_NR_EOH, 2},
      {MILTER_CMD_BODY, MILTER_P_NOBODY, MILTER_P_NR_BODY, 2},
  };
  for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++)
    if (ev[i].cmd == cmd) {
      if ((pl->protocol & ev[i].no) || pl->version < ev[i].minv)
        return NOT_SENT;
      return (pl->protocol & ev[i].nr) ? NO_REPLY : REPLY;
    }
  return REPLY; /* end of message */
}

/* An event with its strings (each NUL-terminated), preceded by its macros
 * (name, value pairs) when it is sent at all. */
static void event(plan *pl, uint8_t cmd, const char *const *macros, int nmacros,
                  const char *const *strs, int nstrs) {
  int mode = event_mode(pl, cmd);
  if (mode == NOT_SENT)
    return;
  if (nmacros > 0) {
    pkt_open(pl, MILTER_CMD_MACRO);
    emit(pl, &cmd, 1);
    for (int i = 0; i < 2 * nmacros; i++)
      emit_str(pl, macros[i]);
    pkt_close(pl);
  }
  pkt_open(pl, cmd);
  for (int i = 0; i < nstrs; i++)
    emit_str(pl, strs[i]);
  pkt_close(pl);
  if (mode == REPLY)
    seg_cut(pl, cmd);
}

static void build_opening(plan *pl) {
  static const char *const macros[] = {"j",     "mx.example", "{daemon_name}",
                                       "smtpd", "v",          "Postfix 3.7.11"};
  if (event_mode(pl, MILTER_CMD_CONNECT) != NOT_SENT) {
    int mode = event_mode(pl, MILTER_CMD_CONNECT);
    static const uint8_t fam_port[] = {MILTER_FAMILY_INET, 40000 >> 8,
                                       40000 & 0xff};
    pkt_open(pl, MILTER_CMD_MACRO);
    emit(pl, (const uint8_t[]){MILTER_CMD_CONNECT}, 1);
    for (int i = 0; i < 6; i++)
      emit_str(pl, macros[i]);
    pkt_close(pl);
    pkt_open(pl, MILTER_CMD_CONNECT);
    emit_str(pl, "client.example");
    emit(pl, fam_port, sizeof fam_port);
    emit_str(pl, "192.0.2.10");
    pkt_close(pl);
    if (mode == REPLY)
      seg_cut(pl, MILTER_CMD_CONNECT);
  }
  const char *helo = "client.example";
  event(pl, MILTER_CMD_HELO, NULL, 0, &helo, 1);
  if (pl->seg_start < pl->len)
    seg_cut(pl, 0); /* no reply due at its end */
}

/* The first header fields of every message (mfload's): "Name: value". */
static const char *const fixed_hdrs[] = {
    ("Received: from client.example (client.example [192.0.2.10])\n\tby "
     "mx.example (Postfix) with ESMTP id 4ABC123"),
    "From: Alice Example <alice@example.org>",
    "To: Bob Example <bob@example.net>",
    "Subject: benchmark message",
    "Date: Fri, 27 Nov 2026 09:00:00 +0000",
    "Message-ID: <bench.1@example.org>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
};
#define N_FIXED_HDRS ((int)(sizeof fixed_hdrs / sizeof fixed_hdrs[0]))

static void build_message(plan *pl) {
  /* MAIL: the queue id "4B" + counter digits, patched per message */
  char qid[3 + QID_DIGITS] = "4B00000000";
  const char *mm[] = {"i",   qid, "{mail_mailer}", "smtp", "{auth_authen}",
                      C.auth};
  const char *mail[] = {"<alice@example.org>", "SIZE=12345", "BODY=8BITMIME"};
  size_t before = pl->len;
  event(pl, MILTER_CMD_MAIL, mm, C.auth ? 3 : 2, mail, 3);
  if (pl->len > before) /* after 'D' 'M' "i\0" "4B" */
    pl->qid_off = before + 5 + 1 + 2 + 2;
  for (int r = 0; r < C.rcpts; r++) {
    char rcpt[64];
    snprintf(rcpt, sizeof rcpt, "<rcpt%d@example.net>", r);
    const char *s = rcpt;
    event(pl, MILTER_CMD_RCPT, NULL, 0, &s, 1);
  }
  event(pl, MILTER_CMD_DATA, NULL, 0, NULL, 0);
  for (int h = 0; h < C.headers; h++) {
    char name[32], value[96];
    const char *hv[2] = {name, value};
    if (h < N_FIXED_HDRS) {
      const char *colon = strchr(fixed_hdrs[h], ':');
      snprintf(name, sizeof name, "%.*s", (int)(colon - fixed_hdrs[h]),
               fixed_hdrs[h]);
      hv[1] = colon + 2;
    } else {
      snprintf(name, sizeof name, "X-Bench-%d", h);
      snprintf(value, sizeof value,
               "value %d of a header line of ordinary length", h);
    }
    event(pl, MILTER_CMD_HEADER, NULL, 0, hv, 2);
  }
  event(pl, MILTER_CMD_EOH, NULL, 0, NULL, 0);
  int bmode = event_mode(pl, MILTER_CMD_BODY);
  size_t body = C.bodies[pl->body];
  static const char line[] = "Lorem ipsum dolor sit amet, consectetur "
                             "adipiscing elit, sed do eiusmod t\r\n";
  for (size_t off = 0; bmode != NOT_SENT && off < body;) {
    size_t n = body - off < MILTER_DATA_64K ? body - off : MILTER_DATA_64K;
    pkt_open(pl, MILTER_CMD_BODY);
    for (size_t i = 0; i < n; i++) {
      size_t at = off + i; /* the body ends with CRLF, as mfload's */
      char ch = at + 2 == body   ? '\r'
                : at + 1 == body ? '\n'
                                 : line[at % (sizeof line - 1)];
      emit(pl, &ch, 1);
    }
    pkt_close(pl);
    if (bmode == REPLY)
      seg_cut(pl, MILTER_CMD_BODY);
    off += n;
  }
  pl->eob_seg = pl->seg_start == pl->len ? pl->nsegs : -1;
  const char *em[] = {"i", "4BEOM"};
  event(pl, MILTER_CMD_EOB, em, 1, NULL, 0);
}

/* The opening (body -1) or a message (body index) for an option set. */
static const plan *plan_for(uint32_t version, uint32_t protocol, int body) {
  for (int i = 0; i < nplans; i++)
    if (plans[i].version == version && plans[i].protocol == protocol &&
        plans[i].body == body)
      return &plans[i];
  if (nplans == MAX_PLANS)
    return NULL;
  plan *pl = &plans[nplans++];
  *pl = (plan){
      .version = version, .protocol = protocol, .body = body, .eob_seg = -1};
  if (body < 0)
    build_opening(pl);
  else
    build_message(pl);
  return pl;
}

/* ---- connections --------------------------------------------------------- */

enum { FREE, CONNECTING, NEGOTIATING, RUNNING };

typedef struct conn {
  int fd, state;
  uint32_t version, actions, protocol;
  const plan *pl; /* the opening, then the current message's */
  int seg;        /* the segment whose reply is awaited */
  uint8_t await;  /* its command, 0: no reply due */
  int msgs, in_tx, adds;
  uint64_t t0;      /* MAIL written, ns */
  uint64_t since_s; /* the reply has been due since (coarse, s) */
  struct iovec out[4];
  int nout, want_out;
  /* the reply being read: header bytes, payload still to come */
  uint8_t hdr[5], hn, code;
  uint32_t need, got;
  uint8_t optneg[12];
  struct conn *next_free;
} conn;

static conn *conns;
static conn *to_open; /* slots waiting to be (re)opened */
static int ep, live, opening, stopping;
static uint64_t t_start, t_stop, now_s;
static uint64_t retry_at; /* ns: no connect before (a refused burst) */
static uint8_t rbuf[256 * 1024];
static struct sockaddr_storage addr;
static socklen_t addrlen;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int want_more(void) {
  if (stopping)
    return 0;
  if (C.messages > 0)
    return S.started < C.messages;
  return now_ns() < t_stop;
}

static void slot_free(conn *c) {
  c->state = FREE;
  c->next_free = to_open;
  to_open = c;
}

/* Close the connection; a failure is an error and its message, if one
 * was under way, is not counted.  The slot is opened again while the run
 * wants more. */
static void conn_end(conn *c, const char *why) {
  if (c->state == CONNECTING || c->state == NEGOTIATING)
    opening--;
  if (why != NULL) {
    if (S.errors < 5)
      fprintf(stderr, "mfblast: connection %ld: %s\n", (long)(c - conns), why);
    if (++S.errors >= MAX_ERRORS)
      stopping = 1;
    if (c->in_tx)
      S.started--; /* -n: another message replaces it */
  }
  close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  live--;
  if (want_more())
    slot_free(c);
  else
    c->state = FREE;
}

static int watch(conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void out_add(conn *c, const void *p, size_t n) {
  if (c->nout == (int)(sizeof c->out / sizeof c->out[0])) {
    fprintf(stderr, "mfblast: output list overflow\n");
    exit(70);
  }
  c->out[c->nout++] = (struct iovec){(void *)(uintptr_t)p, n};
}

/* Write what is queued; on a full socket wait for EPOLLOUT.  0, or -1
 * when the connection was closed for an error. */
static int flush(conn *c) {
  while (c->nout > 0) {
    struct msghdr m = {.msg_iov = c->out, .msg_iovlen = (size_t)c->nout};
    ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      conn_end(c, strerror(errno));
      return -1;
    }
    S.bytes_out += (uint64_t)n;
    int i = 0;
    while (i < c->nout && (size_t)n >= c->out[i].iov_len)
      n -= (ssize_t)c->out[i++].iov_len;
    if (i < c->nout) {
      c->out[i].iov_base = (char *)c->out[i].iov_base + n;
      c->out[i].iov_len -= (size_t)n;
    }
    memmove(c->out, c->out + i, (size_t)(c->nout - i) * sizeof c->out[0]);
    c->nout -= i;
  }
  int want = c->nout > 0;
  if (want != c->want_out) {
    c->want_out = want;
    if (watch(c, EPOLLIN | (want ? EPOLLOUT : 0u)) < 0) {
      conn_end(c, strerror(errno));
      return -1;
    }
  }
  return 0;
}

static void quit(conn *c) {
  static const uint8_t q[5] = {0, 0, 0, 1, MILTER_CMD_QUIT};
  out_add(c, q, sizeof q);
  struct msghdr m = {.msg_iov = c->out, .msg_iovlen = (size_t)c->nout};
  ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL); /* the end: best effort */
  if (n > 0)
    S.bytes_out += (uint64_t)n;
  c->nout = 0;
  conn_end(c, NULL);
}

static size_t pick_body(void) {
  static uint64_t x;
  if (C.nbodies == 1)
    return 0;
  if (x == 0)
    x = C.seed * 0x9E3779B97F4A7C15ULL + 1;
  x ^= x >> 12; /* xorshift64* */
  x ^= x << 25;
  x ^= x >> 27;
  unsigned r = (unsigned)((x * 2685821657736338717ULL) >> 33) % C.weight_sum;
  size_t i = 0;
  while (r >= C.weights[i])
    r -= C.weights[i++];
  return i;
}

/* The next message on c: 1, or 0 when the connection should quit, -1 when
 * there is no room for another option set's streams. */
static int start_message(conn *c) {
  if (c->msgs >= C.per_conn || !want_more())
    return 0;
  const plan *pl = plan_for(c->version, c->protocol, (int)pick_body());
  if (pl == NULL)
    return -1;
  S.started++;
  c->msgs++;
  c->in_tx = 1;
  c->adds = 0;
  c->pl = pl;
  c->seg = 0;
  if (pl->qid_off) {
    unsigned long v = (unsigned long)S.started;
    for (int i = QID_DIGITS - 1; i >= 0; i--, v >>= 4)
      pl->buf[pl->qid_off + (size_t)i] = (uint8_t) "0123456789ABCDEF"[v & 15];
  }
  c->t0 = now_ns();
  return 1;
}

/* Queue the segments from c->seg on up to the next reply due, and write
 * them.  The end of the opening, or of a message, starts the next message
 * or quits. */
static int advance(conn *c) {
  for (;;) {
    if (c->seg == c->pl->nsegs) {
      int next = start_message(c);
      if (next <= 0) {
        if (next < 0)
          conn_end(c, "too many different option sets");
        else
          quit(c);
        return -1;
      }
      continue;
    }
    const seg *s = &c->pl->segs[c->seg];
    out_add(c, c->pl->buf + s->off, s->len);
    if (s->await != 0) {
      c->await = s->await;
      c->since_s = now_s;
      break;
    }
    c->seg++;
  }
  return flush(c);
}

static void lat_add(double s) {
  if (S.nlat == S.caplat) {
    S.caplat = S.caplat ? S.caplat * 2 : (size_t)1 << 20;
    S.lat = must(realloc(S.lat, S.caplat * sizeof *S.lat));
  }
  S.lat[S.nlat++] = s;
}

static void tx_done(conn *c) {
  S.done++;
  c->in_tx = 0;
  lat_add((double)(now_ns() - c->t0) / 1e9);
}

static int refused(uint8_t code) {
  return code == MILTER_REPLY_REJECT || code == MILTER_REPLY_TEMPFAIL ||
         code == MILTER_REPLY_REPLYCODE;
}

static int final(uint8_t code) {
  return code == MILTER_REPLY_CONTINUE || code == MILTER_REPLY_ACCEPT ||
         code == MILTER_REPLY_DISCARD || refused(code);
}

/* The action each modification packet needs (0: not a modification). */
static const uint32_t mod_action[128] = {
    [MILTER_REPLY_ADDHEADER] = MILTER_ACT_ADDHDRS,
    [MILTER_REPLY_INSHEADER] = MILTER_ACT_ADDHDRS,
    [MILTER_REPLY_CHGHEADER] = MILTER_ACT_CHGHDRS,
    [MILTER_REPLY_ADDRCPT] = MILTER_ACT_ADDRCPT,
    [MILTER_REPLY_ADDRCPT_PAR] = MILTER_ACT_ADDRCPT_PAR,
    [MILTER_REPLY_DELRCPT] = MILTER_ACT_DELRCPT,
    [MILTER_REPLY_CHGFROM] = MILTER_ACT_CHGFROM,
    [MILTER_REPLY_REPLBODY] = MILTER_ACT_CHGBODY,
    [MILTER_REPLY_QUARANTINE] = MILTER_ACT_QUARANTINE,
};

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static int negotiated(conn *c, uint32_t len) {
  if (c->code != MILTER_REPLY_OPTNEG || len < 13) {
    conn_end(c, "bad reply to OPTNEG");
    return -1;
  }
  uint32_t v = be32(c->optneg), a = be32(c->optneg + 4),
           p = be32(c->optneg + 8);
  uint32_t mds = MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  if (v < MILTER_PROTO_VERSION_MIN || (a & ~MILTER_ACT_ALL) ||
      (p & ~C.offer & ~mds)) {
    conn_end(c, "filter asks for what was not offered");
    return -1;
  }
  c->version = v < MILTER_PROTO_VERSION ? v : MILTER_PROTO_VERSION;
  c->actions = a;
  c->protocol = p & ~mds; /* none offered: the data size stays 64K */
  if (!S.have_protocol) {
    S.protocol = p;
    S.have_protocol = 1;
  }
  c->pl = plan_for(c->version, c->protocol, -1);
  if (c->pl == NULL) {
    conn_end(c, "too many different option sets");
    return -1;
  }
  c->state = RUNNING;
  c->seg = 0;
  opening--;
  return advance(c);
}

/* One whole reply packet (its payload was skipped).  more: bytes of this
 * read follow it.  0, or -1 when the connection was closed. */
static int on_packet(conn *c, uint32_t len, int more) {
  uint8_t code = c->code, cmd = c->await;
  if (cmd == 0 || c->nout > 0) {
    conn_end(c, cmd == 0 ? "a reply while none is due"
                         : "a reply before its command was written");
    return -1;
  }
  if (code == MILTER_REPLY_PROGRESS) {
    S.progress++;
    return 0;
  }
  if (!final(code) && cmd == MILTER_CMD_EOB) {
    uint32_t need = code < 128 ? mod_action[code] : 0;
    if (need == 0 || !(c->actions & need)) {
      conn_end(c, need ? "a modification not negotiated"
                       : "an unknown packet at end of message");
      return -1;
    }
    S.mods++;
    if (code == MILTER_REPLY_ADDHEADER) {
      c->adds++;
      S.adds++;
    }
    return 0;
  }
  /* the reply that was due: nothing may follow it in this read */
  c->await = 0;
  if (more) {
    conn_end(c, "more replies than commands");
    return -1;
  }
  if (cmd == MILTER_REPLY_OPTNEG)
    return negotiated(c, len);
  if (cmd == MILTER_CMD_EOB) {
    S.eom_replies++;
    S.eom_refused += refused(code);
    if (C.verify >= 0 && c->adds != C.verify) {
      S.verify_errors++;
      S.errors++;
    }
    tx_done(c);
    c->seg = c->pl->nsegs;
  } else if (code == MILTER_REPLY_SKIP && cmd == MILTER_CMD_BODY &&
             (c->protocol & MILTER_P_SKIP) && c->pl->eob_seg >= 0) {
    c->seg = c->pl->eob_seg;
  } else if (!final(code)) {
    conn_end(c, "a packet that is not a reply before end of message");
    return -1;
  } else if (code == MILTER_REPLY_CONTINUE) {
    c->seg++;
  } else if (cmd == MILTER_CMD_CONNECT || cmd == MILTER_CMD_HELO) {
    if (refused(code)) { /* the whole session */
      S.rejected++;
      quit(c);
      return -1;
    }
    c->seg++;
  } else if (cmd == MILTER_CMD_RCPT && refused(code)) {
    S.rejected++; /* that recipient only */
    c->seg++;
  } else { /* decided before end of message: nothing more of it is sent */
    S.early++;
    S.rejected += refused(code);
    tx_done(c);
    c->seg = c->pl->nsegs;
  }
  return advance(c);
}

/* Take the replies out of one read. */
static void feed(conn *c, const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  while (p < end) {
    if (c->hn < 5) {
      size_t k =
          (size_t)(end - p) < 5u - c->hn ? (size_t)(end - p) : 5u - c->hn;
      memcpy(c->hdr + c->hn, p, k);
      c->hn = (uint8_t)(c->hn + k);
      p += k;
      if (c->hn < 5)
        return;
      uint32_t len = be32(c->hdr);
      if (len == 0 || len > MILTER_DEFAULT_HARD_CAP) {
        conn_end(c, "bad packet length");
        return;
      }
      c->code = c->hdr[4];
      c->need = len - 1;
      c->got = 0;
    }
    size_t k = (size_t)(end - p) < c->need ? (size_t)(end - p) : c->need;
    if (c->code == MILTER_REPLY_OPTNEG && c->got < sizeof c->optneg) {
      size_t s = sizeof c->optneg - c->got < k ? sizeof c->optneg - c->got : k;
      memcpy(c->optneg + c->got, p, s);
    }
    c->got += (uint32_t)k;
    c->need -= (uint32_t)k;
    p += k;
    if (c->need > 0)
      return;
    c->hn = 0;
    if (on_packet(c, c->got + 1, p < end) < 0)
      return;
  }
}

static void on_readable(conn *c) {
  ssize_t n = read(c->fd, rbuf, sizeof rbuf);
  if (n > 0)
    feed(c, rbuf, (size_t)n);
  else if (n == 0)
    conn_end(c, "the milter closed the connection");
  else if (errno != EAGAIN && errno != EINTR)
    conn_end(c, strerror(errno));
}

static int send_optneg(conn *c) {
  static uint8_t o[17];
  put_be32(o, 13);
  o[4] = MILTER_CMD_OPTNEG;
  put_be32(o + 5, MILTER_PROTO_VERSION);
  put_be32(o + 9, MILTER_ACT_ALL);
  put_be32(o + 13, C.offer);
  c->state = NEGOTIATING;
  c->await = MILTER_REPLY_OPTNEG;
  c->since_s = now_s;
  out_add(c, o, sizeof o);
  return flush(c);
}

static void open_conn(conn *c) {
  memset(c, 0, sizeof *c);
  c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    c->state = CONNECTING; /* so that conn_end counts it */
    opening++;
    live++;
    conn_end(c, strerror(errno));
    return;
  }
  if (addr.ss_family != AF_UNIX)
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
  live++;
  opening++;
  c->state = CONNECTING;
  S.opened++;
  int rc = connect(c->fd, (struct sockaddr *)&addr, addrlen);
  if (rc < 0 && errno == EAGAIN) { /* a unix socket's full backlog */
    close(c->fd);
    live--;
    opening--;
    S.opened--;
    S.connect_retries++;
    retry_at = now_ns() + 1000000;
    slot_free(c);
    return;
  }
  /* connected at once (unix): watched for input only, OPTNEG written now;
   * otherwise EPOLLOUT tells when the connection is made */
  struct epoll_event ev = {.events = EPOLLIN | (rc == 0 ? 0u : EPOLLOUT),
                           .data.ptr = c};
  if ((rc < 0 && errno != EINPROGRESS) ||
      epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
    conn_end(c, strerror(errno));
    return;
  }
  c->want_out = rc != 0;
  if (rc == 0)
    send_optneg(c);
}

static void on_event(conn *c, uint32_t events) {
  if (c->state == CONNECTING) {
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
      err = errno;
    if (err != 0) {
      conn_end(c, strerror(err));
      return;
    }
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
      return;
    send_optneg(c);
    return;
  }
  if ((events & EPOLLOUT) && c->nout > 0 && flush(c) < 0)
    return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
    on_readable(c);
}

static void pump(void) {
  if (retry_at != 0 && now_ns() < retry_at)
    return;
  retry_at = 0;
  while (to_open != NULL && opening < MAX_OPENING && !stopping) {
    conn *c = to_open;
    to_open = c->next_free;
    open_conn(c);
    if (retry_at != 0)
      return;
  }
}

/* A reply overdue by REPLY_TIMEOUT seconds fails its connection. */
static void check_overdue(void) {
  for (int i = 0; i < C.conns; i++) {
    conn *c = &conns[i];
    if (c->state != FREE && c->await != 0 && now_s - c->since_s > REPLY_TIMEOUT)
      conn_end(c, "no reply in time");
  }
}

/* ---- the address --------------------------------------------------------- */

static int resolve(const char *spec) {
  const char *path = NULL;
  if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0)
    path = strchr(spec, ':') + 1;
  else if (spec[0] == '/')
    path = spec;
  if (path != NULL) {
    struct sockaddr_un *un = (struct sockaddr_un *)&addr;
    if (strlen(path) >= sizeof un->sun_path)
      return -1;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    addrlen = sizeof *un;
    return 0;
  }
  int family;
  if (strncmp(spec, "inet:", 5) == 0)
    family = AF_INET;
  else if (strncmp(spec, "inet6:", 6) == 0)
    family = AF_INET6;
  else
    return -1;
  char port[16];
  const char *p = strchr(spec, ':') + 1, *at = strchr(p, '@');
  if (at == NULL || (size_t)(at - p) >= sizeof port)
    return -1;
  memcpy(port, p, (size_t)(at - p));
  port[at - p] = '\0';
  struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res;
  if (getaddrinfo(at + 1, port, &hints, &res) != 0)
    return -1;
  memcpy(&addr, res->ai_addr, res->ai_addrlen);
  addrlen = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

/* ---- the milter process (-p) --------------------------------------------- */

/* A /proc/PID file into buf (NUL-terminated), or -1. */
static int proc_read(const char *what, char *buf, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", C.pid, what);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, size - 1, f);
  fclose(f);
  buf[n] = '\0';
  return 0;
}

/* A "Key:  123 kB" line of /proc/PID/status (in status), or -1. */
static long status_kb(const char *status, const char *key) {
  size_t kl = strlen(key);
  for (const char *l = status; l != NULL && *l; l = strchr(l, '\n')) {
    if (*l == '\n')
      l++;
    if (strncmp(l, key, kl) == 0 && l[kl] == ':')
      return strtol(l + kl + 1, NULL, 10);
  }
  return -1;
}

static void sample(void) {
  char st[4096];
  if (C.pid <= 0 || proc_read("status", st, sizeof st) < 0)
    return;
  long *peak[] = {&S.rss_max_kb, &S.threads_max, &S.anon_max_kb,
                  &S.file_max_kb};
  const char *key[] = {"VmRSS", "Threads", "RssAnon", "RssFile"};
  for (int i = 0; i < 4; i++) {
    long v = status_kb(st, key[i]);
    if (v > *peak[i])
      *peak[i] = v;
  }
}

/* utime+stime of the milter, s, or -1. */
static double milter_cpu(void) {
  char st[1024];
  if (C.pid <= 0 || proc_read("stat", st, sizeof st) < 0)
    return -1;
  const char *p = strrchr(st, ')'); /* the name may hold anything */
  unsigned long ut, stime;
  if (p == NULL || sscanf(p + 2,
                          "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                          "%*u %lu %lu",
                          &ut, &stime) != 2)
    return -1;
  return (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---- main ---------------------------------------------------------------- */

/* -b 10240 or -b 20000:3,300000:1.  0 or -1. */
static int parse_bodies(const char *arg) {
  C.nbodies = 0;
  C.weight_sum = 0;
  C.body_max = 0;
  C.body_arg = arg;
  for (const char *p = arg; *p != '\0';) {
    char *e;
    unsigned long long b = strtoull(p, &e, 10);
    unsigned long w = 1;
    if (e == p || b > (1ULL << 30) || C.nbodies == MAX_BODIES)
      return -1;
    if (*e == ':') {
      p = e + 1;
      w = strtoul(p, &e, 10);
      if (e == p || w == 0 || w > 1000000)
        return -1;
    }
    if (*e != '\0' && *e != ',')
      return -1;
    p = *e == ',' ? e + 1 : e;
    C.bodies[C.nbodies] = (size_t)b;
    C.weights[C.nbodies++] = (unsigned)w;
    C.weight_sum += (unsigned)w;
    if (b > C.body_max)
      C.body_max = (size_t)b;
  }
  return C.nbodies > 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct_ms(double p) {
  if (S.nlat == 0)
    return 0;
  return S.lat[(size_t)(p * (double)(S.nlat - 1) + 0.5)] * 1e3;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: mfblast -s SPEC [-c CONNS] [-d SECONDS | -n MESSAGES] "
          "[-m MSGS_PER_CONN]\n"
          "               [-b BYTES[:WEIGHT][,BYTES[:WEIGHT]...]] [-H HEADERS] "
          "[-r RCPTS]\n"
          "               [-p MILTER_PID] [--auth USER] [--offer-steps HEX] "
          "[--seed N]\n"
          "               [--verify[=ADDHEADERS_PER_EOM]] [--json]\n");
}

static int parse_args(int argc, char **argv) {
  parse_bodies("10240");
  static const struct option lo[] = {
      {"auth", required_argument, NULL, 'A'},
      {"offer-steps", required_argument, NULL, 'S'},
      {"seed", required_argument, NULL, 'Z'},
      {"verify", optional_argument, NULL, 'V'},
      {"json", no_argument, NULL, 'J'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  /* the options that set an int */
  static const struct {
    int ch;
    int *v;
  } ints[] = {{'c', &C.conns},
              {'m', &C.per_conn},
              {'H', &C.headers},
              {'r', &C.rcpts},
              {'p', &C.pid}};
  int ch;
  while ((ch = getopt_long(argc, argv, "s:c:d:n:m:b:H:r:p:h", lo, NULL)) !=
         -1) {
    size_t i = 0;
    while (i < sizeof ints / sizeof ints[0] && ints[i].ch != ch)
      i++;
    if (i < sizeof ints / sizeof ints[0])
      *ints[i].v = atoi(optarg);
    else if (ch == 's')
      C.spec = optarg;
    else if (ch == 'd')
      C.seconds = atof(optarg);
    else if (ch == 'n')
      C.messages = atol(optarg);
    else if (ch == 'b' && parse_bodies(optarg) < 0) {
      fprintf(stderr, "mfblast: bad -b %s\n", optarg);
      return 64;
    } else if (ch == 'A')
      C.auth = optarg;
    else if (ch == 'S')
      C.offer = (uint32_t)strtoul(optarg, NULL, 16) & MILTER_P_ALL_STEPS;
    else if (ch == 'Z')
      C.seed = strtoull(optarg, NULL, 10);
    else if (ch == 'V')
      C.verify = optarg ? atoi(optarg) : 1;
    else if (ch == 'J')
      C.json = 1;
    else if (ch != 'b') {
      usage(ch == 'h' ? stdout : stderr);
      return ch == 'h' ? 0 : 64;
    }
  }
  if (C.spec == NULL || C.conns < 1 || C.per_conn < 1 || C.rcpts < 1 ||
      C.headers < 0 || C.seconds <= 0 || C.messages < 0) {
    usage(stderr);
    return 64;
  }
  if (resolve(C.spec) < 0) {
    fprintf(stderr, "mfblast: cannot use socket spec %s\n", C.spec);
    return 64;
  }
  return -1;
}

static void report(double el, double cpu_k, double self_k, long hwm) {
  double tps = el > 0 ? (double)S.done / el : 0;
  double bpt = S.done > 0 ? (double)S.bytes_out / (double)S.done : 0;
  double maxms = S.nlat ? S.lat[S.nlat - 1] * 1e3 : 0.0;
  if (C.json) {
    printf("{\"mode\":\"load\",\"driver\":\"mfblast\",\"connections\":%d,"
           "\"body\":%zu,\"body_mix\":\"%s\",\"headers\":%d,\"rcpts\":%d,"
           "\"per_conn\":%d,\"transactions\":%ld,\"errors\":%ld,"
           "\"rejected\":%ld,\"decided_early\":%ld,\"seconds\":%.3f,"
           "\"tps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"rss_max_kb\":%ld,\"rss_hwm_kb\":%ld,\"threads_max\":%ld,"
           "\"cpu_s_per_1000\":%.4f,\"bytes_to_milter_per_tx\":%.0f,"
           "\"protocol\":\"0x%x\",\"rss_anon_max_kb\":%ld,"
           "\"rss_file_max_kb\":%ld,\"driver_cpu_s_per_1000\":%.4f,"
           "\"eom_replies\":%ld,\"eom_refused\":%ld,\"modifications\":%ld,"
           "\"add_headers\":%ld,\"progress\":%ld,\"verify\":%d,"
           "\"verify_errors\":%ld,\"connections_opened\":%ld,"
           "\"connect_retries\":%ld}\n",
           C.conns, C.body_max, C.body_arg, C.headers, C.rcpts, C.per_conn,
           S.done, S.errors, S.rejected, S.early, el, tps, pct_ms(0.5),
           pct_ms(0.99), maxms, S.rss_max_kb, hwm, S.threads_max, cpu_k, bpt,
           (unsigned)S.protocol, S.anon_max_kb, S.file_max_kb, self_k,
           S.eom_replies, S.eom_refused, S.mods, S.adds, S.progress, C.verify,
           S.verify_errors, S.opened, S.connect_retries);
    return;
  }
  printf("%ld transactions in %.2f s over %d connections: %.1f tx/s; latency "
         "p50 %.2f ms p99 %.2f ms max %.2f ms; %ld errors (%ld verify), %ld "
         "rejected, %ld decided before EOM; %ld EOM replies (%ld refused), "
         "%ld modifications (%ld add-header); milter: peak RSS %ld KiB (HWM "
         "%ld), %ld threads, %.3f CPU s per 1000 tx; mfblast %.3f CPU s per "
         "1000 tx; %.0f bytes to the milter per tx; negotiated steps 0x%x\n",
         S.done, el, C.conns, tps, pct_ms(0.5), pct_ms(0.99), maxms, S.errors,
         S.verify_errors, S.rejected, S.early, S.eom_replies, S.eom_refused,
         S.mods, S.adds, S.rss_max_kb, hwm, S.threads_max, cpu_k, self_k, bpt,
         (unsigned)S.protocol);
}

int main(int argc, char **argv) {
  int rc = parse_args(argc, argv);
  if (rc >= 0)
    return rc;
  /* SIGPIPE keeps its default: every write is sendmsg(MSG_NOSIGNAL). */
  struct rlimit nofile; /* one fd per connection, and a few */
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
      nofile.rlim_cur < (rlim_t)C.conns + 64) {
    nofile.rlim_cur = (rlim_t)C.conns + 64 < nofile.rlim_max
                          ? (rlim_t)C.conns + 64
                          : nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  conns = must(calloc((size_t)C.conns, sizeof *conns));
  for (int i = C.conns - 1; i >= 0; i--) {
    conns[i].fd = -1;
    slot_free(&conns[i]);
  }
  sample();
  S.rss_max_kb = S.threads_max = S.anon_max_kb = S.file_max_kb = 0;
  double cpu0 = milter_cpu(), self0 = self_cpu();
  t_start = now_ns();
  t_stop = t_start + (uint64_t)(C.seconds * 1e9);
  uint64_t next_sample = t_start, next_check = t_start;
  static struct epoll_event evs[512];
  pump();
  while (live > 0 || (to_open != NULL && !stopping && want_more())) {
    uint64_t t = now_ns();
    now_s = (t - t_start) / 1000000000u;
    if (t >= next_sample) {
      sample();
      next_sample = t + 50000000u;
    }
    if (t >= next_check) {
      check_overdue();
      next_check = t + 1000000000u;
    }
    pump();
    int timeout = retry_at ? 1 : (int)((next_sample - t) / 1000000u) + 1;
    int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
    if (n < 0 && errno != EINTR) {
      perror("mfblast: epoll_wait");
      return 70;
    }
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->fd >= 0 && c->state != FREE)
        on_event(c, evs[i].events);
    }
  }
  double el = (double)(now_ns() - t_start) / 1e9;
  double self1 = self_cpu(), cpu1 = milter_cpu();
  sample();
  char st[4096];
  long hwm = C.pid > 0 && proc_read("status", st, sizeof st) == 0
                 ? status_kb(st, "VmHWM")
                 : -1;
  qsort(S.lat, S.nlat, sizeof *S.lat, cmp_double);
  double cpu_k = S.done > 0 && cpu0 >= 0 && cpu1 >= 0
                     ? (cpu1 - cpu0) * 1000.0 / (double)S.done
                     : -1;
  double self_k = S.done > 0 ? (self1 - self0) * 1000.0 / (double)S.done : -1;
  report(el, cpu_k, self_k, hwm);
  return S.errors ? 1 : 0;
}
