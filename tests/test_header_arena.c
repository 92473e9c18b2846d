/* test_header_arena.c -- the storage of a header collection: received
 * fields live in a per-collection arena (header/hdrs.c), edited ones in
 * their own allocations.  Pointers handed out keep their documented
 * lifetimes across growth, edits and mf_hdr_commit(); a failed allocation
 * at any point gives MF_HDR_E_NOMEM and leaves a usable collection (the
 * ASan build checks that nothing leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailfilter/header.h>

/* The allocation seam's hook (core/seam/mf_alloc.h): fail the fail_at-th
 * allocation counted from arming, 0 = never. */
static long seen, fail_at;
static int failed;

int mf_fault_alloc_fail(void);
int mf_fault_alloc_fail(void) {
  if (fail_at == 0)
    return 0;
  if (++seen == fail_at) {
    failed = 1;
    return 1;
  }
  return 0;
}

static void arm(long n) {
  seen = 0;
  failed = 0;
  fail_at = n;
}

/* Field k's value: k % 7 == 3 gives a long one (up to 3 KiB), field 150 a
 * 100 KiB one and field 200 a 40 KiB one (each larger than an arena block
 * would be). */
static size_t value_len(size_t k) {
  if (k == 150)
    return 100 * 1024;
  if (k == 200)
    return 40 * 1024;
  return k % 7 == 3 ? (k * 37) % 3000 : k % 50;
}

static void make_value(size_t k, char *buf) {
  size_t n = value_len(k);
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)('a' + (k + i) % 26);
  if (n > 0)
    buf[0] = ' ';
  buf[n] = '\0';
}

#define NFIELDS 300

static char *valbuf(void) {
  char *b = malloc(100 * 1024 + 1);
  assert_non_null(b);
  return b;
}

static void test_many_fields_stable(void **state) {
  (void)state;
  mf_hdrs *h;
  char *buf = valbuf(), name[32];
  const char *names[NFIELDS], *raws[NFIELDS];
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  for (size_t k = 0; k < NFIELDS; k++) {
    snprintf(name, sizeof name, "X-Field-%zu", k);
    make_value(k, buf);
    assert_int_equal(mf_hdr_append_raw(h, name, buf, value_len(k), 1),
                     MF_HDR_OK);
    names[k] = mf_hdr_name(h, k);
    raws[k] = mf_hdr_raw(h, k, NULL);
  }
  assert_int_equal(mf_hdr_count(h), NFIELDS);
  /* Appending more fields moved none of the earlier ones. */
  for (size_t k = 0; k < NFIELDS; k++) {
    size_t len;
    snprintf(name, sizeof name, "X-Field-%zu", k);
    make_value(k, buf);
    assert_ptr_equal(mf_hdr_name(h, k), names[k]);
    assert_ptr_equal(mf_hdr_raw(h, k, &len), raws[k]);
    assert_string_equal(names[k], name);
    assert_int_equal(len, value_len(k));
    assert_memory_equal(raws[k], buf, len + 1);
  }
  mf_hdr_change *c;
  size_t n;
  assert_int_equal(mf_hdr_diff(h, 0, &c, &n), MF_HDR_OK);
  assert_int_equal(n, 0);
  mf_hdr_changes_free(c);

  /* Delete every third field from the end: the others keep their
   * pointers, the diff names each deleted original. */
  for (size_t k = NFIELDS; k-- > 0;)
    if (k % 3 == 0)
      assert_int_equal(mf_hdr_delete(h, k), MF_HDR_OK);
  assert_int_equal(mf_hdr_count(h), NFIELDS - NFIELDS / 3);
  for (size_t i = 0, k = 0; k < NFIELDS; k++) {
    if (k % 3 == 0)
      continue;
    assert_ptr_equal(mf_hdr_name(h, i), names[k]);
    assert_ptr_equal(mf_hdr_raw(h, i, NULL), raws[k]);
    i++;
  }
  assert_int_equal(mf_hdr_diff(h, 0, &c, &n), MF_HDR_OK);
  assert_int_equal(n, NFIELDS / 3);
  for (size_t j = 0; j < n; j++) {
    snprintf(name, sizeof name, "X-Field-%zu", j * 3);
    assert_int_equal(c[j].kind, MF_HDR_DELETE);
    assert_int_equal(c[j].index, j * 3);
    assert_string_equal(c[j].name, name);
  }
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
  free(buf);
}

static int has(const mf_hdr_change *c, size_t n, mf_hdr_change_kind kind,
               const char *name, const char *value) {
  for (size_t k = 0; k < n; k++)
    if (c[k].kind == kind && strcmp(c[k].name, name) == 0 &&
        (value == NULL ? c[k].value == NULL
                       : c[k].value != NULL && strcmp(c[k].value, value) == 0))
      return 1;
  return 0;
}

/* Edits, then commit: the pointers taken before stay valid and equal, the
 * new originals are the edited fields, and an edit after the commit is
 * diffed against them. */
static void test_commit_keeps_pointers(void **state) {
  (void)state;
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  static const char block[] = "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nbody";
  assert_int_equal(mf_hdr_parse(h, block, sizeof block - 1, NULL), MF_HDR_OK);
  assert_int_equal(mf_hdr_rename(h, 0, "A2"), MF_HDR_OK);
  assert_int_equal(mf_hdr_set_raw(h, 1, " two", 4), MF_HDR_OK);
  assert_int_equal(mf_hdr_insert_raw(h, 2, "New", " new", 4), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, 3), MF_HDR_OK); /* C */
  const char *n0 = mf_hdr_name(h, 0), *r1 = mf_hdr_raw(h, 1, NULL);
  const char *n2 = mf_hdr_name(h, 2), *r2 = mf_hdr_raw(h, 2, NULL);
  const char *v1 = mf_hdr_value(h, 1);
  assert_string_equal(v1, "two");
  for (int round = 0; round < 3; round++) {
    assert_int_equal(mf_hdr_commit(h), MF_HDR_OK);
    assert_ptr_equal(mf_hdr_name(h, 0), n0);
    assert_ptr_equal(mf_hdr_raw(h, 1, NULL), r1);
    assert_ptr_equal(mf_hdr_name(h, 2), n2);
    assert_ptr_equal(mf_hdr_raw(h, 2, NULL), r2);
    assert_ptr_equal(mf_hdr_value(h, 1), v1);
    mf_hdr_change *c;
    size_t n;
    assert_int_equal(mf_hdr_diff(h, 0, &c, &n), MF_HDR_OK);
    assert_int_equal(n, 0);
    mf_hdr_changes_free(c);
  }
  char *out;
  assert_int_equal(mf_hdr_write(h, "\n", &out, NULL), MF_HDR_OK);
  assert_string_equal(out, "A2: 1\nB: two\nNew: new\nD: 4\n");
  free(out);

  /* Delete the inserted field and rename the renamed one again: the
   * originals (from the commit) still name them. */
  assert_int_equal(mf_hdr_delete(h, 2), MF_HDR_OK);
  assert_int_equal(mf_hdr_rename(h, 0, "A3"), MF_HDR_OK);
  assert_int_equal(mf_hdr_set_raw(h, 1, " 2", 2), MF_HDR_OK);
  mf_hdr_change *c;
  size_t n;
  assert_int_equal(mf_hdr_diff(h, 0, &c, &n), MF_HDR_OK);
  assert_int_equal(n, 4);
  assert_true(has(c, n, MF_HDR_INSERT, "A3", " 1"));
  assert_true(has(c, n, MF_HDR_DELETE, "A2", NULL));
  assert_true(has(c, n, MF_HDR_CHANGE, "B", " 2"));
  assert_true(has(c, n, MF_HDR_DELETE, "New", NULL));
  mf_hdr_changes_free(c);
  /* Setting back what was committed undoes the change. */
  assert_int_equal(mf_hdr_set_raw(h, 1, " two", 4), MF_HDR_OK);
  assert_int_equal(mf_hdr_diff(h, MF_HDR_DIFF_RECREATE, &c, &n), MF_HDR_OK);
  assert_int_equal(n, 4 + 3);
  assert_int_equal(c[2].kind, MF_HDR_DELETE);
  assert_string_equal(c[2].name, "New");
  assert_null(c[2].value);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

static long nomem; /* calls of the last workload that said MF_HDR_E_NOMEM */

#define CHECK(rc)                                                              \
  do {                                                                         \
    int rc_ = (rc);                                                            \
    assert_true(rc_ == MF_HDR_OK || rc_ == MF_HDR_E_NOMEM);                    \
    nomem += rc_ == MF_HDR_E_NOMEM;                                            \
  } while (0)

/* One run of everything that allocates; every call either works or says
 * MF_HDR_E_NOMEM.  Returns the header block written at the end (NULL if
 * that failed). */
static char *workload(char *buf) {
  mf_hdrs *h;
  nomem = 0;
  int rc = mf_hdr_new(&h, 0);
  CHECK(rc);
  if (rc != MF_HDR_OK)
    return NULL;
  char block[4096], name[32];
  size_t bl = 0;
  for (size_t k = 0; k < 40; k++)
    bl += (size_t)snprintf(block + bl, sizeof block - bl,
                           "Field-%zu: value %zu of the block\r\n", k, k);
  bl += (size_t)snprintf(block + bl, sizeof block - bl, "\r\nbody\r\n");
  rc = mf_hdr_parse(h, block, bl, NULL);
  CHECK(rc);
  for (size_t k = 149; k < 152; k++) {
    snprintf(name, sizeof name, "Big-%zu", k);
    make_value(k, buf);
    rc = mf_hdr_append_raw(h, name, buf, value_len(k), 0);
    CHECK(rc);
  }
  rc = mf_hdr_insert(h, 0, "X-New", "h\xc3\xa9llo");
  CHECK(rc);
  rc = mf_hdr_rename(h, 1, "Renamed");
  CHECK(rc);
  rc = mf_hdr_set_raw(h, 2, "raw", 3);
  CHECK(rc);
  if (mf_hdr_count(h) > 5)
    assert_int_equal(mf_hdr_delete(h, 5), MF_HDR_OK);
  rc = mf_hdr_commit(h);
  CHECK(rc);
  rc = mf_hdr_add_raw(h, "X-After", "commit", 6);
  CHECK(rc);
  rc = mf_hdr_rename(h, 3, "Again");
  CHECK(rc);
  mf_hdr_change *c = NULL;
  size_t n;
  rc = mf_hdr_diff(h, 0, &c, &n);
  CHECK(rc);
  mf_hdr_changes_free(c);
  char *out = NULL;
  rc = mf_hdr_write(h, "\n", &out, NULL);
  CHECK(rc);
  mf_hdr_free(h);
  return out;
}

static void test_every_allocation_fails(void **state) {
  (void)state;
  char *buf = valbuf();
  arm(-1); /* count only */
  char *want = workload(buf);
  long total = seen;
  assert_non_null(want);
  assert_true(total > 5);
  for (long k = 1; k <= total; k++) {
    arm(k);
    char *got = workload(buf);
    assert_true(failed);
    /* The failure was reported by the call that met it: none is
     * swallowed. */
    if (nomem == 0)
      fail_msg("allocation %ld of %ld failed unreported", k, total);
    free(got);
  }
  arm(0);
  free(want);
  free(buf);
}

/* Plain ASCII text is stored as given while "Name: " + text fits in 78
 * columns, and folded at whitespace from one byte more on; tabs, "=?" and
 * control characters never take the short way. */
static void test_encode_plain_boundary(void **state) {
  (void)state;
  char text[128];
  for (size_t n = 0; n < sizeof text - 1; n++) {
    for (size_t i = 0; i < n; i++)
      text[i] = i % 6 == 5 ? ' ' : (char)('a' + i % 26);
    text[n] = '\0';
    char *enc;
    size_t len;
    assert_int_equal(mf_hdr_encode("Subject", text, 1, &enc, &len), MF_HDR_OK);
    size_t col = strlen("Subject: ");
    if (col + n <= 78 || strchr(text, ' ') == NULL ||
        col + (size_t)(strchr(text, ' ') - text) > 78) {
      assert_int_equal(len, n + 1);
      assert_string_equal(enc + 1, text);
    } else {
      assert_non_null(strchr(enc, '\n'));
      assert_true((size_t)(strchr(enc, '\n') - enc) <= 78 - col + 1);
    }
    assert_int_equal(enc[0], ' ');
    free(enc);
  }
  static const char *const encoded[] = {"x =?y", "bell\x07", "del\x7f"};
  for (size_t k = 0; k < sizeof encoded / sizeof *encoded; k++) {
    char *enc, *dec;
    assert_int_equal(mf_hdr_encode("S", encoded[k], 0, &enc, NULL), MF_HDR_OK);
    assert_non_null(strstr(enc, "=?UTF-8?"));
    assert_int_equal(mf_hdr_decode(enc, strlen(enc), &dec), MF_HDR_OK);
    if (k == 0)
      assert_string_equal(dec, encoded[k]);
    free(dec);
    free(enc);
  }
  char *enc;
  assert_int_equal(mf_hdr_encode("S", "a\tb", 0, &enc, NULL), MF_HDR_OK);
  assert_string_equal(enc, "a\tb");
  free(enc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_many_fields_stable),
      cmocka_unit_test(test_commit_keeps_pointers),
      cmocka_unit_test(test_every_allocation_fails),
      cmocka_unit_test(test_encode_plain_boundary),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
