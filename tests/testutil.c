#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tu_data_path(const char *name) {
  static char path[4096];
  const char *dir = getenv("MF_TEST_DATA");
  if (name[0] == '/' || dir == NULL)
    snprintf(path, sizeof path, "%s", name);
  else
    snprintf(path, sizeof path, "%s/%s", dir, name);
  return path;
}

char *tu_read_file(const char *name, size_t *len) {
  FILE *f = fopen(tu_data_path(name), "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  size_t got;
  while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      char *nb = realloc(buf, cap * 2 + 1);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf == NULL)
    return NULL;
  buf[n] = '\0';
  if (len != NULL)
    *len = n;
  return buf;
}

int tu_count_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

int tu_count_fds(void) {
  return tu_count_entries("/proc/self/fd") - 1; /* the DIR's own fd */
}

/* A TCP socket and 127.0.0.1:port in *sa, or -1. */
static int loopback_socket(struct sockaddr_in *sa, int port) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

int tu_listen_loopback(int *port) {
  struct sockaddr_in sa;
  int fd = loopback_socket(&sa, 0);
  if (fd < 0)
    return -1;
  socklen_t sl = sizeof sa;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

int tu_connect_loopback(int port) {
  struct sockaddr_in sa;
  int fd = loopback_socket(&sa, port);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int tu_connect_unix(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_un su;
  memset(&su, 0, sizeof su);
  su.sun_family = AF_UNIX;
  snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
  if (connect(fd, (struct sockaddr *)&su, sizeof su) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void *tu_server_thread(void *arg) {
  milter_server_run(arg);
  return NULL;
}

static void tu_quiet(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  (void)msg;
}

int tu_server_start(tu_server *t, const milter_filter_desc *d) {
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.handle_signals = 0;
  o.log = tu_quiet;
  o.drain_timeout_ms = 1000;
  int rc = milter_server_new(&t->srv, NULL, d, &o); /* copies d */
  if (rc == 0)
    rc = milter_server_listen(t->srv, "inet:0@127.0.0.1");
  if (rc != 0)
    return rc;
  snprintf(t->spec, sizeof t->spec, "inet:%d@127.0.0.1",
           milter_server_port(t->srv));
  return pthread_create(&t->thread, NULL, tu_server_thread, t->srv) == 0
             ? 0
             : MILTER_E_NOMEM;
}

void tu_server_stop(tu_server *t) {
  milter_server_stop(t->srv);
  pthread_join(t->thread, NULL);
  milter_server_free(t->srv);
}
