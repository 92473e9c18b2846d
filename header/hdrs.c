/* hdrs.c -- the header collection: building, parsing, reading, editing. */
#include <stdarg.h>
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

int mf_hdr_name_valid(const char *name) {
  if (name == NULL || *name == '\0')
    return 0;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    if (*p <= 0x20 || *p >= 0x7f || *p == ':')
      return 0;
  return 1;
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

static void field_free(mfh_field *f) {
  if (f == NULL)
    return;
  if (!f->name_inline)
    free(f->name);
  if (!f->value_inline)
    free(f->value);
  free(f->decoded);
  free(f);
}

/* A received field: the struct, its name and its value in one allocation
 * (most fields are never edited). */
static mfh_field *field_new(const char *name, const char *value, size_t len,
                            bool leadspc, size_t orig) {
  size_t nl = strlen(name);
  mfh_field *f = xcalloc(1, sizeof *f + nl + 1 + len + 1);
  if (f == NULL)
    return NULL;
  f->name = (char *)(f + 1);
  memcpy(f->name, name, nl + 1);
  f->value = f->name + nl + 1;
  if (len > 0)
    memcpy(f->value, value, len);
  f->value[len] = '\0';
  f->name_inline = f->value_inline = true;
  f->len = len;
  f->leadspc = leadspc;
  f->orig = orig;
  return f;
}

/* An original's name and value in one block: o->name owns it. */
static int orig_set(mfh_orig *o, const char *name, const char *value,
                    size_t len, bool leadspc) {
  size_t nl = strlen(name);
  char *b = xmalloc(nl + 1 + len + 1);
  if (b == NULL)
    return MF_HDR_E_NOMEM;
  memcpy(b, name, nl + 1);
  if (len > 0)
    memcpy(b + nl + 1, value, len);
  b[nl + 1 + len] = '\0';
  o->name = b;
  o->value = b + nl + 1;
  o->len = len;
  o->leadspc = leadspc;
  return MF_HDR_OK;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return MF_HDR_OK;
  size_t ncap = *cap ? *cap * 2 : 16;
  while (ncap < need)
    ncap *= 2;
  void *p = xrealloc(*arr, ncap * elem);
  if (p == NULL)
    return MF_HDR_E_NOMEM;
  *arr = p;
  *cap = ncap;
  return MF_HDR_OK;
}

static int insert_field(mf_hdrs *h, size_t pos, mfh_field *f) {
  if (grow((void **)&h->fields, &h->capfields, h->nfields + 1,
           sizeof *h->fields) != MF_HDR_OK)
    return MF_HDR_E_NOMEM;
  memmove(h->fields + pos + 1, h->fields + pos,
          (h->nfields - pos) * sizeof *h->fields);
  h->fields[pos] = f;
  h->nfields++;
  return MF_HDR_OK;
}

int mf_hdr_new(mf_hdrs **out, unsigned flags) {
  if (out == NULL)
    return MF_HDR_E_INVAL;
  *out = NULL;
  if ((flags & ~MF_HDR_LEADSPC) != 0)
    return MF_HDR_E_INVAL;
  mf_hdrs *h = xcalloc(1, sizeof *h);
  if (h == NULL)
    return MF_HDR_E_NOMEM;
  h->flags = flags;
  *out = h;
  return MF_HDR_OK;
}

static void free_origs(mf_hdrs *h) {
  for (size_t i = 0; i < h->norigs; i++)
    free(h->origs[i].name); /* the value is in the same block */
  free(h->origs);
  h->origs = NULL;
  h->norigs = h->caporigs = 0;
}

void mf_hdr_free(mf_hdrs *h) {
  if (h == NULL)
    return;
  for (size_t i = 0; i < h->nfields; i++)
    field_free(h->fields[i]);
  free(h->fields);
  free_origs(h);
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

/* Append an original field (name already validated). */
static int add_original(mf_hdrs *h, const char *name, const char *value,
                        size_t len, bool leadspc) {
  if (grow((void **)&h->origs, &h->caporigs, h->norigs + 1, sizeof *h->origs) !=
      MF_HDR_OK)
    return MF_HDR_E_NOMEM;
  mfh_orig *o = &h->origs[h->norigs];
  if (orig_set(o, name, value, len, leadspc) != MF_HDR_OK)
    return MF_HDR_E_NOMEM;
  mfh_field *f = field_new(name, value, len, leadspc, h->norigs);
  if (f == NULL || insert_field(h, h->nfields, f) != MF_HDR_OK) {
    free(o->name);
    field_free(f);
    return MF_HDR_E_NOMEM;
  }
  h->norigs++;
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
  if (!mf_hdr_name_valid(name))
    return fail(h, MF_HDR_E_NAME, name);
  if (!value_ok(value, len))
    return fail(h, MF_HDR_E_VALUE, name);
  int rc = add_original(h, name, value != NULL ? value : "", len, leadspc != 0);
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
    char *name = memdup0(data + pos, nlen);
    if (name == NULL)
      return fail(h, MF_HDR_E_NOMEM, "parse");
    if (!mf_hdr_name_valid(name)) {
      set_err(h, "line %zu: invalid field name", lineno);
      free(name);
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
      free(name);
      return MF_HDR_E_PARSE;
    }
    bool lead = true;
    if (!(h->flags & MF_HDR_LEADSPC) && vs < ve && data[vs] == ' ') {
      vs++;
      lead = false;
    }
    int rc = add_original(h, name, data + vs, ve - vs, lead);
    free(name);
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
  mfh_orig *no = xcalloc(h->nfields ? h->nfields : 1, sizeof *no);
  if (no == NULL)
    return fail(h, MF_HDR_E_NOMEM, "commit");
  for (size_t i = 0; i < h->nfields; i++) {
    mfh_field *f = h->fields[i];
    if (orig_set(&no[i], f->name, f->value, f->len, f->leadspc) !=
        MF_HDR_OK) {
      for (size_t k = 0; k < i; k++)
        free(no[k].name);
      free(no);
      return fail(h, MF_HDR_E_NOMEM, "commit");
    }
  }
  free_origs(h);
  h->origs = no;
  h->norigs = h->caporigs = h->nfields;
  for (size_t i = 0; i < h->nfields; i++)
    h->fields[i]->orig = i;
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
  if (!f->value_inline)
    free(f->value);
  f->value_inline = false;
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
  if (!f->name_inline)
    free(f->name);
  f->name_inline = false;
  f->name = n;
  h->edited = true;
  return MF_HDR_OK;
}

static int insert_new(mf_hdrs *h, size_t pos, const char *name, char *v,
                      size_t n) {
  mfh_field *f = xcalloc(1, sizeof *f);
  if (f != NULL)
    f->name = xstrdup(name);
  if (f == NULL || f->name == NULL) {
    free(f);
    free(v);
    return fail(h, MF_HDR_E_NOMEM, "insert");
  }
  f->value = v;
  f->len = n;
  f->leadspc = mode_lead(h);
  f->orig = MFH_NEW;
  if (insert_field(h, pos, f) != MF_HDR_OK) {
    field_free(f);
    return fail(h, MF_HDR_E_NOMEM, "insert");
  }
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
