/* spec.c -- socket specifications as Postfix and libmilter write them:
 *   unix:/path  local:/path  /path
 *   inet:PORT@HOST  inet:PORT  inet:HOST:PORT  inet:[HOST]:PORT
 *   inet6:PORT@HOST  inet6:PORT  inet6:[HOST]:PORT  inet6:HOST:PORT
 * HOST may be an address or a name (resolved once, at listen time).
 * And, for listening only (listen.c), sockets made by someone else:
 *   systemd  fd:N */
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <mailfilter/milter.h>

#include "listen.h"

static int parse_port(const char *s, size_t n, uint16_t *out) {
  if (n == 0 || n > 5)
    return MILTER_E_ADDR;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return MILTER_E_ADDR;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535)
    return MILTER_E_ADDR;
  *out = (uint16_t)v;
  return 0;
}

static int resolve(int family, const char *host, uint16_t port,
                   struct sockaddr_storage *sa) {
  memset(sa, 0, sizeof *sa);
  if (host[0] == '\0' || strcmp(host, "*") == 0) {
    if (family == AF_INET6) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = in6addr_any;
      s6->sin6_port = htons(port);
    } else {
      struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
      s4->sin_family = AF_INET;
      s4->sin_addr.s_addr = htonl(INADDR_ANY);
      s4->sin_port = htons(port);
    }
    return 0;
  }
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char serv[8];
  snprintf(serv, sizeof serv, "%u", (unsigned)port);
  if (getaddrinfo(host, serv, &hints, &res) != 0 || res == NULL)
    return MILTER_E_ADDR;
  memcpy(sa, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

int milter_parse_spec(const char *spec, struct sockaddr_storage *sa,
                      int *is_unix, char *path, size_t pathlen) {
  if (spec == NULL || sa == NULL || is_unix == NULL)
    return MILTER_E_INVAL;
  const char *rest;
  int family;
  if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0 ||
      spec[0] == '/') {
    rest = spec[0] == '/' ? spec : strchr(spec, ':') + 1;
    size_t n = strlen(rest);
    if (n == 0 || n >= sizeof(((struct sockaddr_un *)0)->sun_path) ||
        path == NULL || n >= pathlen)
      return MILTER_E_ADDR;
    memcpy(path, rest, n + 1);
    *is_unix = 1;
    return 0;
  }
  if (strncmp(spec, "inet:", 5) == 0) {
    family = AF_INET;
    rest = spec + 5;
  } else if (strncmp(spec, "inet6:", 6) == 0) {
    family = AF_INET6;
    rest = spec + 6;
  } else {
    return MILTER_E_ADDR;
  }
  *is_unix = 0;
  char host[256];
  uint16_t port;
  const char *at = strchr(rest, '@');
  const char *lc = strrchr(rest, ':');
  if (at != NULL) { /* PORT@HOST */
    if (parse_port(rest, (size_t)(at - rest), &port) < 0)
      return MILTER_E_ADDR;
    snprintf(host, sizeof host, "%s", at + 1);
  } else if (lc != NULL) { /* HOST:PORT, [HOST]:PORT */
    size_t hl = (size_t)(lc - rest);
    if (parse_port(lc + 1, strlen(lc + 1), &port) < 0 || hl >= sizeof host)
      return MILTER_E_ADDR;
    memcpy(host, rest, hl);
    host[hl] = '\0';
  } else { /* PORT */
    if (parse_port(rest, strlen(rest), &port) < 0)
      return MILTER_E_ADDR;
    host[0] = '\0';
  }
  size_t hl = strlen(host);
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
    memmove(host, host + 1, hl - 2);
    host[hl - 2] = '\0';
  }
  /* "inet:[::1]:PORT": an IPv6 literal under inet: means inet6. */
  if (family == AF_INET && strchr(host, ':') != NULL)
    family = AF_INET6;
  return resolve(family, host, port, sa);
}

int milter_spec_inherited(const char *spec, int *fd) {
  if (strcmp(spec, "systemd") == 0)
    return MILTER_SPEC_SYSTEMD;
  if (strncmp(spec, "fd:", 3) != 0)
    return MILTER_SPEC_ADDRESS;
  const char *s = spec + 3;
  long v = 0;
  if (*s == '\0')
    return MILTER_E_ADDR;
  for (; *s != '\0'; s++) {
    if (*s < '0' || *s > '9' || v > (INT_MAX - 9) / 10)
      return MILTER_E_ADDR;
    v = v * 10 + (*s - '0');
  }
  *fd = (int)v;
  return MILTER_SPEC_FD;
}
