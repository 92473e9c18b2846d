/* idn2_lazy.c -- libidn2 loaded when first needed, in the shared library.
 *
 * libidn2 and libunistring, its dependency, are about 200 KiB of resident
 * pages in every process that maps them (bench/MEMORY.md), while only a
 * domain with a non-ASCII character or an "xn--" label needs them
 * (idna.c does ASCII domains itself).  libmfaddr.so is therefore linked
 * with -Wl,--wrap=<symbol> for the libidn2 functions idna.c calls
 * (addr/CMakeLists.txt): those calls come here, and the first one loads
 * libidn2 (dlopen, once: pthread_once, any thread; never unloaded).
 * --as-needed then drops libidn2 from the library's NEEDED list.
 *
 * The static library is linked with libidn2 as usual; the wrappers are not
 * used there.
 *
 * If libidn2 cannot be loaded, each function returns MFA_IDN2_UNAVAILABLE,
 * which idna.c turns into MF_ADDR_E_IDNA with mfa_idn2_why()'s text. */
#include <pthread.h>
#include <stdio.h>

#include <idn2.h>

#include "addr_internal.h"
#include "mf_dlsym.h"

#ifndef MFA_IDN2_SONAME
#define MFA_IDN2_SONAME "libidn2.so.0"
#endif

static struct {
  __typeof__(&idn2_to_ascii_8z) to_ascii;
  __typeof__(&idn2_to_unicode_8z8z) to_unicode;
  int ok;
} idn;
static char idn_why[160] = "libidn2 not loaded";
static pthread_once_t idn_once = PTHREAD_ONCE_INIT;

static void idn_load(void) {
  void *h = mf_dlopen(MFA_IDN2_SONAME, "libidn2", idn_why, sizeof idn_why);
  if (h == NULL)
    return;
  if (mf_dlsym(h, "idn2_to_ascii_8z", &idn.to_ascii, sizeof idn.to_ascii) ||
      mf_dlsym(h, "idn2_to_unicode_8z8z", &idn.to_unicode,
               sizeof idn.to_unicode)) {
    snprintf(idn_why, sizeof idn_why, "cannot load libidn2: %s lacks %s",
             MFA_IDN2_SONAME,
             idn.to_ascii ? "idn2_to_unicode_8z8z" : "idn2_to_ascii_8z");
    return;
  }
  idn.ok = 1;
}

static int loaded(void) {
  pthread_once(&idn_once, idn_load);
  return idn.ok;
}

const char *mfa_idn2_why(void) {
  return idn_why;
}

/* Declared here (no header: only the linker refers to them), with
 * libidn2's own signatures. */
int __wrap_idn2_to_ascii_8z(const char *input, char **output, int flags);
int __wrap_idn2_to_unicode_8z8z(const char *input, char **output, int flags);

int __wrap_idn2_to_ascii_8z(const char *input, char **output, int flags) {
  if (!loaded()) {
    *output = NULL;
    return MFA_IDN2_UNAVAILABLE;
  }
  return idn.to_ascii(input, output, flags);
}

int __wrap_idn2_to_unicode_8z8z(const char *input, char **output, int flags) {
  if (!loaded()) {
    *output = NULL;
    return MFA_IDN2_UNAVAILABLE;
  }
  return idn.to_unicode(input, output, flags);
}
