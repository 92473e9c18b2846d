/* log.c -- the logging callback plumbing and the loggers: stderr (with the
 * journal's <N> prefixes when stderr is the journal) and syslog(3). */
#include "log.h"
#include "session.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <mailfilter/milter_log.h>
#include <mailfilter/version.h>

const char *milter_version(void) {
  return MF_VERSION_STRING;
}

int milter_log_priority(milter_log_level level) {
  switch (level) {
  case MILTER_LOG_ERROR:
    return LOG_ERR;
  case MILTER_LOG_WARNING:
    return LOG_WARNING;
  case MILTER_LOG_INFO:
    return LOG_INFO;
  default:
    return LOG_DEBUG;
  }
}

int milter_log_level_parse(const char *name) {
  static const struct {
    const char *name;
    milter_log_level level;
  } names[] = {{"error", MILTER_LOG_ERROR},     {"err", MILTER_LOG_ERROR},
               {"warning", MILTER_LOG_WARNING}, {"warn", MILTER_LOG_WARNING},
               {"info", MILTER_LOG_INFO},       {"debug", MILTER_LOG_DEBUG}};
  for (size_t i = 0; name != NULL && i < sizeof names / sizeof names[0]; i++)
    if (strcasecmp(name, names[i].name) == 0)
      return (int)names[i].level;
  return -1;
}

int milter_log_facility_parse(const char *name) {
  static const struct {
    const char *name;
    int facility;
  } names[] = {
      {"mail", LOG_MAIL},     {"daemon", LOG_DAEMON}, {"user", LOG_USER},
      {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
      {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
      {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7}};
  if (name == NULL)
    return -1;
  if (strncasecmp(name, "log_", 4) == 0)
    name += 4;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcasecmp(name, names[i].name) == 0)
      return names[i].facility;
  return -1;
}

int milter_log_journal_stream_matches(const char *env, int fd) {
  if (env == NULL || env[0] == '\0')
    return 0;
  char *end;
  unsigned long long dev = strtoull(env, &end, 10);
  if (end == env || *end != ':')
    return 0;
  const char *p = end + 1;
  unsigned long long ino = strtoull(p, &end, 10);
  if (end == p || *end != '\0')
    return 0;
  struct stat st;
  if (fstat(fd, &st) != 0)
    return 0;
  return (unsigned long long)st.st_dev == dev &&
         (unsigned long long)st.st_ino == ino;
}

static int stderr_journal;
static pthread_once_t stderr_journal_once = PTHREAD_ONCE_INIT;

static void stderr_journal_init(void) {
  stderr_journal = milter_log_journal_stream_matches(getenv("JOURNAL_STREAM"),
                                                     STDERR_FILENO);
}

int milter_log_stderr_is_journal(void) {
  pthread_once(&stderr_journal_once, stderr_journal_init);
  return stderr_journal;
}

int milter_log_format_stderr(char *buf, size_t size, int journal,
                             milter_log_level level, const char *msg) {
  static const char *const names[] = {"error", "warning", "info", "debug"};
  if (journal)
    return snprintf(buf, size, "<%d>%s\n", milter_log_priority(level), msg);
  unsigned l = (unsigned)level < 4 ? (unsigned)level : 3;
  return snprintf(buf, size, "mailfilter[%ld]: %s: %s\n", (long)getpid(),
                  names[l], msg);
}

void milter_log_stderr(void *userdata, milter_log_level level,
                       const char *msg) {
  (void)userdata;
  /* One fputs of the whole line: lines of several threads do not mix. */
  char line[1200];
  milter_log_format_stderr(line, sizeof line, milter_log_stderr_is_journal(),
                           level, msg);
  fputs(line, stderr);
}

void milter_log_syslog(void *userdata, milter_log_level level,
                       const char *msg) {
  (void)userdata;
  syslog(milter_log_priority(level), "%s", msg);
}

void milter_log_use_syslog(milter_server_opts *opts, const char *ident,
                           int facility) {
  openlog(ident, LOG_PID | LOG_NDELAY, facility);
  if (opts != NULL)
    opts->log = milter_log_syslog;
}

void milter_logv(const milter_session_env *env, milter_log_level level,
                 const char *fmt, va_list ap) {
  if (env == NULL || level > env->log_level)
    return;
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  milter_log_fn fn = env->log ? env->log : milter_log_stderr;
  fn(env->log_data, level, buf);
}

void milter_logf(const milter_session_env *env, milter_log_level level,
                 const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  milter_logv(env, level, fmt, ap);
  va_end(ap);
}

void milter_ctx_log(const milter_ctx *ctx, milter_log_level level,
                    const char *fmt, ...) {
  if (ctx == NULL || ctx->env == NULL || level > ctx->env->log_level)
    return;
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *name = ctx->desc && ctx->desc->name ? ctx->desc->name : "";
  milter_logf(ctx->env, level, "%s%s%s: %s", name, name[0] ? ": " : "",
              ctx->peer, msg);
}
