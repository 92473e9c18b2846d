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
 *          [-b BODY_BYTES] [-H HEADERS] [-r RCPTS] [-p MILTER_PID]
 *          [--idle N] [--offer-steps HEX] [--auth USER] [--json]
 *
 * Reports transactions/s, p50/p99/max latency (MAIL sent to EOM reply
 * received), errors, and -- with -p -- the milter process's peak RSS (VmRSS
 * sampled every 50 ms, and VmHWM), its thread count and CPU seconds per
 * 1000 transactions (utime+stime from /proc/PID/stat).
 *
 * --idle N opens N connections that negotiate and get CONNECT and HELO
 * answered, then hold them for 2 s and report the milter's RSS growth per
 * connection.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include <mailfilter/milter_aclient.h>

typedef struct cfg {
  const char *spec;
  int conns;
  double seconds;
  long messages; /* 0: run for seconds */
  int per_conn;
  size_t body;
  int headers, rcpts;
  int pid;
  int idle;
  uint32_t steps;
  const char *auth; /* {auth_authen} at MAIL, or NULL */
  int json;
} cfg;

typedef struct stats {
  long done, errors, rejected, early;
  double *lat; /* seconds, one per transaction */
  size_t nlat, caplat;
  long rss_max_kb, threads_max;
  uint64_t bytes_out; /* written to the milter by finished connections */
  uint32_t protocol;  /* what the first connection negotiated */
  int have_protocol;
} stats;

typedef struct conn {
  milter_aclient *ac;
  int step, msg, rcpt, hdr;
  uint8_t waiting; /* the command whose reply step() gets next */
  uint64_t t0;
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

static void sample(uv_timer_t *t) {
  (void)t;
  if (C.pid <= 0)
    return;
  long rss = proc_status(C.pid, "VmRSS");
  long th = proc_status(C.pid, "Threads");
  if (rss > S.rss_max_kb)
    S.rss_max_kb = rss;
  if (th > S.threads_max)
    S.threads_max = th;
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

static int want_more(void) {
  if (stopping)
    return 0;
  if (C.messages > 0)
    return started < C.messages;
  return uv_now(loop) < t_stop;
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

static void finish_conn(conn *c, int failed) {
  S.bytes_out += milter_aclient_bytes_out(c->ac);
  if (failed) {
    S.errors++;
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
      S.done++;
      S.early++;
      if (refused)
        S.rejected++;
      lat_add((double)(uv_hrtime() - c->t0) / 1e9);
      c->step = 2;
    }
  }
  for (;;) {
    int rc = 0;
    uint8_t cmd = 0;
    switch (c->step) {
    case 0: { /* negotiated */
      opening--;
      if (!C.idle)
        pump();
      if (!S.have_protocol) {
        milter_client_nego n;
        milter_aclient_nego(c->ac, &n);
        S.protocol = n.protocol;
        S.have_protocol = 1;
      }
      const char *m[] = {"j", "mx.example", "{daemon_name}", "smtpd", "v",
                         "Postfix 3.7.11"};
      rc = milter_aclient_macro(c->ac, MILTER_CMD_CONNECT, 3, m);
      cmd = MILTER_CMD_CONNECT;
      if (rc == 0)
        rc = milter_aclient_connect(c->ac, "client.example",
                                    MILTER_FAMILY_INET, 40000, "192.0.2.10",
                                    step, c);
      c->step = 1;
      break;
    }
    case 1:
      cmd = MILTER_CMD_HELO;
      rc = milter_aclient_helo(c->ac, "client.example", step, c);
      c->step = 2;
      break;
    case 2: /* a new message, or QUIT */
      if (C.idle) { /* held: connect and helo answered */
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
      c->t0 = uv_hrtime();
      {
        char qid[32];
        snprintf(qid, sizeof qid, "4B%08lX", started);
        const char *m[] = {"i", qid, "{mail_mailer}", "smtp", "{auth_authen}",
                           C.auth};
        rc = milter_aclient_macro(c->ac, MILTER_CMD_MAIL, C.auth ? 3 : 2, m);
      }
      cmd = MILTER_CMD_MAIL;
      if (rc == 0) {
        const char *args[] = {"SIZE=12345", "BODY=8BITMIME"};
        rc = milter_aclient_mail(c->ac, "<alice@example.org>", 2, args, step,
                                 c);
      }
      c->step = 3;
      break;
    case 3:
      if (c->rcpt >= C.rcpts) {
        c->step = 4;
        continue;
      }
      {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "<rcpt%d@example.net>", c->rcpt++);
        cmd = MILTER_CMD_RCPT;
        rc = milter_aclient_rcpt(c->ac, rcpt, 0, NULL, step, c);
      }
      break;
    case 4:
      cmd = MILTER_CMD_DATA;
      rc = milter_aclient_data(c->ac, step, c);
      c->step = 5;
      break;
    case 5:
      if (c->hdr >= C.headers) {
        c->step = 6;
        continue;
      }
      cmd = MILTER_CMD_HEADER;
      rc = milter_aclient_header(c->ac, hdr_names[c->hdr],
                                 hdr_values[c->hdr], step, c);
      c->hdr++;
      break;
    case 6:
      cmd = MILTER_CMD_EOH;
      rc = milter_aclient_eoh(c->ac, step, c);
      c->step = 7;
      break;
    case 7:
      cmd = MILTER_CMD_BODY;
      rc = milter_aclient_body(c->ac, body_buf, C.body, step, c);
      c->step = 8;
      break;
    case 8: {
      const char *m[] = {"i", "4BEOM"};
      rc = milter_aclient_macro(c->ac, MILTER_CMD_EOB, 1, m);
      cmd = MILTER_CMD_EOB;
      if (rc == 0)
        rc = milter_aclient_eom(c->ac, step, c);
      c->step = 9;
      break;
    }
    case 9: /* EOM answered */
      S.done++;
      lat_add((double)(uv_hrtime() - c->t0) / 1e9);
      c->step = 2;
      continue;
    }
    if (rc < 0) {
      finish_conn(c, 1);
      return;
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
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.protocol = C.steps;
  o.command_timeout_ms = 60000;
  o.eom_timeout_ms = 120000;
  if (milter_aclient_new(&c->ac, loop, &o) < 0 ||
      milter_aclient_open(c->ac, C.spec, step, c) < 0) {
    fprintf(stderr, "mfload: cannot open %s: %s\n", C.spec,
            c->ac ? milter_aclient_errmsg(c->ac) : "out of memory");
    S.errors++;
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
          "              [-b BODY_BYTES] [-H HEADERS] [-r RCPTS] "
          "[-p MILTER_PID] [--idle N]\n"
          "              [--offer-steps HEX] [--auth USER] [--json]\n");
}

static uv_timer_t sampler, ticker;
static long idle_base_kb;
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
    long rss = C.pid > 0 ? proc_status(C.pid, "VmRSS") : -1;
    long th = C.pid > 0 ? proc_status(C.pid, "Threads") : -1;
    double per = idle_ready > 0 && rss > 0
                     ? (double)(rss - idle_base_kb) * 1024.0 / idle_ready
                     : 0;
    if (C.json)
      printf("{\"mode\":\"idle\",\"connections\":%d,\"errors\":%ld,"
             "\"rss_base_kb\":%ld,\"rss_kb\":%ld,\"bytes_per_conn\":%.0f,"
             "\"threads\":%ld}\n",
             idle_ready, S.errors, idle_base_kb, rss, per, th);
    else
      printf("idle: %d connections held (%ld errors); milter RSS %ld KiB "
             "(base %ld KiB): %.0f bytes per connection; %ld threads\n",
             idle_ready, S.errors, rss, idle_base_kb, per, th);
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
  C.body = 10240;
  C.headers = 20;
  C.rcpts = 2;
  C.steps = MILTER_P_ALL_STEPS; /* what Postfix 3.x offers; 64K data size */
  static const struct option lo[] = {{"idle", required_argument, NULL, 'I'},
                                     {"offer-steps", required_argument, NULL,
                                      'S'},
                                     {"json", no_argument, NULL, 'J'},
                                     {"auth", required_argument, NULL, 'A'},
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
      C.body = (size_t)strtoul(optarg, NULL, 10);
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
    case 'S':
      C.steps = (uint32_t)strtoul(optarg, NULL, 16);
      break;
    case 'J':
      C.json = 1;
      break;
    case 'A':
      C.auth = optarg;
      break;
    default:
      usage();
      return ch == 'h' ? 0 : 64;
    }
  }
  if (C.spec == NULL || C.conns < 1 || C.per_conn < 1 || C.rcpts < 1 ||
      C.headers < 0 || C.seconds <= 0 || C.idle < 0) {
    usage();
    return 64;
  }
  build_message();
  loop = uv_default_loop();
  uv_timer_init(loop, &sampler);
  uv_timer_init(loop, &ticker);
  sample(&sampler);
  S.rss_max_kb = 0;
  S.threads_max = 0;
  uv_timer_start(&sampler, sample, 50, 50);
  double cpu0 = C.pid > 0 ? proc_cpu(C.pid) : -1;
  t_start = uv_now(loop);
  t_stop = t_start + (uint64_t)(C.seconds * 1000);
  uint64_t h0 = uv_hrtime();
  if (C.idle) {
    idle_base_kb = C.pid > 0 ? proc_status(C.pid, "VmRSS") : -1;
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
  sample(&sampler);
  uv_close((uv_handle_t *)&sampler, NULL);
  uv_close((uv_handle_t *)&ticker, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  double cpu1 = C.pid > 0 ? proc_cpu(C.pid) : -1;
  qsort(S.lat, S.nlat, sizeof *S.lat, cmp_d);
  double tps = el > 0 ? (double)S.done / el : 0;
  double cpu_k = S.done > 0 && cpu0 >= 0 && cpu1 >= 0
                     ? (cpu1 - cpu0) * 1000.0 / (double)S.done
                     : -1;
  long hwm = C.pid > 0 ? proc_status(C.pid, "VmHWM") : -1;
  /* bytes per transaction include the connection's share of OPTNEG,
   * CONNECT, HELO and QUIT */
  double bpt = S.done > 0 ? (double)S.bytes_out / (double)S.done : 0;
  if (C.json)
    printf("{\"mode\":\"load\",\"connections\":%d,\"body\":%zu,"
           "\"headers\":%d,\"rcpts\":%d,\"per_conn\":%d,\"transactions\":%ld,"
           "\"errors\":%ld,\"rejected\":%ld,\"decided_early\":%ld,\"seconds\":%.3f,\"tps\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"rss_max_kb\":%ld,\"rss_hwm_kb\":%ld,\"threads_max\":%ld,"
           "\"cpu_s_per_1000\":%.4f,\"bytes_to_milter_per_tx\":%.0f,"
           "\"protocol\":\"0x%x\"}\n",
           C.conns, C.body, C.headers, C.rcpts, C.per_conn, S.done, S.errors,
           S.rejected, S.early, el, tps, pct(0.5) * 1e3, pct(0.99) * 1e3,
           S.nlat ? S.lat[S.nlat - 1] * 1e3 : 0.0, S.rss_max_kb, hwm,
           S.threads_max, cpu_k, bpt, (unsigned)S.protocol);
  else
    printf("%ld transactions in %.2f s over %d connections: %.1f tx/s; "
           "latency p50 %.2f ms p99 %.2f ms max %.2f ms; %ld errors, %ld "
           "rejected, %ld decided before EOM; milter: peak RSS %ld KiB (HWM %ld), %ld threads, "
           "%.3f CPU s per 1000 tx; %.0f bytes to the milter per tx; "
           "negotiated steps 0x%x\n",
           S.done, el, C.conns, tps, pct(0.5) * 1e3, pct(0.99) * 1e3,
           S.nlat ? S.lat[S.nlat - 1] * 1e3 : 0.0, S.errors, S.rejected,
           S.early, S.rss_max_kb, hwm, S.threads_max, cpu_k, bpt, (unsigned)S.protocol);
  free(S.lat);
  free(body_buf);
  free(hdr_names);
  free(hdr_values);
  uv_loop_close(loop);
  return S.errors ? 1 : 0;
}
