/* lazy_shared.c -- through the SHARED libraries (the cmocka tests link the
 * static ones, which link GMime and libidn2 as usual): GMime, ICU and
 * libidn2 are not mapped when a program starts, nor after work that does
 * not need them, and neither is GLib (with libpcre2, its dependency), which
 * comes with GMime (only GMime's results are freed with g_free), nor
 * libunistring, which comes with libidn2; the first call that needs GMime
 * (an RFC 2047 word, an address list), ICU (NFC of a non-ASCII local part)
 * or libidn2 (a non-ASCII or "xn--" domain) loads it, from any thread,
 * once, and gives their results (header/gmime_lazy.c, addr/unicode.c,
 * addr/idn2_lazy.c).  A non-ASCII domain does not need ICU: libidn2
 * normalises it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mailfilter/addr.h>
#include <mailfilter/header.h>

#include "lazy_shared_maps.h"

static void assert_decodes(const char *raw, const char *want) {
  char *out = NULL;
  assert_int_equal(mf_hdr_decode(raw, strlen(raw), &out), MF_HDR_OK);
  assert_string_equal(out, want);
  free(out);
}

static int addr_equal(const char *a, const char *b) {
  mf_addr *x = NULL, *y = NULL;
  int rc = mf_addr_parse(a, 0, &x, NULL);
  if (rc == 0)
    rc = mf_addr_parse(b, 0, &y, NULL);
  int eq = rc == 0 ? mf_addr_equal(x, y) : rc;
  mf_addr_free(x);
  mf_addr_free(y);
  return eq;
}

/* u + U+0308 (NFD) and U+00FC (NFC). */
#define UE_NFD                                                                 \
  "j"                                                                          \
  "u\xcc\x88"                                                                  \
  "rgen@example.com"
#define UE_NFC                                                                 \
  "j"                                                                          \
  "\xc3\xbc"                                                                   \
  "rgen@example.com"

static void *decode_first(void *arg) {
  (void)arg;
  char *out = NULL;
  const char *raw = "=?UTF-8?Q?caf=C3=A9?= au lait";
  int rc = mf_hdr_decode(raw, strlen(raw), &out);
  int ok = rc == MF_HDR_OK && strcmp(out, "caf\xc3\xa9 au lait") == 0;
  free(out);
  return (void *)(intptr_t)ok;
}

/* スパム.example.com in NFD (パ = ハ + U+309A) and its A-label. */
#define SPAM_NFD_DOMAIN                                                        \
  "\xe3\x82\xb9\xe3\x83\x8f\xe3\x82\x9a\xe3\x83\xa0.example.com"
#define SPAM_ALABEL "xn--zck5b2b.example.com"

static void *idna_first(void *arg) {
  (void)arg;
  mf_addr *a = NULL;
  int ok =
      mf_addr_parse("spam-trap@" SPAM_NFD_DOMAIN, 0, &a, NULL) == 0 &&
      strcmp(mf_addr_domain_alabel(a), SPAM_ALABEL) == 0 &&
      addr_equal("spam-trap@" SPAM_ALABEL, "spam-trap@" SPAM_NFD_DOMAIN) == 1;
  mf_addr_free(a);
  return (void *)(intptr_t)ok;
}

static void *nfc_first(void *arg) {
  (void)arg;
  return (void *)(intptr_t)(addr_equal(UE_NFD, UE_NFC) == 1);
}

static pthread_barrier_t go;

static void *at_once(void *fn) {
  pthread_barrier_wait(&go);
  return ((void *(*)(void *))fn)(NULL);
}

/* fn's first use, from four threads at once: each returns 1. */
static void four_threads(void *(*fn)(void *)) {
  enum { N = 4 };
  pthread_t t[N];
  assert_int_equal(pthread_barrier_init(&go, NULL, N), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(pthread_create(&t[i], NULL, at_once, (void *)fn), 0);
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    assert_int_equal(pthread_join(t[i], &r), 0);
    assert_int_equal((intptr_t)r, 1);
  }
  pthread_barrier_destroy(&go);
}

/* GLib or its libpcre2 is mapped (not libm, GLib's other dependency: the
 * sanitizers' runtime needs it too). */
static int glib_mapped(void) {
  return mapped("libglib-2.0") || mapped("libpcre2");
}

/* A diff past diff.c's scan limit (4096 name comparisons), which counts
 * the occurrences with its own hash table: names in mixed case. */
static void diff_many_originals(void) {
  static const char *const names[] = {"X-Spam", "Received", "x-spam",
                                      "X-SPAM", "X-B",      "RECEIVED"};
  enum { N = 600, K = sizeof names / sizeof names[0] };
  static char nm[N][16];
  mf_hdrs *h = NULL;
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  for (int i = 0; i < N; i++) {
    /* Every 7th field is named X-N0 to X-N36, the others cycle names[]. */
    if (i % 7 == 6)
      snprintf(nm[i], sizeof nm[i], "X-N%d", i % 37);
    else
      snprintf(nm[i], sizeof nm[i], "%s", names[i % K]);
    assert_int_equal(mf_hdr_append_raw(h, nm[i], "v", 1, 0), MF_HDR_OK);
  }
  mf_hdr_change *c = NULL;
  size_t n = 0;
  assert_int_equal(mf_hdr_diff(h, MF_HDR_DIFF_RECREATE, &c, &n), MF_HDR_OK);
  assert_int_equal(n, 2 * N); /* N deletions, then N insertions */
  for (size_t k = N; k < n; k++)
    assert_int_equal(c[k].kind, MF_HDR_INSERT);
  for (size_t k = 0; k < N; k++) {
    assert_int_equal(c[k].kind, MF_HDR_DELETE);
    size_t i = c[k].index, want = 1;
    assert_true(i < N);
    assert_string_equal(c[k].name, nm[i]);
    for (size_t j = 0; j < i; j++)
      want += strcasecmp(nm[j], nm[i]) == 0;
    assert_int_equal(c[k].occurrence, want);
  }
  /* Spot checks: the 1st, 2nd and 3rd field named x-spam in any case. */
  assert_int_equal(c[0].occurrence, 1);
  assert_int_equal(c[2].occurrence, 2);
  assert_int_equal(c[3].occurrence, 3);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

static void test_gmime_on_first_use(void **state) {
  (void)state;
  assert_false(mapped("libgmime"));
  assert_false(mapped("libgio"));
  assert_false(mapped("libicuuc"));
  assert_false(glib_mapped());
  /* A whole plain-ASCII header block: parsed, edited, encoded, diffed. */
  mf_hdrs *h = NULL;
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  const char *blk = "From: a@example.org\r\nSubject: hello\r\n world\r\n"
                    "X-A: 1\r\n\r\n";
  assert_int_equal(mf_hdr_parse(h, blk, strlen(blk), NULL), MF_HDR_OK);
  assert_string_equal(mf_hdr_get(h, "Subject", 1), "hello world");
  assert_int_equal(mf_hdr_add(h, "X-Rcpt-Count", "2"), MF_HDR_OK);
  mf_hdr_change *c = NULL;
  size_t n = 0;
  assert_int_equal(mf_hdr_diff(h, 0, &c, &n), MF_HDR_OK);
  assert_int_equal(n, 1);
  mf_hdr_changes_free(c);
  assert_decodes("plain text", "plain text");
  diff_many_originals();
  assert_false(mapped("libgmime"));
  assert_false(glib_mapped());
  /* The first encoded word, from four threads at once. */
  four_threads(decode_first);
  assert_true(mapped("libgmime"));
  assert_true(mapped("libglib-2.0"));
  assert_decodes("=?ISO-8859-1?B?SmFja2llIENoYW4=?=", "Jackie Chan");
  /* Address lists go through GMime's parser and GObject's type checks. */
  mf_hdr_addrlist *l = NULL;
  const char *al = "Team: \"A B\" <a@example.org>, c@example.net;, "
                   "=?UTF-8?Q?J=C3=BCrgen?= <j@example.com>";
  assert_int_equal(mf_hdr_addrlist_parse(al, strlen(al), &l, NULL), MF_HDR_OK);
  assert_int_equal(mf_hdr_addrlist_count(l), 2);
  assert_true(mf_hdr_addrlist_is_group(l, 0));
  assert_string_equal(mf_hdr_addrlist_name(l, 0), "Team");
  assert_int_equal(mf_hdr_addrlist_member_count(l, 0), 2);
  assert_string_equal(mf_hdr_addrlist_member_name(l, 0, 0), "A B");
  assert_false(mf_hdr_addrlist_is_group(l, 1));
  assert_string_equal(mf_hdr_addrlist_name(l, 1), "J\xc3\xbcrgen");
  assert_string_equal(mf_addr_local(mf_hdr_addrlist_addr(l, 1)), "j");
  mf_hdr_addrlist_free(l);
  assert_int_equal(mf_hdr_addrlist_parse("not an address", 14, &l, NULL),
                   MF_HDR_E_ADDR);
  mf_hdr_free(h);
}

/* libidn2 with libunistring: not for ASCII domains, loaded by the first
 * non-ASCII one, which needs no ICU.  Runs first: GMime, once loaded,
 * brings libidn2 with it. */
static void test_idn2_on_first_use(void **state) {
  (void)state;
  assert_false(mapped("libidn2"));
  assert_false(mapped("libunistring"));
  assert_int_equal(addr_equal("a@Example.COM", "a@example.com"), 1);
  char *o = NULL;
  assert_int_equal(mf_addr_domain_convert("Mail.Example.com", 1, &o, NULL), 0);
  assert_string_equal(o, "mail.example.com");
  free(o);
  const char *why = NULL;
  mf_addr *a = NULL;
  assert_int_equal(mf_addr_parse("a@ab--c.example", 0, &a, &why),
                   MF_ADDR_E_DOMAIN);
  assert_false(mapped("libidn2"));
  assert_false(mapped("libunistring"));
  four_threads(idna_first);
  assert_true(mapped("libidn2"));
  assert_false(mapped("libicuuc"));
  assert_int_equal(mf_addr_domain_convert(SPAM_ALABEL, 1, &o, NULL), 0);
  assert_string_equal(o, "\xe3\x82\xb9\xe3\x83\x91\xe3\x83\xa0.example.com");
  free(o);
  assert_int_equal(mf_addr_parse("a@xn--cafe-yvc.example", 0, &a, &why),
                   MF_ADDR_E_PUNYCODE);
  assert_false(mapped("libicuuc"));
}

static void test_icu_on_first_use(void **state) {
  (void)state;
  assert_false(mapped("libicuuc"));
  /* ASCII is NFC already: no ICU. */
  assert_int_equal(addr_equal("a@example.com", "a@EXAMPLE.com"), 1);
  assert_int_equal(addr_equal("a@example.com", "b@example.com"), 0);
  assert_false(mapped("libicuuc"));
  four_threads(nfc_first);
  assert_true(mapped("libicuuc"));
  assert_int_equal(addr_equal(UE_NFC, UE_NFD), 1);
  assert_int_equal(addr_equal(UE_NFC, "jurgen@example.com"), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* first: GMime needs libidn2 too */
      cmocka_unit_test(test_idn2_on_first_use),
      cmocka_unit_test(test_gmime_on_first_use),
      cmocka_unit_test(test_icu_on_first_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
