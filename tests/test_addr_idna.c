/* Tests of addr/idna.c's domain path: NFC by libidn2 alone (no ICU for a
 * domain), and the ASCII path, which does without libidn2, against
 * libidn2's answer for every kind of ASCII domain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr/addr_internal.h"
#include "lazy_shared_maps.h"

static mf_addr *parse_ok(const char *s) {
  mf_addr *a = NULL;
  const char *why = NULL;
  int rc = mf_addr_parse(s, 0, &a, &why);
  if (rc != 0)
    fail_msg("%s: %d %s", s, rc, why);
  return a;
}

static void assert_convert(const char *domain, int to_ulabel,
                           const char *want) {
  char *out = NULL;
  assert_int_equal(mf_addr_domain_convert(domain, to_ulabel, &out, NULL), 0);
  assert_string_equal(out, want);
  free(out);
}

/* Spellings of one domain, the first in NFC: every one gives the same
 * A-label and the NFC U-label, by parsing and by conversion. */
static void assert_nfc_domain(const char *const *spellings, size_t n,
                              const char *alabel, const char *ulabel) {
  for (size_t i = 0; i < n; i++) {
    char buf[256];
    snprintf(buf, sizeof buf, "someone@%s", spellings[i]);
    mf_addr *a = parse_ok(buf);
    assert_string_equal(mf_addr_domain(a), spellings[i]); /* as written */
    assert_string_equal(mf_addr_domain_alabel(a), alabel);
    assert_string_equal(mf_addr_domain_ulabel(a), ulabel);
    assert_convert(spellings[i], 0, alabel);
    assert_convert(spellings[i], 1, ulabel);
    assert_true(mf_addr_domain_is(a, spellings[0]));
    assert_true(mf_addr_domain_is(a, alabel));
    mf_addr_free(a);
  }
  assert_convert(alabel, 1, ulabel);
}

/* é: U+00E9 (NFC) and e + U+0301 (NFD). */
static void test_nfc_composes(void **state) {
  (void)state;
  static const char *const cafe[] = {
      "caf\xc3\xa9.example", "cafe\xcc\x81.example", "CAFE\xcc\x81.Example",
      "CAF\xc3\x89.EXAMPLE"};
  assert_nfc_domain(cafe, 4, "xn--caf-dma.example", "caf\xc3\xa9.example");
  /* スパム and its NFD spelling (パ = ハ + U+309A), in the middle label */
  static const char *const spam[] = {
      "mail.\xe3\x82\xb9\xe3\x83\x91\xe3\x83\xa0.example.com",
      "mail.\xe3\x82\xb9\xe3\x83\x8f\xe3\x82\x9a\xe3\x83\xa0.example.com"};
  assert_nfc_domain(spam, 2, "mail.xn--zck5b2b.example.com",
                    "mail.\xe3\x82\xb9\xe3\x83\x91\xe3\x83\xa0.example.com");
}

/* Canonical ordering as well as composition: a + U+0323 + U+0307 and
 * a + U+0307 + U+0323 are both U+1EA1 U+0307 in NFC. */
static void test_nfc_reorders(void **state) {
  (void)state;
  static const char *const dots[] = {
      "x\xe1\xba\xa1\xcc\x87.example", "xa\xcc\xa3\xcc\x87.example",
      "xa\xcc\x87\xcc\xa3.example", "X\xe1\xba\xa0\xcc\x87.example"};
  char *a = NULL;
  assert_int_equal(mfa_domain_idn2(dots[0], strlen(dots[0]), &a, NULL, NULL),
                   0);
  assert_memory_equal(a, "xn--", 4);
  assert_nfc_domain(dots, 4, a, dots[0]);
  free(a);
}

/* An A-label whose decoding is not NFC (cafe + U+0301 encoded as is) is
 * refused: its U-label would not be NFC. */
static void test_alabel_not_nfc(void **state) {
  (void)state;
  mf_addr *a = NULL;
  const char *why = NULL;
  assert_int_equal(mf_addr_parse("x@xn--cafe-yvc.example", 0, &a, &why),
                   MF_ADDR_E_PUNYCODE);
  assert_null(a);
  assert_non_null(why);
  char *o = NULL;
  assert_int_equal(mf_addr_domain_convert("xn--cafe-yvc.example", 1, &o, NULL),
                   MF_ADDR_E_PUNYCODE);
  assert_null(o);
}

/* Nothing above needed ICU: it is loaded for a non-ASCII local part only
 * (unicode.c dlopens it in the static library as in the shared one). */
static void test_no_icu_for_domains(void **state) {
  (void)state;
  assert_false(mapped("libicuuc"));
  mf_addr *a = parse_ok("j\xc3\xbcrgen@example.com");
  mf_addr_free(a);
  assert_true(mapped("libicuuc"));
}

/* mfa_domain_idna() (the ASCII path for s) and mfa_domain_idn2() agree. */
static void assert_same(const char *s, size_t len) {
  char *a1 = NULL, *u1 = NULL, *a2 = NULL, *u2 = NULL;
  const char *w1 = NULL, *w2 = NULL;
  int r1 = mfa_domain_idna(s, len, &a1, &u1, &w1);
  int r2 = mfa_domain_idn2(s, len, &a2, &u2, &w2);
  if (r1 != r2 || (r1 != 0 && strcmp(w1, w2) != 0))
    fail_msg("\"%.*s\": ASCII path %d (%s), libidn2 %d (%s)", (int)len, s, r1,
             r1 ? w1 : "-", r2, r2 ? w2 : "-");
  if (r1 == 0) {
    assert_string_equal(a1, a2);
    assert_string_equal(u1, u2);
  } else {
    assert_null(a1);
    assert_null(u1);
  }
  /* Either output may be NULL. */
  char *only = NULL;
  assert_int_equal(mfa_domain_idna(s, len, NULL, &only, NULL), r1);
  if (r1 == 0)
    assert_string_equal(only, u2);
  free(only);
  assert_int_equal(mfa_domain_idna(s, len, NULL, NULL, NULL), r1);
  free(a1);
  free(u1);
  free(a2);
  free(u2);
}

static void assert_same_z(const char *s) {
  assert_same(s, strlen(s));
}

static void test_ascii_cases(void **state) {
  (void)state;
  static const char *const cases[] = {"example.com",
                                      "EXAMPLE.Com",
                                      "a",
                                      "1.2.3.4",
                                      "a.b.c",
                                      "0a-b.9",
                                      "ab--cd.com",
                                      "a--b.com",
                                      "ab-.com",
                                      "-ab.com",
                                      "a-",
                                      "-",
                                      "--",
                                      "x--",
                                      "xn-.com",
                                      "xn-a.com",
                                      "ab---c.com",
                                      "abc--d.com",
                                      "xx--y.org",
                                      "XN--MNCHEN-3YA.de",
                                      "xn--abc.com",
                                      "xn--zck5b2b",
                                      "a.xn--",
                                      "xn--",
                                      "foo.xn--caf-dma",
                                      "XN--caf-dma.x",
                                      "a_b.com",
                                      "a b.com",
                                      "a..b",
                                      ".a",
                                      "a.",
                                      "",
                                      "exa$mple.com",
                                      "a-b-c-d.e-f"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    assert_same_z(cases[i]);
}

/* Label lengths 62-64 and domain lengths 252-255, hyphens at the edges of
 * a long label. */
static void test_ascii_lengths(void **state) {
  (void)state;
  char d[400];
  for (size_t n = 60; n <= 65; n++) {
    memset(d, 'a', n);
    d[n] = '\0';
    assert_same_z(d);
    d[n - 1] = '-';
    assert_same_z(d);
    strcpy(d + n, ".com");
    assert_same_z(d);
  }
  for (size_t total = 248; total <= 260; total++) {
    /* labels of 49 octets and dots, then a last label to make `total` */
    size_t p = 0;
    while (total - p > 50) {
      memset(d + p, 'b', 49);
      d[p + 49] = '.';
      p += 50;
    }
    memset(d + p, 'c', total - p);
    d[total] = '\0';
    assert_same_z(d);
    d[0] = 'X';
    d[total - 1] = '-'; /* both a long domain and a bad label */
    assert_same_z(d);
    memcpy(d, "ab--", 4);
    assert_same_z(d);
  }
}

/* Random ASCII domains over letters (the x and n of "xn--" among them),
 * digits, '-', '.' and a character a domain may not have. */
static void test_ascii_random(void **state) {
  (void)state;
  static const char alpha[] = "xnXNab0-.-.-_";
  uint32_t seed = 12345;
  char d[300];
  for (int k = 0; k < 200000; k++) {
    seed = seed * 1103515245u + 12345u;
    size_t len = (seed >> 16) % 12 + 1;
    if (k % 100 == 0)
      len = 240 + (seed >> 16) % 20; /* around the domain limit */
    for (size_t i = 0; i < len; i++) {
      seed = seed * 1103515245u + 12345u;
      /* mostly letters, so that long labels occur */
      unsigned r = (seed >> 16) % 64;
      d[i] = r < 51 ? alpha[r % 6] : alpha[r - 51];
    }
    d[len] = '\0';
    assert_same(d, len);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nfc_composes),
      cmocka_unit_test(test_nfc_reorders),
      cmocka_unit_test(test_alabel_not_nfc),
      cmocka_unit_test(test_no_icu_for_domains),
      cmocka_unit_test(test_ascii_cases),
      cmocka_unit_test(test_ascii_lengths),
      cmocka_unit_test(test_ascii_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
