/* test_client.c -- the blocking MTA-side client against our own server and
 * against scripted raw-socket milters that break the protocol. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_codec.h>

#include "testutil.h"

/* ---- the test filter ----------------------------------------------------- */

#define BIG_BODY 100000u /* replacement body > 64 KiB */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  int connects, helos, mails, rcpts, datas, headers, eohs, eoms, aborts, closes,
      unknowns;
  size_t body_bytes;
  unsigned body_chunks;
  size_t max_chunk;
  char last_from[128];
  char last_from_args[128];
  char last_helo[128];
  char last_hdr[256];
  char macro_i[64];
} st;

static void st_reset(void) {
  pthread_mutex_lock(&mu);
  memset(&st, 0, sizeof st);
  pthread_mutex_unlock(&mu);
}

static uint8_t *big_body(void) {
  uint8_t *b = malloc(BIG_BODY);
  for (size_t i = 0; i < BIG_BODY; i++)
    b[i] = (uint8_t)("0123456789abcdef\r\n"[i % 18]);
  return b;
}

static milter_status f_connect(milter_ctx *ctx, const milter_connect_info *ci) {
  (void)ctx;
  (void)ci;
  pthread_mutex_lock(&mu);
  st.connects++;
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

static milter_status f_helo(milter_ctx *ctx, const char *helo) {
  pthread_mutex_lock(&mu);
  st.helos++;
  snprintf(st.last_helo, sizeof st.last_helo, "%s", helo);
  pthread_mutex_unlock(&mu);
  if (strcmp(helo, "tempfail.example") == 0)
    return MILTER_TEMPFAIL;
  (void)ctx;
  return MILTER_CONTINUE;
}

static milter_status f_envfrom(milter_ctx *ctx, size_t argc,
                               const char *const *argv) {
  pthread_mutex_lock(&mu);
  st.mails++;
  snprintf(st.last_from, sizeof st.last_from, "%s", argv[0]);
  st.last_from_args[0] = '\0';
  for (size_t i = 1; i < argc; i++) {
    size_t n = strlen(st.last_from_args);
    snprintf(st.last_from_args + n, sizeof st.last_from_args - n, "%s%s",
             i > 1 ? "|" : "", argv[i]);
  }
  const char *m = milter_ctx_macro(ctx, "i");
  snprintf(st.macro_i, sizeof st.macro_i, "%s", m ? m : "");
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

static milter_status f_envrcpt(milter_ctx *ctx, size_t argc,
                               const char *const *argv) {
  (void)argc;
  pthread_mutex_lock(&mu);
  st.rcpts++;
  pthread_mutex_unlock(&mu);
  if (strcmp(argv[0], "<bad@example.org>") == 0) {
    assert_int_equal(milter_ctx_setreply(ctx, "550", "5.1.1", "no such user"),
                     0);
    return MILTER_REJECT;
  }
  return MILTER_CONTINUE;
}

static milter_status f_data(milter_ctx *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  st.datas++;
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

static milter_status f_unknown(milter_ctx *ctx, const char *line) {
  (void)ctx;
  (void)line;
  pthread_mutex_lock(&mu);
  st.unknowns++;
  pthread_mutex_unlock(&mu);
  return MILTER_REJECT;
}

static milter_status f_header(milter_ctx *ctx, const char *name,
                              const char *value) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  st.headers++;
  snprintf(st.last_hdr, sizeof st.last_hdr, "%s=%s", name, value);
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

static milter_status f_eoh(milter_ctx *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  st.eohs++;
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

static milter_status f_body(milter_ctx *ctx, const uint8_t *chunk, size_t len) {
  (void)ctx;
  (void)chunk;
  pthread_mutex_lock(&mu);
  st.body_bytes += len;
  st.body_chunks++;
  if (len > st.max_chunk)
    st.max_chunk = len;
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

/* Performs every action; failures of not-negotiated ones are ignored. */
static milter_status f_eom(milter_ctx *ctx) {
  pthread_mutex_lock(&mu);
  st.eoms++;
  pthread_mutex_unlock(&mu);
  milter_ctx_addheader(ctx, "X-Added", "yes");
  milter_ctx_insheader(ctx, 0, "X-Inserted", " first\n\tfolded");
  milter_ctx_chgheader(ctx, "Subject", 1, "changed");
  milter_ctx_chgheader(ctx, "X-Gone", 2, "");
  milter_ctx_addrcpt(ctx, "<new@example.org>", NULL);
  milter_ctx_addrcpt(ctx, "<par@example.org>", "NOTIFY=NEVER");
  milter_ctx_delrcpt(ctx, "<old@example.org>");
  milter_ctx_chgfrom(ctx, "<from2@example.org>", "SIZE=100 BODY=8BITMIME");
  uint8_t *b = big_body();
  milter_ctx_replacebody(ctx, b, 40000);
  milter_ctx_replacebody(ctx, b + 40000, BIG_BODY - 40000);
  free(b);
  milter_ctx_quarantine(ctx, "held for review");
  return MILTER_ACCEPT;
}

static void f_abort(milter_ctx *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  st.aborts++;
  pthread_mutex_unlock(&mu);
}

static void f_close(milter_ctx *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  st.closes++;
  pthread_mutex_unlock(&mu);
}

static int get(int *p) {
  pthread_mutex_lock(&mu);
  int v = *p;
  pthread_mutex_unlock(&mu);
  return v;
}

/* ---- server in a thread ---------------------------------------------------
 */

static milter_filter_desc full_desc(void) {
  milter_filter_desc d;
  memset(&d, 0, sizeof d);
  d.name = "test_client";
  d.cb.connect = f_connect;
  d.cb.helo = f_helo;
  d.cb.envfrom = f_envfrom;
  d.cb.envrcpt = f_envrcpt;
  d.cb.data = f_data;
  d.cb.unknown = f_unknown;
  d.cb.header = f_header;
  d.cb.eoh = f_eoh;
  d.cb.body = f_body;
  d.cb.eom = f_eom;
  d.cb.abort = f_abort;
  d.cb.close = f_close;
  d.actions_wanted = MILTER_ACT_ALL;
  d.max_data_size = MILTER_DATA_1M;
  d.macros[MILTER_M_ENVFROM] = "i {auth_authen}";
  d.macros[MILTER_M_EOM] = "{msg_id}";
  return d;
}

static void srv_start(tu_server *t, const milter_filter_desc *d) {
  assert_int_equal(tu_server_start(t, d), 0);
}

static milter_client *client_for(const tu_server *t, const milter_client_opts *o) {
  milter_client *c = NULL;
  assert_int_equal(milter_client_new(&c, o), 0);
  int rc = milter_client_open(c, t->spec);
  if (rc != 0)
    fail_msg("open %s: %s", t->spec, milter_client_errmsg(c));
  return c;
}

static void expect_reply(const milter_client_result *r, uint8_t code) {
  assert_int_equal(r->status, MILTER_CLIENT_REPLIED);
  assert_int_equal(r->reply, code);
}

/* ---- full transactions ----------------------------------------------------
 */

static void check_eom_actions(const milter_client_result *r, int v6,
                              size_t body_chunks) {
  uint8_t *b = big_body();
  size_t i = 0;
  const milter_action *a = r->actions;
  size_t n = r->n_actions;
  assert_true(n >= 1);
#define NEXT() (assert_true(i < n), &a[i++])
  const milter_action *x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_ADDHEADER);
  assert_string_equal(x->name, "X-Added");
  assert_string_equal(x->value, "yes");
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_INSHEADER);
  assert_int_equal(x->index, 0);
  assert_string_equal(x->name, "X-Inserted");
  assert_string_equal(x->value, " first\n\tfolded");
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_CHGHEADER);
  assert_int_equal(x->index, 1);
  assert_string_equal(x->name, "Subject");
  assert_string_equal(x->value, "changed");
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_CHGHEADER);
  assert_int_equal(x->index, 2);
  assert_string_equal(x->name, "X-Gone");
  assert_string_equal(x->value, "");
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_ADDRCPT);
  assert_string_equal(x->name, "<new@example.org>");
  assert_null(x->value);
  if (v6) {
    x = NEXT();
    assert_int_equal(x->type, MILTER_ACTION_ADDRCPT_PAR);
    assert_string_equal(x->name, "<par@example.org>");
    assert_string_equal(x->value, "NOTIFY=NEVER");
  }
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_DELRCPT);
  assert_string_equal(x->name, "<old@example.org>");
  assert_null(x->value);
  if (v6) {
    x = NEXT();
    assert_int_equal(x->type, MILTER_ACTION_CHGFROM);
    assert_string_equal(x->name, "<from2@example.org>");
    assert_string_equal(x->value, "SIZE=100 BODY=8BITMIME");
  }
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_QUARANTINE);
  assert_null(x->name);
  assert_string_equal(x->value, "held for review");
  x = NEXT();
  assert_int_equal(x->type, MILTER_ACTION_REPLBODY);
  assert_int_equal(x->body_len, BIG_BODY);
  assert_memory_equal(x->body, b, BIG_BODY);
  assert_int_equal(x->chunks, body_chunks);
  assert_int_equal(i, n);
#undef NEXT
  free(b);
}

static void one_message(milter_client *c, int with_abort, int v6,
                        size_t body_chunks) {
  milter_client_result r = {0};
  const char *mac[] = {"i", "QID1", "{auth_authen}", "alice"};
  OK(milter_client_macro(c, MILTER_CMD_MAIL, 2, mac));
  const char *margs[] = {"SIZE=1234", "BODY=8BITMIME"};
  OK(milter_client_mail(c, "<from@example.org>", 2, margs, &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  pthread_mutex_lock(&mu);
  assert_string_equal(st.last_from, "<from@example.org>");
  assert_string_equal(st.last_from_args, "SIZE=1234|BODY=8BITMIME");
  assert_string_equal(st.macro_i, "QID1");
  pthread_mutex_unlock(&mu);

  OK(milter_client_rcpt(c, "<ok@example.org>", 0, NULL, &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_rcpt(c, "<bad@example.org>", 0, NULL, &r));
  expect_reply(&r, MILTER_REPLY_REPLYCODE);
  assert_string_equal(r.text, "550 5.1.1 no such user");

  if (with_abort) {
    OK(milter_client_abort(c));
    milter_client_result_free(&r);
    return;
  }
  OK(milter_client_data(c, &r));
  if (v6)
    expect_reply(&r, MILTER_REPLY_CONTINUE);
  else
    assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_header(c, "Subject", " hello", &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_header(c, "X-Gone", "a\r\n\tb", &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_eoh(c, &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  uint8_t *b = big_body();
  OK(milter_client_body(c, b, 150000 > BIG_BODY ? BIG_BODY : 150000, &r));
  free(b);
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_eom(c, &r));
  expect_reply(&r, MILTER_REPLY_ACCEPT);
  check_eom_actions(&r, v6, body_chunks);
  milter_client_result_free(&r);
}

static void test_full_v6(void **state) {
  (void)state;
  st_reset();
  tu_server t;
  milter_filter_desc d = full_desc();
  srv_start(&t, &d);
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol &= ~MILTER_P_MDS_1M; /* 256K */
  milter_client *c = client_for(&t, &o);
  milter_client_nego n;
  OK(milter_client_negotiate(c, &n));
  assert_int_equal(n.version, 6);
  assert_int_equal(n.data_size, MILTER_DATA_256K);
  assert_true(n.protocol & MILTER_P_MDS_256K);
  assert_int_equal(n.actions & MILTER_ACT_ALL, MILTER_ACT_ALL);
  assert_string_equal(n.symlist[MILTER_M_ENVFROM], "i {auth_authen}");
  assert_string_equal(n.symlist[MILTER_M_EOM], "{msg_id}");
  assert_null(n.symlist[MILTER_M_CONNECT]);
  assert_int_equal(milter_client_negotiate(c, NULL), MILTER_E_STATE);

  milter_client_result r = {0};
  const char *cm[] = {"j", "mx.example"};
  OK(milter_client_macro(c, MILTER_CMD_CONNECT, 1, cm));
  OK(milter_client_connect(c, "client.example", MILTER_FAMILY_INET, 4321,
                           "192.0.2.1", &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_helo(c, "client.example", &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_unknown(c, "XFOO bar", &r));
  expect_reply(&r, MILTER_REPLY_REJECT);
  assert_int_equal(get(&st.unknowns), 1);

  one_message(c, 1, 1, 1); /* with ABORT */
  one_message(c, 0, 1, 1);
  one_message(c, 0, 1, 1); /* second message without ABORT in between */
  assert_int_equal(get(&st.aborts), 1);
  assert_int_equal(get(&st.eoms), 2);
  assert_int_equal(get(&st.headers), 4);
  pthread_mutex_lock(&mu);
  assert_int_equal(st.body_bytes, 2 * BIG_BODY);
  assert_int_equal(st.body_chunks, 2); /* one 256K chunk each */
  pthread_mutex_unlock(&mu);

  OK(milter_client_quit_nc(c));
  OK(milter_client_connect(c, "[192.0.2.2]", MILTER_FAMILY_UNKNOWN, 0, NULL,
                           &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_helo(c, "tempfail.example", &r));
  expect_reply(&r, MILTER_REPLY_TEMPFAIL);
  assert_string_equal(st.last_helo, "tempfail.example");
  OK(milter_client_quit(c));
  assert_int_equal(milter_client_helo(c, "x", &r), MILTER_E_STATE);
  milter_client_result_free(&r);
  milter_client_free(c);
  for (int i = 0; i < 300 && get(&st.closes) < 2; i++)
    usleep(10000);
  assert_int_equal(get(&st.closes), 2);
  assert_int_equal(get(&st.connects), 2);
  tu_server_stop(&t);
}

/* 64K: body and replacement body both split in 64K chunks. */
static void test_chunking_64k(void **state) {
  (void)state;
  st_reset();
  tu_server t;
  milter_filter_desc d = full_desc();
  srv_start(&t, &d);
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol &= ~(MILTER_P_MDS_1M | MILTER_P_MDS_256K);
  milter_client *c = client_for(&t, &o);
  milter_client_nego n;
  OK(milter_client_negotiate(c, &n));
  assert_int_equal(n.data_size, MILTER_DATA_64K);
  assert_int_equal(milter_client_data_size(c), MILTER_DATA_64K);
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET6, 25, "::1", &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  /* 200000 bytes: 65535 + 65535 + 65535 + 3395 */
  size_t blen = 200000;
  uint8_t *b = calloc(1, blen);
  OK(milter_client_mail(c, "<a@b>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<c@d>", 0, NULL, &r));
  OK(milter_client_eoh(c, &r));
  OK(milter_client_body(c, b, blen, &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  assert_int_equal(r.chunks_sent, 4);
  OK(milter_client_body(c, b, 0, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  free(b);
  pthread_mutex_lock(&mu);
  assert_int_equal(st.body_chunks, 4);
  assert_int_equal(st.body_bytes, blen);
  assert_int_equal(st.max_chunk, MILTER_DATA_64K);
  pthread_mutex_unlock(&mu);
  OK(milter_client_eom(c, &r));
  expect_reply(&r, MILTER_REPLY_ACCEPT);
  check_eom_actions(&r, 1, 2); /* 100000 = 65535 + 34465 */
  milter_client_result_free(&r);
  OK(milter_client_quit(c));
  milter_client_free(c);
  tu_server_stop(&t);
}

/* v2: DATA and UNKNOWN are not sent, v6-only actions not performed. */
static void test_v2(void **state) {
  (void)state;
  st_reset();
  tu_server t;
  milter_filter_desc d = full_desc();
  srv_start(&t, &d);
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.version = 2;
  o.actions = MILTER_ACT_V2;
  o.protocol = 0x7F;
  milter_client *c = client_for(&t, &o);
  milter_client_nego n;
  OK(milter_client_negotiate(c, &n));
  assert_int_equal(n.version, 2);
  assert_int_equal(n.actions & ~MILTER_ACT_V2, 0);
  assert_int_equal(n.data_size, MILTER_DATA_64K);
  for (int i = 0; i < MILTER_M_COUNT; i++)
    assert_null(n.symlist[i]);
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_UNIX, 0, "/tmp/sock", &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_unknown(c, "XFOO", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  one_message(c, 0, 0, 2);
  assert_int_equal(get(&st.datas), 0);
  assert_int_equal(get(&st.unknowns), 0);
  milter_client_result_free(&r);
  OK(milter_client_quit(c));
  milter_client_free(c);
  tu_server_stop(&t);
}

/* NO* (NULL callbacks) and NR_* (asked by the filter). */
static void test_no_nr(void **state) {
  (void)state;
  st_reset();
  tu_server t;
  milter_filter_desc d = full_desc();
  d.cb.helo = NULL;
  d.cb.data = NULL;
  d.cb.unknown = NULL;
  d.cb.eoh = NULL;
  d.protocol_wanted = MILTER_P_NR_HDR | MILTER_P_NR_MAIL | MILTER_P_NR_CONN;
  srv_start(&t, &d);
  milter_client *c = client_for(&t, NULL);
  milter_client_nego n;
  OK(milter_client_negotiate(c, &n));
  assert_true(n.protocol & MILTER_P_NOHELO);
  assert_true(n.protocol & MILTER_P_NODATA);
  assert_true(n.protocol & MILTER_P_NOUNKNOWN);
  assert_true(n.protocol & MILTER_P_NOEOH);
  assert_true(n.protocol & MILTER_P_NR_HDR);
  assert_false(n.protocol & MILTER_P_NOHDRS);
  assert_int_equal(n.data_size, MILTER_DATA_1M);
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET, 1, "192.0.2.9", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_helo(c, "h", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_unknown(c, "X", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_mail(c, "<a@b>", 0, NULL, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_rcpt(c, "<bad@example.org>", 0, NULL, &r));
  expect_reply(&r, MILTER_REPLY_REPLYCODE);
  OK(milter_client_data(c, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_header(c, "Subject", "x", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_eoh(c, &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_body(c, "hi\r\n", 4, &r));
  expect_reply(&r, MILTER_REPLY_CONTINUE);
  OK(milter_client_eom(c, &r));
  expect_reply(&r, MILTER_REPLY_ACCEPT);
  check_eom_actions(&r, 1, 1);
  assert_int_equal(get(&st.helos), 0);
  assert_int_equal(get(&st.headers), 1);
  assert_int_equal(get(&st.mails), 1);
  assert_int_equal(get(&st.connects), 1);
  milter_client_result_free(&r);
  OK(milter_client_quit(c));
  milter_client_free(c);
  tu_server_stop(&t);
}

/* ---- scripted raw milters ---------------------------------------------- */

typedef struct fake {
  int lfd;
  int port;
  pthread_t thread;
  milter_buf script; /* written after the first read */
} fake;

static void *fake_thread(void *arg) {
  fake *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  uint8_t buf[4096];
  if (recv(fd, buf, sizeof buf, 0) > 0 && f->script.len > 0)
    (void)send(fd, f->script.data, f->script.len, MSG_NOSIGNAL);
  while (recv(fd, buf, sizeof buf, 0) > 0)
    ;
  close(fd);
  return NULL;
}

static void fake_start(fake *f) {
  f->lfd = tu_listen_loopback(&f->port);
  assert_true(f->lfd >= 0);
  assert_int_equal(pthread_create(&f->thread, NULL, fake_thread, f), 0);
}

static milter_client *fake_client(fake *f, uint64_t tmo) {
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.command_timeout_ms = tmo;
  o.eom_timeout_ms = tmo;
  milter_client *c = NULL;
  assert_int_equal(milter_client_new(&c, &o), 0);
  char spec[64];
  snprintf(spec, sizeof spec, "inet:%d@127.0.0.1", f->port);
  OK(milter_client_open(c, spec));
  return c;
}

static void fake_end(fake *f, milter_client *c) {
  milter_client_free(c); /* closes: the fake thread sees EOF */
  pthread_join(f->thread, NULL);
  close(f->lfd);
  milter_buf_free(&f->script);
}

static void optneg_reply(fake *f, uint32_t actions, uint32_t proto) {
  assert_int_equal(milter_enc_optneg_reply(&f->script, 6, actions, proto, NULL),
                   0);
}

/* Run: negotiate, connect, expect err with errmsg containing what. */
static void expect_connect_error(fake *f, int err, const char *what) {
  fake_start(f);
  milter_client *c = fake_client(f, 2000);
  OK(milter_client_negotiate(c, NULL));
  milter_client_result r = {0};
  assert_int_equal(
      milter_client_connect(c, "h", MILTER_FAMILY_INET, 1, "192.0.2.1", &r),
      err);
  if (strstr(milter_client_errmsg(c), what) == NULL)
    fail_msg("errmsg '%s' lacks '%s'", milter_client_errmsg(c), what);
  /* The connection is closed after the error. */
  assert_int_equal(milter_client_helo(c, "x", &r), MILTER_E_STATE);
  milter_client_result_free(&r);
  fake_end(f, c);
}

static void test_proto_action_before_eom(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f, MILTER_ACT_ALL, 0);
  assert_int_equal(milter_enc_addheader(&f.script, "X", "y"), 0);
  expect_connect_error(&f, MILTER_E_PROTO, "before end of message");
}

static void test_proto_unknown_code(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f, MILTER_ACT_ALL, 0);
  assert_int_equal(milter_enc_packet(&f.script, 'Z', "x", 1), 0);
  expect_connect_error(&f, MILTER_E_PROTO, "0x5a");
}

static void test_proto_malformed(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f, MILTER_ACT_ALL, 0);
  /* SMFIR_REPLYCODE without NUL terminator */
  assert_int_equal(
      milter_enc_packet(&f.script, MILTER_REPLY_REPLYCODE, "550 x", 5), 0);
  expect_connect_error(&f, MILTER_E_PROTO, "malformed");
}

static void test_proto_skip_at_connect(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f, MILTER_ACT_ALL, 0);
  assert_int_equal(milter_enc_reply_simple(&f.script, MILTER_REPLY_SKIP), 0);
  expect_connect_error(&f, MILTER_E_PROTO, "SMFIR_SKIP");
}

static void test_proto_truncated(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f, MILTER_ACT_ALL, 0);
  /* half a packet, then the fake closes when the client does... use a
   * truncated packet followed by nothing: the client times out. */
  assert_int_equal(milter_buf_append(&f.script,
                                     "\0\0\0\x05"
                                     "c",
                                     5),
                   0);
  expect_connect_error(&f, MILTER_E_TIMEOUT, "no reply");
}

static void test_eom_not_negotiated(void **state) {
  (void)state;
  fake f = {0};
  /* only ADDHDRS negotiated; the milter sends a CHGHEADER at EOM */
  optneg_reply(&f, MILTER_ACT_ADDHDRS, MILTER_P_NOCONNECT);
  assert_int_equal(milter_enc_addheader(&f.script, "X-A", "1"), 0);
  assert_int_equal(milter_enc_chgheader(&f.script, 1, "X-A", "2"), 0);
  fake_start(&f);
  milter_client *c = fake_client(&f, 2000);
  OK(milter_client_negotiate(c, NULL));
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET, 1, "192.0.2.1", &r));
  assert_int_equal(r.status, MILTER_CLIENT_NOT_SENT);
  assert_int_equal(milter_client_eom(c, &r), MILTER_E_NOTSUP);
  assert_non_null(strstr(milter_client_errmsg(c), "SMFIR_CHGHEADER"));
  milter_client_result_free(&r);
  fake_end(&f, c);
}

static void test_progress(void **state) {
  (void)state;
  fake f = {0};
  optneg_reply(&f, MILTER_ACT_ALL, 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(milter_enc_reply_simple(&f.script, MILTER_REPLY_PROGRESS),
                     0);
  assert_int_equal(
      milter_enc_replycode(&f.script, "451", "4.7.1", "try\nlater"), 0);
  fake_start(&f);
  milter_client *c = fake_client(&f, 2000);
  OK(milter_client_negotiate(c, NULL));
  milter_client_result r = {0};
  OK(milter_client_connect(c, "h", MILTER_FAMILY_INET, 1, "192.0.2.1", &r));
  expect_reply(&r, MILTER_REPLY_REPLYCODE);
  assert_int_equal(r.progress, 3);
  assert_string_equal(r.text, "451-4.7.1 try\r\n451 4.7.1 later");
  milter_client_result_free(&r);
  fake_end(&f, c);
}

static void test_negotiation_errors(void **state) {
  (void)state;
  /* asks for a protocol step not offered */
  fake f = {0};
  milter_enc_optneg_reply(&f.script, 6, 0, 0x00400000u, NULL);
  fake_start(&f);
  milter_client_opts o;
  milter_client_opts_init(&o);
  milter_client *c = fake_client(&f, 2000);
  assert_int_equal(milter_client_negotiate(c, NULL), MILTER_E_NEGOTIATE);
  assert_non_null(strstr(milter_client_errmsg(c), "not offered"));
  fake_end(&f, c);
  /* answers with something else than OPTNEG */
  memset(&f, 0, sizeof f);
  milter_enc_reply_simple(&f.script, MILTER_REPLY_CONTINUE);
  fake_start(&f);
  c = fake_client(&f, 2000);
  assert_int_equal(milter_client_negotiate(c, NULL), MILTER_E_NEGOTIATE);
  fake_end(&f, c);
  /* bad arguments */
  o.version = 7;
  assert_int_equal(milter_client_new(&c, &o), MILTER_E_INVAL);
  assert_int_equal(milter_client_new(&c, NULL), 0);
  assert_int_equal(milter_client_open(c, "bogus:spec"), MILTER_E_ADDR);
  assert_int_equal(milter_client_negotiate(c, NULL), MILTER_E_STATE);
  milter_client_free(c);
}

/* A silent milter: negotiation times out after the command timeout. */
static void test_timeout_silent(void **state) {
  (void)state;
  fake f = {0};
  fake_start(&f);
  milter_client *c = fake_client(&f, 300);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(milter_client_negotiate(c, NULL), MILTER_E_TIMEOUT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long ms =
      (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  assert_true(ms >= 280 && ms < 2000);
  assert_non_null(strstr(milter_client_errmsg(c), "no reply"));
  fake_end(&f, c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_v6),
      cmocka_unit_test(test_chunking_64k),
      cmocka_unit_test(test_v2),
      cmocka_unit_test(test_no_nr),
      cmocka_unit_test(test_proto_action_before_eom),
      cmocka_unit_test(test_proto_unknown_code),
      cmocka_unit_test(test_proto_malformed),
      cmocka_unit_test(test_proto_skip_at_connect),
      cmocka_unit_test(test_proto_truncated),
      cmocka_unit_test(test_eom_not_negotiated),
      cmocka_unit_test(test_progress),
      cmocka_unit_test(test_negotiation_errors),
      cmocka_unit_test(test_timeout_silent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
