/* UTF-8 validation and NFC normalisation (libunistring, which libidn2
 * uses for the same purpose: no library of its own for it). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uninorm.h>

#include "addr_internal.h"
#include "mf_alloc.h"

char *mfa_strndup(const char *s, size_t n) {
  char *d = xmalloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

void mfa_put(mfa_sbuf *b, const char *s, size_t n) {
  if (b->len < b->size) {
    size_t room = b->size - b->len - 1;
    memcpy(b->buf + b->len, s, n < room ? n : room);
  }
  b->len += n;
}

int mfa_sbuf_end(mfa_sbuf *b) {
  if (b->size)
    b->buf[b->len < b->size ? b->len : b->size - 1] = '\0';
  return b->len > (size_t)0x7fffffff ? MF_ADDR_E_INVAL : (int)b->len;
}

int mfa_has_non_ascii(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] >= 0x80)
      return 1;
  return 0;
}

int mfa_utf8_check(const char *s, size_t len, const char **why) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    unsigned c = p[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f)
        return mfa_fail(why, MF_ADDR_E_CTRL,
                        c == 0 ? "NUL character in address"
                               : "control character in address");
      i++;
      continue;
    }
    size_t n;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return mfa_fail(why, MF_ADDR_E_UTF8,
                      "invalid UTF-8: bad lead byte or overlong form");
    }
    if (len - i - 1 < n)
      return mfa_fail(why, MF_ADDR_E_UTF8, "invalid UTF-8: truncated sequence");
    for (size_t k = 1; k <= n; k++) {
      unsigned cc = p[i + k];
      if ((cc & 0xc0) != 0x80)
        return mfa_fail(why, MF_ADDR_E_UTF8,
                        "invalid UTF-8: bad continuation byte");
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min)
      return mfa_fail(why, MF_ADDR_E_UTF8, "invalid UTF-8: overlong form");
    if (cp >= 0xd800 && cp <= 0xdfff)
      return mfa_fail(why, MF_ADDR_E_UTF8, "invalid UTF-8: surrogate");
    if (cp > 0x10ffff)
      return mfa_fail(why, MF_ADDR_E_UTF8, "invalid UTF-8: beyond U+10FFFF");
    if (cp >= 0x80 && cp <= 0x9f)
      return mfa_fail(why, MF_ADDR_E_CTRL, "C1 control character in address");
    i += n + 1;
  }
  return 0;
}

int mfa_nfc(const char *s, size_t len, char **out, const char **why) {
  *out = NULL;
  if (!mfa_has_non_ascii(s, len)) { /* ASCII is always NFC */
    *out = mfa_strndup(s, len);
    return *out ? 0 : mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
  }
  /* NFC makes UTF-8 at most 3 times longer (Unicode's stability policy;
   * e.g. U+1D160, 4 bytes, is 12 in NFC): one buffer of our own that
   * u8_normalize() fills, so no allocation of the result escapes the
   * allocation seam. */
  if (len > ((size_t)-1 - 1) / 3)
    return mfa_fail(why, MF_ADDR_E_NORMALIZE, "string too long to normalise");
  size_t cap = 3 * len, n = cap;
  uint8_t *buf = xmalloc(cap + 1);
  if (buf == NULL)
    return mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
  uint8_t *r = u8_normalize(UNINORM_NFC, (const uint8_t *)s, len, buf, &n);
  if (r == NULL) {
    free(buf);
    return errno == ENOMEM
               ? mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory")
               : mfa_fail(why, MF_ADDR_E_NORMALIZE,
                          "could not NFC-normalise the string");
  }
  if (r != buf) { /* longer than the bound: cannot happen; not ours */
    free(r);
    free(buf);
    return mfa_fail(why, MF_ADDR_E_NORMALIZE,
                    "NFC form longer than three times the input");
  }
  buf[n] = '\0';
  *out = (char *)buf;
  return 0;
}
