/* mf_addr: parsing RFC 5321 paths, accessors, comparison, formatting. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mailfilter/addr.h>

#include "addr_internal.h"
#include "mf_alloc.h"

#define LOCAL_MAX 64

enum {
  A_NULL = 1u << 0,
  A_QUOTED = 1u << 1,
  A_LITERAL = 1u << 2,
  A_UTF8 = 1u << 3,
  A_UTF8_LOCAL = 1u << 4
};

struct mf_addr {
  unsigned bits;
  char *route;       /* "@a,@b" or NULL */
  char *local;       /* as written */
  char *local_value; /* unquoted */
  char *domain;      /* as written or NULL */
  char *alabel;      /* NULL when no domain */
  char *ulabel;
  char *str; /* local@domain as written */
  char *key; /* NFC(local_value)@alabel */
};

#define PARSE_FLAGS                                                            \
  (MF_ADDR_MAIL_FROM | MF_ADDR_RCPT_TO | MF_ADDR_ALLOW_NO_DOMAIN |             \
   MF_ADDR_REQUIRE_BRACKETS | MF_ADDR_LAX_DOTS)

const char *mf_addr_strerror(int err) {
  switch (err) {
  case MF_ADDR_OK:
    return "success";
  case MF_ADDR_E_NOMEM:
    return "out of memory";
  case MF_ADDR_E_INVAL:
    return "invalid argument";
  case MF_ADDR_E_UTF8:
    return "invalid UTF-8";
  case MF_ADDR_E_CTRL:
    return "control character";
  case MF_ADDR_E_SYNTAX:
    return "syntax error";
  case MF_ADDR_E_BRACKET:
    return "unbalanced brackets";
  case MF_ADDR_E_QUOTE:
    return "unbalanced quote or bad escape";
  case MF_ADDR_E_TRAILING:
    return "trailing garbage after the address";
  case MF_ADDR_E_LOCAL_EMPTY:
    return "empty local part";
  case MF_ADDR_E_LOCAL_TOO_LONG:
    return "local part longer than 64 octets";
  case MF_ADDR_E_NO_DOMAIN:
    return "missing domain";
  case MF_ADDR_E_DOMAIN:
    return "invalid domain";
  case MF_ADDR_E_LABEL_TOO_LONG:
    return "domain label longer than 63 octets";
  case MF_ADDR_E_DOMAIN_TOO_LONG:
    return "domain longer than 253 octets";
  case MF_ADDR_E_PUNYCODE:
    return "invalid Punycode (A-label)";
  case MF_ADDR_E_IDNA:
    return "domain refused by IDNA2008/UTS #46";
  case MF_ADDR_E_LITERAL:
    return "invalid address literal";
  case MF_ADDR_E_ROUTE:
    return "invalid source route";
  case MF_ADDR_E_NULL:
    return "null sender not allowed here";
  case MF_ADDR_E_NORMALIZE:
    return "Unicode normalisation failed";
  case MF_ADDR_E_ESMTP:
    return "invalid ESMTP parameter";
  case MF_ADDR_E_DUPLICATE:
    return "duplicate ESMTP parameter";
  case MF_ADDR_E_NOTFOUND:
    return "no such ESMTP parameter";
  case MF_ADDR_E_XTEXT:
    return "invalid xtext";
  default:
    return "unknown error";
  }
}

void mf_addr_free(mf_addr *a) {
  if (!a)
    return;
  free(a->route);
  free(a->local);
  free(a->local_value);
  free(a->domain);
  free(a->alabel);
  free(a->ulabel);
  free(a->str);
  free(a->key);
  free(a);
}

/* atext (RFC 5321 4.1.2) plus UTF-8 (RFC 6531). */
static int is_atext(unsigned char c) {
  if (c >= 0x80)
    return 1;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != '\0';
}

/* Concatenate up to three strings into a new one. */
static char *cat3(const char *a, const char *b, const char *c) {
  size_t la = strlen(a), lb = b ? strlen(b) : 0, lc = c ? strlen(c) : 0;
  char *r = xmalloc(la + lb + lc + 1);
  if (!r)
    return NULL;
  memcpy(r, a, la);
  if (lb)
    memcpy(r + la, b, lb);
  if (lc)
    memcpy(r + la + lb, c, lc);
  r[la + lb + lc] = '\0';
  return r;
}

/* Parse a source route "@a,@b" ending at ':'; *p is at the first '@'. */
static int parse_route(const char *s, size_t len, size_t *p, mf_addr *a,
                       const char **why) {
  size_t start = *p, i = *p;
  for (;;) {
    if (i >= len || s[i] != '@')
      return mfa_fail(why, MF_ADDR_E_ROUTE, "source route entry without '@'");
    size_t d = ++i;
    while (i < len && s[i] != ',' && s[i] != ':' && s[i] != '>')
      i++;
    int rc = mfa_domain_syntax(s + d, i - d, MF_ADDR_E_ROUTE, why);
    if (rc)
      return rc;
    if (i >= len || s[i] == '>')
      return mfa_fail(why, MF_ADDR_E_ROUTE, "source route without ':'");
    if (s[i] == ':')
      break;
    i++; /* ',' */
  }
  a->route = mfa_strndup(s + start, i - start);
  if (!a->route)
    return mfa_nomem(why);
  *p = i + 1;
  return 0;
}

/* Local part at *p; sets a->local, a->local_value, A_QUOTED. */
static int parse_local(const char *s, size_t len, size_t *p, unsigned flags,
                       mf_addr *a, const char **why) {
  size_t i = *p, start = *p;
  char *val = NULL;
  size_t vlen = 0;
  if (i < len && s[i] == '"') {
    a->bits |= A_QUOTED;
    val = xmalloc(len - i + 1);
    if (!val)
      return mfa_nomem(why);
    i++;
    for (;;) {
      if (i >= len) {
        free(val);
        return mfa_fail(why, MF_ADDR_E_QUOTE, "unterminated quoted local part");
      }
      unsigned char c = (unsigned char)s[i];
      if (c == '"')
        break;
      if (c == '\\') {
        if (i + 1 >= len) {
          free(val);
          return mfa_fail(why, MF_ADDR_E_QUOTE,
                          "unterminated quoted local part (ends with '\\')");
        }
        unsigned char e = (unsigned char)s[i + 1];
        if (e < 32 || e > 126) {
          free(val);
          return mfa_fail(why, MF_ADDR_E_QUOTE,
                          "'\\' may only escape printable ASCII");
        }
        val[vlen++] = (char)e;
        i += 2;
        continue;
      }
      /* qtextSMTP: %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii; controls
       * were refused before. */
      val[vlen++] = (char)c;
      i++;
    }
    i++; /* closing quote */
    val[vlen] = '\0';
    if (i < len && s[i] != '@' && s[i] != '>' && s[i] != ' ') {
      free(val);
      return mfa_fail(why, MF_ADDR_E_SYNTAX,
                      "text right after the quoted local part");
    }
    if (vlen == 0) {
      free(val);
      return mfa_fail(why, MF_ADDR_E_LOCAL_EMPTY, "empty quoted local part");
    }
  } else {
    while (i < len && (is_atext((unsigned char)s[i]) || s[i] == '.'))
      i++;
    if (i < len && s[i] == '"')
      return mfa_fail(why, MF_ADDR_E_QUOTE,
                      "quote inside an unquoted local part");
    if (i < len && s[i] == '<')
      return mfa_fail(why, MF_ADDR_E_BRACKET, "'<' inside the address");
    if (i < len && s[i] != '@' && s[i] != '>' && s[i] != ' ')
      return mfa_fail(why, MF_ADDR_E_SYNTAX,
                      "character not allowed in an unquoted local part");
    if (i == start)
      return mfa_fail(why, MF_ADDR_E_LOCAL_EMPTY, "empty local part");
    if (!(flags & MF_ADDR_LAX_DOTS)) {
      if (s[start] == '.' || s[i - 1] == '.')
        return mfa_fail(why, MF_ADDR_E_SYNTAX,
                        "local part starts or ends with '.'");
      for (size_t k = start; k + 1 < i; k++)
        if (s[k] == '.' && s[k + 1] == '.')
          return mfa_fail(why, MF_ADDR_E_SYNTAX, "'..' in local part");
    }
    val = mfa_strndup(s + start, i - start);
    if (!val)
      return mfa_nomem(why);
  }
  if (i - start > LOCAL_MAX) {
    free(val);
    return mfa_fail(why, MF_ADDR_E_LOCAL_TOO_LONG,
                    "local part longer than 64 octets");
  }
  a->local = mfa_strndup(s + start, i - start);
  a->local_value = val;
  if (!a->local)
    return mfa_nomem(why);
  if (mfa_has_non_ascii(s + start, i - start))
    a->bits |= A_UTF8_LOCAL;
  *p = i;
  return 0;
}

/* Domain at *p (after '@'). */
static int parse_domain(const char *s, size_t len, size_t *p, mf_addr *a,
                        const char **why) {
  size_t i = *p, start = *p;
  int rc;
  if (i < len && s[i] == '[') {
    while (i < len && s[i] != ']' && s[i] != '>' && s[i] != ' ')
      i++;
    if (i >= len || s[i] != ']')
      return mfa_fail(why, MF_ADDR_E_BRACKET,
                      "address literal without closing ']'");
    i++;
    rc = mfa_literal(s + start, i - start, &a->alabel, why);
    if (rc)
      return rc;
    a->ulabel = xstrdup(a->alabel);
    if (!a->ulabel)
      return mfa_nomem(why);
    a->bits |= A_LITERAL;
  } else {
    while (i < len && s[i] != '>' && s[i] != ' ') {
      if (s[i] == '<')
        return mfa_fail(why, MF_ADDR_E_BRACKET, "'<' inside the address");
      if (s[i] == ']')
        return mfa_fail(why, MF_ADDR_E_BRACKET, "']' without '['");
      i++;
    }
    if (i == start)
      return mfa_fail(why, MF_ADDR_E_DOMAIN, "empty domain after '@'");
    rc = mfa_domain_idna(s + start, i - start, &a->alabel, &a->ulabel, why);
    if (rc)
      return rc;
  }
  a->domain = mfa_strndup(s + start, i - start);
  if (!a->domain)
    return mfa_nomem(why);
  *p = i;
  return 0;
}

/* Parse the address at the start of s[0..len); *end gets the offset after
 * it.  Trailing text is the caller's business. */
static int parse_at(const char *s, size_t len, unsigned flags, mf_addr **out,
                    size_t *end, const char **why) {
  int rc;
  size_t p = 0;
  *out = NULL;
  if (len == 0)
    return mfa_fail(why, MF_ADDR_E_SYNTAX, "empty address");
  mf_addr *a = xcalloc(1, sizeof *a);
  if (!a)
    return mfa_nomem(why);

  int bracket = s[0] == '<';
  if (!bracket && (flags & MF_ADDR_REQUIRE_BRACKETS)) {
    rc = mfa_fail(why, MF_ADDR_E_BRACKET, "angle brackets required");
    goto fail;
  }
  if (bracket)
    p = 1;
  if (p < len && s[p] == ' ') {
    rc = mfa_fail(why, MF_ADDR_E_SYNTAX, "space before the address");
    goto fail;
  }
  if (bracket && p < len && s[p] == '>') {
    if (!(flags & MF_ADDR_MAIL_FROM)) {
      rc = mfa_fail(why, MF_ADDR_E_NULL,
                    "null sender <> is only allowed in MAIL FROM");
      goto fail;
    }
    a->bits |= A_NULL;
    if (!(a->local = xstrdup("")) || !(a->local_value = xstrdup("")) ||
        !(a->str = xstrdup("")) || !(a->key = xstrdup(""))) {
      rc = mfa_nomem(why);
      goto fail;
    }
    *out = a;
    *end = p + 1;
    return 0;
  }
  if (p < len && s[p] == '@') {
    /* "@a,@b:user@x" is a route; "@example.com" is an empty local part. */
    size_t k = p;
    while (k < len && s[k] != ':' && s[k] != '>' && s[k] != ' ')
      k++;
    if (k >= len || s[k] != ':') {
      rc = mfa_fail(why, MF_ADDR_E_LOCAL_EMPTY, "empty local part");
      goto fail;
    }
    rc = parse_route(s, len, &p, a, why);
    if (rc)
      goto fail;
  }
  rc = parse_local(s, len, &p, flags, a, why);
  if (rc)
    goto fail;
  if (p < len && s[p] == '@') {
    p++;
    rc = parse_domain(s, len, &p, a, why);
    if (rc)
      goto fail;
  } else {
    int pm = (flags & MF_ADDR_RCPT_TO) &&
             strcasecmp(a->local_value, "postmaster") == 0;
    if (!pm && !(flags & MF_ADDR_ALLOW_NO_DOMAIN)) {
      rc = mfa_fail(why, MF_ADDR_E_NO_DOMAIN,
                    "missing '@domain' (only <postmaster> may go without, "
                    "in RCPT TO)");
      goto fail;
    }
  }
  if (bracket) {
    if (p >= len) {
      rc = mfa_fail(why, MF_ADDR_E_BRACKET, "'<' without closing '>'");
      goto fail;
    }
    if (s[p] != '>') {
      rc = mfa_fail(why, MF_ADDR_E_SYNTAX,
                    s[p] == ' ' ? "space inside the address"
                                : "unexpected character in the address");
      goto fail;
    }
    p++;
  } else if (p < len && s[p] == '>') {
    rc = mfa_fail(why, MF_ADDR_E_BRACKET, "'>' without opening '<'");
    goto fail;
  }

  /* Derived forms. */
  if (a->route && mfa_has_non_ascii(a->route, strlen(a->route)))
    a->bits |= A_UTF8;
  if ((a->bits & A_UTF8_LOCAL) ||
      (a->domain && mfa_has_non_ascii(a->domain, strlen(a->domain))))
    a->bits |= A_UTF8;
  a->str = cat3(a->local, a->domain ? "@" : NULL, a->domain);
  if (!a->str) {
    rc = mfa_nomem(why);
    goto fail;
  }
  char *nfc = NULL;
  rc = mfa_nfc(a->local_value, strlen(a->local_value), &nfc, why);
  if (rc)
    goto fail;
  a->key = cat3(nfc, a->alabel ? "@" : NULL, a->alabel);
  free(nfc);
  if (!a->key) {
    rc = mfa_nomem(why);
    goto fail;
  }
  *out = a;
  *end = p;
  return 0;
fail:
  mf_addr_free(a);
  return rc;
}

int mf_addr_parse_n(const char *s, size_t len, unsigned flags, mf_addr **out,
                    const char **why) {
  if (out)
    *out = NULL;
  if (!s || !out || (flags & ~(unsigned)PARSE_FLAGS))
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  int rc = mfa_utf8_check(s, len, why);
  if (rc)
    return rc;
  size_t end = 0;
  rc = parse_at(s, len, flags, out, &end, why);
  if (rc)
    return rc;
  if (end != len) {
    mf_addr_free(*out);
    *out = NULL;
    return mfa_fail(why, MF_ADDR_E_TRAILING,
                    s[end] == '>' ? "'>' without opening '<'"
                                  : "text after the address");
  }
  return 0;
}

int mf_addr_parse(const char *s, unsigned flags, mf_addr **out,
                  const char **why) {
  if (!s) {
    if (out)
      *out = NULL;
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  }
  return mf_addr_parse_n(s, strlen(s), flags, out, why);
}

/* in params.c */
int mfa_params_parse_str(const char *s, size_t len, mf_addr_params **out,
                         const char **why);

int mf_addr_parse_cmd(const char *s, unsigned flags, mf_addr **addr,
                      mf_addr_params **params, const char **why) {
  if (addr)
    *addr = NULL;
  if (params)
    *params = NULL;
  if (!s || !addr || !params || (flags & ~(unsigned)PARSE_FLAGS))
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  size_t len = strlen(s), end = 0;
  int rc = mfa_utf8_check(s, len, why);
  if (rc)
    return rc;
  rc = parse_at(s, len, flags, addr, &end, why);
  if (rc)
    return rc;
  if (end < len && s[end] != ' ') {
    rc = mfa_fail(why, MF_ADDR_E_TRAILING,
                  "text right after the address (a space must separate "
                  "ESMTP parameters)");
    goto fail;
  }
  rc = mfa_params_parse_str(s + end, len - end, params, why);
  if (rc)
    goto fail;
  return 0;
fail:
  mf_addr_free(*addr);
  *addr = NULL;
  return rc;
}

/* A dot-atom needs no quoting. */
static int is_dot_atom(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || s[0] == '.' || s[n - 1] == '.')
    return 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '.') {
      if (s[i + 1] == '.')
        return 0;
    } else if (!is_atext((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}

int mf_addr_new(const char *local, const char *domain, unsigned flags,
                mf_addr **out, const char **why) {
  if (out)
    *out = NULL;
  if (!out || (!local && domain) || (flags & ~(unsigned)PARSE_FLAGS))
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  flags &= ~(unsigned)MF_ADDR_REQUIRE_BRACKETS;
  if (!local)
    return mf_addr_parse("<>", flags | MF_ADDR_MAIL_FROM, out, why);
  size_t ll = strlen(local), dl = domain ? strlen(domain) : 0;
  char *w = xmalloc(2 * ll + 4 + dl), *q = w;
  if (!w)
    return mfa_nomem(why);
  if (is_dot_atom(local)) {
    memcpy(q, local, ll);
    q += ll;
  } else {
    *q++ = '"';
    for (size_t i = 0; i < ll; i++) {
      if (local[i] == '"' || local[i] == '\\')
        *q++ = '\\';
      *q++ = local[i];
    }
    *q++ = '"';
  }
  if (domain) {
    *q++ = '@';
    memcpy(q, domain, dl);
    q += dl;
  }
  int rc = mf_addr_parse_n(w, (size_t)(q - w), flags, out, why);
  free(w);
  return rc;
}

static int dup1(char **dst, const char *src) {
  if (!src)
    return 0;
  *dst = xstrdup(src);
  return *dst ? 0 : -1;
}

mf_addr *mf_addr_dup(const mf_addr *a) {
  if (!a)
    return NULL;
  mf_addr *b = xcalloc(1, sizeof *b);
  if (!b)
    return NULL;
  b->bits = a->bits;
  if (dup1(&b->route, a->route) || dup1(&b->local, a->local) ||
      dup1(&b->local_value, a->local_value) || dup1(&b->domain, a->domain) ||
      dup1(&b->alabel, a->alabel) || dup1(&b->ulabel, a->ulabel) ||
      dup1(&b->str, a->str) || dup1(&b->key, a->key)) {
    mf_addr_free(b);
    return NULL;
  }
  return b;
}

/* ---- accessors --------------------------------------------------------- */

int mf_addr_is_null(const mf_addr *a) {
  return a && (a->bits & A_NULL) ? 1 : 0;
}
const char *mf_addr_local(const mf_addr *a) {
  return a ? a->local : NULL;
}
const char *mf_addr_local_value(const mf_addr *a) {
  return a ? a->local_value : NULL;
}
int mf_addr_is_quoted(const mf_addr *a) {
  return a && (a->bits & A_QUOTED) ? 1 : 0;
}
const char *mf_addr_domain(const mf_addr *a) {
  return a ? a->domain : NULL;
}
const char *mf_addr_domain_alabel(const mf_addr *a) {
  return a ? a->alabel : NULL;
}
const char *mf_addr_domain_ulabel(const mf_addr *a) {
  return a ? a->ulabel : NULL;
}
int mf_addr_is_literal(const mf_addr *a) {
  return a && (a->bits & A_LITERAL) ? 1 : 0;
}
int mf_addr_has_utf8(const mf_addr *a) {
  return a && (a->bits & A_UTF8) ? 1 : 0;
}
int mf_addr_needs_smtputf8(const mf_addr *a) {
  return a && (a->bits & A_UTF8_LOCAL) ? 1 : 0;
}
const char *mf_addr_route(const mf_addr *a) {
  return a ? a->route : NULL;
}
const char *mf_addr_str(const mf_addr *a) {
  return a ? a->str : NULL;
}
const char *mf_addr_key(const mf_addr *a) {
  return a ? a->key : NULL;
}

/* ---- comparison -------------------------------------------------------- */

int mf_addr_equal(const mf_addr *a, const mf_addr *b) {
  if (!a || !b)
    return 0;
  if ((a->bits & A_NULL) != (b->bits & A_NULL))
    return 0;
  return strcmp(a->key, b->key) == 0;
}

/* `domain` in canonical compare form (A-label or canonical literal), or
 * NULL. */
static char *canon_domain(const char *domain) {
  char *c = NULL;
  size_t n = strlen(domain);
  if (mfa_utf8_check(domain, n, NULL))
    return NULL;
  if (n && domain[0] == '[') {
    if (mfa_literal(domain, n, &c, NULL))
      return NULL;
    return c;
  }
  if (mfa_domain_idna(domain, n, &c, NULL, NULL))
    return NULL;
  return c;
}

int mf_addr_domain_is(const mf_addr *a, const char *domain) {
  if (!a || !a->alabel || !domain)
    return 0;
  char *c = canon_domain(domain);
  if (!c)
    return 0;
  int r = strcasecmp(a->alabel, c) == 0;
  free(c);
  return r;
}

int mf_addr_domain_under(const mf_addr *a, const char *domain) {
  if (!a || !a->alabel || !domain)
    return 0;
  char *c = canon_domain(domain);
  if (!c)
    return 0;
  size_t la = strlen(a->alabel), lc = strlen(c);
  int r = 0;
  if (la == lc)
    r = strcasecmp(a->alabel, c) == 0;
  else if (la > lc && !(a->bits & A_LITERAL) && c[0] != '[')
    r = a->alabel[la - lc - 1] == '.' &&
        strcasecmp(a->alabel + la - lc, c) == 0;
  free(c);
  return r;
}

int mf_addr_domain_convert(const char *domain, int to_ulabel, char **out,
                           const char **why) {
  if (out)
    *out = NULL;
  if (!domain || !out)
    return mfa_fail(why, MF_ADDR_E_INVAL, "invalid argument");
  size_t n = strlen(domain);
  int rc = mfa_utf8_check(domain, n, why);
  if (rc)
    return rc;
  if (to_ulabel)
    return mfa_domain_idna(domain, n, NULL, out, why);
  return mfa_domain_idna(domain, n, out, NULL, why);
}

/* ---- formatting -------------------------------------------------------- */

#define FMT_FLAGS                                                              \
  (MF_ADDR_FMT_BRACKETS | MF_ADDR_FMT_ALABEL | MF_ADDR_FMT_ULABEL |            \
   MF_ADDR_FMT_ROUTE)

int mf_addr_format(const mf_addr *a, unsigned fmt, char *buf, size_t size) {
  if (!a || (fmt & ~(unsigned)FMT_FLAGS) || (!buf && size) ||
      ((fmt & MF_ADDR_FMT_ALABEL) && (fmt & MF_ADDR_FMT_ULABEL)))
    return MF_ADDR_E_INVAL;
  mfa_sbuf b = {buf, size, 0};
  if (fmt & MF_ADDR_FMT_BRACKETS)
    mfa_put(&b, "<", 1);
  if (!(a->bits & A_NULL)) {
    if ((fmt & MF_ADDR_FMT_ROUTE) && a->route) {
      mfa_put(&b, a->route, strlen(a->route));
      mfa_put(&b, ":", 1);
    }
    mfa_put(&b, a->local, strlen(a->local));
    if (a->domain) {
      mfa_put(&b, "@", 1);
      const char *d = (fmt & MF_ADDR_FMT_ALABEL)   ? a->alabel
                      : (fmt & MF_ADDR_FMT_ULABEL) ? a->ulabel
                                                   : a->domain;
      mfa_put(&b, d, strlen(d));
    }
  }
  if (fmt & MF_ADDR_FMT_BRACKETS)
    mfa_put(&b, ">", 1);
  return mfa_sbuf_end(&b);
}

int mf_addr_format_alloc(const mf_addr *a, unsigned fmt, char **out) {
  if (!out)
    return MF_ADDR_E_INVAL;
  *out = NULL;
  int n = mf_addr_format(a, fmt, NULL, 0);
  if (n < 0)
    return n;
  char *s = xmalloc((size_t)n + 1);
  if (!s)
    return MF_ADDR_E_NOMEM;
  mf_addr_format(a, fmt, s, (size_t)n + 1);
  *out = s;
  return n;
}
