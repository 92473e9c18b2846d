/*
 * epoll_null.c -- the store-nothing reference of the benchmark: one thread,
 * plain epoll, nonblocking sockets, no library.
 *
 * It speaks just enough of the milter protocol (../shared/DESIGN.md,
 * "Protocol facts") to do the same visible work as the other compared
 * filters -- add "X-Rcpt-Count: N" at end of message -- and nothing else:
 *
 *   - negotiation: from what the MTA offers it takes ADDHDRS and the steps
 *     the null filter (null_filter.c) ends up with: no CONNECT, HELO, DATA,
 *     UNKNOWN or EOH event, no reply to MAIL, RCPT, each header and each
 *     body chunk.  Headers and body are still sent, as to every compared
 *     filter; no macro is asked for, no larger data size;
 *   - every event the MTA sends anyway gets CONTINUE unless its reply was
 *     negotiated away; MAIL and ABORT reset the count, RCPT adds one, end
 *     of message answers ADDHEADER (if the MTA offered it) and CONTINUE;
 *   - QUIT closes, QUIT_NC waits for a new negotiation.
 *
 * What it stores: per connection the 5 bytes of a packet header, the
 * first 12 payload bytes of OPTNEG, the negotiated steps and a counter.
 * Every other payload byte is read into one process-wide buffer and
 * dropped.  Replies of one wake-up are written with one send(); only when
 * the socket takes less are the rest kept (and reading stops until they
 * are out).  Nothing is allocated per packet.
 *
 * It is the yardstick for "how fast can a milter be on this machine", not
 * a filter to deploy: no timeouts, no logging per connection, no macros.
 *
 * Usage: epoll_null SOCKETSPEC   (unix:/path, local:/path, inet:PORT@HOST,
 *                                  inet6:PORT@HOST)
 * Runs until SIGTERM / SIGINT, then removes its unix socket.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Commands (MTA -> milter) and replies used here. */
enum {
  CMD_OPTNEG = 'O',
  CMD_MACRO = 'D',
  CMD_CONNECT = 'C',
  CMD_HELO = 'H',
  CMD_MAIL = 'M',
  CMD_RCPT = 'R',
  CMD_DATA = 'T',
  CMD_HEADER = 'L',
  CMD_EOH = 'N',
  CMD_BODY = 'B',
  CMD_EOB = 'E',
  CMD_ABORT = 'A',
  CMD_QUIT = 'Q',
  CMD_QUIT_NC = 'K',
  CMD_UNKNOWN = 'U',
  REPLY_CONTINUE = 'c',
  REPLY_ADDHEADER = 'h',
};

/* Action and protocol bits (the milter protocol's SMFIF_* / SMFIP_*). */
#define ACT_ADDHDRS 0x1u
#define P_NOCONNECT 0x1u
#define P_NOHELO 0x2u
#define P_NOEOH 0x40u
#define P_NR_HDR 0x80u
#define P_NOUNKNOWN 0x100u
#define P_NODATA 0x200u
#define P_NR_CONN 0x1000u
#define P_NR_HELO 0x2000u
#define P_NR_MAIL 0x4000u
#define P_NR_RCPT 0x8000u
#define P_NR_DATA 0x10000u
#define P_NR_UNKN 0x20000u
#define P_NR_EOH 0x40000u
#define P_NR_BODY 0x80000u

/* What this filter asks for, as far as the MTA offers it. */
#define P_WANTED                                                               \
  (P_NOCONNECT | P_NOHELO | P_NOEOH | P_NR_HDR | P_NOUNKNOWN | P_NODATA |      \
   P_NR_MAIL | P_NR_RCPT | P_NR_BODY)

#define VERSION 6u
#define MAX_PACKET (64u << 20) /* a sanity bound; payloads are skipped */
#define MAX_CONNS 20000
#define BACKLOG 4096

typedef struct conn {
  int fd;
  uint8_t hdr[5];  /* length (4, big-endian) and command */
  uint8_t hlen;    /* header bytes collected */
  uint8_t olen;    /* OPTNEG payload bytes collected */
  uint8_t nego;    /* negotiated (OPTNEG answered) */
  uint8_t opt[12]; /* OPTNEG: version, actions, protocol */
  uint32_t need;   /* payload bytes of this packet still to come */
  uint32_t proto;  /* negotiated protocol steps */
  uint32_t acts;   /* negotiated actions */
  uint32_t nrcpt;
  char *out; /* replies the socket did not take yet, or NULL */
  size_t outlen, outoff;
} conn;

static int ep, lfd = -1;
static int nconns, accept_paused;
static volatile sig_atomic_t stop;
static uint8_t inbuf[65536];
/* The replies of the read being handled, sent together. */
static uint8_t outbuf[16384];
static size_t outn;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

/* Big-endian 32-bit fields of the protocol. */
static void put32(uint8_t *p, uint32_t v) {
  v = htonl(v);
  memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return ntohl(v);
}

static void conn_close(conn *c) {
  close(c->fd); /* leaves the epoll set with it */
  free(c->out);
  free(c);
  nconns--;
  if (accept_paused) { /* a descriptor is free again */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &ev) == 0)
      accept_paused = 0;
  }
}

static int watch(conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send outbuf (after anything still queued); keep what the socket does not
 * take and wait for EPOLLOUT.  0, or -1: the connection is gone. */
static int flush(conn *c) {
  size_t off = 0;
  if (outn == 0)
    return 0;
  if (c->out == NULL) {
    while (off < outn) {
      ssize_t n = send(c->fd, outbuf + off, outn - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno != EAGAIN)
        return -1;
      if (n < 0)
        break;
      off += (size_t)n;
    }
    if (off == outn) {
      outn = 0;
      return 0;
    }
  }
  char *p = realloc(c->out, c->outlen + (outn - off));
  if (p == NULL)
    return -1;
  memcpy(p + c->outlen, outbuf + off, outn - off);
  c->out = p;
  c->outlen += outn - off;
  outn = 0;
  return watch(c, EPOLLOUT);
}

/* Queue one reply packet.  0, or -1: the connection is gone. */
static int reply(conn *c, uint8_t cmd, const void *data, size_t len) {
  if (outn + 5 + len > sizeof outbuf && flush(c) < 0)
    return -1;
  put32(outbuf + outn, (uint32_t)len + 1);
  outbuf[outn + 4] = cmd;
  if (len > 0)
    memcpy(outbuf + outn + 5, data, len);
  outn += 5 + len;
  return 0;
}

/* The events answered with CONTINUE unless their NR_* step was
 * negotiated (MAIL and RCPT also count, end of message is eom()). */
static const uint32_t nr_step[128] = {
    [CMD_CONNECT] = P_NR_CONN, [CMD_HELO] = P_NR_HELO,
    [CMD_MAIL] = P_NR_MAIL,    [CMD_RCPT] = P_NR_RCPT,
    [CMD_DATA] = P_NR_DATA,    [CMD_HEADER] = P_NR_HDR,
    [CMD_EOH] = P_NR_EOH,      [CMD_BODY] = P_NR_BODY,
    [CMD_UNKNOWN] = P_NR_UNKN,
};

static int negotiate(conn *c) {
  if (c->olen < 12)
    return -1;
  uint32_t version = get32(c->opt), acts = get32(c->opt + 4),
           proto = get32(c->opt + 8);
  if (version < 2)
    return -1;
  uint8_t r[12];
  c->acts = acts & ACT_ADDHDRS;
  c->proto = proto & P_WANTED;
  put32(r, version < VERSION ? version : VERSION);
  put32(r + 4, c->acts);
  put32(r + 8, c->proto);
  c->nego = 1;
  return reply(c, CMD_OPTNEG, r, sizeof r);
}

static int eom(conn *c) {
  if (c->acts & ACT_ADDHDRS) {
    static const char name[] = "X-Rcpt-Count";
    char h[sizeof name + 16];
    memcpy(h, name, sizeof name); /* with its NUL */
    int n = snprintf(h + sizeof name, 16, "%u", (unsigned)c->nrcpt);
    if (reply(c, REPLY_ADDHEADER, h, sizeof name + (size_t)n + 1) < 0)
      return -1;
  }
  c->nrcpt = 0;
  return reply(c, REPLY_CONTINUE, NULL, 0);
}

/* A whole packet has arrived.  0, or -1: close the connection. */
static int packet(conn *c) {
  uint8_t cmd = c->hdr[4];
  if (!c->nego && cmd != CMD_OPTNEG)
    return -1;
  switch (cmd) {
  case CMD_OPTNEG:
    return c->nego ? -1 : negotiate(c);
  case CMD_MACRO:
    return 0;
  case CMD_EOB:
    return eom(c);
  case CMD_MAIL:
  case CMD_ABORT:
    c->nrcpt = 0;
    break;
  case CMD_RCPT:
    c->nrcpt++;
    break;
  case CMD_QUIT_NC: /* the same connection, a new session */
    c->nego = 0;
    c->nrcpt = 0;
    return 0;
  default:
    break;
  }
  if (cmd < 128 && nr_step[cmd] != 0) /* an event */
    return c->proto & nr_step[cmd] ? 0 : reply(c, REPLY_CONTINUE, NULL, 0);
  return cmd == CMD_ABORT ? 0 : -1; /* QUIT, or a command not known here */
}

/* Parse what one read brought: packet headers are collected, payloads
 * skipped (but OPTNEG's first 12 bytes).  0, or -1: close. */
static int feed(conn *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (c->hlen < 5) {
      size_t k = 5u - c->hlen < n ? 5u - c->hlen : n;
      memcpy(c->hdr + c->hlen, p, k);
      c->hlen += (uint8_t)k;
      p += k;
      n -= k;
      if (c->hlen < 5)
        return 0;
      uint32_t len = get32(c->hdr);
      if (len == 0 || len > MAX_PACKET)
        return -1;
      c->need = len - 1;
      c->olen = 0;
    } else {
      size_t k = c->need < n ? c->need : n;
      if (c->hdr[4] == CMD_OPTNEG && c->olen < 12) {
        size_t o = 12u - c->olen < k ? 12u - c->olen : k;
        memcpy(c->opt + c->olen, p, o);
        c->olen += (uint8_t)o;
      }
      p += k;
      n -= k;
      c->need -= (uint32_t)k;
    }
    if (c->need == 0) {
      c->hlen = 0;
      if (packet(c) < 0)
        return -1;
    }
  }
  return 0;
}

/* Read what the socket holds (up to 16 buffers, stopping at a short
 * read, as libuv does), then send the replies with one send(). */
static void on_readable(conn *c) {
  outn = 0;
  for (int i = 0; i < 16 && c->out == NULL; i++) {
    ssize_t n = recv(c->fd, inbuf, sizeof inbuf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      break;
    if (n <= 0 || feed(c, inbuf, (size_t)n) < 0) {
      (void)flush(c); /* e.g. the replies before a QUIT */
      conn_close(c);
      return;
    }
    if ((size_t)n < sizeof inbuf)
      break;
  }
  if (flush(c) < 0)
    conn_close(c);
}

static void on_writable(conn *c) {
  while (c->outoff < c->outlen) {
    ssize_t n =
        send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return;
    if (n <= 0) {
      conn_close(c);
      return;
    }
    c->outoff += (size_t)n;
  }
  free(c->out);
  c->out = NULL;
  c->outlen = c->outoff = 0;
  if (watch(c, EPOLLIN) < 0) /* read again */
    conn_close(c);
}

static void on_accept(void) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) { /* until a connection closes */
        struct epoll_event ev = {.events = 0, .data.ptr = NULL};
        if (nconns > 0 && epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &ev) == 0)
          accept_paused = 1;
        if (!accept_paused)
          fprintf(stderr, "epoll_null: accept: %s\n", strerror(errno));
      }
      return;
    }
    conn *c = nconns < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (c == NULL || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
      free(c);
      close(fd);
      continue;
    }
    c->fd = fd;
    nconns++;
  }
}

static int listen_unix(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    fprintf(stderr, "epoll_null: socket path too long: %s\n", path);
    return -1;
  }
  strcpy(sa.sun_path, path);
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(path); /* a stale socket of an earlier run */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      listen(fd, BACKLOG) < 0) {
    fprintf(stderr, "epoll_null: %s: %s\n", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* inet:PORT@HOST or inet6:PORT@HOST. */
static int listen_inet(const char *spec, int family) {
  char port[16];
  const char *at = strchr(spec, '@');
  size_t pl = at ? (size_t)(at - spec) : strlen(spec);
  if (pl == 0 || pl >= sizeof port) {
    fprintf(stderr, "epoll_null: bad port in %s\n", spec);
    return -1;
  }
  memcpy(port, spec, pl);
  port[pl] = '\0';
  struct addrinfo hints = {.ai_family = family,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                  *ai;
  int rc = getaddrinfo(at ? at + 1 : NULL, port, &hints, &ai);
  if (rc != 0) {
    fprintf(stderr, "epoll_null: %s: %s\n", spec, gai_strerror(rc));
    return -1;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
      one = 1;
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, BACKLOG) < 0) {
    fprintf(stderr, "epoll_null: %s: %s\n", spec, strerror(errno));
    if (fd >= 0)
      close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SOCKETSPEC   (unix:/path, inet:PORT@HOST)\n",
            argv[0]);
    return 2;
  }
  const char *spec = argv[1], *path = NULL;
  if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0) {
    path = strchr(spec, ':') + 1;
    lfd = listen_unix(path);
  } else if (strncmp(spec, "inet:", 5) == 0) {
    lfd = listen_inet(spec + 5, AF_INET);
  } else if (strncmp(spec, "inet6:", 6) == 0) {
    lfd = listen_inet(spec + 6, AF_INET6);
  } else {
    fprintf(stderr, "epoll_null: unknown socket spec %s\n", spec);
    return 2;
  }
  if (lfd < 0)
    return 1;

  /* SIGTERM/SIGINT are delivered only inside epoll_pwait: no lost wake-up
   * between testing stop and going to sleep. */
  sigset_t block, waitmask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigprocmask(SIG_BLOCK, &block, &waitmask);
  sigdelset(&waitmask, SIGTERM);
  sigdelset(&waitmask, SIGINT);
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
    fprintf(stderr, "epoll_null: epoll: %s\n", strerror(errno));
    return 1;
  }
  struct epoll_event evs[256];
  while (!stop) {
    int n = epoll_pwait(ep, evs, 256, -1, &waitmask);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "epoll_null: epoll_wait: %s\n", strerror(errno));
      break;
    }
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c == NULL)
        on_accept();
      else if (c->out != NULL)
        on_writable(c);
      else
        on_readable(c);
    }
  }
  if (path != NULL)
    unlink(path);
  return 0;
}
