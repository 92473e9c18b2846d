/* mf_alloc.h -- the allocation seam of every library module (internal).
 *
 * Every allocation made by core/, addr/, header/ and mailfilter/ goes
 * through these wrappers, so that a test can make the Nth one fail and
 * check that the library answers or closes cleanly instead of crashing
 * (tests/test_alloc_faults.c).  In a program that does not define
 * mf_fault_alloc_fail() -- every program but that test -- the weak reference
 * is NULL and a wrapper costs one predictable branch.
 *
 * Allocations made inside libuv, GLib/GMime, libidn2 and ICU are theirs, not
 * ours: GLib aborts the process when g_malloc fails, whatever we do.
 *
 * Header-only, included by each module's sources (not installed). */
#ifndef MF_SEAM_ALLOC_H
#define MF_SEAM_ALLOC_H

#include <stdlib.h>
#include <string.h>

/* Defined only by a fault-injection test: returns nonzero when the
 * allocation about to be made must fail. */
extern int mf_fault_alloc_fail(void)
    __attribute__((weak, visibility("default")));

static inline int mf_alloc_injected_failure(void) {
  return mf_fault_alloc_fail != NULL && mf_fault_alloc_fail();
}

static inline void *xmalloc(size_t n) {
  return mf_alloc_injected_failure() ? NULL : malloc(n);
}

static inline void *xcalloc(size_t n, size_t size) {
  return mf_alloc_injected_failure() ? NULL : calloc(n, size);
}

static inline void *xrealloc(void *p, size_t n) {
  return mf_alloc_injected_failure() ? NULL : realloc(p, n);
}

static inline char *xstrdup(const char *s) {
  return mf_alloc_injected_failure() ? NULL : strdup(s);
}

static inline char *xstrndup(const char *s, size_t n) {
  return mf_alloc_injected_failure() ? NULL : strndup(s, n);
}

#endif
