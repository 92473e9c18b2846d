/* test_accept.c -- accepting under resource exhaustion (core/listen.c).
 *
 * Real limits, no mocks: the EMFILE test runs the server in a forked child
 * whose RLIMIT_NOFILE is lowered and whose fds are all taken, while the
 * parent's clients connect; the max_connections test refuses real
 * connections.  SIGPIPE keeps its default disposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_client.h>

#include "testutil.h"

/* ---- the filter: every message accepted with one added header ---------- */

static milter_status f_eom(milter_ctx *c) {
  milter_ctx_addheader(c, "X-Served", "yes");
  return MILTER_ACCEPT;
}

static const milter_filter_desc desc = {
    .name = "accepttest",
    .cb = {.eom = f_eom},
    .actions_wanted = MILTER_ACT_ADDHDRS,
};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Negotiate and run one accepted message on an opened client. */
static void one_message(milter_client *c) {
  milter_client_result r = {0};
  OK(milter_client_connect(c, "client", MILTER_FAMILY_INET, 1234, "192.0.2.9",
                           &r));
  OK(milter_client_helo(c, "helo", &r));
  OK(milter_client_mail(c, "<a@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<b@example.org>", 0, NULL, &r));
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(r.n_actions, 1);
  milter_client_result_free(&r);
  OK(milter_client_quit(c));
}

/* ---- log lines with their time ------------------------------------------ */

typedef struct logline {
  uint64_t ms;
  char text[240];
} logline;

enum { MAXLINES = 512 };
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static logline lines[MAXLINES];
static int nlines;

static void add_line(uint64_t ms, const char *text) {
  pthread_mutex_lock(&log_mu);
  if (nlines < MAXLINES) {
    lines[nlines].ms = ms;
    snprintf(lines[nlines].text, sizeof lines[nlines].text, "%s", text);
    nlines++;
  }
  pthread_mutex_unlock(&log_mu);
}

static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  add_line(mono_ms(), msg);
}

/* The lines containing pat: their count; *sum adds the number found after
 * num (e.g. "reached: " -> 48); lines less than 900 ms apart fail. */
static int scan_lines(const char *pat, const char *num, unsigned *sum) {
  int n = 0;
  uint64_t prev = 0;
  *sum = 0;
  pthread_mutex_lock(&log_mu);
  for (int i = 0; i < nlines; i++) {
    const char *p = strstr(lines[i].text, pat);
    if (p == NULL)
      continue;
    if (n > 0 && lines[i].ms - prev < 900)
      fail_msg("two lines %llu ms apart: '%s'",
               (unsigned long long)(lines[i].ms - prev), lines[i].text);
    prev = lines[i].ms;
    n++;
    const char *q = strstr(lines[i].text, num);
    if (q == NULL)
      fail_msg("no count after '%s' in '%s'", num, lines[i].text);
    *sum += (unsigned)strtoul(q + strlen(num), NULL, 10);
  }
  pthread_mutex_unlock(&log_mu);
  return n;
}

static void dump_lines(void) {
  pthread_mutex_lock(&log_mu);
  for (int i = 0; i < nlines; i++)
    fprintf(stderr, "  %llu %s\n", (unsigned long long)lines[i].ms,
            lines[i].text);
  pthread_mutex_unlock(&log_mu);
}

/* ---- max_connections ---------------------------------------------------- */

static void *run_thread(void *arg) {
  milter_server_run(arg);
  return NULL;
}

/* A raw connection to an inet spec: nothing sent. */
static int connect_raw(const char *spec) {
  struct sockaddr_storage ss;
  int is_unix;
  char path[108];
  assert_int_equal(milter_parse_spec(spec, &ss, &is_unix, path, sizeof path),
                   0);
  assert_false(is_unix);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(
      connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  return fd;
}

/* 1 when the server closed fd (EOF or reset) within 10 s. */
static int closed_by_server(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  char b;
  if (poll(&pfd, 1, 10000) != 1)
    return 0;
  ssize_t r = recv(fd, &b, 1, 0);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

static milter_client *open_client(const char *spec) {
  milter_client *c = NULL;
  assert_int_equal(milter_client_new(&c, NULL), 0);
  OK(milter_client_open(c, spec));
  return c;
}

static void test_max_connections(void **state) {
  (void)state;
  nlines = 0;
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.max_connections = 2;
  o.handle_signals = 0;
  o.log = t_log;
  milter_server *srv;
  assert_int_equal(milter_server_new(&srv, NULL, &desc, &o), 0);
  assert_int_equal(milter_server_listen(srv, "inet:0@127.0.0.1"), 0);
  int port = milter_server_port(srv);
  char spec[64];
  snprintf(spec, sizeof spec, "inet:%d@127.0.0.1", port);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_thread, srv), 0);

  /* Two served (negotiated: the server holds them). */
  milter_client *two[2];
  for (int i = 0; i < 2; i++) {
    milter_client *c = two[i] = open_client(spec);
    OK(milter_client_negotiate(c, NULL));
  }
  /* 48 more: each closed at once, not left to time out. */
  int fds[48];
  for (int i = 0; i < 48; i++)
    fds[i] = connect_raw(spec);
  for (int i = 0; i < 48; i++) {
    assert_true(closed_by_server(fds[i]));
    close(fds[i]);
  }
  /* The two are still served. */
  for (int i = 0; i < 2; i++) {
    one_message(two[i]);
    milter_client_free(two[i]);
  }

  /* Once a second at most, nothing lost: the lines add up to 48 (a burst
   * well within a second gives one line). */
  unsigned sum = 0;
  int n = 0;
  for (int i = 0; i < 300 && sum < 48; i++) {
    usleep(10000);
    n = scan_lines("max_connections (2) reached", "reached: ", &sum);
  }
  if (sum != 48)
    dump_lines();
  assert_int_equal(sum, 48);
  dump_lines();
  assert_true(n >= 1 && n <= 2);

  /* Served again once connections closed (their close may still be on its
   * way to the server: a refusal then is retried). */
  int served = 0;
  for (int i = 0; i < 100 && served < 2; i++) {
    milter_client *c = open_client(spec);
    if (milter_client_negotiate(c, NULL) == 0) {
      OK(milter_client_quit(c));
      served++;
    } else {
      usleep(20000);
    }
    milter_client_free(c);
  }
  assert_int_equal(served, 2);
  milter_server_stop(srv);
  pthread_join(th, NULL);
  milter_server_free(srv);
}

/* ---- EMFILE: a child serves with every fd taken --------------------------
 *
 * Child protocol over two pipes.  Child -> parent, one line each:
 *   "port N", "full", "log MS TEXT" (every log line), "cpu US ITER N"
 *   (CPU time and loop iterations between "full" and the parent's 'f').
 * Parent -> child: 'f' free the fds, 'q' stop. */

enum { NCLIENTS = 8 };

static int child_out = -1;
static uv_loop_t child_loop;
static milter_server *child_srv;
static int fillers[4096], nfill;
static unsigned long iterations;
static uv_prepare_t counter;
static uv_poll_t ctl_poll;
static int ctl_fd = -1;
static struct rusage ru_full;
static unsigned long iter_full;

static void child_say(const char *fmt, ...) {
  char b[400];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b, sizeof b - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof b - 2)
    n = (int)sizeof b - 2;
  b[n++] = '\n';
  if (write(child_out, b, (size_t)n) != n)
    _exit(3);
}

static void child_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  child_say("log %llu %s", (unsigned long long)mono_ms(), msg);
}

static void on_iter(uv_prepare_t *p) {
  (void)p;
  iterations++;
}

static long long tv_us(struct timeval tv) {
  return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void on_ctl(uv_poll_t *p, int status, int events) {
  (void)events;
  char c = 'q';
  if (status < 0 || read(ctl_fd, &c, 1) != 1 || c == 'q') {
    uv_close((uv_handle_t *)p, NULL);
    uv_close((uv_handle_t *)&counter, NULL);
    milter_server_stop(child_srv);
    return;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long long us = tv_us(ru.ru_utime) + tv_us(ru.ru_stime) -
                 tv_us(ru_full.ru_utime) - tv_us(ru_full.ru_stime);
  child_say("cpu %lld iter %lu", us, iterations - iter_full);
  while (nfill > 0)
    close(fillers[--nfill]);
}

static int max_open_fd(void) {
  int max = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL)
    if (atoi(e->d_name) > max)
      max = atoi(e->d_name);
  if (d != NULL)
    closedir(d);
  return max;
}

static void child_main(int ctl, int out) {
  child_out = out;
  ctl_fd = ctl;
  milter_server_opts o;
  milter_server_opts_init(&o);
  o.handle_signals = 0;
  o.log = child_log;
  if (uv_loop_init(&child_loop) != 0 ||
      milter_server_new(&child_srv, &child_loop, &desc, &o) != 0 ||
      milter_server_listen(child_srv, "inet:0@127.0.0.1") != 0)
    _exit(2);
  uv_prepare_init(&child_loop, &counter);
  uv_prepare_start(&counter, on_iter);
  uv_poll_init(&child_loop, &ctl_poll, ctl);
  uv_poll_start(&ctl_poll, UV_READABLE, on_ctl);
  child_say("port %d", milter_server_port(child_srv));
  /* Every fd below a low limit taken. */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = (rlim_t)max_open_fd() + 64;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    _exit(4);
  int fd;
  while (nfill < 4096 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    fillers[nfill++] = fd;
  if (errno != EMFILE)
    _exit(5);
  getrusage(RUSAGE_SELF, &ru_full);
  iter_full = iterations;
  child_say("full");
  uv_run(&child_loop, UV_RUN_DEFAULT);
  milter_server_free(child_srv);
  uv_run(&child_loop, UV_RUN_DEFAULT);
  _exit(uv_loop_close(&child_loop) == 0 ? 0 : 6);
}

/* Parent side: the child's lines. */
static int from_child = -1;
static char rbuf[1 << 16];
static size_t rlen;

/* Wait up to timeout_ms for the child's next line.  A log line is stored
 * (2), another goes to buf (1); 0: timeout; -1: EOF. */
static int child_any(char *buf, size_t n, int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  for (;;) {
    char *nl;
    while ((nl = memchr(rbuf, '\n', rlen)) != NULL) {
      *nl = '\0';
      unsigned long long ms;
      int off = 0, is_log = sscanf(rbuf, "log %llu %n", &ms, &off) == 1;
      if (is_log)
        add_line(ms, rbuf + off);
      else
        snprintf(buf, n, "%.399s", rbuf);
      size_t used = (size_t)(nl - rbuf) + 1;
      memmove(rbuf, nl + 1, rlen - used);
      rlen -= used;
      return is_log ? 2 : 1;
    }
    uint64_t now = mono_ms();
    if (now >= end)
      return 0;
    struct pollfd pfd = {.fd = from_child, .events = POLLIN};
    if (poll(&pfd, 1, (int)(end - now)) != 1)
      continue;
    assert_true(rlen < sizeof rbuf);
    ssize_t r = read(from_child, rbuf + rlen, sizeof rbuf - rlen);
    if (r <= 0)
      return -1;
    rlen += (size_t)r;
  }
}

/* The next line that is not a log line (log lines are stored). */
static int child_next(char *buf, size_t n, int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  int r;
  do {
    uint64_t now = mono_ms();
    r = child_any(buf, n, now < end ? (int)(end - now) : 0);
  } while (r == 2 && mono_ms() < end);
  return r == 2 ? 0 : r;
}

static int has_line(const char *pat) {
  int found = 0;
  pthread_mutex_lock(&log_mu);
  for (int i = 0; i < nlines && !found; i++)
    found = strstr(lines[i].text, pat) != NULL;
  pthread_mutex_unlock(&log_mu);
  return found;
}

/* Gather the child's log for timeout_ms, or until a line has pat. */
static int child_log_until(const char *pat, int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  char buf[400];
  while (!has_line(pat)) {
    uint64_t now = mono_ms();
    if (now >= end)
      return 0;
    int r = child_any(buf, sizeof buf, (int)(end - now));
    if (r == 1 || r < 0)
      fail_msg("child: unexpected '%s'", buf);
  }
  return 1;
}

typedef struct client_job {
  pthread_t th;
  char spec[64];
  int ok;
} client_job;

static void *client_thread(void *arg) {
  client_job *j = arg;
  milter_client *c = NULL;
  if (milter_client_new(&c, NULL) != 0)
    return NULL;
  milter_client_result r = {0};
  j->ok = milter_client_open(c, j->spec) == 0 &&
          milter_client_negotiate(c, NULL) == 0 &&
          milter_client_connect(c, "h", MILTER_FAMILY_INET, 1, "192.0.2.1",
                                &r) == 0 &&
          milter_client_helo(c, "helo", &r) == 0 &&
          milter_client_mail(c, "<a@x>", 0, NULL, &r) == 0 &&
          milter_client_rcpt(c, "<b@x>", 0, NULL, &r) == 0 &&
          milter_client_eom(c, &r) == 0 && r.reply == MILTER_REPLY_ACCEPT &&
          r.n_actions == 1 && milter_client_quit(c) == 0;
  if (!j->ok)
    fprintf(stderr, "client: %s\n", milter_client_errmsg(c));
  milter_client_result_free(&r);
  milter_client_free(c);
  return NULL;
}

static void test_emfile(void **state) {
  (void)state;
  nlines = 0;
  int ctl[2], out[2];
  assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
  assert_int_equal(pipe2(out, O_CLOEXEC), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(ctl[1]);
    close(out[0]);
    child_main(ctl[0], out[1]);
  }
  close(ctl[0]);
  close(out[1]);
  from_child = out[0];
  rlen = 0;
  char buf[400];
  int port = 0;
  assert_int_equal(child_next(buf, sizeof buf, 10000), 1);
  assert_int_equal(sscanf(buf, "port %d", &port), 1);
  assert_int_equal(child_next(buf, sizeof buf, 10000), 1);
  assert_string_equal(buf, "full");

  /* The clients connect: they wait in the backlog, the child cannot
   * accept them. */
  client_job jobs[NCLIENTS];
  for (int i = 0; i < NCLIENTS; i++) {
    snprintf(jobs[i].spec, sizeof jobs[i].spec, "inet:%d@127.0.0.1", port);
    jobs[i].ok = 0;
    assert_int_equal(pthread_create(&jobs[i].th, NULL, client_thread, &jobs[i]),
                     0);
  }
  /* Logged, then logged again a second later: the pause goes on. */
  if (!child_log_until("accept: Too many open files", 10000))
    dump_lines();
  assert_true(has_line("accept: Too many open files"));
  child_log_until("(never logged: read the log for 2.5 s)", 2500);
  unsigned fails = 0;
  int n =
      scan_lines("accept: Too many open files: accepting paused", "(", &fails);
  if (n < 2)
    dump_lines();
  assert_true(n >= 2);
  /* No spinning: 20+40+...+1000 ms pauses make about 6 failures in the
   * first second, 1 a second after; a busy loop would make thousands. */
  assert_true(fails >= (unsigned)n);
  assert_true(fails <= 6u + 2u * (unsigned)n);

  assert_int_equal(write(ctl[1], "f", 1), 1);
  assert_int_equal(child_next(buf, sizeof buf, 10000), 1);
  long long cpu_us = 0;
  unsigned long iter = 0;
  assert_int_equal(sscanf(buf, "cpu %lld iter %lu", &cpu_us, &iter), 2);
  dump_lines();
  fprintf(stderr, "paused for >= 2.5 s: %lld us CPU, %lu loop iterations\n",
          cpu_us, iter);
  /* Over 2.5 s and more: a spinning loop uses it all. */
  assert_true(cpu_us < 500000);
  assert_true(iter < 200);

  /* fds back: every waiting connection is served. */
  for (int i = 0; i < NCLIENTS; i++) {
    pthread_join(jobs[i].th, NULL);
    assert_true(jobs[i].ok);
  }
  if (!child_log_until("accept: accepting again", 10000))
    dump_lines();
  assert_true(has_line("accept: accepting again"));
  assert_int_equal(write(ctl[1], "q", 1), 1);
  while (child_next(buf, sizeof buf, 10000) == 1)
    ;
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  close(from_child);
  close(ctl[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_emfile),
      cmocka_unit_test(test_max_connections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
