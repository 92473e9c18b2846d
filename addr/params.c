/* mf_addr_params: ESMTP parameters (RFC 5321 4.1.2, RFC 6531) and xtext
 * (RFC 3461). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mailfilter/addr.h>

#include "addr_internal.h"
#include "mf_alloc.h"

typedef struct {
  char *name;
  char *value; /* NULL = no value */
} param;

struct mf_addr_params {
  param *v;
  size_t n, cap;
};

/* in addr.c's call */
int mfa_params_parse_str(const char *s, size_t len, mf_addr_params **out,
                         const char **why);

static int is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static int check_keyword(const char *s, size_t n, const char **why) {
  if (n == 0)
    return mfa_fail(why, MF_ADDR_E_ESMTP, "empty ESMTP keyword");
  if (!is_alnum((unsigned char)s[0]))
    return mfa_fail(why, MF_ADDR_E_ESMTP,
                    "ESMTP keyword must start with a letter or digit");
  for (size_t i = 1; i < n; i++)
    if (!is_alnum((unsigned char)s[i]) && s[i] != '-')
      return mfa_fail(why, MF_ADDR_E_ESMTP,
                      "ESMTP keyword may only hold letters, digits and '-'");
  return 0;
}

/* esmtp-value = 1*(%d33-60 / %d62-126 / UTF8-non-ascii) */
static int check_value(const char *s, size_t n, const char **why) {
  if (n == 0)
    return mfa_fail(why, MF_ADDR_E_ESMTP, "empty ESMTP value after '='");
  int rc = mfa_utf8_check(s, n, why);
  if (rc)
    return rc;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '=' || c == ' ')
      return mfa_fail(why, MF_ADDR_E_ESMTP,
                      c == '=' ? "'=' inside an ESMTP value"
                               : "space inside an ESMTP value");
  }
  return 0;
}

int mf_addr_params_new(mf_addr_params **out) {
  if (!out)
    return MF_ADDR_E_INVAL;
  *out = xcalloc(1, sizeof **out);
  return *out ? 0 : MF_ADDR_E_NOMEM;
}

void mf_addr_params_free(mf_addr_params *p) {
  if (!p)
    return;
  for (size_t i = 0; i < p->n; i++) {
    free(p->v[i].name);
    free(p->v[i].value);
  }
  free(p->v);
  free(p);
}

size_t mf_addr_params_count(const mf_addr_params *p) {
  return p ? p->n : 0;
}

const char *mf_addr_params_name(const mf_addr_params *p, size_t i) {
  return p && i < p->n ? p->v[i].name : NULL;
}

const char *mf_addr_params_value(const mf_addr_params *p, size_t i) {
  return p && i < p->n ? p->v[i].value : NULL;
}

static long find(const mf_addr_params *p, const char *name, size_t n) {
  for (size_t i = 0; i < p->n; i++)
    if (strlen(p->v[i].name) == n && strncasecmp(p->v[i].name, name, n) == 0)
      return (long)i;
  return -1;
}

int mf_addr_params_find(const mf_addr_params *p, const char *name,
                        const char **value) {
  if (value)
    *value = NULL;
  if (!p || !name)
    return MF_ADDR_E_INVAL;
  long i = find(p, name, strlen(name));
  if (i < 0)
    return MF_ADDR_E_NOTFOUND;
  if (value)
    *value = p->v[i].value;
  return (int)i;
}

/* Append name[=value] (lengths given); value NULL = none.  Checks all. */
static int add(mf_addr_params *p, const char *name, size_t nl,
               const char *value, size_t vl, int replace, const char **why) {
  int rc = check_keyword(name, nl, why);
  if (rc)
    return rc;
  if (value && (rc = check_value(value, vl, why)))
    return rc;
  char *v = NULL;
  if (value && !(v = mfa_strndup(value, vl)))
    return mfa_nomem(why);
  long i = find(p, name, nl);
  if (i >= 0) {
    if (!replace) {
      free(v);
      return mfa_fail(why, MF_ADDR_E_DUPLICATE, "the same ESMTP keyword twice");
    }
    free(p->v[i].value);
    p->v[i].value = v;
    return 0;
  }
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 4;
    param *nv = xrealloc(p->v, cap * sizeof *nv);
    if (!nv) {
      free(v);
      return mfa_nomem(why);
    }
    p->v = nv;
    p->cap = cap;
  }
  char *nm = mfa_strndup(name, nl);
  if (!nm) {
    free(v);
    return mfa_nomem(why);
  }
  p->v[p->n].name = nm;
  p->v[p->n].value = v;
  p->n++;
  return 0;
}

/* One "KEYWORD[=value]" of n bytes. */
static int add_one(mf_addr_params *p, const char *s, size_t n,
                   const char **why) {
  if (n == 0)
    return mfa_fail(why, MF_ADDR_E_ESMTP, "empty ESMTP parameter");
  int rc = mfa_utf8_check(s, n, why);
  if (rc)
    return rc;
  const char *eq = memchr(s, '=', n);
  if (!eq)
    return add(p, s, n, NULL, 0, 0, why);
  return add(p, s, (size_t)(eq - s), eq + 1, n - (size_t)(eq - s) - 1, 0, why);
}

int mf_addr_params_set(mf_addr_params *p, const char *name, const char *value,
                       const char **why) {
  if (!p || !name)
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  size_t nl = strlen(name);
  int rc = mfa_utf8_check(name, nl, why);
  if (rc)
    return rc;
  return add(p, name, nl, value, value ? strlen(value) : 0, 1, why);
}

int mf_addr_params_remove(mf_addr_params *p, const char *name) {
  if (!p || !name)
    return MF_ADDR_E_INVAL;
  long i = find(p, name, strlen(name));
  if (i < 0)
    return MF_ADDR_E_NOTFOUND;
  free(p->v[i].name);
  free(p->v[i].value);
  memmove(p->v + i, p->v + i + 1, (p->n - (size_t)i - 1) * sizeof *p->v);
  p->n--;
  return 0;
}

int mf_addr_params_parse_argv(size_t argc, const char *const *argv,
                              mf_addr_params **out, const char **why) {
  if (out)
    *out = NULL;
  if (!out || (argc && !argv))
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  mf_addr_params *p;
  if (mf_addr_params_new(&p))
    return mfa_nomem(why);
  for (size_t i = 0; i < argc; i++) {
    int rc = argv[i] ? add_one(p, argv[i], strlen(argv[i]), why)
                     : mfa_fail(why, MF_ADDR_E_INVAL, "NULL in argv");
    if (rc) {
      mf_addr_params_free(p);
      return rc;
    }
  }
  *out = p;
  return 0;
}

int mfa_params_parse_str(const char *s, size_t len, mf_addr_params **out,
                         const char **why) {
  *out = NULL;
  mf_addr_params *p;
  if (mf_addr_params_new(&p))
    return mfa_nomem(why);
  size_t i = 0;
  while (i < len) {
    if (s[i] == ' ') {
      i++;
      continue;
    }
    size_t j = i;
    while (j < len && s[j] != ' ')
      j++;
    int rc = add_one(p, s + i, j - i, why);
    if (rc) {
      mf_addr_params_free(p);
      return rc;
    }
    i = j;
  }
  *out = p;
  return 0;
}

int mf_addr_params_parse(const char *s, mf_addr_params **out,
                         const char **why) {
  if (out)
    *out = NULL;
  if (!s || !out)
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  return mfa_params_parse_str(s, strlen(s), out, why);
}

mf_addr_params *mf_addr_params_dup(const mf_addr_params *p) {
  if (!p)
    return NULL;
  mf_addr_params *d;
  if (mf_addr_params_new(&d))
    return NULL;
  for (size_t i = 0; i < p->n; i++) {
    const char *v = p->v[i].value;
    if (add(d, p->v[i].name, strlen(p->v[i].name), v, v ? strlen(v) : 0, 0,
            NULL)) {
      mf_addr_params_free(d);
      return NULL;
    }
  }
  return d;
}

int mf_addr_params_format(const mf_addr_params *p, char *buf, size_t size) {
  if (!p || (!buf && size))
    return MF_ADDR_E_INVAL;
  mfa_sbuf b = {buf, size, 0};
  for (size_t i = 0; i < p->n; i++) {
    if (i)
      mfa_put(&b, " ", 1);
    mfa_put(&b, p->v[i].name, strlen(p->v[i].name));
    if (p->v[i].value) {
      mfa_put(&b, "=", 1);
      mfa_put(&b, p->v[i].value, strlen(p->v[i].value));
    }
  }
  return mfa_sbuf_end(&b);
}

int mf_addr_params_format_alloc(const mf_addr_params *p, char **out) {
  if (!out)
    return MF_ADDR_E_INVAL;
  *out = NULL;
  int n = mf_addr_params_format(p, NULL, 0);
  if (n < 0)
    return n;
  char *s = xmalloc((size_t)n + 1);
  if (!s)
    return MF_ADDR_E_NOMEM;
  mf_addr_params_format(p, s, (size_t)n + 1);
  *out = s;
  return n;
}

/* ---- xtext ------------------------------------------------------------- */

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int mf_addr_xtext_decode(const char *in, char **out, const char **why) {
  if (out)
    *out = NULL;
  if (!in || !out)
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  size_t n = strlen(in);
  char *r = xmalloc(n + 1), *q = r;
  if (!r)
    return mfa_nomem(why);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c == '+') {
      int h = hexval((unsigned char)in[i + 1]); /* NUL-safe */
      int l = h >= 0 ? hexval((unsigned char)in[i + 2]) : -1;
      if (h < 0 || l < 0) {
        free(r);
        return mfa_fail(why, MF_ADDR_E_XTEXT,
                        "'+' in xtext must be followed by two upper-case "
                        "hex digits");
      }
      if (h == 0 && l == 0) {
        free(r);
        return mfa_fail(why, MF_ADDR_E_XTEXT, "xtext decodes to NUL");
      }
      *q++ = (char)(h * 16 + l);
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      free(r);
      return mfa_fail(why, MF_ADDR_E_XTEXT,
                      "character not allowed in xtext (outside 33..126 or "
                      "'=')");
    } else {
      *q++ = (char)c;
    }
  }
  *q = '\0';
  *out = r;
  return 0;
}

int mf_addr_xtext_encode(const char *in, char **out) {
  static const char hex[] = "0123456789ABCDEF";
  if (out)
    *out = NULL;
  if (!in || !out)
    return MF_ADDR_E_INVAL;
  size_t n = strlen(in);
  char *r = xmalloc(3 * n + 1), *q = r;
  if (!r)
    return MF_ADDR_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c < 33 || c > 126 || c == '+' || c == '=') {
      *q++ = '+';
      *q++ = hex[c >> 4];
      *q++ = hex[c & 15];
    } else {
      *q++ = (char)c;
    }
  }
  *q = '\0';
  *out = r;
  return 0;
}
