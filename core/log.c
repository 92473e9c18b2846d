/* log.c -- the logging callback plumbing and the default stderr logger. */
#include "session.h"

#include <stdio.h>
#include <unistd.h>

void milter_log_stderr(void *userdata, milter_log_level level,
                       const char *msg) {
  static const char *const names[] = {"error", "warning", "info", "debug"};
  (void)userdata;
  unsigned l = (unsigned)level < 4 ? (unsigned)level : 3;
  fprintf(stderr, "mailfilter[%ld]: %s: %s\n", (long)getpid(), names[l], msg);
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
