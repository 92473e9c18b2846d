/* test_sigpipe.c -- a peer that has gone never raises SIGPIPE (issue 12,
 * item 1; milter.h, SIGNALS).
 *
 * This program runs with the default SIGPIPE disposition: a SIGPIPE raised
 * by any write of the library kills it, and the test fails.  Each case
 * closes the peer's socket before a kind of reply is written, then checks
 * that the one log line was written, and that the server (or client) is
 * still there and serves another connection.  The MTA side is a unix
 * socket: a write to a unix socket whose peer has closed fails with EPIPE
 * (and raises SIGPIPE) at once, where TCP would take one write more.
 *
 * To make libuv's own deferred write (the rest of a reply the socket could
 * not take, written in the poll phase) be the one that fails, the peer
 * first shuts down its reading side and drains what it has: the writer's
 * socket becomes writable again, libuv writes, and that write fails with
 * EPIPE -- while the writer's read sees no EOF (a plain close would be seen
 * by the read first, and the queued write cancelled).  On a loop the test
 * runs, a prepare handle tells when the writer is back in the loop with its
 * bytes parked in libuv ("parked"): the peer stops reading only then, so
 * that the failing write is libuv's, in the poll phase, and not the first
 * attempt inside uv_write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter.h>
#include <mailfilter/milter_aclient.h>
#include <mailfilter/milter_client.h>

#include "testutil.h"

#define LEFT "MTA left before the reply"
#define BIG (8u << 20) /* a reply far larger than the socket buffers */

/* ---- log capture --------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[1 << 16];
static size_t loglen;

static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  pthread_mutex_lock(&log_mu);
  int n = snprintf(logbuf + loglen, sizeof logbuf - loglen, "%s\n", msg);
  if (n > 0 && (size_t)n < sizeof logbuf - loglen)
    loglen += (size_t)n;
  pthread_mutex_unlock(&log_mu);
}

static int log_count(const char *s) {
  pthread_mutex_lock(&log_mu);
  int n = 0;
  for (const char *p = logbuf; (p = strstr(p, s)) != NULL; p += strlen(s))
    n++;
  pthread_mutex_unlock(&log_mu);
  return n;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Wait (10 s at most) until s was logged n times; fail otherwise. */
static void wait_log(const char *s, int n) {
  for (int i = 0; i < 1000 && log_count(s) < n; i++)
    sleep_ms(10);
  if (log_count(s) < n) {
    print_message("log:\n%s", logbuf);
    fail_msg("'%s' logged %d times, want %d", s, log_count(s), n);
  }
}

/* ---- flags shared with the server's callbacks ---------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int entered;  /* a callback (or decide) reached the point of no return */
static int mta_gone; /* the test closed the MTA's socket */

static void set_flag(int *f) {
  pthread_mutex_lock(&mu);
  *f = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void wait_flag(int *f) {
  pthread_mutex_lock(&mu);
  while (!*f)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

/* In a callback: say so, then wait until the MTA has gone. */
static void hold(void) {
  set_flag(&entered);
  wait_flag(&mta_gone);
}

/* The test: wait for the callback, close the MTA's socket, release it. */
static void close_when_entered(int fd) {
  wait_flag(&entered);
  close(fd);
  set_flag(&mta_gone);
}

/* The server reads on while a reply is pending, and would see an EOF
 * before it writes: the MTA stops reading instead (the server's write fails
 * with EPIPE, its read sees nothing); it closes after. */
static void stop_reading_when_entered(int fd) {
  wait_flag(&entered);
  assert_int_equal(shutdown(fd, SHUT_RD), 0);
  set_flag(&mta_gone);
}

/* "parked": armed by the writer, set by a prepare handle of its loop (the
 * writer is back in the loop, about to poll). */
static atomic_int park_armed;
static int parked;

static void on_park_prepare(uv_prepare_t *h) {
  (void)h;
  if (atomic_load(&park_armed) && !parked)
    set_flag(&parked);
}

static void park_reset(void) {
  atomic_store(&park_armed, 0);
  parked = 0;
}

static void park_add(uv_loop_t *loop, uv_prepare_t *h) {
  park_reset();
  uv_prepare_init(loop, h);
  uv_prepare_start(h, on_park_prepare);
  uv_unref((uv_handle_t *)h);
}

/* ---- the filter ------------------------------------------------------------
 */

enum {
  AT_NONE,
  AT_CONNECT,
  AT_HELO,
  AT_HELO_PENDING,
  AT_EOM_BIG,
  AT_EOM_PROGRESS
};
static int mode;
static uint8_t *big; /* BIG bytes */

static void reply_continue(milter_ctx *ctx, void *arg) {
  (void)arg;
  milter_ctx_reply(ctx, MILTER_CONTINUE);
}

static void send_progress(milter_ctx *ctx, void *arg) {
  (void)arg;
  milter_ctx_progress(ctx);
}

/* Another thread completes the pending reply once the MTA has gone. */
static void *late_worker(void *arg) {
  milter_ctx *ctx = arg;
  wait_flag(&mta_gone);
  if (mode == AT_EOM_PROGRESS)
    milter_ctx_post(ctx, send_progress, NULL);
  milter_ctx_post(ctx, reply_continue, NULL);
  return NULL;
}

static milter_status pend_on_thread(milter_ctx *ctx) {
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, late_worker, ctx), 0);
  pthread_detach(th);
  set_flag(&entered);
  return MILTER_PENDING;
}

static milter_status f_connect(milter_ctx *c, const milter_connect_info *ci) {
  (void)c;
  (void)ci;
  if (mode == AT_CONNECT)
    hold();
  return MILTER_CONTINUE;
}

static milter_status f_helo(milter_ctx *c, const char *h) {
  (void)h;
  if (mode == AT_HELO)
    hold();
  if (mode == AT_HELO_PENDING)
    return pend_on_thread(c);
  return MILTER_CONTINUE;
}

static milter_status f_eom(milter_ctx *c) {
  if (mode == AT_EOM_BIG) {
    assert_int_equal(milter_ctx_replacebody(c, big, BIG), 0);
    atomic_store(&park_armed, 1); /* written when this returns */
    return MILTER_ACCEPT;
  }
  if (mode == AT_EOM_PROGRESS)
    return pend_on_thread(c);
  return MILTER_ACCEPT;
}

static milter_filter_desc desc = {
    .name = "sigpipe",
    .cb = {.connect = f_connect, .helo = f_helo, .eom = f_eom},
    .actions_wanted = MILTER_ACT_ALL,
};

/* ---- the server, on its own loop or on the test's ------------------------ */

typedef struct tsrv {
  milter_server *srv;
  uv_loop_t loop; /* user_loop */
  uv_prepare_t park;
  int user_loop;
  pthread_t thread;
  char dir[64], path[96];
} tsrv;

static void *own_thread(void *arg) {
  milter_server_run(arg);
  return NULL;
}

/* The application runs the loop: SIGPIPE is kept off only by the server's
 * prepare/check pair and its guarded writes. */
static void *user_thread(void *arg) {
  tsrv *t = arg;
  uv_run(&t->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void srv_start(tsrv *t, int user_loop) {
  memset(t, 0, sizeof *t);
  pthread_mutex_lock(&log_mu);
  loglen = 0;
  logbuf[0] = '\0';
  pthread_mutex_unlock(&log_mu);
  entered = mta_gone = 0;
  mode = AT_NONE;
  snprintf(t->dir, sizeof t->dir, "/tmp/mf-sigpipe-XXXXXX");
  assert_non_null(mkdtemp(t->dir));
  snprintf(t->path, sizeof t->path, "%s/s", t->dir);
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.log = t_log;
  o.log_level = MILTER_LOG_DEBUG;
  o.handle_signals = 0;
  o.drain_timeout_ms = 1000;
  t->user_loop = user_loop;
  park_reset();
  if (user_loop) {
    assert_int_equal(uv_loop_init(&t->loop), 0);
    park_add(&t->loop, &t->park);
  }
  assert_int_equal(
      milter_server_new(&t->srv, user_loop ? &t->loop : NULL, &desc, &o), 0);
  char spec[128];
  snprintf(spec, sizeof spec, "unix:%s", t->path);
  assert_int_equal(milter_server_listen(t->srv, spec), 0);
  assert_int_equal(pthread_create(&t->thread, NULL,
                                  user_loop ? user_thread : own_thread,
                                  user_loop ? (void *)t : (void *)t->srv),
                   0);
}

static void srv_stop(tsrv *t) {
  milter_server_stop(t->srv);
  pthread_join(t->thread, NULL);
  milter_server_free(t->srv);
  if (t->user_loop) {
    uv_close((uv_handle_t *)&t->park, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
  }
  rmdir(t->dir);
}

/* ---- the MTA side, raw -----------------------------------------------------
 */

static int unix_connect(const char *path) {
  int fd = tu_connect_unix(path);
  assert_true(fd >= 0);
  return fd;
}

static void send_buf(int fd, milter_buf *b) {
  size_t off = 0;
  while (off < b->len) {
    ssize_t w = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
    assert_true(w > 0);
    off += (size_t)w;
  }
  b->len = 0;
}

static int read_full(int fd, uint8_t *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) <= 0)
      return -1;
    ssize_t r = recv(fd, p + got, n - got, 0);
    if (r <= 0)
      return -2;
    got += (size_t)r;
  }
  return 0;
}

/* One packet: its command byte (the payload is skipped). */
static int read_packet(int fd) {
  uint8_t hdr[5], skip[4096];
  assert_int_equal(read_full(fd, hdr, 5), 0);
  size_t left = (((size_t)hdr[0] << 24) | ((size_t)hdr[1] << 16) |
                 ((size_t)hdr[2] << 8) | hdr[3]) -
                1;
  while (left > 0) {
    size_t n = left < sizeof skip ? left : sizeof skip;
    assert_int_equal(read_full(fd, skip, n), 0);
    left -= n;
  }
  return hdr[4];
}

/* Offers no NO and NR bits: every command gets its reply. */
static int mta_open(const tsrv *t, milter_buf *b) {
  int fd = unix_connect(t->path);
  assert_int_equal(milter_enc_optneg(b, 6, MILTER_ACT_ALL, 0), 0);
  send_buf(fd, b);
  assert_int_equal(read_packet(fd), MILTER_REPLY_OPTNEG);
  return fd;
}

static void enc_until_body(milter_buf *b) {
  assert_int_equal(milter_enc_connect(b, "client", '4', 25, "192.0.2.1"), 0);
  assert_int_equal(milter_enc_helo(b, "helo"), 0);
  assert_int_equal(milter_enc_envaddr(b, MILTER_CMD_MAIL, "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(b, MILTER_CMD_RCPT, "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_body(b, "hello\r\n", 7), 0);
}

/* A whole transaction on a new connection: the server still serves. */
static void still_serving(const tsrv *t) {
  int saved = mode;
  mode = AT_NONE;
  milter_buf b;
  milter_buf_init(&b);
  int fd = mta_open(t, &b);
  enc_until_body(&b);
  assert_int_equal(milter_enc_simple(&b, MILTER_CMD_EOB), 0);
  send_buf(fd, &b);
  for (int i = 0; i < 5; i++)
    assert_int_equal(read_packet(fd), MILTER_REPLY_CONTINUE);
  assert_int_equal(read_packet(fd), MILTER_REPLY_ACCEPT);
  assert_int_equal(milter_enc_simple(&b, MILTER_CMD_QUIT), 0);
  send_buf(fd, &b);
  close(fd);
  milter_buf_free(&b);
  mode = saved;
}

/* Stop reading, then take what is already there: the writer's socket turns
 * writable, and its next write fails with EPIPE (see the top comment). */
static void shut_read_and_drain(int fd) {
  assert_int_equal(shutdown(fd, SHUT_RD), 0);
  uint8_t buf[65536];
  while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
    ;
}

/* ---- server cases
 * ------------------------------------------------------------ */

/* The MTA hangs up while the server owes the reply to a command (at: the
 * stage, and how the filter answers it); the server learns it from its
 * write. */
static void close_before_reply(int user_loop, int at) {
  tsrv t;
  srv_start(&t, user_loop);
  milter_buf b;
  milter_buf_init(&b);
  int fd = mta_open(&t, &b);
  mode = at; /* only the callback of that stage looks */
  if (at == AT_CONNECT) {
    assert_int_equal(milter_enc_connect(&b, "client", '4', 25, "192.0.2.1"), 0);
  } else if (at == AT_HELO || at == AT_HELO_PENDING) {
    assert_int_equal(milter_enc_connect(&b, "client", '4', 25, "192.0.2.1"), 0);
    send_buf(fd, &b);
    assert_int_equal(read_packet(fd), MILTER_REPLY_CONTINUE);
    assert_int_equal(milter_enc_helo(&b, "helo"), 0);
  } else { /* AT_EOM_PROGRESS */
    enc_until_body(&b);
    assert_int_equal(milter_enc_simple(&b, MILTER_CMD_EOB), 0);
    send_buf(fd, &b);
    for (int i = 0; i < 5; i++)
      assert_int_equal(read_packet(fd), MILTER_REPLY_CONTINUE);
  }
  send_buf(fd, &b); /* the command whose reply is owed */
  int pending = at == AT_HELO_PENDING || at == AT_EOM_PROGRESS;
  if (pending)
    stop_reading_when_entered(fd);
  else
    close_when_entered(fd); /* the server is in the callback */
  wait_log(LEFT, 1);
  if (pending)
    close(fd);
  still_serving(&t);
  assert_int_equal(log_count(LEFT), 1); /* one line for the connection */
  milter_buf_free(&b);
  srv_stop(&t);
}

/* The reply to CONNECT is due; the MTA hung up meanwhile. */
static void case_connect(int user_loop) {
  close_before_reply(user_loop, AT_CONNECT);
}

/* A stage with a callback (HELO): its reply is due. */
static void case_helo(int user_loop) {
  close_before_reply(user_loop, AT_HELO);
}

/* End of message with a replacement body of 8 MiB: the server writes what
 * the socket takes, libuv queues the rest; the MTA stops reading after the
 * first bytes, so that libuv's deferred write meets EPIPE. */
static void case_eom_big(int user_loop) {
  tsrv t;
  srv_start(&t, user_loop);
  milter_buf b;
  milter_buf_init(&b);
  int fd = mta_open(&t, &b);
  mode = AT_EOM_BIG;
  enc_until_body(&b);
  assert_int_equal(milter_enc_simple(&b, MILTER_CMD_EOB), 0);
  send_buf(fd, &b);
  for (int i = 0; i < 5; i++)
    assert_int_equal(read_packet(fd), MILTER_REPLY_CONTINUE);
  if (user_loop) {
    wait_flag(&parked);
  } else { /* the whole run has SIGPIPE blocked: any write will do */
    uint8_t first[5];
    assert_int_equal(read_full(fd, first, 5), 0);
  }
  shut_read_and_drain(fd);
  wait_log(LEFT, 1);
  close(fd);
  still_serving(&t);
  milter_buf_free(&b);
  srv_stop(&t);
}

/* HELO answered PENDING; another thread completes it (milter_ctx_post)
 * after the MTA stopped reading. */
static void case_pending(int user_loop) {
  close_before_reply(user_loop, AT_HELO_PENDING);
}

/* End of message PENDING; SMFIR_PROGRESS goes to an MTA that stopped
 * reading, then the reply comes (and is dropped). */
static void case_progress(int user_loop) {
  close_before_reply(user_loop, AT_EOM_PROGRESS);
}

static void test_server_connect(void **s) {
  (void)s;
  case_connect(0);
}
static void test_server_helo(void **s) {
  (void)s;
  case_helo(0);
}
static void test_server_eom_big(void **s) {
  (void)s;
  case_eom_big(0);
}
static void test_server_pending(void **s) {
  (void)s;
  case_pending(0);
}
static void test_server_progress(void **s) {
  (void)s;
  case_progress(0);
}
static void test_user_loop_connect(void **s) {
  (void)s;
  case_connect(1);
}
static void test_user_loop_helo(void **s) {
  (void)s;
  case_helo(1);
}
static void test_user_loop_eom_big(void **s) {
  (void)s;
  case_eom_big(1);
}
static void test_user_loop_pending(void **s) {
  (void)s;
  case_pending(1);
}
static void test_user_loop_progress(void **s) {
  (void)s;
  case_progress(1);
}

/* ---- a milter that leaves (for the MTA-side clients) -----------------------
 */

/* LEAVE_STOP_READING: once the client wrote; _PARKED: once it parked. */
enum { LEAVE_AFTER_OPTNEG, LEAVE_STOP_READING, LEAVE_STOP_READING_PARKED };

typedef struct fake {
  int lfd;
  int how;
  uint32_t protocol; /* what the fake milter negotiates */
  char dir[64], path[96], spec[128];
  pthread_t th;
  int leave;       /* LEAVE_AFTER_OPTNEG: the test says when */
  int ready, done; /* ready: it left (or stopped reading) */
} fake;

static void *fake_thread(void *arg) {
  fake *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  assert_true(fd >= 0);
  assert_int_equal(read_packet(fd), MILTER_CMD_OPTNEG);
  milter_buf b;
  milter_buf_init(&b);
  assert_int_equal(milter_enc_optneg(&b, 6, 0, f->protocol), 0);
  send_buf(fd, &b);
  milter_buf_free(&b);
  if (f->how == LEAVE_AFTER_OPTNEG) {
    /* Not at once: the client would read the EOF with the reply. */
    wait_flag(&f->leave);
    close(fd);
    set_flag(&f->ready);
  } else {
    uint8_t one;
    if (f->how == LEAVE_STOP_READING_PARKED)
      wait_flag(&parked);
    else
      assert_int_equal(read_full(fd, &one, 1), 0); /* the client writes */
    shut_read_and_drain(fd);
    set_flag(&f->ready);
    wait_flag(&f->done);
    close(fd);
  }
  return NULL;
}

static void fake_start(fake *f, int how, uint32_t protocol) {
  memset(f, 0, sizeof *f);
  f->how = how;
  f->protocol = protocol;
  snprintf(f->dir, sizeof f->dir, "/tmp/mf-sigpipe-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/m", f->dir);
  snprintf(f->spec, sizeof f->spec, "unix:%s", f->path);
  f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un su;
  memset(&su, 0, sizeof su);
  su.sun_family = AF_UNIX;
  snprintf(su.sun_path, sizeof su.sun_path, "%s", f->path);
  assert_int_equal(bind(f->lfd, (struct sockaddr *)&su, sizeof su), 0);
  assert_int_equal(listen(f->lfd, 4), 0);
  assert_int_equal(pthread_create(&f->th, NULL, fake_thread, f), 0);
}

static void fake_stop(fake *f) {
  set_flag(&f->done);
  pthread_join(f->th, NULL);
  close(f->lfd);
  unlink(f->path);
  rmdir(f->dir);
}

/* Everything but the body switched off; the body needs no reply. */
#define ONLY_NR_BODY                                                           \
  (MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | MILTER_P_NORCPT |  \
   MILTER_P_NOHDRS | MILTER_P_NOEOH | MILTER_P_NOUNKNOWN | MILTER_P_NODATA |   \
   MILTER_P_NR_BODY)

static void assert_sigpipe_unblocked_not_pending(void) {
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, NULL, &cur);
  assert_false(sigismember(&cur, SIGPIPE));
  sigpending(&cur);
  assert_false(sigismember(&cur, SIGPIPE));
}

/* ---- the libuv client --------------------------------------------------- */

typedef struct awaited {
  int done, err;
} awaited;

static void on_result(milter_aclient *ac, int err, milter_client_result *r,
                      void *arg) {
  (void)ac;
  (void)r;
  awaited *a = arg;
  a->done = 1;
  a->err = err;
  uv_stop(milter_aclient_loop(ac));
}

static void run_until(uv_loop_t *loop, awaited *a) {
  while (!a->done)
    uv_run(loop, UV_RUN_DEFAULT);
}

static void on_ac_closed(void *arg) {
  *(int *)arg = 1;
}

static milter_aclient *ac_open(uv_loop_t *loop, const fake *f) {
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol = MILTER_P_ALL_STEPS;
  milter_aclient *ac;
  assert_int_equal(milter_aclient_new(&ac, loop, &o), 0);
  awaited a = {0, 0};
  assert_int_equal(milter_aclient_open(ac, f->spec, on_result, &a), 0);
  run_until(loop, &a);
  assert_int_equal(a.err, 0);
  return ac;
}

static void ac_close(uv_loop_t *loop, milter_aclient *ac) {
  int closed = 0;
  milter_aclient_close(ac, on_ac_closed, &closed);
  while (!closed)
    uv_run(loop, UV_RUN_ONCE);
  assert_int_equal(uv_loop_close(loop), 0);
}

/* The milter left after negotiating: the next command's write fails at
 * once. */
static void test_aclient_write_to_gone_milter(void **state) {
  (void)state;
  fake f;
  fake_start(&f, LEAVE_AFTER_OPTNEG, 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_aclient *ac = ac_open(&loop, &f);
  set_flag(&f.leave); /* the client does not read until it writes */
  wait_flag(&f.ready);
  awaited a = {0, 0};
  int rc = milter_aclient_connect(ac, "client", MILTER_FAMILY_INET, 25,
                                  "192.0.2.1", on_result, &a);
  assert_int_equal(rc, MILTER_E_EOF);
  assert_non_null(strstr(milter_aclient_errmsg(ac), "write"));
  assert_int_equal(a.done, 0);
  ac_close(&loop, ac);
  fake_stop(&f);
  assert_sigpipe_unblocked_not_pending();
}

/* 8 MiB of NR body: libuv queues most of it and writes it in the poll
 * phase, where the milter has stopped reading. */
static void test_aclient_deferred_write(void **state) {
  (void)state;
  fake f;
  fake_start(&f, LEAVE_STOP_READING_PARKED, ONLY_NR_BODY);
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_prepare_t park;
  park_add(&loop, &park);
  milter_aclient *ac = ac_open(&loop, &f);
  assert_int_equal(milter_aclient_body(ac, big, BIG, NULL, NULL), 0);
  awaited a = {0, 0};
  assert_int_equal(milter_aclient_eom(ac, on_result, &a), 1);
  atomic_store(&park_armed, 1);
  run_until(&loop, &a);
  uv_close((uv_handle_t *)&park, NULL);
  assert_int_equal(a.err, MILTER_E_EOF);
  assert_non_null(strstr(milter_aclient_errmsg(ac), "write"));
  ac_close(&loop, ac);
  fake_stop(&f);
  assert_sigpipe_unblocked_not_pending();
}

/* ---- the blocking client ------------------------------------------------ */

static milter_client *bc_open(const fake *f) {
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol = MILTER_P_ALL_STEPS;
  milter_client *c;
  assert_int_equal(milter_client_new(&c, &o), 0);
  OK(milter_client_open(c, f->spec));
  OK(milter_client_negotiate(c, NULL));
  return c;
}

static void test_client_write_to_gone_milter(void **state) {
  (void)state;
  fake f;
  fake_start(&f, LEAVE_AFTER_OPTNEG, 0);
  milter_client *c = bc_open(&f);
  set_flag(&f.leave); /* the client does not read until it writes */
  wait_flag(&f.ready);
  milter_client_result r = {0};
  assert_int_equal(milter_client_helo(c, "helo", &r), MILTER_E_EOF);
  assert_non_null(strstr(milter_client_errmsg(c), "write"));
  milter_client_result_free(&r);
  milter_client_free(c);
  fake_stop(&f);
  assert_sigpipe_unblocked_not_pending();
}

/* The blocking client's body goes mostly to libuv, whose write in the
 * client's loop meets the milter that stopped reading. */
static void client_deferred(void) {
  fake f;
  fake_start(&f, LEAVE_STOP_READING, ONLY_NR_BODY);
  milter_client *c = bc_open(&f);
  milter_client_result r = {0};
  int rc = milter_client_body(c, big, BIG, &r);
  if (rc == 0) /* the queued part is written by the next call's loop */
    rc = milter_client_eom(c, &r);
  assert_int_equal(rc, MILTER_E_EOF);
  assert_non_null(strstr(milter_client_errmsg(c), "write"));
  milter_client_result_free(&r);
  milter_client_free(c);
  fake_stop(&f);
}

static void test_client_deferred_write(void **state) {
  (void)state;
  client_deferred();
  assert_sigpipe_unblocked_not_pending();
}

/* The application blocked SIGPIPE itself: the library leaves the mask and
 * the SIGPIPE its write raised (pending) to it. */
static void test_app_blocked_sigpipe_left_alone(void **state) {
  (void)state;
  sigset_t only, cur;
  sigemptyset(&only);
  sigaddset(&only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &only, NULL);
  client_deferred();
  pthread_sigmask(SIG_BLOCK, NULL, &cur);
  assert_true(sigismember(&cur, SIGPIPE));
  sigpending(&cur);
  assert_true(sigismember(&cur, SIGPIPE));
  struct timespec zero = {0, 0};
  assert_int_equal(sigtimedwait(&only, NULL, &zero), SIGPIPE);
  pthread_sigmask(SIG_UNBLOCK, &only, NULL);
}

/* ---- the mailfilter layer: decide() on a worker ------------------------- */

static int decide_errno;

static mf_decision decide_late(mf_trx *trx, void *ud) {
  (void)trx;
  (void)ud;
  hold(); /* the MTA leaves while decide() runs */
  /* decide()'s own write to a socket whose peer has gone: EPIPE. */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close(sv[1]);
  decide_errno = write(sv[0], "x", 1) < 0 ? errno : 0;
  close(sv[0]);
  return MF_ACCEPT;
}

static void *run_filter(void *arg) {
  mf_filter_run(arg);
  return NULL;
}

static void test_decide_on_worker_after_mta_left(void **state) {
  (void)state;
  tsrv t; /* for its paths and the MTA helpers */
  memset(&t, 0, sizeof t);
  loglen = 0;
  logbuf[0] = '\0';
  entered = mta_gone = 0;
  decide_errno = -1;
  snprintf(t.dir, sizeof t.dir, "/tmp/mf-sigpipe-XXXXXX");
  assert_non_null(mkdtemp(t.dir));
  snprintf(t.path, sizeof t.path, "%s/s", t.dir);
  mf_opts o;
  mf_opts_init(&o);
  o.stage = MF_STAGE_EOH;
  o.workers = 1;
  o.server.handle_signals = 0;
  o.server.log = t_log;
  o.server.log_level = MILTER_LOG_DEBUG;
  o.server.drain_timeout_ms = 1000;
  mf_filter *f;
  assert_int_equal(mf_filter_new(&f, decide_late, NULL, &o), 0);
  char spec[128];
  snprintf(spec, sizeof spec, "unix:%s", t.path);
  assert_int_equal(mf_filter_listen(f, spec), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_filter, f), 0);
  milter_buf b;
  milter_buf_init(&b);
  int fd = mta_open(&t, &b);
  assert_int_equal(milter_enc_connect(&b, "client", '4', 25, "192.0.2.1"), 0);
  assert_int_equal(milter_enc_helo(&b, "helo"), 0);
  assert_int_equal(milter_enc_envaddr(&b, MILTER_CMD_MAIL, "<a@x>", 0, NULL),
                   0);
  assert_int_equal(milter_enc_envaddr(&b, MILTER_CMD_RCPT, "<b@x>", 0, NULL),
                   0);
  assert_int_equal(milter_enc_header(&b, "Subject", "hi"), 0);
  assert_int_equal(milter_enc_simple(&b, MILTER_CMD_EOH), 0);
  send_buf(fd, &b);
  stop_reading_when_entered(fd);
  wait_log(LEFT, 1);
  close(fd);
  assert_int_equal(decide_errno, EPIPE);
  milter_buf_free(&b);
  mf_filter_stop(f);
  pthread_join(th, NULL);
  mf_filter_free(f);
  rmdir(t.dir);
}

/* ---- an application's SIGPIPE handler is never called -------------------- */

static atomic_int n_sigpipe;

static void count_sigpipe(int sig) {
  (void)sig;
  atomic_fetch_add(&n_sigpipe, 1);
}

static void test_handler_not_called(void **state) {
  (void)state;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = count_sigpipe;
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
  atomic_store(&n_sigpipe, 0);
  case_connect(1);
  case_eom_big(1);
  case_eom_big(0);
  case_pending(1);
  test_aclient_deferred_write(NULL);
  client_deferred();
  assert_int_equal(atomic_load(&n_sigpipe), 0);
  /* The handler does see a SIGPIPE when one is raised: the count above
   * could have been more than 0. */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close(sv[1]);
  assert_true(write(sv[0], "x", 1) < 0 && errno == EPIPE);
  close(sv[0]);
  assert_int_equal(atomic_load(&n_sigpipe), 1);
  assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

static int base_fds;
static void test_fds_unchanged(void **state) {
  (void)state;
  assert_int_equal(tu_count_fds(), base_fds);
}

int main(void) {
  /* The default disposition, whatever the test runner left. */
  signal(SIGPIPE, SIG_DFL);
  big = malloc(BIG);
  if (big == NULL)
    return 1;
  memset(big, 'x', BIG);
  /* libuv keeps a process-wide lock pipe from the first loop on. */
  uv_loop_t warm;
  uv_loop_init(&warm);
  uv_loop_close(&warm);
  base_fds = tu_count_fds();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_connect),
      cmocka_unit_test(test_server_helo),
      cmocka_unit_test(test_server_eom_big),
      cmocka_unit_test(test_server_pending),
      cmocka_unit_test(test_server_progress),
      cmocka_unit_test(test_user_loop_connect),
      cmocka_unit_test(test_user_loop_helo),
      cmocka_unit_test(test_user_loop_eom_big),
      cmocka_unit_test(test_user_loop_pending),
      cmocka_unit_test(test_user_loop_progress),
      cmocka_unit_test(test_aclient_write_to_gone_milter),
      cmocka_unit_test(test_aclient_deferred_write),
      cmocka_unit_test(test_client_write_to_gone_milter),
      cmocka_unit_test(test_client_deferred_write),
      cmocka_unit_test(test_app_blocked_sigpipe_left_alone),
      cmocka_unit_test(test_decide_on_worker_after_mta_left),
      cmocka_unit_test(test_handler_not_called),
      cmocka_unit_test(test_fds_unchanged),
  };
  if (getenv("MF_TEST_FILTER") != NULL) /* e.g. "*aclient*" */
    cmocka_set_test_filter(getenv("MF_TEST_FILTER"));
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  free(big);
  return rc;
}
