/*
 * mfload.c -- a milter load generator on core's libuv client.
 *
 * One process, one loop, many concurrent MTA connections, each playing a
 * Postfix-like sequence: negotiate (v6, every action, every NO* and NR_*
 * step offered, 64K data size as Postfix), CONNECT and HELO with macros,
 * then several messages: MAIL, RCPT xN, DATA, headers, EOH, body, EOM
 * (the next MAIL follows without ABORT, as Postfix does), then QUIT and a
 * new connection.
 *
 *   mfload -s SPEC [-c CONNS] [-d SECONDS | -n MESSAGES] [-m MSGS_PER_CONN]
 *          [-b BYTES[:WEIGHT][,BYTES[:WEIGHT]...]] [-H HEADERS] [-r RCPTS]
 *          [-p MILTER_PID] [--spool-dir DIR] [--chaos FRACTION] [--seed N]
 *          [--idle N [--smaps]] [--offer-steps HEX] [--auth USER] [--json]
 *
 * Reports transactions/s, p50/p99/max latency (MAIL sent to EOM reply
 * received), errors, its own CPU use (percent of one core: near 100 the
 * load generator is the limit; and CPU seconds per 1000 transactions,
 * driver_cpu_s_per_1000), and -- with -p -- the milter's
 * peak RSS (VmRSS sampled every 50 ms, and VmHWM), its thread count and CPU
 * seconds per 1000 transactions (utime+stime from /proc/PID/stat).
 *
 * -n counts transactions answered (EOM, or a decision before it); -b with
 * several sizes picks one per message at random, by weight (e.g.
 * -b 20000:3,300000:1: a quarter of the bodies are 300000 bytes).
 *
 * --chaos F cuts a fraction F of the connections at a random point: after
 * negotiation, at CONNECT, HELO, MAIL, one of the RCPTs, DATA, one of the
 * headers, EOH, part-way through the body, or EOM, in a random message of
 * the connection; either right after the command went out (the milter may
 * still owe its reply) or right after its reply arrived.  A cut closes the
 * socket without QUIT, as an MTA process that dies or times out does.  Cut
 * connections are replaced; a transaction cut before its answer is not
 * counted as done (-n goes on until that many were answered), and the
 * cancelled reply is not an error.  Cuts are reported by point and kind.
 * With -p the milter's open fds and VmHWM, and with --spool-dir the files
 * in that directory and the milter's fds open on it (unlinked spool files
 * show there), are reported at the start, at 10% of the run and at the
 * end (after waiting up to 10 s for the milter to close what it should).
 *
 * --idle N opens N connections that negotiate and get CONNECT and HELO
 * (written even when the filter negotiated their replies away)
 * answered, then hold them for 2 s and report the milter's RSS growth per
 * connection, with its VmHWM, RssAnon and RssFile (-p); --smaps adds the
 * resident memory per mapped file from /proc/PID/smaps at that moment
 * (summed over each file's mappings; anonymous ones as [heap], [anon]...),
 * largest first.  In a load run the peaks of RssAnon and RssFile are
 * reported next to the peak VmRSS.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include <mailfilter/milter_aclient.h>

#define MAX_BODIES 8
/* Failed connections are replaced until this many errors, then the run
 * stops (a milter that died would otherwise be retried for ever). */
#define MAX_ERRORS 1000

typedef struct cfg {
  const char *spec;
  int conns;
  double seconds;
  long messages; /* 0: run for seconds */
  int per_conn;
  size_t body; /* the largest of bodies[] */
  size_t bodies[MAX_BODIES];
  unsigned weights[MAX_BODIES], weight_sum;
  int nbodies;
  const char *body_arg;
  int headers, rcpts;
  int pid;
  int idle;
  int smaps; /* --smaps: resident memory per mapping at the idle point */
  uint32_t steps;
  const char *auth; /* {auth_authen} at MAIL, or NULL */
  int json;
  double chaos; /* fraction of connections cut */
  uint64_t seed;
  char *spool_dir; /* resolved path, or NULL */
} cfg;

/* Where a chaos connection is cut, in the order of the session.  The
 * points from MAIL on are in a message; RCPT and HEADER name one of
 * several, BODY a part of the body. */
enum {
  CUT_NEGO,
  CUT_CONNECT,
  CUT_HELO,
  CUT_MAIL,
  CUT_RCPT,
  CUT_DATA,
  CUT_HEADER,
  CUT_EOH,
  CUT_BODY,
  CUT_EOM,
  CUT_POINTS,
  CUT_END = CUT_POINTS, /* the planned point never came (decided early) */
  CUT_NAMES
};
static const char *const cut_names[CUT_NAMES] = {
    "nego",   "connect", "helo", "mail", "rcpt", "data",
    "header", "eoh",     "body", "eom",  "end"};

/* How: the reply was still owed, it had arrived, or none was due (NR_*
 * step, switched-off event, or between commands). */
enum { KIND_OWED, KIND_AFTER, KIND_NOREPLY, KINDS };
static const char *const kind_names[KINDS] = {"reply_owed", "after_reply",
                                              "no_reply_due"};

/* The milter's resources at one moment (-p, --spool-dir). */
typedef struct snap {
  long tx, cuts; /* transactions done, connections cut by then */
  long fds, spool_files, spool_fds, hwm_kb, rss_kb;
} snap;

typedef struct stats {
  long done, errors, rejected, early;
  double *lat; /* seconds, one per transaction */
  size_t nlat, caplat;
  long rss_max_kb, threads_max, spool_fds_max;
  long anon_max_kb, file_max_kb; /* peaks of RssAnon, RssFile */
  uint64_t bytes_out; /* written to the milter by finished connections */
  uint32_t protocol;  /* what the first connection negotiated */
  int have_protocol;
  long chaos_conns, cuts, cut_tx;
  long cut_at[CUT_NAMES], cut_kind[KINDS];
  long no_sever; /* idle cuts that could not find the socket (sent QUIT) */
  snap at_start, at_tenth, at_end;
  int have_tenth, decile;
  double settle_s; /* waited at the end for fds and spool to go back */
} stats;

typedef struct conn {
  milter_aclient *ac;
  int step, msg, rcpt, hdr;
  uint8_t waiting; /* the command whose reply step() gets next */
  uint64_t t0;
  size_t body_len; /* this message's */
  int in_tx;       /* a message was started and is not answered yet */
  /* chaos: the planned cut (msg 0 for points before MAIL) */
  int chaos, cut_msg, cut_point, cut_sub, cut_after;
  int cut_pending; /* cut when the awaited reply arrives */
  int cut;         /* cut: ignore the cancelled reply */
} conn;

static cfg C;
static stats S;
static uv_loop_t *loop;
static uint64_t t_start, t_stop;
static long started, opening;
static long to_open; /* load mode: connections not yet opened */
static int stopping;
static char *body_buf;
static char (*hdr_names)[32];
static char (*hdr_values)[96];
static int live, idle_ready;

static void start_conn(conn *c);
static void pump(void);
static void step(milter_aclient *ac, int err, milter_client_result *r,
                 void *arg);

/* ---- /proc sampling ------------------------------------------------------ */

static long proc_status(int pid, const char *key) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  long v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = strtol(line + kl + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

/* The memory lines of /proc/PID/status (KiB; -1 where missing). */
typedef struct pmem {
  long rss, hwm, anon, file, threads;
} pmem;

static void proc_mem(int pid, pmem *m) {
  static const struct {
    const char *key;
    size_t off;
  } keys[] = {{"VmRSS:", offsetof(pmem, rss)},
              {"VmHWM:", offsetof(pmem, hwm)},
              {"RssAnon:", offsetof(pmem, anon)},
              {"RssFile:", offsetof(pmem, file)},
              {"Threads:", offsetof(pmem, threads)}};
  char path[64], line[256];
  m->rss = m->hwm = m->anon = m->file = m->threads = -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return;
  while (fgets(line, sizeof line, f))
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
      if (strncmp(line, keys[i].key, strlen(keys[i].key)) == 0)
        *(long *)(void *)((char *)m + keys[i].off) =
            strtol(line + strlen(keys[i].key), NULL, 10);
  fclose(f);
}

/* Resident memory of one mapped file (or [heap], [anon], ...), summed over
 * its mappings. */
typedef struct smap {
  char path[240];
  long rss_kb, anon_kb;
} smap;

static int smap_cmp(const void *a, const void *b) {
  const smap *x = a, *y = b;
  return x->rss_kb < y->rss_kb ? 1 : x->rss_kb > y->rss_kb ? -1 : 0;
}

/* /proc/PID/smaps by mapped file, largest Rss first; *out is malloc'd.
 * The number of entries, or -1. */
static long smaps_read(int pid, smap **out) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/smaps", pid);
  FILE *f = fopen(path, "r");
  *out = NULL;
  if (f == NULL)
    return -1;
  smap *v = NULL;
  long n = 0, cap = 0, cur = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    int pos = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &pos) == 2 &&
        pos > 0) { /* a mapping: address perms offset dev inode [path] */
      char *name = line + pos;
      name[strcspn(name, "\n")] = '\0';
      if (*name == '\0')
        name = "[anon]";
      for (cur = 0; cur < n && strcmp(v[cur].path, name) != 0; cur++)
        ;
      if (cur == n) {
        if (n == cap) {
          cap = cap ? cap * 2 : 64;
          smap *p = realloc(v, (size_t)cap * sizeof *p);
          if (p == NULL)
            break;
          v = p;
        }
        memset(&v[n], 0, sizeof v[n]);
        snprintf(v[n].path, sizeof v[n].path, "%s", name);
        n++;
      }
    } else if (cur >= 0 && strncmp(line, "Rss:", 4) == 0) {
      v[cur].rss_kb += strtol(line + 4, NULL, 10);
    } else if (cur >= 0 && strncmp(line, "Anonymous:", 10) == 0) {
      v[cur].anon_kb += strtol(line + 10, NULL, 10);
    }
  }
  fclose(f);
  if (v != NULL)
    qsort(v, (size_t)n, sizeof *v, smap_cmp);
  *out = v;
  return n;
}

/* The smaps summary: a JSON array, or lines of text. */
static void smaps_print(int pid) {
  smap *v;
  long n = smaps_read(pid, &v);
  if (C.json)
    printf(",\"smaps\":[");
  else
    printf("resident memory by mapping (KiB, anonymous part):\n");
  for (long i = 0; i < n; i++) {
    if (v[i].rss_kb == 0)
      continue;
    if (C.json) {
      printf("%s{\"path\":\"", i ? "," : "");
      for (const char *q = v[i].path; *q; q++) /* paths need no more */
        printf(*q == '"' || *q == '\\' ? "\\%c" : "%c", *q);
      printf("\",\"rss_kb\":%ld,\"anon_kb\":%ld}", v[i].rss_kb, v[i].anon_kb);
    } else {
      printf("  %8ld %8ld  %s\n", v[i].rss_kb, v[i].anon_kb, v[i].path);
    }
  }
  if (C.json)
    printf("]");
  free(v);
}

/* mfload's own CPU seconds (user+system). */
static double self_cpu(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime+stime of pid in seconds, or -1. */
static double proc_cpu(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* comm may hold spaces */
  if (p == NULL)
    return -1;
  unsigned long ut = 0, st = 0;
  /* fields after comm: state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
             &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The milter's open fds; *on_spool (if not NULL) gets those open on a
 * file under C.spool_dir ("DIR/#123 (deleted)" for an O_TMPFILE). */
static long proc_fds(int pid, long *on_spool) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR *d = opendir(path);
  if (on_spool != NULL)
    *on_spool = -1;
  if (d == NULL)
    return -1;
  size_t dl = C.spool_dir ? strlen(C.spool_dir) : 0;
  long n = 0, sp = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    n++;
    if (on_spool == NULL || C.spool_dir == NULL)
      continue;
    char fp[64 + sizeof e->d_name], target[PATH_MAX];
    snprintf(fp, sizeof fp, "%s/%s", path, e->d_name);
    ssize_t k = readlink(fp, target, sizeof target - 1);
    if (k > (ssize_t)dl && strncmp(target, C.spool_dir, dl) == 0 &&
        target[dl] == '/')
      sp++;
  }
  closedir(d);
  if (on_spool != NULL && C.spool_dir != NULL)
    *on_spool = sp;
  return n;
}

/* Entries in dir (not . and ..), or -1. */
static long dir_files(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return -1;
  long n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  closedir(d);
  return n;
}

static void snap_take(snap *s) {
  s->tx = S.done;
  s->cuts = S.cuts;
  s->fds = s->spool_fds = s->spool_files = s->hwm_kb = s->rss_kb = -1;
  if (C.pid > 0) {
    s->fds = proc_fds(C.pid, &s->spool_fds);
    s->hwm_kb = proc_status(C.pid, "VmHWM");
    s->rss_kb = proc_status(C.pid, "VmRSS");
  }
  if (C.spool_dir != NULL)
    s->spool_files = dir_files(C.spool_dir);
}

static void snap_print(FILE *f, const char *what, const snap *s) {
  fprintf(f,
          "%s: %ld transactions, %ld cuts; milter fds %ld (%ld on the spool "
          "dir), spool files %ld, VmHWM %ld KiB, VmRSS %ld KiB\n",
          what, s->tx, s->cuts, s->fds, s->spool_fds, s->spool_files, s->hwm_kb,
          s->rss_kb);
  fflush(f);
}

/* Progress of the run, 0..1. */
static double progress(void);

/* A snapshot at 10% (kept for the report), a progress line on stderr at
 * every tenth. */
static void checkpoint(void) {
  int dec = (int)(progress() * 10.0);
  if (dec <= S.decile || dec >= 10)
    return;
  S.decile = dec;
  snap s;
  snap_take(&s);
  if (!S.have_tenth) {
    S.at_tenth = s;
    S.have_tenth = 1;
  }
  char what[32];
  snprintf(what, sizeof what, "mfload %d0%%", dec);
  snap_print(stderr, what, &s);
}

static int sample_n;
static void sample(uv_timer_t *t) {
  if (t != NULL && !C.idle)
    checkpoint();
  if (C.pid <= 0)
    return;
  pmem m;
  proc_mem(C.pid, &m);
  if (m.rss > S.rss_max_kb)
    S.rss_max_kb = m.rss;
  if (m.threads > S.threads_max)
    S.threads_max = m.threads;
  if (m.anon > S.anon_max_kb)
    S.anon_max_kb = m.anon;
  if (m.file > S.file_max_kb)
    S.file_max_kb = m.file;
  if (C.spool_dir != NULL && sample_n++ % 4 == 0) {
    long sp;
    proc_fds(C.pid, &sp);
    if (sp > S.spool_fds_max)
      S.spool_fds_max = sp;
  }
}

/* ---- randomness (xorshift64*, --seed) ------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return x * 2685821657736338717ULL;
}

/* Uniform in [0, n) (n > 0). */
static long rnd_below(long n) {
  return (long)(rnd() % (uint64_t)n);
}

static double rnd_unit(void) {
  return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* ---- the message --------------------------------------------------------- */

static void build_message(void) {
  body_buf = malloc(C.body + 1);
  if (body_buf == NULL) {
    fprintf(stderr, "mfload: out of memory\n");
    exit(1);
  }
  static const char line[] =
      "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
      "t\r\n";
  size_t ll = sizeof line - 1;
  for (size_t i = 0; i < C.body; i++)
    body_buf[i] = line[i % ll];
  if (C.body >= 2) {
    body_buf[C.body - 2] = '\r';
    body_buf[C.body - 1] = '\n';
  }
  int n = C.headers;
  hdr_names = calloc((size_t)n + 1, sizeof *hdr_names);
  hdr_values = calloc((size_t)n + 1, sizeof *hdr_values);
  static const char *fixed[][2] = {
      {"Received", "from client.example (client.example [192.0.2.10])\n\tby "
                   "mx.example (Postfix) with ESMTP id 4ABC123"},
      {"From", "Alice Example <alice@example.org>"},
      {"To", "Bob Example <bob@example.net>"},
      {"Subject", "benchmark message"},
      {"Date", "Fri, 27 Nov 2026 09:00:00 +0000"},
      {"Message-ID", "<bench.1@example.org>"},
      {"MIME-Version", "1.0"},
      {"Content-Type", "text/plain; charset=utf-8"},
  };
  for (int i = 0; i < n; i++) {
    if (i < 8) {
      snprintf(hdr_names[i], sizeof hdr_names[i], "%s", fixed[i][0]);
      snprintf(hdr_values[i], sizeof hdr_values[i], "%s", fixed[i][1]);
    } else {
      snprintf(hdr_names[i], sizeof hdr_names[i], "X-Bench-%d", i);
      snprintf(hdr_values[i], sizeof hdr_values[i],
               "value %d of a header line of ordinary length", i);
    }
  }
}

/* ---- one connection ------------------------------------------------------ */

static void lat_add(double s) {
  if (S.nlat == S.caplat) {
    S.caplat = S.caplat ? S.caplat * 2 : 65536;
    double *p = realloc(S.lat, S.caplat * sizeof *p);
    if (p == NULL)
      return;
    S.lat = p;
  }
  S.lat[S.nlat++] = s;
}

/* Messages started and not cut: answered, or on their way. */
static long counted(void) {
  return started - S.cut_tx;
}

static int want_more(void) {
  if (stopping)
    return 0;
  if (C.messages > 0)
    return counted() < C.messages;
  return uv_now(loop) < t_stop;
}

static double progress(void) {
  if (C.messages > 0)
    return (double)S.done / (double)C.messages;
  return (double)(uv_now(loop) - t_start) / (C.seconds * 1000.0);
}

static void tx_done(conn *c) {
  S.done++;
  c->in_tx = 0;
  lat_add((double)(uv_hrtime() - c->t0) / 1e9);
  if (C.messages > 0)
    checkpoint();
}

static size_t pick_body(void) {
  if (C.nbodies == 1)
    return C.bodies[0];
  long r = rnd_below(C.weight_sum);
  int i = 0;
  while (r >= (long)C.weights[i])
    r -= C.weights[i++];
  return C.bodies[i];
}

/* Plan where a chaos connection is cut. */
static void plan_cut(conn *c) {
  if (C.chaos <= 0 || rnd_unit() >= C.chaos)
    return;
  S.chaos_conns++;
  c->chaos = 1;
  /* End of headers and end of message weigh more: they are where a milter
   * usually still owes a reply (the other steps are mostly negotiated
   * no-reply), and where its decision is written. */
  static const int weight[CUT_POINTS] = {1, 1, 1, 1, 1, 1, 1, 2, 1, 3};
  long r = rnd_below(13);
  c->cut_point = 0;
  while (r >= weight[c->cut_point])
    r -= weight[c->cut_point++];
  c->cut_msg = c->cut_point >= CUT_MAIL ? 1 + (int)rnd_below(C.per_conn) : 0;
  c->cut_sub = c->cut_point == CUT_RCPT ? (int)rnd_below(C.rcpts)
               : c->cut_point == CUT_HEADER && C.headers > 0
                   ? (int)rnd_below(C.headers)
                   : 0;
  c->cut_after = (int)rnd_below(2);
}

/* Has the session reached the planned cut with the command at point
 * (sub: the index of the recipient or header just sent)? */
static int cut_due(const conn *c, int point, int sub) {
  if (!c->chaos || c->cut || c->cut_pending)
    return 0;
  int msg = point >= CUT_MAIL ? c->msg : 0;
  if (msg != c->cut_msg)
    return msg > c->cut_msg;
  if (point != c->cut_point)
    return point > c->cut_point;
  return sub >= c->cut_sub;
}

/* Find the aclient's socket: its stream handle carries the aclient as data
 * (as its timer does; core/aclient.c). */
typedef struct found {
  const milter_aclient *ac;
  uv_handle_t *h;
} found;

static void find_stream(uv_handle_t *h, void *arg) {
  found *f = arg;
  if (h->data == f->ac && (h->type == UV_NAMED_PIPE || h->type == UV_TCP) &&
      !uv_is_closing(h))
    f->h = h;
}

/* Shut the socket down both ways, so that the milter sees the end of the
 * stream and milter_aclient_close() cannot send QUIT (its write fails
 * with EPIPE, no signal).  0, or -1 if not found. */
static int sever(milter_aclient *ac) {
  found f = {ac, NULL};
  uv_walk(loop, find_stream, &f);
  uv_os_fd_t fd;
  if (f.h == NULL || uv_fileno(f.h, &fd) != 0)
    return -1;
  return shutdown(fd, SHUT_RDWR) == 0 || errno == ENOTCONN ? 0 : -1;
}

static void closed(void *arg) {
  conn *c = arg;
  live--;
  free(c);
  if (!C.idle && want_more()) {
    to_open++; /* a new connection, through the open throttle */
    pump();
  }
}

/* Cut the connection now, as an MTA process that dies: no QUIT. */
static void cut_conn(conn *c, int point, int kind) {
  c->cut = 1;
  S.cuts++;
  S.cut_at[point]++;
  S.cut_kind[kind]++;
  if (c->in_tx)
    S.cut_tx++; /* not answered: it does not count, another replaces it */
  if (kind != KIND_OWED && sever(c->ac) < 0)
    S.no_sever++; /* close() sends QUIT: a clean end, not a cut */
  S.bytes_out += milter_aclient_bytes_out(c->ac);
  /* With a reply owed, close() sends no QUIT and cancels the reply: step()
   * runs with MILTER_E_CLOSED and returns at once (c->cut). */
  milter_aclient_close(c->ac, closed, c);
}

static void finish_conn(conn *c, int failed) {
  if (!failed && c->chaos && !c->cut) {
    cut_conn(c, c->cut_pending ? c->cut_point : CUT_END,
             c->cut_pending ? KIND_AFTER : KIND_NOREPLY);
    return;
  }
  S.bytes_out += milter_aclient_bytes_out(c->ac);
  if (failed) {
    if (++S.errors >= MAX_ERRORS)
      stopping = 1; /* the milter is gone or broken: do not spin */
    if (S.errors <= 5)
      fprintf(stderr, "mfload: %s\n", milter_aclient_errmsg(c->ac));
  }
  milter_aclient_close(c->ac, closed, c);
}

/* The sequence.  Each case issues one event; rc 1 = wait for its reply. */
static void step(milter_aclient *ac, int err, milter_client_result *r,
                 void *arg) {
  (void)ac;
  conn *c = arg;
  if (c->cut)
    return; /* the reply cancelled by our own cut */
  if (err < 0) {
    if (c->step == 0)
      opening--;
    finish_conn(c, 1);
    return;
  }
  if (r != NULL && r->status == MILTER_CLIENT_REPLIED &&
      r->reply != MILTER_REPLY_CONTINUE && c->waiting != MILTER_CMD_EOB) {
    uint8_t rp = r->reply;
    int refused = rp == MILTER_REPLY_REJECT || rp == MILTER_REPLY_TEMPFAIL ||
                  rp == MILTER_REPLY_REPLYCODE;
    if (c->waiting == MILTER_CMD_RCPT && refused) {
      S.rejected++; /* that recipient only */
    } else if (c->waiting == MILTER_CMD_BODY && rp == MILTER_REPLY_SKIP) {
      /* no more body: on to EOM */
    } else if (c->waiting == MILTER_CMD_CONNECT ||
               c->waiting == MILTER_CMD_HELO) {
      if (refused) { /* the whole session is refused */
        S.rejected++;
        finish_conn(c, 0);
        return;
      }
    } else {
      /* decided before EOM (e.g. ACCEPT at end of headers): like Postfix,
       * send nothing more for this message */
      S.early++;
      if (refused)
        S.rejected++;
      tx_done(c);
      c->step = 2;
    }
  }
  for (;;) {
    int rc = 0, point = -1, sub = 0;
    uint8_t cmd = 0;
    if (c->cut_pending && c->step != 9) { /* the awaited reply arrived */
      cut_conn(c, c->cut_point, KIND_AFTER);
      return;
    }
    switch (c->step) {
    case 0: { /* negotiated */
      opening--;
      if (!C.idle)
        pump();
      if (cut_due(c, CUT_NEGO, 0)) { /* OPTNEG answered */
        cut_conn(c, CUT_NEGO, KIND_AFTER);
        return;
      }
      if (!S.have_protocol) {
        milter_client_nego n;
        milter_aclient_nego(c->ac, &n);
        S.protocol = n.protocol;
        S.have_protocol = 1;
      }
      const char *m[] = {"j",     "mx.example", "{daemon_name}",
                         "smtpd", "v",          "Postfix 3.7.11"};
      rc = milter_aclient_macro(c->ac, MILTER_CMD_CONNECT, 3, m);
      cmd = MILTER_CMD_CONNECT;
      if (rc == 0)
        rc = milter_aclient_connect(c->ac, "client.example", MILTER_FAMILY_INET,
                                    40000, "192.0.2.10", step, c);
      point = CUT_CONNECT;
      c->step = 1;
      break;
    }
    case 1:
      cmd = MILTER_CMD_HELO;
      rc = milter_aclient_helo(c->ac, "client.example", step, c);
      point = CUT_HELO;
      c->step = 2;
      break;
    case 2:         /* a new message, or QUIT */
      if (C.idle) { /* held: connect and helo answered */
        /* ...or, negotiated away (NR_CONN, NR_HELO), still buffered in
         * the client: an MTA writes them at once, and the filter's cost
         * of a connection includes them. */
        if (milter_aclient_flush(c->ac) != 0) {
          S.errors++;
          return;
        }
        idle_ready++;
        return;
      }
      if (c->msg >= C.per_conn || !want_more()) {
        finish_conn(c, 0);
        return;
      }
      started++;
      c->msg++;
      c->rcpt = c->hdr = 0;
      c->in_tx = 1;
      c->body_len = pick_body();
      c->t0 = uv_hrtime();
      {
        char qid[32];
        snprintf(qid, sizeof qid, "4B%08lX", started);
        const char *m[] = {"i",   qid, "{mail_mailer}", "smtp", "{auth_authen}",
                           C.auth};
        rc = milter_aclient_macro(c->ac, MILTER_CMD_MAIL, C.auth ? 3 : 2, m);
      }
      cmd = MILTER_CMD_MAIL;
      if (rc == 0) {
        const char *args[] = {"SIZE=12345", "BODY=8BITMIME"};
        rc =
            milter_aclient_mail(c->ac, "<alice@example.org>", 2, args, step, c);
      }
      point = CUT_MAIL;
      c->step = 3;
      break;
    case 3:
      if (c->rcpt >= C.rcpts) {
        c->step = 4;
        continue;
      }
      {
        char rcpt[64];
        sub = c->rcpt;
        snprintf(rcpt, sizeof rcpt, "<rcpt%d@example.net>", c->rcpt++);
        cmd = MILTER_CMD_RCPT;
        rc = milter_aclient_rcpt(c->ac, rcpt, 0, NULL, step, c);
        point = CUT_RCPT;
      }
      break;
    case 4:
      cmd = MILTER_CMD_DATA;
      rc = milter_aclient_data(c->ac, step, c);
      point = CUT_DATA;
      c->step = 5;
      break;
    case 5:
      if (c->hdr >= C.headers) {
        c->step = 6;
        continue;
      }
      cmd = MILTER_CMD_HEADER;
      rc = milter_aclient_header(c->ac, hdr_names[c->hdr], hdr_values[c->hdr],
                                 step, c);
      point = CUT_HEADER;
      sub = c->hdr++;
      break;
    case 6:
      cmd = MILTER_CMD_EOH;
      rc = milter_aclient_eoh(c->ac, step, c);
      point = CUT_EOH;
      c->step = 7;
      break;
    case 7: {
      size_t len = c->body_len;
      point = CUT_BODY;
      if (len > 1 && cut_due(c, CUT_BODY, 0))
        len = 1 + (size_t)rnd_below((long)len - 1); /* part of it, then cut */
      cmd = MILTER_CMD_BODY;
      rc = milter_aclient_body(c->ac, body_buf, len, step, c);
      c->step = 8;
      break;
    }
    case 8: {
      const char *m[] = {"i", "4BEOM"};
      rc = milter_aclient_macro(c->ac, MILTER_CMD_EOB, 1, m);
      cmd = MILTER_CMD_EOB;
      if (rc == 0)
        rc = milter_aclient_eom(c->ac, step, c);
      point = CUT_EOM;
      c->step = 9;
      break;
    }
    case 9: /* EOM answered */
      tx_done(c);
      c->step = 2;
      continue;
    }
    if (rc < 0) {
      finish_conn(c, 1);
      return;
    }
    if (point >= 0 && cut_due(c, point, sub)) {
      if (rc == 1 && c->cut_after) {
        c->cut_point = point; /* as it happens (a later one if passed) */
        c->cut_pending = 1;
      } else if (rc == 1) {
        cut_conn(c, point, KIND_OWED);
        return;
      } else { /* nothing awaited: send what is queued, then cut */
        milter_aclient_flush(c->ac);
        cut_conn(c, point, KIND_NOREPLY);
        return;
      }
    }
    if (rc == 1) {
      c->waiting = cmd;
      return; /* step() runs again with the reply */
    }
    /* An early final reply (accept/reject at MAIL/RCPT/...) would end the
     * message; the compared filters all answer CONTINUE until EOM. */
  }
}

/* Open at most 128 connections at a time (a unix socket's backlog refuses
 * the rest with EAGAIN). */
static void pump(void) {
  while (to_open > 0 && opening < 128) {
    conn *c = malloc(sizeof *c);
    if (c == NULL)
      return;
    to_open--;
    start_conn(c);
  }
}

static void start_conn(conn *c) {
  memset(c, 0, sizeof *c);
  if (!C.idle)
    plan_cut(c);
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol = C.steps;
  o.command_timeout_ms = 60000;
  o.eom_timeout_ms = 120000;
  if (milter_aclient_new(&c->ac, loop, &o) < 0 ||
      milter_aclient_open(c->ac, C.spec, step, c) < 0) {
    fprintf(stderr, "mfload: cannot open %s: %s\n", C.spec,
            c->ac ? milter_aclient_errmsg(c->ac) : "out of memory");
    if (++S.errors >= MAX_ERRORS)
      stopping = 1;
    if (c->ac != NULL) {
      live++;
      milter_aclient_close(c->ac, closed, c);
    } else {
      free(c);
    }
    return;
  }
  live++;
  opening++;
}

/* ---- main ---------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double p) {
  if (S.nlat == 0)
    return 0;
  size_t i = (size_t)(p * (double)(S.nlat - 1) + 0.5);
  return S.lat[i];
}

static void usage(void) {
  fprintf(stderr,
          "usage: mfload -s SPEC [-c CONNS] [-d SECONDS | -n MESSAGES] "
          "[-m MSGS_PER_CONN]\n"
          "              [-b BYTES[:WEIGHT][,BYTES[:WEIGHT]...]] [-H HEADERS] "
          "[-r RCPTS]\n"
          "              [-p MILTER_PID] [--spool-dir DIR] "
          "[--chaos FRACTION] [--seed N]\n"
          "              [--idle N [--smaps]] [--offer-steps HEX] "
          "[--auth USER] [--json]\n");
}

/* -b 10240 or -b 20000:3,300000:1.  0 or -1. */
static int parse_bodies(const char *arg) {
  C.nbodies = 0;
  C.weight_sum = 0;
  C.body = 0;
  C.body_arg = arg;
  const char *p = arg;
  while (*p != '\0') {
    if (C.nbodies == MAX_BODIES)
      return -1;
    char *end;
    errno = 0;
    unsigned long long b = strtoull(p, &end, 10);
    if (end == p || errno != 0 || b > (1ULL << 30))
      return -1;
    unsigned long w = 1;
    p = end;
    if (*p == ':') {
      w = strtoul(p + 1, &end, 10);
      if (end == p + 1 || w == 0 || w > 1000000)
        return -1;
      p = end;
    }
    if (*p == ',')
      p++;
    else if (*p != '\0')
      return -1;
    C.bodies[C.nbodies] = (size_t)b;
    C.weights[C.nbodies++] = (unsigned)w;
    C.weight_sum += (unsigned)w;
    if (b > C.body)
      C.body = (size_t)b;
  }
  return C.nbodies > 0 ? 0 : -1;
}

/* After the run: wait (up to 10 s) for the milter to close what the last
 * connections held, then take the final snapshot. */
static void settle(void) {
  uint64_t t0 = uv_hrtime();
  for (;;) {
    snap_take(&S.at_end);
    const snap *a = &S.at_start, *e = &S.at_end;
    int back = e->fds <= a->fds && e->spool_fds <= a->spool_fds &&
               e->spool_files <= a->spool_files;
    S.settle_s = (double)(uv_hrtime() - t0) / 1e9;
    if (back || S.settle_s >= 10.0 || (C.pid <= 0 && C.spool_dir == NULL))
      return;
    usleep(20000);
  }
}

static void snap_json(const char *name, const snap *s, int comma) {
  printf("\"%s\":{\"transactions\":%ld,\"fds\":%ld,\"spool_fds\":%ld,"
         "\"spool_files\":%ld,\"hwm_kb\":%ld,\"rss_kb\":%ld}%s",
         name, s->tx, s->fds, s->spool_fds, s->spool_files, s->hwm_kb,
         s->rss_kb, comma ? "," : "");
}

/* The chaos and resource part of the report. */
static void report_chaos(void) {
  if (C.json) {
    printf(",\"chaos\":%.4f,\"seed\":%llu,\"chaos_connections\":%ld,"
           "\"cuts\":%ld,\"cut_transactions\":%ld,\"cuts_quit\":%ld,"
           "\"cut_at\":{",
           C.chaos, (unsigned long long)C.seed, S.chaos_conns, S.cuts, S.cut_tx,
           S.no_sever);
    for (int i = 0; i < CUT_NAMES; i++)
      printf("\"%s\":%ld%s", cut_names[i], S.cut_at[i],
             i + 1 < CUT_NAMES ? "," : "");
    printf("},\"cut_kind\":{");
    for (int i = 0; i < KINDS; i++)
      printf("\"%s\":%ld%s", kind_names[i], S.cut_kind[i],
             i + 1 < KINDS ? "," : "");
    printf("},\"spool_fds_max\":%ld,\"settle_s\":%.2f,", S.spool_fds_max,
           S.settle_s);
    snap_json("at_start", &S.at_start, 1);
    snap_json("at_tenth", &S.at_tenth, 1);
    snap_json("at_end", &S.at_end, 0);
    return;
  }
  if (C.chaos > 0) {
    printf("chaos %.4f (seed %llu): %ld connections cut (%ld transactions "
           "unanswered, not counted)",
           C.chaos, (unsigned long long)C.seed, S.cuts, S.cut_tx);
    printf("; at");
    for (int i = 0; i < CUT_NAMES; i++)
      printf(" %s %ld", cut_names[i], S.cut_at[i]);
    printf("; ");
    for (int i = 0; i < KINDS; i++)
      printf("%s %ld%s", kind_names[i], S.cut_kind[i],
             i + 1 < KINDS ? ", " : "");
    if (S.no_sever)
      printf("; %ld ended with QUIT (socket not found)", S.no_sever);
    printf("\n");
  }
  if (C.pid > 0 || C.spool_dir != NULL) {
    snap_print(stdout, "start", &S.at_start);
    if (S.have_tenth)
      snap_print(stdout, "10%", &S.at_tenth);
    snap_print(stdout, "end", &S.at_end);
    printf("end snapshot after waiting %.2f s; at most %ld spool fds open at "
           "once\n",
           S.settle_s, S.spool_fds_max);
  }
}

static uv_timer_t sampler, ticker;
static pmem idle_base;
static int idle_phase;

/* Idle mode: wait for every connection to be held, then measure. */
static void idle_tick(uv_timer_t *t) {
  if (idle_phase == 0 && idle_ready + (long)S.errors >= C.idle) {
    idle_phase = 1;
    uv_timer_start(t, idle_tick, 2000, 0);
    return;
  }
  if (idle_phase == 1) {
    sample(&sampler);
    pmem m = {-1, -1, -1, -1, -1}, b = idle_base;
    if (C.pid > 0)
      proc_mem(C.pid, &m);
    double per = idle_ready > 0 && m.rss > 0
                     ? (double)(m.rss - b.rss) * 1024.0 / idle_ready
                     : 0;
    if (C.json) {
      printf("{\"mode\":\"idle\",\"connections\":%d,\"errors\":%ld,"
             "\"rss_base_kb\":%ld,\"rss_kb\":%ld,\"bytes_per_conn\":%.0f,"
             "\"threads\":%ld,\"hwm_kb\":%ld,\"rss_anon_kb\":%ld,"
             "\"rss_file_kb\":%ld,\"base_anon_kb\":%ld,\"base_file_kb\":%ld",
             idle_ready, S.errors, b.rss, m.rss, per, m.threads, m.hwm, m.anon,
             m.file, b.anon, b.file);
    } else {
      printf("idle: %d connections held (%ld errors); milter RSS %ld KiB "
             "(base %ld KiB): %.0f bytes per connection; %ld threads; VmHWM "
             "%ld KiB, RssAnon %ld KiB (base %ld), RssFile %ld KiB (base "
             "%ld)\n",
             idle_ready, S.errors, m.rss, b.rss, per, m.threads, m.hwm, m.anon,
             b.anon, m.file, b.file);
    }
    if (C.smaps && C.pid > 0)
      smaps_print(C.pid);
    if (C.json)
      printf("}\n");
    fflush(stdout);
    idle_phase = 2;
    stopping = 1;
    uv_timer_stop(&sampler);
    uv_close((uv_handle_t *)&sampler, NULL);
    uv_close((uv_handle_t *)t, NULL);
    /* closing is left to process exit: 10 000 QUITs add nothing here */
    uv_stop(loop);
    return;
  }
  uv_timer_start(t, idle_tick, 100, 0);
}

/* Open the connections of idle mode a batch at a time. */
static long idle_opened;
static void idle_open(uv_timer_t *t) {
  while (idle_opened < C.idle && opening < 200) {
    conn *c = malloc(sizeof *c);
    if (c == NULL)
      break;
    start_conn(c);
    idle_opened++;
  }
  if (idle_opened < C.idle)
    uv_timer_start(t, idle_open, 5, 0);
  else
    uv_timer_start(t, idle_tick, 100, 0);
}

int main(int argc, char **argv) {
  C.conns = 10;
  C.seconds = 10;
  C.per_conn = 5;
  parse_bodies("10240");
  C.seed = 1;
  C.headers = 20;
  C.rcpts = 2;
  C.steps = MILTER_P_ALL_STEPS; /* what Postfix 3.x offers; 64K data size */
  static const struct option lo[] = {
      {"idle", required_argument, NULL, 'I'},
      {"smaps", no_argument, NULL, 'M'},
      {"offer-steps", required_argument, NULL, 'S'},
      {"json", no_argument, NULL, 'J'},
      {"auth", required_argument, NULL, 'A'},
      {"chaos", required_argument, NULL, 'X'},
      {"seed", required_argument, NULL, 'Z'},
      {"spool-dir", required_argument, NULL, 'D'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "s:c:d:n:m:b:H:r:p:h", lo, NULL)) !=
         -1) {
    switch (ch) {
    case 's':
      C.spec = optarg;
      break;
    case 'c':
      C.conns = atoi(optarg);
      break;
    case 'd':
      C.seconds = atof(optarg);
      break;
    case 'n':
      C.messages = atol(optarg);
      break;
    case 'm':
      C.per_conn = atoi(optarg);
      break;
    case 'b':
      if (parse_bodies(optarg) < 0) {
        fprintf(stderr, "mfload: bad -b %s\n", optarg);
        return 64;
      }
      break;
    case 'H':
      C.headers = atoi(optarg);
      break;
    case 'r':
      C.rcpts = atoi(optarg);
      break;
    case 'p':
      C.pid = atoi(optarg);
      break;
    case 'I':
      C.idle = atoi(optarg);
      break;
    case 'M':
      C.smaps = 1;
      break;
    case 'S':
      C.steps = (uint32_t)strtoul(optarg, NULL, 16);
      break;
    case 'J':
      C.json = 1;
      break;
    case 'A':
      C.auth = optarg;
      break;
    case 'X':
      C.chaos = atof(optarg);
      break;
    case 'Z':
      C.seed = strtoull(optarg, NULL, 10);
      break;
    case 'D':
      C.spool_dir = realpath(optarg, NULL);
      if (C.spool_dir == NULL) {
        fprintf(stderr, "mfload: %s: %s\n", optarg, strerror(errno));
        return 64;
      }
      break;
    default:
      usage();
      return ch == 'h' ? 0 : 64;
    }
  }
  if (C.spec == NULL || C.conns < 1 || C.per_conn < 1 || C.rcpts < 1 ||
      C.headers < 0 || C.seconds <= 0 || C.idle < 0 || C.chaos < 0 ||
      C.chaos > 1) {
    usage();
    return 64;
  }
  build_message();
  rng_state = C.seed * 0x9E3779B97F4A7C15ULL + 1;
  /* A cut shuts our end down before milter_aclient_close() tries its
   * QUIT: that write fails with EPIPE and raises no SIGPIPE (the client
   * library's promise, milter_aclient.h SIGNALS): SIGPIPE stays at its
   * default here, so a broken promise kills mfload. */
  loop = uv_default_loop();
  uv_timer_init(loop, &sampler);
  uv_timer_init(loop, &ticker);
  sample(NULL);
  S.rss_max_kb = 0;
  S.threads_max = 0;
  S.anon_max_kb = S.file_max_kb = 0;
  S.spool_fds_max = 0;
  snap_take(&S.at_start);
  uv_timer_start(&sampler, sample, 50, 50);
  double cpu0 = C.pid > 0 ? proc_cpu(C.pid) : -1;
  t_start = uv_now(loop);
  t_stop = t_start + (uint64_t)(C.seconds * 1000);
  uint64_t h0 = uv_hrtime();
  double gen0 = self_cpu();
  if (C.idle) {
    idle_base = (pmem){-1, -1, -1, -1, -1};
    if (C.pid > 0)
      proc_mem(C.pid, &idle_base);
    idle_open(&ticker);
    uv_run(loop, UV_RUN_DEFAULT);
    return S.errors ? 1 : 0;
  }
  to_open = C.conns;
  pump();
  /* Runs until every connection has finished its last message and closed. */
  while (live > 0 || to_open > 0) {
    pump();
    uv_run(loop, UV_RUN_ONCE);
  }
  double el = (double)(uv_hrtime() - h0) / 1e9;
  /* the load generator's own CPU: near one core, it is the limit */
  double gen_s = self_cpu() - gen0;
  double gen_pct = el > 0 ? gen_s * 100.0 / el : 0;
  double gen_k = S.done > 0 ? gen_s * 1000.0 / (double)S.done : 0;
  sample(NULL);
  uv_close((uv_handle_t *)&sampler, NULL);
  uv_close((uv_handle_t *)&ticker, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  double cpu1 = C.pid > 0 ? proc_cpu(C.pid) : -1;
  settle();
  qsort(S.lat, S.nlat, sizeof *S.lat, cmp_d);
  double tps = el > 0 ? (double)S.done / el : 0;
  double cpu_k = S.done > 0 && cpu0 >= 0 && cpu1 >= 0
                     ? (cpu1 - cpu0) * 1000.0 / (double)S.done
                     : -1;
  long hwm = C.pid > 0 ? proc_status(C.pid, "VmHWM") : -1;
  /* bytes per transaction include the connection's share of OPTNEG,
   * CONNECT, HELO and QUIT */
  double bpt = S.done > 0 ? (double)S.bytes_out / (double)S.done : 0;
  if (C.json) {
    printf("{\"mode\":\"load\",\"connections\":%d,\"body\":%zu,"
           "\"body_mix\":\"%s\",\"headers\":%d,\"rcpts\":%d,\"per_conn\":%d,"
           "\"transactions\":%ld,"
           "\"errors\":%ld,\"rejected\":%ld,\"decided_early\":%ld,\"seconds\":%"
           ".3f,\"tps\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"rss_max_kb\":%ld,\"rss_hwm_kb\":%ld,\"threads_max\":%ld,"
           "\"cpu_s_per_1000\":%.4f,\"bytes_to_milter_per_tx\":%.0f,"
           "\"protocol\":\"0x%x\",\"rss_anon_max_kb\":%ld,"
           "\"rss_file_max_kb\":%ld,\"driver_cpu_pct\":%.0f,"
           "\"driver_cpu_s_per_1000\":%.4f",
           C.conns, C.body, C.body_arg, C.headers, C.rcpts, C.per_conn, S.done,
           S.errors, S.rejected, S.early, el, tps, pct(0.5) * 1e3,
           pct(0.99) * 1e3, S.nlat ? S.lat[S.nlat - 1] * 1e3 : 0.0,
           S.rss_max_kb, hwm, S.threads_max, cpu_k, bpt, (unsigned)S.protocol,
           S.anon_max_kb, S.file_max_kb, gen_pct, gen_k);
    report_chaos();
    printf("}\n");
  } else {
    printf("%ld transactions in %.2f s over %d connections: %.1f tx/s; "
           "latency p50 %.2f ms p99 %.2f ms max %.2f ms; %ld errors, %ld "
           "rejected, %ld decided before EOM; milter: peak RSS %ld KiB (HWM "
           "%ld), %ld threads, "
           "%.3f CPU s per 1000 tx; %.0f bytes to the milter per tx; "
           "negotiated steps 0x%x; mfload used %.0f %% of a core (%.3f CPU s "
           "per 1000 tx)\n",
           S.done, el, C.conns, tps, pct(0.5) * 1e3, pct(0.99) * 1e3,
           S.nlat ? S.lat[S.nlat - 1] * 1e3 : 0.0, S.errors, S.rejected,
           S.early, S.rss_max_kb, hwm, S.threads_max, cpu_k, bpt,
           (unsigned)S.protocol, gen_pct, gen_k);
    report_chaos();
  }
  free(S.lat);
  free(C.spool_dir);
  free(body_buf);
  free(hdr_names);
  free(hdr_values);
  uv_loop_close(loop);
  return S.errors ? 1 : 0;
}
