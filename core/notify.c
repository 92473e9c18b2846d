/* notify.c -- the service manager's notification protocol (see notify.h). */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NLOG(n, lvl, ...) milter_logf((n)->env, lvl, __VA_ARGS__)

/* A decimal number of a whole variable, or 0 when unset or not one. */
static uint64_t env_number(const char *name) {
  const char *s = getenv(name);
  if (s == NULL || *s < '0' || *s > '9')
    return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  return errno != 0 || *end != '\0' ? 0 : (uint64_t)v;
}

int mf_notify_open(mf_notify *n, const milter_session_env *env) {
  memset(n, 0, sizeof *n);
  n->fd = -1;
  n->env = env;
  const char *s = getenv("NOTIFY_SOCKET");
  if (s == NULL || s[0] == '\0')
    return 0;
  size_t len = strlen(s);
  n->addr.sun_family = AF_UNIX;
  if ((s[0] != '/' && s[0] != '@') || len >= sizeof n->addr.sun_path) {
    NLOG(n, MILTER_LOG_WARNING,
         "NOTIFY_SOCKET=%s: not an AF_UNIX socket path or @abstract name: "
         "no readiness notification",
         s);
    return 0;
  }
  memcpy(n->addr.sun_path, s, len);
  memcpy(n->name, s, len);
  n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  if (s[0] == '@')
    n->addr.sun_path[0] = '\0'; /* abstract: the length delimits the name */
  else
    n->addrlen++; /* a path: its terminating NUL */
  n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (n->fd < 0) {
    NLOG(n, MILTER_LOG_WARNING,
         "NOTIFY_SOCKET=%s: socket: %s: no readiness notification", s,
         strerror(errno));
    return 0;
  }
  uint64_t wpid = env_number("WATCHDOG_PID");
  if (wpid == 0 || wpid == (uint64_t)getpid())
    n->watchdog_usec = env_number("WATCHDOG_USEC");
  NLOG(n, MILTER_LOG_DEBUG, "notifying the service manager at %s", s);
  return 1;
}

int mf_notify_send(mf_notify *n, const char *msg) {
  if (n->fd < 0)
    return 0;
  ssize_t r;
  do
    r = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
               (const struct sockaddr *)&n->addr, n->addrlen);
  while (r < 0 && errno == EINTR);
  if (r >= 0)
    return 0;
  int e = errno;
  if (!n->failed) {
    n->failed = 1;
    NLOG(n, MILTER_LOG_WARNING,
         "NOTIFY_SOCKET=%s: cannot notify the service manager (%.*s): %s "
         "(logged once; serving goes on)",
         n->name, (int)strcspn(msg, "\n"), msg, strerror(e));
  }
  return -e;
}

void mf_notify_close(mf_notify *n) {
  if (n->fd >= 0)
    close(n->fd);
  n->fd = -1;
}
