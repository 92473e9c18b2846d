/* testtrx.c -- drive the transaction engine (mf_engine.h) the way mf_filter
 * does, with no socket, and apply the resulting actions as Postfix or
 * Sendmail would (testtrx.h, MTA MODEL). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <mailfilter/header.h>
#include <mailfilter/mf_engine.h>
#include <mailfilter/milter_proto.h>
#include <mailfilter/testtrx.h>

/* Separators of mf_testtrx_set_sendmail_templates()'s list. */
#define TMPL_SEP " ,\t"
/* The H lines of a sendmail.cf built from Sendmail's m4 (cf/m4/proto.m4),
 * in order. */
static const char STOCK_TEMPLATES[] =
    "Return-Path Received Resent-Date Date Resent-From From Full-Name "
    "Resent-Message-Id Message-Id";

typedef struct kv {
  char *a, *b;
} kv;

/* One entry of the MTA's header list. */
typedef struct rent {
  char *name;
  char *value;         /* after "name:", CRLF folds; NULL: deleted (Sendmail
                          keeps the entry) or a template not carried */
  unsigned char user;  /* from the message or a milter (Sendmail's H_USER) */
  unsigned char mta;   /* the MTA's own: its Received:, a .cf template */
  unsigned char trace; /* a Received: template (Sendmail's H_TRACE) */
  unsigned char carried; /* a template the message carried a field of
                            (Sendmail emptied it) */
} rent;

typedef struct trcpt {
  char *addr, *args;
  mf_decision res;
  char *reply;
} trcpt;

struct mf_testtrx {
  mf_opts opts;
  char *macros_copy;
  mf_mta mta;     /* what the engine is told */
  mf_mta sim_mta; /* whose rules apply the actions; AUTO: the engine's */
  char *templates; /* Sendmail's H lines, NULL: the stock nine */
  uint32_t actions, protocol, data_size;
  unsigned timeout_ms;
  char *host, *ip, *helo;
  uint16_t port;
  char *from, *from_args;
  trcpt *rcpts;
  size_t nrcpts;
  kv *macros;
  size_t nmacros;
  kv *hdrs; /* b: the raw value, every byte after the colon */
  size_t nhdrs;
  uint8_t *body;
  size_t body_len;
  int ran;

  mf_trx *trx;
  mf_decision decision, raw;
  int calls;
  char *reply;
  char *qreason;
  int body_requested;
  milter_action *acts;
  size_t nacts;

  rent *rh; /* the MTA's header list after the actions */
  size_t nrh;
  mf_mta rmta;      /* the MTA simulated */
  size_t above;     /* result fields above the MTA's own Received: */
  size_t unmatched; /* CHGHEADERs that found no field */
  char *text;
  size_t text_len;
  char *decoded;
  uint8_t *rbody;
  size_t rbody_len;
  char *rfrom;
  char **rrcpt;
  size_t nrrcpt;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  mf_decision pending_d;
  char err[256];
};

static int fail(mf_testtrx *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(mf_testtrx *t, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->err, sizeof(t->err), fmt, ap);
  va_end(ap);
  return rc;
}

static int dup_to(char **dst, const char *s) {
  char *c = s ? strdup(s) : NULL;
  if (s && !c)
    return MF_E_NOMEM;
  free(*dst);
  *dst = c;
  return 0;
}

static int push_kv(kv **arr, size_t *n, const char *a, const char *b) {
  kv *x = realloc(*arr, (*n + 1) * sizeof(**arr));
  if (x == NULL)
    return MF_E_NOMEM;
  *arr = x;
  x[*n].a = strdup(a);
  x[*n].b = strdup(b);
  if (!x[*n].a || !x[*n].b) {
    free(x[*n].a);
    free(x[*n].b);
    return MF_E_NOMEM;
  }
  (*n)++;
  return 0;
}

static void free_kv(kv *arr, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(arr[i].a);
    free(arr[i].b);
  }
  free(arr);
}

/* ------------------------------------------------------------------------ */

int mf_testtrx_new(mf_testtrx **out, const mf_opts *opts) {
  if (out == NULL)
    return MF_E_INVAL;
  mf_testtrx *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return MF_E_NOMEM;
  if (opts)
    t->opts = *opts;
  else
    mf_opts_init(&t->opts);
  if (t->opts.macros && (t->macros_copy = strdup(t->opts.macros)) == NULL) {
    free(t);
    return MF_E_NOMEM;
  }
  t->opts.macros = t->macros_copy;
  t->mta = MF_MTA_POSTFIX;
  t->actions = MILTER_ACT_ALL;
  t->protocol = MILTER_P_HDR_LEADSPC;
  t->data_size = MILTER_DATA_64K;
  t->timeout_ms = 10000;
  t->port = 25;
  if (dup_to(&t->host, "client.example") || dup_to(&t->ip, "192.0.2.1") ||
      dup_to(&t->helo, "client.example")) {
    mf_testtrx_free(t);
    return MF_E_NOMEM;
  }
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  *out = t;
  return 0;
}

void mf_testtrx_free(mf_testtrx *t) {
  if (t == NULL)
    return;
  free(t->macros_copy);
  free(t->host);
  free(t->ip);
  free(t->helo);
  free(t->from);
  free(t->from_args);
  for (size_t i = 0; i < t->nrcpts; i++) {
    free(t->rcpts[i].addr);
    free(t->rcpts[i].args);
    free(t->rcpts[i].reply);
  }
  free(t->rcpts);
  free_kv(t->macros, t->nmacros);
  free_kv(t->hdrs, t->nhdrs);
  free(t->body);
  mf_engine_trx_free(t->trx);
  free(t->reply);
  free(t->qreason);
  mf_engine_actions_free(t->acts, t->nacts);
  for (size_t i = 0; i < t->nrh; i++) {
    free(t->rh[i].name);
    free(t->rh[i].value);
  }
  free(t->rh);
  free(t->templates);
  free(t->text);
  free(t->decoded);
  free(t->rbody);
  free(t->rfrom);
  for (size_t i = 0; i < t->nrrcpt; i++)
    free(t->rrcpt[i]);
  free(t->rrcpt);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

const char *mf_testtrx_errmsg(const mf_testtrx *t) { return t ? t->err : ""; }

#define BEFORE_RUN(t)                                                          \
  do {                                                                         \
    if ((t) == NULL)                                                           \
      return MF_E_INVAL;                                                       \
    if ((t)->ran)                                                              \
      return fail((t), MF_E_STATE, "%s after mf_testtrx_run()", __func__);     \
  } while (0)

/* *dst = mta, after checking it is one of the three. */
static int set_mta_to(mf_testtrx *t, mf_mta *dst, mf_mta mta) {
  BEFORE_RUN(t);
  if (mta != MF_MTA_AUTO && mta != MF_MTA_POSTFIX && mta != MF_MTA_SENDMAIL)
    return fail(t, MF_E_INVAL,
                "MTA %d is not MF_MTA_AUTO, _POSTFIX or _SENDMAIL", (int)mta);
  *dst = mta;
  return 0;
}

int mf_testtrx_set_mta(mf_testtrx *t, mf_mta mta) {
  return t ? set_mta_to(t, &t->mta, mta) : MF_E_INVAL;
}

int mf_testtrx_set_simulated_mta(mf_testtrx *t, mf_mta mta) {
  return t ? set_mta_to(t, &t->sim_mta, mta) : MF_E_INVAL;
}

int mf_testtrx_set_sendmail_templates(mf_testtrx *t, const char *names) {
  BEFORE_RUN(t);
  if (names != NULL) {
    char *c = strdup(names);
    if (c == NULL)
      return MF_E_NOMEM;
    for (char *save = NULL, *tok = strtok_r(c, TMPL_SEP, &save); tok;
         tok = strtok_r(NULL, TMPL_SEP, &save))
      if (!mf_hdr_name_valid(tok)) {
        fail(t, MF_E_INVAL, "sendmail templates: bad name \"%s\"", tok);
        free(c);
        return MF_E_INVAL;
      }
    free(c);
  }
  return dup_to(&t->templates, names);
}

int mf_testtrx_set_negotiated(mf_testtrx *t, uint32_t actions,
                              uint32_t protocol, uint32_t data_size) {
  BEFORE_RUN(t);
  if (data_size != MILTER_DATA_64K && data_size != MILTER_DATA_256K &&
      data_size != MILTER_DATA_1M)
    return fail(t, MF_E_INVAL, "data size %u is not 64K, 256K or 1M",
                data_size);
  t->actions = actions;
  t->protocol = protocol;
  t->data_size = data_size;
  return 0;
}

int mf_testtrx_set_timeout(mf_testtrx *t, unsigned ms) {
  BEFORE_RUN(t);
  t->timeout_ms = ms;
  return 0;
}

int mf_testtrx_connect(mf_testtrx *t, const char *hostname, const char *ip,
                       uint16_t port) {
  BEFORE_RUN(t);
  if (hostname == NULL || ip == NULL)
    return fail(t, MF_E_INVAL, "connect: hostname and ip are required");
  t->port = port;
  return dup_to(&t->host, hostname) || dup_to(&t->ip, ip) ? MF_E_NOMEM : 0;
}

int mf_testtrx_helo(mf_testtrx *t, const char *helo) {
  BEFORE_RUN(t);
  if (helo == NULL)
    return fail(t, MF_E_INVAL, "helo: NULL");
  return dup_to(&t->helo, helo);
}

int mf_testtrx_mail(mf_testtrx *t, const char *addr, const char *args) {
  BEFORE_RUN(t);
  if (addr == NULL)
    return fail(t, MF_E_INVAL, "mail: NULL address");
  if (t->from != NULL)
    return fail(t, MF_E_STATE, "mail: a sender is already set");
  return dup_to(&t->from, addr) || dup_to(&t->from_args, args) ? MF_E_NOMEM
                                                                : 0;
}

int mf_testtrx_rcpt(mf_testtrx *t, const char *addr, const char *args) {
  BEFORE_RUN(t);
  if (addr == NULL)
    return fail(t, MF_E_INVAL, "rcpt: NULL address");
  trcpt *r = realloc(t->rcpts, (t->nrcpts + 1) * sizeof(*r));
  if (r == NULL)
    return MF_E_NOMEM;
  t->rcpts = r;
  r += t->nrcpts;
  memset(r, 0, sizeof(*r));
  if (dup_to(&r->addr, addr) || dup_to(&r->args, args))
    return MF_E_NOMEM;
  t->nrcpts++;
  return 0;
}

int mf_testtrx_macro(mf_testtrx *t, const char *name, const char *value) {
  BEFORE_RUN(t);
  if (name == NULL || value == NULL)
    return fail(t, MF_E_INVAL, "macro: NULL name or value");
  return push_kv(&t->macros, &t->nmacros, name, value);
}

int mf_testtrx_header(mf_testtrx *t, const char *name, const char *value) {
  BEFORE_RUN(t);
  if (name == NULL || value == NULL || !mf_hdr_name_valid(name))
    return fail(t, MF_E_INVAL, "header: invalid name or NULL value");
  /* stored raw: the space after the colon, then the value */
  char *raw = malloc(strlen(value) + 2);
  if (raw == NULL)
    return MF_E_NOMEM;
  raw[0] = ' ';
  strcpy(raw + 1, value);
  int rc = push_kv(&t->hdrs, &t->nhdrs, name, raw);
  free(raw);
  return rc;
}

int mf_testtrx_body(mf_testtrx *t, const void *data, size_t len) {
  BEFORE_RUN(t);
  if (data == NULL && len > 0)
    return fail(t, MF_E_INVAL, "body: NULL data");
  uint8_t *b = realloc(t->body, t->body_len + len + 1);
  if (b == NULL)
    return MF_E_NOMEM;
  t->body = b;
  if (len)
    memcpy(b + t->body_len, data, len);
  t->body_len += len;
  return 0;
}

int mf_testtrx_message(mf_testtrx *t, const char *raw, size_t len) {
  BEFORE_RUN(t);
  if (raw == NULL)
    return fail(t, MF_E_INVAL, "message: NULL");
  if (len == (size_t)-1)
    len = strlen(raw);
  mf_hdrs *h = NULL;
  if (mf_hdr_new(&h, MF_HDR_LEADSPC) != 0)
    return MF_E_NOMEM;
  size_t off = 0;
  int rc = mf_hdr_parse(h, raw, len, &off);
  if (rc != 0) {
    fail(t, MF_E_INVAL, "message: %s", mf_hdr_errmsg(h));
    mf_hdr_free(h);
    return MF_E_INVAL;
  }
  for (size_t i = 0; i < mf_hdr_count(h) && rc == 0; i++) {
    size_t vl;
    const char *v = mf_hdr_raw(h, i, &vl); /* every byte after the colon */
    rc = push_kv(&t->hdrs, &t->nhdrs, mf_hdr_name(h, i), v);
  }
  mf_hdr_free(h);
  if (rc == 0)
    rc = mf_testtrx_body(t, raw + off, len - off);
  return rc;
}

int mf_testtrx_message_file(mf_testtrx *t, const char *path) {
  BEFORE_RUN(t);
  FILE *f = path ? fopen(path, "rb") : NULL;
  if (f == NULL)
    return fail(t, MF_E_IO, "message file %s: %s", path ? path : "(null)",
                strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 65536 > cap) {
      cap = cap ? cap * 2 : 131072;
      char *b = realloc(buf, cap);
      if (b == NULL) {
        free(buf);
        fclose(f);
        return MF_E_NOMEM;
      }
      buf = b;
    }
    size_t n = fread(buf + len, 1, 65536, f);
    len += n;
    if (n == 0)
      break;
  }
  fclose(f);
  int rc = mf_testtrx_message(t, buf ? buf : "", len);
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Running                                                                  */
/* ------------------------------------------------------------------------ */

static void on_complete(mf_trx *trx, mf_decision d, void *arg) {
  (void)trx;
  mf_testtrx *t = arg;
  pthread_mutex_lock(&t->mu);
  t->pending_d = d;
  t->done = 1;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* Wait for mf_trx_complete() after MF_PENDING. */
static int wait_pending(mf_testtrx *t, mf_decision *d) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += t->timeout_ms / 1000;
  ts.tv_nsec += (long)(t->timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&t->mu);
  int rc = 0;
  while (!t->done && rc == 0)
    rc = pthread_cond_timedwait(&t->cv, &t->mu, &ts);
  int ok = t->done;
  t->done = 0;
  *d = t->pending_d;
  pthread_mutex_unlock(&t->mu);
  return ok ? 0
            : fail(t, MF_E_STATE,
                   "decision returned MF_PENDING and mf_trx_complete() was "
                   "not called within %u ms",
                   t->timeout_ms);
}

/* The reply text the MTA would get for rcode/xcode/text: one line per
 * "\n"-separated line, "550-5.7.1 a" before the last, "550 5.7.1 b". */
static char *format_reply(const char *rc, const char *xc, const char *text) {
  const char *p = text ? text : "";
  size_t lines = 1;
  for (const char *q = p; *q; q++)
    lines += *q == '\n';
  size_t cap = strlen(p) + lines * (strlen(rc) + (xc ? strlen(xc) : 0) + 4) + 1;
  char *out = malloc(cap), *o = out;
  if (out == NULL)
    return NULL;
  for (;;) {
    const char *nl = strchr(p, '\n');
    size_t l = nl ? (size_t)(nl - p) : strlen(p);
    o += sprintf(o, "%s%c", rc, nl ? '-' : ' ');
    if (xc)
      o += sprintf(o, "%s ", xc);
    memcpy(o, p, l);
    o += l;
    if (l == 0 && o[-1] == ' ')
      o--;
    if (nl == NULL)
      break;
    *o++ = '\r';
    *o++ = '\n';
    p = nl + 1;
  }
  *o = '\0';
  return out;
}

static void set_reply(mf_testtrx *t, mf_decision d) {
  const char *rc = mf_engine_reply_rcode(t->trx);
  if (rc == NULL)
    return;
  if ((d == MF_REJECT && rc[0] == '5') || (d == MF_TEMPFAIL && rc[0] == '4')) {
    free(t->reply);
    t->reply = format_reply(rc, mf_engine_reply_xcode(t->trx),
                            mf_engine_reply_text(t->trx));
  }
}

static void set_fixed_reply(mf_testtrx *t, const char *r) {
  free(t->reply);
  t->reply = strdup(r);
}

static mf_decision on_error(mf_testtrx *t) {
  switch (t->opts.on_error) {
  case MF_DO_ACCEPT: return MF_ACCEPT;
  case MF_DO_REJECT: return MF_REJECT;
  case MF_DO_CLOSE: return MF_FAIL;
  default:
    set_fixed_reply(t, "451 4.3.0 Temporary failure in the mail filter");
    return MF_TEMPFAIL;
  }
}

/* Limits, as mf_filter applies them before the decision.  Returns 1 when
 * the limit decided (t->decision set). */
static int limit_decides(mf_testtrx *t) {
  int lim = mf_engine_limit_hit(t->trx);
  if (lim == 0)
    return 0;
  mf_action_kind k = lim == 1   ? t->opts.header_limit
                     : lim == 2 ? t->opts.body_limit
                                : t->opts.rcpt_limit;
  switch (k) {
  case MF_DO_TRUNCATE: return 0;
  case MF_DO_ACCEPT: t->decision = MF_ACCEPT; return 1;
  case MF_DO_CLOSE: t->decision = MF_FAIL; return 1;
  case MF_DO_REJECT:
    set_fixed_reply(t, lim == 3   ? "550 5.5.3 Too many recipients"
                       : lim == 1 ? "552 5.3.4 Message header too large"
                                  : "552 5.3.4 Message size exceeds fixed "
                                    "limit");
    t->decision = MF_REJECT;
    return 1;
  default:
    set_fixed_reply(t, lim == 3 ? "452 4.5.3 Too many recipients"
                                : "452 4.3.4 Message too large for the mail "
                                  "filter");
    t->decision = MF_TEMPFAIL;
    return 1;
  }
}

/* Run decide() at stage s; 1 when the transaction is decided (stop
 * feeding events), 0 to go on (held changes or connection-level verdict),
 * < 0 on error. */
static int decide_at(mf_testtrx *t, mf_stage s, mf_decide_fn fn, void *ud,
                     int *held) {
  if (s > MF_STAGE_HELO && limit_decides(t))
    return 1;
  mf_decision d = mf_engine_decide(t->trx, s, fn, ud);
  if (d == MF_PENDING) {
    int rc = wait_pending(t, &d);
    if (rc != 0)
      return rc;
  }
  t->calls++;
  t->raw = d;
  switch (d) {
  case MF_REJECT:
  case MF_TEMPFAIL:
    set_reply(t, d);
    t->decision = d;
    return 1;
  case MF_DISCARD:
    t->decision = d;
    return 1;
  case MF_ACCEPT:
  case MF_QUARANTINE:
    t->decision = d;
    if (s <= MF_STAGE_HELO && d == MF_ACCEPT)
      return 1;
    if (s <= MF_STAGE_HELO) {
      /* connection-level quarantine: applies to the message; the reason
       * outlives the message state, as in mf_filter */
      free(t->qreason);
      t->qreason = strdup(mf_engine_quarantine_reason(t->trx));
    }
    if (d == MF_ACCEPT && !mf_engine_has_changes(t->trx))
      return 1;
    *held = 1;
    return 1;
  default:
    t->decision = on_error(t);
    return 1;
  }
}

static int split_args(const char *addr, const char *args, const char ***argv,
                      size_t *argc, char **buf) {
  *buf = strdup(args ? args : "");
  size_t n = 1, cap = 8;
  const char **v = malloc(cap * sizeof(*v));
  if (*buf == NULL || v == NULL) {
    free(*buf);
    free(v);
    return MF_E_NOMEM;
  }
  v[0] = addr;
  for (char *save = NULL, *tok = strtok_r(*buf, " \t", &save); tok;
       tok = strtok_r(NULL, " \t", &save)) {
    if (n == cap) {
      cap *= 2;
      const char **x = realloc(v, cap * sizeof(*v));
      if (x == NULL) {
        free(v);
        free(*buf);
        return MF_E_NOMEM;
      }
      v = x;
    }
    v[n++] = tok;
  }
  *argv = v;
  *argc = n;
  return 0;
}

static int apply_actions(mf_testtrx *t);

int mf_testtrx_run(mf_testtrx *t, mf_decide_fn decide, void *ud) {
  if (t == NULL || decide == NULL)
    return MF_E_INVAL;
  if (t->ran)
    return fail(t, MF_E_STATE, "mf_testtrx_run() twice on one mf_testtrx");
  if (t->from == NULL && t->opts.stage > MF_STAGE_HELO)
    return fail(t, MF_E_STATE, "no MAIL FROM: call mf_testtrx_mail() first");
  if (t->nrcpts == 0 && t->opts.stage > MF_STAGE_MAIL)
    return fail(t, MF_E_STATE, "no recipient: call mf_testtrx_rcpt() first");
  t->ran = 1;
  int rc = mf_engine_trx_new(&t->trx, &t->opts);
  if (rc != 0)
    return rc;
  mf_engine_set_negotiated(t->trx, t->actions, t->protocol, t->data_size);
  mf_engine_set_mta(t->trx, t->mta);
  mf_engine_set_complete_hook(t->trx, on_complete, t);
  t->decision = MF_ACCEPT;
  t->raw = MF_ACCEPT;
  mf_stage stage = t->opts.stage;
  int held = 0, decided = 0, conn_held = 0;
  char family = strchr(t->ip, ':') ? '6' : '4';
  if ((rc = mf_engine_connect(t->trx, t->host, family, t->port, t->ip)) != 0)
    return rc;
  for (size_t i = 0; i < t->nmacros; i++)
    mf_engine_macro(t->trx, t->macros[i].a, t->macros[i].b);
  if (stage == MF_STAGE_CONNECT)
    decided = decide_at(t, stage, decide, ud, &held);
  if (decided < 0)
    return decided;
  if (!decided && (rc = mf_engine_helo(t->trx, t->helo)) != 0)
    return rc;
  if (!decided && stage == MF_STAGE_HELO)
    decided = decide_at(t, stage, decide, ud, &held);
  if (decided < 0)
    return decided;
  /* A connection-level ACCEPT/REJECT ends here; a connection-level
   * quarantine (held) applies to the message: go on feeding it. */
  if (decided && !held && stage <= MF_STAGE_HELO)
    goto done;
  conn_held = decided && held;
  if (conn_held)
    decided = 0;
  if (t->from != NULL) {
    const char **argv;
    size_t argc;
    char *buf;
    if ((rc = split_args(t->from, t->from_args, &argv, &argc, &buf)) != 0)
      return rc;
    rc = mf_engine_mail(t->trx, argc, argv);
    free(argv);
    free(buf);
    if (rc != 0)
      return fail(t, rc, "mail: %s", mf_engine_last_error(t->trx));
    for (size_t i = 0; i < t->nmacros; i++)
      mf_engine_macro(t->trx, t->macros[i].a, t->macros[i].b);
  }
  if (!decided && !conn_held && stage == MF_STAGE_MAIL)
    decided = decide_at(t, stage, decide, ud, &held);
  if (decided < 0)
    return decided;
  for (size_t i = 0; i < t->nrcpts; i++) {
    trcpt *r = &t->rcpts[i];
    r->res = MF_ACCEPT;
    const char **argv;
    size_t argc;
    char *buf;
    if ((rc = split_args(r->addr, r->args, &argv, &argc, &buf)) != 0)
      return rc;
    rc = mf_engine_rcpt(t->trx, argc, argv);
    free(argv);
    free(buf);
    if (rc == MF_E_LIMIT)
      continue;
    if (rc != 0)
      return fail(t, rc, "rcpt: %s", mf_engine_last_error(t->trx));
    if (t->opts.validate_rcpt == NULL || decided || conn_held)
      continue;
    mf_decision d = mf_engine_validate_rcpt(t->trx, t->opts.validate_rcpt, ud);
    if (d == MF_PENDING && (rc = wait_pending(t, &d)) != 0)
      return rc;
    if (d == MF_FAIL) {
      mf_decision e = on_error(t);
      d = e == MF_ACCEPT ? MF_ACCEPT : e;
      r->reply = t->reply;
      t->reply = NULL;
    }
    if (d == MF_REJECT || d == MF_TEMPFAIL) {
      const char *rcode = mf_engine_reply_rcode(t->trx);
      if (rcode && ((d == MF_REJECT && rcode[0] == '5') ||
                    (d == MF_TEMPFAIL && rcode[0] == '4'))) {
        free(r->reply);
        r->reply = format_reply(rcode, mf_engine_reply_xcode(t->trx),
                                mf_engine_reply_text(t->trx));
      }
      r->res = d;
      mf_engine_rcpt_drop_last(t->trx);
    } else if (d == MF_FAIL) {
      r->res = MF_FAIL; /* connection dropped */
      t->decision = MF_FAIL;
      goto done;
    }
    mf_engine_clear_reply(t->trx);
  }
  if (!decided && !conn_held &&
      (stage == MF_STAGE_RCPT || stage == MF_STAGE_DATA))
    decided = decide_at(t, stage, decide, ud, &held);
  if (decided < 0)
    return decided;
  if (!decided) {
    int lead = (t->protocol & MILTER_P_HDR_LEADSPC) != 0;
    for (size_t i = 0; i < t->nhdrs; i++) {
      /* the raw value; without HDR_LEADSPC the MTA drops one space */
      const char *v = t->hdrs[i].b;
      if (!lead && v[0] == ' ')
        v++;
      /* Only when the filter reads headers (stage >= EOH): else NOHDRS. */
      if (stage >= MF_STAGE_EOH && !conn_held)
        mf_engine_header(t->trx, t->hdrs[i].a, v, strlen(v), lead);
    }
    mf_engine_eoh(t->trx);
  }
  if (!decided && !conn_held && stage == MF_STAGE_EOH)
    decided = decide_at(t, stage, decide, ud, &held);
  if (decided < 0)
    return decided;
  if (!decided && !conn_held && stage == MF_STAGE_EOM) {
    t->body_requested = 1;
    size_t chunk = t->data_size;
    for (size_t off = 0; off < t->body_len; off += chunk) {
      size_t n = t->body_len - off < chunk ? t->body_len - off : chunk;
      rc = mf_engine_body(t->trx, t->body + off, n);
      if (rc != 0 && rc != MF_E_LIMIT)
        return fail(t, rc, "body: %s", mf_engine_last_error(t->trx));
    }
    decided = decide_at(t, stage, decide, ud, &held);
    if (decided < 0)
      return decided;
  }
  if (conn_held)
    held = 1;
done:
  if (conn_held && t->decision == MF_QUARANTINE) {
    /* mf_filter sends only the quarantine at each end of message */
    if ((t->acts = calloc(1, sizeof(*t->acts))) == NULL ||
        (t->acts[0].value = strdup(t->qreason ? t->qreason : "quarantined")) ==
            NULL)
      return MF_E_NOMEM;
    t->acts[0].type = MILTER_ACTION_QUARANTINE;
    t->nacts = 1;
    return apply_actions(t);
  }
  if (t->decision == MF_ACCEPT || t->decision == MF_QUARANTINE) {
    if (held || stage == MF_STAGE_EOM) {
      rc = mf_engine_actions(t->trx, t->decision, 0, &t->acts, &t->nacts);
      if (rc != 0) {
        fail(t, 0, "cannot apply the changes: %s",
             mf_engine_last_error(t->trx));
        t->decision = on_error(t);
      }
    }
    if (t->decision == MF_QUARANTINE) {
      free(t->qreason);
      t->qreason = strdup(mf_engine_quarantine_reason(t->trx));
    }
    return apply_actions(t);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The MTA's side: apply the actions (Postfix's or Sendmail's rules)        */
/* ------------------------------------------------------------------------ */

/* v with every line end as CRLF; with a space in front when add_space. */
static char *crlf_value(const char *v, int add_space) {
  char *o = malloc(strlen(v) * 2 + 2), *p = o;
  if (o == NULL)
    return NULL;
  if (add_space)
    *p++ = ' ';
  for (; *v; v++) {
    if (*v == '\n' && (p == o || p[-1] != '\r'))
      *p++ = '\r';
    *p++ = *v;
  }
  *p = '\0';
  return o;
}

/* A value from a milter action as the MTA stores it: as sent with
 * HDR_LEADSPC, else after one space that both MTAs add. */
static char *action_value(const mf_testtrx *t, const char *v) {
  return crlf_value(v ? v : "", (t->protocol & MILTER_P_HDR_LEADSPC) == 0);
}

/* Insert an entry at pos (clamped); takes value (may be NULL). */
static int rh_insert(mf_testtrx *t, size_t pos, const char *name, char *value,
                     int user) {
  rent *x = realloc(t->rh, (t->nrh + 1) * sizeof(*x));
  if (x == NULL) {
    free(value);
    return MF_E_NOMEM;
  }
  t->rh = x;
  if (pos > t->nrh)
    pos = t->nrh;
  memmove(x + pos + 1, x + pos, (t->nrh - pos) * sizeof(*x));
  memset(&x[pos], 0, sizeof(x[pos]));
  x[pos].name = strdup(name);
  x[pos].value = value;
  x[pos].user = (unsigned char)user;
  t->nrh++;
  return x[pos].name ? 0 : MF_E_NOMEM;
}

/* The MTA's list before the message's fields: Postfix's own Received:;
 * Sendmail's .cf templates, valueless but the Received: one. */
static int rh_mta_fields(mf_testtrx *t) {
  if (t->rmta != MF_MTA_SENDMAIL) {
    char *v = strdup(" (the MTA's own)");
    int rc = v ? rh_insert(t, 0, "Received", v, 0) : MF_E_NOMEM;
    if (rc == 0)
      t->rh[0].mta = t->rh[0].trace = 1;
    return rc;
  }
  char *c = strdup(t->templates ? t->templates : STOCK_TEMPLATES);
  int rc = c ? 0 : MF_E_NOMEM;
  for (char *save = NULL, *tok = c ? strtok_r(c, TMPL_SEP, &save) : NULL;
       tok && rc == 0; tok = strtok_r(NULL, TMPL_SEP, &save)) {
    int trace = strcasecmp(tok, "Received") == 0;
    char *v = trace ? strdup(" (the MTA's own)") : NULL;
    if (trace && v == NULL)
      rc = MF_E_NOMEM;
    else if ((rc = rh_insert(t, t->nrh, tok, v, 0)) == 0) {
      t->rh[t->nrh - 1].mta = 1;
      t->rh[t->nrh - 1].trace = (unsigned char)trace;
    }
  }
  free(c);
  return rc;
}

/* Delivered: a field of the message or a milter that has a value; a
 * template only when a milter filled it, and not with "" when the message
 * carried a field of that name (Sendmail skips it then; the template of a
 * field the message lacked is delivered "Name:"). */
static int rh_visible(const rent *e) {
  if (e->value == NULL)
    return 0;
  return !e->mta || (e->user && (e->value[0] != '\0' || !e->carried));
}

/* Sendmail's addheader(): above the first entry of that name, else at the
 * end. */
static int sm_addheader(mf_testtrx *t, const char *name, char *value) {
  size_t pos = t->nrh;
  for (size_t i = 0; i < t->nrh && pos == t->nrh; i++)
    if (strcasecmp(t->rh[i].name, name) == 0)
      pos = i;
  return rh_insert(t, pos, name, value, 1);
}

static void rh_set(rent *e, char *value) {
  free(e->value);
  e->value = value;
  e->user = 1;
}

static void rh_remove(mf_testtrx *t, size_t i) {
  free(t->rh[i].name);
  free(t->rh[i].value);
  memmove(t->rh + i, t->rh + i + 1, (t->nrh - i - 1) * sizeof(rent));
  t->nrh--;
}

/* CHGHEADER name index value (value "" deletes). */
static int apply_chgheader(mf_testtrx *t, const milter_action *a) {
  int del = a->value == NULL || a->value[0] == '\0';
  long want = (long)a->index;
  rent *sys = NULL;
  for (size_t i = 0; i < t->nrh; i++) {
    rent *e = &t->rh[i];
    if (strcasecmp(e->name, a->name) != 0)
      continue;
    if (t->rmta == MF_MTA_SENDMAIL) {
      /* Sendmail counts the H_USER entries, deleted ones included; a
       * template that is not a trace field is the fallback */
      if (!e->user) {
        if (!e->trace)
          sys = e;
        continue;
      }
    } else if (e->mta || e->value == NULL) {
      continue; /* Postfix: its own Received: is not counted */
    }
    if (--want > 0)
      continue;
    if (del && t->rmta == MF_MTA_SENDMAIL) {
      free(e->value);
      e->value = NULL; /* marked, still counted */
    } else if (del) {
      rh_remove(t, i);
    } else {
      char *v = action_value(t, a->value);
      if (v == NULL)
        return MF_E_NOMEM;
      rh_set(e, v);
    }
    return 0;
  }
  t->unmatched++;
  if (sys != NULL) { /* Sendmail: the template takes it */
    char *v = del ? NULL : action_value(t, a->value);
    if (!del && v == NULL)
      return MF_E_NOMEM;
    free(sys->value);
    sys->value = v;
    if (!del)
      sys->user = 1;
    return 0;
  }
  if (del)
    return 0; /* a delete of nothing */
  /* both MTAs add the field: Postfix at the end, Sendmail as addheader() */
  char *v = action_value(t, a->value);
  if (v == NULL)
    return MF_E_NOMEM;
  return t->rmta == MF_MTA_SENDMAIL ? sm_addheader(t, a->name, v)
                                    : rh_insert(t, t->nrh, a->name, v, 1);
}

static int apply_header_action(mf_testtrx *t, const milter_action *a) {
  if (a->type == MILTER_ACTION_CHGHEADER)
    return apply_chgheader(t, a);
  char *v = action_value(t, a->value);
  if (v == NULL)
    return MF_E_NOMEM;
  int sm = t->rmta == MF_MTA_SENDMAIL;
  if (a->type == MILTER_ACTION_INSHEADER) {
    /* Postfix: before entry index (its Received: is entry 0); Sendmail:
     * after entry index, templates included; past the end: appended */
    size_t pos = a->index;
    if (sm)
      pos = t->nrh == 0 ? 0 : (pos < t->nrh - 1 ? pos : t->nrh - 1) + 1;
    return rh_insert(t, pos, a->name, v, 1);
  }
  if (sm) { /* ADDHEADER: fill a template of that name */
    for (size_t i = 0; i < t->nrh; i++) {
      rent *e = &t->rh[i];
      if (strcasecmp(e->name, a->name) == 0 && !e->user && !e->trace) {
        rh_set(e, v);
        return 0;
      }
    }
    return sm_addheader(t, a->name, v);
  }
  return rh_insert(t, t->nrh, a->name, v, 1);
}

static int apply_actions(mf_testtrx *t) {
  t->rmta = t->sim_mta != MF_MTA_AUTO ? t->sim_mta
            : t->trx != NULL          ? mf_trx_mta(t->trx)
                                      : t->mta;
  if (t->rmta == MF_MTA_AUTO)
    t->rmta = MF_MTA_POSTFIX;
  int rc = rh_mta_fields(t);
  for (size_t i = 0; i < t->nhdrs && rc == 0; i++) {
    char *v = crlf_value(t->hdrs[i].b, 0);
    rc = v ? rh_insert(t, t->nrh, t->hdrs[i].a, v, 1) : MF_E_NOMEM;
  }
  for (size_t i = 0; i < t->nrh && rc == 0; i++)
    for (size_t k = 0; k < t->nhdrs && t->rh[i].mta; k++)
      if (strcasecmp(t->rh[i].name, t->hdrs[k].a) == 0)
        t->rh[i].carried = 1;
  if (rc != 0)
    return rc;
  /* envelope */
  if (t->from)
    t->rfrom = strdup(t->from);
  for (size_t i = 0; i < t->nrcpts; i++) {
    if (t->rcpts[i].res != MF_ACCEPT)
      continue;
    char **x = realloc(t->rrcpt, (t->nrrcpt + 1) * sizeof(*x));
    if (x == NULL)
      return MF_E_NOMEM;
    t->rrcpt = x;
    x[t->nrrcpt++] = strdup(t->rcpts[i].addr);
  }
  const uint8_t *body = t->body;
  size_t blen = t->body_len;
  for (size_t k = 0; k < t->nacts; k++) {
    const milter_action *a = &t->acts[k];
    switch (a->type) {
    case MILTER_ACTION_ADDHEADER:
    case MILTER_ACTION_INSHEADER:
    case MILTER_ACTION_CHGHEADER:
      rc = apply_header_action(t, a);
      break;
    case MILTER_ACTION_ADDRCPT:
    case MILTER_ACTION_ADDRCPT_PAR: {
      char **x = realloc(t->rrcpt, (t->nrrcpt + 1) * sizeof(*x));
      if (x == NULL)
        return MF_E_NOMEM;
      t->rrcpt = x;
      x[t->nrrcpt++] = strdup(a->name);
      break;
    }
    case MILTER_ACTION_DELRCPT:
      for (size_t i = 0; i < t->nrrcpt;) {
        if (strcasecmp(t->rrcpt[i], a->name) == 0) {
          free(t->rrcpt[i]);
          memmove(t->rrcpt + i, t->rrcpt + i + 1,
                  (t->nrrcpt - i - 1) * sizeof(char *));
          t->nrrcpt--;
        } else {
          i++;
        }
      }
      break;
    case MILTER_ACTION_CHGFROM:
      free(t->rfrom);
      t->rfrom = strdup(a->name);
      break;
    case MILTER_ACTION_REPLBODY:
      body = a->body;
      blen = a->body_len;
      break;
    case MILTER_ACTION_QUARANTINE:
      break;
    }
    if (rc != 0)
      return rc;
  }
  if (blen > 0 && (t->rbody = malloc(blen)) == NULL)
    return MF_E_NOMEM;
  if (blen > 0)
    memcpy(t->rbody, body, blen);
  t->rbody_len = blen;
  /* the text: the visible fields as name ":" value, empty line, body */
  size_t cap = blen + 3;
  for (size_t i = 0; i < t->nrh; i++)
    if (rh_visible(&t->rh[i]))
      cap += strlen(t->rh[i].name) + strlen(t->rh[i].value) + 3;
  if ((t->text = malloc(cap)) == NULL)
    return MF_E_NOMEM;
  char *o = t->text;
  int below = 0;
  for (size_t i = 0; i < t->nrh; i++) {
    const rent *e = &t->rh[i];
    if (e->mta && e->trace && e->value != NULL)
      below = 1;
    if (!rh_visible(e))
      continue;
    t->above += !below;
    o += sprintf(o, "%s:%s\r\n", e->name, e->value);
  }
  o += sprintf(o, "\r\n");
  if (blen)
    memcpy(o, t->rbody, blen);
  o += blen;
  *o = '\0';
  t->text_len = (size_t)(o - t->text);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

mf_decision mf_testtrx_decision(const mf_testtrx *t) { return t->decision; }
mf_decision mf_testtrx_raw_decision(const mf_testtrx *t) { return t->raw; }
int mf_testtrx_calls(const mf_testtrx *t) { return t->calls; }
const char *mf_testtrx_reply(const mf_testtrx *t) { return t->reply; }
const char *mf_testtrx_quarantine_reason(const mf_testtrx *t) {
  return t->qreason;
}
int mf_testtrx_body_requested(const mf_testtrx *t) {
  return t->body_requested;
}
size_t mf_testtrx_action_count(const mf_testtrx *t) { return t->nacts; }
const milter_action *mf_testtrx_action(const mf_testtrx *t, size_t i) {
  return i < t->nacts ? &t->acts[i] : NULL;
}
mf_decision mf_testtrx_rcpt_result(const mf_testtrx *t, size_t i) {
  return i < t->nrcpts ? t->rcpts[i].res : MF_FAIL;
}
const char *mf_testtrx_rcpt_reply(const mf_testtrx *t, size_t i) {
  return i < t->nrcpts ? t->rcpts[i].reply : NULL;
}
const char *mf_testtrx_result(const mf_testtrx *t, size_t *len) {
  if (len)
    *len = t->text_len;
  return t->text;
}

const char *mf_testtrx_result_header(const mf_testtrx *t, const char *name,
                                     size_t nth) {
  size_t seen = 0;
  for (size_t i = 0; i < t->nrh; i++) {
    const rent *e = &t->rh[i];
    if (rh_visible(e) && strcasecmp(e->name, name) == 0 && ++seen == nth)
      return e->value + (e->value[0] == ' ');
  }
  return NULL;
}

const char *mf_testtrx_result_header_decoded(const mf_testtrx *t,
                                             const char *name, size_t nth) {
  const char *raw = mf_testtrx_result_header(t, name, nth);
  if (raw == NULL)
    return NULL;
  mf_testtrx *m = (mf_testtrx *)t; /* cache: logically const */
  free(m->decoded);
  m->decoded = NULL;
  if (mf_hdr_decode(raw, strlen(raw), &m->decoded) != 0)
    return NULL;
  return m->decoded;
}

size_t mf_testtrx_result_header_count(const mf_testtrx *t) {
  size_t n = 0;
  for (size_t i = 0; i < t->nrh; i++)
    n += (size_t)rh_visible(&t->rh[i]);
  return n;
}
size_t mf_testtrx_result_above_received(const mf_testtrx *t) {
  return t->above;
}
size_t mf_testtrx_result_unmatched(const mf_testtrx *t) {
  return t->unmatched;
}
mf_mta mf_testtrx_result_mta(const mf_testtrx *t) { return t->rmta; }
const char *mf_testtrx_result_from(const mf_testtrx *t) { return t->rfrom; }
size_t mf_testtrx_result_rcpt_count(const mf_testtrx *t) { return t->nrrcpt; }
const char *mf_testtrx_result_rcpt(const mf_testtrx *t, size_t i) {
  return i < t->nrrcpt ? t->rrcpt[i] : NULL;
}
const uint8_t *mf_testtrx_result_body(const mf_testtrx *t, size_t *len) {
  if (len)
    *len = t->rbody_len;
  return t->rbody ? t->rbody : (const uint8_t *)"";
}

const char *mf_testtrx_action_name(int type) {
  switch (type) {
  case MILTER_ACTION_ADDHEADER: return "ADDHEADER";
  case MILTER_ACTION_INSHEADER: return "INSHEADER";
  case MILTER_ACTION_CHGHEADER: return "CHGHEADER";
  case MILTER_ACTION_ADDRCPT: return "ADDRCPT";
  case MILTER_ACTION_ADDRCPT_PAR: return "ADDRCPT_PAR";
  case MILTER_ACTION_DELRCPT: return "DELRCPT";
  case MILTER_ACTION_CHGFROM: return "CHGFROM";
  case MILTER_ACTION_REPLBODY: return "REPLBODY";
  case MILTER_ACTION_QUARANTINE: return "QUARANTINE";
  default: return "?";
  }
}
