/* fuzz_header.c -- a header block as a message or an MTA gives it: parse,
 * decode every field (RFC 2047, any charset), parse address lists, edit
 * (set, insert, delete) and diff against the original.  Any crash, leak or
 * UB is a bug. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/header.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > 65536)
    return 0;
  mf_hdrs *h = NULL;
  if (mf_hdr_new(&h, (data[0] & 1) ? MF_HDR_LEADSPC : 0) != 0)
    return 0;
  size_t body = 0;
  mf_hdr_parse(h, (const char *)data + 1, size - 1, &body);
  size_t n = mf_hdr_count(h);
  for (size_t i = 0; i < n; i++) {
    (void)mf_hdr_value(h, i);
    mf_hdr_addrlist *l = NULL;
    size_t skipped = 0;
    if (mf_hdr_get_addrlist(h, i, &l, &skipped) == 0) {
      char *out = NULL;
      size_t len = 0;
      if (mf_hdr_addrlist_format(l, mf_hdr_name(h, i), 1, &out, &len) == 0)
        free(out);
      mf_hdr_addrlist_free(l);
    }
  }
  /* Edits driven by the input, then the diff. */
  if (n > 0) {
    size_t k = data[0] % n;
    char *v = NULL;
    size_t vl = 0;
    const char *raw = mf_hdr_raw(h, k, &vl);
    if (raw != NULL && mf_hdr_decode(raw, vl, &v) == 0) {
      mf_hdr_set(h, (k + 1) % n, v);
      free(v);
    }
    mf_hdr_insert(h, 0, "X-Fuzz", "\xc3\xa9t\xc3\xa9 summer");
    if (n > 2)
      mf_hdr_delete(h, n / 2);
  }
  mf_hdr_add(h, "Subject", "[EXTERNAL] plain");
  for (unsigned f = 0; f < 2; f++) {
    mf_hdr_change *ch = NULL;
    size_t nc = 0;
    if (mf_hdr_diff(h, f ? MF_HDR_DIFF_RECREATE : 0, &ch, &nc) == 0)
      mf_hdr_changes_free(ch);
  }
  char *all = NULL;
  size_t al = 0;
  if (mf_hdr_write(h, "\r\n", &all, &al) == 0)
    free(all);
  mf_hdr_free(h);
  return 0;
}
