/* mf_dlsym.h -- a function found with dlsym() (internal, every module).
 *
 * For the libraries loaded when first needed (addr/unicode.c: ICU;
 * header/gmime_lazy.c: GMime).  C has no conversion from the object pointer
 * dlsym() returns to a function pointer; POSIX guarantees they have the same
 * representation, so the address is copied into *fn (a function pointer of
 * `size` bytes).  Returns 0, or -1 when h has no such symbol. */
#ifndef MF_DLSYM_H
#define MF_DLSYM_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* dlopen(soname), local and resolved now; NULL with "cannot load WHAT:
 * <the loader's reason>" in why (n bytes) when it cannot be loaded. */
static inline void *mf_dlopen(const char *soname, const char *what, char *why,
                              size_t n) {
  void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    snprintf(why, n, "cannot load %s: %s", what, e ? e : soname);
  }
  return h;
}

static inline int mf_dlsym(void *h, const char *name, void *fn, size_t size) {
  void *p = dlsym(h, name);
  if (p == NULL || size != sizeof p)
    return -1;
  memcpy(fn, &p, size);
  return 0;
}

#endif
