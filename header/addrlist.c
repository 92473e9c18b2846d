/* addrlist.c -- address-list header values (From, To, Cc, ...) parsed with
 * GMime into mf_addr values, and formatted back. */
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>

#include "internal.h"
#include "mf_alloc.h"

/* How addresses found in headers are parsed: lenient, since we only read. */
#define HDR_ADDR_FLAGS (MF_ADDR_ALLOW_NO_DOMAIN | MF_ADDR_LAX_DOTS)

typedef struct mbox {
  char *name; /* NULL if none */
  mf_addr *addr;
} mbox;

typedef struct entry {
  char *name;
  mf_addr *addr; /* NULL for a group */
  bool group;
  mbox *members;
  size_t n, cap;
} entry;

struct mf_hdr_addrlist {
  entry *e;
  size_t n, cap;
};

int mf_hdr_addrlist_new(mf_hdr_addrlist **out) {
  if (out == NULL)
    return MF_HDR_E_INVAL;
  *out = xcalloc(1, sizeof **out);
  return *out != NULL ? MF_HDR_OK : MF_HDR_E_NOMEM;
}

void mf_hdr_addrlist_free(mf_hdr_addrlist *l) {
  if (l == NULL)
    return;
  for (size_t k = 0; k < l->n; k++) {
    entry *e = &l->e[k];
    free(e->name);
    mf_addr_free(e->addr);
    for (size_t m = 0; m < e->n; m++) {
      free(e->members[m].name);
      mf_addr_free(e->members[m].addr);
    }
    free(e->members);
  }
  free(l->e);
  free(l);
}

/* Copy an optional name: NULL or "" become NULL.  Returns false on error
 * (*rc set). */
static bool dup_name(const char *name, char **out, int *rc) {
  *out = NULL;
  if (name == NULL || *name == '\0')
    return true;
  if (!mfh_utf8_valid(name, strlen(name))) {
    *rc = MF_HDR_E_UTF8;
    return false;
  }
  *out = xstrdup(name);
  if (*out == NULL) {
    *rc = MF_HDR_E_NOMEM;
    return false;
  }
  return true;
}

static entry *new_entry(mf_hdr_addrlist *l) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    entry *e = xrealloc(l->e, cap * sizeof *e);
    if (e == NULL)
      return NULL;
    l->e = e;
    l->cap = cap;
  }
  entry *e = &l->e[l->n];
  memset(e, 0, sizeof *e);
  return e;
}

int mf_hdr_addrlist_add(mf_hdr_addrlist *l, const char *name,
                        const mf_addr *addr) {
  if (l == NULL || addr == NULL)
    return MF_HDR_E_INVAL;
  int rc = MF_HDR_E_NOMEM;
  entry *e = new_entry(l);
  if (e == NULL || !dup_name(name, &e->name, &rc))
    return rc;
  e->addr = mf_addr_dup(addr);
  if (e->addr == NULL) {
    free(e->name);
    return MF_HDR_E_NOMEM;
  }
  l->n++;
  return MF_HDR_OK;
}

int mf_hdr_addrlist_add_group(mf_hdr_addrlist *l, const char *name, size_t *k) {
  if (l == NULL || name == NULL)
    return MF_HDR_E_INVAL;
  int rc = MF_HDR_E_NOMEM;
  entry *e = new_entry(l);
  if (e == NULL || !dup_name(name, &e->name, &rc))
    return rc;
  e->group = true;
  if (k != NULL)
    *k = l->n;
  l->n++;
  return MF_HDR_OK;
}

int mf_hdr_addrlist_group_add(mf_hdr_addrlist *l, size_t k, const char *name,
                              const mf_addr *addr) {
  if (l == NULL || addr == NULL || k >= l->n || !l->e[k].group)
    return MF_HDR_E_INVAL;
  entry *e = &l->e[k];
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 4;
    mbox *m = xrealloc(e->members, cap * sizeof *m);
    if (m == NULL)
      return MF_HDR_E_NOMEM;
    e->members = m;
    e->cap = cap;
  }
  int rc = MF_HDR_E_NOMEM;
  mbox *m = &e->members[e->n];
  if (!dup_name(name, &m->name, &rc))
    return rc;
  m->addr = mf_addr_dup(addr);
  if (m->addr == NULL) {
    free(m->name);
    return MF_HDR_E_NOMEM;
  }
  e->n++;
  return MF_HDR_OK;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                */
/* ------------------------------------------------------------------------ */

size_t mf_hdr_addrlist_count(const mf_hdr_addrlist *l) {
  return l != NULL ? l->n : 0;
}

static const entry *entry_at(const mf_hdr_addrlist *l, size_t k) {
  return (l != NULL && k < l->n) ? &l->e[k] : NULL;
}

int mf_hdr_addrlist_is_group(const mf_hdr_addrlist *l, size_t k) {
  const entry *e = entry_at(l, k);
  return e != NULL ? (int)e->group : MF_HDR_E_INVAL;
}

const char *mf_hdr_addrlist_name(const mf_hdr_addrlist *l, size_t k) {
  const entry *e = entry_at(l, k);
  return e != NULL ? e->name : NULL;
}

const mf_addr *mf_hdr_addrlist_addr(const mf_hdr_addrlist *l, size_t k) {
  const entry *e = entry_at(l, k);
  return e != NULL ? e->addr : NULL;
}

size_t mf_hdr_addrlist_member_count(const mf_hdr_addrlist *l, size_t k) {
  const entry *e = entry_at(l, k);
  return e != NULL ? e->n : 0;
}

const char *mf_hdr_addrlist_member_name(const mf_hdr_addrlist *l, size_t k,
                                        size_t m) {
  const entry *e = entry_at(l, k);
  return (e != NULL && m < e->n) ? e->members[m].name : NULL;
}

const mf_addr *mf_hdr_addrlist_member_addr(const mf_hdr_addrlist *l, size_t k,
                                           size_t m) {
  const entry *e = entry_at(l, k);
  return (e != NULL && m < e->n) ? e->members[m].addr : NULL;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */
/* ------------------------------------------------------------------------ */

/* Convert one GMime mailbox; returns MF_HDR_OK, a fatal error, or 1 when
 * mf_addr refused the address (skipped). */
static int add_gmime_mailbox(mf_hdr_addrlist *l, size_t group,
                             InternetAddress *ia) {
  const char *spec =
      internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
  mf_addr *a = NULL;
  if (spec == NULL ||
      mf_addr_parse(spec, HDR_ADDR_FLAGS, &a, NULL) != MF_ADDR_OK)
    return 1;
  const char *name = internet_address_get_name(ia);
  int rc = group == (size_t)-1 ? mf_hdr_addrlist_add(l, name, a)
                               : mf_hdr_addrlist_group_add(l, group, name, a);
  mf_addr_free(a);
  return rc == MF_HDR_E_UTF8 ? 1 : rc;
}

/* A comment that never closes ("a@[x] (").  Such a list is malformed
 * (RFC 5322 3.2.2), and GMime 3.2.13's internet_address_list_parse() leaks
 * 128 bytes on it after a domain literal (found by fuzz_header; GMime issue
 * 159): it is refused before GMime sees it.  Quoted strings, domain
 * literals and nested comments are followed with their backslash escapes. */
static bool unclosed_comment(const char *s) {
  int depth = 0;
  char in = 0; /* '"' or '[' while inside one */
  for (; *s != '\0'; s++) {
    char c = *s;
    if (c == '\\' && (in != 0 || depth > 0) && s[1] != '\0') {
      s++;
      continue;
    }
    if (depth > 0) {
      depth += c == '(' ? 1 : c == ')' ? -1 : 0;
    } else if (in != 0) {
      if (c == (in == '"' ? '"' : ']'))
        in = 0;
    } else if (c == '"' || c == '[') {
      in = c;
    } else if (c == '(') {
      depth = 1;
    }
  }
  return depth > 0;
}

int mf_hdr_addrlist_parse(const char *raw, size_t len, mf_hdr_addrlist **out,
                          size_t *skipped) {
  if ((raw == NULL && len > 0) || out == NULL)
    return MF_HDR_E_INVAL;
  *out = NULL;
  if (skipped != NULL)
    *skipped = 0;
  char *buf = xmalloc(len + 1);
  if (buf == NULL)
    return MF_HDR_E_NOMEM;
  size_t n = 0;
  bool blank = true;
  for (size_t i = 0; i < len; i++) {
    if (raw[i] == '\r' || raw[i] == '\n' || raw[i] == '\0')
      continue;
    if (raw[i] != ' ' && raw[i] != '\t')
      blank = false;
    buf[n++] = raw[i];
  }
  buf[n] = '\0';
  mf_hdr_addrlist *l = NULL;
  int rc = mf_hdr_addrlist_new(&l);
  if (rc != MF_HDR_OK) {
    free(buf);
    return rc;
  }
  if (blank) {
    free(buf);
    *out = l;
    return MF_HDR_OK;
  }
  if (unclosed_comment(buf)) {
    free(buf);
    mf_hdr_addrlist_free(l);
    return MF_HDR_E_ADDR;
  }
  InternetAddressList *gl =
      internet_address_list_parse(mfh_parser_options(), buf);
  free(buf);
  if (gl == NULL || internet_address_list_length(gl) == 0) {
    if (gl != NULL)
      g_object_unref(gl);
    mf_hdr_addrlist_free(l);
    return MF_HDR_E_ADDR;
  }
  size_t skip = 0;
  int count = internet_address_list_length(gl);
  for (int i = 0; i < count && rc == MF_HDR_OK; i++) {
    InternetAddress *ia = internet_address_list_get_address(gl, i);
    if (INTERNET_ADDRESS_IS_GROUP(ia)) {
      size_t k;
      const char *gname = internet_address_get_name(ia);
      rc = mf_hdr_addrlist_add_group(l, gname != NULL ? gname : "", &k);
      if (rc == MF_HDR_E_UTF8)
        rc = mf_hdr_addrlist_add_group(l, "", &k);
      if (rc != MF_HDR_OK)
        break;
      InternetAddressList *mem =
          internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia));
      int mc = mem != NULL ? internet_address_list_length(mem) : 0;
      for (int j = 0; j < mc && rc == MF_HDR_OK; j++) {
        InternetAddress *m = internet_address_list_get_address(mem, j);
        if (!INTERNET_ADDRESS_IS_MAILBOX(m)) {
          skip++;
          continue;
        }
        rc = add_gmime_mailbox(l, k, m);
        if (rc == 1) {
          skip++;
          rc = MF_HDR_OK;
        }
      }
    } else if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
      rc = add_gmime_mailbox(l, (size_t)-1, ia);
      if (rc == 1) {
        skip++;
        rc = MF_HDR_OK;
      }
    }
  }
  g_object_unref(gl);
  if (rc != MF_HDR_OK) {
    mf_hdr_addrlist_free(l);
    return rc;
  }
  if (skipped != NULL)
    *skipped = skip;
  *out = l;
  return MF_HDR_OK;
}

int mf_hdr_get_addrlist(const mf_hdrs *h, size_t i, mf_hdr_addrlist **out,
                        size_t *skipped) {
  size_t len;
  const char *raw = mf_hdr_raw(h, i, &len);
  if (raw == NULL)
    return MF_HDR_E_INVAL;
  return mf_hdr_addrlist_parse(raw, len, out, skipped);
}

/* ------------------------------------------------------------------------ */
/* Formatting                                                               */
/* ------------------------------------------------------------------------ */

static void add_phrase(mfh_buf *b, int *rc, const char *name) {
  char *ph = NULL;
  int r = mfh_encode_phrase(name, &ph);
  if (r != MF_HDR_OK) {
    if (*rc == MF_HDR_OK)
      *rc = r;
    return;
  }
  mfh_buf_adds(b, ph);
  free(ph);
}

static void add_mailbox(mfh_buf *b, int *rc, const char *name,
                        const mf_addr *a) {
  char *spec = NULL;
  unsigned fmt =
      mf_addr_needs_smtputf8(a) ? MF_ADDR_FMT_ULABEL : MF_ADDR_FMT_ALABEL;
  if (mf_addr_domain(a) == NULL || mf_addr_is_literal(a))
    fmt = 0;
  if (mf_addr_format_alloc(a, fmt, &spec) < 0) {
    if (*rc == MF_HDR_OK)
      *rc = MF_HDR_E_ADDR;
    return;
  }
  if (name != NULL) {
    add_phrase(b, rc, name);
    mfh_buf_adds(b, " <");
    mfh_buf_adds(b, spec);
    mfh_buf_adds(b, ">");
  } else {
    mfh_buf_adds(b, spec);
  }
  free(spec);
}

int mf_hdr_addrlist_format(const mf_hdr_addrlist *l, const char *name,
                           int leadspc, char **out, size_t *len) {
  if (l == NULL || name == NULL || out == NULL)
    return MF_HDR_E_INVAL;
  *out = NULL;
  mfh_buf b = {0};
  int rc = MF_HDR_OK;
  if (leadspc)
    mfh_buf_adds(&b, " ");
  mfh_buf_adds(&b, "");
  for (size_t k = 0; k < l->n; k++) {
    const entry *e = &l->e[k];
    if (k > 0)
      mfh_buf_adds(&b, ", ");
    if (!e->group) {
      add_mailbox(&b, &rc, e->name, e->addr);
      continue;
    }
    add_phrase(&b, &rc, e->name != NULL ? e->name : "");
    mfh_buf_adds(&b, ":");
    for (size_t m = 0; m < e->n; m++) {
      mfh_buf_adds(&b, m > 0 ? ", " : " ");
      add_mailbox(&b, &rc, e->members[m].name, e->members[m].addr);
    }
    mfh_buf_adds(&b, ";");
  }
  if (rc == MF_HDR_OK && b.oom)
    rc = MF_HDR_E_NOMEM;
  if (rc != MF_HDR_OK) {
    free(b.p);
    return rc;
  }
  /* Fold; the leading space (if any) is part of the first line. */
  char *folded = NULL;
  size_t flen = 0;
  size_t skip = leadspc ? 1 : 0;
  rc = mfh_fold(b.p + skip, strlen(name) + 2, &folded, &flen);
  if (rc == MF_HDR_OK && skip) {
    char *p = xmalloc(flen + 2);
    if (p == NULL) {
      rc = MF_HDR_E_NOMEM;
    } else {
      p[0] = ' ';
      memcpy(p + 1, folded, flen + 1);
      flen++;
    }
    free(folded);
    folded = p;
  }
  free(b.p);
  if (rc != MF_HDR_OK)
    return rc;
  *out = folded;
  if (len != NULL)
    *len = flen;
  return MF_HDR_OK;
}

int mf_hdr_set_addrlist(mf_hdrs *h, size_t i, const mf_hdr_addrlist *l) {
  const char *name = mf_hdr_name(h, i);
  if (name == NULL || l == NULL)
    return MF_HDR_E_INVAL;
  char *v = NULL;
  size_t n = 0;
  int rc =
      mf_hdr_addrlist_format(l, name, (h->flags & MF_HDR_LEADSPC) != 0, &v, &n);
  if (rc != MF_HDR_OK)
    return rc;
  rc = mf_hdr_set_raw(h, i, v, n);
  free(v);
  return rc;
}
