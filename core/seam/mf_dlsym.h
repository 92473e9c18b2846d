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
#include <string.h>

static inline int mf_dlsym(void *h, const char *name, void *fn, size_t size) {
  void *p = dlsym(h, name);
  if (p == NULL || size != sizeof p)
    return -1;
  memcpy(fn, &p, size);
  return 0;
}

#endif
