/* test_lazy_libs.c -- ICU is loaded when a string first needs NFC, not at
 * start-up (addr/unicode.c; bench/MEMORY.md has what it costs), once, from
 * whichever threads get there first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <mailfilter/addr.h>

/* 1 when a file whose name contains `lib` is mapped into this process. */
static int mapped(const char *lib) {
  FILE *f = fopen("/proc/self/maps", "r");
  assert_non_null(f);
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL)
    found = strstr(line, lib) != NULL;
  fclose(f);
  return found;
}

static int equal(const char *a, const char *b) {
  mf_addr *x = NULL, *y = NULL;
  const char *why = NULL;
  int rc = mf_addr_parse(a, 0, &x, &why);
  if (rc == 0)
    rc = mf_addr_parse(b, 0, &y, &why);
  int eq = rc == 0 ? mf_addr_equal(x, y) : rc;
  mf_addr_free(x);
  mf_addr_free(y);
  return eq;
}

/* u + U+0308 (NFD) and U+00FC (NFC). */
#define UE_NFD "j" "u\xcc\x88" "rgen@example.com"
#define UE_NFC "j" "\xc3\xbc" "rgen@example.com"

static pthread_barrier_t go;

static void *first_use(void *arg) {
  (void)arg;
  pthread_barrier_wait(&go);
  return (void *)(intptr_t)equal(UE_NFD, UE_NFC);
}

static void test_icu_on_first_use(void **state) {
  (void)state;
  assert_false(mapped("libicuuc"));
  /* ASCII is NFC already: no ICU. */
  assert_int_equal(equal("a@example.com", "a@EXAMPLE.com"), 1);
  assert_int_equal(equal("a@example.com", "b@example.com"), 0);
  assert_false(mapped("libicuuc"));
  /* Four threads need it at once. */
  enum { N = 4 };
  pthread_t t[N];
  assert_int_equal(pthread_barrier_init(&go, NULL, N), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(pthread_create(&t[i], NULL, first_use, NULL), 0);
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    assert_int_equal(pthread_join(t[i], &r), 0);
    assert_int_equal((intptr_t)r, 1);
  }
  pthread_barrier_destroy(&go);
  assert_true(mapped("libicuuc"));
  assert_int_equal(equal(UE_NFC, UE_NFD), 1);
  assert_int_equal(equal("j\xc3\xbcrgen@example.com", "jurgen@example.com"),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_icu_on_first_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
