/* fuzz_session.c -- fuzz input -> decoder -> session, with a filter that
 * exercises every action, pending replies and custom replies.
 *
 * The first byte picks the chunk size the input is fed in (1..64 bytes, 0 =
 * all at once); the second seeds the statuses the callbacks return. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/session.h"

static uint32_t seed;

static milter_status pick(void) {
  static const milter_status st[] = {
      MILTER_CONTINUE, MILTER_CONTINUE, MILTER_CONTINUE, MILTER_REJECT,
      MILTER_TEMPFAIL, MILTER_ACCEPT,   MILTER_DISCARD,  MILTER_NOREPLY,
      MILTER_SKIP,     MILTER_PENDING};
  seed = seed * 1103515245u + 12345u;
  return st[(seed >> 16) % (sizeof st / sizeof st[0])];
}

static milter_status f_connect(milter_ctx *c, const milter_connect_info *ci) {
  (void)ci;
  milter_ctx_setreply(c, "550", "5.7.1", "no\nreally");
  return pick();
}
static milter_status f_str(milter_ctx *c, const char *s) {
  (void)c;
  (void)strlen(s);
  (void)milter_ctx_macro(c, "i");
  return pick();
}
static milter_status f_args(milter_ctx *c, size_t argc,
                            const char *const *argv) {
  for (size_t i = 0; i < argc; i++)
    (void)strlen(argv[i]);
  (void)milter_ctx_macro(c, "{auth_authen}");
  return pick();
}
static milter_status f_none(milter_ctx *c) {
  (void)c;
  return pick();
}
static milter_status f_header(milter_ctx *c, const char *n, const char *v) {
  (void)c;
  (void)strlen(n);
  (void)strlen(v);
  return pick();
}
static milter_status f_body(milter_ctx *c, const uint8_t *p, size_t n) {
  (void)c;
  if (n > 0)
    (void)p[n - 1];
  return pick();
}
static milter_status f_eom(milter_ctx *c) {
  milter_ctx_addheader(c, "X-Fuzz", "1");
  milter_ctx_insheader(c, 0, "X-First", "0");
  milter_ctx_chgheader(c, "Subject", 1, NULL);
  milter_ctx_addrcpt(c, "<new@x>", NULL);
  milter_ctx_addrcpt(c, "<par@x>", "NOTIFY=NEVER");
  milter_ctx_delrcpt(c, "<old@x>");
  milter_ctx_chgfrom(c, "<from@x>", NULL);
  milter_ctx_quarantine(c, "fuzz");
  milter_ctx_replacebody(c, "body\r\n", 6);
  milter_ctx_progress(c);
  return pick();
}
static void f_void(milter_ctx *c) {
  (void)milter_ctx_macro(c, "j");
}

static const milter_filter_desc desc = {
    .name = "fuzz",
    .cb = {.connect = f_connect,
           .helo = f_str,
           .envfrom = f_args,
           .envrcpt = f_args,
           .data = f_none,
           .unknown = f_str,
           .header = f_header,
           .eoh = f_none,
           .body = f_body,
           .eom = f_eom,
           .abort = f_void,
           .close = f_void},
    .actions_wanted = MILTER_ACT_ALL,
    .protocol_wanted = MILTER_P_NR_HDR | MILTER_P_HDR_LEADSPC,
    .max_data_size = MILTER_DATA_1M,
    .macros = {"j", NULL, "{auth_authen}", NULL, NULL, "i", NULL},
};

static void quiet(void *ud, milter_log_level l, const char *m) {
  (void)ud;
  (void)l;
  (void)m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t chunk = data[0] % 65;
  seed = data[1];
  data += 2;
  size -= 2;
  milter_session_env env = {
      .log = quiet, .log_level = MILTER_LOG_DEBUG, .hard_cap = 4u << 20};
  /* Half the inputs run with body streaming (MILTER_DESC_STREAM_BODY). */
  static milter_filter_desc desc_stream;
  if (desc_stream.name == NULL) {
    desc_stream = desc;
    desc_stream.flags = MILTER_DESC_STREAM_BODY;
  }
  milter_ctx ctx;
  milter_session_init(&ctx, (seed & 0x80) ? &desc_stream : &desc, &env, NULL,
                      "fuzz");
  size_t off = 0;
  int r = 0;
  while (off < size && r >= 0) {
    size_t n = chunk == 0 || size - off < chunk ? size - off : chunk;
    r = milter_session_feed(&ctx, data + off, n);
    off += n;
    /* Answer pending replies at once, as a worker would, and resume. */
    for (int guard = 0; r == MILTER_SESSION_PAUSED && guard < 10000; guard++) {
      milter_ctx_addheader(&ctx, "X-Pending", "1");
      milter_ctx_reply(&ctx,
                       pick() == MILTER_REJECT ? MILTER_REJECT : MILTER_ACCEPT);
      r = milter_session_resume(&ctx);
    }
    ctx.out.len = 0;
  }
  /* The MTA vanishes, possibly with a reply pending. */
  if (milter_session_gone(&ctx) == 1) {
    milter_ctx_reply(&ctx, MILTER_CONTINUE);
    milter_session_gone(&ctx);
  }
  milter_session_free(&ctx);
  return 0;
}
