/* Domains: syntax, IDNA2008/UTS #46 (libidn2), address literals.
 *
 * libidn2 is needed only for a domain with a non-ASCII character or an
 * A-label ("xn--"); the shared library loads it then (idn2_lazy.c).  NFC is
 * libidn2's own (IDN2_NFC_INPUT): ICU is not used for domains. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#include "addr_internal.h"
#include "mf_alloc.h"

#define IDNA_FLAGS (IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT)

static int is_ldh(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-';
}

int mfa_domain_syntax(const char *s, size_t len, int err, const char **why) {
  if (len == 0)
    return mfa_fail(why, err, "empty domain");
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '.') {
      if (label == 0)
        return mfa_fail(why, err,
                        i + 1 == len ? "domain ends with a dot"
                                     : "empty label in domain");
      label = 0;
      continue;
    }
    if (c < 0x80 && !is_ldh(c))
      return mfa_fail(why, err,
                      "character not allowed in a domain (only letters, "
                      "digits, '-' and '.')");
    label++;
  }
  if (label == 0)
    return mfa_fail(why, err, "domain ends with a dot");
  return 0;
}

/* Map a libidn2 error to ours. */
static int idn2_err(int r, const char **why) {
  switch (r) {
  case IDN2_MALLOC:
    return mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
  case IDN2_ENCODING_ERROR:
  case IDN2_ICONV_FAIL:
    return mfa_fail(why, MF_ADDR_E_UTF8, "invalid UTF-8 in domain");
  case IDN2_NFC:
    return mfa_fail(why, MF_ADDR_E_NORMALIZE,
                    "libidn2 could not NFC-normalise the domain");
  case IDN2_PUNYCODE_BIG_OUTPUT:
    /* encoding a U-label gave more than 63 octets (an "xn--" label of the
     * input was checked before) */
    return mfa_fail(why, MF_ADDR_E_LABEL_TOO_LONG,
                    "domain label longer than 63 octets in A-label form");
  case IDN2_PUNYCODE_BAD_INPUT:
  case IDN2_PUNYCODE_OVERFLOW:
  case IDN2_ALABEL_ROUNDTRIP_FAILED:
    return mfa_fail(why, MF_ADDR_E_PUNYCODE,
                    "invalid Punycode in an A-label (xn--)");
  case IDN2_TOO_BIG_DOMAIN:
    return mfa_fail(why, MF_ADDR_E_DOMAIN_TOO_LONG,
                    "domain longer than 253 octets in A-label form");
  case IDN2_TOO_BIG_LABEL:
    return mfa_fail(why, MF_ADDR_E_LABEL_TOO_LONG,
                    "domain label longer than 63 octets in A-label form");
  case IDN2_2HYPHEN:
    return mfa_fail(why, MF_ADDR_E_DOMAIN,
                    "label with '--' in positions 3 and 4 (not an A-label)");
  case IDN2_HYPHEN_STARTEND:
    return mfa_fail(why, MF_ADDR_E_DOMAIN, "label starts or ends with '-'");
  case IDN2_BIDI:
    return mfa_fail(why, MF_ADDR_E_IDNA,
                    "domain breaks the IDNA bidi rule (RFC 5893)");
  case IDN2_CONTEXTJ:
  case IDN2_CONTEXTJ_NO_RULE:
  case IDN2_CONTEXTO:
  case IDN2_CONTEXTO_NO_RULE:
    return mfa_fail(why, MF_ADDR_E_IDNA,
                    "domain has a contextual code point out of context");
  case IDN2_LEADING_COMBINING:
    return mfa_fail(why, MF_ADDR_E_IDNA,
                    "domain label starts with a combining mark");
  case IDN2_UNASSIGNED:
    return mfa_fail(why, MF_ADDR_E_IDNA, "domain has an unassigned code point");
  case IDN2_DISALLOWED:
  case IDN2_INVALID_TRANSITIONAL:
  case IDN2_INVALID_NONTRANSITIONAL:
    return mfa_fail(why, MF_ADDR_E_IDNA,
                    "domain has a code point IDNA2008/UTS #46 disallows");
  case MFA_IDN2_UNAVAILABLE:
    return mfa_fail(why, MF_ADDR_E_IDNA, mfa_idn2_why());
  default:
    return mfa_fail(why, MF_ADDR_E_IDNA, "libidn2 refused the domain");
  }
}

/* Labels of an A-label domain: non-empty, <= 63, LDH, no edge hyphen; total
 * <= 253. */
static int check_alabel(const char *d, const char **why) {
  size_t len = strlen(d);
  if (len > 253)
    return mfa_fail(why, MF_ADDR_E_DOMAIN_TOO_LONG,
                    "domain longer than 253 octets in A-label form");
  const char *p = d;
  for (;;) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n == 0)
      return mfa_fail(why, MF_ADDR_E_DOMAIN,
                      dot || p != d ? "empty label in domain" : "empty domain");
    if (n > 63)
      return mfa_fail(why, MF_ADDR_E_LABEL_TOO_LONG,
                      "domain label longer than 63 octets in A-label form");
    for (size_t i = 0; i < n; i++)
      if (!is_ldh((unsigned char)p[i]))
        return mfa_fail(why, MF_ADDR_E_DOMAIN,
                        "character not allowed in a domain (only letters, "
                        "digits, '-' and '.')");
    if (p[0] == '-' || p[n - 1] == '-')
      return mfa_fail(why, MF_ADDR_E_DOMAIN, "label starts or ends with '-'");
    if (!dot)
      break;
    p = dot + 1;
  }
  return 0;
}

/* After a failure of the whole domain: if one of its "xn--" labels alone is
 * refused, the fault is the A-label. */
static int bad_alabel(const char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && s[j] != '.')
      j++;
    if (j - i >= 4 && strncasecmp(s + i, "xn--", 4) == 0) {
      char *lab = mfa_strndup(s + i, j - i), *o = NULL;
      if (!lab)
        return 0;
      int r = idn2_to_ascii_8z(lab, &o, IDNA_FLAGS);
      free(lab);
      free(o);
      if (r != IDN2_OK)
        return 1;
    }
    i = j + 1;
  }
  return 0;
}

/* 1 when a label of the domain starts with "xn--" in any case. */
static int has_xn_label(const char *s, size_t len) {
  for (size_t i = 0; i + 4 <= len; i++)
    if ((i == 0 || s[i - 1] == '.') && strncasecmp(s + i, "xn--", 4) == 0)
      return 1;
  return 0;
}

/* An ASCII domain without A-labels (its syntax checked): what UTS #46
 * processing makes of it is the domain in lower case once it passes the
 * hyphen and length checks, so libidn2 is not needed (nor loaded).  The
 * checks come in libidn2's order, so that a domain with several faults
 * gets the same error as through libidn2: the whole domain's length
 * (>= IDN2_DOMAIN_MAX_LENGTH code points), then the hyphen tests of every
 * label, the last failing label's error counting ('--' in positions 3 and
 * 4 before an edge hyphen), then label by label its length and the length
 * of the domain up to its end.  test_addr_idna.c compares this with
 * mfa_domain_idn2() on every kind of ASCII domain. */
static int ascii_domain(const char *s, size_t len, char **alabel, char **ulabel,
                        const char **why) {
  if (len >= IDN2_DOMAIN_MAX_LENGTH)
    return idn2_err(IDN2_TOO_BIG_DOMAIN, why);
  int err = IDN2_OK;
  for (size_t i = 0, j; i < len; i = j + 1) {
    for (j = i; j < len && s[j] != '.';)
      j++;
    if (j - i >= 4 && s[i + 2] == '-' && s[i + 3] == '-')
      err = IDN2_2HYPHEN;
    else if (s[i] == '-' || s[j - 1] == '-')
      err = IDN2_HYPHEN_STARTEND;
  }
  if (err != IDN2_OK)
    return idn2_err(err, why);
  for (size_t i = 0, j; i < len; i = j + 1) {
    for (j = i; j < len && s[j] != '.';)
      j++;
    if (j - i > IDN2_LABEL_MAX_LENGTH)
      return idn2_err(IDN2_TOO_BIG_LABEL, why);
    if (j > 253)
      return idn2_err(IDN2_TOO_BIG_DOMAIN, why);
  }
  char *a = mfa_strndup(s, len), *u = NULL;
  if (a && ulabel)
    u = mfa_strndup(s, len);
  if (!a || (ulabel && !u)) {
    free(a);
    return mfa_nomem(why);
  }
  for (size_t k = 0; k < len; k++) {
    a[k] = (char)tolower((unsigned char)a[k]);
    if (u)
      u[k] = a[k];
  }
  if (alabel)
    *alabel = a;
  else
    free(a);
  if (ulabel)
    *ulabel = u;
  return 0;
}

int mfa_domain_idn2(const char *s, size_t len, char **alabel, char **ulabel,
                    const char **why) {
  char *in = NULL, *a = NULL, *u = NULL, *back = NULL;
  int rc;
  if (alabel)
    *alabel = NULL;
  if (ulabel)
    *ulabel = NULL;

  rc = mfa_domain_syntax(s, len, MF_ADDR_E_DOMAIN, why);
  if (rc)
    return rc;
  in = mfa_strndup(s, len);
  if (!in)
    return mfa_nomem(why);
  /* IDN2_NFC_INPUT: libidn2 normalises the input to NFC itself (UTS #46
   * processing step 2), so the A-label encodes the NFC form. */
  int r = idn2_to_ascii_8z(in, &a, IDNA_FLAGS);
  if (r != IDN2_OK) {
    a = NULL;
    if (r != IDN2_MALLOC && r != MFA_IDN2_UNAVAILABLE && bad_alabel(in, len))
      rc = mfa_fail(why, MF_ADDR_E_PUNYCODE,
                    "invalid A-label (xn--): bad Punycode or not a valid "
                    "U-label once decoded");
    else
      rc = idn2_err(r, why);
    goto out;
  }
  rc = check_alabel(a, why);
  if (rc)
    goto out;

  /* U-label: decode the (validated, lower-case) A-label and check that it
   * encodes back to the same A-label.  A U-label that is not NFC would not:
   * its encoding is of its NFC form (IDN2_NFC_INPUT), so the round trip
   * also guarantees the U-label is NFC. */
  r = idn2_to_unicode_8z8z(a, &u, IDNA_FLAGS);
  if (r != IDN2_OK) {
    u = NULL;
    rc = idn2_err(r, why);
    goto out;
  }
  r = idn2_to_ascii_8z(u, &back, IDNA_FLAGS);
  if (r != IDN2_OK || strcmp(back, a) != 0) {
    if (r != IDN2_OK)
      back = NULL;
    rc = mfa_fail(why, MF_ADDR_E_PUNYCODE,
                  "A-label does not survive the A-label/U-label round trip");
    goto out;
  }
  if (alabel) {
    *alabel = a;
    a = NULL;
  }
  if (ulabel) {
    *ulabel = u;
    u = NULL;
  }
out:
  free(in);
  free(a);
  free(u);
  free(back);
  return rc;
}

int mfa_domain_idna(const char *s, size_t len, char **alabel, char **ulabel,
                    const char **why) {
  if (alabel)
    *alabel = NULL;
  if (ulabel)
    *ulabel = NULL;
  if (mfa_has_non_ascii(s, len) || has_xn_label(s, len))
    return mfa_domain_idn2(s, len, alabel, ulabel, why);
  int rc = mfa_domain_syntax(s, len, MF_ADDR_E_DOMAIN, why);
  return rc ? rc : ascii_domain(s, len, alabel, ulabel, why);
}

/* dcontent = %d33-90 / %d94-126 */
static int is_dcontent(unsigned char c) {
  return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
}

int mfa_literal(const char *s, size_t len, char **canon, const char **why) {
  *canon = NULL;
  if (len < 2 || s[0] != '[' || s[len - 1] != ']')
    return mfa_fail(why, MF_ADDR_E_BRACKET, "address literal without ']'");
  const char *in = s + 1;
  size_t n = len - 2;
  char buf[INET6_ADDRSTRLEN + 16];
  char ip[64];
  if (n == 0)
    return mfa_fail(why, MF_ADDR_E_LITERAL, "empty address literal");
  for (size_t i = 0; i < n; i++)
    if (!is_dcontent((unsigned char)in[i]))
      return mfa_fail(why, MF_ADDR_E_LITERAL,
                      "character not allowed in an address literal");

  const char *colon = memchr(in, ':', n);
  if (!colon) { /* IPv4 */
    struct in_addr a4;
    if (n >= sizeof ip)
      return mfa_fail(why, MF_ADDR_E_LITERAL, "invalid IPv4 address literal");
    memcpy(ip, in, n);
    ip[n] = '\0';
    if (inet_pton(AF_INET, ip, &a4) != 1)
      return mfa_fail(why, MF_ADDR_E_LITERAL, "invalid IPv4 address literal");
    char t[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a4, t, sizeof t);
    snprintf(buf, sizeof buf, "[%s]", t);
  } else if (n > 5 && strncasecmp(in, "IPv6:", 5) == 0) {
    struct in6_addr a6;
    if (n - 5 >= sizeof ip)
      return mfa_fail(why, MF_ADDR_E_LITERAL, "invalid IPv6 address literal");
    memcpy(ip, in + 5, n - 5);
    ip[n - 5] = '\0';
    if (inet_pton(AF_INET6, ip, &a6) != 1)
      return mfa_fail(why, MF_ADDR_E_LITERAL, "invalid IPv6 address literal");
    char t[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, t, sizeof t);
    snprintf(buf, sizeof buf, "[IPv6:%s]", t);
  } else { /* General-address-literal: Standardized-tag ":" 1*dcontent */
    size_t tag = (size_t)(colon - in);
    if (tag == 0 || colon + 1 == in + n)
      return mfa_fail(why, MF_ADDR_E_LITERAL,
                      "address literal is neither IPv4, IPv6 nor tag:value");
    for (size_t i = 0; i < tag; i++)
      if (!is_ldh((unsigned char)in[i]))
        return mfa_fail(why, MF_ADDR_E_LITERAL,
                        "bad tag in a general address literal");
    if (in[0] == '-' || in[tag - 1] == '-')
      return mfa_fail(why, MF_ADDR_E_LITERAL,
                      "bad tag in a general address literal");
    /* Canonical form: the tag lower case, the rest as written. */
    char *c = mfa_strndup(s, len);
    if (!c)
      return mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
    for (size_t i = 1; i <= tag; i++)
      c[i] = (char)tolower((unsigned char)c[i]);
    *canon = c;
    return 0;
  }
  *canon = xstrdup(buf);
  return *canon ? 0 : mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
}
