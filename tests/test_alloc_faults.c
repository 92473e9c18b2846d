/* test_alloc_faults.c -- a failed allocation at every site of a whole
 * transaction.
 *
 * This program defines mf_fault_alloc_fail(), the weak hook of the
 * allocation seam (core/seam/mf_alloc.h): every allocation made by core,
 * addr, header and mailfilter asks it first.  Each test counts the
 * allocations a complete transaction makes, then replays the transaction
 * once for every N, with the Nth allocation failing.  Each replay must end
 * in one of the outcomes a real MTA can live with:
 *   - the connection is closed (the MTA applies its default action at once),
 *   - the message gets the error answer (TEMPFAIL, the on_error default),
 *   - or the transaction is untouched (the allocation was not needed);
 * never a crash, never silence (the client's timeout would fire), never a
 * leak (the ASan build's LeakSanitizer checks at exit; fds and spool files
 * are counted here), and the server keeps serving.
 *
 *   1. the sans-I/O session (codec + session + actions + macros), fed a
 *      two-message stream in 7-byte slices;
 *   2. mf_filter on a thread (server, transaction layer, header and address
 *      libraries, diff engine, worker pool), driven over a socket by the
 *      blocking client, with a decision that edits headers, recipients,
 *      sender and body.  Only allocations on threads other than the test's
 *      own (the loop and the workers) are counted and failed: the client's
 *      own allocations never fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_codec.h>
#include <mailfilter/milter_proto.h>

#include "core/session.h"
#include "testutil.h"

/* ---- the hook ------------------------------------------------------------ */

static _Thread_local int exempt; /* this thread's allocations never fail */
static atomic_long seen;         /* allocations counted since arm() */
static atomic_long fail_at;      /* 0: count only */
static atomic_int failed;        /* the armed failure happened */

int mf_fault_alloc_fail(void); /* the seam's hook (core/seam/mf_alloc.h) */
int mf_fault_alloc_fail(void) {
  if (exempt)
    return 0;
  long n = atomic_fetch_add(&seen, 1) + 1;
  if (n == atomic_load(&fail_at)) {
    atomic_store(&failed, 1);
    return 1;
  }
  return 0;
}

static void disarm(void) {
  atomic_store(&fail_at, 0);
}

static void arm(long n) {
  atomic_store(&fail_at, 0);
  atomic_store(&failed, 0);
  atomic_store(&seen, 0);
  atomic_store(&fail_at, n);
}

/* ---- 1. the session ------------------------------------------------------ */

static int cb_failures; /* a ctx call failed inside a callback */

static milter_status s_conn(milter_ctx *ctx, const milter_connect_info *ci) {
  (void)ci;
  return milter_ctx_macro(ctx, "j") ? MILTER_CONTINUE : MILTER_CONTINUE;
}
static milter_status s_args(milter_ctx *ctx, size_t argc,
                            const char *const *argv) {
  (void)ctx;
  return argc > 0 && argv[0] != NULL ? MILTER_CONTINUE : MILTER_TEMPFAIL;
}
static milter_status s_helo(milter_ctx *ctx, const char *h) {
  (void)ctx;
  (void)h;
  return MILTER_CONTINUE;
}
static milter_status s_hdr(milter_ctx *ctx, const char *n, const char *v) {
  (void)ctx;
  (void)n;
  (void)v;
  return MILTER_CONTINUE;
}
static milter_status s_eoh(milter_ctx *ctx) {
  (void)ctx;
  return MILTER_CONTINUE;
}
static milter_status s_body(milter_ctx *ctx, const uint8_t *p, size_t n) {
  (void)ctx;
  (void)p;
  (void)n;
  return MILTER_CONTINUE;
}
/* Every kind of end-of-message action; a failed call answers TEMPFAIL, as
 * a filter should. */
static milter_status s_eom(milter_ctx *ctx) {
  static char big[100000];
  memset(big, 'b', sizeof big);
  if (milter_ctx_addheader(ctx, "X-A", "1") != 0 ||
      milter_ctx_insheader(ctx, 0, "X-I", "2") != 0 ||
      milter_ctx_chgheader(ctx, "Subject", 1, "new") != 0 ||
      milter_ctx_addrcpt(ctx, "<n@example.net>", NULL) != 0 ||
      milter_ctx_delrcpt(ctx, "<r@example.net>") != 0 ||
      milter_ctx_chgfrom(ctx, "<f@example.org>", NULL) != 0 ||
      milter_ctx_replacebody(ctx, big, sizeof big) != 0 ||
      milter_ctx_quarantine(ctx, "q") != 0 ||
      milter_ctx_setreply(ctx, "451", "4.7.1", "later") != 0) {
    cb_failures++;
    return MILTER_TEMPFAIL;
  }
  return MILTER_ACCEPT;
}
static void s_abort(milter_ctx *ctx) {
  (void)ctx;
}
static void s_close(milter_ctx *ctx) {
  (void)ctx;
}

static void silent(void *ud, milter_log_level l, const char *m) {
  (void)ud;
  (void)l;
  if (getenv("MF_TEST_VERBOSE"))
    fprintf(stderr, "[session] %s\n", m);
}

/* The MTA's side: negotiation (no NR: every command is answered), then two
 * messages with macros, a MAIL with 40 ESMTP args (over the stack array),
 * headers, a 70 000-byte body (over one 64K packet) and QUIT. */
static void mta_stream(milter_buf *b) {
  milter_buf_init(b);
  assert_int_equal(
      milter_enc_optneg(
          b, 6, MILTER_ACT_ALL,
          MILTER_P_ALL_STEPS & ~MILTER_P_ALL_NR &
              ~(MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL |
                MILTER_P_NORCPT | MILTER_P_NOBODY | MILTER_P_NOHDRS |
                MILTER_P_NOEOH | MILTER_P_NOUNKNOWN | MILTER_P_NODATA)),
      0);
  const char *cm[] = {"j", "mx.example", "{daemon_name}", "smtpd"};
  assert_int_equal(milter_enc_macro(b, MILTER_CMD_CONNECT, 2, cm), 0);
  assert_int_equal(milter_enc_connect(b, "client.example", MILTER_FAMILY_INET,
                                      25, "1.2.3.4"),
                   0);
  assert_int_equal(milter_enc_helo(b, "client.example"), 0);
  const char *args[40];
  char argbuf[40][16];
  for (int i = 0; i < 40; i++) {
    snprintf(argbuf[i], sizeof argbuf[i], "X%d=y", i);
    args[i] = argbuf[i];
  }
  static char body[70000];
  memset(body, 'x', sizeof body);
  for (int m = 0; m < 2; m++) {
    const char *mm[] = {"i", "QID1", "{auth_authen}", "u"};
    assert_int_equal(milter_enc_macro(b, MILTER_CMD_MAIL, 2, mm), 0);
    assert_int_equal(milter_enc_envaddr(b, MILTER_CMD_MAIL, "<s@example.org>",
                                        m == 0 ? 40 : 0, args),
                     0);
    assert_int_equal(
        milter_enc_envaddr(b, MILTER_CMD_RCPT, "<r@example.net>", 0, NULL), 0);
    assert_int_equal(milter_enc_simple(b, MILTER_CMD_DATA), 0);
    assert_int_equal(milter_enc_header(b, "From", "a@example.org"), 0);
    assert_int_equal(milter_enc_header(b, "Subject", "hi"), 0);
    assert_int_equal(milter_enc_simple(b, MILTER_CMD_EOH), 0);
    assert_int_equal(milter_enc_body(b, body, 65535), 0);
    assert_int_equal(milter_enc_body(b, body, sizeof body - 65535), 0);
    const char *em[] = {"{msg_id}", "<x@y>"};
    assert_int_equal(milter_enc_macro(b, MILTER_CMD_EOB, 1, em), 0);
    assert_int_equal(milter_enc_simple(b, MILTER_CMD_EOB), 0);
  }
  assert_int_equal(milter_enc_simple(b, MILTER_CMD_QUIT), 0);
}

/* What came back, one letter per reply packet (the replacement body is
 * one 'b' whatever its chunks). */
static void reply_letters(const milter_buf *out, char *sig, size_t n) {
  milter_decoder d;
  milter_decoder_init(&d, MILTER_DEFAULT_HARD_CAP);
  size_t off = 0, k = 0;
  exempt = 1;
  while (off < out->len) {
    size_t used = 0;
    milter_packet pkt;
    int r =
        milter_decoder_feed(&d, out->data + off, out->len - off, &used, &pkt);
    assert_true(r >= 0);
    off += used;
    if (r == 0)
      break;
    if (pkt.cmd == MILTER_REPLY_REPLBODY && k > 0 && sig[k - 1] == 'b')
      continue;
    assert_true(k + 1 < n);
    sig[k++] = (char)pkt.cmd;
  }
  sig[k] = '\0';
  exempt = 0;
  milter_decoder_free(&d);
}

/* Run the stream with allocation n failing.  Returns 1 when the session
 * closed (negative return), 0 when it served everything; the replies'
 * letters go to sig. */
static int run_session(long n, const milter_buf *in, char *sig, size_t siglen) {
  milter_filter_desc d;
  memset(&d, 0, sizeof d);
  d.name = "alloc";
  d.cb.connect = s_conn;
  d.cb.helo = s_helo;
  d.cb.envfrom = s_args;
  d.cb.envrcpt = s_args;
  d.cb.header = s_hdr;
  d.cb.eoh = s_eoh;
  d.cb.body = s_body;
  d.cb.eom = s_eom;
  d.cb.abort = s_abort;
  d.cb.close = s_close;
  d.actions_wanted = MILTER_ACT_ALL;
  d.max_data_size = MILTER_DATA_64K;
  static const char *const eom_macros = "{msg_id}";
  d.macros[MILTER_M_EOM] = eom_macros;
  milter_session_env env;
  memset(&env, 0, sizeof env);
  env.log = silent;
  env.log_level = MILTER_LOG_DEBUG;
  milter_ctx ctx;
  milter_session_init(&ctx, &d, &env, NULL, "test");
  milter_buf out;
  milter_buf_init(&out);
  arm(n);
  int closed = 0;
  for (size_t off = 0; off < in->len && !closed; off += 7) {
    size_t len = in->len - off < 7 ? in->len - off : 7;
    int r = milter_session_feed(&ctx, in->data + off, len);
    /* What the glue does after every feed: take the output. */
    exempt = 1;
    assert_int_equal(milter_buf_append(&out, ctx.out.data, ctx.out.len), 0);
    exempt = 0;
    ctx.out.len = 0;
    if (r == MILTER_E_EOF && off + len == in->len)
      break; /* QUIT: the MTA is done */
    if (r < 0)
      closed = 1;
    else
      assert_int_equal(r, 0); /* nothing here answers PENDING */
  }
  disarm();
  assert_int_equal(milter_session_gone(&ctx), 0);
  milter_session_free(&ctx);
  reply_letters(&out, sig, siglen);
  milter_buf_free(&out);
  return closed;
}

/* An end-of-message answer of the faulty run: the normal one, or a
 * TEMPFAIL (REPLYCODE with our 451, or a plain 't') after any prefix of the
 * actions. */
static int eom_acceptable(const char *got, size_t glen, const char *want,
                          size_t wlen) {
  if (glen == wlen && memcmp(got, want, wlen) == 0)
    return 1;
  if (glen == 0 || (got[glen - 1] != 't' && got[glen - 1] != 'y'))
    return 0;
  return glen - 1 <= wlen && memcmp(got, want, glen - 1) == 0;
}

static void test_session_every_allocation(void **state) {
  (void)state;
  milter_buf in;
  mta_stream(&in);
  char normal[256], sig[256];
  cb_failures = 0;
  assert_int_equal(run_session(0, &in, normal, sizeof normal), 0);
  long total = atomic_load(&seen);
  assert_int_equal(cb_failures, 0);
  /* O, 12 answered commands per message... and two end-of-message runs of
   * actions: the reference shape. */
  if (strstr(normal, "him+-eqba") == NULL)
    fail_msg("replies '%s'", normal);
  assert_true(total > 10);
  long closed = 0, tempfailed = 0, same = 0;
  for (long n = 1; n <= total + 2; n++) {
    cb_failures = 0;
    int c = run_session(n, &in, sig, sizeof sig);
    if (n <= total)
      assert_true(atomic_load(&failed));
    if (c) {
      closed++;
      continue;
    }
    /* Served to the end: the same replies, except that an end of message
     * may have become a TEMPFAIL. */
    const char *g = sig, *w = normal;
    int diff = 0;
    while (*w != '\0') {
      /* Segments end with each end-of-message ACCEPT ('a'). */
      const char *wend = w;
      while (*wend != '\0' && *wend != 'a')
        wend++;
      if (*wend == '\0') { /* tail: plain replies */
        if (strcmp(g, w) != 0)
          fail_msg("n=%ld: replies '%s', want '%s'", n, sig, normal);
        break;
      }
      /* w..wend is "c...c" + actions + 'a'; find the actions' start. */
      const char *act = w;
      while (act < wend && *act == 'c')
        act++;
      size_t nc = (size_t)(act - w);
      if (strncmp(g, w, nc) != 0)
        fail_msg("n=%ld: replies '%s', want '%s'", n, sig, normal);
      g += nc;
      const char *gend = g;
      while (*gend != '\0' && *gend != 'a' && *gend != 't' && *gend != 'y')
        gend++;
      if (*gend == '\0')
        fail_msg("n=%ld: no answer to end of message in '%s'", n, sig);
      if (!eom_acceptable(g, (size_t)(gend - g + 1), act,
                          (size_t)(wend - act + 1)))
        fail_msg("n=%ld: end of message answered '%.*s', want '%.*s'", n,
                 (int)(gend - g + 1), g, (int)(wend - act + 1), act);
      if (*gend != 'a')
        diff = 1;
      g = gend + 1;
      w = wend + 1;
    }
    if (diff)
      tempfailed++;
    else
      same++;
  }
  print_message("session: %ld allocations; %ld closed, %ld tempfailed, %ld "
                "unchanged\n",
                total, closed, tempfailed, same);
  assert_true(closed + tempfailed > 0);
  milter_buf_free(&in);
}

/* ---- 2. the whole filter over a socket ----------------------------------- */

static char spool_dir[64];

#define TRY(call)                                                              \
  do {                                                                         \
    if ((call) != 0) {                                                         \
      if (getenv("MF_TEST_VERBOSE"))                                           \
        fprintf(stderr, "decide: %s failed\n", #call);                         \
      return MF_FAIL;                                                          \
    }                                                                          \
  } while (0)

static mf_decision edit_all(mf_trx *trx, void *ud) {
  (void)ud;
  mf_hdrs *h = mf_trx_headers(trx);
  size_t i;
  TRY(mf_hdr_add(h, "X-Checked", "yes"));
  TRY(mf_hdr_find(h, "Subject", 1, &i));
  TRY(mf_hdr_set(h, i, "[tag] h\xc3\xa9llo"));
  TRY(mf_hdr_find(h, "X-Drop", 1, &i));
  TRY(mf_hdr_delete(h, i));
  TRY(mf_trx_add_rcpt(trx, "<added@example.net>", NULL));
  if (mf_trx_del_rcpt(trx, "<r2@example.net>") != 1)
    return MF_FAIL;
  TRY(mf_trx_change_from(trx, "<new@example.org>", NULL));
  static const char nb[] = "replaced body\r\n";
  TRY(mf_trx_replace_body(trx, nb, sizeof nb - 1));
  return MF_ACCEPT;
}

static void quiet(void *ud, milter_log_level l, const char *m) {
  (void)ud;
  (void)l;
  if (getenv("MF_TEST_VERBOSE"))
    fprintf(stderr, "[filter] %s\n", m);
}

typedef struct tfilter {
  mf_filter *f;
  pthread_t th;
  char spec[64];
} tfilter;

static void *run_filter(void *arg) {
  mf_filter_run(arg);
  return NULL;
}

static int spool_files(void) {
  return tu_count_entries(spool_dir);
}

typedef enum { OUT_CLOSED, OUT_TEMPFAIL, OUT_NORMAL, OUT_BAD } outcome;

/* What went wrong for which N (reported together at the end). */
static char problems[4096];
static int nproblems;

static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...) {
  size_t n = strlen(problems);
  va_list ap;
  if (getenv("MF_TEST_VERBOSE")) {
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
  va_start(ap, fmt);
  if (nproblems++ < 25 && n < sizeof problems - 2) {
    vsnprintf(problems + n, sizeof problems - n - 1, fmt, ap);
    strcat(problems, "\n");
  }
  va_end(ap);
}

static const char *const rcpts[] = {"<r1@example.net>", "<r2@example.net>"};

/* The milter gave the message its final answer before end of message (as
 * an MTA, stop there). */
static int answered(const milter_client_result *r) {
  return r->status == MILTER_CLIENT_REPLIED && r->reply != 0 &&
         r->reply != MILTER_REPLY_CONTINUE;
}
#define GO (rc == 0 && !answered(&r))

/* One transaction; its outcome.  Silence (timeout), a wrong answer or a
 * protocol error is OUT_BAD, with the reason noted. */
static outcome transaction(const tfilter *t, long n, size_t body_len) {
  milter_client *c = NULL;
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.command_timeout_ms = 2000;
  o.eom_timeout_ms = 2000;
  o.connect_timeout_ms = 2000;
  assert_int_equal(milter_client_new(&c, &o), 0);
  exempt = 1;
  assert_int_equal(milter_client_open(c, t->spec), 0);
  milter_client_result r = {0};
  milter_client_nego nego;
  int rc = milter_client_negotiate(c, &nego);
  const char *mv[] = {"i", "QFAULT", "{auth_authen}", ""};
  if (GO)
    rc = milter_client_connect(c, "client.example", MILTER_FAMILY_INET, 2525,
                               "192.0.2.7", &r);
  if (GO)
    rc = milter_client_helo(c, "client.example", &r);
  if (GO)
    rc = milter_client_macro(c, MILTER_CMD_MAIL, 2, mv);
  if (GO)
    rc = milter_client_mail(c, "<s@example.org>", 0, NULL, &r);
  for (int i = 0; i < 2 && GO; i++)
    rc = milter_client_rcpt(c, rcpts[i], 0, NULL, &r);
  if (GO)
    rc = milter_client_header(c, "From", " a@example.org", &r);
  if (GO)
    rc = milter_client_header(c, "Subject", " hello", &r);
  if (GO)
    rc = milter_client_header(c, "X-Drop", " me", &r);
  if (GO)
    rc = milter_client_eoh(c, &r);
  char *body = malloc(body_len);
  assert_non_null(body);
  memset(body, 'z', body_len);
  for (size_t off = 0; off < body_len && GO; off += 65535)
    rc = milter_client_body(
        c, body + off, body_len - off < 65535 ? body_len - off : 65535, &r);
  free(body);
  if (GO)
    rc = milter_client_eom(c, &r);
  outcome out = OUT_NORMAL;
  if (rc == MILTER_E_EOF || rc == MILTER_E_IO) {
    out = OUT_CLOSED;
  } else if (rc != 0) {
    problem("n=%ld: %s: %s", n, milter_err_name(rc), milter_client_errmsg(c));
    out = OUT_BAD;
  } else if (r.reply == MILTER_REPLY_ACCEPT) {
    /* X-Checked, Subject, X-Drop, +rcpt, -rcpt, from, body. */
    if (r.n_actions != 7) {
      problem("n=%ld: accepted with %zu actions, want 7", n, r.n_actions);
      out = OUT_BAD;
    }
  } else if (r.reply == MILTER_REPLY_REPLYCODE ||
             r.reply == MILTER_REPLY_TEMPFAIL) {
    out = OUT_TEMPFAIL;
    if (r.reply == MILTER_REPLY_REPLYCODE &&
        (r.text == NULL || strncmp(r.text, "451", 3) != 0)) {
      problem("n=%ld: reply '%s'", n, r.text ? r.text : "");
      out = OUT_BAD;
    }
    if (r.n_actions != 0) {
      problem("n=%ld: tempfail after %zu actions", n, r.n_actions);
      out = OUT_BAD;
    }
  } else {
    problem("n=%ld: end of message answered '%c'", n, r.reply);
    out = OUT_BAD;
  }
  milter_client_result_free(&r);
  if (out != OUT_CLOSED)
    milter_client_quit(c);
  milter_client_free(c);
  return out;
}

/* Wait until the server has let go of every connection (the test thread
 * may not read server state: poll the fd count, which is process-wide). */
static int settle(int base_fds) {
  for (int i = 0; i < 400 && tu_count_fds() != base_fds; i++)
    usleep(5000);
  return tu_count_fds() == base_fds;
}

static void run_filter_faults(mf_stage stage, size_t body_len,
                              const char *what) {
  exempt = 1;
  snprintf(spool_dir, sizeof spool_dir, "/tmp/mf-alloc-XXXXXX");
  assert_non_null(mkdtemp(spool_dir));
  mf_opts o;
  mf_opts_init(&o);
  o.stage = stage;
  o.workers = 2;
  o.spool_dir = spool_dir;
  o.server.handle_signals = 0;
  o.server.log = quiet;
  o.server.drain_timeout_ms = 2000;
  tfilter t;
  assert_int_equal(mf_filter_new(&t.f, edit_all, NULL, &o), 0);
  assert_int_equal(mf_filter_listen(t.f, "inet:0@127.0.0.1"), 0);
  snprintf(t.spec, sizeof t.spec, "inet:%d@127.0.0.1",
           milter_server_port(mf_filter_server(t.f)));
  assert_int_equal(pthread_create(&t.th, NULL, run_filter, t.f), 0);
  /* A first transaction, so that whatever the server opens once (and
   * keeps) is in the baseline. */
  assert_int_equal(transaction(&t, 0, body_len), OUT_NORMAL);
  usleep(100000);
  int base = tu_count_fds();

  problems[0] = '\0';
  nproblems = 0;
  arm(0);
  assert_int_equal(transaction(&t, 0, body_len), OUT_NORMAL);
  assert_true(settle(base));
  long total = atomic_load(&seen);
  assert_true(total > 20);
  long counts[4] = {0, 0, 0, 0};
  long first = getenv("MF_FAULT_FROM") ? atol(getenv("MF_FAULT_FROM")) : 1;
  for (long n = first; n <= total + 2 && nproblems < 25; n++) {
    arm(n);
    outcome out = transaction(&t, n, body_len);
    if (!settle(base))
      problem("n=%ld: %d fds open, %d before", n, tu_count_fds(), base);
    if (spool_files() != 0)
      problem("n=%ld: %d spool files left", n, spool_files());
    counts[out]++;
  }
  arm(0);
  /* Still serving, normally. */
  if (transaction(&t, 0, body_len) != OUT_NORMAL)
    problem("after the faults: not served normally");
  print_message("filter, %s: %ld allocations; %ld closed, %ld tempfailed, "
                "%ld unchanged, %ld wrong\n",
                what, total, counts[OUT_CLOSED], counts[OUT_TEMPFAIL],
                counts[OUT_NORMAL], counts[OUT_BAD]);
  if (nproblems > 0)
    fail_msg("%d problems:\n%s", nproblems, problems);
  assert_true(counts[OUT_CLOSED] + counts[OUT_TEMPFAIL] > 0);
  mf_filter_stop(t.f);
  pthread_join(t.th, NULL);
  mf_filter_free(t.f);
  assert_int_equal(spool_files(), 0);
  rmdir(spool_dir);
  exempt = 0;
}

static void test_filter_every_allocation_small_body(void **state) {
  (void)state;
  run_filter_faults(MF_STAGE_EOM, 2000, "EOM, 2 KB body");
}

/* Past the 200 KiB threshold: the body goes to a temp file. */
static void test_filter_every_allocation_spooled_body(void **state) {
  (void)state;
  run_filter_faults(MF_STAGE_EOM, 300000, "EOM, 300 KB body");
}

/* Decided at end of headers (no body on the wire), changes held until end
 * of message. */
static void test_filter_every_allocation_eoh(void **state) {
  (void)state;
  run_filter_faults(MF_STAGE_EOH, 2000, "EOH");
}

int main(void) {
  /* The client side of part 2 runs on this thread: exempt while it runs
   * (set per test); the server's threads are not. */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_session_every_allocation),
      cmocka_unit_test(test_filter_every_allocation_small_body),
      cmocka_unit_test(test_filter_every_allocation_spooled_body),
      cmocka_unit_test(test_filter_every_allocation_eoh),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
