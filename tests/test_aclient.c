/* test_aclient.c -- the libuv MTA-side client (milter_aclient.h) against our
 * server in a thread and against scripted fake milters: replies, actions,
 * per-chunk body, NR batching, many connections on one loop, and every
 * error path (refused, malformed, unexpected packet, timeout, close while
 * awaiting, misuse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_aclient.h>
#include <mailfilter/milter_codec.h>

#include "testutil.h"

#define RBODY 100000u /* replacement body: several reads, > 64K */

/* ---- the filter ------------------------------------------------------------ */

static atomic_int n_headers, n_eoms, n_rcpts, n_body_chunks, n_closes;
static atomic_size_t body_bytes;

static void counters_reset(void) {
  n_headers = n_eoms = n_rcpts = n_body_chunks = n_closes = 0;
  body_bytes = 0;
}

static milter_status f_rcpt(milter_ctx *ctx, size_t argc,
                            const char *const *argv) {
  (void)argc;
  n_rcpts++;
  if (strcmp(argv[0], "<bad@example.org>") == 0) {
    milter_ctx_setreply(ctx, "550", "5.1.1", "no such user");
    return MILTER_REJECT;
  }
  return MILTER_NOREPLY;
}

static milter_status f_header(milter_ctx *ctx, const char *n, const char *v) {
  (void)ctx;
  (void)n;
  (void)v;
  n_headers++;
  return MILTER_NOREPLY;
}

static milter_status f_body(milter_ctx *ctx, const uint8_t *p, size_t len) {
  (void)ctx;
  (void)p;
  n_body_chunks++;
  body_bytes += len;
  return MILTER_NOREPLY;
}

static milter_status f_eom(milter_ctx *ctx) {
  n_eoms++;
  milter_ctx_addheader(ctx, "X-Seen", "yes");
  const char *big = milter_ctx_macro(ctx, "{big}");
  if (big != NULL && strcmp(big, "1") == 0) {
    uint8_t *b = malloc(RBODY);
    for (size_t i = 0; i < RBODY; i++)
      b[i] = (uint8_t)('a' + i % 26);
    milter_ctx_replacebody(ctx, b, RBODY);
    free(b);
    milter_ctx_progress(ctx);
  }
  return MILTER_ACCEPT;
}

static void f_close(milter_ctx *ctx) {
  (void)ctx;
  n_closes++;
}

static milter_filter_desc desc;

/* nr: ask for NR_* on rcpt, header and body (else everything is answered). */
static void srv_start(tu_server *t, int nr) {
  memset(&desc, 0, sizeof desc);
  desc.name = "test_aclient";
  desc.cb.envrcpt = f_rcpt;
  desc.cb.header = f_header;
  desc.cb.body = f_body;
  desc.cb.eom = f_eom;
  desc.cb.close = f_close;
  desc.actions_wanted = MILTER_ACT_ADDHDRS | MILTER_ACT_CHGBODY;
  desc.max_data_size = MILTER_DATA_1M;
  if (nr)
    desc.protocol_wanted =
        MILTER_P_NR_RCPT | MILTER_P_NR_HDR | MILTER_P_NR_BODY;
  assert_int_equal(tu_server_start(t, &desc), 0);
}

/* ---- awaiting one answer on the test's loop -------------------------------- */

typedef struct answer {
  int is_open;
  int done, err;
  milter_client_result r;
} answer;

static void on_answer(milter_aclient *ac, int err, milter_client_result *r,
                      void *arg) {
  answer *a = arg;
  if (a->is_open) /* open's answer carries no result */
    assert_null(r);
  a->done = 1;
  a->err = err;
  /* the answer may come from a timer callback: make uv_run(ONCE) return
   * instead of blocking in its poll phase */
  uv_stop(milter_aclient_loop(ac));
  if (r != NULL) {
    a->r = *r; /* take ownership */
    memset(r, 0, sizeof *r);
  }
}

/* rc is an event function's return: run the loop until its answer. */
static int await(uv_loop_t *loop, int rc, answer *a) {
  milter_client_result_free(&a->r);
  if (rc != 1)
    return rc;
  a->done = 0;
  while (!a->done)
    uv_run(loop, UV_RUN_ONCE);
  return a->err;
}

static void closed(void *arg) { *(int *)arg = 1; }

static void close_and_wait(uv_loop_t *loop, milter_aclient *ac) {
  int done = 0;
  milter_aclient_close(ac, closed, &done);
  while (!done)
    uv_run(loop, UV_RUN_ONCE);
}

static milter_aclient *open_to(uv_loop_t *loop, const char *spec,
                               const milter_client_opts *o) {
  milter_aclient *ac = NULL;
  assert_int_equal(milter_aclient_new(&ac, loop, o), 0);
  answer a = {.is_open = 1};
  int rc = await(loop, milter_aclient_open(ac, spec, on_answer, &a) == 0 ? 1 : -1,
                 &a);
  if (rc != 0)
    fail_msg("open %s: %d %s", spec, rc, milter_aclient_errmsg(ac));
  return ac;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_answered_transaction(void **state) {
  (void)state;
  counters_reset();
  tu_server t;
  srv_start(&t, 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol &= ~(uint32_t)(MILTER_P_MDS_256K | MILTER_P_MDS_1M); /* 64K */
  milter_aclient *ac = open_to(&loop, t.spec, &o);
  milter_client_nego n;
  milter_aclient_nego(ac, &n);
  assert_int_equal(n.version, 6);
  assert_int_equal(n.data_size, MILTER_DATA_64K);
  assert_int_equal(n.protocol & MILTER_P_ALL_NR & ~MILTER_P_NR_CONN &
                       ~MILTER_P_NR_HELO,
                   0);

  answer a = {0};
  /* connect/helo/mail have no callbacks: NO* steps, nothing sent */
  assert_int_equal(milter_aclient_connect(ac, "h",
                                          MILTER_FAMILY_INET, 25, "192.0.2.1",
                                          on_answer, &a),
                   0);
  assert_int_equal(milter_aclient_mail(ac, "<a@example.org>", 0, NULL,
                                       on_answer, &a),
                   0);
  assert_int_equal(await(&loop,
                         milter_aclient_rcpt(ac, "<ok@example.org>", 0, NULL,
                                             on_answer, &a),
                         &a),
                   0);
  assert_int_equal(a.r.status, MILTER_CLIENT_REPLIED);
  assert_int_equal(a.r.reply, MILTER_REPLY_CONTINUE);
  assert_int_equal(await(&loop,
                         milter_aclient_rcpt(ac, "<bad@example.org>", 0, NULL,
                                             on_answer, &a),
                         &a),
                   0);
  assert_int_equal(a.r.reply, MILTER_REPLY_REPLYCODE);
  assert_string_equal(a.r.text, "550 5.1.1 no such user");
  /* a second event while one is awaited is refused */
  assert_int_equal(milter_aclient_header(ac, "Subject", "x", on_answer, &a), 1);
  answer b = {0};
  assert_int_equal(milter_aclient_header(ac, "To", "y", on_answer, &b),
                   MILTER_E_STATE);
  assert_non_null(strstr(milter_aclient_errmsg(ac), "awaited"));
  assert_int_equal(await(&loop, 1, &a), 0);
  assert_int_equal(a.r.reply, MILTER_REPLY_CONTINUE);

  /* 150000 bytes at 64K: three chunks, each answered */
  size_t blen = 150000;
  uint8_t *body = malloc(blen);
  memset(body, 'x', blen);
  assert_int_equal(
      await(&loop, milter_aclient_body(ac, body, blen, on_answer, &a), &a), 0);
  assert_int_equal(a.r.reply, MILTER_REPLY_CONTINUE);
  assert_int_equal(a.r.chunks_sent, 3);
  const char *mac[] = {"{big}", "1"};
  assert_int_equal(milter_aclient_macro(ac, MILTER_CMD_EOB, 1, mac), 0);
  assert_int_equal(await(&loop, milter_aclient_eom(ac, on_answer, &a), &a), 0);
  assert_int_equal(a.r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(a.r.progress, 1);
  assert_int_equal(a.r.n_actions, 2);
  assert_int_equal(a.r.actions[0].type, MILTER_ACTION_ADDHEADER);
  assert_string_equal(a.r.actions[0].name, "X-Seen");
  assert_int_equal(a.r.actions[1].type, MILTER_ACTION_REPLBODY);
  assert_int_equal(a.r.actions[1].body_len, RBODY);
  assert_int_equal(a.r.actions[1].chunks, 2); /* 64K + rest */
  for (size_t i = 0; i < RBODY; i++)
    if (a.r.actions[1].body[i] != (uint8_t)('a' + i % 26))
      fail_msg("replacement body differs at %zu", i);
  milter_client_result_free(&a.r);
  free(body);
  assert_true(milter_aclient_bytes_out(ac) > blen);
  assert_true(milter_aclient_bytes_in(ac) > RBODY);
  close_and_wait(&loop, ac);
  assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  tu_server_stop(&t);
  assert_int_equal(n_headers, 1);
  assert_int_equal(n_body_chunks, 3);
  assert_int_equal(body_bytes, blen);
  assert_int_equal(n_eoms, 1);
  assert_int_equal(n_closes, 1);
}

static void test_nr_batched(void **state) {
  (void)state;
  counters_reset();
  tu_server t;
  srv_start(&t, 1);
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_aclient *ac = open_to(&loop, t.spec, NULL);
  milter_client_nego n;
  milter_aclient_nego(ac, &n);
  uint32_t nr = MILTER_P_NR_RCPT | MILTER_P_NR_HDR | MILTER_P_NR_BODY;
  assert_int_equal(n.protocol & nr, nr);
  assert_int_equal(n.data_size, MILTER_DATA_1M);
  answer a = {0};
  for (int msg = 0; msg < 3; msg++) {
    assert_int_equal(milter_aclient_rcpt(ac, "<x@example.org>", 0, NULL,
                                         on_answer, &a),
                     0);
    uint64_t before = milter_aclient_bytes_out(ac);
    for (int i = 0; i < 20; i++)
      assert_int_equal(
          milter_aclient_header(ac, "X-H", "value", on_answer, &a), 0);
    /* buffered: nothing written yet */
    assert_int_equal(milter_aclient_bytes_out(ac), before);
    uint8_t body[3000];
    memset(body, 'b', sizeof body);
    assert_int_equal(milter_aclient_body(ac, body, sizeof body, NULL, NULL),
                     0);
    assert_int_equal(await(&loop, milter_aclient_eom(ac, on_answer, &a), &a),
                     0);
    assert_int_equal(a.r.reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(a.r.n_actions, 1);
  }
  milter_client_result_free(&a.r);
  close_and_wait(&loop, ac);
  uv_loop_close(&loop);
  tu_server_stop(&t);
  assert_int_equal(n_headers, 60);
  assert_int_equal(n_rcpts, 3);
  assert_int_equal(body_bytes, 9000);
  assert_int_equal(n_eoms, 3);
}

/* ---- many connections, driven by callbacks only ---------------------------- */

#define CONNS 200
#define MSGS 3

typedef struct conn {
  milter_aclient *ac;
  int msg, step, errors, done;
} conn;

static int finished;

static void drive(milter_aclient *ac, int err, milter_client_result *r,
                  void *arg);

/* Issue the next steps until one awaits a reply. */
static void advance(conn *c) {
  for (;;) {
    int rc = 0;
    switch (c->step++) {
    case 0:
      rc = milter_aclient_rcpt(c->ac, "<a@example.org>", 0, NULL, drive, c);
      break;
    case 1:
      rc = milter_aclient_header(c->ac, "Subject", "s", drive, c);
      break;
    case 2:
      rc = milter_aclient_body(c->ac, "hello\r\n", 7, drive, c);
      break;
    case 3:
      rc = milter_aclient_eom(c->ac, drive, c);
      break;
    default:
      if (++c->msg < MSGS) {
        c->step = 0;
        continue;
      }
      c->done = 1;
      finished++;
      milter_aclient_close(c->ac, NULL, NULL);
      return;
    }
    if (rc < 0) {
      c->errors++;
      finished++;
      milter_aclient_close(c->ac, NULL, NULL);
      return;
    }
    if (rc == 1)
      return;
  }
}

static void drive(milter_aclient *ac, int err, milter_client_result *r,
                  void *arg) {
  (void)ac;
  conn *c = arg;
  if (err != 0) {
    c->errors++;
    finished++;
    milter_aclient_close(c->ac, NULL, NULL);
    return;
  }
  if (r != NULL && c->step == 4 && r->reply != MILTER_REPLY_ACCEPT)
    c->errors++;
  advance(c);
}

static void test_many_connections(void **state) {
  (void)state;
  counters_reset();
  tu_server t;
  srv_start(&t, 1);
  uv_loop_t loop;
  uv_loop_init(&loop);
  static conn cs[CONNS];
  memset(cs, 0, sizeof cs);
  finished = 0;
  for (int i = 0; i < CONNS; i++) {
    assert_int_equal(milter_aclient_new(&cs[i].ac, &loop, NULL), 0);
    assert_int_equal(milter_aclient_open(cs[i].ac, t.spec, drive, &cs[i]), 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* returns when every aclient is closed */
  assert_int_equal(finished, CONNS);
  for (int i = 0; i < CONNS; i++) {
    assert_int_equal(cs[i].errors, 0);
    assert_true(cs[i].done);
  }
  assert_int_equal(uv_loop_close(&loop), 0);
  tu_server_stop(&t);
  assert_int_equal(n_eoms, CONNS * MSGS);
  assert_int_equal(n_headers, CONNS * MSGS);
  assert_int_equal(n_closes, CONNS);
}

/* ---- fake milters for the error paths -------------------------------------- */

typedef struct fake {
  int lfd, port;
  pthread_t thread;
  milter_buf script; /* written after the OPTNEG packet is read */
  int all_at_once;   /* the whole script at once, not packet by command */
} fake;

/* Read one whole packet (length prefix included). */
static int read_packet(int fd) {
  uint8_t h[4];
  if (recv(fd, h, 4, MSG_WAITALL) != 4)
    return -1;
  uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 |
                 (uint32_t)h[2] << 8 | h[3];
  uint8_t buf[4096];
  while (len > 0) {
    ssize_t n = recv(fd, buf, len < sizeof buf ? len : sizeof buf, 0);
    if (n <= 0)
      return -1;
    len -= (uint32_t)n;
  }
  return 0;
}

/* Answer OPTNEG with the script's first packet; answer the next command
 * with the rest; then read until EOF. */
static void *fake_thread(void *arg) {
  fake *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  const uint8_t *p = f->script.data;
  size_t first = f->script.len >= 4 ? 4 + ((size_t)p[0] << 24 |
                                           (size_t)p[1] << 16 |
                                           (size_t)p[2] << 8 | p[3])
                                    : 0;
  if (f->all_at_once)
    first = f->script.len;
  if (read_packet(fd) == 0 && first > 0) {
    (void)send(fd, p, first, MSG_NOSIGNAL);
    if (f->script.len > first && read_packet(fd) == 0)
      (void)send(fd, p + first, f->script.len - first, MSG_NOSIGNAL);
  }
  uint8_t buf[4096];
  while (read(fd, buf, sizeof buf) > 0) {
  }
  close(fd);
  return NULL;
}

static void fake_start(fake *f) {
  f->lfd = tu_listen_loopback(&f->port);
  assert_true(f->lfd >= 0);
  assert_int_equal(pthread_create(&f->thread, NULL, fake_thread, f), 0);
}

static void fake_end(fake *f) {
  pthread_join(f->thread, NULL);
  close(f->lfd);
  milter_buf_free(&f->script);
}

static int fake_open(uv_loop_t *loop, fake *f, milter_aclient **ac,
                     uint64_t tmo) {
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.command_timeout_ms = tmo;
  o.eom_timeout_ms = tmo;
  assert_int_equal(milter_aclient_new(ac, loop, &o), 0);
  char spec[64];
  snprintf(spec, sizeof spec, "inet:%d@127.0.0.1", f->port);
  answer a = {.is_open = 1};
  assert_int_equal(milter_aclient_open(*ac, spec, on_answer, &a), 0);
  return await(loop, 1, &a);
}

/* OPTNEG answered, then the script answers CONNECT: expect err/what. */
static void expect_connect_error(fake *f, int err, const char *what) {
  fake_start(f);
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_aclient *ac = NULL;
  assert_int_equal(fake_open(&loop, f, &ac, 2000), 0);
  answer a = {0};
  assert_int_equal(await(&loop,
                         milter_aclient_connect(ac, "h", MILTER_FAMILY_INET, 1,
                                                "192.0.2.1", on_answer, &a),
                         &a),
                   err);
  if (strstr(milter_aclient_errmsg(ac), what) == NULL)
    fail_msg("errmsg '%s' lacks '%s'", milter_aclient_errmsg(ac), what);
  assert_int_equal(milter_aclient_helo(ac, "x", on_answer, &a),
                   MILTER_E_CLOSED);
  close_and_wait(&loop, ac);
  assert_int_equal(uv_loop_close(&loop), 0);
  fake_end(f);
}

static void optneg_reply(fake *f) {
  assert_int_equal(
      milter_enc_optneg_reply(&f->script, 6, MILTER_ACT_ADDHDRS, 0, NULL), 0);
}

static void test_error_unknown_code(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f);
  assert_int_equal(milter_enc_packet(&f.script, 'Z', "x", 1), 0);
  expect_connect_error(&f, MILTER_E_PROTO, "0x5a");
}

static void test_error_action_before_eom(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f);
  assert_int_equal(milter_enc_addheader(&f.script, "X", "y"), 0);
  expect_connect_error(&f, MILTER_E_PROTO, "before end of message");
}

static void test_error_too_big(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f);
  assert_int_equal(milter_buf_append(&f.script, "\xff\xff\xff\xff", 4), 0);
  expect_connect_error(&f, MILTER_E_TOOBIG, "bytes");
}

static void test_error_timeout(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f); /* then silence */
  expect_connect_error(&f, MILTER_E_TIMEOUT, "in time");
}

static void test_error_negotiation(void **state) {
  (void)state;
  fake f = {0};
  /* asks for an action that was not offered */
  assert_int_equal(milter_enc_optneg_reply(&f.script, 6, 0x10000000u, 0, NULL),
                   0);
  fake_start(&f);
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_aclient *ac = NULL;
  assert_int_equal(fake_open(&loop, &f, &ac, 2000), MILTER_E_NEGOTIATE);
  assert_non_null(strstr(milter_aclient_errmsg(ac), "not offered"));
  close_and_wait(&loop, ac);
  uv_loop_close(&loop);
  fake_end(&f);
}

static void test_error_refused_and_misuse(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_aclient *ac = NULL;
  assert_int_equal(milter_aclient_new(&ac, &loop, NULL), 0);
  answer a = {0};
  /* events before negotiation */
  assert_int_equal(milter_aclient_helo(ac, "x", on_answer, &a), MILTER_E_STATE);
  assert_int_equal(milter_aclient_open(ac, "bogus:spec", on_answer, &a),
                   MILTER_E_ADDR);
  assert_int_equal(milter_aclient_open(ac, "unix:/nonexistent/milter.sock",
                                       on_answer, &a),
                   0);
  assert_int_equal(await(&loop, 1, &a), MILTER_E_IO);
  assert_non_null(strstr(milter_aclient_errmsg(ac), "connect"));
  close_and_wait(&loop, ac);
  milter_client_opts bad;
  milter_client_opts_init(&bad);
  bad.version = 9;
  assert_int_equal(milter_aclient_new(&ac, &loop, &bad), MILTER_E_INVAL);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Replies sent ahead of their commands wait for them (as with an MTA that
 * reads on demand); a flood while nothing is due is a protocol error,
 * reported by the next call, then MILTER_E_CLOSED. */
static void test_early_bytes(void **state) {
  (void)state;
  uv_loop_t loop;
  milter_aclient *ac = NULL;
  /* early: OPTNEG reply and, in the same write, CONNECT's and HELO's */
  fake g = {0};
  optneg_reply(&g);
  assert_int_equal(milter_enc_reply_simple(&g.script, MILTER_REPLY_PROGRESS),
                   0);
  assert_int_equal(milter_enc_reply_simple(&g.script, MILTER_REPLY_CONTINUE),
                   0);
  assert_int_equal(milter_enc_reply_simple(&g.script, MILTER_REPLY_TEMPFAIL),
                   0);
  g.all_at_once = 1;
  fake_start(&g);
  uv_loop_init(&loop);
  assert_int_equal(fake_open(&loop, &g, &ac, 2000), 0);
  answer a = {0};
  assert_int_equal(await(&loop,
                         milter_aclient_connect(ac, "h", MILTER_FAMILY_INET, 1,
                                                "192.0.2.1", on_answer, &a),
                         &a),
                   0);
  assert_int_equal(a.r.reply, MILTER_REPLY_CONTINUE);
  assert_int_equal(a.r.progress, 1);
  assert_int_equal(
      await(&loop, milter_aclient_helo(ac, "x", on_answer, &a), &a), 0);
  assert_int_equal(a.r.reply, MILTER_REPLY_TEMPFAIL);
  milter_client_result_free(&a.r);
  close_and_wait(&loop, ac);
  uv_loop_close(&loop);
  fake_end(&g);

  /* a flood while nothing is due */
  fake h = {0};
  optneg_reply(&h);
  uint8_t *junk = calloc(1, 1200000);
  assert_int_equal(milter_buf_append(&h.script, junk, 1200000), 0);
  free(junk);
  h.all_at_once = 1;
  fake_start(&h);
  uv_loop_init(&loop);
  assert_int_equal(fake_open(&loop, &h, &ac, 2000), 0);
  for (int i = 0; i < 400; i++) {
    if (strstr(milter_aclient_errmsg(ac), "no reply was due") != NULL)
      break;
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(5000);
  }
  assert_non_null(strstr(milter_aclient_errmsg(ac), "no reply was due"));
  assert_int_equal(milter_aclient_helo(ac, "x", on_answer, &a), MILTER_E_PROTO);
  assert_int_equal(milter_aclient_helo(ac, "x", on_answer, &a), MILTER_E_CLOSED);
  close_and_wait(&loop, ac);
  uv_loop_close(&loop);
  fake_end(&h);
}

static void test_close_while_awaiting(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f);
  fake_start(&f);
  uv_loop_t loop;
  uv_loop_init(&loop);
  milter_aclient *ac = NULL;
  assert_int_equal(fake_open(&loop, &f, &ac, 30000), 0);
  answer a = {0};
  assert_int_equal(milter_aclient_helo(ac, "x", on_answer, &a), 1);
  close_and_wait(&loop, ac);
  assert_true(a.done);
  assert_int_equal(a.err, MILTER_E_CLOSED);
  assert_int_equal(uv_loop_close(&loop), 0);
  fake_end(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_answered_transaction),
      cmocka_unit_test(test_nr_batched),
      cmocka_unit_test(test_many_connections),
      cmocka_unit_test(test_error_unknown_code),
      cmocka_unit_test(test_error_action_before_eom),
      cmocka_unit_test(test_error_too_big),
      cmocka_unit_test(test_error_timeout),
      cmocka_unit_test(test_error_negotiation),
      cmocka_unit_test(test_error_refused_and_misuse),
      cmocka_unit_test(test_early_bytes),
      cmocka_unit_test(test_close_while_awaiting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
