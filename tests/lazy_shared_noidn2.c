/* lazy_shared_noidn2.c -- the shared libmfaddr when libidn2 cannot be
 * loaded (built as mfaddr_noidn2, which names a libidn2 that does not
 * exist: addr/CMakeLists.txt): ASCII domains and non-ASCII local parts work
 * as always; a domain that needs libidn2 is refused with MF_ADDR_E_IDNA and
 * the loader's reason, from any thread, every time; nothing crashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/addr.h>

#define MISSING "libmf-test-no-such-idn2.so.0"

/* 1 when `s` fails with MF_ADDR_E_IDNA and a why that names the library
 * that could not be loaded. */
static int refused(const char *s) {
  mf_addr *a = NULL;
  const char *why = NULL;
  int rc = mf_addr_parse(s, 0, &a, &why);
  return rc == MF_ADDR_E_IDNA && a == NULL && why != NULL &&
         strstr(why, "cannot load libidn2") != NULL &&
         strstr(why, MISSING) != NULL;
}

static void *first_use(void *arg) {
  (void)arg;
  return (void *)(intptr_t)(refused("a@b\xc3\xbc"
                                    "cher.de") &&
                            refused("a@xn--bcher-kva.de"));
}

static pthread_barrier_t go;

static void *at_once(void *arg) {
  pthread_barrier_wait(&go);
  return first_use(arg);
}

static void test_first_use_from_four_threads(void **state) {
  (void)state;
  enum { N = 4 };
  pthread_t t[N];
  assert_int_equal(pthread_barrier_init(&go, NULL, N), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(pthread_create(&t[i], NULL, at_once, NULL), 0);
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    assert_int_equal(pthread_join(t[i], &r), 0);
    assert_int_equal((intptr_t)r, 1);
  }
  pthread_barrier_destroy(&go);
}

static void test_without_libidn2(void **state) {
  (void)state;
  /* Needs no libidn2. */
  mf_addr *a = NULL, *b = NULL;
  assert_int_equal(mf_addr_parse("J\xc3\xbcrgen@Example.COM", 0, &a, NULL), 0);
  assert_string_equal(mf_addr_domain_alabel(a), "example.com");
  assert_int_equal(mf_addr_parse("Ju\xcc\x88rgen@example.com", 0, &b, NULL), 0);
  assert_int_equal(mf_addr_equal(a, b), 1);
  assert_true(mf_addr_domain_is(a, "EXAMPLE.com"));
  /* Needs it: refused, again and again. */
  assert_true(refused("a@b\xc3\xbc"
                      "cher.de"));
  assert_true(refused("a@xn--bcher-kva.de"));
  assert_false(mf_addr_domain_is(a, "b\xc3\xbc"
                                    "cher.de"));
  assert_false(mf_addr_domain_under(a, "xn--bcher-kva.de"));
  char *out = (char *)"untouched";
  const char *why = NULL;
  assert_int_equal(mf_addr_domain_convert("b\xc3\xbc"
                                          "cher.de",
                                          0, &out, &why),
                   MF_ADDR_E_IDNA);
  assert_null(out);
  assert_non_null(strstr(why, MISSING));
  assert_int_equal(mf_addr_domain_convert("Example.com", 1, &out, NULL), 0);
  assert_string_equal(out, "example.com");
  free(out);
  mf_addr_free(a);
  mf_addr_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_use_from_four_threads),
      cmocka_unit_test(test_without_libidn2),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
