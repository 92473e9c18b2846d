/* diff.c -- minimal change list from the original fields to the current
 * ones, in terms of the original order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mf_alloc.h"

#define DP_MAX_CELLS ((size_t)1 << 20)

/* A change before it is copied into the caller's block. */
typedef struct op {
  mf_hdr_change_kind kind;
  size_t index;
  const char *name;
  const char *value;
  size_t len;
  bool leadspc;
} op;

/* The first OPS_INLINE changes stay in the caller's frame (most diffs
 * have one or two). */
#define OPS_INLINE 8

typedef struct oplist {
  op *v;
  size_t n, cap;
  bool oom;
  op inl[OPS_INLINE];
} oplist;

static void oplist_free(oplist *l) {
  if (l->v != l->inl)
    free(l->v);
}

static void push(oplist *l, mf_hdr_change_kind kind, size_t index,
                 const char *name, const char *value, size_t len,
                 bool leadspc) {
  if (l->oom)
    return;
  if (l->n == l->cap) {
    size_t cap = l->cap * 2;
    op *v = xrealloc(l->v == l->inl ? NULL : l->v, cap * sizeof *v);
    if (v == NULL) {
      l->oom = true;
      return;
    }
    if (l->v == l->inl)
      memcpy(v, l->inl, sizeof l->inl);
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (op){kind, index, name, value, len, leadspc};
}

static void push_delete(oplist *l, const mfh_orig *o, size_t i) {
  push(l, MF_HDR_DELETE, i, o->name, NULL, 0, o->leadspc);
}

static void push_field(oplist *l, mf_hdr_change_kind kind, size_t i,
                       const mfh_field *f) {
  push(l, kind, i, f->name, f->value, f->len, f->leadspc);
}

static bool same(const mfh_orig *o, const mfh_field *f) {
  return o->len == f->len && o->leadspc == f->leadspc &&
         strcmp(o->name, f->name) == 0 &&
         memcmp(mfh_orig_value(o), f->value, f->len) == 0;
}

static bool changeable(const mfh_orig *o, const mfh_field *f) {
  return strcmp(o->name, f->name) == 0;
}

/* Edit distance over O[op..oe) and C[cp..ce): match (0, equal fields),
 * change (1, same name), delete (1), insert (1).  D is the cost of the
 * suffixes, so the trace runs forward and emits in original order. */
static int dp_region(const mf_hdrs *h, size_t op0, size_t oe, size_t cp0,
                     size_t ce, oplist *l) {
  size_t a = oe - op0, b = ce - cp0, w = b + 1;
  uint32_t *D = xmalloc((a + 1) * w * sizeof *D);
  if (D == NULL)
    return MF_HDR_E_NOMEM;
#define AT(i, j) D[(i)*w + (j)]
  for (size_t j = 0; j <= b; j++)
    AT(a, j) = (uint32_t)(b - j);
  for (size_t i = a; i-- > 0;) {
    AT(i, b) = (uint32_t)(a - i);
    const mfh_orig *o = &h->origs[op0 + i];
    for (size_t j = b; j-- > 0;) {
      const mfh_field *f = h->fields[cp0 + j];
      uint32_t best = 1 + AT(i + 1, j);
      if (1 + AT(i, j + 1) < best)
        best = 1 + AT(i, j + 1);
      if (changeable(o, f)) {
        uint32_t diag = AT(i + 1, j + 1) + (same(o, f) ? 0 : 1);
        if (diag < best)
          best = diag;
      }
      AT(i, j) = best;
    }
  }
  size_t i = 0, j = 0;
  while (i < a || j < b) {
    if (i < a && j < b) {
      const mfh_orig *o = &h->origs[op0 + i];
      const mfh_field *f = h->fields[cp0 + j];
      if (changeable(o, f)) {
        bool eq = same(o, f);
        if (AT(i, j) == AT(i + 1, j + 1) + (eq ? 0 : 1)) {
          if (!eq)
            push_field(l, MF_HDR_CHANGE, op0 + i, f);
          i++;
          j++;
          continue;
        }
      }
    }
    if (i < a && AT(i, j) == 1 + AT(i + 1, j)) {
      push_delete(l, &h->origs[op0 + i], op0 + i);
      i++;
    } else {
      push_field(l, MF_HDR_INSERT, op0 + i, h->fields[cp0 + j]);
      j++;
    }
  }
#undef AT
  free(D);
  return MF_HDR_OK;
}

/* Fallback for huge regions: follow field identity.  Originals kept in the
 * current list are matched to themselves (CHANGE if edited, DELETE+INSERT
 * if renamed); everything else is DELETE or INSERT. */
static void identity_region(const mf_hdrs *h, size_t op0, size_t oe, size_t cp0,
                            size_t ce, oplist *l) {
  size_t i = op0;
  for (size_t j = cp0; j < ce; j++) {
    const mfh_field *f = h->fields[j];
    if (f->orig == MFH_NEW || f->orig < i || f->orig >= oe) {
      push_field(l, MF_HDR_INSERT, i, f);
      continue;
    }
    for (; i < f->orig; i++)
      push_delete(l, &h->origs[i], i);
    const mfh_orig *o = &h->origs[i];
    if (!changeable(o, f)) {
      push_delete(l, o, i);
      push_field(l, MF_HDR_INSERT, i + 1, f);
    } else if (!same(o, f)) {
      push_field(l, MF_HDR_CHANGE, i, f);
    }
    i++;
  }
  for (; i < oe; i++)
    push_delete(l, &h->origs[i], i);
}

/* 1-based per-name (case-insensitive) occurrence of original i, by a scan
 * of the originals before it. */
static size_t occurrence_of(const mf_hdrs *h, size_t i) {
  size_t n = 1;
  for (size_t j = 0; j < i; j++)
    n += mfh_ascii_casecmp(h->origs[j].name, h->origs[i].name) == 0;
  return n;
}

/* Above this many name comparisons, occurrences() (one pass with a hash
 * table) is cheaper than occurrence_of() per change. */
#define OCC_SCAN_MAX 4096u

/* FNV-1a of the ASCII-lower-cased name: names equal for mfh_ascii_casecmp()
 * hash alike. */
static size_t name_hash(const char *name) {
  uint64_t x = 0xcbf29ce484222325u;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    unsigned c = *p;
    x ^= (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
    x *= 0x100000001b3u;
  }
  return (size_t)(x ^ (x >> 32));
}

/* 1-based per-name (case-insensitive) occurrence of every original, in one
 * pass: an open-addressing table (linear probing, at most half full) whose
 * slot holds 1 + the index of the latest original of its name, 0 if free. */
static size_t *occurrences(const mf_hdrs *h) {
  size_t n = h->norigs;
  if (n > SIZE_MAX / 4 / sizeof(size_t))
    return NULL;
  size_t cap = 16;
  while (cap < 2 * n)
    cap *= 2;
  size_t *occ = xcalloc(n ? n : 1, sizeof *occ);
  size_t *slot = occ != NULL ? xcalloc(cap, sizeof *slot) : NULL;
  if (slot == NULL) {
    free(occ);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    const char *name = h->origs[i].name;
    size_t k = name_hash(name) & (cap - 1);
    while (slot[k] != 0 &&
           mfh_ascii_casecmp(h->origs[slot[k] - 1].name, name) != 0)
      k = (k + 1) & (cap - 1);
    occ[i] = slot[k] != 0 ? occ[slot[k] - 1] + 1 : 1;
    slot[k] = i + 1;
  }
  free(slot);
  return occ;
}

int mf_hdr_diff(const mf_hdrs *h, unsigned flags, mf_hdr_change **out,
                size_t *count) {
  if (h == NULL || out == NULL || count == NULL ||
      (flags & ~MF_HDR_DIFF_RECREATE) != 0)
    return MF_HDR_E_INVAL;
  *out = NULL;
  *count = 0;
  oplist l;
  l.v = l.inl;
  l.n = 0;
  l.cap = OPS_INLINE;
  l.oom = false;
  size_t n = h->norigs, m = h->nfields;
  if (flags & MF_HDR_DIFF_RECREATE) {
    for (size_t i = 0; i < n; i++)
      push_delete(&l, &h->origs[i], i);
    for (size_t j = 0; j < m; j++)
      push_field(&l, MF_HDR_INSERT, n, h->fields[j]);
  } else {
    size_t p = 0, s = 0;
    while (p < n && p < m && same(&h->origs[p], h->fields[p]))
      p++;
    while (s < n - p && s < m - p &&
           same(&h->origs[n - 1 - s], h->fields[m - 1 - s]))
      s++;
    size_t a = n - s - p, b = m - s - p;
    if (a == 0 && b == 0) {
      /* untouched */
    } else if ((a + 1) <= DP_MAX_CELLS / (b + 1)) {
      if (dp_region(h, p, n - s, p, m - s, &l) != MF_HDR_OK)
        l.oom = true;
    } else {
      identity_region(h, p, n - s, p, m - s, &l);
    }
  }
  if (l.oom) {
    oplist_free(&l);
    return MF_HDR_E_NOMEM;
  }
  if (l.n == 0) {
    oplist_free(&l);
    return MF_HDR_OK;
  }
  /* Only changes and deletions name an original by its occurrence: an
   * added field (the common edit) needs none of them counted. */
  size_t named = 0;
  for (size_t k = 0; k < l.n; k++)
    named += l.v[k].kind != MF_HDR_INSERT;
  size_t *occ = NULL;
  bool occ_failed = false;
  if (named > 0 && named * n > OCC_SCAN_MAX)
    occ_failed = (occ = occurrences(h)) == NULL;
  size_t bytes = l.n * sizeof(mf_hdr_change);
  for (size_t k = 0; k < l.n; k++)
    bytes += strlen(l.v[k].name) + 1 + (l.v[k].value ? l.v[k].len + 1 : 0);
  mf_hdr_change *c = xmalloc(bytes);
  if (c == NULL || occ_failed) {
    free(c);
    free(occ);
    oplist_free(&l);
    return MF_HDR_E_NOMEM;
  }
  char *str = (char *)(c + l.n);
  for (size_t k = 0; k < l.n; k++) {
    const op *o = &l.v[k];
    c[k].kind = o->kind;
    c[k].index = o->index;
    c[k].occurrence = o->kind == MF_HDR_INSERT ? 0
                      : occ != NULL          ? occ[o->index]
                                             : occurrence_of(h, o->index);
    c[k].leadspc = o->leadspc;
    size_t nl = strlen(o->name) + 1;
    memcpy(str, o->name, nl);
    c[k].name = str;
    str += nl;
    if (o->value != NULL) {
      memcpy(str, o->value, o->len);
      str[o->len] = '\0';
      c[k].value = str;
      c[k].value_len = o->len;
      str += o->len + 1;
    } else {
      c[k].value = NULL;
      c[k].value_len = 0;
    }
  }
  free(occ);
  oplist_free(&l);
  *out = c;
  *count = l.n;
  return MF_HDR_OK;
}

void mf_hdr_changes_free(mf_hdr_change *changes) {
  free(changes);
}
