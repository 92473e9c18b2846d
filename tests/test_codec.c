/* test_codec.c -- the wire codec, byte for byte.
 *
 * 1. Protocol transcripts (tests/data/transcripts/NAME.txt) are replayed through
 *    the decoder and the sans-I/O session: every MTA packet (">") is fed, and
 *    the bytes the session writes must equal the following milter packets
 *    ("<") exactly.  The same packets are also fed one byte at a time.
 * 2. Every encoder against hand-written hex (tests/data/transcripts/
 *    encoders.hex), and parse(encode(x)) == x.
 * 3. Every malformed class returns the right error.
 *
 * Transcript format, one item per line ('#' starts a comment):
 *   > CMD token...     a packet from the MTA
 *   < CMD token...     a packet the milter must answer (in order)
 *   % key value...     filter set-up before the first packet:
 *                      actions HEX | protocol HEX | maxdata N |
 *                      macros STAGE list... | eom ACTION args...
 *   = NAME VALUE       milter_ctx_macro(NAME) must be VALUE ("-" = NULL)
 * Tokens: "text" (C escapes; NUL-terminated on the wire), raw"text" (no
 * NUL), u32:N, u16:N, c:X (one byte).  CMD is the command/reply letter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/session.h"
#include "testutil.h"

/* ---------------------------------------------------------------- parser */

static void put32(milter_buf *b, uint32_t v) {
  uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                  (uint8_t)v};
  milter_buf_append(b, p, 4);
}

/* Parse a quoted string with C escapes starting at *p (at the quote). */
static void parse_quoted(const char **pp, milter_buf *out) {
  const char *p = *pp + 1;
  while (*p && *p != '"') {
    char c = *p++;
    if (c == '\\') {
      c = *p++;
      switch (c) {
      case 'n':
        c = '\n';
        break;
      case 'r':
        c = '\r';
        break;
      case 't':
        c = '\t';
        break;
      case '0':
        c = '\0';
        break;
      case 'x': {
        char hex[3] = {p[0], p[1], 0};
        c = (char)strtoul(hex, NULL, 16);
        p += 2;
        break;
      }
      default:
        break;
      }
    }
    milter_buf_append(out, &c, 1);
  }
  assert_true(*p == '"');
  *pp = p + 1;
}

/* Encode one packet line "CMD tokens..." into wire bytes appended to b. */
static void encode_line(const char *line, milter_buf *b) {
  milter_buf pl;
  milter_buf_init(&pl);
  const char *p = line;
  while (*p == ' ')
    p++;
  uint8_t cmd = (uint8_t)*p++;
  for (;;) {
    while (*p == ' ')
      p++;
    if (*p == '\0' || *p == '\n')
      break;
    if (*p == '"') {
      parse_quoted(&p, &pl);
      milter_buf_append(&pl, "", 1);
    } else if (strncmp(p, "raw\"", 4) == 0) {
      p += 3;
      parse_quoted(&p, &pl);
    } else if (strncmp(p, "u32:", 4) == 0) {
      char *e;
      put32(&pl, (uint32_t)strtoul(p + 4, &e, 0));
      p = e;
    } else if (strncmp(p, "u16:", 4) == 0) {
      char *e;
      unsigned long v = strtoul(p + 4, &e, 0);
      uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
      milter_buf_append(&pl, x, 2);
      p = e;
    } else if (strncmp(p, "c:", 2) == 0) {
      milter_buf_append(&pl, p + 2, 1);
      p += 3;
    } else {
      fail_msg("bad token in transcript line: %s", line);
    }
  }
  assert_int_equal(milter_enc_packet(b, cmd, pl.data, pl.len), 0);
  milter_buf_free(&pl);
}

/* ------------------------------------------------------------ the filter */

#define MAX_EOM 16
static char eom_actions[MAX_EOM][256];
static int n_eom;
static char events[4096];

static void ev(const char *fmt, ...) {
  size_t n = strlen(events);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(events + n, sizeof events - n, fmt, ap);
  va_end(ap);
}

static milter_status f_connect(milter_ctx *c, const milter_connect_info *ci) {
  (void)c;
  ev("C(%s,%c,%u,%s)", ci->hostname, ci->family, ci->port, ci->address);
  return MILTER_CONTINUE;
}
static milter_status f_helo(milter_ctx *c, const char *h) {
  (void)c;
  ev("H(%s)", h);
  return MILTER_CONTINUE;
}
static milter_status f_from(milter_ctx *c, size_t argc,
                            const char *const *argv) {
  (void)c;
  ev("M(%s,%zu)", argv[0], argc);
  return MILTER_CONTINUE;
}
static milter_status f_rcpt(milter_ctx *c, size_t argc,
                            const char *const *argv) {
  (void)c;
  ev("R(%s,%zu)", argv[0], argc);
  return MILTER_CONTINUE;
}
static milter_status f_data(milter_ctx *c) {
  (void)c;
  ev("T");
  return MILTER_CONTINUE;
}
static milter_status f_header(milter_ctx *c, const char *n, const char *v) {
  (void)c;
  ev("L(%s:%s)", n, v);
  return MILTER_CONTINUE;
}
static milter_status f_eoh(milter_ctx *c) {
  (void)c;
  ev("N");
  return MILTER_CONTINUE;
}
static milter_status f_body(milter_ctx *c, const uint8_t *p, size_t n) {
  (void)c;
  (void)p;
  ev("B(%zu)", n);
  return MILTER_CONTINUE;
}
static milter_status f_eom(milter_ctx *c) {
  ev("E");
  for (int i = 0; i < n_eom; i++) {
    char a[256];
    snprintf(a, sizeof a, "%s", eom_actions[i]);
    char *arg[4] = {0};
    char *save = NULL;
    char *kind = strtok_r(a, " ", &save);
    for (int k = 0; k < 4; k++)
      arg[k] = strtok_r(NULL, " ", &save);
    int rc = -1;
    if (strcmp(kind, "addheader") == 0)
      rc = milter_ctx_addheader(c, arg[0], arg[1]);
    else if (strcmp(kind, "insheader") == 0)
      rc = milter_ctx_insheader(c, (uint32_t)atoi(arg[0]), arg[1], arg[2]);
    else if (strcmp(kind, "chgheader") == 0)
      rc = milter_ctx_chgheader(c, arg[0], (uint32_t)atoi(arg[1]),
                                arg[2] ? arg[2] : "");
    else if (strcmp(kind, "addrcpt") == 0)
      rc = milter_ctx_addrcpt(c, arg[0], arg[1]);
    else if (strcmp(kind, "delrcpt") == 0)
      rc = milter_ctx_delrcpt(c, arg[0]);
    else if (strcmp(kind, "chgfrom") == 0)
      rc = milter_ctx_chgfrom(c, arg[0], arg[1]);
    else if (strcmp(kind, "quarantine") == 0)
      rc = milter_ctx_quarantine(c, arg[0]);
    else if (strcmp(kind, "replacebody") == 0) {
      size_t n = (size_t)atol(arg[0]);
      char *body = malloc(n);
      memset(body, 'x', n);
      rc = milter_ctx_replacebody(c, body, n);
      free(body);
    } else if (strcmp(kind, "reply") == 0) {
      rc = milter_ctx_setreply(c, arg[0], arg[1], arg[2]);
      assert_int_equal(rc, 0);
      return MILTER_REJECT;
    }
    assert_int_equal(rc, 0);
  }
  return MILTER_ACCEPT;
}
static void f_abort(milter_ctx *c) {
  (void)c;
  ev("A");
}
static void f_close(milter_ctx *c) {
  (void)c;
  ev("Q");
}

static void t_wake(milter_ctx *c) {
  (void)c;
}

/* ------------------------------------------------------------ the replay */

static char macro_lists[MILTER_M_COUNT][256];

/* Replay one transcript; chunk = bytes per feed call (0: per packet). */
static void replay(const char *name, size_t chunk) {
  char *text = tu_read_file(name, NULL);
  assert_non_null(text);
  milter_filter_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.name = "transcript";
  desc.cb =
      (milter_callbacks){f_connect, f_helo, f_from, f_rcpt, f_data,  NULL,
                         f_header,  f_eoh,  f_body, f_eom,  f_abort, f_close};
  desc.actions_wanted = MILTER_ACT_ALL & ~MILTER_ACT_SETSYMLIST;
  n_eom = 0;
  events[0] = '\0';
  memset(macro_lists, 0, sizeof macro_lists);
  milter_session_env env;
  memset(&env, 0, sizeof env);
  env.wake = t_wake;
  env.log_level = MILTER_LOG_ERROR;
  env.log = NULL;
  milter_ctx ctx;
  int inited = 0;
  milter_buf in, want;
  milter_buf_init(&in);
  milter_buf_init(&want);
  int line_no = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save)) {
    line_no++;
    if (line[0] == '#' || line[0] == '\0')
      continue;
    if (line[0] == '%') {
      char key[32], rest[256] = "";
      assert_true(sscanf(line + 1, "%31s %255[^\n]", key, rest) >= 1);
      if (strcmp(key, "actions") == 0)
        desc.actions_wanted = (uint32_t)strtoul(rest, NULL, 0);
      else if (strcmp(key, "protocol") == 0)
        desc.protocol_wanted = (uint32_t)strtoul(rest, NULL, 0);
      else if (strcmp(key, "maxdata") == 0)
        desc.max_data_size = (uint32_t)strtoul(rest, NULL, 0);
      else if (strcmp(key, "macros") == 0) {
        int st = rest[0] - '0';
        snprintf(macro_lists[st], sizeof macro_lists[st], "%s", rest + 2);
        desc.macros[st] = macro_lists[st];
      } else if (strcmp(key, "eom") == 0)
        snprintf(eom_actions[n_eom++], sizeof eom_actions[0], "%s", rest);
      else
        fail_msg("%s:%d: unknown directive", name, line_no);
      continue;
    }
    if (!inited) {
      milter_session_init(&ctx, &desc, &env, NULL, "transcript");
      inited = 1;
    }
    if (line[0] == '>') {
      /* Output so far must have matched before the MTA speaks again. */
      assert_int_equal(ctx.out.len, want.len);
      assert_memory_equal(ctx.out.data, want.data, want.len);
      milter_buf_consume(&ctx.out, ctx.out.len);
      want.len = 0;
      in.len = 0;
      encode_line(line + 1, &in);
      size_t step = chunk ? chunk : in.len;
      for (size_t off = 0; off < in.len; off += step) {
        size_t n = in.len - off < step ? in.len - off : step;
        int r = milter_session_feed(&ctx, in.data + off, n);
        if (r < 0) /* QUIT ends the session */
          assert_int_equal(r, MILTER_E_EOF);
      }
    } else if (line[0] == '<') {
      encode_line(line + 1, &want);
    } else if (line[0] == '=') {
      char mname[64], mval[256];
      assert_int_equal(sscanf(line + 1, "%63s %255s", mname, mval), 2);
      const char *got = milter_ctx_macro(&ctx, mname);
      if (strcmp(mval, "-") == 0) {
        if (got != NULL)
          fail_msg("%s:%d: macro %s = %s, want none", name, line_no, mname,
                   got);
      } else {
        if (got == NULL || strcmp(got, mval) != 0)
          fail_msg("%s:%d: macro %s = %s, want %s", name, line_no, mname,
                   got ? got : "(none)", mval);
      }
    }
  }
  if (ctx.out.len != want.len ||
      (want.len && memcmp(ctx.out.data, want.data, want.len) != 0)) {
    fprintf(stderr, "%s: final output differs (%zu vs %zu bytes)\n", name,
            ctx.out.len, want.len);
    fail();
  }
  milter_session_free(&ctx);
  milter_buf_free(&in);
  milter_buf_free(&want);
  free(text);
}

#define TRANSCRIPT_TEST(fn, file)                                              \
  static void fn(void **state) {                                               \
    (void)state;                                                               \
    replay("transcripts/" file, 0);                                            \
    replay("transcripts/" file, 1);                                            \
    replay("transcripts/" file, 7);                                            \
  }

TRANSCRIPT_TEST(test_neg_v2, "neg_v2.txt")
TRANSCRIPT_TEST(test_neg_v4, "neg_v4.txt")
TRANSCRIPT_TEST(test_neg_v6, "neg_v6.txt")
TRANSCRIPT_TEST(test_neg_256k, "neg_256k.txt")
TRANSCRIPT_TEST(test_neg_1m, "neg_1m.txt")
TRANSCRIPT_TEST(test_full_transaction, "full_transaction.txt")
TRANSCRIPT_TEST(test_two_with_abort, "two_with_abort.txt")
TRANSCRIPT_TEST(test_two_without_abort, "two_without_abort.txt")
TRANSCRIPT_TEST(test_quit_nc, "quit_nc.txt")
TRANSCRIPT_TEST(test_macros, "macros.txt")
TRANSCRIPT_TEST(test_actions, "actions.txt")

/* ------------------------------------------------------------ encoders */

static void hex_of(const milter_buf *b, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < b->len && o + 3 < cap; i++)
    o += (size_t)snprintf(out + o, cap - o, "%02x", b->data[i]);
  out[o] = '\0';
}

/* encoders.hex: "name hex" lines; each name is encoded below. */
static void test_encoders_byte_exact(void **state) {
  (void)state;
  char *text = tu_read_file("transcripts/encoders.hex", NULL);
  assert_non_null(text);
  int checked = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    if (line[0] == '#' || line[0] == '\0')
      continue;
    char name[64], hex[1024];
    assert_int_equal(sscanf(line, "%63s %1023s", name, hex), 2);
    milter_buf b;
    milter_buf_init(&b);
    int rc = -99;
    const char *args2[] = {"SIZE=10", "BODY=8BITMIME"};
    const char *mac[] = {"j", "mx", "{daemon_name}", "smtpd"};
    const char *sym[MILTER_M_COUNT] = {NULL, NULL, "{auth_authen}", NULL, NULL,
                                       NULL, NULL};
    if (!strcmp(name, "optneg"))
      rc = milter_enc_optneg(&b, 6, 0x1ff, 0x1fffff);
    else if (!strcmp(name, "optneg_reply"))
      rc = milter_enc_optneg_reply(&b, 6, 0x101, 0x100000, sym);
    else if (!strcmp(name, "macro"))
      rc = milter_enc_macro(&b, 'C', 2, mac);
    else if (!strcmp(name, "connect4"))
      rc = milter_enc_connect(&b, "h", '4', 25, "1.2.3.4");
    else if (!strcmp(name, "connectU"))
      rc = milter_enc_connect(&b, "h", 'U', 0, NULL);
    else if (!strcmp(name, "helo"))
      rc = milter_enc_helo(&b, "ehlo");
    else if (!strcmp(name, "mail"))
      rc = milter_enc_envaddr(&b, 'M', "<a@b>", 2, args2);
    else if (!strcmp(name, "rcpt"))
      rc = milter_enc_envaddr(&b, 'R', "<c@d>", 0, NULL);
    else if (!strcmp(name, "header"))
      rc = milter_enc_header(&b, "To", " x");
    else if (!strcmp(name, "body"))
      rc = milter_enc_body(&b, "ab", 2);
    else if (!strcmp(name, "unknown"))
      rc = milter_enc_unknown(&b, "XY");
    else if (!strcmp(name, "abort"))
      rc = milter_enc_simple(&b, 'A');
    else if (!strcmp(name, "eob"))
      rc = milter_enc_simple(&b, 'E');
    else if (!strcmp(name, "accept"))
      rc = milter_enc_reply_simple(&b, 'a');
    else if (!strcmp(name, "continue"))
      rc = milter_enc_reply_simple(&b, 'c');
    else if (!strcmp(name, "reject"))
      rc = milter_enc_reply_simple(&b, 'r');
    else if (!strcmp(name, "tempfail"))
      rc = milter_enc_reply_simple(&b, 't');
    else if (!strcmp(name, "discard"))
      rc = milter_enc_reply_simple(&b, 'd');
    else if (!strcmp(name, "skip"))
      rc = milter_enc_reply_simple(&b, 's');
    else if (!strcmp(name, "progress"))
      rc = milter_enc_reply_simple(&b, 'p');
    else if (!strcmp(name, "replycode"))
      rc = milter_enc_replycode(&b, "550", "5.7.1", "no");
    else if (!strcmp(name, "replycode_ml"))
      rc = milter_enc_replycode(&b, "451", "4.3.0", "a\nb%");
    else if (!strcmp(name, "replycode_noxcode"))
      rc = milter_enc_replycode(&b, "550", NULL, "x");
    else if (!strcmp(name, "quarantine"))
      rc = milter_enc_quarantine(&b, "spam");
    else if (!strcmp(name, "addheader"))
      rc = milter_enc_addheader(&b, "X", "1");
    else if (!strcmp(name, "insheader"))
      rc = milter_enc_insheader(&b, 2, "X", "1");
    else if (!strcmp(name, "chgheader"))
      rc = milter_enc_chgheader(&b, 1, "X", "1");
    else if (!strcmp(name, "delheader"))
      rc = milter_enc_chgheader(&b, 3, "X", "");
    else if (!strcmp(name, "addrcpt"))
      rc = milter_enc_addrcpt(&b, "<r>", NULL);
    else if (!strcmp(name, "addrcpt_par"))
      rc = milter_enc_addrcpt(&b, "<r>", "N=1");
    else if (!strcmp(name, "delrcpt"))
      rc = milter_enc_delrcpt(&b, "<r>");
    else if (!strcmp(name, "chgfrom"))
      rc = milter_enc_chgfrom(&b, "<f>", NULL);
    else if (!strcmp(name, "chgfrom_args"))
      rc = milter_enc_chgfrom(&b, "<f>", "A=B");
    else if (!strcmp(name, "replbody_chunks"))
      rc = milter_enc_replbody(&b, "abcde", 5, 2);
    else if (!strcmp(name, "replbody_empty"))
      rc = milter_enc_replbody(&b, "", 0, 65535);
    else
      fail_msg("unknown encoder %s", name);
    assert_int_equal(rc, 0);
    char got[2048];
    hex_of(&b, got, sizeof got);
    if (strcmp(got, hex) != 0)
      fail_msg("%s: got %s want %s", name, got, hex);
    /* Every packet parses back (as a command or as a reply). */
    milter_decoder d;
    milter_decoder_init(&d, 0);
    size_t off = 0, used;
    milter_packet pkt;
    while (off < b.len) {
      assert_int_equal(
          milter_decoder_feed(&d, b.data + off, b.len - off, &used, &pkt), 1);
      off += used;
      milter_cmd c;
      milter_reply r;
      const char *why;
      assert_true(milter_parse_cmd(&pkt, &c, &why) == 0 ||
                  milter_parse_reply(&pkt, &r, &why) == 0);
    }
    milter_decoder_free(&d);
    milter_buf_free(&b);
    checked++;
  }
  assert_int_equal(checked, 35);
  free(text);
}

static void test_parse_roundtrip(void **state) {
  (void)state;
  milter_buf b;
  milter_buf_init(&b);
  const char *argv[] = {"SIZE=1"};
  assert_int_equal(milter_enc_connect(&b, "host", '6', 4321, "::1"), 0);
  assert_int_equal(milter_enc_envaddr(&b, 'M', "<a@b>", 1, argv), 0);
  assert_int_equal(milter_enc_header(&b, "Subject", " hi\n\tthere"), 0);
  assert_int_equal(milter_enc_insheader(&b, 7, "X-A", " v"), 0);
  assert_int_equal(milter_enc_addrcpt(&b, "<r@x>", "NOTIFY=NEVER"), 0);
  const char *sym[MILTER_M_COUNT] = {"j", NULL, "{auth_authen} i"};
  assert_int_equal(milter_enc_optneg_reply(&b, 6, 0x1ff, 0x80, sym), 0);
  milter_decoder d;
  milter_decoder_init(&d, 0);
  size_t off = 0, used;
  milter_packet p;
  milter_cmd c;
  milter_reply r;
  const char *why;
  assert_int_equal(milter_decoder_feed(&d, b.data, b.len, &used, &p), 1);
  off += used;
  assert_int_equal(milter_parse_cmd(&p, &c, &why), 0);
  assert_string_equal(c.u.connect.hostname, "host");
  assert_int_equal(c.u.connect.family, '6');
  assert_int_equal(c.u.connect.port, 4321);
  assert_string_equal(c.u.connect.address, "::1");
  assert_int_equal(
      milter_decoder_feed(&d, b.data + off, b.len - off, &used, &p), 1);
  off += used;
  assert_int_equal(milter_parse_cmd(&p, &c, &why), 0);
  assert_int_equal(c.u.args.count, 2);
  const char *cur = NULL;
  assert_string_equal(milter_strlist_next(&c.u.args, &cur), "<a@b>");
  assert_string_equal(milter_strlist_next(&c.u.args, &cur), "SIZE=1");
  assert_null(milter_strlist_next(&c.u.args, &cur));
  assert_int_equal(
      milter_decoder_feed(&d, b.data + off, b.len - off, &used, &p), 1);
  off += used;
  assert_int_equal(milter_parse_cmd(&p, &c, &why), 0);
  assert_string_equal(c.u.header.name, "Subject");
  assert_string_equal(c.u.header.value, " hi\n\tthere");
  assert_int_equal(
      milter_decoder_feed(&d, b.data + off, b.len - off, &used, &p), 1);
  off += used;
  assert_int_equal(milter_parse_reply(&p, &r, &why), 0);
  assert_int_equal(r.u.header.index, 7);
  assert_string_equal(r.u.header.name, "X-A");
  assert_string_equal(r.u.header.value, " v");
  assert_int_equal(
      milter_decoder_feed(&d, b.data + off, b.len - off, &used, &p), 1);
  off += used;
  assert_int_equal(milter_parse_reply(&p, &r, &why), 0);
  assert_int_equal(r.code, '2');
  assert_string_equal(r.u.rcpt.addr, "<r@x>");
  assert_string_equal(r.u.rcpt.args, "NOTIFY=NEVER");
  assert_int_equal(
      milter_decoder_feed(&d, b.data + off, b.len - off, &used, &p), 1);
  off += used;
  assert_int_equal(milter_parse_reply(&p, &r, &why), 0);
  assert_int_equal(r.u.optneg.actions, 0x1ff);
  assert_string_equal(r.u.optneg.symlist[0], "j");
  assert_null(r.u.optneg.symlist[1]);
  assert_string_equal(r.u.optneg.symlist[2], "{auth_authen} i");
  assert_int_equal(off, b.len);
  milter_decoder_free(&d);
  milter_buf_free(&b);
}

/* ------------------------------------------------------------ malformed */

static int decode_one(const uint8_t *bytes, size_t n, uint32_t max,
                      milter_cmd *c, const char **why) {
  milter_decoder d;
  milter_decoder_init(&d, max);
  size_t used;
  milter_packet p;
  int r = milter_decoder_feed(&d, bytes, n, &used, &p);
  if (r == 1)
    r = milter_parse_cmd(&p, c, why);
  else if (r == 0)
    r = MILTER_E_AGAIN;
  milter_decoder_free(&d);
  return r;
}

static void test_malformed(void **state) {
  (void)state;
  milter_cmd c;
  const char *why = NULL;
  static const uint8_t zero[] = {0, 0, 0, 0};
  assert_int_equal(decode_one(zero, 4, 0, &c, &why), MILTER_E_PROTO);
  static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 'B'};
  assert_int_equal(decode_one(huge, 5, 0, &c, &why), MILTER_E_TOOBIG);
  static const uint8_t trunc[] = {0, 0, 0, 9, 'H', 'a', 'b'};
  assert_int_equal(decode_one(trunc, 7, 0, &c, &why), MILTER_E_AGAIN);
#define PKT(...)                                                               \
  ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})
  /* HELO without NUL */
  why = NULL;
  assert_int_equal(decode_one(PKT(0, 0, 0, 3, 'H', 'a', 'b'), 0, &c, &why),
                   MILTER_E_PROTO);
  assert_non_null(why);
  /* connect, bad family */
  why = NULL;
  assert_int_equal(
      decode_one(PKT(0, 0, 0, 8, 'C', 'h', 0, 'X', 0, 1, 'a', 0), 0, &c, &why),
      MILTER_E_PROTO);
  assert_string_equal(why, "bad address family");
  /* connect, port cut short */
  assert_int_equal(
      decode_one(PKT(0, 0, 0, 5, 'C', 'h', 0, '4', 0), 0, &c, &why),
      MILTER_E_PROTO);
  /* optneg shorter than 12 */
  assert_int_equal(decode_one(PKT(0, 0, 0, 5, 'O', 0, 0, 0, 6), 0, &c, &why),
                   MILTER_E_PROTO);
  /* unknown command */
  assert_int_equal(decode_one(PKT(0, 0, 0, 1, 'Z'), 0, &c, &why),
                   MILTER_E_PROTO);
  assert_string_equal(why, "unknown command");
  /* header with one string */
  assert_int_equal(decode_one(PKT(0, 0, 0, 3, 'L', 'X', 0), 0, &c, &why),
                   MILTER_E_PROTO);
  /* macro: name without value */
  assert_int_equal(decode_one(PKT(0, 0, 0, 4, 'D', 'C', 'j', 0), 0, &c, &why),
                   MILTER_E_PROTO);
  /* MAIL with no string */
  assert_int_equal(decode_one(PKT(0, 0, 0, 1, 'M'), 0, &c, &why),
                   MILTER_E_PROTO);
  /* Fine: 'U' connect without address; empty macro packet. */
  assert_int_equal(decode_one(PKT(0, 0, 0, 4, 'C', 'h', 0, 'U'), 0, &c, &why),
                   0);
  assert_int_equal(c.u.connect.family, 'U');
  assert_int_equal(decode_one(PKT(0, 0, 0, 2, 'D', 'H'), 0, &c, &why), 0);
  /* Encoder argument checks. */
  milter_buf b;
  milter_buf_init(&b);
  assert_int_equal(milter_enc_replycode(&b, "250", NULL, "x"), MILTER_E_INVAL);
  assert_int_equal(milter_enc_replycode(&b, "550", "4.7.1", "x"),
                   MILTER_E_INVAL);
  assert_int_equal(milter_enc_replycode(&b, "550", "5.7", "x"), MILTER_E_INVAL);
  char big[1000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(milter_enc_replycode(&b, "550", NULL, big), MILTER_E_INVAL);
  char many[33 * 2 + 1];
  for (int i = 0; i < 33; i++) {
    many[2 * i] = 'a';
    many[2 * i + 1] = '\n';
  }
  many[65] = '\0';
  assert_int_equal(milter_enc_replycode(&b, "550", NULL, many), MILTER_E_INVAL);
  assert_int_equal(milter_enc_quarantine(&b, "two\nlines"), MILTER_E_INVAL);
  assert_int_equal(milter_enc_connect(&b, "h", 'Q', 0, "x"), MILTER_E_INVAL);
  assert_int_equal(b.len, 0);
  milter_buf_free(&b);
}

/* The decoder holds no memory while idle and copies only partial packets. */
/* stream_cmd: a BODY packet that straddles slices comes out piece by piece
 * (first MORE, then CONT|MORE, last CONT) with no buffer held; one that fits
 * its slice, and any other command, come out whole. */
static void test_decoder_stream(void **state) {
  (void)state;
  milter_buf b;
  milter_buf_init(&b);
  static uint8_t body[100000];
  for (size_t i = 0; i < sizeof body; i++)
    body[i] = (uint8_t)(i * 7);
  assert_int_equal(milter_enc_body(&b, body, sizeof body), 0);
  assert_int_equal(milter_enc_header(&b, "Subject", "straddles"), 0);
  assert_int_equal(milter_enc_body(&b, "tiny", 4), 0);
  milter_decoder d;
  milter_decoder_init(&d, MILTER_DATA_1M + 1);
  d.stream_cmd = MILTER_CMD_BODY;
  static uint8_t got[100000];
  size_t got_len = 0, npieces = 0, whole = 0;
  int saw_header = 0;
  for (size_t off = 0; off < b.len;) {
    size_t n = b.len - off < 4093 ? b.len - off : 4093; /* odd slices */
    size_t pos = 0;
    while (pos < n) {
      size_t used = 0;
      milter_packet p;
      int r = milter_decoder_feed(&d, b.data + off + pos, n - pos, &used, &p);
      pos += used;
      assert_true(r >= 0);
      if (r == 0)
        break;
      if (p.cmd == MILTER_CMD_BODY && p.frag != 0) {
        assert_null(d.part);
        if (npieces == 0)
          assert_int_equal(p.frag, MILTER_FRAG_MORE);
        else
          assert_true(p.frag & MILTER_FRAG_CONT);
        memcpy(got + got_len, p.data, p.len);
        got_len += p.len;
        npieces++;
        if (!(p.frag & MILTER_FRAG_MORE))
          assert_int_equal(got_len, sizeof body);
      } else if (p.cmd == MILTER_CMD_HEADER) {
        assert_int_equal(p.frag, 0);
        saw_header = 1;
      } else {
        assert_int_equal(p.cmd, MILTER_CMD_BODY);
        assert_int_equal(p.frag, 0);
        assert_int_equal(p.len, 4);
        whole++;
      }
    }
    off += n;
  }
  assert_int_equal(got_len, sizeof body);
  assert_memory_equal(got, body, sizeof body);
  assert_true(npieces >= sizeof body / 4093);
  assert_true(saw_header);
  assert_int_equal(whole, 1);
  milter_decoder_free(&d);
  milter_buf_free(&b);
}

static void test_decoder_memory(void **state) {
  (void)state;
  milter_buf b;
  milter_buf_init(&b);
  assert_int_equal(milter_enc_header(&b, "A", "b"), 0);
  assert_int_equal(milter_enc_header(&b, "C", "d"), 0);
  milter_decoder d;
  milter_decoder_init(&d, 0);
  size_t used;
  milter_packet p;
  assert_int_equal(milter_decoder_feed(&d, b.data, b.len, &used, &p), 1);
  assert_ptr_equal(p.data, b.data + 5); /* zero-copy */
  assert_null(d.part);
  /* Second packet split: 3 bytes, then the rest. */
  size_t off = used;
  assert_int_equal(milter_decoder_feed(&d, b.data + off, 3, &used, &p), 0);
  assert_int_equal(milter_decoder_busy(&d), 1);
  off += used;
  assert_int_equal(milter_decoder_feed(&d, b.data + off, 4, &used, &p), 0);
  off += used;
  assert_non_null(d.part);
  assert_int_equal(
      milter_decoder_feed(&d, b.data + off, b.len - off, &used, &p), 1);
  assert_memory_equal(p.data, "C\0d\0", 4);
  assert_int_equal(milter_decoder_busy(&d), 0);
  assert_int_equal(milter_decoder_feed(&d, NULL, 0, &used, &p), 0);
  assert_null(d.part); /* released at the next call */
  milter_decoder_free(&d);
  milter_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_neg_v2),
      cmocka_unit_test(test_neg_v4),
      cmocka_unit_test(test_neg_v6),
      cmocka_unit_test(test_neg_256k),
      cmocka_unit_test(test_neg_1m),
      cmocka_unit_test(test_full_transaction),
      cmocka_unit_test(test_two_with_abort),
      cmocka_unit_test(test_two_without_abort),
      cmocka_unit_test(test_quit_nc),
      cmocka_unit_test(test_macros),
      cmocka_unit_test(test_actions),
      cmocka_unit_test(test_encoders_byte_exact),
      cmocka_unit_test(test_parse_roundtrip),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_decoder_stream),
      cmocka_unit_test(test_decoder_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
