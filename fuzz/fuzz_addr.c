/* fuzz_addr.c -- addresses and ESMTP parameters as an MTA hands them over
 * (MAIL FROM / RCPT TO text): parse with every flag combination, format
 * back, compare, convert the domain.  Any crash, leak or UB is a bug; parse
 * errors are expected. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/addr.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > 4096)
    return 0;
  unsigned flags = data[0] & 0x1f;
  const char *s = (const char *)data + 1;
  size_t len = size - 1;
  char *z = malloc(len + 1);
  if (z == NULL)
    return 0;
  memcpy(z, s, len);
  z[len] = '\0';

  mf_addr *a = NULL;
  const char *why = NULL;
  if (mf_addr_parse_n(s, len, flags, &a, &why) == 0) {
    char *out = NULL;
    for (unsigned fmt = 0; fmt < 16; fmt++) {
      if (mf_addr_format_alloc(a, fmt, &out) >= 0) {
        /* What we print must parse again to an equal address. */
        mf_addr *b = NULL;
        if ((fmt & MF_ADDR_FMT_BRACKETS) &&
            mf_addr_parse(out, flags | MF_ADDR_ALLOW_NO_DOMAIN, &b, &why) == 0) {
          (void)mf_addr_equal(a, b);
          mf_addr_free(b);
        }
        free(out);
        out = NULL;
      }
    }
    (void)mf_addr_key(a);
    (void)mf_addr_domain_is(a, "example.com");
    (void)mf_addr_domain_under(a, "xn--zck5b2b.example.com");
    mf_addr *d = mf_addr_dup(a);
    mf_addr_free(d);
    mf_addr_free(a);
  }
  mf_addr *c = NULL;
  mf_addr_params *p = NULL;
  if (mf_addr_parse_cmd(z, flags, &c, &p, &why) == 0) {
    char *f = NULL;
    if (mf_addr_params_format_alloc(p, &f) >= 0)
      free(f);
    mf_addr_free(c);
    mf_addr_params_free(p);
  }
  char *conv = NULL;
  if (mf_addr_domain_convert(z, flags & 1, &conv, &why) == 0)
    free(conv);
  char *x = NULL;
  if (mf_addr_xtext_decode(z, &x, &why) == 0)
    free(x);
  free(z);
  return 0;
}
