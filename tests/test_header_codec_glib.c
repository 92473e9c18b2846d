/* test_header_codec_glib.c -- header/codec.c's own UTF-8 check and base64
 * (so that GLib is not needed to encode a header) against GLib's:
 * g_utf8_validate() on every 1- and 2-byte string, every 3-byte string
 * whose lead byte starts a sequence, and 4-byte sequences around every
 * boundary; base64 through mf_hdr_encode() and GMime's decoder on texts of
 * every length up to 200 bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/header.h>

#include "header/internal.h"

static void same(const unsigned char *s, size_t n) {
  bool ours = mfh_utf8_valid((const char *)s, n);
  bool theirs = g_utf8_validate((const char *)s, (gssize)n, NULL) != 0;
  if (ours != theirs)
    fail_msg("%zu bytes %02x %02x %02x %02x: ours %d, GLib %d", n, s[0],
             n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0, ours,
             theirs);
}

static void test_utf8_valid(void **state) {
  (void)state;
  unsigned char s[4];
  for (unsigned a = 0; a < 256; a++) {
    s[0] = (unsigned char)a;
    same(s, 1);
    for (unsigned b = 0; b < 256; b++) {
      s[1] = (unsigned char)b;
      same(s, 2);
      if (a < 0xe0)
        continue;
      for (unsigned c = 0; c < 256; c++) {
        s[2] = (unsigned char)c;
        same(s, 3);
      }
    }
  }
  /* 4 bytes: every lead byte from 0xf0, the second byte in full, the rest
   * at the edges of the continuation range and outside it. */
  static const unsigned char tail[] = {0x00, 0x41, 0x7f, 0x80, 0x81,
                                       0xbf, 0xc0, 0xff};
  for (unsigned a = 0xf0; a < 256; a++)
    for (unsigned b = 0; b < 256; b++)
      for (size_t c = 0; c < sizeof tail; c++)
        for (size_t d = 0; d < sizeof tail; d++) {
          unsigned char t[4] = {(unsigned char)a, (unsigned char)b, tail[c],
                                tail[d]};
          same(t, 4);
        }
  /* Longer: valid text with one bad byte at each position. */
  const char *ok = "Gr\xc3\xbc\xc3\x9f" "e \xe2\x82\xac \xf0\x9f\x98\x80!";
  size_t n = strlen(ok);
  unsigned char buf[64];
  same((const unsigned char *)ok, n);
  for (size_t i = 0; i < n; i++) {
    memcpy(buf, ok, n);
    buf[i] = 0xff;
    same(buf, n);
    buf[i] = 0x00;
    same(buf, n);
  }
}

/* Texts that the encoder turns into B words (mostly non-ASCII), of every
 * length: decoded back by GMime, they are the text. */
static void test_base64_roundtrip(void **state) {
  (void)state;
  char text[256], *enc = NULL, *dec = NULL;
  size_t b_words = 0;
  static const char *const pieces[] = {"\xe2\x82\xac", "\xc3\xa9",
                                       "\xf0\x9f\x98\x80", "x"};
  for (size_t len = 1; len <= 200; len++) {
    size_t n = 0;
    for (size_t k = 0; n < len; k++) {
      const char *p = pieces[(k * 7 + len) % 3];
      size_t pl = strlen(p);
      if (n + pl > len)
        p = pieces[3], pl = 1;
      memcpy(text + n, p, pl);
      n += pl;
    }
    text[n] = '\0';
    assert_int_equal(mf_hdr_encode("Subject", text, 0, &enc, NULL), MF_HDR_OK);
    b_words += strstr(enc, "?B?") != NULL;
    assert_int_equal(mf_hdr_decode(enc, strlen(enc), &dec), MF_HDR_OK);
    if (strcmp(dec, text) != 0)
      fail_msg("length %zu: %s -> %s -> %s", len, text, enc, dec);
    free(enc);
    free(dec);
  }
  assert_true(b_words >= 150); /* the base64 path was what ran */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8_valid),
      cmocka_unit_test(test_base64_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
