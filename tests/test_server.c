/* test_server.c -- the libuv server over real sockets, raw bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/milter.h>

#include "testutil.h"

/* ---- log capture ----------------------------------------------------------
 */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[1 << 16];

static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(logbuf);
  if (n + strlen(msg) + 2 >= sizeof logbuf)
    n = 0; /* wrap: tests look for recent lines */
  snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
  pthread_mutex_unlock(&log_mu);
}

static void log_clear(void) {
  pthread_mutex_lock(&log_mu);
  logbuf[0] = '\0';
  pthread_mutex_unlock(&log_mu);
}

/* Wait up to 3 s for a log line containing all of a and b (b may be NULL). */
static int log_has(const char *a, const char *b) {
  for (int i = 0; i < 300; i++) {
    pthread_mutex_lock(&log_mu);
    const char *p = logbuf;
    int found = 0;
    while (!found && (p = strstr(p, a)) != NULL) {
      const char *bol = p, *eol = strchr(p, '\n');
      while (bol > logbuf && bol[-1] != '\n')
        bol--;
      if (b == NULL)
        found = 1;
      else {
        const char *q = strstr(bol, b);
        found = q != NULL && (eol == NULL || q < eol);
      }
      p++;
    }
    pthread_mutex_unlock(&log_mu);
    if (found)
      return 1;
    usleep(10000);
  }
  fprintf(stderr, "log lacks '%s' + '%s':\n%s", a, b ? b : "", logbuf);
  return 0;
}

/* ---- the filter -----------------------------------------------------------
 */

static atomic_int n_close, n_eom;
static atomic_int eom_pending;

static milter_status f_connect(milter_ctx *c, const milter_connect_info *ci) {
  (void)c;
  (void)ci;
  return MILTER_CONTINUE;
}
static milter_status f_helo(milter_ctx *c, const char *h) {
  (void)c;
  (void)h;
  return MILTER_CONTINUE;
}
static milter_status f_mail(milter_ctx *c, size_t n, const char *const *v) {
  (void)c;
  (void)n;
  (void)v;
  return MILTER_CONTINUE;
}
static milter_status f_body(milter_ctx *c, const uint8_t *p, size_t n) {
  (void)c;
  (void)p;
  (void)n;
  return MILTER_CONTINUE;
}

static void reply_later(milter_ctx *c, void *arg) {
  (void)arg;
  milter_ctx_addheader(c, "X-Later", "yes");
  milter_ctx_reply(c, MILTER_ACCEPT);
}

static void *worker(void *arg) {
  usleep(150000);
  milter_ctx_post(arg, reply_later, NULL);
  return NULL;
}

static milter_status f_eom(milter_ctx *c) {
  n_eom++;
  if (eom_pending) {
    pthread_t t;
    pthread_create(&t, NULL, worker, c);
    pthread_detach(t);
    return MILTER_PENDING;
  }
  return MILTER_ACCEPT;
}
static void f_close(milter_ctx *c) {
  (void)c;
  n_close++;
}

static milter_filter_desc desc = {
    .name = "srvtest",
    .cb = {.connect = f_connect,
           .helo = f_helo,
           .envfrom = f_mail,
           .envrcpt = f_mail,
           .body = f_body,
           .eom = f_eom,
           .close = f_close},
    .actions_wanted = MILTER_ACT_ADDHDRS,
};

/* ---- server in a thread ---------------------------------------------------
 */

typedef struct tsrv {
  milter_server *srv;
  pthread_t thread;
  int port;
} tsrv;

static void *run_thread(void *arg) {
  milter_server_run(arg);
  return NULL;
}

static milter_server_opts base_opts(void) {
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.log = t_log;
  o.log_level = MILTER_LOG_DEBUG;
  o.handle_signals = 0;
  return o;
}

static void srv_start2(tsrv *t, const milter_server_opts *o, const char *spec,
                       const char *spec2) {
  assert_int_equal(milter_server_new(&t->srv, NULL, &desc, o), 0);
  if (spec2 != NULL)
    assert_int_equal(milter_server_listen(t->srv, spec2), 0);
  assert_int_equal(milter_server_listen(t->srv, spec), 0);
  t->port = milter_server_port(t->srv);
  assert_int_equal(pthread_create(&t->thread, NULL, run_thread, t->srv), 0);
}

static void srv_start(tsrv *t, const milter_server_opts *o, const char *spec) {
  srv_start2(t, o, spec, NULL);
}

static void srv_stop(tsrv *t) {
  milter_server_stop(t->srv);
  pthread_join(t->thread, NULL);
  milter_server_free(t->srv);
}

/* ---- raw client -----------------------------------------------------------
 */

static int cli_tcp(int port) {
  int fd = tu_connect_loopback(port);
  assert_true(fd >= 0);
  return fd;
}

static int cli_unix(const char *path) {
  int fd = tu_connect_unix(path);
  assert_true(fd >= 0);
  return fd;
}

static void cli_send_raw(int fd, const void *p, size_t n) {
  const char *s = p;
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w <= 0)
      return; /* the server may have closed: the test checks that */
    s += w;
    n -= (size_t)w;
  }
}

static void cli_send(int fd, milter_buf *b) {
  cli_send_raw(fd, b->data, b->len);
  b->len = 0;
}

static int read_full(int fd, uint8_t *p, size_t n, int timeout_ms) {
  size_t got = 0;
  while (got < n) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
      return -1; /* timeout */
    ssize_t r = recv(fd, p + got, n - got, 0);
    if (r <= 0)
      return -2; /* EOF / reset */
    got += (size_t)r;
  }
  return 0;
}

/* One reply packet: its command byte, or -1 timeout, -2 EOF. */
static int cli_reply(int fd, int timeout_ms) {
  uint8_t hdr[5];
  int r = read_full(fd, hdr, 5, timeout_ms);
  if (r < 0)
    return r;
  uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
                 ((uint32_t)hdr[2] << 8) | hdr[3];
  uint8_t skip[512];
  size_t left = len - 1;
  while (left > 0) {
    size_t n = left < sizeof skip ? left : sizeof skip;
    if ((r = read_full(fd, skip, n, timeout_ms)) < 0)
      return r;
    left -= n;
  }
  return hdr[4];
}

static int cli_eof(int fd, int timeout_ms) {
  uint8_t b;
  return read_full(fd, &b, 1, timeout_ms) == -2;
}

static void enc_open(milter_buf *b) {
  assert_int_equal(milter_enc_optneg(b, 6, MILTER_ACT_ALL, MILTER_P_ALL_STEPS),
                   0);
  assert_int_equal(milter_enc_connect(b, "client", '4', 1234, "192.0.2.9"), 0);
  assert_int_equal(milter_enc_helo(b, "helo"), 0);
}

/* A complete, well-formed transaction on a new connection. */
static void normal_transaction(int fd) {
  milter_buf b;
  milter_buf_init(&b);
  enc_open(&b);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&b, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_body(&b, "hello\r\n", 7), 0);
  assert_int_equal(milter_enc_simple(&b, 'E'), 0);
  cli_send(fd, &b);
  assert_int_equal(cli_reply(fd, 3000), 'O');
  for (int i = 0; i < 5; i++)
    assert_int_equal(cli_reply(fd, 3000), 'c');
  int r = cli_reply(fd, 3000);
  if (r == 'h')
    r = cli_reply(fd, 3000);
  assert_int_equal(r, 'a');
  assert_int_equal(milter_enc_simple(&b, 'Q'), 0);
  cli_send(fd, &b);
  assert_true(cli_eof(fd, 3000));
  close(fd);
  milter_buf_free(&b);
}

static int base_fds;

/* ---- tests ----------------------------------------------------------------
 */

static void test_parse_spec(void **state) {
  (void)state;
  struct sockaddr_storage sa;
  int u;
  char path[108];
  struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
  assert_int_equal(milter_parse_spec("unix:/tmp/a", &sa, &u, path, 108), 0);
  assert_true(u);
  assert_string_equal(path, "/tmp/a");
  assert_int_equal(milter_parse_spec("local:/tmp/b", &sa, &u, path, 108), 0);
  assert_string_equal(path, "/tmp/b");
  assert_int_equal(milter_parse_spec("/tmp/c", &sa, &u, path, 108), 0);
  assert_string_equal(path, "/tmp/c");
  assert_int_equal(milter_parse_spec("inet:8890@127.0.0.1", &sa, &u, path, 108),
                   0);
  assert_false(u);
  assert_int_equal(s4->sin_family, AF_INET);
  assert_int_equal(ntohs(s4->sin_port), 8890);
  assert_int_equal(ntohl(s4->sin_addr.s_addr), 0x7f000001);
  assert_int_equal(milter_parse_spec("inet:8891", &sa, &u, path, 108), 0);
  assert_int_equal(s4->sin_addr.s_addr, htonl(INADDR_ANY));
  assert_int_equal(ntohs(s4->sin_port), 8891);
  assert_int_equal(milter_parse_spec("inet:127.0.0.1:25", &sa, &u, path, 108),
                   0);
  assert_int_equal(ntohs(s4->sin_port), 25);
  assert_int_equal(milter_parse_spec("inet:25@localhost", &sa, &u, path, 108),
                   0);
  assert_int_equal(ntohl(s4->sin_addr.s_addr), 0x7f000001);
  assert_int_equal(milter_parse_spec("inet6:8892@::1", &sa, &u, path, 108), 0);
  assert_int_equal(s6->sin6_family, AF_INET6);
  assert_int_equal(ntohs(s6->sin6_port), 8892);
  assert_true(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
  assert_int_equal(milter_parse_spec("inet6:8893", &sa, &u, path, 108), 0);
  assert_true(IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr));
  assert_int_equal(milter_parse_spec("inet6:[::1]:8894", &sa, &u, path, 108),
                   0);
  assert_int_equal(ntohs(s6->sin6_port), 8894);
  assert_int_equal(milter_parse_spec("inet6:::1:8895", &sa, &u, path, 108), 0);
  assert_int_equal(ntohs(s6->sin6_port), 8895);
  assert_int_equal(milter_parse_spec("inet:[::1]:8896", &sa, &u, path, 108), 0);
  assert_int_equal(s6->sin6_family, AF_INET6);
  static const char *const bad[] = {"",
                                    "tcp:25",
                                    "inet:",
                                    "inet:99999",
                                    "inet:x@127.0.0.1",
                                    "unix:",
                                    "inet:25@no.such.host.invalid",
                                    "inet:12a"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(milter_parse_spec(bad[i], &sa, &u, path, 108),
                     MILTER_E_ADDR);
}

static void test_basic_inet_and_unix(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  tsrv t;
  char path[64];
  snprintf(path, sizeof path, "/tmp/mf-test-%d.sock", (int)getpid());
  char spec[80];
  snprintf(spec, sizeof spec, "unix:%s", path);
  srv_start2(&t, &o, "inet:0@127.0.0.1", spec);
  assert_true(t.port > 0);
  normal_transaction(cli_tcp(t.port));
  normal_transaction(cli_unix(path));
  assert_true(log_has("unix:", NULL));
  srv_stop(&t);
  struct stat st;
  assert_int_equal(stat(path, &st), -1); /* removed on stop */
}

/* Each malformed input, then a normal transaction on a new connection. */
static void test_malformed_inputs(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  static const struct {
    const char *bytes;
    size_t len;
    int negotiate;
    const char *why;
  } cases[] = {
      {"\0\0\0\0", 4, 1, "zero-length"},
      {"\xff\xff\xff\xff", 4, 1, "over the limit"},
      {"\0\0\0\x10Hpartial", 12, 1, "mid-packet"}, /* truncated, then EOF */
      {"\0\0\0\x03Hab", 7, 1, "malformed SMFIC_HELO"},
      {"\0\0\0\x06"
       "Ch\0X\0\0",
       10, 1, "malformed SMFIC_CONNECT"},
      {"\0\0\0\x02Zq", 6, 1, "malformed"},
      {"\0\0\0\x03"
       "Bxy",
       7, 0, "out-of-order SMFIC_BODY"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    log_clear();
    int fd = cli_tcp(t.port);
    milter_buf b;
    milter_buf_init(&b);
    enc_open(&b);
    cli_send(fd, &b);
    assert_int_equal(cli_reply(fd, 3000), 'O');
    assert_int_equal(cli_reply(fd, 3000), 'c');
    assert_int_equal(cli_reply(fd, 3000), 'c');
    cli_send_raw(fd, cases[i].bytes, cases[i].len);
    if (i == 2)
      shutdown(fd, SHUT_WR); /* truncated packet, then EOF */
    if (cases[i].negotiate)
      assert_true(cli_eof(fd, 3000));
    else
      assert_int_equal(cli_reply(fd, 300), -1); /* ignored: no reply */
    char peer[32];
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &ml);
    snprintf(peer, sizeof peer, "127.0.0.1:%u", ntohs(me.sin_port));
    assert_true(log_has(cases[i].why, peer));
    close(fd);
    milter_buf_free(&b);
    normal_transaction(cli_tcp(t.port));
  }
  /* The peer vanishes mid-body. */
  log_clear();
  int fd = cli_tcp(t.port);
  milter_buf b;
  milter_buf_init(&b);
  enc_open(&b);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&b, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_body(&b, "part", 4), 0);
  cli_send(fd, &b);
  for (int i = 0; i < 6; i++)
    assert_int_equal(cli_reply(fd, 3000), i ? 'c' : 'O');
  cli_send_raw(fd, "\0\0\x10\0Bxxxx", 9);
  close(fd);
  assert_true(log_has("mid-packet", NULL));
  normal_transaction(cli_tcp(t.port));
  milter_buf_free(&b);
  srv_stop(&t);
}

static void test_slowloris(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  o.packet_timeout_ms = 400;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  int slow = cli_tcp(t.port);
  milter_buf b;
  milter_buf_init(&b);
  assert_int_equal(milter_enc_optneg(&b, 6, MILTER_ACT_ALL, 0x1FFFFF), 0);
  /* One byte every 50 ms; others are served meanwhile. */
  int closed = 0;
  for (size_t i = 0; i < b.len && !closed; i++) {
    cli_send_raw(slow, b.data + i, 1);
    if (i % 4 == 0)
      normal_transaction(cli_tcp(t.port));
    usleep(50000);
    struct pollfd pfd = {.fd = slow, .events = POLLIN};
    if (poll(&pfd, 1, 0) == 1)
      closed = cli_eof(slow, 100);
  }
  if (!closed)
    closed = cli_eof(slow, 2000);
  assert_true(closed);
  assert_true(log_has("packet not complete", "127.0.0.1"));
  close(slow);
  milter_buf_free(&b);
  srv_stop(&t);
}

static void test_max_connections_and_idle(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  o.max_connections = 2;
  o.idle_timeout_ms = 500;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  int a = cli_tcp(t.port), b2 = cli_tcp(t.port);
  milter_buf b;
  milter_buf_init(&b);
  assert_int_equal(milter_enc_optneg(&b, 6, MILTER_ACT_ALL, 0x1FFFFF), 0);
  cli_send(a, &b);
  assert_int_equal(cli_reply(a, 3000), 'O');
  assert_int_equal(milter_enc_optneg(&b, 6, MILTER_ACT_ALL, 0x1FFFFF), 0);
  cli_send(b2, &b);
  assert_int_equal(cli_reply(b2, 3000), 'O');
  int c = cli_tcp(t.port);
  assert_true(cli_eof(c, 3000));
  assert_true(log_has("max_connections (2)", "127.0.0.1"));
  close(c);
  /* Idle connections are closed after idle_timeout. */
  assert_true(cli_eof(a, 3000));
  assert_true(cli_eof(b2, 3000));
  assert_true(log_has("idle for 500 ms", NULL));
  close(a);
  close(b2);
  normal_transaction(cli_tcp(t.port));
  milter_buf_free(&b);
  srv_stop(&t);
}

/* Timeouts are per connection (the server keeps them on one timer): a
 * connection that keeps sending outlives several idle timeouts while the
 * idle ones around it, opened before and after it, are closed. */
static void test_idle_timeout_per_connection(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  o.idle_timeout_ms = 600;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  milter_buf b;
  milter_buf_init(&b);
  int fd[3];
  for (int i = 0; i < 3; i++) {
    fd[i] = cli_tcp(t.port);
    assert_int_equal(milter_enc_optneg(&b, 6, MILTER_ACT_ALL, 0x1FFFFF), 0);
    cli_send(fd[i], &b);
    assert_int_equal(cli_reply(fd[i], 3000), 'O');
  }
  /* fd[1] sends a macro packet (no reply) every 100 ms for 2 s. */
  const char *mac[] = {"j", "mx"};
  int idle_closed = 0;
  for (int k = 0; k < 20; k++) {
    assert_int_equal(milter_enc_macro(&b, 'C', 1, mac), 0);
    cli_send(fd[1], &b);
    usleep(100000);
  }
  for (int i = 0; i < 3; i += 2)
    idle_closed += cli_eof(fd[i], 3000);
  assert_int_equal(idle_closed, 2);
  struct pollfd pfd = {.fd = fd[1], .events = POLLIN};
  assert_int_equal(poll(&pfd, 1, 0), 0); /* neither closed nor answered */
  /* ... and still served: it answers its CONNECT. */
  assert_int_equal(milter_enc_connect(&b, "client", '4', 1, "192.0.2.9"), 0);
  cli_send(fd[1], &b);
  assert_int_equal(cli_reply(fd[1], 3000), 'c');
  for (int i = 0; i < 3; i++)
    close(fd[i]);
  milter_buf_free(&b);
  srv_stop(&t);
}

static void test_unix_stale_mode(void **state) {
  (void)state;
  char path[64], spec[80];
  snprintf(path, sizeof path, "/tmp/mf-stale-%d.sock", (int)getpid());
  snprintf(spec, sizeof spec, "local:%s", path);
  /* A stale socket: bound, never listening, closed. */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un su;
  memset(&su, 0, sizeof su);
  su.sun_family = AF_UNIX;
  snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
  unlink(path);
  assert_int_equal(bind(fd, (struct sockaddr *)&su, sizeof su), 0);
  close(fd);
  milter_server_opts o = base_opts();
  o.unix_mode = 0600;
  tsrv t;
  srv_start(&t, &o, spec);
  assert_true(log_has("removed stale socket", path));
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  /* A live socket is not taken over. */
  milter_server *other;
  assert_int_equal(milter_server_new(&other, NULL, &desc, &o), 0);
  assert_int_equal(milter_server_listen(other, spec), MILTER_E_ADDR);
  assert_true(log_has("in use", path));
  /* A regular file is never removed. */
  char fpath[80];
  snprintf(fpath, sizeof fpath, "%s.file", path);
  FILE *f = fopen(fpath, "w");
  fclose(f);
  char fspec[100];
  snprintf(fspec, sizeof fspec, "unix:%s", fpath);
  assert_int_equal(milter_server_listen(other, fspec), MILTER_E_ADDR);
  assert_int_equal(stat(fpath, &st), 0);
  unlink(fpath);
  assert_int_equal(milter_server_listen(other, "inet:bogus"), MILTER_E_ADDR);
  milter_server_free(other);
  normal_transaction(cli_unix(path));
  srv_stop(&t);
}

static void test_every_spec_form(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  /* Find a free port, then use it in each textual form. */
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  int port = t.port;
  srv_stop(&t);
  char spec[64];
  const char *forms[] = {"inet:%d@127.0.0.1", "inet:127.0.0.1:%d", "inet:%d",
                         "inet:%d@localhost"};
  for (size_t i = 0; i < 4; i++) {
    snprintf(spec, sizeof spec, forms[i], port);
    srv_start(&t, &o, spec);
    normal_transaction(cli_tcp(port));
    srv_stop(&t);
  }
  /* IPv6 loopback forms (skipped when the host has no IPv6). */
  int probe = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 s6;
  memset(&s6, 0, sizeof s6);
  s6.sin6_family = AF_INET6;
  s6.sin6_addr = in6addr_loopback;
  int have6 = probe >= 0 && bind(probe, (struct sockaddr *)&s6, sizeof s6) == 0;
  if (probe >= 0)
    close(probe);
  if (!have6)
    return;
  const char *forms6[] = {"inet6:%d@::1", "inet6:[::1]:%d", "inet6:::1:%d",
                          "inet6:%d"};
  for (size_t i = 0; i < 4; i++) {
    snprintf(spec, sizeof spec, forms6[i], port);
    srv_start(&t, &o, spec);
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    s6.sin6_port = htons((uint16_t)port);
    assert_int_equal(connect(fd, (struct sockaddr *)&s6, sizeof s6), 0);
    normal_transaction(fd);
    srv_stop(&t);
  }
}

static void test_pending_reply_from_worker(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  eom_pending = 1;
  int fd = cli_tcp(t.port);
  milter_buf b;
  milter_buf_init(&b);
  enc_open(&b);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&b, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&b, 'E'), 0);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<n@x>", 0, NULL), 0);
  cli_send(fd, &b);
  for (int i = 0; i < 5; i++)
    assert_int_equal(cli_reply(fd, 3000), i ? 'c' : 'O');
  /* While the reply is pending, another connection is served. */
  assert_int_equal(cli_reply(fd, 50), -1);
  eom_pending = 0;
  normal_transaction(cli_tcp(t.port));
  assert_int_equal(cli_reply(fd, 3000), 'h');
  assert_int_equal(cli_reply(fd, 3000), 'a');
  assert_int_equal(cli_reply(fd, 3000), 'c'); /* the MAIL held back */
  close(fd);
  milter_buf_free(&b);
  srv_stop(&t);
}

static void test_stop_drains(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  o.drain_timeout_ms = 5000;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  int idle = cli_tcp(t.port), busy = cli_tcp(t.port);
  milter_buf b;
  milter_buf_init(&b);
  enc_open(&b);
  cli_send(idle, &b);
  enc_open(&b);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&b, 'R', "<b@x>", 0, NULL), 0);
  cli_send(busy, &b);
  for (int i = 0; i < 3; i++)
    assert_int_equal(cli_reply(idle, 3000), i ? 'c' : 'O');
  for (int i = 0; i < 5; i++)
    assert_int_equal(cli_reply(busy, 3000), i ? 'c' : 'O');
  milter_server_stop(t.srv);
  assert_true(cli_eof(idle, 3000)); /* no message: closed at once */
  /* The message in progress still completes, then the connection closes. */
  assert_int_equal(milter_enc_simple(&b, 'E'), 0);
  cli_send(busy, &b);
  assert_int_equal(cli_reply(busy, 3000), 'a');
  assert_true(cli_eof(busy, 3000));
  pthread_join(t.thread, NULL);
  milter_server_free(t.srv);
  close(idle);
  close(busy);
  milter_buf_free(&b);
}

static void test_drain_timeout(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  o.drain_timeout_ms = 300;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  int busy = cli_tcp(t.port);
  milter_buf b;
  milter_buf_init(&b);
  enc_open(&b);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<a@x>", 0, NULL), 0);
  cli_send(busy, &b);
  for (int i = 0; i < 4; i++)
    assert_int_equal(cli_reply(busy, 3000), i ? 'c' : 'O');
  int closes = n_close;
  milter_server_stop(t.srv);
  assert_true(cli_eof(busy, 3000));
  pthread_join(t.thread, NULL);
  assert_true(log_has("drain timeout", "127.0.0.1"));
  assert_int_equal(n_close, closes + 1);
  milter_server_free(t.srv);
  close(busy);
  milter_buf_free(&b);
}

static void test_sigterm(void **state) {
  (void)state;
  milter_server_opts o = base_opts();
  o.handle_signals = 1;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  normal_transaction(cli_tcp(t.port));
  usleep(50000);
  kill(getpid(), SIGTERM);
  pthread_join(t.thread, NULL); /* run returned */
  assert_true(log_has("signal 15", NULL));
  milter_server_free(t.srv);
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &v) == 1)
      break;
  if (f)
    fclose(f);
  return v;
}

#if defined(__SANITIZE_ADDRESS__)
#define MF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_ASAN 1
#endif
#endif

static void test_idle_memory(void **state) {
  (void)state;
  enum { N = 5000 };
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * N + 100) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < 2 * N + 100)
    skip();
  milter_server_opts o = base_opts();
  o.log_level = MILTER_LOG_WARNING;
  tsrv t;
  srv_start(&t, &o, "inet:0@127.0.0.1");
  static int fds[N];
  milter_buf b;
  milter_buf_init(&b);
  assert_int_equal(milter_enc_optneg(&b, 6, MILTER_ACT_ALL, 0x1FFFFF), 0);
  /* Warm up allocator and loop with a first batch. */
  for (int i = 0; i < 100; i++) {
    fds[i] = cli_tcp(t.port);
    cli_send_raw(fds[i], b.data, b.len);
    assert_int_equal(cli_reply(fds[i], 5000), 'O');
  }
  long before = rss_kib();
  for (int i = 100; i < N; i++) {
    fds[i] = cli_tcp(t.port);
    cli_send_raw(fds[i], b.data, b.len);
    assert_int_equal(cli_reply(fds[i], 5000), 'O');
  }
  while (milter_server_connections(t.srv) < N)
    usleep(1000);
  long after = rss_kib();
  double per = (double)(after - before) * 1024.0 / (N - 100);
  printf("idle negotiated connection: %.0f bytes (VmRSS %ld -> %ld KiB)\n", per,
         before, after);
#ifndef MF_ASAN
  if (getenv("MF_UNDER_VALGRIND") == NULL)
    assert_true(per < 2048.0);
#endif
  for (int i = 0; i < N; i++)
    close(fds[i]);
  while (milter_server_connections(t.srv) > 0)
    usleep(1000);
  milter_buf_free(&b);
  srv_stop(&t);
}

static void test_fds_unchanged(void **state) {
  (void)state;
  assert_int_equal(tu_count_fds(), base_fds);
}

static void nop_signal(uv_signal_t *s, int n) {
  (void)s;
  (void)n;
}

int main(void) {
  /* libuv keeps a process-wide signal lock pipe once signals were used. */
  uv_loop_t warm;
  uv_signal_t sig;
  uv_loop_init(&warm);
  uv_signal_init(&warm, &sig);
  uv_signal_start(&sig, nop_signal, SIGUSR2);
  uv_close((uv_handle_t *)&sig, NULL);
  uv_run(&warm, UV_RUN_DEFAULT);
  uv_loop_close(&warm);
  base_fds = tu_count_fds();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_spec),
      cmocka_unit_test(test_basic_inet_and_unix),
      cmocka_unit_test(test_malformed_inputs),
      cmocka_unit_test(test_slowloris),
      cmocka_unit_test(test_max_connections_and_idle),
      cmocka_unit_test(test_idle_timeout_per_connection),
      cmocka_unit_test(test_unix_stale_mode),
      cmocka_unit_test(test_every_spec_form),
      cmocka_unit_test(test_pending_reply_from_worker),
      cmocka_unit_test(test_stop_drains),
      cmocka_unit_test(test_drain_timeout),
      cmocka_unit_test(test_sigterm),
      cmocka_unit_test(test_idle_memory),
      cmocka_unit_test(test_fds_unchanged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
