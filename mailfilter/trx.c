/* trx.c -- the transaction: what the events bring (engine side) and what
 * the decision function reads and changes (user side). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mf_int.h"

#include <mailfilter/milter_proto.h>
#include "mf_alloc.h"

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

#define ERR_MAX 256

void mf_trx_seterr(mf_trx *t, const char *fmt, ...) {
  if (t->err == NULL && (t->err = xmalloc(ERR_MAX)) == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->err, ERR_MAX, fmt, ap);
  va_end(ap);
}

static int set_str(char **dst, const char *src) {
  char *c = NULL;
  if (src != NULL && (c = xstrdup(src)) == NULL)
    return MF_E_NOMEM;
  free(*dst);
  *dst = c;
  return 0;
}

/* "{name}" and "name" are the same macro. */
static void macro_key(const char *name, const char **p, size_t *len) {
  size_t n = strlen(name);
  if (n >= 2 && name[0] == '{' && name[n - 1] == '}') {
    *p = name + 1;
    *len = n - 2;
  } else {
    *p = name;
    *len = n;
  }
}

const char *mf_strerror(int err) {
  switch (err) {
  case 0: return "success";
  case MF_E_NOMEM: return "out of memory";
  case MF_E_INVAL: return "invalid argument";
  case MF_E_STATE: return "not allowed at this point of the transaction";
  case MF_E_IO: return "spool file I/O error";
  case MF_E_LIMIT: return "a configured limit was reached";
  case MF_E_NOTSUP: return "the MTA did not grant the action this needs";
  case MF_E_ADDR: return "malformed address or ESMTP arguments";
  case MF_E_HEADER: return "the header edit was refused";
  case MF_E_SERVER: return "the milter server failed";
  default: return "unknown error";
  }
}

void mf_opts_init(mf_opts *o) {
  memset(o, 0, sizeof(*o));
  o->stage = MF_STAGE_EOM;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  o->workers = n < 2 ? 2 : (unsigned)n;
  o->progress_ms = 5000;
  o->on_error = MF_DO_TEMPFAIL;
  o->body_mem_max = 200 * 1024;
  o->body_mem_total = 1024 * 1024;
  o->spool_dir = NULL;
  o->max_headers = 1000;
  o->max_header_bytes = 1024 * 1024;
  o->header_limit = MF_DO_REJECT;
  o->max_body = 100ull * 1024 * 1024;
  o->body_limit = MF_DO_REJECT;
  o->max_rcpts = 1000;
  o->rcpt_limit = MF_DO_TEMPFAIL;
  o->mta = MF_MTA_AUTO;
  milter_server_opts_init(&o->server);
}

/* ------------------------------------------------------------------------ */
/* Engine: life cycle                                                       */
/* ------------------------------------------------------------------------ */

void mf_trx_init(mf_trx *t, const mf_opts *opts) {
  memset(t, 0, sizeof(*t));
  t->opts = opts;
  t->mta = opts->mta;
  t->actions = MILTER_ACT_ALL;
  t->data_size = MILTER_DATA_64K;
  mf_spool_init(&t->body, opts->body_mem_max, opts->spool_dir);
  t->body.budget = opts->body_mem_total;
}

int mf_engine_trx_new(mf_trx **out, const mf_opts *opts) {
  if (out == NULL)
    return MF_E_INVAL;
  *out = NULL;
  mf_trx *t = xmalloc(sizeof(*t));
  mf_opts *own = NULL;
  if (t == NULL)
    return MF_E_NOMEM;
  if (opts == NULL) {
    if ((own = xmalloc(sizeof(*own))) == NULL) {
      free(t);
      return MF_E_NOMEM;
    }
    mf_opts_init(own);
    opts = own;
  }
  mf_trx_init(t, opts);
  t->owns_opts = own != NULL;
  *out = t;
  return 0;
}

static void free_rcpts(mf_trx *t) {
  for (size_t i = 0; i < t->nrcpts; i++) {
    mf_addr_free(t->rcpts[i].addr);
    mf_addr_params_free(t->rcpts[i].params);
    free(t->rcpts[i].raw);
    free(t->rcpts[i].args);
    free(t->rcpts[i].argv);
  }
  t->nrcpts = 0;
}

void mf_engine_clear_macros(mf_trx *t) {
  if (t == NULL)
    return;
  t->nmacros = 0;
  t->macblk_len = 0; /* the blocks stay for the next decision */
}

void mf_engine_reset_message(mf_trx *t) {
  if (t == NULL)
    return;
  free(t->from_raw);
  mf_addr_free(t->from);
  mf_addr_params_free(t->from_params);
  free(t->new_from);
  free(t->new_from_args);
  mf_addr_free(t->new_from_addr);
  free(t->from_argv);
  t->from_argv = NULL;
  t->from_argc = 0;
  t->from_parsed = 0;
  t->from_raw = t->new_from = t->new_from_args = NULL;
  t->from = NULL;
  t->new_from_addr = NULL;
  t->from_params = NULL;
  free_rcpts(t);
  /* What only a message needs goes with it, capacity included: a
   * connection between messages keeps its connection data only. */
  free(t->rcpts);
  t->rcpts = NULL;
  t->caprcpts = 0;
  t->rcpt_over = 0;
  mf_engine_clear_macros(t); /* the snapshot of the last decision */
  free(t->macros);
  t->macros = NULL;
  t->capmacros = 0;
  free(t->macblk);
  t->macblk = NULL;
  t->macblk_cap = 0;
  mf_hdr_free(t->hdrs);
  t->hdrs = NULL;
  t->hdr_bytes = 0;
  t->eoh_seen = 0;
  mf_spool_reset(&t->body);
  if (t->newbody != NULL) {
    mf_spool_reset(t->newbody);
    free(t->newbody);
    t->newbody = NULL;
  }
  t->body_replaced = 0;
  t->truncated = 0;
  t->limit = 0;
  free(t->rcode);
  free(t->xcode);
  free(t->text);
  free(t->qreason);
  t->rcode = t->xcode = t->text = t->qreason = NULL;
  t->in_call = 0;
  atomic_store(&t->pending, 0);
  free(t->err);
  t->err = NULL;
}

void mf_engine_reset_connection(mf_trx *t) {
  if (t == NULL)
    return;
  mf_engine_reset_message(t);
  free(t->conn.hostname); /* ip and helo are in the same block */
  memset(&t->conn, 0, sizeof(t->conn));
  mf_engine_clear_macros(t);
}

void mf_trx_fini(mf_trx *t) {
  mf_engine_reset_connection(t);
  free(t->macros);
  free(t->macblk);
  t->macblk = NULL;
  free(t->rcpts);
  if (t->owns_opts)
    free((mf_opts *)t->opts);
  free(t->err);
  t->macros = NULL;
  t->rcpts = NULL;
  t->owns_opts = 0;
  t->err = NULL;
}

void mf_engine_trx_free(mf_trx *t) {
  if (t == NULL)
    return;
  mf_trx_fini(t);
  free(t);
}

void mf_engine_set_negotiated(mf_trx *t, uint32_t actions, uint32_t protocol,
                              uint32_t data_size) {
  t->actions = actions;
  t->protocol = protocol;
  t->data_size = data_size ? data_size : MILTER_DATA_64K;
}

void mf_engine_set_mta(mf_trx *t, mf_mta mta) { t->mta = mta; }

void mf_engine_set_complete_hook(mf_trx *t, mf_engine_complete_fn fn,
                                 void *arg) {
  t->complete = fn;
  t->complete_arg = arg;
}

/* ------------------------------------------------------------------------ */
/* Engine: events                                                           */
/* ------------------------------------------------------------------------ */

/* The connection's strings in one block (mf_conn): one allocation per
 * connection.  The arguments may point into the old block. */
static int set_conn_strs(mf_conn *c, const char *hostname, const char *ip,
                         const char *helo) {
  size_t hl = strlen(hostname) + 1, al = strlen(ip) + 1;
  size_t el = helo != NULL ? strlen(helo) + 1 : 0;
  char *b = xmalloc(hl + al + el);
  if (b == NULL)
    return MF_E_NOMEM;
  memcpy(b, hostname, hl);
  memcpy(b + hl, ip, al);
  if (helo != NULL)
    memcpy(b + hl + al, helo, el);
  free(c->hostname);
  c->hostname = b;
  c->ip = b + hl;
  c->helo = helo != NULL ? b + hl + al : NULL;
  return 0;
}

int mf_engine_connect(mf_trx *t, const char *hostname, char family,
                      uint16_t port, const char *address) {
  if (t == NULL)
    return MF_E_INVAL;
  mf_conn *c = &t->conn;
  int rc = set_conn_strs(c, hostname != NULL ? hostname : "",
                         address != NULL ? address : "", c->helo);
  if (rc != 0)
    return rc;
  c->family = family;
  c->port = port;
  return 0;
}

int mf_engine_helo(mf_trx *t, const char *helo) {
  if (t == NULL || helo == NULL)
    return MF_E_INVAL;
  mf_conn *c = &t->conn;
  return set_conn_strs(c, c->hostname != NULL ? c->hostname : "",
                       c->ip != NULL ? c->ip : "", helo);
}

static int ensure_hdrs(mf_trx *t) {
  if (t->hdrs != NULL)
    return 0;
  unsigned f = (t->protocol & MILTER_P_HDR_LEADSPC) ? MF_HDR_LEADSPC : 0;
  return mf_hdr_new(&t->hdrs, f) == 0 ? 0 : MF_E_NOMEM;
}

/* Parse "<addr>" + args as the milter protocol gives them. */
static int parse_env(mf_trx *t, size_t argc, const char *const *argv,
                     int is_from, mf_addr **addr, mf_addr_params **params) {
  const char *why = NULL;
  *addr = NULL;
  *params = NULL;
  /* What the MTA accepted is taken as leniently as the MTA took it. */
  unsigned f = (is_from ? MF_ADDR_MAIL_FROM : MF_ADDR_RCPT_TO) |
              MF_ADDR_ALLOW_NO_DOMAIN | MF_ADDR_LAX_DOTS;
  int rc = mf_addr_parse(argv[0], f, addr, &why);
  if (rc != 0) {
    mf_trx_seterr(t, "%s %s: %s", is_from ? "MAIL FROM" : "RCPT TO", argv[0],
                  why ? why : mf_addr_strerror(rc));
    return MF_E_ADDR;
  }
  if (argc > 1) {
    rc = mf_addr_params_parse_argv(argc - 1, argv + 1, params, &why);
    if (rc != 0) {
      mf_trx_seterr(t, "%s %s: ESMTP arguments: %s",
                    is_from ? "MAIL FROM" : "RCPT TO", argv[0],
                    why ? why : mf_addr_strerror(rc));
      return MF_E_ADDR;
    }
  }
  return 0;
}

/* argv[1..argc-1] packed as "a\0b\0"; NULL when there are none. */
static int pack_args(size_t argc, const char *const *argv, char **out) {
  *out = NULL;
  if (argc < 2)
    return 0;
  size_t n = 0;
  for (size_t i = 1; i < argc; i++)
    n += strlen(argv[i] ? argv[i] : "") + 1;
  char *b = xmalloc(n), *p = b;
  if (b == NULL)
    return MF_E_NOMEM;
  for (size_t i = 1; i < argc; i++) {
    size_t l = strlen(argv[i] ? argv[i] : "") + 1;
    memcpy(p, argv[i] ? argv[i] : "", l);
    p += l;
  }
  *out = b;
  return 0;
}

static int parse_packed(mf_trx *t, const char *raw, const char *packed,
                        size_t nargs, int is_from, mf_addr **addr,
                        mf_addr_params **params) {
  const char *stackv[16];
  const char **v = nargs + 1 <= 16 ? stackv : xmalloc((nargs + 1) * sizeof(*v));
  if (v == NULL)
    return MF_E_NOMEM;
  v[0] = raw;
  const char *p = packed;
  for (size_t i = 1; i <= nargs; i++) {
    v[i] = p;
    p += strlen(p) + 1;
  }
  int rc = parse_env(t, nargs + 1, v, is_from, addr, params);
  if (v != stackv)
    free(v);
  return rc;
}

void mf_trx_parse_from(mf_trx *t) {
  if (t->from_parsed || t->from_raw == NULL)
    return;
  t->from_parsed = 1;
  parse_packed(t, t->from_raw, t->from_argv, t->from_argc, 1, &t->from,
               &t->from_params);
}

void mf_trx_parse_rcpt(mf_trx *t, mf_rcpt *r) {
  if (r->parsed)
    return;
  r->parsed = 1;
  parse_packed(t, r->raw, r->argv, r->argc, 0, &r->addr, &r->params);
}

int mf_engine_mail(mf_trx *t, size_t argc, const char *const *argv) {
  if (t == NULL || argc < 1 || argv == NULL || argv[0] == NULL)
    return MF_E_INVAL;
  mf_engine_reset_message(t);
  if (set_str(&t->from_raw, argv[0]) != 0 || ensure_hdrs(t) != 0 ||
      pack_args(argc, argv, &t->from_argv) != 0)
    return MF_E_NOMEM;
  t->from_argc = argc - 1;
  return 0;
}

int mf_engine_rcpt(mf_trx *t, size_t argc, const char *const *argv) {
  if (t == NULL || argc < 1 || argv == NULL || argv[0] == NULL)
    return MF_E_INVAL;
  if (t->opts->max_rcpts != 0 && t->nrcpts >= t->opts->max_rcpts) {
    t->rcpt_over++;
    if (t->limit == 0)
      t->limit = 3;
    mf_trx_seterr(t, "more than %zu recipients", t->opts->max_rcpts);
    return MF_E_LIMIT;
  }
  if (mf_grow(&t->rcpts, &t->caprcpts, t->nrcpts, sizeof(*t->rcpts), 4) != 0)
    return MF_E_NOMEM;
  mf_rcpt *r = &t->rcpts[t->nrcpts];
  memset(r, 0, sizeof(*r));
  if ((r->raw = xstrdup(argv[0])) == NULL ||
      pack_args(argc, argv, &r->argv) != 0) {
    free(r->raw);
    return MF_E_NOMEM;
  }
  r->argc = argc - 1;
  r->flags = MF_RCPT_ORIG;
  t->nrcpts++;
  return 0;
}

void mf_engine_rcpt_drop_last(mf_trx *t) {
  if (t == NULL || t->nrcpts == 0)
    return;
  mf_rcpt *r = &t->rcpts[--t->nrcpts];
  mf_addr_free(r->addr);
  mf_addr_params_free(r->params);
  free(r->raw);
  free(r->args);
  free(r->argv);
}

int mf_engine_header(mf_trx *t, const char *name, const char *value,
                     size_t len, int leadspc) {
  if (t == NULL || name == NULL || (value == NULL && len > 0))
    return MF_E_INVAL;
  if (ensure_hdrs(t) != 0)
    return MF_E_NOMEM;
  size_t add = strlen(name) + len + 3;
  if ((t->opts->max_headers && mf_hdr_count(t->hdrs) >= t->opts->max_headers) ||
      (t->opts->max_header_bytes &&
       t->hdr_bytes + add > t->opts->max_header_bytes)) {
    if (t->limit == 0)
      t->limit = 1;
    t->truncated = 1;
    mf_trx_seterr(t, "header over the limit (%zu fields, %zu bytes)",
                  t->opts->max_headers, t->opts->max_header_bytes);
    return MF_E_LIMIT;
  }
  int rc = mf_hdr_append_raw(t->hdrs, name, value ? value : "", len, leadspc);
  if (rc != 0) {
    mf_trx_seterr(t, "header %s: %s", name, mf_hdr_strerror(rc));
    return rc == MF_HDR_E_NOMEM ? MF_E_NOMEM : MF_E_HEADER;
  }
  t->hdr_bytes += add;
  return 0;
}

int mf_engine_eoh(mf_trx *t) {
  if (t == NULL)
    return MF_E_INVAL;
  if (ensure_hdrs(t) != 0)
    return MF_E_NOMEM;
  t->eoh_seen = 1;
  return 0;
}

int mf_trx_spool_error(mf_trx *t, const mf_spool *s, const char *what,
                       int rc) {
  char why[PATH_MAX + 128];
  mf_trx_seterr(t, "%s: %s", what, mf_spool_strerror(s, why, sizeof(why)));
  return rc;
}

static int body_spool_error(mf_trx *t, int rc) {
  return mf_trx_spool_error(t, &t->body, "body spool", rc);
}

int mf_engine_body(mf_trx *t, const void *data, size_t len) {
  if (t == NULL || (data == NULL && len > 0))
    return MF_E_INVAL;
  uint64_t max = t->opts->max_body;
  if (max != 0 && t->body.size + len > max) {
    if (t->limit == 0)
      t->limit = 2;
    t->truncated = 1;
    size_t fit = (size_t)(max - t->body.size);
    if (t->opts->body_limit == MF_DO_TRUNCATE && fit > 0) {
      int rc = mf_spool_write(&t->body, data, fit);
      if (rc != 0)
        return body_spool_error(t, rc);
    }
    mf_trx_seterr(t, "body over %llu bytes", (unsigned long long)max);
    return MF_E_LIMIT;
  }
  int rc = mf_spool_write(&t->body, data, len);
  if (rc != 0)
    return body_spool_error(t, rc);
  return 0;
}

/* Index of macro k in the snapshot, or -1. */
static long macro_find(const mf_trx *t, const char *k, size_t klen) {
  for (size_t i = 0; i < t->nmacros; i++) {
    const mf_macro *m = &t->macros[i];
    if (m->value - m->name - 1 == klen &&
        memcmp(t->macblk + m->name, k, klen) == 0)
      return (long)i;
  }
  return -1;
}

/* Room for n more bytes in the block and one more entry. */
static int macro_room(mf_trx *t, size_t n) {
  if (t->macblk_len + n > UINT32_MAX)
    return MF_E_NOMEM;
  if (t->macblk_len + n > t->macblk_cap) {
    size_t cap = t->macblk_cap ? t->macblk_cap : 512;
    while (cap < t->macblk_len + n)
      cap *= 2;
    char *b = xrealloc(t->macblk, cap);
    if (b == NULL)
      return MF_E_NOMEM;
    t->macblk = b;
    t->macblk_cap = cap;
  }
  return mf_grow(&t->macros, &t->capmacros, t->nmacros, sizeof(*t->macros),
                 32);
}

int mf_grow(void *p, size_t *cap, size_t n, size_t elem, size_t first) {
  if (n < *cap)
    return 0;
  size_t c = *cap ? *cap * 2 : first;
  void *old; /* p points to a T *: copied, not aliased as void * */
  memcpy(&old, p, sizeof old);
  void *a = xrealloc(old, c * elem);
  if (a == NULL)
    return MF_E_NOMEM;
  memcpy(p, &a, sizeof a);
  *cap = c;
  return 0;
}

int mf_trx_macro_put(mf_trx *t, const char *k, size_t klen,
                     const char *value) {
  size_t vlen = strlen(value) + 1;
  int rc = macro_room(t, klen + 1 + vlen);
  if (rc != 0)
    return rc;
  mf_macro *m = &t->macros[t->nmacros++];
  m->name = (uint32_t)t->macblk_len;
  memcpy(t->macblk + t->macblk_len, k, klen);
  t->macblk[t->macblk_len + klen] = '\0';
  m->value = (uint32_t)(t->macblk_len + klen + 1);
  memcpy(t->macblk + m->value, value, vlen);
  t->macblk_len += klen + 1 + vlen;
  return 0;
}

int mf_engine_macro(mf_trx *t, const char *name, const char *value) {
  if (t == NULL || name == NULL || value == NULL)
    return MF_E_INVAL;
  const char *k;
  size_t klen;
  macro_key(name, &k, &klen);
  long i = macro_find(t, k, klen);
  int rc = mf_trx_macro_put(t, k, klen, value);
  if (rc == 0 && i >= 0) /* the new pair replaces the old one's entry */
    t->macros[i] = t->macros[--t->nmacros];
  return rc;
}

int mf_engine_limit_hit(const mf_trx *t) { return t ? t->limit : 0; }

/* ------------------------------------------------------------------------ */
/* Engine: running the user's functions                                     */
/* ------------------------------------------------------------------------ */

static mf_decision finish_call(mf_trx *t, mf_decision d) {
  if (d == MF_PENDING) {
    atomic_store(&t->pending, 1);
    return d; /* edits stay allowed until mf_trx_complete() */
  }
  t->in_call = 0;
  if (d < MF_FAIL || d > MF_PENDING)
    d = MF_FAIL;
  return d;
}

mf_decision mf_engine_decide(mf_trx *t, mf_stage stage, mf_decide_fn decide,
                             void *ud) {
  if (t == NULL || decide == NULL)
    return MF_FAIL;
  if (ensure_hdrs(t) != 0)
    return MF_FAIL;
  t->stage = stage;
  t->in_call = 1;
  if (t->err != NULL)
    t->err[0] = '\0'; /* what fails from here is the decision's */
  return finish_call(t, decide(t, ud));
}

mf_decision mf_engine_validate_rcpt(mf_trx *t, mf_rcpt_fn fn, void *ud) {
  if (t == NULL || fn == NULL || t->nrcpts == 0)
    return MF_FAIL;
  mf_rcpt *r = &t->rcpts[t->nrcpts - 1];
  mf_trx_parse_rcpt(t, r);
  t->stage = MF_STAGE_RCPT;
  t->in_call = 1;
  /* The validator may only reply: no edits of the message. */
  mf_decision d = fn(t, r->addr, r->params, ud);
  t->in_call = 0;
  if (d == MF_PENDING) {
    t->in_call = 1;
    atomic_store(&t->pending, 1);
  }
  return d;
}

int mf_trx_complete(mf_trx *t, mf_decision d) {
  if (t == NULL || d == MF_PENDING)
    return MF_E_INVAL;
  int one = 1;
  if (!atomic_compare_exchange_strong(&t->pending, &one, 0))
    return MF_E_STATE;
  t->in_call = 0;
  if (d < MF_FAIL || d > MF_QUARANTINE)
    d = MF_FAIL;
  if (t->complete != NULL)
    t->complete(t, d, t->complete_arg);
  return 0;
}

void mf_engine_clear_reply(mf_trx *t) {
  free(t->rcode);
  free(t->xcode);
  free(t->text);
  t->rcode = t->xcode = t->text = NULL;
}

const char *mf_engine_reply_rcode(const mf_trx *t) { return t->rcode; }
const char *mf_engine_reply_xcode(const mf_trx *t) { return t->xcode; }
const char *mf_engine_reply_text(const mf_trx *t) { return t->text; }
const char *mf_engine_quarantine_reason(const mf_trx *t) {
  return t->qreason ? t->qreason : "quarantined";
}
const char *mf_engine_last_error(const mf_trx *t) {
  return t && t->err ? t->err : "";
}

mf_mta mf_engine_mta_of(const mf_trx *t) {
  if (t->mta == MF_MTA_SENDMAIL || t->mta == MF_MTA_POSTFIX)
    return t->mta;
  const char *v = mf_trx_macro(t, "v");
  /* Postfix sends "Postfix 3.7.11"; Sendmail its version, "8.17.1.9". */
  if (v == NULL)
    return MF_MTA_AUTO;
  if (strncasecmp(v, "Postfix", 7) == 0)
    return MF_MTA_POSTFIX;
  return v[0] >= '0' && v[0] <= '9' ? MF_MTA_SENDMAIL : MF_MTA_AUTO;
}

int mf_engine_is_sendmail(const mf_trx *t) {
  return mf_engine_mta_of(t) == MF_MTA_SENDMAIL;
}

/* ------------------------------------------------------------------------ */
/* User side: reading                                                       */
/* ------------------------------------------------------------------------ */

mf_stage mf_trx_stage(const mf_trx *t) { return t->stage; }
mf_mta mf_trx_mta(const mf_trx *t) { return mf_engine_mta_of(t); }
const char *mf_trx_errmsg(const mf_trx *t) { return mf_engine_last_error(t); }
const char *mf_trx_client_hostname(const mf_trx *t) {
  return t->conn.hostname ? t->conn.hostname : "";
}
char mf_trx_client_family(const mf_trx *t) { return t->conn.family; }
const char *mf_trx_client_ip(const mf_trx *t) {
  return t->conn.ip ? t->conn.ip : "";
}
uint16_t mf_trx_client_port(const mf_trx *t) { return t->conn.port; }
const char *mf_trx_helo(const mf_trx *t) { return t->conn.helo; }

/* The accessors parse on first use: logically const. */
const mf_addr *mf_trx_mail_from(const mf_trx *t) {
  if (t->new_from_addr)
    return t->new_from_addr;
  mf_trx_parse_from((mf_trx *)t);
  return t->from;
}
const char *mf_trx_mail_raw(const mf_trx *t) {
  return t->new_from ? t->new_from : t->from_raw;
}
const mf_addr_params *mf_trx_mail_params(const mf_trx *t) {
  mf_trx_parse_from((mf_trx *)t);
  return t->from_params;
}

static mf_rcpt *nth_rcpt(const mf_trx *t, size_t i) {
  for (size_t k = 0; k < t->nrcpts; k++)
    if (!(t->rcpts[k].flags & MF_RCPT_DELETED) && i-- == 0)
      return &t->rcpts[k];
  return NULL;
}

size_t mf_trx_rcpt_count(const mf_trx *t) {
  size_t n = 0;
  for (size_t k = 0; k < t->nrcpts; k++)
    n += !(t->rcpts[k].flags & MF_RCPT_DELETED);
  return n;
}
const mf_addr *mf_trx_rcpt(const mf_trx *t, size_t i) {
  mf_rcpt *r = nth_rcpt(t, i);
  if (r == NULL)
    return NULL;
  mf_trx_parse_rcpt((mf_trx *)t, r);
  return r->addr;
}
const char *mf_trx_rcpt_raw(const mf_trx *t, size_t i) {
  mf_rcpt *r = nth_rcpt(t, i);
  return r ? r->raw : NULL;
}
const mf_addr_params *mf_trx_rcpt_params(const mf_trx *t, size_t i) {
  mf_rcpt *r = nth_rcpt(t, i);
  if (r == NULL)
    return NULL;
  mf_trx_parse_rcpt((mf_trx *)t, r);
  return r->params;
}

mf_hdrs *mf_trx_headers(mf_trx *t) {
  if (ensure_hdrs(t) != 0)
    return NULL;
  return t->hdrs;
}

uint64_t mf_trx_body_size(const mf_trx *t) { return t->body.size; }
const uint8_t *mf_trx_body_mem(const mf_trx *t) {
  if (t->body.fd >= 0)
    return NULL;
  return t->body.mem ? t->body.mem : (const uint8_t *)"";
}
int mf_trx_body_fd(const mf_trx *t) { return t->body.fd; }
ssize_t mf_trx_body_read(const mf_trx *t, uint64_t off, void *buf,
                         size_t len) {
  ssize_t n = mf_spool_read(&t->body, off, buf, len);
  if (n == MF_E_IO) {
    /* The cause, for the log line if the decision then fails (the trx is
     * never a const object: only the accessor's view is const). */
    int e = errno;
    mf_trx_seterr((mf_trx *)t, "body spool: cannot read its temp file: %s",
                  strerror(e));
    errno = e;
  }
  return n;
}
int mf_trx_truncated(const mf_trx *t) { return t->truncated; }

const char *mf_trx_macro(const mf_trx *t, const char *name) {
  if (t == NULL || name == NULL)
    return NULL;
  const char *k;
  size_t klen;
  macro_key(name, &k, &klen);
  long i = macro_find(t, k, klen);
  return i >= 0 ? t->macblk + t->macros[i].value : NULL;
}
const char *mf_trx_queue_id(const mf_trx *t) { return mf_trx_macro(t, "i"); }
const char *mf_trx_auth_authen(const mf_trx *t) {
  const char *v = mf_trx_macro(t, "auth_authen");
  return v != NULL && v[0] != '\0' ? v : NULL;
}

/* ------------------------------------------------------------------------ */
/* User side: deciding and changing                                         */
/* ------------------------------------------------------------------------ */

static int may_edit(mf_trx *t, int need_message) {
  if (t == NULL)
    return MF_E_INVAL;
  if (!t->in_call) {
    mf_trx_seterr(t, "changes are allowed only inside the decision function");
    return MF_E_STATE;
  }
  if (need_message && t->from_raw == NULL) {
    mf_trx_seterr(t, "no message yet at this stage");
    return MF_E_STATE;
  }
  return 0;
}

static int reply_code_ok(const char *rcode) {
  return rcode != NULL && strlen(rcode) == 3 &&
         (rcode[0] == '4' || rcode[0] == '5') && rcode[1] >= '0' &&
         rcode[1] <= '9' && rcode[2] >= '0' && rcode[2] <= '9';
}

int mf_trx_set_reply(mf_trx *t, const char *rcode, const char *xcode,
                     const char *text) {
  int rc = may_edit(t, 0);
  if (rc != 0)
    return rc;
  if (!reply_code_ok(rcode)) {
    mf_trx_seterr(t, "reply code must be 4xx or 5xx");
    return MF_E_INVAL;
  }
  if (xcode != NULL && (xcode[0] != rcode[0] || xcode[1] != '.')) {
    mf_trx_seterr(t, "extended code %s does not match %s", xcode, rcode);
    return MF_E_INVAL;
  }
  if (text != NULL)
    for (const char *p = text; *p; p++)
      if (*p == '\r') {
        mf_trx_seterr(t, "reply text: use \\n between lines, not \\r");
        return MF_E_INVAL;
      }
  if (set_str(&t->rcode, rcode) || set_str(&t->xcode, xcode) ||
      set_str(&t->text, text))
    return MF_E_NOMEM;
  return 0;
}

int mf_trx_quarantine(mf_trx *t, const char *reason) {
  int rc = may_edit(t, 0);
  if (rc != 0)
    return rc;
  if (reason == NULL || reason[0] == '\0' || strpbrk(reason, "\r\n")) {
    mf_trx_seterr(t, "quarantine reason must be one non-empty line");
    return MF_E_INVAL;
  }
  return set_str(&t->qreason, reason);
}

int mf_trx_change_from(mf_trx *t, const char *addr, const char *args) {
  int rc = may_edit(t, 1);
  if (rc != 0)
    return rc;
  mf_addr *a = NULL;
  const char *why = NULL;
  if (addr == NULL ||
      mf_addr_parse(addr, MF_ADDR_MAIL_FROM, &a, &why) != 0) {
    mf_trx_seterr(t, "change_from %s: %s", addr ? addr : "(null)",
                  why ? why : "invalid");
    return MF_E_ADDR;
  }
  if (args != NULL && args[0] != '\0') {
    mf_addr_params *p = NULL;
    if (mf_addr_params_parse(args, &p, &why) != 0) {
      mf_addr_free(a);
      mf_trx_seterr(t, "change_from args \"%s\": %s", args, why ? why : "");
      return MF_E_ADDR;
    }
    mf_addr_params_free(p);
  }
  char *s = NULL;
  if (mf_addr_format_alloc(a, MF_ADDR_FMT_BRACKETS, &s) < 0) {
    mf_addr_free(a);
    return MF_E_NOMEM;
  }
  free(t->new_from);
  mf_addr_free(t->new_from_addr);
  t->new_from = s;
  t->new_from_addr = a;
  if (set_str(&t->new_from_args, args && args[0] ? args : NULL) != 0)
    return MF_E_NOMEM;
  return 0;
}

int mf_trx_add_rcpt(mf_trx *t, const char *addr, const char *args) {
  int rc = may_edit(t, 1);
  if (rc != 0)
    return rc;
  mf_addr *a = NULL;
  mf_addr_params *p = NULL;
  const char *why = NULL;
  if (addr == NULL || mf_addr_parse(addr, MF_ADDR_RCPT_TO, &a, &why) != 0) {
    mf_trx_seterr(t, "add_rcpt %s: %s", addr ? addr : "(null)",
                  why ? why : "invalid");
    return MF_E_ADDR;
  }
  if (args != NULL && args[0] != '\0' &&
      mf_addr_params_parse(args, &p, &why) != 0) {
    mf_addr_free(a);
    mf_trx_seterr(t, "add_rcpt args \"%s\": %s", args, why ? why : "");
    return MF_E_ADDR;
  }
  if (t->nrcpts == t->caprcpts) {
    size_t cap = t->caprcpts ? t->caprcpts * 2 : 4;
    mf_rcpt *r = xrealloc(t->rcpts, cap * sizeof(*r));
    if (r == NULL)
      goto nomem;
    t->rcpts = r;
    t->caprcpts = cap;
  }
  mf_rcpt *r = &t->rcpts[t->nrcpts];
  memset(r, 0, sizeof(*r));
  if (mf_addr_format_alloc(a, MF_ADDR_FMT_BRACKETS, &r->raw) < 0 ||
      (args && args[0] && (r->args = xstrdup(args)) == NULL)) {
    free(r->raw);
    goto nomem;
  }
  r->addr = a;
  r->params = p;
  r->parsed = 1;
  t->nrcpts++;
  return 0;
nomem:
  mf_addr_free(a);
  mf_addr_params_free(p);
  return MF_E_NOMEM;
}

int mf_trx_del_rcpt(mf_trx *t, const char *addr) {
  int rc = may_edit(t, 1);
  if (rc != 0)
    return rc;
  mf_addr *a = NULL;
  const char *why = NULL;
  if (addr == NULL ||
      mf_addr_parse(addr, MF_ADDR_RCPT_TO | MF_ADDR_LAX_DOTS, &a, &why) != 0) {
    mf_trx_seterr(t, "del_rcpt %s: %s", addr ? addr : "(null)",
                  why ? why : "invalid");
    return MF_E_ADDR;
  }
  int n = 0;
  for (size_t k = 0; k < t->nrcpts; k++) {
    mf_rcpt *r = &t->rcpts[k];
    if (r->flags & MF_RCPT_DELETED)
      continue;
    mf_trx_parse_rcpt(t, r);
    if (r->addr != NULL ? mf_addr_equal(r->addr, a) == 1
                        : strcmp(r->raw, addr) == 0) {
      r->flags |= MF_RCPT_DELETED;
      n++;
    }
  }
  mf_addr_free(a);
  return n;
}

static int start_body(mf_trx *t) {
  int rc = may_edit(t, 1);
  if (rc != 0)
    return rc;
  if (t->newbody == NULL) {
    if ((t->newbody = xmalloc(sizeof(*t->newbody))) == NULL)
      return MF_E_NOMEM;
    mf_spool_init(t->newbody, t->opts->body_mem_max, t->opts->spool_dir);
    t->newbody->budget = t->opts->body_mem_total;
  }
  mf_spool_reset(t->newbody);
  t->body_replaced = 1;
  return 0;
}

/* A failed write is remembered by the spool (newbody->err): the actions
 * then fail (diff.c) instead of sending a partial body. */
static int newbody_write(mf_trx *t, const void *data, size_t len) {
  int rc = mf_spool_write(t->newbody, data, len);
  return rc != 0 ? mf_trx_spool_error(t, t->newbody, "replacement body", rc) : 0;
}

int mf_trx_replace_body(mf_trx *t, const void *data, size_t len) {
  if (data == NULL && len > 0)
    return MF_E_INVAL;
  int rc = start_body(t);
  if (rc == 0)
    rc = newbody_write(t, data, len);
  return rc;
}

int mf_trx_replace_body_fd(mf_trx *t, int fd) {
  if (fd < 0)
    return MF_E_INVAL;
  int rc = start_body(t);
  if (rc != 0)
    return rc;
  uint8_t buf[65536];
  off_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof(buf), off);
    if (n < 0) {
      mf_trx_seterr(t, "replace_body_fd: read failed");
      return MF_E_IO;
    }
    if (n == 0)
      return 0;
    off += n;
    if ((rc = newbody_write(t, buf, (size_t)n)) != 0)
      return rc;
  }
}

int mf_trx_replace_body_file(mf_trx *t, const char *path) {
  if (path == NULL)
    return MF_E_INVAL;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    if (t)
      mf_trx_seterr(t, "replace_body_file %s: cannot open", path);
    return MF_E_IO;
  }
  int rc = mf_trx_replace_body_fd(t, fileno(f));
  fclose(f);
  return rc;
}
