/* test_reuseport.c -- several servers on one inet port with
 * MAILFILTER_REUSEPORT=1 (SO_REUSEPORT); without it the second listen fails.
 *
 * The servers run on loops this thread runs (UV_RUN_NOWAIT in turn), so the
 * connection counts are read on their loop thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include <mailfilter/milter.h>

#include "testutil.h"

static char logbuf[1 << 14];

static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  size_t n = strlen(logbuf);
  if (n + strlen(msg) + 2 < sizeof logbuf)
    snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

static const milter_filter_desc desc = {.name = "reuseport"};

typedef struct srv {
  uv_loop_t loop;
  milter_server *s;
} srv;

static void srv_new_opt(srv *v, int reuseport) {
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.reuseport = reuseport;
  o.log = t_log;
  o.log_level = MILTER_LOG_DEBUG;
  o.handle_signals = 0;
  assert_int_equal(uv_loop_init(&v->loop), 0);
  assert_int_equal(milter_server_new(&v->s, &v->loop, &desc, &o), 0);
}

static void srv_new(srv *v) {
  srv_new_opt(v, 0);
}

static void srv_free(srv *v) {
  milter_server_stop(v->s);
  for (int i = 0; i < 1000 && uv_run(&v->loop, UV_RUN_NOWAIT) != 0; i++)
    usleep(1000);
  milter_server_free(v->s);
  assert_int_equal(uv_loop_close(&v->loop), 0);
}

/* A server without the option cannot listen on spec. */
static void cannot_join(const char *spec) {
  srv c;
  srv_new(&c);
  logbuf[0] = '\0';
  assert_int_equal(milter_server_listen(c.s, spec), MILTER_E_IO);
  assert_non_null(strstr(logbuf, "bind: Address already in use"));
  srv_free(&c);
}

static void spec_of(char *out, size_t n, int port) {
  snprintf(out, n, "inet:%d@127.0.0.1", port);
}

static int cli_connect(int port) {
  int fd = tu_connect_loopback(port);
  assert_true(fd >= 0);
  return fd;
}

/* Run the loops until the servers hold `want` connections in all (at most
 * about 10 s). */
static void serve_until(srv *v, int nv, unsigned want) {
  for (int i = 0; i < 10000; i++) {
    unsigned have = 0;
    for (int k = 0; k < nv; k++) {
      uv_run(&v[k].loop, UV_RUN_NOWAIT);
      have += milter_server_connections(v[k].s);
    }
    if (have == want)
      return;
    usleep(1000);
  }
  fail_msg("the servers never held %u connections", want);
}

/* An OPTNEG on fd (version 6, no actions, no protocol flags) gets the
 * server's OPTNEG reply ('O') while v's loop runs. */
static void negotiates(srv *v, int fd) {
  static const unsigned char optneg[] = {0, 0, 0, 13, 'O', 0, 0, 0, 6,
                                         0, 0, 0, 0,  0,   0, 0, 0};
  assert_int_equal(send(fd, optneg, sizeof optneg, MSG_NOSIGNAL),
                   (ssize_t)sizeof optneg);
  unsigned char hdr[5];
  for (int i = 0; i < 10000; i++) {
    uv_run(&v->loop, UV_RUN_NOWAIT);
    ssize_t r = recv(fd, hdr, sizeof hdr, MSG_DONTWAIT | MSG_PEEK);
    if (r == (ssize_t)sizeof hdr) {
      assert_int_equal(hdr[4], 'O');
      return;
    }
    assert_true(r > 0 || (r < 0 && errno == EAGAIN));
    usleep(1000);
  }
  fail_msg("no OPTNEG reply");
}

static void test_second_listen_fails_without_option(void **state) {
  (void)state;
  const char *values[] = {NULL, "0", "yes", ""};
  for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
    if (values[k] == NULL)
      unsetenv("MAILFILTER_REUSEPORT");
    else
      setenv("MAILFILTER_REUSEPORT", values[k], 1);
    srv a, b;
    srv_new(&a);
    srv_new(&b);
    assert_int_equal(milter_server_listen(a.s, "inet:0@127.0.0.1"), 0);
    char spec[64];
    spec_of(spec, sizeof spec, milter_server_port(a.s));
    logbuf[0] = '\0';
    assert_int_equal(milter_server_listen(b.s, spec), MILTER_E_IO);
    assert_non_null(strstr(logbuf, "bind: Address already in use"));
    srv_free(&b);
    srv_free(&a);
  }
  unsetenv("MAILFILTER_REUSEPORT");
}

static void test_two_servers_share_a_port(void **state) {
  (void)state;
  setenv("MAILFILTER_REUSEPORT", "1", 1);
  srv v[2];
  srv_new(&v[0]);
  srv_new(&v[1]);
  assert_int_equal(milter_server_listen(v[0].s, "inet:0@127.0.0.1"), 0);
  int port = milter_server_port(v[0].s);
  char spec[64];
  spec_of(spec, sizeof spec, port);
  assert_int_equal(milter_server_listen(v[1].s, spec), 0);
  assert_int_equal(milter_server_port(v[1].s), port);

  /* A process without the option cannot join them. */
  unsetenv("MAILFILTER_REUSEPORT");
  cannot_join(spec);

  /* The kernel spreads connections over both (by a hash of the client's
   * port: all 64 on one server would have odds of 2^-63). */
  enum { N = 64 };
  int fds[N];
  for (int i = 0; i < N; i++)
    fds[i] = cli_connect(port);
  serve_until(v, 2, N);
  unsigned n0 = milter_server_connections(v[0].s);
  unsigned n1 = milter_server_connections(v[1].s);
  print_message("connections: %u and %u\n", n0, n1);
  assert_true(n0 > 0 && n1 > 0);
  for (int i = 0; i < N; i++)
    close(fds[i]);
  serve_until(v, 2, 0);

  /* One stops: the other takes every new connection and serves it. */
  srv_free(&v[0]);
  for (int i = 0; i < 8; i++) {
    int fd = cli_connect(port);
    negotiates(&v[1], fd);
    assert_int_equal(milter_server_connections(v[1].s), 1);
    close(fd);
    serve_until(&v[1], 1, 0);
  }
  srv_free(&v[1]);
  unsetenv("MAILFILTER_REUSEPORT");
}

/* The option does what the variable does, with no variable set. */
static void test_option_shares_a_port(void **state) {
  (void)state;
  unsetenv("MAILFILTER_REUSEPORT");
  srv v[2];
  srv_new_opt(&v[0], 1);
  srv_new_opt(&v[1], 1);
  assert_int_equal(milter_server_listen(v[0].s, "inet:0@127.0.0.1"), 0);
  int port = milter_server_port(v[0].s);
  char spec[64];
  spec_of(spec, sizeof spec, port);
  assert_int_equal(milter_server_listen(v[1].s, spec), 0);
  cannot_join(spec);
  int fd = cli_connect(port);
  serve_until(v, 2, 1);
  negotiates(milter_server_connections(v[0].s) == 1 ? &v[0] : &v[1], fd);
  close(fd);
  srv_free(&v[0]);
  srv_free(&v[1]);
}

/* Unix sockets are not shared: the second listen on a live path fails
 * whatever the variable says. */
static void test_unix_not_shared(void **state) {
  (void)state;
  setenv("MAILFILTER_REUSEPORT", "1", 1);
  char spec[80];
  snprintf(spec, sizeof spec, "unix:/tmp/mf-reuseport-%d.sock", (int)getpid());
  srv a, b;
  srv_new(&a);
  srv_new(&b);
  assert_int_equal(milter_server_listen(a.s, spec), 0);
  assert_int_equal(milter_server_listen(b.s, spec), MILTER_E_ADDR);
  srv_free(&b);
  srv_free(&a);
  unsetenv("MAILFILTER_REUSEPORT");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_second_listen_fails_without_option),
      cmocka_unit_test(test_two_servers_share_a_port),
      cmocka_unit_test(test_option_shares_a_port),
      cmocka_unit_test(test_unix_not_shared),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
