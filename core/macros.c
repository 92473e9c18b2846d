/* macros.c -- macros received from the MTA, kept per stage.
 *
 * Each stage keeps one copy of its SMFIC_MACRO payload (name\0value\0...)
 * behind a 4-byte length, in one allocation: an idle connection holds its
 * CONNECT (and HELO) macros and nothing else for them; the later stages'
 * are in the message's block (ctx->msg), which the MAIL macros create.
 * Lifetimes follow the protocol: CONNECT/HELO macros last until QUIT or
 * QUIT_NC, the message's until ABORT or the end of the message. */
#include "session.h"

#include "mf_alloc.h"
#include <stdlib.h>
#include <string.h>

/* Where stage's copy is kept; NULL for a message stage without a block. */
static char **slot(milter_ctx *ctx, int stage) {
  if (stage < MAC_MAIL)
    return &ctx->macros[stage];
  return ctx->msg != NULL ? &ctx->msg->macros[stage - MAC_MAIL] : NULL;
}

void milter_macros_store(milter_ctx *ctx, int stage, const char *p,
                         size_t len) {
  char **s = slot(ctx, stage);
  if (s == NULL && len == 0)
    return; /* nothing kept, nothing to keep */
  if (s == NULL) {
    if (milter_msg_get(ctx) == NULL) {
      milter_session_oom(ctx, "macros");
      return;
    }
    s = slot(ctx, stage);
  }
  char *copy = NULL;
  if (len > 0) {
    uint32_t n = (uint32_t)len; /* len <= the packet limit */
    copy = xmalloc(sizeof n + len);
    if (copy == NULL) {
      /* A callback would read the connection without them (no queue id,
       * no {auth_authen}: an authenticated sender taken for a stranger). */
      milter_session_oom(ctx, "macros");
      return;
    }
    memcpy(copy, &n, sizeof n);
    memcpy(copy + sizeof n, p, len);
  }
  free(*s);
  *s = copy;
}

void milter_macros_clear(milter_ctx *ctx, int from_stage) {
  for (int i = from_stage; i < MAC_MAIL; i++) {
    free(ctx->macros[i]);
    ctx->macros[i] = NULL;
  }
  struct milter_msg *m = ctx->msg;
  if (m == NULL)
    return;
  for (int i = from_stage > MAC_MAIL ? from_stage : MAC_MAIL; i < MAC_COUNT;
       i++) {
    free(m->macros[i - MAC_MAIL]);
    m->macros[i - MAC_MAIL] = NULL;
  }
}

/* name without braces: "{i}" -> "i" (len 1). */
static const char *bare(const char *s, size_t *len) {
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
    *len = n - 2;
    return s + 1;
  }
  *len = n;
  return s;
}

/* Call fn(ud, bare name, its length, value) for each pair of one stage's
 * copy p, in order, until fn returns nonzero (returned).  A trailing name
 * without value ends the walk. */
typedef int (*pair_fn)(void *ud, const char *name, size_t len,
                       const char *value);

static inline __attribute__((always_inline)) int
walk(const char *p, pair_fn fn, void *ud) {
  uint32_t plen;
  memcpy(&plen, p, sizeof plen);
  p += sizeof plen;
  const char *end = p + plen;
  while (p < end) {
    const char *nend = memchr(p, '\0', (size_t)(end - p));
    if (nend == NULL || nend + 1 >= end)
      break; /* a name without value */
    const char *val = nend + 1;
    const char *vend = memchr(val, '\0', (size_t)(end - val));
    if (vend == NULL)
      break;
    size_t nlen = (size_t)(nend - p);
    const char *n = p;
    if (nlen >= 2 && n[0] == '{' && n[nlen - 1] == '}') {
      n++;
      nlen -= 2;
    }
    int rc = fn(ud, n, nlen, val);
    if (rc != 0)
      return rc;
    p = vend + 1;
  }
  return 0;
}

/* Each stage's copy, newest first: the message's, then HELO's and
 * CONNECT's. */
static inline __attribute__((always_inline)) int
walk_all(const milter_ctx *ctx, pair_fn fn, void *ud) {
  int rc;
  const struct milter_msg *m = ctx->msg;
  if (m != NULL)
    for (int st = MAC_COUNT - MAC_MAIL - 1; st >= 0; st--)
      if (m->macros[st] != NULL && (rc = walk(m->macros[st], fn, ud)) != 0)
        return rc;
  for (int st = MAC_MAIL - 1; st >= 0; st--)
    if (ctx->macros[st] != NULL && (rc = walk(ctx->macros[st], fn, ud)) != 0)
      return rc;
  return 0;
}

typedef struct lookup {
  const char *q;
  size_t qlen;
  const char *found;
} lookup;

static int lookup_pair(void *ud, const char *name, size_t len,
                       const char *value) {
  lookup *l = ud;
  if (len != l->qlen || name[0] != l->q[0] || memcmp(name, l->q, len) != 0)
    return 0;
  l->found = value;
  return 1;
}

const char *milter_ctx_macro(const milter_ctx *ctx, const char *name) {
  if (ctx == NULL || name == NULL || name[0] == '\0')
    return NULL;
  lookup l = {NULL, 0, NULL};
  l.q = bare(name, &l.qlen);
  if (l.qlen == 0)
    return NULL;
  walk_all(ctx, lookup_pair, &l);
  return l.found;
}

int milter_ctx_macros(const milter_ctx *ctx, milter_macro_fn fn, void *ud) {
  if (ctx == NULL || fn == NULL)
    return 0;
  return walk_all(ctx, fn, ud);
}
