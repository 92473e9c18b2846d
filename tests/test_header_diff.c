/* test_header_diff.c -- change tracking: minimal change lists in terms of
 * the original order, per-name occurrence indexes, recreate mode.  Every
 * change list is also APPLIED (last to first, as documented) to the
 * original list and must give the current list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include <mailfilter/header.h>

#include "testutil.h"

typedef struct sfield {
  char name[64];
  char value[128];
} sfield;

/* Original list of h, taken before edits (the test keeps a copy). */
typedef struct snap {
  sfield f[64];
  size_t n;
} snap;

static void take(const mf_hdrs *h, snap *s) {
  s->n = mf_hdr_count(h);
  for (size_t i = 0; i < s->n; i++) {
    snprintf(s->f[i].name, sizeof s->f[i].name, "%s", mf_hdr_name(h, i));
    snprintf(s->f[i].value, sizeof s->f[i].value, "%s", mf_hdr_raw(h, i, NULL));
  }
}

/* Apply the changes to a copy of the originals and compare with h. */
static void apply_and_check(const mf_hdrs *h, const snap *orig,
                            const mf_hdr_change *c, size_t n) {
  snap s = *orig;
  for (size_t k = 0; k < n; k++) {
    /* sorted by index, INSERTs of one index before its CHANGE/DELETE */
    if (k > 0) {
      assert_true(c[k - 1].index <= c[k].index);
      if (c[k - 1].index == c[k].index)
        assert_true(c[k - 1].kind == MF_HDR_INSERT);
    }
    if (c[k].kind == MF_HDR_INSERT) {
      assert_int_equal(c[k].occurrence, 0);
      assert_true(c[k].index <= orig->n);
      continue;
    }
    assert_true(c[k].index < orig->n);
    assert_string_equal(c[k].name, orig->f[c[k].index].name);
    size_t occ = 0;
    for (size_t i = 0; i <= c[k].index; i++)
      if (strcasecmp(orig->f[i].name, c[k].name) == 0)
        occ++;
    assert_int_equal(c[k].occurrence, occ);
  }
  for (size_t k = n; k-- > 0;) {
    size_t i = c[k].index;
    switch (c[k].kind) {
    case MF_HDR_CHANGE:
      assert_non_null(c[k].value);
      assert_string_equal(s.f[i].name, c[k].name);
      snprintf(s.f[i].value, sizeof s.f[i].value, "%s", c[k].value);
      break;
    case MF_HDR_DELETE:
      assert_null(c[k].value);
      memmove(&s.f[i], &s.f[i + 1], (s.n - i - 1) * sizeof s.f[0]);
      s.n--;
      break;
    case MF_HDR_INSERT:
      assert_non_null(c[k].value);
      memmove(&s.f[i + 1], &s.f[i], (s.n - i) * sizeof s.f[0]);
      snprintf(s.f[i].name, sizeof s.f[i].name, "%s", c[k].name);
      snprintf(s.f[i].value, sizeof s.f[i].value, "%s", c[k].value);
      s.n++;
      break;
    }
  }
  assert_int_equal(s.n, mf_hdr_count(h));
  for (size_t i = 0; i < s.n; i++) {
    assert_string_equal(s.f[i].name, mf_hdr_name(h, i));
    assert_string_equal(s.f[i].value, mf_hdr_raw(h, i, NULL));
  }
}

/* Diff h, check it applies, return the count; changes in *out (freed by the
 * caller) if out is not NULL. */
static size_t diff(const mf_hdrs *h, const snap *orig, unsigned flags,
                   mf_hdr_change **out) {
  mf_hdr_change *c = NULL;
  size_t n = 99;
  assert_int_equal(mf_hdr_diff(h, flags, &c, &n), MF_HDR_OK);
  apply_and_check(h, orig, c, n);
  if (out != NULL)
    *out = c;
  else
    mf_hdr_changes_free(c);
  return n;
}

static mf_hdrs *make(snap *s, const char *const *fields) {
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  for (size_t i = 0; fields[i] != NULL; i += 2)
    assert_int_equal(mf_hdr_append_raw(h, fields[i], fields[i + 1],
                                       strlen(fields[i + 1]), 1),
                     MF_HDR_OK);
  take(h, s);
  return h;
}

static const char *const basic[] = {
    "Received", " r1",     "From", " a@example.com",
    "Subject",  " first",  "To",   " b@example.com",
    "subject",  " second", "Date", " today",
    NULL};

static void test_untouched(void **state) {
  (void)state;
  snap s;
  mf_hdrs *h = make(&s, basic);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  mf_hdr_free(h);
  /* Empty collection too. */
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  take(h, &s);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  mf_hdr_free(h);
}

static void test_change_first_and_second_subject(void **state) {
  (void)state;
  snap s;
  mf_hdr_change *c;
  mf_hdrs *h = make(&s, basic);
  assert_int_equal(mf_hdr_set_nth(h, "SUBJECT", 1, "new first"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 1);
  assert_int_equal(c[0].kind, MF_HDR_CHANGE);
  assert_int_equal(c[0].index, 2);
  assert_int_equal(c[0].occurrence, 1);
  assert_string_equal(c[0].name, "Subject");
  assert_string_equal(c[0].value, " new first");
  assert_int_equal(c[0].value_len, 10);
  assert_int_equal(c[0].leadspc, 1);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);

  h = make(&s, basic);
  assert_int_equal(mf_hdr_set_nth(h, "Subject", 2, "new second"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 1);
  assert_int_equal(c[0].kind, MF_HDR_CHANGE);
  assert_int_equal(c[0].index, 4);
  assert_int_equal(c[0].occurrence, 2);
  assert_string_equal(c[0].name, "subject"); /* its own spelling */
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

static void test_insert_append(void **state) {
  (void)state;
  snap s;
  mf_hdr_change *c;
  mf_hdrs *h = make(&s, basic);
  assert_int_equal(mf_hdr_insert(h, 0, "X-First", "1"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 1);
  assert_int_equal(c[0].kind, MF_HDR_INSERT);
  assert_int_equal(c[0].index, 0);
  assert_string_equal(c[0].name, "X-First");
  assert_string_equal(c[0].value, " 1");
  mf_hdr_changes_free(c);
  assert_int_equal(mf_hdr_add(h, "X-Last", "2"), MF_HDR_OK);
  assert_int_equal(mf_hdr_add(h, "X-Last", "3"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 3);
  assert_int_equal(c[1].kind, MF_HDR_INSERT);
  assert_int_equal(c[1].index, 6);
  assert_string_equal(c[1].value, " 2");
  assert_int_equal(c[2].index, 6);
  assert_string_equal(c[2].value, " 3");
  mf_hdr_changes_free(c);
  /* Added then deleted leaves no trace. */
  assert_int_equal(mf_hdr_delete(h, 0), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, mf_hdr_count(h) - 1), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, mf_hdr_count(h) - 1), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  mf_hdr_free(h);
}

static void test_undo(void **state) {
  (void)state;
  snap s;
  mf_hdrs *h = make(&s, basic);
  /* change then change back */
  assert_int_equal(mf_hdr_set(h, 2, "changed"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 1);
  assert_int_equal(mf_hdr_set(h, 2, "first"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  /* raw change and back */
  assert_int_equal(mf_hdr_set_raw(h, 1, " x", 2), MF_HDR_OK);
  assert_int_equal(mf_hdr_set_raw(h, 1, " a@example.com", 14), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  /* delete then re-add the same name + value at the same place */
  assert_int_equal(mf_hdr_delete(h, 3), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 1);
  assert_int_equal(mf_hdr_insert(h, 3, "To", "b@example.com"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  /* delete + re-add with another value = one CHANGE, not DELETE+INSERT */
  assert_int_equal(mf_hdr_delete(h, 5), MF_HDR_OK);
  assert_int_equal(mf_hdr_add(h, "Date", "tomorrow"), MF_HDR_OK);
  mf_hdr_change *c;
  assert_int_equal(diff(h, &s, 0, &c), 1);
  assert_int_equal(c[0].kind, MF_HDR_CHANGE);
  assert_int_equal(c[0].index, 5);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

static void test_delete_repeated_middle(void **state) {
  (void)state;
  static const char *const f[] = {"A",   " 1", "X",  " x1", "B",   " 2", "x",
                                  " x2", "C",  " 3", "X",   " x3", NULL};
  snap s;
  mf_hdr_change *c;
  mf_hdrs *h = make(&s, f);
  assert_int_equal(mf_hdr_delete_nth(h, "X", 2), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 1);
  assert_int_equal(c[0].kind, MF_HDR_DELETE);
  assert_int_equal(c[0].index, 3);
  assert_int_equal(c[0].occurrence, 2);
  assert_string_equal(c[0].name, "x");
  assert_null(c[0].value);
  mf_hdr_changes_free(c);
  /* Then change the third X: its occurrence is still counted among the
   * ORIGINAL fields (3), whatever was deleted. */
  assert_int_equal(mf_hdr_set_nth(h, "X", 2, "new"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 2);
  assert_int_equal(c[1].kind, MF_HDR_CHANGE);
  assert_int_equal(c[1].index, 5);
  assert_int_equal(c[1].occurrence, 3);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

static void test_rename(void **state) {
  (void)state;
  snap s;
  mf_hdr_change *c;
  mf_hdrs *h = make(&s, basic);
  assert_int_equal(mf_hdr_rename(h, 3, "Cc"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 2);
  assert_int_equal(c[0].kind, MF_HDR_DELETE);
  assert_int_equal(c[0].index, 3);
  assert_string_equal(c[0].name, "To");
  assert_int_equal(c[1].kind, MF_HDR_INSERT);
  assert_int_equal(c[1].index, 4);
  assert_string_equal(c[1].name, "Cc");
  assert_string_equal(c[1].value, " b@example.com");
  mf_hdr_changes_free(c);
  /* Case only: still DELETE + INSERT (a CHANGE never renames). */
  assert_int_equal(mf_hdr_rename(h, 3, "TO"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 2);
  assert_int_equal(mf_hdr_rename(h, 3, "To"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  mf_hdr_free(h);
}

static void test_minimal(void **state) {
  (void)state;
  /* Two equal-named fields, the first set to the second's value and the
   * second deleted: one DELETE is enough. */
  static const char *const f[] = {"S", " a", "S", " b", NULL};
  snap s;
  mf_hdr_change *c;
  mf_hdrs *h = make(&s, f);
  assert_int_equal(mf_hdr_set(h, 0, "b"), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, 1), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, &c), 1);
  assert_int_equal(c[0].kind, MF_HDR_DELETE);
  assert_int_equal(c[0].index, 0);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);

  /* go-milter's "complex" case: X-Test before and after every field,
   * Subject changed, Date replaced by X-Test. */
  static const char *const g[] = {"From", " f",   "To", " t", "subject",
                                  " s",   "DATE", " d", NULL};
  h = make(&s, g);
  for (size_t i = 0; i < mf_hdr_count(h); i += 2) {
    assert_int_equal(mf_hdr_insert(h, i, "X-Test", "1"), MF_HDR_OK);
  }
  assert_int_equal(mf_hdr_add(h, "X-Test", "1"), MF_HDR_OK);
  assert_int_equal(mf_hdr_set_nth(h, "Subject", 1, "changed"), MF_HDR_OK);
  size_t d;
  assert_int_equal(mf_hdr_find(h, "date", 1, &d), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, d), MF_HDR_OK);
  assert_int_equal(mf_hdr_insert(h, d, "X-Test", "1"), MF_HDR_OK);
  /* 5 inserted + 1 change + Date->X-Test (delete + insert) = 8 */
  assert_int_equal(diff(h, &s, 0, &c), 8);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

static void test_recreate(void **state) {
  (void)state;
  snap s;
  mf_hdr_change *c;
  mf_hdrs *h = make(&s, basic);
  assert_int_equal(mf_hdr_add(h, "X-Add", "1"), MF_HDR_OK);
  size_t n = diff(h, &s, MF_HDR_DIFF_RECREATE, &c);
  assert_int_equal(n, 6 + 7);
  for (size_t i = 0; i < 6; i++) {
    assert_int_equal(c[i].kind, MF_HDR_DELETE);
    assert_int_equal(c[i].index, i);
  }
  assert_int_equal(c[1].occurrence, 1);
  assert_int_equal(c[4].occurrence, 2); /* the second subject */
  for (size_t i = 6; i < 13; i++) {
    assert_int_equal(c[i].kind, MF_HDR_INSERT);
    assert_int_equal(c[i].index, 6);
    assert_string_equal(c[i].name, mf_hdr_name(h, i - 6));
  }
  mf_hdr_changes_free(c);
  assert_int_equal(mf_hdr_diff(h, 0x10, &c, &n), MF_HDR_E_INVAL);
  mf_hdr_free(h);
}

static void test_commit(void **state) {
  (void)state;
  snap s;
  mf_hdrs *h = make(&s, basic);
  assert_int_equal(mf_hdr_set(h, 0, "r2"), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, 5), MF_HDR_OK);
  assert_int_equal(mf_hdr_commit(h), MF_HDR_OK);
  take(h, &s);
  assert_int_equal(diff(h, &s, 0, NULL), 0);
  assert_int_equal(mf_hdr_add(h, "X", "y"), MF_HDR_OK);
  assert_int_equal(diff(h, &s, 0, NULL), 1);
  mf_hdr_free(h);
}

static size_t rnd(unsigned *seed, size_t n) {
  *seed = *seed * 1103515245u + 12345u;
  return (*seed >> 16) % n;
}

/* Random edits: every diff must apply to the current list and never be
 * longer than the naive bound (deleted + inserted + changed fields). */
static void test_random(void **state) {
  (void)state;
  static const char *const names[] = {"A", "B", "a", "C"};
  static const char *const vals[] = {" 1", " 2", " 3"};
  unsigned seed = 12345;
#define RND(n) rnd(&seed, (n))
  for (int iter = 0; iter < 500; iter++) {
    mf_hdrs *h;
    assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
    size_t n0 = RND(12);
    for (size_t i = 0; i < n0; i++)
      assert_int_equal(mf_hdr_append_raw(h, names[RND(4)], vals[RND(3)], 2, 1),
                       MF_HDR_OK);
    snap s;
    take(h, &s);
    size_t edits = 1 + RND(6);
    for (size_t e = 0; e < edits; e++) {
      size_t cnt = mf_hdr_count(h);
      switch (RND(4)) {
      case 0:
        if (cnt > 0)
          mf_hdr_delete(h, RND(cnt));
        break;
      case 1:
        mf_hdr_insert_raw(h, RND(cnt + 1), names[RND(4)], vals[RND(3)], 2);
        break;
      case 2:
        if (cnt > 0)
          mf_hdr_set_raw(h, RND(cnt), vals[RND(3)], 2);
        break;
      case 3:
        if (cnt > 0)
          mf_hdr_rename(h, RND(cnt), names[RND(4)]);
        break;
      }
    }
    size_t n = diff(h, &s, 0, NULL);
    assert_true(n <= s.n + mf_hdr_count(h));
    diff(h, &s, MF_HDR_DIFF_RECREATE, NULL);
    mf_hdr_free(h);
  }
#undef RND
}

/* A large region falls back to the identity diff: still correct. */
static void test_large(void **state) {
  (void)state;
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  char v[32];
  for (int i = 0; i < 3000; i++) {
    int n = snprintf(v, sizeof v, " %d", i);
    assert_int_equal(mf_hdr_append_raw(h, "X", v, (size_t)n, 1), MF_HDR_OK);
  }
  assert_int_equal(mf_hdr_set_raw(h, 0, " first", 6), MF_HDR_OK);
  assert_int_equal(mf_hdr_set_raw(h, 2999, " last", 5), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete(h, 1500), MF_HDR_OK);
  mf_hdr_change *c;
  size_t n;
  assert_int_equal(mf_hdr_diff(h, 0, &c, &n), MF_HDR_OK);
  assert_int_equal(n, 3);
  assert_int_equal(c[0].kind, MF_HDR_CHANGE);
  assert_int_equal(c[0].occurrence, 1);
  assert_int_equal(c[1].kind, MF_HDR_DELETE);
  assert_int_equal(c[1].index, 1500);
  assert_int_equal(c[1].occurrence, 1501);
  assert_int_equal(c[2].kind, MF_HDR_CHANGE);
  assert_int_equal(c[2].index, 2999);
  assert_int_equal(c[2].occurrence, 3000);
  mf_hdr_changes_free(c);
  mf_hdr_free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_untouched),
      cmocka_unit_test(test_change_first_and_second_subject),
      cmocka_unit_test(test_insert_append),
      cmocka_unit_test(test_undo),
      cmocka_unit_test(test_delete_repeated_middle),
      cmocka_unit_test(test_rename),
      cmocka_unit_test(test_minimal),
      cmocka_unit_test(test_recreate),
      cmocka_unit_test(test_commit),
      cmocka_unit_test(test_random),
      cmocka_unit_test(test_large),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
