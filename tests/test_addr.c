/* Tests of addr/: parsing, IDNA/NFC equality, errors, literals, quoting,
 * routes, ESMTP parameters, formatting, domain tests, threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailfilter/addr.h>

#include "testutil.h"

/* スパム (NFC: ス パ ム) and its NFD spelling: パ = ハ + U+309A. */
#define SPAM_NFC "\xe3\x82\xb9\xe3\x83\x91\xe3\x83\xa0"
#define SPAM_NFD "\xe3\x82\xb9\xe3\x83\x8f\xe3\x82\x9a\xe3\x83\xa0"
/* ü composed / decomposed (u + U+0308) */
#define UE_NFC "\xc3\xbc"
#define UE_NFD "u\xcc\x88"

static mf_addr *parse_ok(const char *s, unsigned flags) {
  mf_addr *a = (mf_addr *)1;
  const char *why = NULL;
  int rc = mf_addr_parse(s, flags, &a, &why);
  if (rc != 0)
    print_error("parse of '%s' failed: %d %s (%s)\n", s, rc,
                mf_addr_strerror(rc), why ? why : "?");
  assert_int_equal(rc, 0);
  assert_non_null(a);
  assert_null(why); /* untouched on success */
  return a;
}

static void expect_err(const char *s, size_t len, unsigned flags, int err) {
  mf_addr *a = (mf_addr *)1;
  const char *why = NULL;
  int rc = mf_addr_parse_n(s, len, flags, &a, &why);
  if (rc != err)
    print_error("'%.*s': expected %d (%s), got %d (%s: %s)\n", (int)len, s, err,
                mf_addr_strerror(err), rc, mf_addr_strerror(rc),
                why ? why : "-");
  assert_int_equal(rc, err);
  assert_null(a);
  assert_non_null(why);
  assert_true(strlen(why) > 0);
  assert_true(strlen(mf_addr_strerror(rc)) > 0);
}

static int equal_str(const char *x, const char *y) {
  mf_addr *a = parse_ok(x, 0), *b = parse_ok(y, 0);
  int r = mf_addr_equal(a, b);
  assert_int_equal(r, strcmp(mf_addr_key(a), mf_addr_key(b)) == 0);
  mf_addr_free(a);
  mf_addr_free(b);
  return r;
}

/* ---- equality, IDNA, NFC ------------------------------------------------ */

static void test_spam_trap_spellings(void **state) {
  (void)state;
  const char *u = "spam-trap@" SPAM_NFC ".example.com";
  const char *al = "spam-trap@XN--ZCK5B2B.example.com";
  const char *nfd = "spam-trap@" SPAM_NFD ".example.com";
  const char *br = "<spam-trap@xn--zck5b2b.EXAMPLE.com>";
  assert_string_not_equal(SPAM_NFC, SPAM_NFD); /* NFC really changes bytes */
  assert_true(equal_str(u, al));
  assert_true(equal_str(u, nfd));
  assert_true(equal_str(al, nfd));
  assert_true(equal_str(u, br));
  /* local part case is kept */
  assert_false(equal_str("Spam-trap@" SPAM_NFC ".example.com", u));
  assert_false(equal_str("Spam-trap@XN--ZCK5B2B.example.com", al));
  assert_false(equal_str("spam-trap@" SPAM_NFC ".example.org", u));

  mf_addr *a = parse_ok(nfd, 0);
  assert_string_equal(mf_addr_domain(a), SPAM_NFD ".example.com");
  assert_string_equal(mf_addr_domain_alabel(a), "xn--zck5b2b.example.com");
  assert_string_equal(mf_addr_domain_ulabel(a), SPAM_NFC ".example.com");
  assert_string_equal(mf_addr_key(a), "spam-trap@xn--zck5b2b.example.com");
  assert_true(mf_addr_has_utf8(a));
  assert_false(mf_addr_needs_smtputf8(a)); /* A-label makes it ASCII */
  mf_addr_free(a);

  a = parse_ok(al, 0);
  assert_string_equal(mf_addr_domain(a), "XN--ZCK5B2B.example.com");
  assert_string_equal(mf_addr_domain_ulabel(a), SPAM_NFC ".example.com");
  assert_false(mf_addr_has_utf8(a));
  mf_addr_free(a);
}

static void test_nfd_umlaut(void **state) {
  (void)state;
  assert_string_not_equal(UE_NFC, UE_NFD);
  assert_true(equal_str("info@b" UE_NFD "cher.de", "info@b" UE_NFC "cher.de"));
  assert_true(equal_str("info@b" UE_NFD "cher.de", "info@xn--bcher-kva.de"));
  assert_true(equal_str("info@B" UE_NFC "CHER.de", "info@xn--bcher-kva.DE"));
  /* NFC applies to the local part too; its case does not fold */
  assert_true(
      equal_str("j" UE_NFD "rgen@example.com", "j" UE_NFC "rgen@example.com"));
  assert_false(
      equal_str("J" UE_NFC "rgen@example.com", "j" UE_NFC "rgen@example.com"));
  mf_addr *a = parse_ok("j" UE_NFD "rgen@example.com", 0);
  assert_true(mf_addr_needs_smtputf8(a));
  assert_true(mf_addr_has_utf8(a));
  /* never rewritten: the local part keeps its NFD bytes */
  assert_string_equal(mf_addr_local(a), "j" UE_NFD "rgen");
  assert_string_equal(mf_addr_key(a), "j" UE_NFC "rgen@example.com");
  mf_addr_free(a);
}

static void test_domain_convert(void **state) {
  (void)state;
  char *o = NULL;
  const char *why = NULL;
  assert_int_equal(mf_addr_domain_convert(SPAM_NFD ".Example.com", 0, &o, &why),
                   0);
  assert_string_equal(o, "xn--zck5b2b.example.com");
  free(o);
  assert_int_equal(mf_addr_domain_convert("xn--bcher-kva.de", 1, &o, &why), 0);
  assert_string_equal(o, "b" UE_NFC "cher.de");
  free(o);
  assert_int_equal(mf_addr_domain_convert("xn--abc-.de", 1, &o, &why),
                   MF_ADDR_E_PUNYCODE);
  assert_null(o);
  assert_non_null(why);
}

/* ---- malformed input ---------------------------------------------------- */

static int err_code(const char *name) {
  static const struct {
    const char *n;
    int c;
  } t[] = {{"UTF8", MF_ADDR_E_UTF8},
           {"CTRL", MF_ADDR_E_CTRL},
           {"SYNTAX", MF_ADDR_E_SYNTAX},
           {"BRACKET", MF_ADDR_E_BRACKET},
           {"QUOTE", MF_ADDR_E_QUOTE},
           {"TRAILING", MF_ADDR_E_TRAILING},
           {"LOCAL_EMPTY", MF_ADDR_E_LOCAL_EMPTY},
           {"LOCAL_TOO_LONG", MF_ADDR_E_LOCAL_TOO_LONG},
           {"NO_DOMAIN", MF_ADDR_E_NO_DOMAIN},
           {"DOMAIN", MF_ADDR_E_DOMAIN},
           {"LABEL_TOO_LONG", MF_ADDR_E_LABEL_TOO_LONG},
           {"DOMAIN_TOO_LONG", MF_ADDR_E_DOMAIN_TOO_LONG},
           {"PUNYCODE", MF_ADDR_E_PUNYCODE},
           {"IDNA", MF_ADDR_E_IDNA},
           {"LITERAL", MF_ADDR_E_LITERAL},
           {"ROUTE", MF_ADDR_E_ROUTE},
           {"NULL", MF_ADDR_E_NULL}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcmp(t[i].n, name) == 0)
      return t[i].c;
  fail_msg("unknown error name %s", name);
  return 0;
}

static unsigned flag_bits(const char *f) {
  unsigned r = 0;
  for (; *f; f++)
    switch (*f) {
    case 'M':
      r |= MF_ADDR_MAIL_FROM;
      break;
    case 'R':
      r |= MF_ADDR_RCPT_TO;
      break;
    case 'B':
      r |= MF_ADDR_REQUIRE_BRACKETS;
      break;
    case 'L':
      r |= MF_ADDR_LAX_DOTS;
      break;
    }
  return r;
}

/* \xNN, \t, \r, \n, \\ -> bytes; returns the length. */
static size_t unescape(const char *in, char *out) {
  size_t n = 0;
  while (*in) {
    if (in[0] == '\\' && in[1] == 'x' && in[2] && in[3]) {
      char hex[3] = {in[2], in[3], 0};
      out[n++] = (char)strtol(hex, NULL, 16);
      in += 4;
    } else if (in[0] == '\\' && in[1] == 't') {
      out[n++] = '\t';
      in += 2;
    } else if (in[0] == '\\' && in[1] == 'r') {
      out[n++] = '\r';
      in += 2;
    } else if (in[0] == '\\' && in[1] == 'n') {
      out[n++] = '\n';
      in += 2;
    } else if (in[0] == '\\' && in[1] == '\\') {
      out[n++] = '\\';
      in += 2;
    } else {
      out[n++] = *in++;
    }
  }
  out[n] = '\0';
  return n;
}

static void test_malformed_file(void **state) {
  (void)state;
  size_t len;
  char *data = tu_read_file("addr/malformed.txt", &len);
  assert_non_null(data);
  int count = 0;
  char *save = NULL;
  for (char *line = strtok_r(data, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    if (line[0] == '#')
      continue;
    char *t1 = strchr(line, '\t');
    assert_non_null(t1);
    *t1 = '\0';
    char *t2 = strchr(t1 + 1, '\t');
    assert_non_null(t2);
    *t2 = '\0';
    char in[512];
    size_t n = unescape(t2 + 1, in);
    expect_err(in, n, flag_bits(t1 + 1), err_code(line));
    count++;
  }
  free(data);
  assert_true(count >= 60);
}

static void test_length_limits(void **state) {
  (void)state;
  char buf[600];
  /* local part: 64 ok, 65 not (quotes count) */
  memset(buf, 'a', 64);
  strcpy(buf + 64, "@example.com");
  mf_addr *a = parse_ok(buf, 0);
  mf_addr_free(a);
  memset(buf, 'a', 65);
  strcpy(buf + 65, "@example.com");
  expect_err(buf, strlen(buf), 0, MF_ADDR_E_LOCAL_TOO_LONG);
  buf[0] = '"';
  buf[63] = '"';
  strcpy(buf + 64, "@example.com"); /* "62 a" = 64 octets */
  a = parse_ok(buf, 0);
  mf_addr_free(a);
  buf[64] = '"';
  buf[63] = 'a';
  strcpy(buf + 65, "@example.com");
  expect_err(buf, strlen(buf), 0, MF_ADDR_E_LOCAL_TOO_LONG);

  /* label: 63 ok, 64 not */
  strcpy(buf, "u@");
  memset(buf + 2, 'l', 63);
  strcpy(buf + 65, ".com");
  a = parse_ok(buf, 0);
  mf_addr_free(a);
  memset(buf + 2, 'l', 64);
  strcpy(buf + 66, ".com");
  expect_err(buf, strlen(buf), 0, MF_ADDR_E_LABEL_TOO_LONG);
  /* U-label of 57 + 2 octets whose A-label is over 63 octets */
  strcpy(buf, "u@");
  memset(buf + 2, 'a', 57);
  strcpy(buf + 59, UE_NFC ".com");
  expect_err(buf, strlen(buf), 0, MF_ADDR_E_LABEL_TOO_LONG);
  char *o = NULL;
  assert_int_equal(mf_addr_domain_convert(buf + 2, 0, &o, NULL),
                   MF_ADDR_E_LABEL_TOO_LONG);

  /* domain: 253 ok, 254 not (4 x 63 + 1 = 253 with dots) */
  strcpy(buf, "u@");
  char *p = buf + 2;
  for (int i = 0; i < 4; i++) {
    memset(p, 'a' + i, i < 3 ? 63 : 61);
    p += i < 3 ? 63 : 61;
    *p++ = '.';
  }
  p[-1] = '\0';
  assert_int_equal(strlen(buf + 2), 253);
  a = parse_ok(buf, 0);
  mf_addr_free(a);
  p[-1] = 'x';
  p[0] = '\0';
  assert_int_equal(strlen(buf + 2), 254);
  expect_err(buf, strlen(buf), 0, MF_ADDR_E_DOMAIN_TOO_LONG);
  /* 253 octets as U-label, over 253 as A-label */
  strcpy(buf, "u@");
  p = buf + 2;
  for (int i = 0; i < 4; i++) {
    memset(p, 'a' + i, 50);
    p += 50;
    memcpy(p, UE_NFC ".", 3);
    p += 3;
  }
  memset(p, 'x', 40);
  p[40] = '\0';
  assert_int_equal(strlen(buf + 2), 252);
  expect_err(buf, strlen(buf), 0, MF_ADDR_E_DOMAIN_TOO_LONG);
}

static void test_bad_args(void **state) {
  (void)state;
  mf_addr *a = NULL;
  const char *why = NULL;
  assert_int_equal(mf_addr_parse(NULL, 0, &a, &why), MF_ADDR_E_INVAL);
  assert_non_null(why);
  assert_int_equal(mf_addr_parse("a@b.c", 0, NULL, NULL), MF_ADDR_E_INVAL);
  assert_int_equal(mf_addr_parse("a@b.c", 1u << 20, &a, NULL), MF_ADDR_E_INVAL);
  assert_null(a);
  /* embedded NUL */
  expect_err("a\0b@example.com", 15, 0, MF_ADDR_E_CTRL);
  /* not NUL-terminated: only len bytes are read */
  char nt[5] = {'<', 'a', '@', 'b', '>'};
  expect_err(nt, 4, 0, MF_ADDR_E_BRACKET);
  assert_string_equal(mf_addr_strerror(-9999), "unknown error");
  assert_int_equal(mf_addr_equal(NULL, NULL), 0);
  assert_null(mf_addr_dup(NULL));
  mf_addr_free(NULL);
}

/* ---- forms that parse --------------------------------------------------- */

static void test_null_and_postmaster(void **state) {
  (void)state;
  mf_addr *a = parse_ok("<>", MF_ADDR_MAIL_FROM);
  assert_true(mf_addr_is_null(a));
  assert_string_equal(mf_addr_local(a), "");
  assert_null(mf_addr_domain(a));
  assert_null(mf_addr_domain_alabel(a));
  assert_string_equal(mf_addr_str(a), "");
  char buf[16];
  assert_int_equal(mf_addr_format(a, MF_ADDR_FMT_BRACKETS, buf, sizeof buf), 2);
  assert_string_equal(buf, "<>");
  assert_int_equal(mf_addr_format(a, 0, buf, sizeof buf), 0);
  assert_string_equal(buf, "");
  mf_addr *b = NULL;
  assert_int_equal(mf_addr_new(NULL, NULL, 0, &b, NULL), 0);
  assert_true(mf_addr_is_null(b));
  assert_true(mf_addr_equal(a, b));
  mf_addr_free(b);
  b = parse_ok("<postmaster>", MF_ADDR_RCPT_TO);
  assert_false(mf_addr_equal(a, b));
  mf_addr_free(a);
  mf_addr_free(b);

  a = parse_ok("<Postmaster>", MF_ADDR_RCPT_TO);
  assert_false(mf_addr_is_null(a));
  assert_null(mf_addr_domain(a));
  assert_string_equal(mf_addr_local(a), "Postmaster");
  assert_string_equal(mf_addr_key(a), "Postmaster");
  assert_int_equal(mf_addr_domain_is(a, "example.com"), 0);
  mf_addr_free(a);
  a = parse_ok("POSTMASTER", MF_ADDR_RCPT_TO);
  mf_addr_free(a);
  a = parse_ok("<postmaster@example.com>", MF_ADDR_RCPT_TO);
  assert_string_equal(mf_addr_domain(a), "example.com");
  mf_addr_free(a);
  assert_int_equal(mf_addr_new("postmaster", NULL, MF_ADDR_RCPT_TO, &a, NULL),
                   0);
  assert_string_equal(mf_addr_str(a), "postmaster");
  mf_addr_free(a);
  a = parse_ok("<user>", MF_ADDR_ALLOW_NO_DOMAIN);
  assert_null(mf_addr_domain(a));
  mf_addr_free(a);
}

static void test_literals(void **state) {
  (void)state;
  mf_addr *a = parse_ok("<user@[192.0.2.1]>", 0);
  assert_true(mf_addr_is_literal(a));
  assert_string_equal(mf_addr_domain(a), "[192.0.2.1]");
  assert_string_equal(mf_addr_domain_alabel(a), "[192.0.2.1]");
  assert_true(mf_addr_domain_is(a, "[192.0.2.1]"));
  assert_false(mf_addr_domain_is(a, "[192.0.2.2]"));
  assert_true(mf_addr_domain_under(a, "[192.0.2.1]"));
  assert_false(mf_addr_domain_under(a, "2.1"));
  mf_addr_free(a);

  a = parse_ok("user@[IPv6:2001:DB8:0:0::1]", 0);
  assert_true(mf_addr_is_literal(a));
  assert_string_equal(mf_addr_domain(a), "[IPv6:2001:DB8:0:0::1]");
  assert_string_equal(mf_addr_domain_alabel(a), "[IPv6:2001:db8::1]");
  assert_string_equal(mf_addr_domain_ulabel(a), "[IPv6:2001:db8::1]");
  assert_true(mf_addr_domain_is(a, "[ipv6:2001:db8::1]"));
  mf_addr_free(a);
  assert_true(
      equal_str("user@[IPv6:2001:DB8:0:0::1]", "user@[ipv6:2001:db8::1]"));
  assert_false(equal_str("user@[192.0.2.1]", "user@[192.0.2.10]"));
  a = parse_ok("user@[x-tag:some.thing]", 0);
  assert_true(mf_addr_is_literal(a));
  mf_addr_free(a);
  a = parse_ok("user@example.com", 0);
  assert_false(mf_addr_is_literal(a));
  mf_addr_free(a);
}

static void test_quoted(void **state) {
  (void)state;
  mf_addr *a = parse_ok("\"john doe\"@example.com", 0);
  assert_true(mf_addr_is_quoted(a));
  assert_string_equal(mf_addr_local(a), "\"john doe\"");
  assert_string_equal(mf_addr_local_value(a), "john doe");
  assert_string_equal(mf_addr_domain(a), "example.com");
  mf_addr_free(a);

  /* "@" inside quotes, escapes */
  a = parse_ok("<\"a@b\\\"c\\\\d\"@example.com>", 0);
  assert_string_equal(mf_addr_local(a), "\"a@b\\\"c\\\\d\"");
  assert_string_equal(mf_addr_local_value(a), "a@b\"c\\d");
  assert_string_equal(mf_addr_domain(a), "example.com");
  assert_string_equal(mf_addr_key(a), "a@b\"c\\d@example.com");
  mf_addr_free(a);

  a = parse_ok("\"user>x\"@example.com", 0);
  assert_string_equal(mf_addr_local_value(a), "user>x");
  mf_addr_free(a);
  a = parse_ok("\"j" UE_NFC " d\"@example.com", 0);
  assert_true(mf_addr_needs_smtputf8(a));
  mf_addr_free(a);

  /* quoting that is not needed is still the same address */
  assert_true(equal_str("\"john\"@example.com", "john@example.com"));
  assert_true(equal_str("\"jo\\hn\"@example.com", "john@example.com"));
  assert_false(equal_str("\"john doe\"@example.com", "johndoe@example.com"));

  /* mf_addr_new quotes as needed, escapes " and \ */
  const char *why = NULL;
  assert_int_equal(mf_addr_new("john doe", "example.com", 0, &a, &why), 0);
  assert_string_equal(mf_addr_str(a), "\"john doe\"@example.com");
  mf_addr_free(a);
  assert_int_equal(mf_addr_new("a\"b\\c", "example.com", 0, &a, &why), 0);
  assert_string_equal(mf_addr_local(a), "\"a\\\"b\\\\c\"");
  assert_string_equal(mf_addr_local_value(a), "a\"b\\c");
  mf_addr_free(a);
  assert_int_equal(mf_addr_new("john.doe", "xn--bcher-kva.de", 0, &a, &why), 0);
  assert_string_equal(mf_addr_str(a), "john.doe@xn--bcher-kva.de");
  assert_false(mf_addr_is_quoted(a));
  mf_addr_free(a);
  assert_int_equal(mf_addr_new("john..doe", "example.com", 0, &a, &why), 0);
  assert_string_equal(mf_addr_local(a), "\"john..doe\"");
  mf_addr_free(a);
  assert_int_equal(mf_addr_new("", "example.com", 0, &a, &why),
                   MF_ADDR_E_LOCAL_EMPTY);
  assert_int_equal(mf_addr_new("a\tb", "example.com", 0, &a, &why),
                   MF_ADDR_E_CTRL);
  assert_int_equal(mf_addr_new("x", "a@b.com", 0, &a, &why), MF_ADDR_E_DOMAIN);
  assert_int_equal(mf_addr_new("x", "b.com> SIZE=1", 0, &a, &why),
                   MF_ADDR_E_BRACKET);
  assert_int_equal(mf_addr_new("x", NULL, 0, &a, &why), MF_ADDR_E_NO_DOMAIN);
  assert_int_equal(mf_addr_new(NULL, "example.com", 0, &a, &why),
                   MF_ADDR_E_INVAL);
  assert_int_equal(mf_addr_new("u", "[192.0.2.1]", 0, &a, &why), 0);
  assert_true(mf_addr_is_literal(a));
  mf_addr_free(a);

  /* lax dots */
  a = parse_ok("john..doe.@example.com", MF_ADDR_LAX_DOTS);
  assert_string_equal(mf_addr_local(a), "john..doe.");
  mf_addr_free(a);
}

static void test_source_route(void **state) {
  (void)state;
  mf_addr *a = parse_ok("<@a.example,@b.example:user@example.com>", 0);
  assert_string_equal(mf_addr_route(a), "@a.example,@b.example");
  assert_string_equal(mf_addr_local(a), "user");
  assert_string_equal(mf_addr_domain(a), "example.com");
  assert_string_equal(mf_addr_str(a), "user@example.com");
  char *s = NULL;
  assert_int_equal(mf_addr_format_alloc(a, MF_ADDR_FMT_BRACKETS, &s), 18);
  assert_string_equal(s, "<user@example.com>");
  free(s);
  assert_true(mf_addr_format_alloc(a, MF_ADDR_FMT_BRACKETS | MF_ADDR_FMT_ROUTE,
                                   &s) > 0);
  assert_string_equal(s, "<@a.example,@b.example:user@example.com>");
  free(s);
  mf_addr_free(a);
  assert_true(equal_str("<@a.example,@b.example:user@example.com>",
                        "user@example.com"));
  a = parse_ok("<@" SPAM_NFC ".example:\"x y\"@example.com>", 0);
  assert_string_equal(mf_addr_route(a), "@" SPAM_NFC ".example");
  assert_string_equal(mf_addr_local_value(a), "x y");
  assert_true(mf_addr_has_utf8(a));
  mf_addr_free(a);
  a = parse_ok("user@example.com", 0);
  assert_null(mf_addr_route(a));
  mf_addr_free(a);
}

/* ---- formatting --------------------------------------------------------- */

static void test_format_roundtrip(void **state) {
  (void)state;
  static const char *const v[] = {
      "user@example.com",
      "User.Name+tag@Sub.Example.COM",
      "\"john doe\"@example.com",
      "\"a@b\\\"c\"@example.com",
      "spam-trap@" SPAM_NFC ".example.com",
      "spam-trap@" SPAM_NFD ".example.com",
      "spam-trap@XN--ZCK5B2B.example.com",
      "j" UE_NFD "rgen@b" UE_NFD "cher.de",
      "user@[192.0.2.1]",
      "user@[IPv6:2001:DB8::1]",
      "!#$%&'*+-/=?^_`{|}~@example.com",
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    mf_addr *a = parse_ok(v[i], 0);
    char buf[256], br[260];
    int n = mf_addr_format(a, 0, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(v[i]));
    assert_string_equal(buf, v[i]);
    assert_string_equal(mf_addr_str(a), v[i]);
    snprintf(br, sizeof br, "<%s>", v[i]);
    n = mf_addr_format(a, MF_ADDR_FMT_BRACKETS, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(br));
    assert_string_equal(buf, br);
    /* and back: parse the formatted text, same address, same text */
    mf_addr *b = parse_ok(buf, 0);
    assert_true(mf_addr_equal(a, b));
    assert_string_equal(mf_addr_str(b), v[i]);
    mf_addr *c = mf_addr_dup(a);
    assert_non_null(c);
    assert_true(mf_addr_equal(a, c));
    assert_string_equal(mf_addr_str(c), v[i]);
    mf_addr_free(a);
    mf_addr_free(b);
    mf_addr_free(c);
  }
}

static void test_format_forms(void **state) {
  (void)state;
  mf_addr *a = parse_ok("<spam-trap@" SPAM_NFD ".Example.com>", 0);
  char buf[128];
  mf_addr_format(a, MF_ADDR_FMT_ALABEL | MF_ADDR_FMT_BRACKETS, buf, sizeof buf);
  assert_string_equal(buf, "<spam-trap@xn--zck5b2b.example.com>");
  mf_addr_format(a, MF_ADDR_FMT_ULABEL, buf, sizeof buf);
  assert_string_equal(buf, "spam-trap@" SPAM_NFC ".example.com");
  mf_addr_format(a, 0, buf, sizeof buf);
  assert_string_equal(buf, "spam-trap@" SPAM_NFD ".Example.com");
  assert_int_equal(
      mf_addr_format(a, MF_ADDR_FMT_ALABEL | MF_ADDR_FMT_ULABEL, buf, 10),
      MF_ADDR_E_INVAL);
  /* snprintf semantics: truncation, size 0 */
  assert_int_equal(mf_addr_format(a, MF_ADDR_FMT_ALABEL, NULL, 0), 33);
  assert_int_equal(mf_addr_format(a, MF_ADDR_FMT_ALABEL, buf, 6), 33);
  assert_string_equal(buf, "spam-");
  mf_addr_free(a);

  a = parse_ok("user@[IPv6:2001:DB8:0::1]", 0);
  mf_addr_format(a, MF_ADDR_FMT_ALABEL, buf, sizeof buf);
  assert_string_equal(buf, "user@[IPv6:2001:db8::1]");
  mf_addr_format(a, 0, buf, sizeof buf);
  assert_string_equal(buf, "user@[IPv6:2001:DB8:0::1]");
  mf_addr_free(a);
}

/* ---- domain tests ------------------------------------------------------- */

static void test_domain_is_under(void **state) {
  (void)state;
  mf_addr *a = parse_ok("u@a.example.com", 0);
  assert_true(mf_addr_domain_under(a, "example.com"));
  assert_true(mf_addr_domain_under(a, "EXAMPLE.com"));
  assert_true(mf_addr_domain_under(a, "a.example.com"));
  assert_true(mf_addr_domain_is(a, "A.Example.Com"));
  assert_false(mf_addr_domain_is(a, "example.com"));
  assert_false(mf_addr_domain_under(a, "xample.com"));
  assert_false(mf_addr_domain_under(a, "b.a.example.com"));
  assert_false(mf_addr_domain_under(a, "com.example"));
  assert_false(mf_addr_domain_under(a, "")); /* invalid argument -> 0 */
  assert_false(mf_addr_domain_under(a, "example..com"));
  assert_false(mf_addr_domain_under(a, NULL));
  mf_addr_free(a);

  a = parse_ok("u@badexample.com", 0);
  assert_false(mf_addr_domain_under(a, "example.com"));
  assert_true(mf_addr_domain_under(a, "badexample.com"));
  assert_true(mf_addr_domain_under(a, "com"));
  mf_addr_free(a);

  /* IDNA-aware: any spelling on either side */
  a = parse_ok("u@mail." SPAM_NFD ".example.com", 0);
  assert_true(mf_addr_domain_under(a, SPAM_NFC ".example.com"));
  assert_true(mf_addr_domain_under(a, "XN--ZCK5B2B.example.com"));
  assert_true(mf_addr_domain_is(a, "mail.xn--zck5b2b.example.com"));
  assert_true(mf_addr_domain_is(a, "MAIL." SPAM_NFC ".EXAMPLE.COM"));
  assert_false(mf_addr_domain_under(a, "xn--abc-.example.com"));
  mf_addr_free(a);
  a = parse_ok("u@xn--zck5b2b.example.com", 0);
  assert_true(mf_addr_domain_is(a, SPAM_NFD ".example.com"));
  assert_false(mf_addr_domain_under(a, "zck5b2b.example.com"));
  assert_false(mf_addr_domain_is(a, "[192.0.2.1]"));
  mf_addr_free(a);
  a = parse_ok("<>", MF_ADDR_MAIL_FROM);
  assert_false(mf_addr_domain_under(a, "example.com"));
  mf_addr_free(a);
}

/* ---- ESMTP parameters --------------------------------------------------- */

static void check_std_params(const mf_addr_params *p) {
  assert_int_equal(mf_addr_params_count(p), 4);
  assert_string_equal(mf_addr_params_name(p, 0), "SIZE");
  assert_string_equal(mf_addr_params_value(p, 0), "123");
  assert_string_equal(mf_addr_params_name(p, 1), "BODY");
  assert_string_equal(mf_addr_params_value(p, 1), "8BITMIME");
  assert_string_equal(mf_addr_params_name(p, 2), "SMTPUTF8");
  assert_null(mf_addr_params_value(p, 2));
  assert_string_equal(mf_addr_params_value(p, 3), "rfc822;a+40b.example");
  assert_null(mf_addr_params_name(p, 4));
  const char *v = "x";
  assert_int_equal(mf_addr_params_find(p, "smtputf8", &v), 2);
  assert_null(v);
  assert_int_equal(mf_addr_params_find(p, "Size", &v), 0);
  assert_string_equal(v, "123");
  assert_int_equal(mf_addr_params_find(p, "orcpt", &v), 3);
  char *dec = NULL;
  assert_int_equal(mf_addr_xtext_decode(v, &dec, NULL), 0);
  assert_string_equal(dec, "rfc822;a@b.example");
  free(dec);
  assert_int_equal(mf_addr_params_find(p, "RET", &v), MF_ADDR_E_NOTFOUND);
  assert_int_equal(mf_addr_params_find(p, "SIZ", NULL), MF_ADDR_E_NOTFOUND);
  char buf[128];
  int n = mf_addr_params_format(p, buf, sizeof buf);
  assert_string_equal(
      buf, "SIZE=123 BODY=8BITMIME SMTPUTF8 ORCPT=rfc822;a+40b.example");
  assert_int_equal(n, (int)strlen(buf));
}

static void test_esmtp_params(void **state) {
  (void)state;
  const char *argv[] = {"SIZE=123", "BODY=8BITMIME", "SMTPUTF8",
                        "ORCPT=rfc822;a+40b.example"};
  mf_addr_params *p = NULL;
  const char *why = NULL;
  assert_int_equal(mf_addr_params_parse_argv(4, argv, &p, &why), 0);
  check_std_params(p);
  mf_addr_params *d = mf_addr_params_dup(p);
  check_std_params(d);
  mf_addr_params_free(d);
  mf_addr_params_free(p);

  assert_int_equal(
      mf_addr_params_parse(
          "SIZE=123  BODY=8BITMIME SMTPUTF8 ORCPT=rfc822;a+40b.example ", &p,
          &why),
      0);
  check_std_params(p);

  /* edit */
  assert_int_equal(mf_addr_params_set(p, "size", "456", &why), 0);
  assert_int_equal(mf_addr_params_remove(p, "smtputf8"), 0);
  assert_int_equal(mf_addr_params_remove(p, "smtputf8"), MF_ADDR_E_NOTFOUND);
  assert_int_equal(mf_addr_params_set(p, "RET", "HDRS", &why), 0);
  assert_int_equal(mf_addr_params_set(p, "X-FLAG", NULL, &why), 0);
  char *s = NULL;
  assert_true(mf_addr_params_format_alloc(p, &s) > 0);
  assert_string_equal(
      s, "SIZE=456 BODY=8BITMIME ORCPT=rfc822;a+40b.example RET=HDRS X-FLAG");
  free(s);
  why = NULL;
  assert_int_equal(mf_addr_params_set(p, "BAD KEY", "1", &why),
                   MF_ADDR_E_ESMTP);
  assert_non_null(why);
  assert_int_equal(mf_addr_params_set(p, "K", "a=b", &why), MF_ADDR_E_ESMTP);
  assert_int_equal(mf_addr_params_set(p, "K", "a\x01", &why), MF_ADDR_E_CTRL);
  assert_int_equal(mf_addr_params_count(p), 5);
  mf_addr_params_free(p);

  /* empty */
  assert_int_equal(mf_addr_params_parse("", &p, &why), 0);
  assert_int_equal(mf_addr_params_count(p), 0);
  assert_int_equal(mf_addr_params_format(p, NULL, 0), 0);
  mf_addr_params_free(p);
  assert_int_equal(mf_addr_params_parse_argv(0, NULL, &p, &why), 0);
  assert_int_equal(mf_addr_params_count(p), 0);
  mf_addr_params_free(p);

  /* UTF-8 values (RFC 6531) */
  assert_int_equal(
      mf_addr_params_parse("ORCPT=utf-8;j" UE_NFC "rgen", &p, &why), 0);
  mf_addr_params_free(p);

  /* errors */
  static const struct {
    const char *s;
    int err;
  } bad[] = {
      {"SIZE=1 size=2", MF_ADDR_E_DUPLICATE},
      {"FOO=", MF_ADDR_E_ESMTP},
      {"=1", MF_ADDR_E_ESMTP},
      {"-X=1", MF_ADDR_E_ESMTP},
      {"X_Y=1", MF_ADDR_E_ESMTP},
      {"A=b=c", MF_ADDR_E_ESMTP},
      {"A=\xff", MF_ADDR_E_UTF8},
      {"A=b\tB=c", MF_ADDR_E_CTRL},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    p = (mf_addr_params *)1;
    why = NULL;
    assert_int_equal(mf_addr_params_parse(bad[i].s, &p, &why), bad[i].err);
    assert_null(p);
    assert_non_null(why);
    assert_true(strlen(why) > 0);
  }
  const char *bargv[] = {"SIZE=1", ""};
  assert_int_equal(mf_addr_params_parse_argv(2, bargv, &p, &why),
                   MF_ADDR_E_ESMTP);
  const char *sargv[] = {"SIZE=1 BODY=7BIT"};
  assert_int_equal(mf_addr_params_parse_argv(1, sargv, &p, &why),
                   MF_ADDR_E_ESMTP);
}

static void test_xtext(void **state) {
  (void)state;
  char *o = NULL;
  const char *why = NULL;
  assert_int_equal(mf_addr_xtext_encode("rfc822;a+b=c@d e", &o), 0);
  assert_string_equal(o, "rfc822;a+2Bb+3Dc@d+20e");
  char *back = NULL;
  assert_int_equal(mf_addr_xtext_decode(o, &back, &why), 0);
  assert_string_equal(back, "rfc822;a+b=c@d e");
  free(o);
  free(back);
  const char *bad[] = {"a+4", "a+", "a+zz", "a+2b", "a b", "a=b", "+00"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why = NULL;
    assert_int_equal(mf_addr_xtext_decode(bad[i], &o, &why), MF_ADDR_E_XTEXT);
    assert_null(o);
    assert_non_null(why);
  }
}

static void test_parse_cmd(void **state) {
  (void)state;
  mf_addr *a = NULL;
  mf_addr_params *p = NULL;
  const char *why = NULL;
  assert_int_equal(mf_addr_parse_cmd("<\"a b\"@example.com> SIZE=123 "
                                     "BODY=8BITMIME SMTPUTF8 "
                                     "ORCPT=rfc822;a+40b.example",
                                     0, &a, &p, &why),
                   0);
  assert_string_equal(mf_addr_local_value(a), "a b");
  check_std_params(p);
  mf_addr_free(a);
  mf_addr_params_free(p);
  assert_int_equal(
      mf_addr_parse_cmd("<> BODY=8BITMIME", MF_ADDR_MAIL_FROM, &a, &p, &why),
      0);
  assert_true(mf_addr_is_null(a));
  assert_int_equal(mf_addr_params_count(p), 1);
  mf_addr_free(a);
  mf_addr_params_free(p);
  assert_int_equal(mf_addr_parse_cmd("user@example.com", 0, &a, &p, &why), 0);
  assert_int_equal(mf_addr_params_count(p), 0);
  mf_addr_free(a);
  mf_addr_params_free(p);
  assert_int_equal(mf_addr_parse_cmd("<a@example.com>SIZE=1", 0, &a, &p, &why),
                   MF_ADDR_E_TRAILING);
  assert_null(a);
  assert_null(p);
  assert_int_equal(
      mf_addr_parse_cmd("<a@example.com> SIZE=1 SIZE=2", 0, &a, &p, &why),
      MF_ADDR_E_DUPLICATE);
  assert_null(a);
  assert_null(p);
}

/* ---- random input: never a crash, always rc + message, or a round trip -- */

static void test_random_input(void **state) {
  (void)state;
  static const char *const pieces[] = {
      "<",    ">",         "@",           "\"",         "\\",       "[",
      "]",    ":",         ",",           ".",          "a",        "Z",
      "xn--", "-",         " ",           "=",          "1",        "\t",
      "\xff", UE_NFC,      UE_NFD,        SPAM_NFC,     "\xcc\x88", "IPv6:",
      "::",   "192.0.2.1", "example.com", "postmaster", "SIZE=1",   "\x01"};
  const size_t np = sizeof pieces / sizeof pieces[0];
  uint32_t seed = 12345;
  int ok = 0;
  for (int iter = 0; iter < 20000; iter++) {
    char in[256];
    size_t n = 0;
    seed = seed * 1103515245u + 12345u;
    int k = 1 + (int)((seed >> 16) % 10);
    for (int j = 0; j < k; j++) {
      seed = seed * 1103515245u + 12345u;
      const char *pc = pieces[(seed >> 16) % np];
      size_t l = strlen(pc);
      if (n + l >= sizeof in)
        break;
      memcpy(in + n, pc, l);
      n += l;
    }
    in[n] = '\0';
    unsigned flags = (unsigned)(iter % 32);
    mf_addr *a = NULL;
    const char *why = NULL;
    int rc = mf_addr_parse_n(in, n, flags, &a, &why);
    if (rc < 0) {
      assert_null(a);
      assert_non_null(why);
      assert_true(why[0] != '\0');
      continue;
    }
    ok++;
    /* formatted back (any form) it parses again to an equal address */
    static const unsigned fmts[] = {MF_ADDR_FMT_BRACKETS,
                                    MF_ADDR_FMT_BRACKETS | MF_ADDR_FMT_ALABEL,
                                    MF_ADDR_FMT_BRACKETS | MF_ADDR_FMT_ULABEL};
    for (size_t f = 0; f < 3; f++) {
      char *out = NULL;
      assert_true(mf_addr_format_alloc(a, fmts[f], &out) >= 0);
      mf_addr *b = NULL;
      rc = mf_addr_parse(out, flags | MF_ADDR_LAX_DOTS, &b, &why);
      if (rc)
        print_error("'%s' -> '%s': %s\n", in, out, why);
      assert_int_equal(rc, 0);
      assert_true(mf_addr_equal(a, b));
      mf_addr_free(b);
      free(out);
    }
    mf_addr_free(a);
  }
  assert_true(ok > 50); /* the generator does reach valid addresses */
}

/* ---- threads ------------------------------------------------------------ */

static const mf_addr *shared_addr;

static void *thread_main(void *arg) {
  (void)arg;
  long bad = 0;
  for (int i = 0; i < 200; i++) {
    mf_addr *a = NULL;
    if (mf_addr_parse("<spam-trap@" SPAM_NFD ".example.com>", 0, &a, NULL)) {
      bad++;
      continue;
    }
    if (!mf_addr_equal(a, shared_addr) ||
        !mf_addr_domain_under(shared_addr, "example.com"))
      bad++;
    char buf[64];
    mf_addr_format(shared_addr, MF_ADDR_FMT_ULABEL, buf, sizeof buf);
    if (strcmp(buf, "spam-trap@" SPAM_NFC ".example.com") != 0)
      bad++;
    mf_addr_free(a);
  }
  return (void *)bad;
}

static void test_threads(void **state) {
  (void)state;
  mf_addr *s = parse_ok("spam-trap@XN--ZCK5B2B.example.com", 0);
  shared_addr = s;
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, thread_main, NULL), 0);
  for (int i = 0; i < 4; i++) {
    void *r;
    assert_int_equal(pthread_join(t[i], &r), 0);
    assert_int_equal((long)r, 0);
  }
  mf_addr_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spam_trap_spellings),
      cmocka_unit_test(test_nfd_umlaut),
      cmocka_unit_test(test_domain_convert),
      cmocka_unit_test(test_malformed_file),
      cmocka_unit_test(test_length_limits),
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_null_and_postmaster),
      cmocka_unit_test(test_literals),
      cmocka_unit_test(test_quoted),
      cmocka_unit_test(test_source_route),
      cmocka_unit_test(test_format_roundtrip),
      cmocka_unit_test(test_format_forms),
      cmocka_unit_test(test_domain_is_under),
      cmocka_unit_test(test_esmtp_params),
      cmocka_unit_test(test_xtext),
      cmocka_unit_test(test_parse_cmd),
      cmocka_unit_test(test_random_input),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
