/* diff.c -- from what the decision function changed on the trx to the
 * minimal list of milter actions, by the index rules of the MTA.
 *
 * Header indexes (DESIGN.md, reference/milter-landscape.md):
 *   - CHGHEADER's index is the 1-based occurrence among fields of that name
 *     (case-insensitive); an empty value deletes.  Postfix unlinks a deleted
 *     field (later occurrences shift), Sendmail only marks it.
 *   - INSHEADER's index is global, 0 = top of the MTA's own list, and both
 *     MTAs keep one header the milter never saw at the top (their own
 *     Received:), so "before visible field p" is index p + 1.
 *   - ADDHEADER appends; Sendmail may instead re-use a deleted field of the
 *     same name, so for Sendmail appends are INSHEADER past the end.
 * mf_hdr_diff() gives the changes in terms of the ORIGINAL list; applying
 * them from the last original position to the first keeps every index
 * valid whatever the MTA does with deleted slots, so they are emitted in
 * that order, with appends first (an append never moves an original).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mf_int.h"

#include <mailfilter/milter_proto.h>
#include "mf_alloc.h"

/* Fields the MTA keeps above what it sent us (its own Received:). */
#define HIDDEN_TOP 1u
/* INSHEADER index that means "at the end" for Sendmail. */
#define SENDMAIL_APPEND_INDEX 1000000u

typedef struct alist {
  milter_action *a;
  size_t n, cap;
} alist;

static milter_action *push(alist *l, milter_action_type type) {
  if (mf_grow(&l->a, &l->cap, l->n, sizeof(*l->a), 8) != 0)
    return NULL;
  milter_action *a = &l->a[l->n++];
  memset(a, 0, sizeof(*a));
  a->type = type;
  return a;
}

void mf_engine_actions_free(milter_action *a, size_t n) {
  if (a == NULL)
    return;
  for (size_t i = 0; i < n; i++) {
    free(a[i].name);
    free(a[i].value);
    free(a[i].body);
  }
  free(a);
}

/* The value as the MTA wants it: LF line ends (Postfix doubles CRs
 * otherwise), one leading space iff HDR_LEADSPC was negotiated, never empty
 * on a change (empty means delete). */
static char *wire_value(const mf_trx *t, const char *v, size_t len,
                        int leadspc, int for_change) {
  int lead = (t->protocol & MILTER_P_HDR_LEADSPC) != 0;
  size_t skip = 0;
  if (!lead && leadspc && len > 0 && v[0] == ' ')
    skip = 1;
  char *out = xmalloc(len + 3);
  if (out == NULL)
    return NULL;
  size_t o = 0;
  if (lead && !leadspc)
    out[o++] = ' ';
  for (size_t i = skip; i < len; i++) {
    if (v[i] == '\r' && i + 1 < len && v[i + 1] == '\n')
      continue;
    out[o++] = v[i];
  }
  if (for_change && o == 0)
    out[o++] = ' ';
  out[o] = '\0';
  return out;
}

static int add_hdr_action(alist *l, const mf_trx *t, milter_action_type type,
                          uint32_t index, const char *name, const char *value,
                          size_t vlen, int leadspc, int is_delete) {
  milter_action *a = push(l, type);
  if (a == NULL)
    return MF_E_NOMEM;
  a->index = index;
  a->name = xstrdup(name);
  a->value = is_delete ? xstrdup("")
                       : wire_value(t, value, vlen, leadspc, 1);
  return a->name && a->value ? 0 : MF_E_NOMEM;
}

static int need(mf_trx *t, uint32_t act, const char *what) {
  if (t->actions & act)
    return 0;
  mf_trx_seterr(t, "the MTA did not grant %s", what);
  return MF_E_NOTSUP;
}

static int header_actions(mf_trx *t, alist *l) {
  mf_hdr_change *ch = NULL;
  size_t n = 0;
  unsigned f = (t->opts->flags & MF_OPT_RECREATE_HEADERS) ? MF_HDR_DIFF_RECREATE
                                                          : 0;
  int rc = mf_hdr_diff(t->hdrs, f, &ch, &n);
  if (rc != 0) {
    mf_trx_seterr(t, "header diff: %s", mf_hdr_strerror(rc));
    return rc == MF_HDR_E_NOMEM ? MF_E_NOMEM : MF_E_HEADER;
  }
  if (n == 0)
    return 0;
  /* Number of original fields: current + deleted - inserted.  An INSERT
   * at that index is an append. */
  size_t norig = mf_hdr_count(t->hdrs);
  for (size_t i = 0; i < n; i++) {
    if (ch[i].kind == MF_HDR_DELETE)
      norig++;
    else if (ch[i].kind == MF_HDR_INSERT)
      norig--;
  }
  int sendmail = mf_engine_is_sendmail(t);
  for (size_t i = 0; i < n && rc == 0; i++) {
    const mf_hdr_change *c = &ch[i];
    if (c->kind == MF_HDR_INSERT && c->index >= norig) {
      if ((rc = need(t, MILTER_ACT_ADDHDRS, "ADDHDRS (add a header)")) != 0)
        break;
      if (sendmail)
        rc = add_hdr_action(l, t, MILTER_ACTION_INSHEADER,
                            SENDMAIL_APPEND_INDEX, c->name, c->value,
                            c->value_len, c->leadspc, 0);
      else
        rc = add_hdr_action(l, t, MILTER_ACTION_ADDHEADER, 0, c->name,
                            c->value, c->value_len, c->leadspc, 0);
    }
  }
  for (size_t k = n; k-- > 0 && rc == 0;) {
    const mf_hdr_change *c = &ch[k];
    switch (c->kind) {
    case MF_HDR_INSERT:
      if (c->index >= norig)
        break;
      if ((rc = need(t, MILTER_ACT_ADDHDRS, "ADDHDRS (insert a header)")) != 0)
        break;
      rc = add_hdr_action(l, t, MILTER_ACTION_INSHEADER,
                          (uint32_t)(c->index + HIDDEN_TOP), c->name, c->value,
                          c->value_len, c->leadspc, 0);
      break;
    case MF_HDR_CHANGE:
    case MF_HDR_DELETE:
      if ((rc = need(t, MILTER_ACT_CHGHDRS, "CHGHDRS (change a header)")) != 0)
        break;
      rc = add_hdr_action(l, t, MILTER_ACTION_CHGHEADER,
                          (uint32_t)c->occurrence, c->name, c->value,
                          c->value_len, c->leadspc, c->kind == MF_HDR_DELETE);
      break;
    }
  }
  mf_hdr_changes_free(ch);
  return rc;
}

/* An added recipient that cancels a deleted original one (same address,
 * same args): neither is sent. */
static int cancels(mf_trx *t, mf_rcpt *orig, mf_rcpt *added) {
  mf_trx_parse_rcpt(t, orig);
  if (orig->addr == NULL || added->addr == NULL ||
      mf_addr_equal(orig->addr, added->addr) != 1)
    return 0;
  char *a = NULL;
  if (orig->params != NULL && mf_addr_params_count(orig->params) > 0 &&
      mf_addr_params_format_alloc(orig->params, &a) < 0)
    return 0;
  const char *b = added->args ? added->args : "";
  int same = strcmp(a ? a : "", b) == 0;
  free(a);
  return same;
}

static int rcpt_actions(mf_trx *t, alist *l) {
  size_t n = t->nrcpts;
  char *skip = xcalloc(n ? n : 1, 1);
  if (skip == NULL)
    return MF_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    mf_rcpt *r = &t->rcpts[i];
    if ((r->flags & MF_RCPT_ORIG) && (r->flags & MF_RCPT_DELETED))
      for (size_t k = 0; k < n; k++) {
        mf_rcpt *q = &t->rcpts[k];
        if (!skip[k] && !(q->flags & MF_RCPT_ORIG) &&
            !(q->flags & MF_RCPT_DELETED) && cancels(t, r, q)) {
          skip[i] = skip[k] = 1;
          break;
        }
      }
  }
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    const mf_rcpt *r = &t->rcpts[i];
    if (skip[i] || !(r->flags & MF_RCPT_ORIG) || !(r->flags & MF_RCPT_DELETED))
      continue;
    if ((rc = need(t, MILTER_ACT_DELRCPT, "DELRCPT")) != 0)
      break;
    milter_action *a = push(l, MILTER_ACTION_DELRCPT);
    if (a == NULL || (a->name = xstrdup(r->raw)) == NULL)
      rc = MF_E_NOMEM;
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    const mf_rcpt *r = &t->rcpts[i];
    if (skip[i] || (r->flags & (MF_RCPT_ORIG | MF_RCPT_DELETED)))
      continue;
    milter_action *a;
    if (r->args != NULL) {
      if ((rc = need(t, MILTER_ACT_ADDRCPT_PAR,
                     "ADDRCPT_PAR (add a recipient with ESMTP args)")) != 0)
        break;
      a = push(l, MILTER_ACTION_ADDRCPT_PAR);
      if (a == NULL || (a->name = xstrdup(r->raw)) == NULL ||
          (a->value = xstrdup(r->args)) == NULL)
        rc = MF_E_NOMEM;
    } else {
      if ((rc = need(t, MILTER_ACT_ADDRCPT, "ADDRCPT")) != 0)
        break;
      a = push(l, MILTER_ACTION_ADDRCPT);
      if (a == NULL || (a->name = xstrdup(r->raw)) == NULL)
        rc = MF_E_NOMEM;
    }
  }
  free(skip);
  return rc;
}

static int from_changed(mf_trx *t) {
  if (t->new_from == NULL)
    return 0;
  mf_trx_parse_from(t);
  if (t->from == NULL || t->new_from_addr == NULL ||
      mf_addr_equal(t->from, t->new_from_addr) != 1)
    return 1;
  char *a = NULL;
  if (t->from_params != NULL && mf_addr_params_count(t->from_params) > 0 &&
      mf_addr_params_format_alloc(t->from_params, &a) < 0)
    return 1;
  int same = strcmp(a ? a : "", t->new_from_args ? t->new_from_args : "") == 0;
  free(a);
  return !same;
}

static int hdrs_changed(mf_trx *t) {
  if (t->hdrs == NULL)
    return 0;
  mf_hdr_change *ch = NULL;
  size_t n = 0;
  if (mf_hdr_diff(t->hdrs, 0, &ch, &n) != 0)
    return 1; /* let mf_engine_actions() report it */
  mf_hdr_changes_free(ch);
  return n > 0;
}

int mf_engine_has_changes(mf_trx *t) {
  if (t == NULL)
    return 0;
  if (t->body_replaced || t->qreason != NULL || from_changed(t))
    return 1;
  for (size_t i = 0; i < t->nrcpts; i++) {
    unsigned f = t->rcpts[i].flags;
    if (((f & MF_RCPT_ORIG) != 0) == ((f & MF_RCPT_DELETED) != 0))
      return 1; /* deleted original, or added and kept */
  }
  return hdrs_changed(t);
}

/* Read len bytes of the replacement body at off (short reads retried); a
 * failure's cause goes to t->err. */
static int read_newbody(mf_trx *t, uint64_t off, uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = mf_spool_read(t->newbody, off, buf, len);
    if (n <= 0) {
      mf_trx_seterr(t, "replacement body: cannot read back its temp file: %s",
                    strerror(n == 0 ? EIO : errno));
      return MF_E_IO;
    }
    buf += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  return 0;
}

int mf_engine_actions(mf_trx *t, mf_decision d, unsigned flags,
                      milter_action **out, size_t *nout) {
  if (t == NULL || out == NULL || nout == NULL)
    return MF_E_INVAL;
  *out = NULL;
  *nout = 0;
  alist l = {0};
  int rc = 0;
  if (t->hdrs != NULL)
    rc = header_actions(t, &l);
  if (rc == 0 && t->from_raw != NULL)
    rc = rcpt_actions(t, &l);
  if (rc == 0 && from_changed(t)) {
    if ((rc = need(t, MILTER_ACT_CHGFROM, "CHGFROM (change the sender)")) ==
        0) {
      milter_action *a = push(&l, MILTER_ACTION_CHGFROM);
      if (a == NULL || (a->name = xstrdup(t->new_from)) == NULL ||
          (t->new_from_args &&
           (a->value = xstrdup(t->new_from_args)) == NULL))
        rc = MF_E_NOMEM;
    }
  }
  if (rc == 0 && d == MF_QUARANTINE) {
    if ((rc = need(t, MILTER_ACT_QUARANTINE, "QUARANTINE")) == 0) {
      milter_action *a = push(&l, MILTER_ACTION_QUARANTINE);
      if (a == NULL ||
          (a->value = xstrdup(mf_engine_quarantine_reason(t))) == NULL)
        rc = MF_E_NOMEM;
    }
  }
  if (rc == 0 && t->body_replaced && t->newbody->err != 0)
    rc = mf_trx_spool_error(t, t->newbody, "replacement body", MF_E_IO);
  if (rc == 0 && t->body_replaced) {
    if ((rc = need(t, MILTER_ACT_CHGBODY, "CHGBODY (replace the body)")) ==
        0) {
      milter_action *a = push(&l, MILTER_ACTION_REPLBODY);
      if (a == NULL) {
        rc = MF_E_NOMEM;
      } else {
        uint64_t size = t->newbody->size;
        size_t ds = t->data_size ? t->data_size : MILTER_DATA_64K;
        a->body_len = (size_t)size;
        a->chunks = size == 0 ? 1 : (unsigned)((size + ds - 1) / ds);
        if (!(flags & MF_ENGINE_BODY_REF) && size > 0) {
          a->body = xmalloc((size_t)size);
          if (a->body == NULL)
            rc = MF_E_NOMEM;
          else
            rc = read_newbody(t, 0, a->body, (size_t)size);
        }
      }
    }
  }
  if (rc != 0) {
    mf_engine_actions_free(l.a, l.n);
    return rc;
  }
  *out = l.a;
  *nout = l.n;
  return 0;
}

int mf_engine_replbody(mf_trx *t, size_t max,
                       int (*fn)(void *arg, const void *p, size_t n),
                       void *arg) {
  if (t == NULL || fn == NULL || max == 0)
    return MF_E_INVAL;
  if (!t->body_replaced)
    return 0;
  if (t->newbody->fd < 0) {
    for (size_t off = 0; off < t->newbody->len; off += max) {
      size_t n = t->newbody->len - off < max ? t->newbody->len - off : max;
      int rc = fn(arg, t->newbody->mem + off, n);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  uint8_t *buf = xmalloc(max);
  if (buf == NULL)
    return MF_E_NOMEM;
  int rc = 0;
  for (uint64_t off = 0; off < t->newbody->size && rc == 0;) {
    size_t n = t->newbody->size - off < max ? (size_t)(t->newbody->size - off)
                                            : max;
    rc = read_newbody(t, off, buf, n);
    if (rc == 0)
      rc = fn(arg, buf, n);
    off += n;
  }
  free(buf);
  return rc;
}
