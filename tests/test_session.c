/* test_session.c -- the sans-I/O milter session, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <uv.h>

#include "core/post.h"
#include "core/session.h"
#include "testutil.h"

/* ---- recording filter --------------------------------------------------- */

static char events[4096];
static char logbuf[8192];
static int woke;
static milter_status next_status[256]; /* per command letter; default 0 */
static int eom_actions;                /* 1: eom performs actions */

static void ev(const char *fmt, ...) {
  size_t n = strlen(events);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(events + n, sizeof events - n, fmt, ap);
  va_end(ap);
}

static void t_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  (void)lvl;
  size_t n = strlen(logbuf);
  snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

static void t_wake(milter_ctx *ctx) {
  (void)ctx;
  woke++;
}

static milter_status f_connect(milter_ctx *ctx, const milter_connect_info *ci) {
  const char *j = milter_ctx_macro(ctx, "j");
  ev("C(%s,%c,%u,%s,j=%s)", ci->hostname, ci->family, ci->port, ci->address,
     j ? j : "-");
  return next_status['C'];
}
static milter_status f_helo(milter_ctx *ctx, const char *h) {
  (void)ctx;
  ev("H(%s)", h);
  return next_status['H'];
}
static milter_status f_mail(milter_ctx *ctx, size_t argc,
                            const char *const *argv) {
  (void)ctx;
  ev("M(");
  for (size_t i = 0; i < argc; i++)
    ev("%s%s", i ? "," : "", argv[i]);
  ev(")");
  return next_status['M'];
}
static milter_status f_rcpt(milter_ctx *ctx, size_t argc,
                            const char *const *argv) {
  (void)ctx;
  ev("R(%s,%zu)", argv[0], argc);
  return next_status['R'];
}
static milter_status f_data(milter_ctx *ctx) {
  (void)ctx;
  ev("T");
  return next_status['T'];
}
static milter_status f_unknown(milter_ctx *ctx, const char *line) {
  (void)ctx;
  ev("U(%s)", line);
  return next_status['U'];
}
static milter_status f_header(milter_ctx *ctx, const char *n, const char *v) {
  (void)ctx;
  ev("L(%s:%s)", n, v);
  return next_status['L'];
}
static milter_status f_eoh(milter_ctx *ctx) {
  (void)ctx;
  ev("N");
  return next_status['N'];
}
static milter_status f_body(milter_ctx *ctx, const uint8_t *p, size_t n) {
  (void)ctx;
  ev("B(%.*s)", (int)(n > 20 ? 20 : n), (const char *)p);
  return next_status['B'];
}
static milter_status f_eom(milter_ctx *ctx) {
  const char *i = milter_ctx_macro(ctx, "{i}");
  ev("E(i=%s)", i ? i : "-");
  if (eom_actions) {
    assert_int_equal(milter_ctx_addheader(ctx, "X-A", "1"), 0);
    assert_int_equal(milter_ctx_replacebody(ctx, "new", 3), 0);
    assert_int_equal(milter_ctx_chgheader(ctx, "Subject", 1, NULL), 0);
    assert_int_equal(milter_ctx_quarantine(ctx, "q"), 0);
  }
  return next_status['E'];
}
static void f_abort(milter_ctx *ctx) {
  (void)ctx;
  ev("A");
}
static void f_close(milter_ctx *ctx) {
  (void)ctx;
  ev("X");
}

static milter_filter_desc full_desc(void) {
  milter_filter_desc d;
  memset(&d, 0, sizeof d);
  d.name = "t";
  d.cb.connect = f_connect;
  d.cb.helo = f_helo;
  d.cb.envfrom = f_mail;
  d.cb.envrcpt = f_rcpt;
  d.cb.data = f_data;
  d.cb.unknown = f_unknown;
  d.cb.header = f_header;
  d.cb.eoh = f_eoh;
  d.cb.body = f_body;
  d.cb.eom = f_eom;
  d.cb.abort = f_abort;
  d.cb.close = f_close;
  d.actions_wanted = MILTER_ACT_ALL;
  return d;
}

static milter_session_env env;
static milter_filter_desc desc;
static milter_ctx ctx;

static int setup(void **state) {
  (void)state;
  events[0] = logbuf[0] = '\0';
  woke = 0;
  eom_actions = 0;
  memset(next_status, 0, sizeof next_status);
  memset(&env, 0, sizeof env);
  env.wake = t_wake;
  env.log = t_log;
  env.log_level = MILTER_LOG_DEBUG;
  desc = full_desc();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  milter_session_free(&ctx);
  return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static milter_buf in;

static void start(void) {
  milter_session_init(&ctx, &desc, &env, NULL, "test-peer");
  milter_buf_init(&in);
}

/* Feed what was encoded into `in`; returns the session's result. */
static int feed(void) {
  int r = milter_session_feed(&ctx, in.data, in.len);
  milter_buf_free(&in);
  return r;
}

/* Reply codes in ctx.out as a string ("Occa"), consumed.  The last optneg
 * reply and the payload of every reply are kept for inspection. */
static milter_optneg last_neg;
static size_t last_neg_len;
static char rtext[4][600];
static size_t rtext_n;

static const char *replies(void) {
  static char codes[512];
  size_t n = 0;
  milter_decoder d;
  milter_decoder_init(&d, MILTER_DATA_1M + 1);
  size_t off = 0;
  rtext_n = 0;
  while (off < ctx.out.len) {
    size_t used;
    milter_packet p;
    int r = milter_decoder_feed(&d, ctx.out.data + off, ctx.out.len - off,
                                &used, &p);
    off += used;
    if (r != 1)
      break;
    milter_reply rep;
    const char *why = NULL;
    assert_int_equal(milter_parse_reply(&p, &rep, &why), 0);
    if (rep.code == MILTER_REPLY_OPTNEG) {
      last_neg = rep.u.optneg;
      last_neg_len = p.len;
    }
    if (rtext_n < 4 && p.len < sizeof rtext[0]) {
      memcpy(rtext[rtext_n], p.data, p.len);
      rtext[rtext_n][p.len] = '\0';
      rtext_n++;
    }
    if (n + 1 < sizeof codes)
      codes[n++] = (char)p.cmd;
  }
  codes[n] = '\0';
  milter_decoder_free(&d);
  ctx.out.len = 0;
  return codes;
}

static void neg(uint32_t v, uint32_t act, uint32_t proto) {
  assert_int_equal(milter_enc_optneg(&in, v, act, proto), 0);
}

static void macro(uint8_t cmd, const char *n, const char *v) {
  const char *nv[2] = {n, v};
  assert_int_equal(milter_enc_macro(&in, cmd, 1, nv), 0);
}

static void connect_helo(void) {
  macro('C', "j", "mx.example");
  assert_int_equal(
      milter_enc_connect(&in, "client.example", '4', 25, "192.0.2.1"), 0);
  assert_int_equal(milter_enc_helo(&in, "helo.example"), 0);
}

static void message(const char *from) {
  const char *args[1] = {"SIZE=10"};
  macro('M', "{mail_addr}", from);
  assert_int_equal(milter_enc_envaddr(&in, 'M', from, 1, args), 0);
  macro('R', "i", "QID1");
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<r@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'T'), 0);
  assert_int_equal(milter_enc_header(&in, "Subject", " hi"), 0);
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  assert_int_equal(milter_enc_body(&in, "body\r\n", 6), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
}

#define ALLP (MILTER_P_ALL_STEPS)

/* ---- tests -------------------------------------------------------------- */

static void test_full_transaction(void **state) {
  (void)state;
  eom_actions = 1;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O"
                                 "cccccccc"
                                 "hmqb"
                                 "c");
  assert_int_equal(last_neg.version, 6);
  assert_int_equal(last_neg.actions, MILTER_ACT_ALL & ~MILTER_ACT_SETSYMLIST);
  /* No NO* bits (every callback set), SKIP offered and taken. */
  assert_int_equal(last_neg.protocol, MILTER_P_SKIP);
  assert_string_equal(events, "C(client.example,4,25,192.0.2.1,j=mx.example)"
                              "H(helo.example)M(<a@x>,SIZE=10)R(<r@x>,1)T"
                              "L(Subject: hi)NB(body\r\n)E(i=QID1)");
  /* Replies of one feed are batched: nothing woke the glue. */
  assert_int_equal(woke, 0);
  /* Message macros are gone after EOM; connection macros stay. */
  assert_null(milter_ctx_macro(&ctx, "i"));
  assert_null(milter_ctx_macro(&ctx, "mail_addr"));
  assert_string_equal(milter_ctx_macro(&ctx, "{j}"), "mx.example");
  assert_int_equal(milter_ctx_data_size(&ctx), MILTER_DATA_64K);
  assert_int_equal(milter_ctx_version(&ctx), 6);
  assert_int_equal(milter_enc_simple(&in, 'Q'), 0);
  assert_int_equal(feed(), MILTER_E_EOF);
  assert_string_equal(replies(), "");
  assert_int_equal(milter_session_gone(&ctx), 0);
  assert_non_null(strstr(events, "E(i=QID1)X"));
  assert_null(strstr(events, "XX")); /* close once */
}

static void test_byte_by_byte(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  milter_buf all = in;
  milter_buf_init(&in);
  for (size_t i = 0; i < all.len; i++)
    assert_int_equal(milter_session_feed(&ctx, all.data + i, 1), 0);
  milter_buf_free(&all);
  assert_string_equal(replies(), "O"
                                 "ccccccccc");
  assert_non_null(strstr(events, "E(i=QID1)"));
}

/* MILTER_DESC_STREAM_BODY: a body packet fed byte by byte reaches the body
 * callback in pieces as they come, with one reply per packet; the decoder
 * keeps no packet buffer; a SKIP from a piece answers the packet and spares
 * the callback the rest. */
static size_t piece_bytes, pieces;
static milter_status f_body_count(milter_ctx *c, const uint8_t *p, size_t n) {
  (void)c;
  (void)p;
  pieces++;
  piece_bytes += n;
  return next_status['B'];
}

static void stream_one(milter_status body_status, const char *want) {
  desc.flags = MILTER_DESC_STREAM_BODY;
  desc.cb.body = f_body_count;
  next_status['B'] = body_status;
  piece_bytes = pieces = 0;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<r@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  static uint8_t body[3000];
  memset(body, 'x', sizeof body);
  assert_int_equal(milter_enc_body(&in, body, sizeof body), 0);
  assert_int_equal(milter_enc_body(&in, body, 10), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  milter_buf all = in;
  milter_buf_init(&in);
  for (size_t i = 0; i < all.len; i++) {
    assert_int_equal(milter_session_feed(&ctx, all.data + i, 1), 0);
    /* small packets are collected, the 3000-byte BODY is not */
    assert_true(ctx.in == NULL || ctx.in->dec.part_cap < 1000);
    if (ctx.in != NULL && ctx.in->dec.streaming)
      assert_int_equal(ctx.in->dec.stream_cmd, MILTER_CMD_BODY);
  }
  milter_buf_free(&all);
  assert_string_equal(replies(), want);
  milter_session_free(&ctx);
  desc.flags = 0;
}

static void test_stream_body(void **state) {
  (void)state;
  /* OPTNEG; CONNECT, HELO, MAIL, RCPT, EOH; two BODY; EOM */
  stream_one(MILTER_CONTINUE, "Occccc" "cc" "c");
  assert_int_equal(piece_bytes, 3010);
  assert_true(pieces >= 3000); /* one byte at a time */
  /* SKIP from the first piece answers the first packet; the callback sees
   * no more of it, and the MTA (SKIP offered) sends no more body */
  stream_one(MILTER_SKIP, "Occccc" "ss" "c");
  assert_int_equal(pieces, 2); /* first piece of each packet */
}

static void test_required_missing(void **state) {
  (void)state;
  desc.actions_required = MILTER_ACT_CHGFROM | MILTER_ACT_ADDHDRS;
  start();
  neg(6, MILTER_ACT_ADDHDRS, ALLP);
  assert_int_equal(feed(), MILTER_E_NEGOTIATE);
  assert_string_equal(replies(), "");
  assert_non_null(strstr(logbuf, "CHGFROM"));
  assert_null(strstr(logbuf, "ADDHDRS not"));
  assert_int_equal(milter_session_gone(&ctx), 0);
  assert_string_equal(events, ""); /* no close for a refused MTA */
}

static void test_required_protocol_missing(void **state) {
  (void)state;
  desc.protocol_required = MILTER_P_HDR_LEADSPC | MILTER_P_NR_HDR;
  start();
  neg(6, MILTER_ACT_ALL, ALLP & ~MILTER_P_HDR_LEADSPC & ~MILTER_P_NR_HDR);
  assert_int_equal(feed(), MILTER_E_NEGOTIATE);
  assert_non_null(strstr(logbuf, "HDR_LEADSPC"));
  assert_null(strstr(logbuf, "NR_HDR")); /* NR can be faked */
}

static void test_v2(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_HDR | MILTER_P_HDR_LEADSPC;
  desc.macros[MILTER_M_EOM] = "i";
  desc.cb.connect = NULL;
  start();
  neg(2, 0x3F, 0x7F);
  connect_helo();
  assert_int_equal(feed(), 0);
  /* A v2 MTA without NOCONNECT support would still send CONNECT. */
  assert_string_equal(replies(), "Occ");
  assert_int_equal(last_neg.version, 2);
  assert_int_equal(last_neg.actions & ~MILTER_ACT_V2, 0);
  assert_int_equal(last_neg.protocol & ~0x7Fu, 0);
  assert_int_equal(last_neg.protocol, MILTER_P_NOCONNECT);
  assert_int_equal(last_neg_len, 12); /* no symlist for v2 */
  /* NR_HDR faked: a header answered with NOREPLY still gets CONTINUE. */
  next_status['L'] = MILTER_NOREPLY;
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_header(&in, "A", "b"), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "ccc");
}

static void test_nr_negotiated(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_HDR | MILTER_P_NR_RCPT;
  next_status['L'] = MILTER_NOREPLY;
  next_status['R'] = MILTER_CONTINUE; /* nothing sent either */
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_header(&in, "A", "b"), 0);
  assert_int_equal(milter_enc_header(&in, "C", "d"), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "Occc");
  assert_true(last_neg.protocol & MILTER_P_NR_HDR);
  assert_string_equal(logbuf + strlen(logbuf) - 1, "\n"); /* sanity */
  assert_null(strstr(logbuf, "kept"));
}

/* ---- deferred status (a final status where no reply was negotiated) ---- */

static size_t count_str(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

static void mail_rcpt(const char *from) {
  assert_int_equal(milter_enc_envaddr(&in, 'M', from, 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<r@x>", 0, NULL), 0);
}

static void quit_gone(void) {
  assert_int_equal(milter_enc_simple(&in, 'Q'), 0);
  assert_int_equal(feed(), MILTER_E_EOF);
  assert_int_equal(milter_session_gone(&ctx), 0);
}

/* MAIL, two RCPTs, DATA, a header, EOH, BODY, EOB. */
static void message2(void) {
  macro('M', "i", "QID2");
  mail_rcpt("<a@x>");
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<s@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'T'), 0);
  assert_int_equal(milter_enc_header(&in, "Subject", " hi"), 0);
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  assert_int_equal(milter_enc_body(&in, "body\r\n", 6), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
}

/* Every command kind that can be negotiated no-reply, returning TEMPFAIL:
 * (a) with only its own NR bit, the next command that gets a reply gets
 * TEMPFAIL (RCPT: each, and it stays); (b) with every message NR bit, end
 * of message gets it.  No callback runs after the one that failed but the
 * abort callback, exactly once; the next message is served normally. */
static const struct {
  char letter;
  uint32_t nr;
  const char *replies_own; /* after "Occ" */
  const char *events;      /* after C and H */
} kinds[] = {
    {'M', MILTER_P_NR_MAIL, "ttt", "M(<a@x>)A"},
    {'R', MILTER_P_NR_RCPT, "ct", "M(<a@x>)R(<r@x>,1)A"},
    {'T', MILTER_P_NR_DATA, "ccct", "M(<a@x>)R(<r@x>,1)R(<s@x>,1)TA"},
    {'L', MILTER_P_NR_HDR, "cccct",
     "M(<a@x>)R(<r@x>,1)R(<s@x>,1)TL(Subject: hi)A"},
    {'N', MILTER_P_NR_EOH, "ccccct",
     "M(<a@x>)R(<r@x>,1)R(<s@x>,1)TL(Subject: hi)NA"},
    {'B', MILTER_P_NR_BODY, "cccccct",
     "M(<a@x>)R(<r@x>,1)R(<s@x>,1)TL(Subject: hi)NB(body\r\n)A"},
};

static void test_deferred_each_nr_kind(void **state) {
  (void)state;
  const uint32_t msg_nr = MILTER_P_NR_MAIL | MILTER_P_NR_RCPT |
                          MILTER_P_NR_DATA | MILTER_P_NR_HDR |
                          MILTER_P_NR_EOH | MILTER_P_NR_BODY;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    for (int all = 0; all < 2; all++) {
      for (int stream = 0; stream < 2; stream++) {
        setup(NULL);
        desc.protocol_wanted = all ? msg_nr : kinds[k].nr;
        desc.flags = stream ? MILTER_DESC_STREAM_BODY : 0;
        next_status[(unsigned char)kinds[k].letter] = MILTER_TEMPFAIL;
        start();
        neg(6, MILTER_ACT_ALL, ALLP);
        connect_helo();
        message2();
        assert_int_equal(feed(), 0);
        char want[64];
        snprintf(want, sizeof want, "Occ%s", all ? "t" : kinds[k].replies_own);
        assert_string_equal(replies(), want);
        /* Postfix sends ABORT after a message ended early. */
        assert_int_equal(milter_enc_simple(&in, 'A'), 0);
        assert_int_equal(feed(), 0);
        assert_string_equal(replies(), "");
        const char *ev_ = strstr(events, ")H(helo.example)");
        assert_non_null(ev_);
        assert_string_equal(ev_ + strlen(")H(helo.example)"),
                            kinds[k].events);
        assert_int_equal(count_str(logbuf, "TEMPFAIL at"), 1);
        assert_int_equal(count_str(logbuf, "kept"), 1);
        assert_int_equal(count_str(logbuf, "deferred TEMPFAIL"), 1);
        assert_int_equal(count_str(logbuf, "dropped"), 0);
        assert_int_equal(ctx.deferred, 0);
        /* The next message goes through. */
        next_status[(unsigned char)kinds[k].letter] = MILTER_CONTINUE;
        events[0] = '\0';
        message2();
        assert_int_equal(feed(), 0);
        const char *r = replies();
        assert_int_equal(r[strlen(r) - 1], 'c');
        assert_null(strchr(r, 't'));
        assert_non_null(strstr(events, "E(i=QID2)"));
        assert_null(strchr(events, 'A'));
        milter_session_free(&ctx);
      }
    }
  }
  desc.flags = 0;
}

/* The custom reply set with the failing status goes with it; at end of
 * message the eom callback does not run and the abort callback does. */
static milter_status f_body_fail(milter_ctx *c, const uint8_t *p, size_t n) {
  (void)p;
  (void)n;
  ev("B");
  assert_int_equal(milter_ctx_setreply(c, "451", "4.3.0", "spool"), 0);
  return MILTER_TEMPFAIL;
}

static void test_deferred_custom_reply_at_eom(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_BODY;
  desc.cb.body = f_body_fail;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  mail_rcpt("<a@x>");
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(milter_enc_body(&in, "body\r\n", 6), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "Occccc");
  assert_int_equal(ctx.state, MST_BODY); /* the stage is not reset */
  assert_int_equal(ctx.deferred, MILTER_TEMPFAIL);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "y");
  assert_string_equal(rtext[0], "451 4.3.0 spool");
  assert_non_null(strstr(events, "NBA")); /* body once, abort, no eom */
  assert_null(strstr(events, "E("));
  assert_non_null(strstr(logbuf, "TEMPFAIL at SMFIC_BODY kept"));
  assert_non_null(
      strstr(logbuf, "deferred TEMPFAIL (from SMFIC_BODY) answers "
                     "SMFIC_BODYEOB"));
  /* ABORT after the answered EOM: no second abort callback. */
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_int_equal(count_str(events, "A"), 1);
  /* Next message: normal EOM. */
  desc.cb.body = f_body;
  mail_rcpt("<b@x>");
  assert_int_equal(milter_enc_body(&in, "body\r\n", 6), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "ccc");
  assert_non_null(strstr(events, "E(i=-)"));
  quit_gone();
  assert_int_equal(count_str(events, "A"), 1);
}

/* PENDING completed later with a final status, where NR was negotiated. */
static void test_deferred_after_pending(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_BODY | MILTER_P_NR_EOH;
  next_status['B'] = MILTER_PENDING;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  mail_rcpt("<a@x>");
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  assert_int_equal(milter_enc_body(&in, "one", 3), 0);
  assert_int_equal(milter_enc_body(&in, "two", 3), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_string_equal(replies(), "Occcc");
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_REJECT), 0);
  assert_string_equal(replies(), ""); /* nothing: NR_BODY */
  assert_int_equal(milter_session_resume(&ctx), 0);
  assert_string_equal(replies(), "r");
  assert_non_null(strstr(events, "NB(one)A"));
  assert_null(strstr(events, "two"));
  assert_null(strstr(events, "E("));
}

/* ACCEPT where no reply was negotiated: answered ACCEPT at the next reply. */
static void test_deferred_accept(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_HDR;
  next_status['L'] = MILTER_ACCEPT;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  mail_rcpt("<a@x>");
  assert_int_equal(milter_enc_header(&in, "X", "1"), 0);
  assert_int_equal(milter_enc_header(&in, "Y", "2"), 0);
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "Occcc" "a");
  assert_int_equal(ctx.state, MST_HELO);
  assert_null(strstr(events, "L(Y"));
  assert_null(strchr(events, 'N'));
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_int_equal(count_str(events, "A"), 1);
  assert_non_null(strstr(logbuf, "deferred ACCEPT (from SMFIC_HEADER) "
                                 "answers SMFIC_EOH"));
}

/* Deferred at CONNECT or HELO: the whole connection, until QUIT_NC. */
static void test_deferred_connection(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_CONN | MILTER_P_NR_HELO;
  next_status['C'] = MILTER_TEMPFAIL;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_helo(&in, "again.example"), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<c@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O" "ttt");
  assert_null(strchr(events, 'H'));
  assert_null(strchr(events, 'M'));
  assert_null(strchr(events, 'A'));
  assert_int_equal(count_str(logbuf, "deferred TEMPFAIL"), 1);
  /* QUIT_NC ends it: the next connection on the socket is served. */
  next_status['C'] = MILTER_CONTINUE;
  assert_int_equal(milter_enc_simple(&in, 'K'), 0);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<d@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "c");
  assert_non_null(strstr(events, "XC(client.example"));
  assert_non_null(strstr(events, "H(helo.example)M(<d@x>)"));
  milter_session_free(&ctx);

  /* ACCEPT at HELO: every message of the connection accepted, RCPT too. */
  setup(NULL);
  desc.protocol_wanted = MILTER_P_NR_HELO | MILTER_P_NR_MAIL;
  next_status['H'] = MILTER_ACCEPT;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  mail_rcpt("<a@x>");
  mail_rcpt("<b@x>");
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O" "c" "aa");
  assert_null(strchr(events, 'M'));
  assert_null(strchr(events, 'R'));
  quit_gone();
  assert_int_equal(ctx.deferred, 0);
  assert_null(strchr(events, 'A'));
  assert_int_equal(count_str(events, "X"), 1);
}

/* ABORT or a new MAIL drops a message's deferred status (logged); the
 * abort callback runs once; UNKNOWN's status is dropped at once. */
static void test_deferred_dropped(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_NR_BODY | MILTER_P_NR_UNKN;
  next_status['B'] = MILTER_TEMPFAIL;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  mail_rcpt("<a@x>");
  assert_int_equal(milter_enc_body(&in, "x", 1), 0);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O" "cccc");
  assert_non_null(strstr(logbuf, "deferred TEMPFAIL (from SMFIC_BODY) "
                                 "dropped: the message ended"));
  assert_int_equal(ctx.deferred, 0);
  assert_int_equal(count_str(events, "A"), 1);
  /* the same with a new MAIL */
  mail_rcpt("<b@x>");
  assert_int_equal(milter_enc_body(&in, "y", 1), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<c@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "ccc");
  assert_int_equal(count_str(logbuf, "dropped: the message ended"), 2);
  assert_non_null(strstr(events, "B(y)AM(<c@x>)"));
  assert_int_equal(count_str(events, "A"), 2);
  /* UNKNOWN: concerns that command only */
  next_status['B'] = MILTER_CONTINUE;
  next_status['U'] = MILTER_REJECT;
  assert_int_equal(milter_enc_unknown(&in, "NOOP"), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<r@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_body(&in, "z", 1), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "cc");
  assert_non_null(strstr(logbuf, "status REJECT for SMFIC_UNKNOWN dropped"));
  assert_non_null(strstr(events, "B(z)E("));
  /* The connection ends with a deferred status: dropped, logged. */
  next_status['B'] = MILTER_DISCARD;
  mail_rcpt("<d@x>");
  assert_int_equal(milter_enc_body(&in, "w", 1), 0);
  assert_int_equal(feed(), 0);
  assert_int_equal(ctx.deferred, MILTER_DISCARD);
  assert_int_equal(milter_session_gone(&ctx), 0);
  assert_int_equal(ctx.deferred, 0);
  assert_non_null(strstr(logbuf, "deferred DISCARD (from SMFIC_BODY) "
                                 "dropped"));
  assert_int_equal(count_str(events, "A"), 3);
}

/* A failure status at end of message drops the queued actions. */
static void test_eom_failure_drops_actions(void **state) {
  (void)state;
  eom_actions = 1;
  next_status['E'] = MILTER_TEMPFAIL;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O" "cccccccc" "t");
  next_status['E'] = MILTER_ACCEPT;
  message("<b@x>");
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "cccccc" "hmqb" "a");
}

static void test_no_bits_from_null_callbacks(void **state) {
  (void)state;
  memset(&desc.cb, 0, sizeof desc.cb);
  desc.cb.eom = f_eom;
  desc.cb.header = f_header;
  start();
  neg(6, MILTER_ACT_ALL, ALLP & ~MILTER_P_NODATA);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O");
  uint32_t want = (MILTER_P_ALL_NO & ~MILTER_P_NOHDRS) & ~MILTER_P_NODATA;
  assert_int_equal(last_neg.protocol, want);
  /* The MTA honours them: header then EOM straight after OPTNEG+MAIL skip. */
  assert_int_equal(milter_enc_header(&in, "A", "b"), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(feed(), 0);
  /* HDRS is reachable from OPTS by skipping the switched-off stages. */
  assert_string_equal(replies(), "cc");
  /* A MAIL sent anyway (callback NULL) is answered CONTINUE. */
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_header(&in, "A", "b"), 0);
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "ccc");
  assert_string_equal(events, "L(A:b)E(i=-)L(A:b)E(i=-)");
}

static void test_setsymlist(void **state) {
  (void)state;
  desc.macros[MILTER_M_EOM] = "i {auth_authen}";
  desc.macros[MILTER_M_CONNECT] = "j";
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O");
  assert_true(last_neg.actions & MILTER_ACT_SETSYMLIST);
  assert_string_equal(last_neg.symlist[MILTER_M_EOM], "i {auth_authen}");
  assert_string_equal(last_neg.symlist[MILTER_M_CONNECT], "j");
  milter_session_free(&ctx);
  /* The MTA does not offer SETSYMLIST: not requested. */
  start();
  neg(6, MILTER_ACT_ALL & ~MILTER_ACT_SETSYMLIST, ALLP);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O");
  assert_false(last_neg.actions & MILTER_ACT_SETSYMLIST);
  assert_int_equal(last_neg_len, 12);
}

static milter_status f_eom_bigbody(milter_ctx *c) {
  static uint8_t big[300000];
  memset(big, 'x', sizeof big);
  assert_int_equal(milter_ctx_replacebody(c, big, sizeof big), 0);
  assert_int_equal(milter_ctx_addheader(c, "X-After", "body"), 0);
  return MILTER_ACCEPT;
}

static void mds_case(uint32_t offered, uint32_t fmax, uint32_t want_bit,
                     uint32_t want_size) {
  desc.max_data_size = fmax;
  desc.cb.eom = f_eom_bigbody;
  start();
  neg(6, MILTER_ACT_ALL, ALLP | offered);
  connect_helo();
  message("<a@x>");
  assert_int_equal(feed(), 0);
  /* Check every REPLBODY chunk, and that they come in one run last. */
  milter_decoder d;
  milter_decoder_init(&d, MILTER_DATA_1M + 1);
  size_t off = 0, nbody = 0, total = 0;
  char seq[64];
  size_t ns = 0;
  while (off < ctx.out.len) {
    size_t used;
    milter_packet p;
    assert_int_equal(milter_decoder_feed(&d, ctx.out.data + off,
                                         ctx.out.len - off, &used, &p),
                     1);
    off += used;
    if (p.cmd == 'O') {
      milter_reply r;
      assert_int_equal(milter_parse_reply(&p, &r, NULL), 0);
      assert_int_equal(r.u.optneg.protocol &
                           (MILTER_P_MDS_256K | MILTER_P_MDS_1M),
                       want_bit);
    }
    if (p.cmd == 'b') {
      assert_true(p.len <= want_size);
      nbody++;
      total += p.len;
    }
    if (ns + 1 < sizeof seq && (ns == 0 || seq[ns - 1] != (char)p.cmd))
      seq[ns++] = (char)p.cmd;
  }
  seq[ns] = '\0';
  milter_decoder_free(&d);
  assert_int_equal(total, 300000);
  assert_int_equal(nbody, (300000 + want_size - 1) / want_size);
  assert_string_equal(seq, "Ochba");
  assert_int_equal(milter_ctx_data_size(&ctx), want_size);
  ctx.out.len = 0;
  milter_session_free(&ctx);
}

static void test_mds(void **state) {
  (void)state;
  mds_case(0, MILTER_DATA_1M, 0, MILTER_DATA_64K);
  mds_case(MILTER_P_MDS_256K, MILTER_DATA_1M, MILTER_P_MDS_256K,
           MILTER_DATA_256K);
  mds_case(MILTER_P_MDS_1M | MILTER_P_MDS_256K, MILTER_DATA_1M, MILTER_P_MDS_1M,
           MILTER_DATA_1M);
  mds_case(MILTER_P_MDS_1M, 0, 0, MILTER_DATA_64K);
  start(); /* teardown frees it */
}

static void test_big_packet_tolerated_and_hard_cap(void **state) {
  (void)state;
  env.hard_cap = 200000;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<a@x>", 0, NULL), 0);
  char *v = malloc(100001);
  memset(v, 'v', 100000);
  v[100000] = '\0';
  assert_int_equal(milter_enc_header(&in, "Long", v), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "Occccc");
  assert_non_null(strstr(logbuf, "tolerated"));
  /* Over the hard cap: the connection is closed with a log line. */
  uint8_t hdr[5] = {0, 0x04, 0, 0, 'B'}; /* 262144 */
  assert_int_equal(milter_session_feed(&ctx, hdr, 5), MILTER_E_TOOBIG);
  assert_non_null(strstr(logbuf, "test-peer"));
  assert_non_null(strstr(logbuf, "over the limit 200000"));
  free(v);
}

static void test_malformed(void **state) {
  (void)state;
  static const struct {
    const uint8_t *bytes;
    size_t len;
    int want;
  } cases[] = {
      {(const uint8_t *)"\0\0\0\0", 4, MILTER_E_PROTO},
      {(const uint8_t *)"\xff\xff\xff\xff", 4, MILTER_E_TOOBIG},
      {(const uint8_t *)"\0\0\0\x02Zx", 6, MILTER_E_PROTO},
      {(const uint8_t *)"\0\0\0\x03Hab", 7, MILTER_E_PROTO}, /* no NUL */
      {(const uint8_t *)"\0\0\0\x06"
                        "Ch\0X\0\0",
       10, MILTER_E_PROTO},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    start();
    neg(6, MILTER_ACT_ALL, ALLP);
    assert_int_equal(feed(), 0);
    int r = milter_session_feed(&ctx, cases[i].bytes, cases[i].len);
    assert_int_equal(r, cases[i].want);
    assert_int_equal(milter_session_gone(&ctx), 0);
    milter_session_free(&ctx);
  }
  /* A command before OPTNEG. */
  start();
  connect_helo();
  assert_int_equal(feed(), MILTER_E_PROTO);
  assert_non_null(strstr(logbuf, "before option negotiation"));
}

/* milter_ctx_macros: "name=value;" for each call (stop after *ud calls
 * when *ud > 0). */
static char walked[512];
static int walk_cb(void *ud, const char *name, size_t len, const char *v) {
  int *left = ud;
  size_t n = strlen(walked);
  snprintf(walked + n, sizeof walked - n, "%.*s=%s;", (int)len, name, v);
  return *left > 0 && --*left == 0 ? 7 : 0;
}
static const char *walk_all(int stop_after) {
  walked[0] = '\0';
  int left = stop_after;
  int rc = milter_ctx_macros(&ctx, walk_cb, &left);
  assert_int_equal(rc, stop_after > 0 && left == 0 ? 7 : 0);
  return walked;
}

static void test_macros_lifetime(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  macro('H', "{tls_version}", "TLSv1.3");
  assert_int_equal(milter_enc_helo(&in, "again"), 0);
  macro('M', "{auth_authen}", "bob");
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(milter_ctx_macro(&ctx, "auth_authen"), "bob");
  assert_string_equal(milter_ctx_macro(&ctx, "{auth_authen}"), "bob");
  assert_string_equal(milter_ctx_macro(&ctx, "tls_version"), "TLSv1.3");
  assert_string_equal(milter_ctx_macro(&ctx, "j"), "mx.example");
  assert_null(milter_ctx_macro(&ctx, "nope"));
  assert_null(milter_ctx_macro(&ctx, ""));
  /* Newest stage first. */
  macro('R', "j", "rcpt-stage");
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(milter_ctx_macro(&ctx, "j"), "rcpt-stage");
  /* One pass over all of them: newest stage first, braces gone, a name
   * once per stage (the first is milter_ctx_macro's); fn stops it. */
  assert_string_equal(walk_all(0), "j=rcpt-stage;auth_authen=bob;"
                                   "tls_version=TLSv1.3;j=mx.example;");
  assert_string_equal(walk_all(2), "j=rcpt-stage;auth_authen=bob;");
  /* ABORT drops the message's macros, keeps connect/helo ones. */
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_null(milter_ctx_macro(&ctx, "auth_authen"));
  assert_string_equal(milter_ctx_macro(&ctx, "j"), "mx.example");
  assert_string_equal(milter_ctx_macro(&ctx, "tls_version"), "TLSv1.3");
  /* QUIT_NC drops everything. */
  assert_int_equal(milter_enc_simple(&in, 'K'), 0);
  assert_int_equal(feed(), 0);
  assert_null(milter_ctx_macro(&ctx, "j"));
  assert_null(milter_ctx_macro(&ctx, "tls_version"));
}

/* Message state lives in ctx.msg (bench/MEMORY.md): an idle connection has
 * none; the MAIL macros make it, the end of the message (reply to EOM,
 * ABORT) frees it, a reply still pending keeps it, and a custom reply or a
 * connection-wide deferred status keeps it as long as they last. */
static void test_message_block(void **state) {
  (void)state;
  eom_actions = 1;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  macro('H', "{tls_version}", "TLSv1.3");
  assert_int_equal(milter_enc_helo(&in, "again"), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "Occc");
  assert_null(ctx.msg);
  macro('M', "i", "QID7");
  assert_int_equal(feed(), 0);
  assert_non_null(ctx.msg); /* before MAIL itself */
  assert_string_equal(milter_ctx_macro(&ctx, "i"), "QID7");
  message("<a@x>"); /* its 'M' macros replace QID7's, its 'R' has i */
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "cccccc" "hmqb" "c");
  assert_non_null(strstr(events, "E(i=QID1)"));
  assert_null(ctx.msg);
  assert_null(milter_ctx_macro(&ctx, "i"));
  assert_string_equal(milter_ctx_macro(&ctx, "j"), "mx.example");
  assert_string_equal(milter_ctx_macro(&ctx, "tls_version"), "TLSv1.3");
  /* A message without macros or actions needs none. */
  mail_rcpt("<b@x>");
  assert_int_equal(feed(), 0);
  assert_null(ctx.msg);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  /* ABORT */
  macro('M', "i", "QID8");
  mail_rcpt("<b@x>");
  assert_int_equal(feed(), 0);
  assert_non_null(ctx.msg);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_null(ctx.msg);
  /* A pending EOM keeps it until the reply; the reply frees it. */
  eom_actions = 0;
  next_status['E'] = MILTER_PENDING;
  macro('M', "i", "QID9");
  mail_rcpt("<c@x>");
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  replies();
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_string_equal(replies(), "cc");
  assert_non_null(ctx.msg);
  assert_int_equal(milter_ctx_setreply(&ctx, "550", "5.7.1", "no"), 0);
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_REJECT), 0);
  assert_null(ctx.msg);
  assert_string_equal(replies(), "y");
  assert_string_equal(rtext[0], "550 5.7.1 no");
  /* A custom reply set between messages stays until it is used. */
  next_status['M'] = MILTER_REJECT;
  assert_int_equal(milter_ctx_setreply(&ctx, "554", NULL, "go away"), 0);
  assert_non_null(ctx.msg);
  assert_int_equal(milter_enc_helo(&in, "third"), 0);
  assert_int_equal(feed(), 0);
  assert_non_null(ctx.msg); /* HELO's CONTINUE does not use it */
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<d@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "c" "y");
  assert_null(ctx.msg);
  quit_gone();
  milter_session_free(&ctx);

  /* A connection-wide deferred status keeps its custom reply (and so the
   * block) for the connection, and answers each message with it. */
  setup(NULL);
  desc.protocol_wanted = MILTER_P_NR_CONN;
  next_status['C'] = MILTER_TEMPFAIL;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  assert_int_equal(feed(), 0);
  assert_int_equal(milter_ctx_setreply(&ctx, "421", "4.7.0", "later"), 0);
  connect_helo();
  mail_rcpt("<a@x>");
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  mail_rcpt("<b@x>");
  assert_int_equal(feed(), 0);
  /* HELO, and MAIL twice (the RCPTs after a refused MAIL are out of
   * order: no reply, as libmilter). */
  assert_string_equal(replies(), "O" "yyy");
  assert_string_equal(rtext[1], "421 4.7.0 later");
  assert_string_equal(rtext[3], "421 4.7.0 later");
  assert_non_null(ctx.msg);
  assert_null(ctx.msg->reply);
  assert_non_null(ctx.msg->deferred_reply);
  quit_gone();
  assert_null(ctx.msg);
}

static void test_abort_twice_and_after_eom(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  message("<b@x>");
  assert_int_equal(milter_enc_simple(&in, 'A'), 0); /* Postfix, after EOM */
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O"
                                 "ccc"
                                 "ccccccc");
  const char *a = strchr(events, 'A');
  assert_non_null(a);
  assert_null(strchr(a + 1, 'A')); /* exactly one abort */
  assert_non_null(strstr(events, "M(<a@x>)AM(<b@x>,SIZE=10)"));
}

static void test_mail_after_eom_and_mid_message(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  message("<b@x>"); /* no ABORT between messages (Postfix) */
  assert_int_equal(feed(), 0);
  assert_null(strchr(events, 'A'));
  /* MAIL after RCPT (no EOM, no ABORT): implicit abort, then the MAIL. */
  mail_rcpt("<c@x>");
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<d@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_non_null(strstr(events, "M(<c@x>)R(<r@x>,1)AM(<d@x>)"));
  replies();
  /* A MAIL rejected: the next MAIL resets the message once. */
  events[0] = '\0';
  next_status['M'] = MILTER_REJECT;
  assert_int_equal(milter_enc_simple(&in, 'A'), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<e@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<f@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(events, "AM(<e@x>)AM(<f@x>)");
  assert_string_equal(replies(), "rr");
}

static void test_quit_nc(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  assert_int_equal(milter_enc_simple(&in, 'K'), 0);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<z@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_simple(&in, 'K'), 0); /* mid-message */
  assert_int_equal(feed(), 0);
  assert_non_null(strstr(events, "E(i=QID1)XC(client.example"));
  assert_non_null(strstr(events, "M(<z@x>)AX"));
  assert_string_equal(replies(), "O"
                                 "ccccccccc"
                                 "ccc");
  assert_int_equal(milter_session_gone(&ctx), 0);
  /* No second close for the same connect. */
  size_t n = strlen(events);
  assert_string_equal(events + n - 2, "AX");
}

static void test_out_of_order(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_body(&in, "x", 1), 0); /* body before MAIL */
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);  /* eoh before MAIL */
  assert_int_equal(milter_enc_optneg(&in, 6, 0, 0), 0);
  message("<a@x>");
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O"
                                 "cc"
                                 "ccccccc");
  assert_non_null(strstr(logbuf, "out-of-order SMFIC_BODY"));
  assert_non_null(strstr(logbuf, "repeated SMFIC_OPTNEG"));
  /* Header after EOM: not reachable from ENDM nor HELO: ignored. */
  assert_int_equal(milter_enc_header(&in, "A", "b"), 0);
  /* RCPT right after HELO: ignored too (NX_HELO has no RCPT). */
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<r@x>", 0, NULL), 0);
  /* UNKNOWN is fine anywhere libmilter allows. */
  assert_int_equal(milter_enc_unknown(&in, "XYZZY"), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "c");
  assert_non_null(strstr(events, "U(XYZZY)"));
}

static void test_setreply(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  assert_int_equal(feed(), 0);
  replies();
  assert_int_equal(milter_ctx_setreply(&ctx, "250", NULL, "x"), MILTER_E_INVAL);
  assert_int_equal(milter_ctx_setreply(&ctx, "554", "5.7.1", "one\ntwo"), 0);
  next_status['C'] = MILTER_REJECT;
  connect_helo();
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "yc"); /* then HELO, from stage HELO */
  assert_string_equal(rtext[0], "554-5.7.1 one\r\n554 5.7.1 two");
  /* Class mismatch: plain TEMPFAIL, reply kept for a later REJECT. */
  assert_int_equal(milter_ctx_setreply(&ctx, "550", NULL, "no"), 0);
  next_status['M'] = MILTER_TEMPFAIL;
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "t");
}

static void test_actions_state(void **state) {
  (void)state;
  start();
  assert_int_equal(milter_ctx_addheader(&ctx, "A", "b"), MILTER_E_STATE);
  neg(6, MILTER_ACT_ADDHDRS, ALLP);
  connect_helo();
  assert_int_equal(feed(), 0);
  assert_int_equal(milter_ctx_addheader(&ctx, "A", "b"), MILTER_E_STATE);
  ctx.in_eom = 1; /* as inside the eom callback */
  assert_int_equal(milter_ctx_chgfrom(&ctx, "<a@x>", NULL), MILTER_E_NOTSUP);
  assert_int_equal(milter_ctx_replacebody(&ctx, "x", 1), MILTER_E_NOTSUP);
  assert_int_equal(milter_ctx_addheader(&ctx, "A", NULL), MILTER_E_INVAL);
  assert_int_equal(milter_ctx_addheader(&ctx, "A", "b"), 0);
  assert_int_equal(milter_ctx_clear_actions(&ctx), 0);
  assert_non_null(ctx.msg); /* addheader made the message block */
  assert_int_equal(ctx.msg->acts.len, 0);
  assert_int_equal(milter_ctx_clear_actions(NULL), MILTER_E_INVAL);
  ctx.in_eom = 0;
  assert_int_equal(milter_ctx_clear_actions(&ctx), MILTER_E_STATE);
  assert_int_equal(milter_ctx_progress(&ctx), 0);
  assert_string_equal(replies(), "Occp");
}

static void test_skip(void **state) {
  (void)state;
  next_status['B'] = MILTER_SKIP;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O"
                                 "ccccccc"
                                 "sc");
  milter_session_free(&ctx);
  /* Without SKIP from the MTA: CONTINUE. */
  start();
  neg(6, MILTER_ACT_ALL, ALLP & ~MILTER_P_SKIP);
  connect_helo();
  message("<a@x>");
  next_status['R'] = MILTER_SKIP; /* SKIP outside body: CONTINUE */
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "O"
                                 "ccccccccc");
}

static void test_leadspc_and_eob_payload(void **state) {
  (void)state;
  desc.protocol_wanted = MILTER_P_HDR_LEADSPC;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(milter_enc_envaddr(&in, 'M', "<a@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_envaddr(&in, 'R', "<b@x>", 0, NULL), 0);
  assert_int_equal(milter_enc_header(&in, "X", "  two"), 0);
  assert_int_equal(milter_enc_header(&in, "Y", "none"), 0);
  assert_int_equal(milter_enc_simple(&in, 'N'), 0);
  assert_int_equal(milter_enc_packet(&in, 'E', "tail", 4), 0);
  assert_int_equal(feed(), 0);
  replies();
  assert_true(last_neg.protocol & MILTER_P_HDR_LEADSPC);
  assert_non_null(strstr(events, "L(X:  two)L(Y:none)NB(tail)E(i=-)"));
}

/* ---- Held input (ctx.in) ------------------------------------------------- */

/* Whole packets per feed keep no input block; a packet left in part, or
 * input arriving while a reply is pending, makes one (mid_packet,
 * held_input); it goes once it holds nothing outside a message, and stays
 * during one (one allocation per message at most). */
static void test_held_input(void **state) {
  (void)state;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "Occ");
  assert_null(ctx.in);
  assert_false(milter_session_mid_packet(&ctx));
  assert_int_equal(milter_session_held_input(&ctx), 0);
  /* HELO in two reads, outside a message: the length's 4 bytes and a half
   * packet, then the rest. */
  assert_int_equal(milter_enc_helo(&in, "split.example"), 0);
  milter_buf all = in;
  milter_buf_init(&in);
  assert_int_equal(milter_session_feed(&ctx, all.data, 3), 0);
  assert_non_null(ctx.in);
  assert_true(milter_session_mid_packet(&ctx));
  assert_int_equal(milter_session_feed(&ctx, all.data + 3, 6), 0);
  assert_true(milter_session_mid_packet(&ctx));
  assert_string_equal(replies(), "");
  assert_int_equal(milter_session_feed(&ctx, all.data + 9, all.len - 9), 0);
  assert_string_equal(replies(), "c");
  assert_non_null(strstr(events, "H(split.example)"));
  assert_null(ctx.in);
  assert_false(milter_session_mid_packet(&ctx));
  milter_buf_free(&all);
  /* Split inside a message: the block stays (idle) to the message's end. */
  mail_rcpt("<a@x>");
  all = in;
  milter_buf_init(&in);
  assert_int_equal(milter_session_feed(&ctx, all.data, all.len - 2), 0);
  assert_true(milter_session_mid_packet(&ctx));
  assert_int_equal(milter_session_feed(&ctx, all.data + all.len - 2, 2), 0);
  assert_false(milter_session_mid_packet(&ctx));
  assert_non_null(ctx.in);
  assert_null(ctx.in->dec.part); /* the packet's buffer is not kept */
  milter_buf_free(&all);
  assert_string_equal(replies(), "cc");
  /* EOM pending with the next command behind it in the same read. */
  next_status['E'] = MILTER_PENDING;
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  assert_int_equal(milter_enc_helo(&in, "after.example"), 0);
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_non_null(ctx.msg); /* no macros, but the pending reply's slot */
  assert_int_equal(milter_session_held_input(&ctx), 4 + 1 + 14);
  assert_int_equal(milter_enc_simple(&in, 'A'), 0); /* read while paused */
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_int_equal(milter_session_held_input(&ctx), 4 + 1 + 14 + 5);
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_ACCEPT), 0);
  assert_string_equal(replies(), "a");
  assert_null(ctx.msg);
  assert_non_null(ctx.in); /* until the glue resumes */
  assert_int_equal(milter_session_resume(&ctx), 0);
  assert_string_equal(replies(), "c");
  assert_non_null(strstr(events, "H(after.example)"));
  assert_null(ctx.in);
  assert_int_equal(milter_session_held_input(&ctx), 0);
  /* Kept by a split in a message whose end is pending with nothing behind
   * it: the resume that follows the reply frees it. */
  mail_rcpt("<b@x>");
  assert_int_equal(milter_enc_simple(&in, 'E'), 0);
  all = in;
  milter_buf_init(&in);
  assert_int_equal(milter_session_feed(&ctx, all.data, 7), 0);
  assert_int_equal(milter_session_feed(&ctx, all.data + 7, all.len - 7),
                   MILTER_SESSION_PAUSED);
  milter_buf_free(&all);
  assert_non_null(ctx.in);
  assert_int_equal(milter_session_held_input(&ctx), 0);
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_ACCEPT), 0);
  assert_string_equal(replies(), "cca");
  assert_int_equal(milter_session_resume(&ctx), 0);
  assert_null(ctx.in);
  /* A partial packet left when the ctx ends is freed with it (teardown;
   * ASan's leak check). */
  assert_int_equal(milter_enc_helo(&in, "never.complete"), 0);
  assert_int_equal(milter_session_feed(&ctx, in.data, in.len - 1), 0);
  milter_buf_free(&in);
  assert_true(milter_session_mid_packet(&ctx));
}

/* The packet limit before and after OPTNEG reaches the stack's decoder:
 * before it, nothing larger than 64 KiB; after it, up to the hard cap. */
static void test_held_input_limits(void **state) {
  (void)state;
  env.hard_cap = 200000;
  start();
  /* An over-64K length before OPTNEG: refused. */
  uint8_t big[5] = {0, 1, 0, 2, 'H'}; /* 65538 */
  assert_int_equal(milter_session_feed(&ctx, big, sizeof big), MILTER_E_TOOBIG);
  milter_session_free(&ctx);
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  assert_int_equal(feed(), 0);
  /* After it, the same length is a partial packet (held), one over the cap
   * is refused. */
  assert_int_equal(milter_session_feed(&ctx, big, sizeof big), 0);
  assert_true(milter_session_mid_packet(&ctx));
  milter_session_free(&ctx);
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  uint8_t over[5] = {0, 3, 0x0d, 0x41, 'H'}; /* 200001 */
  assert_int_equal(milter_buf_append(&in, over, sizeof over), 0);
  assert_int_equal(feed(), MILTER_E_TOOBIG);
  assert_null(ctx.in);
}

/* milter_ctx_post's slot is in the message block, which a pending reply
 * has even outside a message: the post that hands the reply back
 * allocates nothing; a second one at the same time is allocated; a queued
 * post keeps the block until it has run. */
/* A loop with a poster behind env (milter_ctx_post), and its end. */
static uv_loop_t loop;
static milter_poster poster;

static void poster_start(void) {
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(milter_poster_init(&poster, &loop), 0);
  env.poster = &poster;
}

static void poster_stop(void) {
  milter_poster_close(&poster, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static char posted[8];
static void post_letter(milter_ctx *c, void *arg) {
  (void)c;
  strncat(posted, arg, sizeof posted - strlen(posted) - 1);
}

static void test_post_slot(void **state) {
  (void)state;
  poster_start();
  posted[0] = '\0';
  next_status['C'] = MILTER_PENDING;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  assert_int_equal(
      milter_enc_connect(&in, "client.example", '4', 25, "192.0.2.1"), 0);
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_string_equal(replies(), "O");
  assert_non_null(ctx.msg);
  assert_int_equal(milter_ctx_post(&ctx, post_letter, "1"), 0);
  assert_int_equal(atomic_load(&ctx.msg->post_busy), 1);
  assert_int_equal(milter_ctx_post(&ctx, post_letter, "2"), 0);
  milter_poster_run(&poster);
  assert_string_equal(posted, "12");
  assert_int_equal(atomic_load(&ctx.msg->post_busy), 0);
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_CONTINUE), 0);
  assert_string_equal(replies(), "c");
  assert_null(ctx.msg);
  /* A post still queued when the reply is given some other way. */
  next_status['H'] = MILTER_PENDING;
  assert_int_equal(milter_enc_helo(&in, "h"), 0);
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_int_equal(milter_ctx_post(&ctx, post_letter, "3"), 0);
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_CONTINUE), 0);
  assert_string_equal(replies(), "c");
  assert_non_null(ctx.msg); /* its slot is queued */
  milter_poster_run(&poster);
  assert_string_equal(posted, "123");
  next_status['H'] = MILTER_CONTINUE;
  assert_int_equal(milter_enc_helo(&in, "h2"), 0);
  assert_int_equal(feed(), 0);
  assert_string_equal(replies(), "c");
  assert_null(ctx.msg); /* trimmed once the post ran */
  poster_stop();
}

/* ---- PENDING and milter_ctx_post from another thread --------------------- */

static milter_ctx *pend_ctx;
static milter_status f_eom_pending(milter_ctx *c) {
  pend_ctx = c;
  ev("E");
  return MILTER_PENDING;
}

static void post_fn(milter_ctx *c, void *arg) {
  assert_ptr_equal(arg, &ctx);
  assert_int_equal(milter_ctx_addheader(c, "X-Late", "1"), 0);
  assert_int_equal(milter_ctx_reply(c, MILTER_ACCEPT), 0);
  ev("P");
}

static void *worker(void *arg) {
  milter_ctx *c = arg;
  usleep(20000);
  assert_int_equal(milter_ctx_post(c, post_fn, c), 0);
  return NULL;
}

static void test_pending_post_thread(void **state) {
  (void)state;
  poster_start();
  desc.cb.eom = f_eom_pending;
  start();
  neg(6, MILTER_ACT_ALL, ALLP);
  connect_helo();
  message("<a@x>");
  message("<b@x>"); /* arrives in the same read: must wait */
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_string_equal(replies(), "O"
                                 "cccccccc");
  assert_true(milter_session_paused(&ctx));
  assert_int_equal(milter_ctx_progress(&ctx), 0);
  assert_string_equal(replies(), "p");
  /* More input while paused is kept, not processed. */
  assert_int_equal(milter_enc_unknown(&in, "NOOP"), 0);
  assert_int_equal(feed(), MILTER_SESSION_PAUSED);
  assert_null(strstr(events, "M(<b@x>"));
  assert_int_equal(milter_session_resume(&ctx), MILTER_SESSION_PAUSED);

  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, worker, &ctx), 0);
  while (strchr(events, 'P') == NULL)
    uv_run(&loop, UV_RUN_ONCE);
  pthread_join(t, NULL);
  assert_true(woke > 0);
  assert_string_equal(replies(), "ha");
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_ACCEPT), MILTER_E_STATE);
  /* The glue resumes: the second message runs and pauses again at EOM. */
  assert_int_equal(milter_session_resume(&ctx), MILTER_SESSION_PAUSED);
  assert_non_null(strstr(events, "EPM(<b@x>"));
  assert_string_equal(replies(), "cccccc");
  /* The MTA vanishes while the reply is pending: the ctx is kept. */
  assert_int_equal(milter_session_gone(&ctx), 1);
  assert_null(strchr(events, 'X'));
  assert_int_equal(milter_ctx_addheader(&ctx, "A", "b"), MILTER_E_CLOSED);
  assert_int_equal(milter_ctx_reply(&ctx, MILTER_ACCEPT), MILTER_E_CLOSED);
  assert_int_equal(milter_session_gone(&ctx), 0);
  size_t n = strlen(events);
  assert_string_equal(events + n - 2, "AX");
  assert_string_equal(replies(), "");
  poster_stop();
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
      T(test_full_transaction),
      T(test_byte_by_byte),
      T(test_stream_body),
      T(test_required_missing),
      T(test_required_protocol_missing),
      T(test_v2),
      T(test_nr_negotiated),
      T(test_no_bits_from_null_callbacks),
      T(test_setsymlist),
      T(test_mds),
      T(test_big_packet_tolerated_and_hard_cap),
      T(test_malformed),
      T(test_macros_lifetime),
    T(test_message_block),
      T(test_abort_twice_and_after_eom),
      T(test_mail_after_eom_and_mid_message),
      T(test_quit_nc),
      T(test_out_of_order),
      T(test_setreply),
      T(test_actions_state),
      T(test_skip),
      T(test_leadspc_and_eob_payload),
      T(test_held_input),
      T(test_held_input_limits),
      T(test_post_slot),
      T(test_pending_post_thread),
      T(test_deferred_each_nr_kind),
      T(test_deferred_custom_reply_at_eom),
      T(test_deferred_after_pending),
      T(test_deferred_accept),
      T(test_deferred_connection),
      T(test_deferred_dropped),
      T(test_eom_failure_drops_actions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
