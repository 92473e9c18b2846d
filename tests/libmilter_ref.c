/* libmilter_ref.c -- a reference filter on Debian's libmilter (sendmail's
 * own milter library), for tests/test_libmilter.c: our MTA-side client
 * against the library every MTA is tested with.  It logs what libmilter
 * decoded from our packets, one line per event, to LOGFILE.
 *
 *   libmilter_ref SOCKETSPEC MODE LOGFILE
 *   MODE  all     every event CONTINUE; at EOM every modification action
 *         nr      negotiate NR for MAIL/RCPT/headers/body, NO for UNKNOWN,
 *                 a symbol list for MAIL; accept at EOM
 *         replies REJECT <bad@...> at RCPT with a custom reply, TEMPFAIL
 *                 MAIL FROM <tempfail@...>, a 3-line reply for MAIL FROM
 *                 <ml@...>, DISCARD at EOH when Subject is "discard",
 *                 SKIP from the body
 * Not part of the library: test code, compiled against libmilter. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libmilter/mfapi.h>

static FILE *g_log;
static const char *mode;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void logln(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logln(const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&mu);
  va_start(ap, fmt);
  vfprintf(g_log, fmt, ap);
  va_end(ap);
  fputc('\n', g_log);
  fflush(g_log);
  pthread_mutex_unlock(&mu);
}

static const char *sym(SMFICTX *ctx, const char *name) {
  const char *v = smfi_getsymval(ctx, (char *)name);
  return v ? v : "(null)";
}

static int is(const char *m) { return strcmp(mode, m) == 0; }

static sfsistat x_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                            unsigned long f2, unsigned long f3,
                            unsigned long *pf0, unsigned long *pf1,
                            unsigned long *pf2, unsigned long *pf3) {
  logln("negotiate actions=0x%lx steps=0x%lx", f0, f1);
  (void)f2;
  (void)f3;
  *pf2 = 0;
  *pf3 = 0;
  if (is("nr")) {
    *pf0 = f0 & (SMFIF_ADDHDRS | SMFIF_SETSYMLIST);
    *pf1 = f1 & (SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_HDR | SMFIP_NR_BODY |
                 SMFIP_NOUNKNOWN | SMFIP_HDR_LEADSPC);
    smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_authen} {mail_mailer} i");
    return SMFIS_CONTINUE;
  }
  if (is("replies")) {
    *pf0 = f0;
    *pf1 = f1 & SMFIP_SKIP;
    return SMFIS_CONTINUE;
  }
  /* all: every action, a reply to every event, 1 MiB packets */
  *pf0 = f0;
  *pf1 = f1 & SMFIP_MDS_1M;
  return SMFIS_CONTINUE;
}

static sfsistat x_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa) {
  (void)sa;
  logln("connect host=%s j=%s daemon=%s", host, sym(ctx, "j"),
        sym(ctx, "{daemon_name}"));
  return SMFIS_CONTINUE;
}

/* The ESMTP arguments as " A B C" (empty when there are none). */
static void join_args(char *out, size_t size, char **argv) {
  out[0] = '\0';
  for (int i = 0; argv[i]; i++) {
    strncat(out, " ", size - strlen(out) - 1);
    strncat(out, argv[i], size - strlen(out) - 1);
  }
}

static sfsistat x_helo(SMFICTX *ctx, char *helo) {
  logln("helo %s", helo);
  (void)ctx;
  return SMFIS_CONTINUE;
}

static sfsistat x_envfrom(SMFICTX *ctx, char **argv) {
  char args[512];
  join_args(args, sizeof args, argv + 1);
  logln("mail %s args=%s auth=%s i=%s", argv[0], args, sym(ctx, "{auth_authen}"),
        sym(ctx, "i"));
  if (is("replies") && strcmp(argv[0], "<tempfail@example.org>") == 0)
    return SMFIS_TEMPFAIL;
  if (is("replies") && strcmp(argv[0], "<ml@example.org>") == 0) {
    smfi_setmlreply(ctx, "550", "5.7.0", "line one", "line two", "line three",
                    NULL);
    return SMFIS_REJECT;
  }
  return SMFIS_CONTINUE;
}

static sfsistat x_envrcpt(SMFICTX *ctx, char **argv) {
  char args[512];
  join_args(args, sizeof args, argv + 1);
  logln("rcpt %s args=%s", argv[0], args);
  if (is("replies") && strncmp(argv[0], "<bad@", 5) == 0) {
    smfi_setreply(ctx, "550", "5.1.1", "no such user");
    return SMFIS_REJECT;
  }
  return SMFIS_CONTINUE;
}

static sfsistat x_data(SMFICTX *ctx) {
  (void)ctx;
  logln("data");
  return SMFIS_CONTINUE;
}

static sfsistat x_header(SMFICTX *ctx, char *name, char *value) {
  (void)ctx;
  logln("header %s=[%s]", name, value);
  return SMFIS_CONTINUE;
}

static sfsistat x_eoh(SMFICTX *ctx) {
  (void)ctx;
  logln("eoh");
  return SMFIS_CONTINUE;
}

static size_t body_total;
static sfsistat x_body(SMFICTX *ctx, unsigned char *b, size_t len) {
  (void)ctx;
  (void)b;
  pthread_mutex_lock(&mu);
  body_total += len;
  pthread_mutex_unlock(&mu);
  logln("body %zu", len);
  if (is("replies"))
    return SMFIS_SKIP;
  return SMFIS_CONTINUE;
}

static sfsistat x_eom(SMFICTX *ctx) {
  pthread_mutex_lock(&mu);
  size_t total = body_total;
  body_total = 0;
  pthread_mutex_unlock(&mu);
  logln("eom body_total=%zu i=%s", total, sym(ctx, "i"));
  if (is("all")) {
    smfi_progress(ctx);
    smfi_addheader(ctx, "X-Added", "added value");
    smfi_insheader(ctx, 0, "X-Inserted", "at top");
    smfi_chgheader(ctx, "Subject", 1, "changed subject");
    smfi_chgheader(ctx, "X-Old", 1, NULL);
    smfi_addrcpt(ctx, "<new@example.net>");
    smfi_addrcpt_par(ctx, "<par@example.net>", "NOTIFY=NEVER");
    smfi_delrcpt(ctx, "<b@example.net>");
    smfi_chgfrom(ctx, "<bounce@example.org>", "SIZE=1000");
    static unsigned char big[70000];
    memset(big, 'x', sizeof big);
    smfi_replacebody(ctx, big, sizeof big);
    smfi_replacebody(ctx, (unsigned char *)"tail\r\n", 6);
    smfi_quarantine(ctx, "reference hold");
  }
  if (is("nr"))
    smfi_addheader(ctx, "X-NR", "yes");
  return SMFIS_ACCEPT;
}

static sfsistat x_abort(SMFICTX *ctx) {
  (void)ctx;
  logln("abort");
  return SMFIS_CONTINUE;
}

static sfsistat x_close(SMFICTX *ctx) {
  (void)ctx;
  logln("close");
  return SMFIS_CONTINUE;
}

static sfsistat x_unknown(SMFICTX *ctx, const char *cmd) {
  (void)ctx;
  logln("unknown %s", cmd);
  return SMFIS_CONTINUE;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: libmilter_ref SOCKETSPEC MODE LOGFILE\n");
    return 2;
  }
  mode = argv[2];
  if ((g_log = fopen(argv[3], "w")) == NULL)
    return 1;
  struct smfiDesc d;
  memset(&d, 0, sizeof d);
  d.xxfi_name = "libmilter_ref";
  d.xxfi_version = SMFI_VERSION;
  d.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY |
                 SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT |
                 SMFIF_QUARANTINE | SMFIF_CHGFROM | SMFIF_SETSYMLIST;
  d.xxfi_connect = x_connect;
  d.xxfi_helo = x_helo;
  d.xxfi_envfrom = x_envfrom;
  d.xxfi_envrcpt = x_envrcpt;
  d.xxfi_header = x_header;
  d.xxfi_eoh = x_eoh;
  d.xxfi_body = x_body;
  d.xxfi_eom = x_eom;
  d.xxfi_abort = x_abort;
  d.xxfi_close = x_close;
  d.xxfi_unknown = x_unknown;
  d.xxfi_data = x_data;
  d.xxfi_negotiate = x_negotiate;
  if (smfi_register(d) != MI_SUCCESS || smfi_setconn(argv[1]) != MI_SUCCESS ||
      smfi_opensocket(1) != MI_SUCCESS) {
    fprintf(stderr, "libmilter_ref: cannot set up %s\n", argv[1]);
    return 1;
  }
  logln("ready");
  return smfi_main() == MI_SUCCESS ? 0 : 1;
}
