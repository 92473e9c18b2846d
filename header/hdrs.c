/* hdrs.c -- the header collection: building, parsing, reading, editing. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mf_alloc.h"

static void set_err(mf_hdrs *h, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->errmsg, sizeof h->errmsg, fmt, ap);
  va_end(ap);
}

static int fail(mf_hdrs *h, int rc, const char *what) {
  if (h != NULL)
    set_err(h, "%s: %s", what, mf_hdr_strerror(rc));
  return rc;
}

/* The n bytes at name are a valid field name (shorter than 4 GiB, which
 * struct mfh_orig counts on). */
static bool name_valid_n(const char *name, size_t n) {
  if (n == 0 || n > UINT32_MAX)
    return false;
  for (const unsigned char *p = (const unsigned char *)name; n > 0; p++, n--)
    if (*p <= 0x20 || *p >= 0x7f || *p == ':')
      return false;
  return true;
}

int mf_hdr_name_valid(const char *name) {
  return name != NULL && name_valid_n(name, strlen(name));
}

static char *memdup0(const char *s, size_t n) {
  char *p = xmalloc(n + 1);
  if (p != NULL) {
    if (n > 0)
      memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* ------------------------------------------------------------------------ */
/* Arena: the received fields and the originals' strings of a collection,   */
/* carved from a few blocks that live as long as the collection.            */
/* ------------------------------------------------------------------------ */

/* The first block follows the struct mf_hdrs in its allocation of
 * HDRS_BLOCK bytes (a 3 KiB malloc chunk; 2 KiB of it for the arena: twenty
 * fields of 60 bytes); each next block is twice as large as the last, up to 32
 * KiB; a piece larger than the next block gets a block of its own, linked
 * behind the one being filled. */
#define HDRS_BLOCK ((size_t)3072 - 8)
#define ARENA_MAX ((size_t)32768 - 8 - sizeof(mfh_chunk))
#define ARENA_ALIGN _Alignof(mfh_field)

_Static_assert(sizeof(mfh_chunk) % _Alignof(mfh_field) == 0 &&
                   sizeof(mf_hdrs) % _Alignof(mfh_chunk) == 0,
               "arena pieces are aligned for a field");
_Static_assert(HDRS_BLOCK > sizeof(mf_hdrs) + sizeof(mfh_chunk) + 1024,
               "room for the first block of the arena");

static mfh_chunk *first_chunk(const mf_hdrs *h) {
  return (mfh_chunk *)(void *)((char *)(uintptr_t)h + sizeof *h);
}

static void *arena_alloc(mf_hdrs *h, size_t n) {
  if (n > SIZE_MAX / 2)
    return NULL;
  n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
  mfh_chunk *c = h->arena;
  if (c->cap - c->used >= n) {
    void *p = c->data + c->used;
    c->used += n;
    return p;
  }
  size_t cap = c->cap * 2 + 8 + sizeof *c;
  if (cap > ARENA_MAX)
    cap = ARENA_MAX;
  bool own = n > cap; /* a block for this piece alone */
  if (own)
    cap = n;
  mfh_chunk *b = xmalloc(sizeof *b + cap);
  if (b == NULL)
    return NULL;
  b->cap = cap;
  b->used = n;
  if (own) {
    b->next = c->next;
    c->next = b;
  } else {
    b->next = c;
    h->arena = b;
  }
  return b->data;
}

static void arena_free(mf_hdrs *h) {
  for (mfh_chunk *c = h->arena, *next; c != NULL; c = next) {
    next = c->next;
    if (c != first_chunk(h))
      free(c);
  }
  h->arena = NULL;
}

/* "name\0value\0" copied to p; returns the value's copy. */
static char *put_pair(char *p, const char *name, size_t nl, const char *value,
                      size_t len) {
  memcpy(p, name, nl);
  p[nl] = '\0';
  char *v = p + nl + 1;
  if (len > 0)
    memcpy(v, value, len);
  v[len] = '\0';
  return v;
}

static void field_free(mfh_field *f) {
  if (f == NULL)
    return;
  if (f->name_in == MFH_IN_HEAP)
    free(f->name);
  if (f->value_in == MFH_IN_HEAP)
    free(f->value);
  free(f->decoded);
  if (f->self_heap)
    free(f);
}

/* The original that field f becomes in mf_hdr_commit(): the name and value
 * pair of the arena that f still points to (a received field) or that f's
 * current original has byte for byte, else a copy of f's name and value in
 * the arena (f keeps its own copies: pointers handed out stay valid).  Only
 * what was edited since the last commit is copied. */
static int orig_of(mf_hdrs *h, const mfh_field *f, mfh_orig *o) {
  size_t nl = strlen(f->name);
  const mfh_orig *old = f->orig != MFH_NEW ? &h->origs[f->orig] : NULL;
  *o = (mfh_orig){.name = f->name,
                  .len = f->len,
                  .nl = (uint32_t)nl,
                  .leadspc = f->leadspc};
  if (f->name_in == MFH_IN_ARENA && f->value_in == MFH_IN_ARENA &&
      f->value == f->name + nl + 1)
    return MF_HDR_OK;
  if (old != NULL && old->nl == nl && old->len == f->len &&
      memcmp(old->name, f->name, nl) == 0 &&
      memcmp(mfh_orig_value(old), f->value, f->len) == 0) {
    o->name = old->name;
    return MF_HDR_OK;
  }
  if (f->len > SIZE_MAX / 2 ||
      (o->name = arena_alloc(h, nl + 1 + f->len + 1)) == NULL)
    return MF_HDR_E_NOMEM;
  put_pair(o->name, f->name, nl, f->value, f->len);
  return MF_HDR_OK;
}

/* Room for `need` entries of elem bytes in *arr (*cap of them), grown by
 * half; an array still in the struct (inl) is copied out, not freed. */
static int grow(void **arr, size_t *cap, size_t need, size_t elem,
                const void *inl) {
  if (need <= *cap)
    return MF_HDR_OK;
  size_t ncap = *cap + *cap / 2;
  while (ncap < need)
    ncap += ncap / 2;
  if (ncap > SIZE_MAX / elem)
    return MF_HDR_E_NOMEM;
  void *p = xrealloc(*arr == inl ? NULL : *arr, ncap * elem);
  if (p == NULL)
    return MF_HDR_E_NOMEM;
  if (*arr == inl)
    memcpy(p, inl, *cap * elem);
  *arr = p;
  *cap = ncap;
  return MF_HDR_OK;
}

static int grow_fields(mf_hdrs *h) {
  return grow((void **)&h->fields, &h->capfields, h->nfields + 1,
              sizeof *h->fields, h->fields0);
}

static int grow_origs(mf_hdrs *h) {
  return grow((void **)&h->origs, &h->caporigs, h->norigs + 1, sizeof *h->origs,
              h->origs0);
}

int mf_hdr_new(mf_hdrs **out, unsigned flags) {
  if (out == NULL)
    return MF_HDR_E_INVAL;
  *out = NULL;
  if ((flags & ~MF_HDR_LEADSPC) != 0)
    return MF_HDR_E_INVAL;
  mf_hdrs *h = xmalloc(HDRS_BLOCK);
  if (h == NULL)
    return MF_HDR_E_NOMEM;
  /* Not the inline arrays (1 KiB, read only up to nfields / norigs). */
  h->flags = flags;
  h->edited = false;
  h->fields = h->fields0;
  h->origs = h->origs0;
  h->nfields = h->norigs = 0;
  h->capfields = h->caporigs = MFH_INLINE;
  h->arena = first_chunk(h);
  h->errmsg[0] = '\0';
  *h->arena = (mfh_chunk){.cap = HDRS_BLOCK - sizeof *h - sizeof(mfh_chunk)};
  *out = h;
  return MF_HDR_OK;
}

void mf_hdr_free(mf_hdrs *h) {
  if (h == NULL)
    return;
  for (size_t i = 0; i < h->nfields; i++)
    field_free(h->fields[i]);
  if (h->fields != h->fields0)
    free(h->fields);
  if (h->origs != h->origs0)
    free(h->origs); /* their strings are in the arena */
  arena_free(h);
  free(h);
}

unsigned mf_hdr_flags(const mf_hdrs *h) {
  return h != NULL ? h->flags : 0;
}

const char *mf_hdr_errmsg(const mf_hdrs *h) {
  return h != NULL ? h->errmsg : "";
}

static bool value_ok(const char *v, size_t len) {
  return v != NULL ? memchr(v, '\0', len) == NULL : len == 0;
}

/* Append an original field (name already validated, nl bytes): the field
 * and its strings are one piece of the arena, shared by the original. */
static int add_original(mf_hdrs *h, const char *name, size_t nl,
                        const char *value, size_t len, bool leadspc) {
  if (grow_origs(h) != MF_HDR_OK || grow_fields(h) != MF_HDR_OK)
    return MF_HDR_E_NOMEM;
  if (len > SIZE_MAX / 2 || h->norigs >= MFH_NEW)
    return MF_HDR_E_NOMEM;
  mfh_field *f = arena_alloc(h, sizeof *f + nl + 1 + len + 1);
  if (f == NULL)
    return MF_HDR_E_NOMEM;
  char *n = (char *)(f + 1);
  *f = (mfh_field){.name = n,
                   .value = put_pair(n, name, nl, value, len),
                   .len = len,
                   .orig = (uint32_t)h->norigs,
                   .leadspc = leadspc};
  h->origs[h->norigs++] = (mfh_orig){
      .name = f->name, .len = len, .nl = (uint32_t)nl, .leadspc = leadspc};
  h->fields[h->nfields++] = f;
  return MF_HDR_OK;
}

int mf_hdr_append_raw(mf_hdrs *h, const char *name, const char *value,
                      size_t len, int leadspc) {
  if (h == NULL || name == NULL)
    return MF_HDR_E_INVAL;
  if (h->edited) {
    set_err(h, "append_raw: the collection was already edited");
    return MF_HDR_E_INVAL;
  }
  size_t nl = strlen(name);
  if (!name_valid_n(name, nl))
    return fail(h, MF_HDR_E_NAME, name);
  if (!value_ok(value, len))
    return fail(h, MF_HDR_E_VALUE, name);
  int rc =
      add_original(h, name, nl, value != NULL ? value : "", len, leadspc != 0);
  return rc == MF_HDR_OK ? rc : fail(h, rc, "append_raw");
}

int mf_hdr_parse(mf_hdrs *h, const char *data, size_t len,
                 size_t *body_offset) {
  if (h == NULL || (data == NULL && len > 0))
    return MF_HDR_E_INVAL;
  if (h->edited) {
    set_err(h, "parse: the collection was already edited");
    return MF_HDR_E_INVAL;
  }
  size_t pos = 0, lineno = 1;
  if (len >= 5 && memcmp(data, "From ", 5) == 0) {
    const char *nl = memchr(data, '\n', len);
    pos = nl != NULL ? (size_t)(nl - data) + 1 : len;
    lineno++;
  }
  size_t body = len;
  while (pos < len) {
    const char *nl = memchr(data + pos, '\n', len - pos);
    size_t e = nl != NULL ? (size_t)(nl - data) : len;
    size_t ce = (e > pos && e < len && data[e - 1] == '\r') ? e - 1 : e;
    if (ce == pos) { /* empty line: end of header */
      body = e < len ? e + 1 : len;
      break;
    }
    if (data[pos] == ' ' || data[pos] == '\t') {
      set_err(h, "line %zu: continuation line without a field", lineno);
      return MF_HDR_E_PARSE;
    }
    const char *colon = memchr(data + pos, ':', ce - pos);
    if (colon == NULL) {
      set_err(h, "line %zu: no colon in header line", lineno);
      return MF_HDR_E_PARSE;
    }
    size_t nlen = (size_t)(colon - data) - pos;
    if (!name_valid_n(data + pos, nlen)) {
      set_err(h, "line %zu: invalid field name", lineno);
      return MF_HDR_E_PARSE;
    }
    /* Extend over continuation lines. */
    while (e < len && e + 1 < len &&
           (data[e + 1] == ' ' || data[e + 1] == '\t')) {
      const char *nl2 = memchr(data + e + 1, '\n', len - e - 1);
      e = nl2 != NULL ? (size_t)(nl2 - data) : len;
      lineno++;
    }
    size_t vs = (size_t)(colon - data) + 1;
    size_t ve = e;
    if (e < len && ve > vs && data[ve - 1] == '\r')
      ve--;
    if (memchr(data + vs, '\0', ve - vs) != NULL) {
      set_err(h, "line %zu: NUL byte in header value", lineno);
      return MF_HDR_E_PARSE;
    }
    bool lead = true;
    if (!(h->flags & MF_HDR_LEADSPC) && vs < ve && data[vs] == ' ') {
      vs++;
      lead = false;
    }
    int rc = add_original(h, data + pos, nlen, data + vs, ve - vs, lead);
    if (rc != MF_HDR_OK)
      return fail(h, rc, "parse");
    pos = e < len ? e + 1 : len;
    lineno++;
  }
  if (body_offset != NULL)
    *body_offset = body;
  return MF_HDR_OK;
}

int mf_hdr_commit(mf_hdrs *h) {
  if (h == NULL)
    return MF_HDR_E_INVAL;
  if (h->nfields >= MFH_NEW)
    return fail(h, MF_HDR_E_NOMEM, "commit");
  mfh_orig *no = xmalloc((h->nfields ? h->nfields : 1) * sizeof *no);
  if (no == NULL)
    return fail(h, MF_HDR_E_NOMEM, "commit");
  for (size_t i = 0; i < h->nfields; i++) {
    if (orig_of(h, h->fields[i], &no[i]) != MF_HDR_OK) {
      free(no); /* what went to the arena goes with the collection */
      return fail(h, MF_HDR_E_NOMEM, "commit");
    }
  }
  if (h->origs != h->origs0)
    free(h->origs);
  h->origs = no;
  h->norigs = h->caporigs = h->nfields;
  for (size_t i = 0; i < h->nfields; i++)
    h->fields[i]->orig = (uint32_t)i;
  h->edited = false;
  return MF_HDR_OK;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

size_t mf_hdr_count(const mf_hdrs *h) {
  return h != NULL ? h->nfields : 0;
}

static mfh_field *field_at(const mf_hdrs *h, size_t i) {
  return (h != NULL && i < h->nfields) ? h->fields[i] : NULL;
}

const char *mf_hdr_name(const mf_hdrs *h, size_t i) {
  mfh_field *f = field_at(h, i);
  return f != NULL ? f->name : NULL;
}

const char *mf_hdr_raw(const mf_hdrs *h, size_t i, size_t *len) {
  mfh_field *f = field_at(h, i);
  if (f == NULL)
    return NULL;
  if (len != NULL)
    *len = f->len;
  return f->value;
}

int mf_hdr_leadspc(const mf_hdrs *h, size_t i) {
  mfh_field *f = field_at(h, i);
  return f != NULL ? (int)f->leadspc : MF_HDR_E_INVAL;
}

int mf_hdr_find(const mf_hdrs *h, const char *name, size_t nth, size_t *idx) {
  if (h == NULL || name == NULL || nth == 0)
    return MF_HDR_E_INVAL;
  for (size_t i = 0; i < h->nfields; i++) {
    if (mfh_ascii_casecmp(h->fields[i]->name, name) == 0 && --nth == 0) {
      if (idx != NULL)
        *idx = i;
      return MF_HDR_OK;
    }
  }
  return MF_HDR_E_NOTFOUND;
}

size_t mf_hdr_count_name(const mf_hdrs *h, const char *name) {
  size_t n = 0;
  if (h == NULL || name == NULL)
    return 0;
  for (size_t i = 0; i < h->nfields; i++)
    if (mfh_ascii_casecmp(h->fields[i]->name, name) == 0)
      n++;
  return n;
}

const char *mf_hdr_value(mf_hdrs *h, size_t i) {
  mfh_field *f = field_at(h, i);
  if (f == NULL)
    return NULL;
  if (f->decoded == NULL) {
    int rc = mf_hdr_decode(f->value, f->len, &f->decoded);
    if (rc != MF_HDR_OK) {
      fail(h, rc, "decode");
      return NULL;
    }
  }
  return f->decoded;
}

const char *mf_hdr_get(mf_hdrs *h, const char *name, size_t nth) {
  size_t i;
  if (mf_hdr_find(h, name, nth, &i) != MF_HDR_OK)
    return NULL;
  return mf_hdr_value(h, i);
}

static size_t line_len(const mfh_field *f) {
  return strlen(f->name) + 1 + (f->leadspc ? 0 : 1) + f->len;
}

static char *line_put(char *p, const mfh_field *f) {
  size_t n = strlen(f->name);
  memcpy(p, f->name, n);
  p += n;
  *p++ = ':';
  if (!f->leadspc)
    *p++ = ' ';
  memcpy(p, f->value, f->len);
  return p + f->len;
}

int mf_hdr_line(const mf_hdrs *h, size_t i, char **out, size_t *len) {
  mfh_field *f = field_at(h, i);
  if (f == NULL || out == NULL)
    return MF_HDR_E_INVAL;
  size_t n = line_len(f);
  char *p = xmalloc(n + 1);
  if (p == NULL)
    return MF_HDR_E_NOMEM;
  *line_put(p, f) = '\0';
  *out = p;
  if (len != NULL)
    *len = n;
  return MF_HDR_OK;
}

int mf_hdr_write(const mf_hdrs *h, const char *eol, char **out, size_t *len) {
  if (h == NULL || eol == NULL || out == NULL)
    return MF_HDR_E_INVAL;
  size_t el = strlen(eol), n = 0;
  for (size_t i = 0; i < h->nfields; i++)
    n += line_len(h->fields[i]) + el;
  char *buf = xmalloc(n + 1), *p = buf;
  if (buf == NULL)
    return MF_HDR_E_NOMEM;
  for (size_t i = 0; i < h->nfields; i++) {
    p = line_put(p, h->fields[i]);
    memcpy(p, eol, el);
    p += el;
  }
  *p = '\0';
  *out = buf;
  if (len != NULL)
    *len = n;
  return MF_HDR_OK;
}

/* ------------------------------------------------------------------------ */
/* Editing                                                                  */
/* ------------------------------------------------------------------------ */

static bool mode_lead(const mf_hdrs *h) {
  return (h->flags & MF_HDR_LEADSPC) != 0;
}

/* Replace the value of f by v (taken over, length n). */
static void replace_value(mf_hdrs *h, mfh_field *f, char *v, size_t n) {
  if (f->value_in == MFH_IN_HEAP)
    free(f->value);
  f->value_in = MFH_IN_HEAP;
  free(f->decoded);
  f->decoded = NULL;
  f->value = v;
  f->len = n;
  f->leadspc = mode_lead(h);
  h->edited = true;
}

int mf_hdr_set_raw(mf_hdrs *h, size_t i, const char *raw, size_t len) {
  mfh_field *f = field_at(h, i);
  if (f == NULL)
    return h != NULL ? fail(h, MF_HDR_E_INVAL, "set_raw") : MF_HDR_E_INVAL;
  if (!value_ok(raw, len))
    return fail(h, MF_HDR_E_VALUE, "set_raw");
  char *v = memdup0(raw != NULL ? raw : "", len);
  if (v == NULL)
    return fail(h, MF_HDR_E_NOMEM, "set_raw");
  replace_value(h, f, v, len);
  return MF_HDR_OK;
}

int mf_hdr_set(mf_hdrs *h, size_t i, const char *text) {
  mfh_field *f = field_at(h, i);
  if (f == NULL || text == NULL)
    return h != NULL ? fail(h, MF_HDR_E_INVAL, "set") : MF_HDR_E_INVAL;
  char *v = NULL;
  size_t n = 0;
  int rc = mf_hdr_encode(f->name, text, mode_lead(h), &v, &n);
  if (rc != MF_HDR_OK)
    return fail(h, rc, "set");
  replace_value(h, f, v, n);
  return MF_HDR_OK;
}

int mf_hdr_rename(mf_hdrs *h, size_t i, const char *name) {
  mfh_field *f = field_at(h, i);
  if (f == NULL || name == NULL)
    return h != NULL ? fail(h, MF_HDR_E_INVAL, "rename") : MF_HDR_E_INVAL;
  if (!mf_hdr_name_valid(name))
    return fail(h, MF_HDR_E_NAME, "rename");
  char *n = xstrdup(name);
  if (n == NULL)
    return fail(h, MF_HDR_E_NOMEM, "rename");
  if (f->name_in == MFH_IN_HEAP)
    free(f->name);
  f->name_in = MFH_IN_HEAP;
  f->name = n;
  h->edited = true;
  return MF_HDR_OK;
}

/* A new field: the struct and its name in one heap block (not the arena,
 * so that inserting and deleting in a loop does not grow it); v taken. */
static int insert_new(mf_hdrs *h, size_t pos, const char *name, char *v,
                      size_t n) {
  size_t nl = strlen(name);
  mfh_field *f = NULL;
  if (grow_fields(h) == MF_HDR_OK)
    f = xmalloc(sizeof *f + nl + 1);
  if (f == NULL) {
    free(v);
    return fail(h, MF_HDR_E_NOMEM, "insert");
  }
  *f = (mfh_field){.name = memcpy(f + 1, name, nl + 1),
                   .value = v,
                   .len = n,
                   .orig = MFH_NEW,
                   .leadspc = mode_lead(h),
                   .name_in = MFH_IN_SELF,
                   .value_in = MFH_IN_HEAP,
                   .self_heap = true};
  memmove(h->fields + pos + 1, h->fields + pos,
          (h->nfields - pos) * sizeof *h->fields);
  h->fields[pos] = f;
  h->nfields++;
  h->edited = true;
  return MF_HDR_OK;
}

int mf_hdr_insert_raw(mf_hdrs *h, size_t pos, const char *name, const char *raw,
                      size_t len) {
  if (h == NULL || name == NULL || pos > h->nfields)
    return h != NULL ? fail(h, MF_HDR_E_INVAL, "insert") : MF_HDR_E_INVAL;
  if (!mf_hdr_name_valid(name))
    return fail(h, MF_HDR_E_NAME, "insert");
  if (!value_ok(raw, len))
    return fail(h, MF_HDR_E_VALUE, "insert");
  char *v = memdup0(raw != NULL ? raw : "", len);
  if (v == NULL)
    return fail(h, MF_HDR_E_NOMEM, "insert");
  return insert_new(h, pos, name, v, len);
}

int mf_hdr_insert(mf_hdrs *h, size_t pos, const char *name, const char *text) {
  if (h == NULL || name == NULL || text == NULL || pos > h->nfields)
    return h != NULL ? fail(h, MF_HDR_E_INVAL, "insert") : MF_HDR_E_INVAL;
  if (!mf_hdr_name_valid(name))
    return fail(h, MF_HDR_E_NAME, "insert");
  char *v = NULL;
  size_t n = 0;
  int rc = mf_hdr_encode(name, text, mode_lead(h), &v, &n);
  if (rc != MF_HDR_OK)
    return fail(h, rc, "insert");
  return insert_new(h, pos, name, v, n);
}

int mf_hdr_add(mf_hdrs *h, const char *name, const char *text) {
  return mf_hdr_insert(h, mf_hdr_count(h), name, text);
}

int mf_hdr_add_raw(mf_hdrs *h, const char *name, const char *raw, size_t len) {
  return mf_hdr_insert_raw(h, mf_hdr_count(h), name, raw, len);
}

int mf_hdr_delete(mf_hdrs *h, size_t i) {
  mfh_field *f = field_at(h, i);
  if (f == NULL)
    return h != NULL ? fail(h, MF_HDR_E_INVAL, "delete") : MF_HDR_E_INVAL;
  field_free(f);
  memmove(h->fields + i, h->fields + i + 1,
          (h->nfields - i - 1) * sizeof *h->fields);
  h->nfields--;
  h->edited = true;
  return MF_HDR_OK;
}

int mf_hdr_set_nth(mf_hdrs *h, const char *name, size_t nth, const char *text) {
  size_t i;
  int rc = mf_hdr_find(h, name, nth, &i);
  if (rc != MF_HDR_OK)
    return h != NULL ? fail(h, rc, "set_nth") : rc;
  return mf_hdr_set(h, i, text);
}

int mf_hdr_delete_nth(mf_hdrs *h, const char *name, size_t nth) {
  size_t i;
  int rc = mf_hdr_find(h, name, nth, &i);
  if (rc != MF_HDR_OK)
    return h != NULL ? fail(h, rc, "delete_nth") : rc;
  return mf_hdr_delete(h, i);
}
