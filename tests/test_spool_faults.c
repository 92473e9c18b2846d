/* test_spool_faults.c -- spool I/O failures (mailfilter/spool.c's
 * mf_fault_spool_io seam, and a real directory where no file can be made)
 * at every stage they can happen, with and without NR_BODY from the MTA,
 * for each on_error action.  Each message must get exactly one final answer
 * (the on_error action; the MTA never waits for a timeout), the failure is
 * logged once with the queue id and the cause, no fd or temp file is left,
 * and the next message of the connection is served normally. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_proto.h>

#include "mailfilter/spool.h"
#include "testutil.h"
#include "mftest.h"

/* ---- the seam ----------------------------------------------------------- */

enum fault {
  F_NONE = 0,
  F_OPEN,   /* the temp file cannot be created (EACCES) */
  F_ENOSPC, /* writes fail with ENOSPC once WRITE_ROOM bytes went in */
  F_SHORT,  /* every write moves at most SHORT_LEN bytes: must be retried */
  F_EIO,    /* pread fails with EIO */
  F_COUNT
};
static const char *const fault_names[F_COUNT] = {"none", "open", "enospc",
                                                 "short", "eio"};

#define WRITE_ROOM 100000
#define SHORT_LEN 777

static atomic_int armed;      /* enum fault in force */
static atomic_long room;      /* F_ENOSPC: bytes left */
static atomic_int hits;       /* calls the armed fault changed */

int mf_fault_spool_io(int op, int fd, size_t *len) {
  (void)fd;
  switch (atomic_load(&armed)) {
  case F_OPEN:
    if (op != MF_SPOOL_OP_OPEN)
      return 0;
    atomic_fetch_add(&hits, 1);
    errno = EACCES;
    return -1;
  case F_ENOSPC: {
    if (op != MF_SPOOL_OP_WRITE)
      return 0;
    long left = atomic_load(&room);
    if (left <= 0) {
      atomic_fetch_add(&hits, 1);
      errno = ENOSPC;
      return -1;
    }
    if (*len > (size_t)left)
      *len = (size_t)left;
    atomic_fetch_sub(&room, (long)*len);
    return 0;
  }
  case F_SHORT:
    if (op == MF_SPOOL_OP_WRITE && *len > SHORT_LEN) {
      atomic_fetch_add(&hits, 1);
      *len = SHORT_LEN;
    }
    return 0;
  case F_EIO:
    if (op != MF_SPOOL_OP_PREAD)
      return 0;
    atomic_fetch_add(&hits, 1);
    errno = EIO;
    return -1;
  default:
    return 0;
  }
}

static void arm(int f) {
  atomic_store(&room, WRITE_ROOM);
  atomic_store(&armed, f);
}

/* ---- log capture -------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[1 << 16];

static void cap_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  if (getenv("MF_TEST_VERBOSE") != NULL)
    fprintf(stderr, "[filter] %d %s\n", (int)lvl, msg);
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(logbuf);
  snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
  pthread_mutex_unlock(&log_mu);
}

static void log_reset(void) {
  pthread_mutex_lock(&log_mu);
  logbuf[0] = '\0';
  pthread_mutex_unlock(&log_mu);
}

/* Lines of the log holding every one of the (up to 2) strings. */
static int log_lines(const char *a, const char *b) {
  pthread_mutex_lock(&log_mu);
  int n = 0;
  for (const char *p = logbuf; *p;) {
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char line[2048];
    snprintf(line, sizeof line, "%.*s", (int)len, p);
    if (strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL))
      n++;
    p += len + (e != NULL);
  }
  pthread_mutex_unlock(&log_mu);
  return n;
}

/* ---- the decision function ---------------------------------------------- */

#define BIG (300u * 1024u) /* over body_mem_max: in a temp file */
#define MEM_MAX (64u * 1024u)

typedef struct fscen {
  int replace;       /* add a header and replace the body with BIG bytes */
  int arm_in_decide; /* fault armed just before replacing */
  int read_body;     /* read the body back and check it */
  atomic_int calls;
  atomic_int body_ok;
} fscen;

static fscen S;

static mf_decision decide(mf_trx *trx, void *ud) {
  fscen *s = ud;
  atomic_fetch_add(&s->calls, 1);
  if (s->read_body) {
    uint64_t size = mf_trx_body_size(trx);
    uint8_t *got = malloc(size ? size : 1);
    ssize_t n = got ? mf_trx_body_read(trx, 0, got, size) : -1;
    uint8_t *want = tf_pattern(BIG, 3);
    int ok = n == (ssize_t)BIG && size == BIG && memcmp(got, want, BIG) == 0;
    free(want);
    free(got);
    if (n < 0)
      return MF_FAIL; /* a body that cannot be read: the function fails */
    atomic_store(&s->body_ok, ok);
  }
  if (s->replace) {
    if (s->arm_in_decide)
      arm(s->arm_in_decide);
    mf_hdr_add(mf_trx_headers(trx), "X-Done", " 1");
    uint8_t *b = tf_pattern(BIG, 9);
    /* The error is ignored on purpose: the library must notice itself. */
    (void)mf_trx_replace_body(trx, b, BIG);
    free(b);
  }
  return MF_ACCEPT;
}

/* ---- one message --------------------------------------------------------- */

/* BAD_TMPDIR: no spool_dir, TMPDIR names a missing directory (issue 12:
 * rcptcount's transactions hung until the MTA's timeout). */
enum { BAD_NONE = 0, BAD_UNWRITABLE, BAD_MISSING, BAD_TMPDIR, BAD_COUNT };

typedef struct caseinfo {
  mf_stage stage;
  int nr_body;          /* the MTA offers NR_BODY */
  mf_action_kind on_error;
  int fault;            /* enum fault */
  int in_decide;        /* armed for the replacement body (else: body) */
  int bad_dir;          /* spool_dir where no file can be created:
                           BAD_UNWRITABLE or BAD_MISSING */
} caseinfo;

static const char *const two_rcpts[] = {"<a@example.net>", "<b@example.net>"};

static void describe(const caseinfo *ci, char *buf, size_t n) {
  snprintf(buf, n, "stage %d nr_body %d on_error %d fault %s%s%s", ci->stage,
           ci->nr_body, ci->on_error, fault_names[ci->fault],
           ci->in_decide ? " (replacement body)" : "",
           ci->bad_dir == BAD_MISSING      ? " missing spool_dir"
           : ci->bad_dir == BAD_TMPDIR     ? " missing TMPDIR"
           : ci->bad_dir == BAD_UNWRITABLE ? " unwritable spool_dir"
                                           : "");
}

/* The expected final reply of a failed message. */
static void check_on_error(const caseinfo *ci, int rc,
                           const milter_client_result *r,
                           const milter_client *c) {
  char what[200];
  describe(ci, what, sizeof what);
  if (ci->on_error == MF_DO_CLOSE) {
    if (rc == 0)
      fail_msg("%s: a reply where the connection should close", what);
    return;
  }
  if (rc != 0)
    fail_msg("%s: %s", what, milter_client_errmsg(c));
  switch (ci->on_error) {
  case MF_DO_ACCEPT:
    assert_int_equal(r->reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(r->n_actions, 0); /* nothing half-done goes out */
    break;
  case MF_DO_REJECT:
    assert_int_equal(r->reply, MILTER_REPLY_REJECT);
    assert_int_equal(r->n_actions, 0);
    break;
  default:
    if (r->reply != MILTER_REPLY_REPLYCODE)
      fail_msg("%s: reply '%c', not a 451", what, r->reply);
    assert_string_equal(r->text,
                        "451 4.3.0 Temporary failure in the mail filter");
    assert_int_equal(r->n_actions, 0);
  }
}

static int fails(const caseinfo *ci) {
  return ci->bad_dir || (ci->fault != F_NONE && ci->fault != F_SHORT);
}

/* Runs one message on c; returns 1 if the connection is still usable. */
static int one_message(milter_client *c, const caseinfo *ci) {
  char what[200];
  describe(ci, what, sizeof what);
  S.replace = ci->in_decide || ci->stage == MF_STAGE_EOH;
  S.arm_in_decide = ci->in_decide ? ci->fault : F_NONE;
  S.read_body = ci->stage == MF_STAGE_EOM;
  atomic_store(&S.calls, 0);
  atomic_store(&S.body_ok, 0);
  atomic_store(&hits, 0);
  arm(F_NONE);
  log_reset();

  tf_envelope(c, "<s@example.org>", 2, two_rcpts, MILTER_CLIENT_NOREPLY);
  milter_client_result r = {0};
  OK(milter_client_header(c, "Subject", " faults", &r));
  int rc = milter_client_eoh(c, &r);
  if (rc == 0 && ci->stage == MF_STAGE_EOH)
    assert_int_equal(r.status, MILTER_CLIENT_NOREPLY); /* NR_EOH: at EOM */
  if (!ci->in_decide)
    arm(ci->fault);
  int final_at_body = 0;
  if (rc == 0 && ci->stage == MF_STAGE_EOM) {
    uint8_t *b = tf_pattern(BIG, 3);
    rc = milter_client_body(c, b, BIG, &r);
    free(b);
    /* Without NR_BODY a body failure is answered at the BODY itself. */
    if (rc != 0 || r.status == MILTER_CLIENT_REPLIED)
      final_at_body = rc != 0 || r.reply != MILTER_REPLY_CONTINUE;
    if (final_at_body && !fails(ci))
      fail_msg("%s: body answered '%c'", what, r.reply);
    if (ci->nr_body)
      assert_false(final_at_body && rc == 0);
  }
  if (!final_at_body && rc == 0)
    rc = milter_client_eom(c, &r);
  arm(F_NONE);

  if (!fails(ci)) {
    if (rc != 0)
      fail_msg("%s: %s", what, milter_client_errmsg(c));
    assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
    assert_int_equal(atomic_load(&S.calls), 1);
    if (S.read_body)
      assert_true(atomic_load(&S.body_ok));
    if (S.replace) {
      assert_int_equal(r.n_actions, 2);
      assert_int_equal(r.actions[0].type, MILTER_ACTION_ADDHEADER);
      assert_int_equal(r.actions[1].type, MILTER_ACTION_REPLBODY);
      assert_int_equal(r.actions[1].body_len, BIG);
      uint8_t *want = tf_pattern(BIG, 9);
      assert_memory_equal(r.actions[1].body, want, BIG);
      free(want);
    }
    if (ci->fault == F_SHORT)
      assert_true(atomic_load(&hits) > 0);
    assert_int_equal(log_lines("4XyZ12", NULL), 0);
  } else {
    check_on_error(ci, rc, &r, c);
    if (!ci->bad_dir)
      assert_true(atomic_load(&hits) > 0);
    /* A body that could not be stored never reaches decide(). */
    if (ci->stage == MF_STAGE_EOM && !ci->in_decide && ci->fault != F_EIO)
      assert_int_equal(atomic_load(&S.calls), 0);
    /* Logged once, with the queue id and the cause. */
    const char *cause = ci->bad_dir            ? "cannot create a temp file"
                        : ci->fault == F_OPEN   ? strerror(EACCES)
                        : ci->fault == F_ENOSPC ? strerror(ENOSPC)
                                                : strerror(EIO);
    if (log_lines("queue id 4XyZ12", cause) != 1 ||
        log_lines("4XyZ12", NULL) != 1 || log_lines(cause, NULL) != 1) {
      pthread_mutex_lock(&log_mu);
      fail_msg("%s: want one line with the queue id and \"%s\"; log:\n%s",
               what, cause, logbuf);
    }
  }
  milter_client_result_free(&r);
  if (rc != 0)
    return 0;
  /* After an answer before end of message the MTA aborts the message. */
  if (final_at_body)
    OK(milter_client_abort(c));
  return 1;
}

/* A plain message: accepted unchanged, decide() ran. */
static void next_message(milter_client *c) {
  S.replace = S.arm_in_decide = S.read_body = 0;
  atomic_store(&S.calls, 0);
  milter_client_result r = {0};
  const char *mv[] = {"i", "5AbC34"};
  OK(milter_client_macro(c, MILTER_CMD_MAIL, 1, mv));
  OK(milter_client_mail(c, "<t@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<x@example.net>", 0, NULL, &r));
  OK(milter_client_header(c, "Subject", " next", &r));
  OK(milter_client_eoh(c, &r));
  /* Decided at end of headers: answered at EOM when NR_EOH is offered; an
   * MTA without it gets the ACCEPT there, and no body nor EOM follows. */
  if (r.reply != MILTER_REPLY_ACCEPT) {
    OK(milter_client_body(c, "small\r\n", 7, &r));
    OK(milter_client_eom(c, &r));
  }
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 0);
  assert_int_equal(atomic_load(&S.calls), 1);
  milter_client_result_free(&r);
}

/* The fd count comes back to base (the server closes its side of a
 * connection after the client's QUIT, on its own thread). */
static void pause_10ms(void) {
  struct timespec ts = {0, 10 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* The fd count once the server has closed what it closes after a QUIT (on
 * its own thread): the same for 20 looks in a row. */
static int settled_fds(void) {
  int n = tu_count_fds(), same = 0;
  while (same < 20) {
    pause_10ms();
    int m = tu_count_fds();
    same = m == n ? same + 1 : 0;
    n = m;
  }
  return n;
}

static void wait_fds(int base) {
  for (int i = 0; i < 500 && tu_count_fds() != base; i++)
    pause_10ms();
  assert_int_equal(tu_count_fds(), base);
}

static const mf_action_kind on_errors[] = {MF_DO_TEMPFAIL, MF_DO_ACCEPT,
                                           MF_DO_REJECT, MF_DO_CLOSE};

static uint32_t offer(int nr_body) {
  uint32_t p = MILTER_P_ALL_STEPS | MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  return nr_body ? p : p & ~MILTER_P_NR_BODY;
}

/* Every case of one filter (stage, on_error, spool directory). */
static void run_filter(mf_stage stage, mf_action_kind on_error, int bad_dir) {
  char dir[] = "/tmp/mf-faults-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char missing[64];
  snprintf(missing, sizeof missing, "%s/missing", dir);
  /* Unwritable: /proc refuses files even to root; others get a 0500
   * directory. */
  const char *spool = bad_dir == BAD_MISSING      ? missing
                      : bad_dir == BAD_UNWRITABLE ? (geteuid() == 0 ? "/proc"
                                                                    : dir)
                                                  : dir;
  if (bad_dir == BAD_UNWRITABLE && geteuid() != 0)
    assert_int_equal(chmod(dir, 0500), 0);
  char *tmpdir = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
  if (bad_dir == BAD_TMPDIR) {
    spool = NULL;
    assert_int_equal(setenv("TMPDIR", missing, 1), 0);
  }
  mf_opts o;
  mf_opts_init(&o);
  o.stage = stage;
  o.server.handle_signals = 0;
  o.server.log = cap_log;
  o.server.log_level = MILTER_LOG_INFO;
  o.server.drain_timeout_ms = 2000;
  o.workers = 2;
  o.on_error = on_error;
  o.body_mem_max = MEM_MAX;
  o.spool_dir = spool;
  tf t;
  tf_launch(&t, &o, decide, &S);
  /* A first connection, so that what the server opens once is open. */
  milter_client *c = tf_client(&t, 0, NULL);
  milter_client_quit(c);
  milter_client_free(c);
  next_message(c = tf_client(&t, 0, NULL));
  milter_client_quit(c);
  milter_client_free(c);
  int fds0 = settled_fds();
  for (int nr = 0; nr < 2; nr++) {
    for (int f = 0; f < F_COUNT; f++) {
      for (int in_decide = 0; in_decide < 2; in_decide++) {
        caseinfo ci = {stage, nr, on_error, f, in_decide, bad_dir};
        if (bad_dir && (f != F_NONE || in_decide))
          continue; /* the directory is the fault */
        if (f == F_NONE && in_decide)
          continue;
        /* At end of headers no body is sent: only the replacement. */
        if (stage == MF_STAGE_EOH && f != F_NONE && !in_decide)
          continue;
        c = tf_client(&t, offer(nr), NULL);
        int usable = one_message(c, &ci);
        if (!usable) {
          milter_client_free(c);
          c = tf_client(&t, offer(nr), NULL);
        }
        next_message(c);
        milter_client_quit(c);
        milter_client_free(c);
        wait_fds(fds0);
        assert_int_equal(tf_count_dir(dir), 0);
      }
    }
  }
  tf_halt(&t);
  if (tmpdir != NULL)
    setenv("TMPDIR", tmpdir, 1);
  else
    unsetenv("TMPDIR");
  free(tmpdir);
  chmod(dir, 0700);
  assert_int_equal(tf_count_dir(dir), 0);
  rmdir(dir);
}

static void test_eom_stage(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof on_errors / sizeof on_errors[0]; i++)
    for (int bad = BAD_NONE; bad < BAD_COUNT; bad++)
      run_filter(MF_STAGE_EOM, on_errors[i], bad);
}

static void test_eoh_stage(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof on_errors / sizeof on_errors[0]; i++)
    for (int bad = BAD_NONE; bad < BAD_COUNT; bad++)
      run_filter(MF_STAGE_EOH, on_errors[i], bad);
}

/* The seam itself, on a bare spool: a short write is retried to the end;
 * ENOSPC mid-way is an error with its errno; so is a failed open. */
static void test_spool_seam(void **state) {
  (void)state;
  char dir[] = "/tmp/mf-faults-XXXXXX";
  assert_non_null(mkdtemp(dir));
  mf_spool s;
  mf_spool_init(&s, 10, dir);
  uint8_t *b = tf_pattern(50000, 1);
  arm(F_SHORT);
  atomic_store(&hits, 0);
  assert_int_equal(mf_spool_write(&s, b, 50000), 0);
  assert_true(atomic_load(&hits) >= 50000 / SHORT_LEN);
  assert_int_equal(s.size, 50000);
  uint8_t *got = malloc(50000);
  assert_int_equal(mf_spool_read(&s, 0, got, 50000), 50000);
  assert_memory_equal(got, b, 50000);
  arm(F_EIO);
  assert_int_equal(mf_spool_read(&s, 0, got, 50000), MF_E_IO);
  assert_int_equal(errno, EIO);
  mf_spool_reset(&s);
  arm(F_ENOSPC);
  assert_int_equal(mf_spool_write(&s, b, 50000), 0);
  assert_int_equal(mf_spool_write(&s, b, 50000), 0);
  assert_int_equal(mf_spool_write(&s, b, 50000), MF_E_IO);
  char why[512];
  assert_non_null(strstr(mf_spool_strerror(&s, why, sizeof why),
                         strerror(ENOSPC)));
  assert_non_null(strstr(why, dir));
  mf_spool_reset(&s);
  arm(F_OPEN);
  assert_int_equal(mf_spool_write(&s, b, 50000), MF_E_IO);
  assert_non_null(strstr(mf_spool_strerror(&s, why, sizeof why),
                         "cannot create a temp file in"));
  assert_non_null(strstr(why, strerror(EACCES)));
  arm(F_NONE);
  mf_spool_reset(&s);
  assert_int_equal(s.fd, -1);
  free(got);
  free(b);
  assert_int_equal(tf_count_dir(dir), 0);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spool_seam),
      cmocka_unit_test(test_eom_stage),
      cmocka_unit_test(test_eoh_stage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
