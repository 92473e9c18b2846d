/* test_loops.c -- a server on N event loops: how many, where connections
 * go, that one connection stays on one thread, stop and drain over every
 * loop, and PROGRESS sent by the server while a reply is pending. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_client.h>

#include "testutil.h"

/* ---- log capture --------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[8192];

/* Lines as "LEVEL msg" (E, W, I, D). */
static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(logbuf);
  if (n + strlen(msg) + 4 < sizeof logbuf)
    snprintf(logbuf + n, sizeof logbuf - n, "%c %s\n",
             lvl == MILTER_LOG_ERROR     ? 'E'
             : lvl == MILTER_LOG_WARNING ? 'W'
             : lvl == MILTER_LOG_INFO    ? 'I'
                                         : 'D',
             msg);
  pthread_mutex_unlock(&log_mu);
}

/* ---- the filter: where each connection's callbacks run ------------------- */

enum { MAX_THREADS = 16 };

typedef struct seen {
  pthread_t thread; /* the thread of the connect callback */
  int moved;        /* a later callback ran on another thread */
} seen;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t threads[MAX_THREADS];
static int per_thread[MAX_THREADS]; /* connections first seen there */
static int nthreads;
static atomic_int n_moved, n_close, n_pending_eom;
static atomic_int pend_eom; /* EOM answers PENDING, replied from a thread */

static void reset_counts(void) {
  pthread_mutex_lock(&mu);
  nthreads = 0;
  memset(per_thread, 0, sizeof per_thread);
  pthread_mutex_unlock(&mu);
  atomic_store(&n_moved, 0);
  atomic_store(&n_close, 0);
  atomic_store(&n_pending_eom, 0);
  atomic_store(&pend_eom, 0);
  logbuf[0] = '\0';
}

static void check_thread(milter_ctx *ctx) {
  seen *s = milter_ctx_get_data(ctx);
  if (s != NULL && !pthread_equal(s->thread, pthread_self()) && !s->moved) {
    s->moved = 1;
    atomic_fetch_add(&n_moved, 1);
  }
}

static milter_status f_connect(milter_ctx *ctx, const milter_connect_info *ci) {
  (void)ci;
  seen *s = calloc(1, sizeof *s);
  if (s == NULL)
    return MILTER_TEMPFAIL;
  s->thread = pthread_self();
  milter_ctx_set_data(ctx, s);
  pthread_mutex_lock(&mu);
  int i = 0;
  while (i < nthreads && !pthread_equal(threads[i], s->thread))
    i++;
  if (i == nthreads && nthreads < MAX_THREADS)
    threads[nthreads++] = s->thread;
  if (i < MAX_THREADS)
    per_thread[i]++;
  pthread_mutex_unlock(&mu);
  return MILTER_CONTINUE;
}

static milter_status f_helo(milter_ctx *ctx, const char *h) {
  (void)h;
  check_thread(ctx);
  return MILTER_CONTINUE;
}

static milter_status f_mail(milter_ctx *ctx, size_t n, const char *const *v) {
  (void)n;
  (void)v;
  check_thread(ctx);
  return MILTER_CONTINUE;
}

static milter_status f_rcpt(milter_ctx *ctx, size_t n, const char *const *v) {
  (void)n;
  (void)v;
  check_thread(ctx);
  return MILTER_CONTINUE;
}

static void reply_later(milter_ctx *ctx, void *arg) {
  (void)arg;
  check_thread(ctx);
  milter_ctx_addheader(ctx, "X-Later", "yes");
  milter_ctx_reply(ctx, MILTER_ACCEPT);
}

typedef struct later {
  milter_ctx *ctx;
  unsigned ms;
} later;

static void *replier(void *arg) {
  later *l = arg;
  usleep(l->ms * 1000);
  milter_ctx_post(l->ctx, reply_later, NULL);
  free(l);
  return NULL;
}

/* Gate mode (test_max_pending): EOM is left PENDING until the test
 * releases it. */
static atomic_int gate_on;
static milter_ctx *gated[16];
static int ngated;

static milter_status f_eom(milter_ctx *ctx) {
  check_thread(ctx);
  if (atomic_load(&gate_on)) {
    pthread_mutex_lock(&mu);
    if (ngated < 16)
      gated[ngated++] = ctx;
    pthread_mutex_unlock(&mu);
    atomic_fetch_add(&n_pending_eom, 1);
    return MILTER_PENDING;
  }
  int ms = atomic_load(&pend_eom);
  if (ms == 0)
    return MILTER_ACCEPT;
  later *l = malloc(sizeof *l);
  pthread_t th;
  if (l == NULL)
    return MILTER_TEMPFAIL;
  l->ctx = ctx;
  l->ms = (unsigned)ms;
  if (pthread_create(&th, NULL, replier, l) != 0) {
    free(l);
    return MILTER_TEMPFAIL;
  }
  pthread_detach(th);
  atomic_fetch_add(&n_pending_eom, 1);
  return MILTER_PENDING;
}

static void f_close(milter_ctx *ctx) {
  check_thread(ctx);
  free(milter_ctx_get_data(ctx));
  milter_ctx_set_data(ctx, NULL);
  atomic_fetch_add(&n_close, 1);
}

static void make_desc(milter_filter_desc *d) {
  memset(d, 0, sizeof *d);
  d->name = "test_loops";
  d->actions_wanted = MILTER_ACT_ADDHDRS;
  d->cb.connect = f_connect;
  d->cb.helo = f_helo;
  d->cb.envfrom = f_mail;
  d->cb.envrcpt = f_rcpt;
  d->cb.eom = f_eom;
  d->cb.close = f_close;
}

/* ---- a server on its own thread ------------------------------------------ */

typedef struct srvt {
  milter_server *srv;
  pthread_t th;
  char spec[64];
} srvt;

static void *run_thread(void *arg) {
  milter_server_run(arg);
  return NULL;
}

static unsigned max_pending = 128;

static void srv_start(srvt *t, unsigned loops, uint64_t progress_ms) {
  milter_filter_desc d;
  make_desc(&d);
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.handle_signals = 0;
  o.log = t_log;
  o.drain_timeout_ms = 5000;
  o.loops = loops;
  o.progress_ms = progress_ms;
  o.max_pending = max_pending;
  assert_int_equal(milter_server_new(&t->srv, NULL, &d, &o), 0);
  assert_int_equal(milter_server_listen(t->srv, "inet:0@127.0.0.1"), 0);
  snprintf(t->spec, sizeof t->spec, "inet:%d@127.0.0.1",
           milter_server_port(t->srv));
  assert_int_equal(pthread_create(&t->th, NULL, run_thread, t->srv), 0);
}

static void srv_stop(srvt *t) {
  milter_server_stop(t->srv);
  pthread_join(t->th, NULL);
  milter_server_free(t->srv);
}

/* A client through CONNECT and HELO. */
static milter_client *client_open(const char *spec) {
  milter_client *c = NULL;
  assert_int_equal(milter_client_new(&c, NULL), 0);
  OK(milter_client_open(c, spec));
  OK(milter_client_negotiate(c, NULL));
  milter_client_result r = {0};
  OK(milter_client_connect(c, "mta.example", MILTER_FAMILY_INET, 25,
                           "192.0.2.1", &r));
  OK(milter_client_helo(c, "mta.example", &r));
  milter_client_result_free(&r);
  return c;
}

static void open_all(milter_client **c, int n, const char *spec) {
  for (int i = 0; i < n; i++)
    c[i] = client_open(spec);
}

static void quit_all(milter_client **c, int n) {
  for (int i = 0; i < n; i++) {
    milter_client_quit(c[i]);
    milter_client_free(c[i]);
  }
}

static void envelope(milter_client *c) {
  milter_client_result r = {0};
  OK(milter_client_mail(c, "<a@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<b@example.org>", 0, NULL, &r));
  milter_client_result_free(&r);
}

/* One message; returns the EOM result (caller frees). */
static milter_client_result message(milter_client *c) {
  milter_client_result r = {0};
  envelope(c);
  OK(milter_client_eom(c, &r));
  return r;
}

static int wait_for(atomic_int *v, int want) {
  for (int i = 0; i < 500 && atomic_load(v) != want; i++)
    usleep(10000);
  return atomic_load(v) == want;
}

/* ---- tests ---------------------------------------------------------------- */

static unsigned loops_of(uv_loop_t *user_loop, unsigned opt) {
  milter_filter_desc d;
  make_desc(&d);
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.handle_signals = 0;
  o.log = t_log;
  o.loops = opt;
  milter_server *srv = NULL;
  int rc = milter_server_new(&srv, user_loop, &d, &o);
  if (rc != 0)
    return 0;
  unsigned n = milter_server_loops(srv);
  milter_server_free(srv);
  return n;
}

static void test_how_many_loops(void **state) {
  (void)state;
  reset_counts();
  unsigned cpus = uv_available_parallelism();
  unsetenv("MAILFILTER_LOOPS");
  assert_int_equal(loops_of(NULL, 0), cpus);
  assert_int_equal(loops_of(NULL, 3), 3);
  setenv("MAILFILTER_LOOPS", "5", 1);
  assert_int_equal(loops_of(NULL, 0), 5);
  assert_int_equal(loops_of(NULL, 2), 2); /* the option wins */
  setenv("MAILFILTER_LOOPS", "1", 1);
  assert_int_equal(loops_of(NULL, 0), 1);
  const char *bad[] = {"0", "-2", "two", "3x", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    logbuf[0] = '\0';
    setenv("MAILFILTER_LOOPS", bad[i], 1);
    assert_int_equal(loops_of(NULL, 0), cpus);
    if (bad[i][0] != '\0')
      assert_non_null(strstr(logbuf, "MAILFILTER_LOOPS"));
  }
  /* The application's loop: that loop only. */
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  setenv("MAILFILTER_LOOPS", "4", 1);
  assert_int_equal(loops_of(&loop, 0), 1);
  assert_int_equal(loops_of(&loop, 1), 1);
  assert_int_equal(loops_of(&loop, 2), 0); /* MILTER_E_INVAL */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  unsetenv("MAILFILTER_LOOPS");
}

/* 40 connections held open on 4 loops: 10 on each, every callback of a
 * connection on the thread of its connect callback. */
static void test_spread_and_affinity(void **state) {
  (void)state;
  reset_counts();
  srvt t;
  srv_start(&t, 4, 0);
  enum { N = 40 };
  milter_client *c[N];
  open_all(c, N, t.spec);
  assert_int_equal(milter_server_connections(t.srv), N);
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < N; i++) {
      milter_client_result r = message(c[i]);
      assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
      milter_client_result_free(&r);
    }
  pthread_mutex_lock(&mu);
  assert_int_equal(nthreads, 4);
  for (int i = 0; i < 4; i++)
    assert_int_equal(per_thread[i], N / 4);
  pthread_mutex_unlock(&mu);
  quit_all(c, N);
  assert_true(wait_for(&n_close, N));
  assert_int_equal(atomic_load(&n_moved), 0);
  srv_stop(&t);
}

/* An EOM whose reply comes late, on a thread of its own. */
typedef struct eomt {
  milter_client *c;
  milter_client_result r;
  pthread_t th;
} eomt;

static void *eom_thread(void *arg) {
  eomt *e = arg;
  if (milter_client_eom(e->c, &e->r) != 0)
    e->r.reply = 0;
  return NULL;
}

/* Stop: idle connections on every loop close at once; messages in
 * progress on any loop get their reply; then run returns. */
static void test_stop_drains_every_loop(void **state) {
  (void)state;
  reset_counts();
  srvt t;
  srv_start(&t, 3, 0);
  enum { N = 9 };
  milter_client *c[N];
  open_all(c, N, t.spec);
  /* Three busy connections, one per loop (the spread is even). */
  atomic_store(&pend_eom, 400);
  for (int i = 0; i < 3; i++)
    envelope(c[i]);
  /* EOM of the busy ones; their replies are read after the stop below. */
  pthread_mutex_lock(&mu);
  int loops_used = nthreads;
  pthread_mutex_unlock(&mu);
  assert_int_equal(loops_used, 3);
  eomt e[3];
  for (int i = 0; i < 3; i++) {
    e[i].c = c[i];
    memset(&e[i].r, 0, sizeof e[i].r);
  }
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&e[i].th, NULL, eom_thread, &e[i]), 0);
  assert_true(wait_for(&n_pending_eom, 3));
  milter_server_stop(t.srv);
  /* The six idle ones are closed by the server (on three loops). */
  assert_true(wait_for(&n_close, N - 3));
  for (int i = 0; i < 3; i++) {
    pthread_join(e[i].th, NULL);
    assert_int_equal(e[i].r.reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(e[i].r.n_actions, 1);
    assert_string_equal(e[i].r.actions[0].name, "X-Later");
    milter_client_result_free(&e[i].r);
  }
  pthread_join(t.th, NULL); /* run returned: every loop drained */
  assert_int_equal(atomic_load(&n_close), N);
  assert_int_equal(atomic_load(&n_moved), 0);
  milter_server_free(t.srv);
  for (int i = 0; i < N; i++)
    milter_client_free(c[i]);
}

/* opts.progress_ms: PROGRESS while the reply is pending, none without. */
static void test_progress(void **state) {
  (void)state;
  for (int on = 0; on < 2; on++) {
    reset_counts();
    srvt t;
    srv_start(&t, 2, on ? 40 : 0);
    atomic_store(&pend_eom, 400);
    milter_client *c[2];
    open_all(c, 2, t.spec);
    for (int i = 0; i < 2; i++) {
      milter_client_result r = message(c[i]);
      assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
      if (on)
        assert_true(r.progress >= 2); /* 400 ms / 40 ms, on a slow day */
      else
        assert_int_equal(r.progress, 0);
      milter_client_result_free(&r);
      /* The next message on that connection is answered at once. */
      atomic_store(&pend_eom, 0);
      r = message(c[i]);
      assert_int_equal(r.progress, 0);
      milter_client_result_free(&r);
      atomic_store(&pend_eom, 400);
    }
    quit_all(c, 2);
    srv_stop(&t);
  }
}

/* Peers that reset the connection (SO_LINGER 0: a health check, an MTA
 * killed) between packets: closed without a warning, whatever the loop;
 * the next connection is served. */
static void test_reset_peers(void **state) {
  (void)state;
  reset_counts();
  srvt t;
  srv_start(&t, 2, 0);
  int port = milter_server_port(t.srv);
  for (int i = 0; i < 6; i++) {
    int fd = tu_connect_loopback(port);
    assert_true(fd >= 0);
    if (i % 2 == 1) { /* some after a whole option negotiation */
      static const unsigned char optneg[] = {0, 0, 0, 13, 'O', 0, 0, 0, 6,
                                             0, 0, 0x01, 0xff, 0, 0x1f, 0xff,
                                             0xff};
      assert_int_equal(write(fd, optneg, sizeof optneg), sizeof optneg);
      unsigned char buf[64];
      assert_true(read(fd, buf, sizeof buf) > 0);
    }
    struct linger lg = {1, 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
  }
  for (int i = 0; i < 100 && milter_server_connections(t.srv) != 0; i++)
    usleep(10000);
  assert_int_equal(milter_server_connections(t.srv), 0);
  milter_client *c = client_open(t.spec);
  milter_client_result r = message(c);
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  milter_client_result_free(&r);
  quit_all(&c, 1);
  srv_stop(&t);
  pthread_mutex_lock(&log_mu);
  if (strstr(logbuf, "\nW ") != NULL || strncmp(logbuf, "W ", 2) == 0 ||
      strstr(logbuf, "\nE ") != NULL || strncmp(logbuf, "E ", 2) == 0)
    fail_msg("a reset was logged as a warning or error:\n%s", logbuf);
  pthread_mutex_unlock(&log_mu);
}

/* A whole message on a thread of its own (reply 0 on any error). */
static void *msg_thread(void *arg) {
  eomt *e = arg;
  milter_client_result r = {0};
  if (milter_client_mail(e->c, "<a@example.org>", 0, NULL, &r) != 0 ||
      milter_client_rcpt(e->c, "<b@example.org>", 0, NULL, &r) != 0 ||
      milter_client_eom(e->c, &e->r) != 0)
    e->r.reply = 0;
  milter_client_result_free(&r);
  return NULL;
}

/* opts.max_pending: past it a loop reads no other connection (their
 * messages wait in the kernel) until half the pending replies are given;
 * every message is still answered.  Without a bound all are pending. */
static void test_max_pending(void **state) {
  (void)state;
  enum { N = 6 };
  for (unsigned bound = 0; bound <= 2; bound += 2) {
    reset_counts();
    max_pending = bound;
    pthread_mutex_lock(&mu);
    ngated = 0;
    pthread_mutex_unlock(&mu);
    atomic_store(&gate_on, 1);
    srvt t;
    srv_start(&t, 1, 0);
    milter_client *c[N];
    open_all(c, N, t.spec);
    eomt e[N];
    for (int i = 0; i < N; i++) { /* each: MAIL, RCPT, EOM, on a thread */
      e[i].c = c[i];
      memset(&e[i].r, 0, sizeof e[i].r);
      assert_int_equal(pthread_create(&e[i].th, NULL, msg_thread, &e[i]), 0);
    }
    int want = bound == 0 ? N : (int)bound;
    assert_true(wait_for(&n_pending_eom, want));
    usleep(200000); /* the others' EOMs are in the socket: not read */
    assert_int_equal(atomic_load(&n_pending_eom), want);
    /* Answer them one by one: each answer below half the bound lets the
     * held ones be read, never more than the bound at once. */
    for (int done = 0; done < N; done++) {
      assert_true(wait_for(&n_pending_eom, done + want < N ? done + want : N));
      pthread_mutex_lock(&mu);
      milter_ctx *ctx = gated[done];
      pthread_mutex_unlock(&mu);
      assert_int_equal(milter_ctx_post(ctx, reply_later, NULL), 0);
    }
    for (int i = 0; i < N; i++) {
      pthread_join(e[i].th, NULL);
      assert_int_equal(e[i].r.reply, MILTER_REPLY_ACCEPT);
      assert_int_equal(e[i].r.n_actions, 1);
      milter_client_result_free(&e[i].r);
    }
    atomic_store(&gate_on, 0);
    quit_all(c, N);
    srv_stop(&t);
  }
  max_pending = 128;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_how_many_loops),
      cmocka_unit_test(test_spread_and_affinity),
      cmocka_unit_test(test_stop_drains_every_loop),
      cmocka_unit_test(test_progress),
      cmocka_unit_test(test_reset_peers),
      cmocka_unit_test(test_max_pending),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
