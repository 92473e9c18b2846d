/* test_header_rfc2047.c -- RFC 2047 decoding in many charsets, malformed
 * encoded words, encoding + folding of UTF-8 values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include <mailfilter/header.h>

#include "testutil.h"

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF). */
static int g_utf8_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p, n = c < 0x80         ? 0
                         : (c >> 5) == 6  ? 1
                         : (c >> 4) == 14 ? 2
                         : (c >> 3) == 30 ? 3
                                          : 9;
    if (n == 9)
      return 0;
    unsigned cp = n == 0 ? c : c & (0x3f >> n);
    for (unsigned k = 1; k <= n; k++) {
      if ((p[k] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (p[k] & 0x3f);
    }
    static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    p += n + 1;
  }
  return 1;
}

static void check_decode(const char *raw, const char *want) {
  char *out = NULL;
  assert_int_equal(mf_hdr_decode(raw, strlen(raw), &out), MF_HDR_OK);
  assert_string_equal(out, want);
  free(out);
}

static const struct {
  const char *enc, *text;
} samples[] = {
    {"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4oCTIOKckw==?=", "Grüße aus Köln – ✓"},
    {"=?UTF-8?Q?Caf=C3=A9_cr=C3=A8me?=", "Café crème"},
    {"=?utf-8?q?Caf=c3=a9_cr=c3=a8me?=", "Café crème"},
    {"=?ISO-8859-1?Q?Se=F1or_M=FCller?=", "Señor Müller"},
    {"=?ISO-8859-15?B?UHJpeDogMTAgpCBuZXQ=?=", "Prix: 10 € net"},
    {"=?windows-1252?Q?=93smart_quotes=94_=96_dash?=", "“smart quotes” – dash"},
    {"=?ISO-2022-JP?B?GyRCRnxLXDhsJE4lRiU5JUgbKEI=?=", "日本語のテスト"},
    {"=?KOI8-R?B?8NLJ18XULCDNydI=?=", "Привет, мир"},
    {"=?GB18030?B?1tDOxNPKvP7W98zi?=", "中文邮件主题"},
    {"=?ISO-8859-2?Q?=A3=F3d=BC_=AF=F3=B3=E6?=", "Łódź Żółć"},
    {"=?windows-1251?B?x+Tw4OLx8uLz6fLl?=", "Здравствуйте"},
};

static void test_charsets(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof samples / sizeof *samples; i++)
    check_decode(samples[i].enc, samples[i].text);
}

static void test_mixed_and_folded(void **state) {
  (void)state;
  /* Whitespace between adjacent encoded words disappears, around plain
   * text it stays; folding (LF or CRLF) is unfolded; leading space of the
   * raw value trimmed. */
  check_decode(" Re: =?UTF-8?Q?Caf=C3=A9?=\r\n =?ISO-8859-1?Q?_cr=E8me?= ok",
               "Re: Café crème ok");
  check_decode(" =?KOI8-R?B?8NLJ18XULA==?=\n\t=?UTF-8?B?INC80LjRgA==?=",
               "Привет, мир");
  /* Through a collection: lazy and cached (same pointer twice). */
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  const char *v = " =?GB18030?B?1tDOxNPKvP7W98zi?=";
  assert_int_equal(mf_hdr_append_raw(h, "Subject", v, strlen(v), 1), MF_HDR_OK);
  const char *d1 = mf_hdr_value(h, 0);
  assert_string_equal(d1, "中文邮件主题");
  assert_ptr_equal(mf_hdr_value(h, 0), d1);
  mf_hdr_free(h);
}

static void test_malformed(void **state) {
  (void)state;
  /* Left as text, no error. */
  check_decode("=?bogus", "=?bogus");
  check_decode("=?UTF-8?Q?unterminated", "=?UTF-8?Q?unterminated");
  check_decode("=?UTF-8?X?abc?=", "=?UTF-8?X?abc?=");
  check_decode("a =? b ?= c", "a =? b ?= c");
  check_decode("=??Q?x?=", "=??Q?x?=");
  /* Broken base64 or unknown charset must still give valid UTF-8. */
  const char *odd[] = {"=?UTF-8?B?####?=", "=?x-unknown-cs?Q?caf=E9?=",
                       "=?UTF-8?Q?=FF=FE?=", "=?ISO-2022-JP?B?GyRC?="};
  for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
    char *out = NULL;
    assert_int_equal(mf_hdr_decode(odd[i], strlen(odd[i]), &out), MF_HDR_OK);
    assert_non_null(out);
    assert_true(g_utf8_ok(out));
    free(out);
  }
}

static void test_8bit(void **state) {
  (void)state;
  check_decode(" Grüße \xe2\x9c\x93", "Grüße ✓"); /* UTF-8 passes */
  check_decode("caf\xe9 cr\xe8me", "café crème"); /* Latin-1 fallback */
  check_decode("\xff\xfe\xfd", "\xc3\xbf\xc3\xbe\xc3\xbd"); /* never invalid */
}

/* Encode, check the shape (ASCII, lines <= 78 with "Name: ", LF only, each
 * continuation starting with WSP), decode back. */
static void check_encode(const char *name, const char *text, int leadspc,
                         const char *want_decoded) {
  char *enc = NULL;
  size_t len = 0;
  assert_int_equal(mf_hdr_encode(name, text, leadspc, &enc, &len), MF_HDR_OK);
  assert_int_equal(strlen(enc), len);
  if (leadspc)
    assert_int_equal(enc[0], ' ');
  size_t col = strlen(name) + 1 + (leadspc ? 0 : 1);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)enc[i];
    assert_true(c < 0x80);
    assert_true(c != '\r');
    if (c == '\n') {
      assert_true(enc[i + 1] == ' ' || enc[i + 1] == '\t');
      assert_true(col <= 78);
      col = 0;
    } else {
      col++;
    }
  }
  assert_true(col <= 78);
  char *dec = NULL;
  assert_int_equal(mf_hdr_decode(enc, len, &dec), MF_HDR_OK);
  assert_string_equal(dec, want_decoded ? want_decoded : text);
  free(dec);
  free(enc);
}

static void test_encode(void **state) {
  (void)state;
  /* ASCII stays as is. */
  char *enc;
  assert_int_equal(mf_hdr_encode("Subject", "Hello world", 1, &enc, NULL),
                   MF_HDR_OK);
  assert_string_equal(enc, " Hello world");
  free(enc);
  assert_int_equal(mf_hdr_encode("Subject", "Hello world", 0, &enc, NULL),
                   MF_HDR_OK);
  assert_string_equal(enc, "Hello world");
  free(enc);
  /* Non-ASCII is encoded. */
  assert_int_equal(mf_hdr_encode("Subject", "Café", 1, &enc, NULL), MF_HDR_OK);
  assert_string_equal(enc, " =?UTF-8?Q?Caf=C3=A9?=");
  free(enc);
  check_encode("Subject", "Grüße aus Köln", 1, NULL);
  check_encode("Subject", "Re: Grüße aus Köln und Umgebung", 0, NULL);
  for (size_t i = 0; i < sizeof samples / sizeof *samples; i++)
    check_encode("Subject", samples[i].text, 1, NULL);
  /* Something that looks like an encoded word is protected. */
  check_encode("Subject", "see =?UTF-8?Q?x?= here", 1, NULL);
  /* Long values: folded, any charset mix. */
  char long_text[4096] = "";
  for (int i = 0; i < 40; i++)
    strcat(long_text, i % 3 ? "日本語のテキスト " : "plain words here ");
  long_text[strlen(long_text) - 1] = '\0';
  check_encode("Subject", long_text, 1, NULL);
  check_encode("X-A-Rather-Long-Header-Name-For-Testing", long_text, 0, NULL);
  char ascii_long[2048] = "";
  for (int i = 0; i < 50; i++)
    strcat(ascii_long, "ascii words ");
  ascii_long[strlen(ascii_long) - 1] = '\0';
  check_encode("Subject", ascii_long, 1, NULL);
  /* A 200-byte word without spaces: encoded words split it. */
  char cjk[1024] = "";
  for (int i = 0; i < 60; i++)
    strcat(cjk, "語");
  check_encode("Subject", cjk, 1, NULL);
  /* GMime joins adjacent B words before decoding: no "=" pad may sit in
   * the middle (this lost text before the encoder avoided it). */
  check_encode("Subject", "日本語のテキスト 日本語のテキスト 日本語のテキスト",
               1, NULL);
  check_encode("Subject", "éééééééééééééééééééééééééééééééééééééééééééééééé", 1,
               NULL);
  /* 4-byte characters after a long (50) name: no 3-byte aligned B word
   * fits on the first line, it falls back to Q. */
  check_encode("X-A-Rather-Long-Header-Name-For-Testing-Purposes-H",
               "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀", 1, NULL);
  /* Errors. */
  assert_int_equal(mf_hdr_encode("S", "\xc3(", 1, &enc, NULL), MF_HDR_E_UTF8);
  assert_int_equal(mf_hdr_encode("S", "a\nb", 1, &enc, NULL), MF_HDR_E_VALUE);
  assert_int_equal(mf_hdr_encode("S", "a\rb", 1, &enc, NULL), MF_HDR_E_VALUE);
}

static void test_set_roundtrip(void **state) {
  (void)state;
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  assert_int_equal(mf_hdr_append_raw(h, "Subject", " old", 4, 1), MF_HDR_OK);
  const char *text = "Ünïcödé subject that is long enough to need folding, "
                     "with Cyrillic Привет мир and Chinese 中文邮件主题 too";
  assert_int_equal(mf_hdr_set(h, 0, text), MF_HDR_OK);
  size_t len;
  const char *raw = mf_hdr_raw(h, 0, &len);
  assert_non_null(strstr(raw, "=?UTF-8?"));
  assert_non_null(strchr(raw, '\n'));
  assert_null(strchr(raw, '\r'));
  assert_int_equal(raw[0], ' ');
  assert_string_equal(mf_hdr_value(h, 0), text);
  mf_hdr_free(h);
}

/* First use of GMime from several threads at once (pthread_once), then
 * concurrent decoding on separate collections. */
static void *thread_main(void *arg) {
  (void)arg;
  for (int k = 0; k < 200; k++) {
    mf_hdrs *h;
    if (mf_hdr_new(&h, MF_HDR_LEADSPC) != MF_HDR_OK)
      return (void *)1;
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++)
      mf_hdr_append_raw(h, "Subject", samples[i].enc, strlen(samples[i].enc),
                        1);
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
      const char *v = mf_hdr_value(h, i);
      if (v == NULL || strcmp(v, samples[i].text) != 0) {
        mf_hdr_free(h);
        return (void *)1;
      }
    }
    mf_hdr_free(h);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, thread_main, NULL), 0);
  for (int i = 0; i < 4; i++) {
    void *rv;
    assert_int_equal(pthread_join(t[i], &rv), 0);
    assert_null(rv);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_threads), /* first: races GMime's init */
      cmocka_unit_test(test_charsets),  cmocka_unit_test(test_mixed_and_folded),
      cmocka_unit_test(test_malformed), cmocka_unit_test(test_8bit),
      cmocka_unit_test(test_encode),    cmocka_unit_test(test_set_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
