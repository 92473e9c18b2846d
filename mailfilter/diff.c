/* diff.c -- from what the decision function changed on the trx to the
 * minimal list of milter actions, by the index rules of the MTA.
 *
 * Header actions as the MTAs apply them (Postfix cleanup_milter.c,
 * Sendmail milter.c and headers.c; mailfilter.h, HEADER EDITS ON EACH MTA):
 *   - CHGHEADER's index is the 1-based occurrence among fields of that name
 *     (case-insensitive); an empty value deletes.  Postfix unlinks a deleted
 *     field (later occurrences shift), Sendmail only marks it.
 *   - ADDHEADER, INSHEADER: an empty value gives "Name:" with HDR_LEADSPC;
 *     so a change to an empty value is a delete and an insert.
 *   - INSHEADER past the end appends on both.  ADDHEADER appends on Postfix;
 *     Sendmail puts it into a sendmail.cf template of that name (Date,
 *     From, Message-Id...: the fields it adds itself, unseen by the
 *     milter, when the message lacks them), else above the first field of
 *     that name.
 *   - INSHEADER's index counts Postfix's current list, its own Received:
 *     first, so "before visible field p" is p + 1.  Sendmail's counts its
 *     list with the .cf's H templates (the message does not carry most of
 *     them) before the message's fields: only "under Received" (1) and
 *     "past the end" mean the same there whatever the .cf.
 * mf_hdr_diff() gives the changes in terms of the ORIGINAL list; applying
 * them from the last original position to the first keeps every index
 * valid whatever the MTA does with deleted slots, so they are emitted in
 * that order, with appends first (an append never moves an original).
 * Postfix gets the minimal list (postfix_actions()); Sendmail and an MTA
 * not known get one made of the actions that mean the same on both
 * (safe_actions()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mf_int.h"

#include <mailfilter/milter_proto.h>
#include "mf_alloc.h"

/* Fields the MTA keeps above what it sent us (its own Received:). */
#define HIDDEN_TOP 1u
/* An INSHEADER index past the end of any header: an append on both MTAs
 * (Sendmail's insheader() and Postfix's cleanup_ins_header() both append
 * when the list ends before the index). */
#define APPEND_INDEX 1000000u

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
 * otherwise), one leading space iff HDR_LEADSPC was negotiated and the
 * field's own convention leaves it out.  May be empty (see wire_empty()). */
static char *wire_value(const mf_trx *t, const char *v, size_t len,
                        int leadspc) {
  int lead = (t->protocol & MILTER_P_HDR_LEADSPC) != 0;
  size_t skip = 0;
  if (!lead && leadspc && len > 0 && v[0] == ' ')
    skip = 1;
  char *out = xmalloc(len + 2);
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
  out[o] = '\0';
  return out;
}

/* 1 when wire_value() of this value is "": as a CHGHEADER value that
 * would delete the field. */
static int wire_empty(const mf_trx *t, const char *v, size_t len,
                      int leadspc) {
  int lead = (t->protocol & MILTER_P_HDR_LEADSPC) != 0;
  if (lead && !leadspc)
    return 0;
  return len == 0 || (!lead && leadspc && len == 1 && v[0] == ' ');
}

/* A header action; value NULL: a delete (CHGHEADER with ""). */
static int add_hdr_action(alist *l, const mf_trx *t, milter_action_type type,
                          uint32_t index, const char *name, const char *value,
                          size_t vlen, int leadspc) {
  milter_action *a = push(l, type);
  if (a == NULL)
    return MF_E_NOMEM;
  a->index = index;
  a->name = xstrdup(name);
  a->value = value == NULL ? xstrdup("") : wire_value(t, value, vlen, leadspc);
  return a->name && a->value ? 0 : MF_E_NOMEM;
}

static int need(mf_trx *t, uint32_t act, const char *what) {
  if (t->actions & act)
    return 0;
  mf_trx_seterr(t, "the MTA did not grant %s", what);
  return MF_E_NOTSUP;
}

static int need_add(mf_trx *t) {
  return need(t, MILTER_ACT_ADDHDRS, "ADDHDRS (add a header)");
}
static int need_chg(mf_trx *t) {
  return need(t, MILTER_ACT_CHGHDRS, "CHGHDRS (change a header)");
}

/* A CHANGE whose value would go out empty (a delete to CHGHEADER). */
static int empty_change(const mf_trx *t, const mf_hdr_change *c) {
  return c->kind == MF_HDR_CHANGE &&
         wire_empty(t, c->value, c->value_len, c->leadspc);
}

/* The diff's changes with every CHANGE to a value that would go out empty
 * (an empty value means delete to CHGHEADER) made a DELETE plus an INSERT
 * of the new value where the field was: right after it, before anything
 * else inserted before the next original (index + 1, first of its
 * index).  The list stays sorted as mf_hdr_diff() sorts it.  *out points
 * into ch's strings; free() it.  No such change (the usual case): *out is
 * NULL, nothing allocated, ch is the list. */
static int split_empty_changes(const mf_trx *t, const mf_hdr_change *ch,
                               size_t n, mf_hdr_change **out, size_t *nout) {
  *out = NULL;
  *nout = n;
  size_t first = 0;
  while (first < n && !empty_change(t, &ch[first]))
    first++;
  if (first == n)
    return 0;
  mf_hdr_change *x = xmalloc((2 * n + 1) * sizeof(*x));
  if (x == NULL)
    return MF_E_NOMEM;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    x[m++] = ch[i];
    if (!empty_change(t, &ch[i]))
      continue;
    x[m - 1].kind = MF_HDR_DELETE;
    x[m - 1].value = NULL;
    x[m - 1].value_len = 0;
    x[m] = ch[i];
    x[m].kind = MF_HDR_INSERT;
    x[m].index = ch[i].index + 1;
    x[m].occurrence = 0;
    m++;
  }
  *out = x;
  *nout = m;
  return 0;
}

/* Postfix: INSHEADER's index counts the current list (deleted fields are
 * unlinked), so "before original p" is p + HIDDEN_TOP when the changes go
 * bottom up, and ADDHEADER appends. */
static int postfix_actions(mf_trx *t, alist *l, const mf_hdr_change *ch,
                           size_t n, size_t norig) {
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    const mf_hdr_change *c = &ch[i];
    if (c->kind == MF_HDR_INSERT && c->index >= norig && (rc = need_add(t)) == 0)
      rc = add_hdr_action(l, t, MILTER_ACTION_ADDHEADER, 0, c->name, c->value,
                          c->value_len, c->leadspc);
  }
  for (size_t k = n; k-- > 0 && rc == 0;) {
    const mf_hdr_change *c = &ch[k];
    if (c->kind == MF_HDR_INSERT) {
      if (c->index < norig && (rc = need_add(t)) == 0)
        rc = add_hdr_action(l, t, MILTER_ACTION_INSHEADER,
                            (uint32_t)(c->index + HIDDEN_TOP), c->name,
                            c->value, c->value_len, c->leadspc);
    } else if ((rc = need_chg(t)) == 0) {
      rc = add_hdr_action(l, t, MILTER_ACTION_CHGHEADER,
                          (uint32_t)c->occurrence, c->name,
                          c->kind == MF_HDR_DELETE ? NULL : c->value,
                          c->value_len, c->leadspc);
    }
  }
  return rc;
}

/* The header templates (H lines) of every sendmail.cf built from
 * Sendmail's m4 that Sendmail fills itself at delivery when the message
 * lacks the field, without sending it to the milter (the Resent- ones on
 * a resent message).  A milter's ADDHEADER of such a name fills the
 * template instead of adding a field: one field, in the template's
 * place. */
static const char *const SM_DEFAULTS[] = {
    "Date",        "From",        "Message-Id",
    "Resent-Date", "Resent-From", "Resent-Message-Id"};
#define N_SM_DEFAULTS (sizeof(SM_DEFAULTS) / sizeof(SM_DEFAULTS[0]))

/* The index of name in SM_DEFAULTS (ASCII case-insensitive), or
 * N_SM_DEFAULTS. */
static size_t sm_default(const char *name) {
  size_t k = 0;
  while (k < N_SM_DEFAULTS && strcasecmp(name, SM_DEFAULTS[k]) != 0)
    k++;
  return k;
}

/* The list the filter ended with, in order, with the original fields that
 * were deleted where they were: what safe_actions() plans with. */
enum { IT_INS = 0, IT_KEEP = 1, IT_CHG = 2, IT_DEL = 3 };
typedef struct hitem {
  uint8_t kind;
  uint8_t where; /* W_* */
  size_t orig;   /* KEEP, CHG, DEL: the original's index */
  size_t cur;    /* INS, KEEP, CHG: the field's current index */
  const mf_hdr_change *c; /* NULL for KEEP */
} hitem;
/* W_FILL: an added field sent as ADDHEADER (mark_fills()). */
enum { W_PLACE = 0, W_TOP = 1, W_END = 2, W_FILL = 3 };

static const char *item_name(const mf_hdrs *h, const hitem *x) {
  return x->c ? x->c->name : mf_hdr_name(h, x->cur);
}

/* The original index's CHGHEADER occurrence: 1 + the originals before it
 * of the same name (ASCII case-insensitive). */
static size_t occurrence_of(const mf_hdrs *h, const hitem *it, size_t upto) {
  const hitem *x = &it[upto];
  if (x->c != NULL)
    return x->c->occurrence;
  const char *name = mf_hdr_name(h, x->cur);
  size_t occ = 1;
  for (size_t i = 0; i < upto; i++)
    if (it[i].kind != IT_INS && strcasecmp(item_name(h, &it[i]), name) == 0)
      occ++;
  return occ;
}

/* Mark W_FILL, for each name of SM_DEFAULTS that no original field has,
 * the first added field of that name: Sendmail added that field itself
 * without telling the milter, and an ADDHEADER takes its place where an
 * INSHEADER would deliver two.  Such a field needs no position. */
static void mark_fills(const mf_hdrs *h, hitem *it, size_t nit) {
  unsigned char seen[N_SM_DEFAULTS] = {0};
  for (size_t i = 0; i < nit; i++) {
    size_t k = sm_default(item_name(h, &it[i]));
    if (k < N_SM_DEFAULTS && it[i].kind != IT_INS)
      seen[k] = 1;
  }
  for (size_t i = 0; i < nit; i++) {
    size_t k = sm_default(item_name(h, &it[i]));
    if (k < N_SM_DEFAULTS && it[i].kind == IT_INS && !seen[k]) {
      seen[k] = 1;
      it[i].where = W_FILL;
    }
  }
}

/* INSHEADER at index (or ADDHEADER) of the current field cur, as it is
 * now. */
static int place_field(mf_trx *t, alist *l, size_t cur,
                       milter_action_type type, uint32_t index) {
  size_t len;
  const char *raw = mf_hdr_raw(t->hdrs, cur, &len);
  int rc = need_add(t);
  if (rc == 0)
    rc = add_hdr_action(l, t, type, index, mf_hdr_name(t->hdrs, cur), raw,
                        len, mf_hdr_leadspc(t->hdrs, cur));
  return rc;
}

/* Sendmail, and an MTA not known: only what means the same on both.
 *   - CHGHEADER by occurrence, bottom up, before any field is placed above
 *     the originals (Sendmail counts every field of its list that carries
 *     the name, the ones added by this filter included; Postfix unlinks a
 *     deleted field and Sendmail only marks it: bottom up is right for
 *     both);
 *   - an append is INSHEADER past the end (ADDHEADER on Sendmail goes
 *     above the first field of that name, or replaces a sendmail.cf
 *     template's value);
 *   - a field above every kept original is INSHEADER at HIDDEN_TOP, right
 *     under the MTA's own Received: (Sendmail's index counts entries of
 *     its list, the .cf's H templates first: 9 in every .cf built from
 *     Sendmail's m4, Return-Path then Received, so index 1 is under
 *     Received whatever the rest; Postfix: under its Received);
 *   - nothing else: an index in the middle counts the templates on
 *     Sendmail.  So one run of originals stays in place -- the one whose
 *     keeping saves the most actions -- the fields above it are inserted
 *     at the top and the fields below it appended, an original among them
 *     deleted and re-created with its current value;
 *   - except the first added Date, From, Message-Id or Resent- one of a
 *     name no original has (mark_fills()): ADDHEADER, which on Sendmail
 *     fills the template of that name (the field Sendmail adds itself and
 *     never sends: an INSHEADER would deliver two) and on Postfix
 *     appends; it needs no place in the plan. */
static int safe_actions(mf_trx *t, alist *l, const mf_hdr_change *ch,
                        size_t n, size_t norig) {
  const mf_hdrs *h = t->hdrs;
  size_t cap = n + norig + 1;
  hitem *it = xmalloc(cap * sizeof(*it));
  if (it == NULL)
    return MF_E_NOMEM;
  size_t nit = 0, cur = 0, k = 0;
  for (size_t i = 0; i <= norig; i++) {
    for (; k < n && ch[k].index == i && ch[k].kind == MF_HDR_INSERT; k++)
      it[nit++] = (hitem){IT_INS, W_PLACE, 0, cur++, &ch[k]};
    if (i == norig)
      break;
    if (k < n && ch[k].index == i) {
      int del = ch[k].kind == MF_HDR_DELETE;
      it[nit++] = (hitem){del ? IT_DEL : IT_CHG, W_PLACE, i, del ? 0 : cur,
                          &ch[k]};
      cur += !del;
      k++;
    } else {
      it[nit++] = (hitem){IT_KEEP, W_PLACE, i, cur++, NULL};
    }
  }
  int rc = 0;
  if (k != n || cur != mf_hdr_count(h)) {
    mf_trx_seterr(t, "header diff: inconsistent change list");
    rc = MF_E_HEADER;
  }
  if (rc == 0)
    mark_fills(h, it, nit);
  /* The run kept in place: between two inserts that have kept originals
   * on both sides, the one that saves most (an untouched original kept
   * saves a delete and a re-create, a changed one a delete); the first on
   * a tie (appends do not depend on the MTA's list at all).  A W_FILL
   * field splits nothing. */
  size_t first = nit, last = 0;
  for (size_t i = 0; i < nit; i++)
    if (it[i].kind == IT_KEEP || it[i].kind == IT_CHG) {
      if (first == nit)
        first = i;
      last = i;
    }
  size_t best_lo = nit, best_hi = 0, best = 0, lo = nit, hi = 0, save = 0;
  for (size_t i = 0; i <= nit && rc == 0; i++) {
    int split = i == nit || (it[i].kind == IT_INS && it[i].where != W_FILL &&
                             i > first && i < last);
    if (split) {
      if (lo != nit && save > best) {
        best = save;
        best_lo = lo;
        best_hi = hi;
      }
      lo = nit;
      save = 0;
      continue;
    }
    if (it[i].kind == IT_KEEP || it[i].kind == IT_CHG) {
      if (lo == nit)
        lo = i;
      hi = i;
      save += it[i].kind == IT_KEEP ? 2 : 1;
    }
  }
  for (size_t i = 0; i < nit; i++) {
    if (it[i].where == W_FILL)
      continue;
    if (best_lo == nit || i > best_hi)
      it[i].where = W_END;
    else if (i < best_lo)
      it[i].where = W_TOP;
  }
  /* 1. appends and the W_FILL fields, in order (on Postfix an ADDHEADER
   * appends too) */
  for (size_t i = 0; i < nit && rc == 0; i++)
    if (it[i].where == W_FILL)
      rc = place_field(t, l, it[i].cur, MILTER_ACTION_ADDHEADER, 0);
    else if (it[i].where == W_END && it[i].kind != IT_DEL)
      rc = place_field(t, l, it[i].cur, MILTER_ACTION_INSHEADER,
                       APPEND_INDEX);
  /* 2. changes and deletes of the originals, bottom up */
  for (size_t i = nit; i-- > 0 && rc == 0;) {
    const hitem *x = &it[i];
    if (x->kind == IT_INS || (x->kind == IT_KEEP && x->where == W_PLACE))
      continue;
    if ((rc = need_chg(t)) != 0)
      break;
    const char *name = item_name(h, x);
    if (x->kind == IT_CHG && x->where == W_PLACE)
      rc = add_hdr_action(l, t, MILTER_ACTION_CHGHEADER,
                          (uint32_t)x->c->occurrence, name, x->c->value,
                          x->c->value_len, x->c->leadspc);
    else
      rc = add_hdr_action(l, t, MILTER_ACTION_CHGHEADER,
                          (uint32_t)occurrence_of(h, it, i), name, NULL,
                          0, 0);
  }
  /* 3. the fields above the run, bottom up, each at the top */
  for (size_t i = nit; i-- > 0 && rc == 0;)
    if (it[i].where == W_TOP && it[i].kind != IT_DEL)
      rc = place_field(t, l, it[i].cur, MILTER_ACTION_INSHEADER, HIDDEN_TOP);
  free(it);
  return rc;
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
  mf_hdr_change *x = NULL;
  size_t nx = 0;
  rc = split_empty_changes(t, ch, n, &x, &nx);
  if (rc == 0) {
    const mf_hdr_change *use = x != NULL ? x : ch;
    if (mf_engine_mta_of(t) == MF_MTA_POSTFIX)
      rc = postfix_actions(t, l, use, nx, norig);
    else
      rc = safe_actions(t, l, use, nx, norig);
  }
  free(x);
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
