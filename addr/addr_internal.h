/* Private helpers of the addr module (not installed). */
#ifndef MF_ADDR_INTERNAL_H
#define MF_ADDR_INTERNAL_H

#include <stddef.h>

#include <mailfilter/addr.h>

/* Set *why (when not NULL) and return err. */
static inline int mfa_fail(const char **why, int err, const char *msg) {
  if (why)
    *why = msg;
  return err;
}

static inline int mfa_nomem(const char **why) {
  return mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
}

/* snprintf-style output: appends what fits (leaving room for the NUL) and
 * counts the full length. */
typedef struct {
  char *buf;
  size_t size, len;
} mfa_sbuf;

void mfa_put(mfa_sbuf *b, const char *s, size_t n);
/* NUL-terminate; returns the full length or MF_ADDR_E_INVAL if over INT_MAX. */
int mfa_sbuf_end(mfa_sbuf *b);

/* Strict UTF-8 check of len bytes (no overlongs, no surrogates, <= U+10FFFF)
 * that also refuses control characters: C0, DEL, C1 and NUL.  Returns 0,
 * MF_ADDR_E_UTF8 or MF_ADDR_E_CTRL. */
int mfa_utf8_check(const char *s, size_t len, const char **why);

/* 1 when any of the len bytes is >= 0x80. */
int mfa_has_non_ascii(const char *s, size_t len);

/* NFC of valid UTF-8 (ICU).  *out malloc'd, NUL-terminated. */
int mfa_nfc(const char *s, size_t len, char **out, const char **why);

/* Domain (no brackets, valid UTF-8 without controls) to A-label and U-label
 * forms, both lower case, all checks done.  Either out may be NULL.  An
 * ASCII domain without "xn--" labels is done here; any other goes to
 * mfa_domain_idn2(). */
int mfa_domain_idna(const char *s, size_t len, char **alabel, char **ulabel,
                    const char **why);

/* The same through libidn2 for any domain (test_addr_idna.c compares the
 * two on ASCII domains). */
int mfa_domain_idn2(const char *s, size_t len, char **alabel, char **ulabel,
                    const char **why);

/* What the shared library's libidn2 functions (idn2_lazy.c) return when
 * libidn2 cannot be loaded; no libidn2 code has this value. */
#define MFA_IDN2_UNAVAILABLE (-10000)

/* Why libidn2 could not be loaded (dlerror()'s text); static. */
const char *mfa_idn2_why(void);

/* Loose syntax check of a domain as written: labels non-empty, ASCII only
 * letters/digits/hyphen, non-ASCII allowed.  Used for source routes and
 * before IDNA processing. */
int mfa_domain_syntax(const char *s, size_t len, int err, const char **why);

/* Address literal "[...]" (brackets included) to canonical form. */
int mfa_literal(const char *s, size_t len, char **canon, const char **why);

char *mfa_strndup(const char *s, size_t n);

#endif
