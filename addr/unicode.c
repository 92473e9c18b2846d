/* UTF-8 validation and NFC normalisation (ICU).
 *
 * ICU is loaded when a string first needs normalising (a non-ASCII local
 * part: domains are normalised by libidn2, idna.c), not when the program
 * starts: libicuuc with libicudata and libstdc++ is 1.6 MiB of resident
 * pages in every process that links us, most of which never sees a
 * non-ASCII local part (bench/MEMORY.md).  Loaded once for the
 * process (pthread_once; any thread), never unloaded; the library named is
 * the one the headers come from (libicuuc.so.<major>, its symbols carry the
 * same _<major> suffix). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/uvernum.h>

#include "addr_internal.h"
#include "mf_alloc.h"
#include "mf_dlsym.h"

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

#define MFA_STR2(x) #x
#define MFA_STR(x) MFA_STR2(x) /* macro-expanded: u_strToUTF8 -> ..._72 */
#define ICU_LIB "libicuuc.so." MFA_STR(U_ICU_VERSION_MAJOR_NUM)

static struct {
  const UNormalizer2 *(*nfc_instance)(UErrorCode *);
  UChar *(*from_utf8)(UChar *, int32_t, int32_t *, const char *, int32_t,
                      UErrorCode *);
  int32_t (*normalize)(const UNormalizer2 *, const UChar *, int32_t, UChar *,
                       int32_t, UErrorCode *);
  char *(*to_utf8)(char *, int32_t, int32_t *, const UChar *, int32_t,
                   UErrorCode *);
  int ok;
} icu;
static char icu_why[160] = "ICU not loaded";
static pthread_once_t icu_once = PTHREAD_ONCE_INIT;

static void icu_load(void) {
  void *h = mf_dlopen(ICU_LIB, "ICU", icu_why, sizeof icu_why);
  if (h == NULL)
    return;
#define ICU_SYM(field, fn)                                                     \
  (mf_dlsym(h, MFA_STR(fn), &icu.field, sizeof icu.field) == 0                 \
       ? 0                                                                     \
       : (snprintf(icu_why, sizeof icu_why, "%s has no %s", ICU_LIB,           \
                   MFA_STR(fn)),                                               \
          -1))
  if (ICU_SYM(nfc_instance, unorm2_getNFCInstance) == 0 &&
      ICU_SYM(from_utf8, u_strFromUTF8) == 0 &&
      ICU_SYM(normalize, unorm2_normalize) == 0 &&
      ICU_SYM(to_utf8, u_strToUTF8) == 0)
    icu.ok = 1;
#undef ICU_SYM
}

int mfa_nfc(const char *s, size_t len, char **out, const char **why) {
  *out = NULL;
  if (!mfa_has_non_ascii(s, len)) { /* ASCII is always NFC */
    *out = mfa_strndup(s, len);
    return *out ? 0 : mfa_fail(why, MF_ADDR_E_NOMEM, "out of memory");
  }
  if (len > (size_t)INT32_MAX / 4)
    return mfa_fail(why, MF_ADDR_E_NORMALIZE, "string too long to normalise");
  pthread_once(&icu_once, icu_load);
  if (!icu.ok)
    return mfa_fail(why, MF_ADDR_E_NORMALIZE, icu_why);
  UErrorCode st = U_ZERO_ERROR;
  const UNormalizer2 *nfc = icu.nfc_instance(&st);
  if (U_FAILURE(st))
    return mfa_fail(why, MF_ADDR_E_NORMALIZE, "ICU NFC data unavailable");

  int rc = MF_ADDR_E_NOMEM;
  const char *msg = "out of memory";
  UChar *u16 = NULL, *n16 = NULL;
  char *res = NULL;
  int32_t u16len = 0, n16len = 0, u8len = 0;

  /* UTF-8 -> UTF-16 (a UTF-16 string is never longer than its UTF-8). */
  u16 = xmalloc(sizeof(UChar) * (len + 1));
  if (!u16)
    goto done;
  icu.from_utf8(u16, (int32_t)len + 1, &u16len, s, (int32_t)len, &st);
  if (U_FAILURE(st))
    goto icu_fail;

  /* Normalise: preflight for the size, then for real. */
  n16len = icu.normalize(nfc, u16, u16len, NULL, 0, &st);
  if (st != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(st))
    goto icu_fail;
  st = U_ZERO_ERROR;
  n16 = xmalloc(sizeof(UChar) * ((size_t)n16len + 1));
  if (!n16)
    goto done;
  n16len = icu.normalize(nfc, u16, u16len, n16, n16len + 1, &st);
  if (U_FAILURE(st))
    goto icu_fail;

  /* UTF-16 -> UTF-8. */
  icu.to_utf8(NULL, 0, &u8len, n16, n16len, &st);
  if (st != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(st))
    goto icu_fail;
  st = U_ZERO_ERROR;
  res = xmalloc((size_t)u8len + 1);
  if (!res)
    goto done;
  icu.to_utf8(res, u8len + 1, &u8len, n16, n16len, &st);
  if (U_FAILURE(st))
    goto icu_fail;
  res[u8len] = '\0';
  *out = res;
  res = NULL;
  rc = 0;
  goto done;

icu_fail:
  rc = MF_ADDR_E_NORMALIZE;
  msg = "ICU failed to NFC-normalise the string";
done:
  free(u16);
  free(n16);
  free(res);
  return rc ? mfa_fail(why, rc, msg) : 0;
}
