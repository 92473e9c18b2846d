/* test_header_fields.c -- header collection: parsing, byte-identical
 * re-emission, lookup, decoding of raw values, editing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailfilter/header.h>

#include "testutil.h"

static mf_hdrs *parse_file(const char *file, unsigned flags, char **data,
                           size_t *len, size_t *body) {
  *data = tu_read_file(file, len);
  assert_non_null(*data);
  mf_hdrs *h = NULL;
  assert_int_equal(mf_hdr_new(&h, flags), MF_HDR_OK);
  assert_int_equal(mf_hdr_parse(h, *data, *len, body), MF_HDR_OK);
  return h;
}

/* Parse, write back with the file's line end, compare with the header part
 * of the file byte for byte. */
static void roundtrip(const char *file, unsigned flags, const char *eol) {
  char *data;
  size_t len, body;
  mf_hdrs *h = parse_file(file, flags, &data, &len, &body);
  char *out;
  size_t olen;
  assert_int_equal(mf_hdr_write(h, eol, &out, &olen), MF_HDR_OK);
  size_t hdrlen = body - strlen(eol); /* without the empty line */
  assert_int_equal(olen, hdrlen);
  assert_memory_equal(out, data, hdrlen);
  /* The same field by field. */
  size_t off = 0;
  for (size_t i = 0; i < mf_hdr_count(h); i++) {
    char *line;
    size_t ll;
    assert_int_equal(mf_hdr_line(h, i, &line, &ll), MF_HDR_OK);
    assert_memory_equal(line, data + off, ll);
    off += ll + strlen(eol);
    free(line);
  }
  free(out);
  mf_hdr_free(h);
  free(data);
}

static void test_roundtrip_crlf_leadspc(void **state) {
  (void)state;
  roundtrip("header/odd_crlf.eml", MF_HDR_LEADSPC, "\r\n");
}

static void test_roundtrip_crlf_noleadspc(void **state) {
  (void)state;
  roundtrip("header/odd_crlf.eml", 0, "\r\n");
}

static void test_roundtrip_lf(void **state) {
  (void)state;
  roundtrip("header/odd_lf.eml", MF_HDR_LEADSPC, "\n");
  roundtrip("header/odd_lf.eml", 0, "\n");
}

static void test_parse_details(void **state) {
  (void)state;
  char *data;
  size_t len, body;
  mf_hdrs *h =
      parse_file("header/odd_crlf.eml", MF_HDR_LEADSPC, &data, &len, &body);
  assert_int_equal(mf_hdr_count(h), 11);
  assert_string_equal(data + body, "Body\r\n");
  size_t i, vlen;
  assert_int_equal(mf_hdr_find(h, "x-mixed-fold", 1, &i), MF_HDR_OK);
  const char *raw = mf_hdr_raw(h, i, &vlen);
  assert_string_equal(raw, " first\n second LF fold\r\n\t third CRLF fold");
  assert_string_equal(mf_hdr_value(h, i),
                      "first second LF fold\t third CRLF fold");
  assert_int_equal(mf_hdr_find(h, "subject", 1, &i), MF_HDR_OK);
  assert_string_equal(mf_hdr_raw(h, i, NULL), "no-space-after-colon");
  assert_int_equal(mf_hdr_find(h, "X-Tab", 1, &i), MF_HDR_OK);
  assert_string_equal(mf_hdr_raw(h, i, NULL), "\tafter tab");
  assert_string_equal(mf_hdr_value(h, i), "after tab");
  assert_string_equal(mf_hdr_get(h, "X-Empty", 1), "");
  assert_string_equal(mf_hdr_get(h, "X-Only-Space", 1), "");
  assert_string_equal(mf_hdr_get(h, "X-TRAILING", 1), "trailing spaces");
  assert_string_equal(mf_hdr_name(h, 10), "x-lower-case");
  assert_null(mf_hdr_name(h, 11));
  assert_null(mf_hdr_get(h, "X-Empty", 2));
  mf_hdr_free(h);
  free(data);

  /* Without LEADSPC one SP is removed (the Sendmail convention). */
  h = parse_file("header/odd_crlf.eml", 0, &data, &len, &body);
  assert_int_equal(mf_hdr_find(h, "X-Two-Spaces", 1, &i), MF_HDR_OK);
  assert_string_equal(mf_hdr_raw(h, i, NULL), " two");
  assert_int_equal(mf_hdr_leadspc(h, i), 0);
  assert_int_equal(mf_hdr_find(h, "Subject", 1, &i), MF_HDR_OK);
  assert_int_equal(mf_hdr_leadspc(h, i), 1);
  mf_hdr_free(h);
  free(data);
}

static void test_parse_errors(void **state) {
  (void)state;
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  const char *bad = "Subject: ok\r\nthis line has no colon\r\n\r\n";
  assert_int_equal(mf_hdr_parse(h, bad, strlen(bad), NULL), MF_HDR_E_PARSE);
  assert_non_null(strstr(mf_hdr_errmsg(h), "line 2"));
  mf_hdr_free(h);
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  const char *cont = " leading continuation\r\n";
  assert_int_equal(mf_hdr_parse(h, cont, strlen(cont), NULL), MF_HDR_E_PARSE);
  mf_hdr_free(h);
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  const char *mbox = "From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n";
  size_t body = 0;
  assert_int_equal(mf_hdr_parse(h, mbox, strlen(mbox), &body), MF_HDR_OK);
  assert_int_equal(body, strlen(mbox));
  assert_int_equal(mf_hdr_count(h), 1);
  mf_hdr_free(h);
  assert_int_equal(mf_hdr_new(&h, 0x80), MF_HDR_E_INVAL);
  assert_string_equal(mf_hdr_strerror(MF_HDR_E_PARSE),
                      "malformed header block");
}

static const char *const names100[] = {"Received", "X-Tag",          "Subject",
                                       "x-tag",    "DKIM-Signature", "X-TAG",
                                       "Comments"};

static void test_block100(void **state) {
  (void)state;
  char *data;
  size_t len, body;
  mf_hdrs *h =
      parse_file("header/block100.eml", MF_HDR_LEADSPC, &data, &len, &body);
  assert_int_equal(mf_hdr_count(h), 100);
  assert_string_equal(data + body, "body line\r\n");
  char want[32];
  for (size_t k = 0; k < 100; k++) {
    assert_string_equal(mf_hdr_name(h, k), names100[k % 7]);
    snprintf(want, sizeof want, "value-%03zu", k);
    assert_string_equal(mf_hdr_value(h, k), want);
  }
  /* X-Tag, x-tag and X-TAG are one name: positions 1,3,5,8,10,12,... */
  assert_int_equal(mf_hdr_count_name(h, "x-TAG"), 15 + 14 + 14);
  size_t nth = 0;
  for (size_t k = 0; k < 100; k++) {
    if (k % 7 != 1 && k % 7 != 3 && k % 7 != 5)
      continue;
    nth++;
    size_t idx;
    assert_int_equal(mf_hdr_find(h, "X-Tag", nth, &idx), MF_HDR_OK);
    assert_int_equal(idx, k);
  }
  assert_int_equal(mf_hdr_find(h, "X-Tag", nth + 1, NULL), MF_HDR_E_NOTFOUND);
  assert_int_equal(mf_hdr_find(h, "X-Tag", 0, NULL), MF_HDR_E_INVAL);
  assert_int_equal(mf_hdr_count_name(h, "Received"), 15);
  assert_string_equal(mf_hdr_get(h, "received", 15), "value-098");
  assert_null(mf_hdr_get(h, "Received", 16));
  assert_null(mf_hdr_get(h, "X-Nope", 1));
  mf_hdr_free(h);
  free(data);
}

static void test_big_folded(void **state) {
  (void)state;
  size_t cap = 80 * 1024;
  char *value = malloc(cap), *unfolded = malloc(cap);
  size_t vl = 0, ul = 0, col = 0;
  for (int w = 0; vl < 64 * 1024; w++) {
    char word[16];
    int n = snprintf(word, sizeof word, " word%05d", w);
    if (col + (size_t)n > 70) {
      memcpy(value + vl, "\r\n\t", 3);
      vl += 3;
      unfolded[ul++] = '\t';
      col = 0;
    }
    memcpy(value + vl, word, (size_t)n);
    memcpy(unfolded + ul, word, (size_t)n);
    vl += (size_t)n;
    ul += (size_t)n;
    col += (size_t)n;
  }
  value[vl] = unfolded[ul] = '\0';
  size_t mlen = vl + 64;
  char *msg = malloc(mlen);
  int ml = snprintf(msg, mlen, "X-Big:%s\r\nSubject: s\r\n\r\nbody", value);
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  size_t body;
  assert_int_equal(mf_hdr_parse(h, msg, (size_t)ml, &body), MF_HDR_OK);
  assert_int_equal(mf_hdr_count(h), 2);
  size_t rl;
  const char *raw = mf_hdr_raw(h, 0, &rl);
  assert_int_equal(rl, vl);
  assert_memory_equal(raw, value, vl);
  assert_string_equal(mf_hdr_value(h, 0), unfolded + 1); /* trimmed */
  char *out;
  size_t ol;
  assert_int_equal(mf_hdr_write(h, "\r\n", &out, &ol), MF_HDR_OK);
  assert_int_equal(ol + 2, body);
  assert_memory_equal(out, msg, ol);
  free(out);
  mf_hdr_free(h);
  free(msg);
  free(value);
  free(unfolded);
}

static void test_raw_utf8(void **state) {
  (void)state;
  char *data;
  size_t len, body;
  mf_hdrs *h =
      parse_file("header/utf8_raw.eml", MF_HDR_LEADSPC, &data, &len, &body);
  assert_string_equal(mf_hdr_get(h, "Subject", 1),
                      "Grüße – raw UTF-8 (SMTPUTF8)");
  assert_string_equal(mf_hdr_get(h, "To", 1), "日本 <user@例え.jp>");
  /* Latin-1 byte: converted by the charset fallback, valid UTF-8. */
  assert_string_equal(mf_hdr_get(h, "X-Latin1", 1), "café");
  char *out;
  size_t ol;
  assert_int_equal(mf_hdr_write(h, "\n", &out, &ol), MF_HDR_OK);
  assert_int_equal(ol + 1, body);
  assert_memory_equal(out, data, ol);
  free(out);
  mf_hdr_free(h);
  free(data);
}

/* The milter path: fields appended one by one, as the MTA sends them. */
static void test_append_raw(void **state) {
  (void)state;
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  /* Sendmail without LEADSPC: "Subject: hi" arrives as "hi". */
  assert_int_equal(mf_hdr_append_raw(h, "Subject", "hi", 2, 0), MF_HDR_OK);
  const char *v = "folded\n\tvalue";
  assert_int_equal(mf_hdr_append_raw(h, "X-F", v, strlen(v), 0), MF_HDR_OK);
  assert_int_equal(mf_hdr_append_raw(h, "X-L", " kept", 5, 1), MF_HDR_OK);
  char *line;
  size_t ll;
  assert_int_equal(mf_hdr_line(h, 0, &line, &ll), MF_HDR_OK);
  assert_string_equal(line, "Subject: hi");
  free(line);
  assert_int_equal(mf_hdr_line(h, 1, &line, &ll), MF_HDR_OK);
  assert_string_equal(line, "X-F: folded\n\tvalue");
  free(line);
  assert_int_equal(mf_hdr_line(h, 2, &line, &ll), MF_HDR_OK);
  assert_string_equal(line, "X-L: kept");
  free(line);
  assert_string_equal(mf_hdr_value(h, 1), "folded\tvalue");
  /* Bad names and values. */
  assert_int_equal(mf_hdr_append_raw(h, "Bad Name", "x", 1, 1), MF_HDR_E_NAME);
  assert_int_equal(mf_hdr_append_raw(h, "Bad:Name", "x", 1, 1), MF_HDR_E_NAME);
  assert_int_equal(mf_hdr_append_raw(h, "", "x", 1, 1), MF_HDR_E_NAME);
  assert_int_equal(mf_hdr_append_raw(h, "Ok", "a\0b", 3, 1), MF_HDR_E_VALUE);
  /* After an edit, originals cannot be appended any more. */
  assert_int_equal(mf_hdr_add(h, "X-New", "v"), MF_HDR_OK);
  assert_int_equal(mf_hdr_append_raw(h, "Late", "x", 1, 1), MF_HDR_E_INVAL);
  mf_hdr_free(h);
}

static void test_editing(void **state) {
  (void)state;
  mf_hdrs *h;
  assert_int_equal(mf_hdr_new(&h, MF_HDR_LEADSPC), MF_HDR_OK);
  assert_int_equal(mf_hdr_append_raw(h, "A", " 1", 2, 1), MF_HDR_OK);
  assert_int_equal(mf_hdr_append_raw(h, "B", " 2", 2, 1), MF_HDR_OK);
  assert_int_equal(mf_hdr_insert(h, 0, "Z", "first"), MF_HDR_OK);
  assert_int_equal(mf_hdr_add(h, "Y", "last"), MF_HDR_OK);
  assert_int_equal(mf_hdr_insert(h, 9, "Q", "x"), MF_HDR_E_INVAL);
  assert_int_equal(mf_hdr_insert(h, 0, "Bad:", "x"), MF_HDR_E_NAME);
  assert_int_equal(mf_hdr_insert(h, 0, "Q", "\xff\xfe"), MF_HDR_E_UTF8);
  assert_int_equal(mf_hdr_insert(h, 0, "Q", "a\nb"), MF_HDR_E_VALUE);
  assert_int_equal(mf_hdr_count(h), 4);
  const char *order[] = {"Z", "A", "B", "Y"};
  for (size_t i = 0; i < 4; i++)
    assert_string_equal(mf_hdr_name(h, i), order[i]);
  assert_string_equal(mf_hdr_raw(h, 0, NULL), " first");
  assert_int_equal(mf_hdr_set_nth(h, "b", 1, "two"), MF_HDR_OK);
  assert_string_equal(mf_hdr_raw(h, 2, NULL), " two");
  assert_int_equal(mf_hdr_set_nth(h, "b", 2, "two"), MF_HDR_E_NOTFOUND);
  assert_int_equal(mf_hdr_delete_nth(h, "a", 1), MF_HDR_OK);
  assert_int_equal(mf_hdr_delete_nth(h, "a", 1), MF_HDR_E_NOTFOUND);
  assert_int_equal(mf_hdr_count(h), 3);
  assert_int_equal(mf_hdr_rename(h, 0, "Z2"), MF_HDR_OK);
  assert_string_equal(mf_hdr_name(h, 0), "Z2");
  assert_int_equal(mf_hdr_rename(h, 0, "Z 2"), MF_HDR_E_NAME);
  assert_int_equal(mf_hdr_set_raw(h, 1, " raw\n\tfolded", 12), MF_HDR_OK);
  assert_string_equal(mf_hdr_value(h, 1), "raw\tfolded");
  assert_int_equal(mf_hdr_delete(h, 3), MF_HDR_E_INVAL);
  /* A field's value through a continuation given by the user is unfolded
   * and refolded. */
  assert_int_equal(mf_hdr_set(h, 2, "multi\r\n line"), MF_HDR_OK);
  assert_string_equal(mf_hdr_raw(h, 2, NULL), " multi line");
  mf_hdr_free(h);

  /* Non-LEADSPC collection: values stored without the leading space. */
  assert_int_equal(mf_hdr_new(&h, 0), MF_HDR_OK);
  assert_int_equal(mf_hdr_add(h, "Subject", "plain"), MF_HDR_OK);
  assert_string_equal(mf_hdr_raw(h, 0, NULL), "plain");
  assert_int_equal(mf_hdr_leadspc(h, 0), 0);
  char *line;
  assert_int_equal(mf_hdr_line(h, 0, &line, NULL), MF_HDR_OK);
  assert_string_equal(line, "Subject: plain");
  free(line);
  mf_hdr_free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_crlf_leadspc),
      cmocka_unit_test(test_roundtrip_crlf_noleadspc),
      cmocka_unit_test(test_roundtrip_lf),
      cmocka_unit_test(test_parse_details),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_block100),
      cmocka_unit_test(test_big_folded),
      cmocka_unit_test(test_raw_utf8),
      cmocka_unit_test(test_append_raw),
      cmocka_unit_test(test_editing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
