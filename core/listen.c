/* listen.c -- listening sockets and the accept loop (see listen.h). */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "mf_alloc.h"

#define ALOG(a, lvl, ...) milter_logf((a)->env, lvl, __VA_ARGS__)

/* Accepts per wake-up of one listener: the rest of the backlog waits one
 * loop iteration (the poll is level-triggered), so a flood of connections
 * does not starve the connections already open. */
enum { ACCEPT_BATCH = 64, REPORT_MS = 1000 };

static void acceptor_handle_closed(uv_handle_t *h) {
  milter_acceptor *a = h->data;
  if (--a->handles == 0 && a->on_closed != NULL)
    a->on_closed(a->data);
}

void milter_acceptor_init(milter_acceptor *a, uv_loop_t *loop,
                          const milter_session_env *env, milter_accept_fn fn,
                          void *data, void (*on_closed)(void *data)) {
  memset(a, 0, sizeof *a);
  a->loop = loop;
  a->env = env;
  a->on_accept = fn;
  a->data = data;
  a->on_closed = on_closed;
  uv_timer_t *timers[3] = {&a->pause_timer, &a->fail_timer, &a->refuse_timer};
  for (int i = 0; i < 3; i++) {
    uv_timer_init(loop, timers[i]);
    timers[i]->data = a;
  }
  /* No stream handle anywhere in the server (connections are uv_poll_t):
   * libuv's spare fd for its EMFILE trick is never opened. */
  a->handles = 3;
  a->inited = 1;
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                  */
/* ------------------------------------------------------------------------ */

static void log_fails(milter_acceptor *a) {
  ALOG(a, MILTER_LOG_ERROR,
       "accept: %s: accepting paused %llu ms (%u time%s in the last second)",
       strerror(a->last_errno), (unsigned long long)a->last_pause_ms, a->fails,
       a->fails == 1 ? "" : "s");
  a->fails = 0;
}

static void log_refused(milter_acceptor *a) {
  ALOG(a, MILTER_LOG_WARNING,
       "max_connections (%u) reached: %u connection%s closed at once in the "
       "last second (last from %s)",
       a->limit, a->refused, a->refused == 1 ? "" : "s", a->refused_peer);
  a->refused = 0;
}

/* Once a second while failures go on; once more when a whole second went
 * by without one: then accepting is back to normal. */
static void on_fail_report(uv_timer_t *t) {
  milter_acceptor *a = t->data;
  if (a->fails > 0) {
    log_fails(a);
  } else if (a->pause_ms == 0) {
    ALOG(a, MILTER_LOG_INFO,
         "accept: accepting again (%u failure%s over %llu ms)",
         a->episode_fails, a->episode_fails == 1 ? "" : "s",
         (unsigned long long)(a->episode_end - a->episode_start));
    a->episode = 0;
    a->episode_fails = 0;
    return;
  }
  uv_timer_start(t, on_fail_report, REPORT_MS, 0);
}

static void on_refuse_report(uv_timer_t *t) {
  milter_acceptor *a = t->data;
  if (a->refused > 0)
    log_refused(a);
}

/* ------------------------------------------------------------------------ */
/* Accepting                                                                */
/* ------------------------------------------------------------------------ */

static void on_listen_io(uv_poll_t *p, int status, int events);

static void set_polling(milter_acceptor *a, int on) {
  for (milter_listener *l = a->listeners; l != NULL; l = l->next)
    if (on)
      uv_poll_start(&l->poll, UV_READABLE, on_listen_io);
    else
      uv_poll_stop(&l->poll);
}

static void on_pause_end(uv_timer_t *t) {
  milter_acceptor *a = t->data;
  a->pause_ms = 0;
  set_polling(a, 1);
}

/* Out of fds or memory: stop polling the listeners for a while; the
 * connections wait in the backlog (libmilter sleeps and retries alike). */
static void accept_failed(milter_acceptor *a, int err) {
  uint64_t now = uv_now(a->loop);
  if (!a->episode) {
    a->episode = 1;
    a->episode_start = now;
  }
  a->last_errno = err;
  a->fails++;
  a->episode_fails++;
  a->pause_ms = a->next_pause_ms ? a->next_pause_ms : ACCEPT_PAUSE_MIN_MS;
  a->next_pause_ms = a->pause_ms * 2 < ACCEPT_PAUSE_MAX_MS
                         ? a->pause_ms * 2
                         : ACCEPT_PAUSE_MAX_MS;
  a->last_pause_ms = a->pause_ms;
  a->episode_end = now + a->pause_ms;
  set_polling(a, 0);
  uv_timer_start(&a->pause_timer, on_pause_end, a->pause_ms, 0);
  if (!uv_is_active((uv_handle_t *)&a->fail_timer))
    uv_timer_start(&a->fail_timer, on_fail_report, REPORT_MS, 0);
}

static void format_peer(const milter_listener *l, const struct sockaddr *sa,
                        char *out, size_t n) {
  char ip[INET6_ADDRSTRLEN];
  if (l->is_unix) {
    snprintf(out, n, "unix:%.50s", l->path); /* long paths cut */
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    snprintf(out, n, "[%.45s]:%u", ip, ntohs(s6->sin6_port));
  } else if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    snprintf(out, n, "%.15s:%u", ip, ntohs(s4->sin_port));
  } else {
    snprintf(out, n, "?");
  }
}

/* One accept: 1 to go on, 0 when the backlog is empty or accepting paused. */
static int accept_one(milter_acceptor *a, milter_listener *l) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  int fd =
      accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    switch (errno) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
      return 0;
    /* Gone before we took it, or a network error of that connection that
     * Linux reports on accept (accept(2): retry as for EAGAIN). */
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM: /* firewall */
      return 1;
    default: /* EMFILE, ENFILE, ENOMEM, ENOBUFS, or worse */
      accept_failed(a, errno);
      return 0;
    }
  }
  char peer[64];
  format_peer(l, (const struct sockaddr *)&ss, peer, sizeof peer);
  int rc = a->on_accept(a->data, fd, l->is_unix, peer);
  if (rc < 0) {
    accept_failed(a, -rc);
    return 0;
  }
  a->next_pause_ms = 0;
  if (rc == MILTER_ACCEPT_REFUSED) {
    a->refused++;
    snprintf(a->refused_peer, sizeof a->refused_peer, "%s", peer);
    if (!uv_is_active((uv_handle_t *)&a->refuse_timer))
      uv_timer_start(&a->refuse_timer, on_refuse_report, REPORT_MS, 0);
  }
  return 1;
}

static void on_listen_io(uv_poll_t *p, int status, int events) {
  milter_listener *l = p->data;
  milter_acceptor *a = l->acc;
  (void)events;
  if (status < 0) {
    accept_failed(a, -status);
    return;
  }
  for (int i = 0; i < ACCEPT_BATCH && !a->closing; i++)
    if (!accept_one(a, l))
      break;
}

/* ------------------------------------------------------------------------ */
/* Listening                                                                */
/* ------------------------------------------------------------------------ */

/* A unix socket path in the way: remove it only if nobody accepts on it. */
static int remove_stale(milter_acceptor *a, const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT)
      return 0;
    ALOG(a, MILTER_LOG_ERROR, "%s: %s", path, strerror(errno));
    return MILTER_E_IO;
  }
  if (!S_ISSOCK(st.st_mode)) {
    ALOG(a, MILTER_LOG_ERROR, "%s: exists and is not a socket", path);
    return MILTER_E_ADDR;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return MILTER_E_IO;
  struct sockaddr_un su;
  memset(&su, 0, sizeof su);
  su.sun_family = AF_UNIX;
  snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
  int r = connect(fd, (struct sockaddr *)&su, sizeof su);
  int e = errno;
  close(fd);
  if (r == 0) {
    ALOG(a, MILTER_LOG_ERROR, "%s: in use (a process accepts on it)", path);
    return MILTER_E_ADDR;
  }
  if (e != ECONNREFUSED) {
    ALOG(a, MILTER_LOG_ERROR, "%s: cannot probe: %s", path, strerror(e));
    return MILTER_E_IO;
  }
  if (unlink(path) != 0) {
    ALOG(a, MILTER_LOG_ERROR, "%s: cannot remove stale socket: %s", path,
         strerror(errno));
    return MILTER_E_IO;
  }
  ALOG(a, MILTER_LOG_INFO, "%s: removed stale socket", path);
  return 0;
}

static int listen_fail(milter_acceptor *a, milter_listener *l, const char *spec,
                       const char *what, int err) {
  ALOG(a, MILTER_LOG_ERROR, "listen %s: %s: %s", spec, what, strerror(err));
  if (l->fd >= 0)
    close(l->fd);
  free(l);
  return MILTER_E_IO;
}

/* socket + bind (+ chmod) + listen; l->fd set.  Returns 0 or listen_fail. */
static int open_socket(milter_acceptor *a, milter_listener *l, const char *spec,
                       const struct sockaddr_storage *sa, int backlog,
                       int unix_mode, int reuseport) {
  int on = 1, off = 0;
  int family = l->is_unix ? AF_UNIX : sa->ss_family;
  l->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l->fd < 0)
    return listen_fail(a, l, spec, "socket", errno);
  if (l->is_unix) {
    struct sockaddr_un su;
    memset(&su, 0, sizeof su);
    su.sun_family = AF_UNIX;
    snprintf(su.sun_path, sizeof su.sun_path, "%s", l->path);
    if (bind(l->fd, (struct sockaddr *)&su, sizeof su) != 0)
      return listen_fail(a, l, spec, "bind", errno);
    if (chmod(l->path, (mode_t)unix_mode) != 0) {
      int e = errno;
      unlink(l->path);
      return listen_fail(a, l, spec, "chmod", e);
    }
  } else {
    socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in);
    /* As libuv's uv_tcp_bind: reuse TIME_WAIT ports; inet6 listeners take
     * IPv4 too (v4-mapped). */
    if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        (family == AF_INET6 &&
         setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0))
      return listen_fail(a, l, spec, "setsockopt", errno);
    /* Opt-in: several processes on one port (milter.h, MULTIPLE PROCESSES):
     * the option, or MAILFILTER_REUSEPORT=1 for any built filter. */
    const char *rp = getenv("MAILFILTER_REUSEPORT");
    if (rp != NULL && strcmp(rp, "1") == 0)
      reuseport = 1;
    if (reuseport &&
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
      return listen_fail(a, l, spec, "setsockopt SO_REUSEPORT", errno);
    if (bind(l->fd, (const struct sockaddr *)sa, len) != 0)
      return listen_fail(a, l, spec, "bind", errno);
  }
  if (listen(l->fd, backlog) != 0) {
    int e = errno;
    if (l->is_unix)
      unlink(l->path);
    return listen_fail(a, l, spec, "listen", e);
  }
  return 0;
}

static int bound_port(int fd) {
  struct sockaddr_storage b;
  socklen_t blen = sizeof b;
  if (getsockname(fd, (struct sockaddr *)&b, &blen) != 0)
    return -1;
  return ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
                                       : ((struct sockaddr_in *)&b)->sin_port);
}

/* Poll a listener whose fd listens, and add it to a. */
static int start_listener(milter_acceptor *a, milter_listener *l,
                          const char *spec, int *port) {
  int rc = uv_poll_init_socket(a->loop, &l->poll, l->fd);
  if (rc < 0) {
    if (l->is_unix && !l->inherited)
      unlink(l->path);
    return listen_fail(a, l, spec, "poll", -rc);
  }
  l->poll.data = l;
  a->handles++;
  if (a->pause_ms == 0)
    uv_poll_start(&l->poll, UV_READABLE, on_listen_io);
  if (!l->is_unix && port != NULL)
    *port = bound_port(l->fd);
  l->next = a->listeners;
  a->listeners = l;
  return 0;
}

static int listen_inherited(milter_acceptor *a, int kind, int fd, int *port);

int milter_acceptor_listen(milter_acceptor *a, const char *spec, int backlog,
                           int unix_mode, int reuseport, int *port) {
  struct sockaddr_storage sa;
  int is_unix = 0, rc, fd = -1;
  if (a->closing)
    return MILTER_E_STATE;
  int kind = milter_spec_inherited(spec, &fd);
  if (kind < 0) {
    ALOG(a, MILTER_LOG_ERROR, "bad socket spec '%s' (fd:N wants a number)",
         spec);
    return MILTER_E_ADDR;
  }
  if (kind != MILTER_SPEC_ADDRESS)
    return listen_inherited(a, kind, fd, port);
  milter_listener *l = xcalloc(1, sizeof *l);
  if (l == NULL)
    return MILTER_E_NOMEM;
  l->fd = -1;
  if (milter_parse_spec(spec, &sa, &is_unix, l->path, sizeof l->path) < 0) {
    ALOG(a, MILTER_LOG_ERROR, "bad socket spec '%s'", spec);
    free(l);
    return MILTER_E_ADDR;
  }
  l->acc = a;
  l->is_unix = is_unix;
  if (is_unix && (rc = remove_stale(a, l->path)) < 0) {
    free(l);
    return rc;
  }
  if ((rc = open_socket(a, l, spec, &sa, backlog, unix_mode, reuseport)) <
      0)
    return rc;
  if ((rc = start_listener(a, l, spec, port)) < 0)
    return rc;
  ALOG(a, MILTER_LOG_INFO, "listening on %s", spec);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Inherited sockets: systemd socket activation, fd:N                       */
/* ------------------------------------------------------------------------ */

/* sd_listen_fds(3): the passed sockets start at fd 3. */
enum { LISTEN_FDS_START = 3, LISTEN_FDS_MAX = 1024 };

static const char *sock_type_name(int type) {
  switch (type) {
  case SOCK_DGRAM:
    return "datagram";
  case SOCK_SEQPACKET:
    return "seqpacket";
  case SOCK_RAW:
    return "raw";
  default:
    return "non-stream";
  }
}

/* Check that fd is a listening stream socket of a family we serve (unix,
 * inet, inet6) and make it ours: close-on-exec, non-blocking (accept_one
 * relies on EAGAIN).  what names the fd in the log ("fd:5", "systemd
 * fd 3").  Returns 0 (l->fd, is_unix, path set) or MILTER_E_ADDR, logged. */
static int check_inherited(milter_acceptor *a, milter_listener *l, int fd,
                           const char *what) {
  int type = 0, acc = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    ALOG(a, MILTER_LOG_ERROR, "listen %s: %s", what,
         errno == EBADF      ? "no such file descriptor (not inherited)"
         : errno == ENOTSOCK ? "not a socket"
                             : strerror(errno));
    return MILTER_E_ADDR;
  }
  if (type != SOCK_STREAM) {
    ALOG(a, MILTER_LOG_ERROR,
         "listen %s: a %s socket, not a stream socket (ListenStream=)", what,
         sock_type_name(type));
    return MILTER_E_ADDR;
  }
  len = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc) {
    ALOG(a, MILTER_LOG_ERROR,
         "listen %s: a stream socket that is not listening (connected, or "
         "listen() never called on it)",
         what);
    return MILTER_E_ADDR;
  }
  struct sockaddr_storage ss;
  len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
    ALOG(a, MILTER_LOG_ERROR, "listen %s: getsockname: %s", what,
         strerror(errno));
    return MILTER_E_ADDR;
  }
  if (ss.ss_family == AF_UNIX) {
    const struct sockaddr_un *su = (const struct sockaddr_un *)&ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path)
                   : 0;
    if (n > 0 && su->sun_path[0] == '\0') /* abstract: "@name" */
      snprintf(l->path, sizeof l->path, "@%.*s", (int)(n - 1),
               su->sun_path + 1);
    else
      snprintf(l->path, sizeof l->path, "%.*s", (int)strnlen(su->sun_path, n),
               su->sun_path);
    l->is_unix = 1;
  } else if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
    ALOG(a, MILTER_LOG_ERROR,
         "listen %s: address family %d (only unix, inet and inet6 are "
         "served)",
         what, (int)ss.ss_family);
    return MILTER_E_ADDR;
  }
  int fdfl = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL);
  if (fdfl < 0 || fl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0 ||
      fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    ALOG(a, MILTER_LOG_ERROR, "listen %s: fcntl: %s", what, strerror(errno));
    return MILTER_E_ADDR;
  }
  l->fd = fd;
  l->inherited = 1;
  l->acc = a;
  return 0;
}

/* The listener's own address for the log: "unix:/path", "1.2.3.4:25". */
static void local_name(milter_listener *l, char *out, size_t n) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (!l->is_unix && getsockname(l->fd, (struct sockaddr *)&ss, &len) != 0)
    ss.ss_family = AF_UNSPEC;
  format_peer(l, (const struct sockaddr *)&ss, out, n);
}

/* A decimal environment variable: 0 and *v, or -1 (unset, not a number). */
static int env_long(const char *s, long *v) {
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  char *end;
  errno = 0;
  *v = strtol(s, &end, 10);
  return errno != 0 || *end != '\0' ? -1 : 0;
}

/* LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, unset once read (so that a
 * child process does not take the sockets for its own).  Returns the
 * number of fds passed to this process, or MILTER_E_ADDR (logged). */
static int systemd_fds(milter_acceptor *a, char **names) {
  const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
  const char *names_s = getenv("LISTEN_FDNAMES");
  long pid = 0, n = 0;
  int pid_ok = env_long(pid_s, &pid) == 0;
  int fds_ok = env_long(fds_s, &n) == 0;
  char why[160];
  why[0] = '\0';
  if (fds_s == NULL)
    snprintf(why, sizeof why, "LISTEN_FDS is not set");
  else if (!fds_ok || n < 0 || n > LISTEN_FDS_MAX)
    snprintf(why, sizeof why, "LISTEN_FDS=%.20s is not a number of fds", fds_s);
  else if (n == 0)
    snprintf(why, sizeof why, "LISTEN_FDS=0: no socket was passed");
  else if (pid_s == NULL)
    snprintf(why, sizeof why, "LISTEN_PID is not set");
  else if (!pid_ok || pid != (long)getpid())
    snprintf(why, sizeof why,
             "LISTEN_PID=%.20s is not this process (pid %ld): the sockets "
             "were passed to another one",
             pid_s, (long)getpid());
  *names = why[0] == '\0' && names_s != NULL ? xstrdup(names_s) : NULL;
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  if (why[0] != '\0') {
    ALOG(a, MILTER_LOG_ERROR,
         "listen systemd: %s (socket activation: start the filter through "
         "its .socket unit, or give it an address)",
         why);
    return MILTER_E_ADDR;
  }
  return (int)n;
}

/* The i-th of the colon-separated names, or "" (count mismatch: none). */
static const char *fd_name(char *names, int i, int n, char *out, size_t len) {
  out[0] = '\0';
  if (names == NULL)
    return out;
  int count = 1;
  for (const char *p = names; *p; p++)
    count += *p == ':';
  if (count != n)
    return out;
  const char *p = names;
  for (int k = 0; k < i; k++)
    p = strchr(p, ':') + 1;
  snprintf(out, len, "%.*s", (int)strcspn(p, ":"), p);
  return out;
}

static int listen_inherited(milter_acceptor *a, int kind, int fd, int *port) {
  char *names = NULL;
  int n = 1, rc = 0;
  if (kind == MILTER_SPEC_SYSTEMD && (n = systemd_fds(a, &names)) < 0)
    return n;
  milter_listener **ls = xcalloc((size_t)n, sizeof *ls);
  if (ls == NULL) {
    free(names);
    return MILTER_E_NOMEM;
  }
  /* Every fd is checked before any is served: all or none. */
  for (int i = 0; i < n; i++) {
    char what[48];
    int f = kind == MILTER_SPEC_SYSTEMD ? LISTEN_FDS_START + i : fd;
    snprintf(what, sizeof what,
             kind == MILTER_SPEC_SYSTEMD ? "systemd (fd %d)" : "fd:%d", f);
    if ((ls[i] = xcalloc(1, sizeof **ls)) == NULL) {
      rc = MILTER_E_NOMEM;
      break;
    }
    if ((rc = check_inherited(a, ls[i], f, what)) < 0)
      break;
  }
  for (int i = 0; i < n && rc == 0; i++) {
    char what[48], name[64], addr[64];
    local_name(ls[i], addr, sizeof addr);
    fd_name(names, i, n, name, sizeof name);
    snprintf(what, sizeof what,
             kind == MILTER_SPEC_SYSTEMD ? "systemd (fd %d)" : "fd:%d",
             ls[i]->fd);
    milter_listener *l = ls[i];
    ls[i] = NULL;
    if ((rc = start_listener(a, l, what, port)) < 0)
      break;
    ALOG(a, MILTER_LOG_INFO, "listening on %s%s%s%s: %s", what,
         name[0] ? " '" : "", name, name[0] ? "'" : "", addr);
  }
  for (int i = 0; i < n; i++)
    free(ls[i]); /* the fds stay open: ours, by the protocol */
  free(ls);
  free(names);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                  */
/* ------------------------------------------------------------------------ */

static void listener_closed(uv_handle_t *h) {
  milter_listener *l = h->data;
  milter_acceptor *a = l->acc;
  close(l->fd);
  free(l);
  if (--a->handles == 0 && a->on_closed != NULL)
    a->on_closed(a->data);
}

void milter_acceptor_close(milter_acceptor *a) {
  if (!a->inited || a->closing)
    return;
  a->closing = 1;
  if (a->fails > 0)
    log_fails(a);
  if (a->refused > 0)
    log_refused(a);
  while (a->listeners != NULL) {
    milter_listener *l = a->listeners;
    a->listeners = l->next;
    if (l->is_unix && !l->inherited)
      unlink(l->path);
    uv_close((uv_handle_t *)&l->poll, listener_closed);
  }
  uv_close((uv_handle_t *)&a->pause_timer, acceptor_handle_closed);
  uv_close((uv_handle_t *)&a->fail_timer, acceptor_handle_closed);
  uv_close((uv_handle_t *)&a->refuse_timer, acceptor_handle_closed);
}
