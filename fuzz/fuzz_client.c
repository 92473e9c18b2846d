/* fuzz_client.c -- what a hostile milter sends to the MTA side: the fuzz
 * input is the milter's byte stream.  It goes through the code both
 * clients (core/aclient.c, and core/client.c on top of it) run on every
 * byte they read, without a socket:
 *
 *   milter_decoder_feed (limit: the client's hard_cap, fed in slices)
 *     -> mcp_negotiated        the answer to SMFIC_OPTNEG
 *     -> mcp_event_mode        which events are sent and answered
 *     -> mcp_reply             every packet while a reply is due: PROGRESS,
 *                              modifications at end of message, the final
 *                              reply (REPLYCODE text, SKIP in the body)
 *
 * and then through what milter-check (core/tools) does with the decoded
 * results: the human report, the JSON report, and the end-of-message
 * actions applied to the message (mc_result_apply).
 *
 * The conversation is milter-check's: OPTNEG, CONNECT, HELO, UNKNOWN, then
 * transactions (MAIL, two RCPT, DATA, the headers, EOH, a body of 1 to 4
 * chunks, EOM) until the input runs out.  Like aclient.c, a body chunk
 * answered with CONTINUE is followed by the next chunk in the same wait,
 * and bytes are decoded only while a reply is awaited.
 *
 * Input: byte 0 = slice size the decoder is fed (0: all at once, else
 * 1..31); byte 1 = what the MTA offers (bits 0-2: version 6 down to 2;
 * bit 3: drop the actions byte 2 names; bit 4: drop the protocol bits byte
 * 2 names; bits 5-6: body chunks - 1; bit 7: hard cap 512 bytes); byte 2 =
 * the mask for bits 3 and 4.  All zero = milter-check's defaults.  The rest
 * is the milter's bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/client_proto.h"
#include "core/tools/milter_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What bit i of byte 2 removes from the offer. */
static const uint32_t act_bits[8] = {
    MILTER_ACT_ADDHDRS, MILTER_ACT_CHGBODY,    MILTER_ACT_ADDRCPT,
    MILTER_ACT_DELRCPT, MILTER_ACT_CHGHDRS,    MILTER_ACT_QUARANTINE,
    MILTER_ACT_CHGFROM, MILTER_ACT_ADDRCPT_PAR};
static const uint32_t proto_bits[8] = {MILTER_P_SKIP,        MILTER_P_MDS_256K,
                                       MILTER_P_MDS_1M,      MILTER_P_NR_RCPT,
                                       MILTER_P_NOUNKNOWN,   MILTER_P_NR_HDR,
                                       MILTER_P_HDR_LEADSPC, MILTER_P_RCPT_REJ};

static const char message[] = "Subject: hello\r\n"
                              "From: <a@example.org>\r\n"
                              "To: b@example.org,\r\n c@example.org\r\n"
                              "Subject: second\r\n"
                              "\r\n"
                              "body line\r\n";

static FILE *devnull;
static mc_msg msg;

typedef struct fz {
  const uint8_t *in;
  size_t len, off, slice;
  milter_decoder dec;
  mcp p;
  unsigned body_chunks;
  mc_report rep;
} fz;

/* The next packet of the milter: 1, 0 at the end of the input (the milter
 * hung up), or the decoder's error. */
static int next_packet(fz *z, milter_packet *pkt) {
  while (z->off < z->len) {
    size_t n = z->len - z->off;
    if (z->slice != 0 && n > z->slice)
      n = z->slice;
    size_t used = 0;
    int rc = milter_decoder_feed(&z->dec, z->in + z->off, n, &used, pkt);
    z->off += used;
    if (rc != 0)
      return rc;
    if (used == 0)
      break;
  }
  return 0;
}

/* Wait for the reply to cmd as aclient.c's on_packet does.  For BODY,
 * CONTINUE to a chunk sends the next one (chunks counted in r).  Returns 0
 * with the final reply in r, or <0: the connection is gone. */
static int await(fz *z, uint8_t cmd, milter_client_result *r) {
  unsigned chunks = cmd == MILTER_CMD_BODY ? z->body_chunks : 0;
  if (chunks > 0)
    r->chunks_sent = 1;
  for (;;) {
    milter_packet pkt;
    int rc = next_packet(z, &pkt);
    if (rc == 0)
      return mcp_fail(&z->p, MILTER_E_EOF, "milter closed the connection");
    if (rc < 0)
      return mcp_fail(&z->p, rc, "milter sent a malformed packet: %s",
                      milter_strerror(rc));
    rc = mcp_reply(&z->p, cmd, &pkt, r);
    if (rc < 0)
      return rc;
    if (rc == 0)
      continue; /* PROGRESS or a modification */
    if (r->reply == MILTER_REPLY_CONTINUE && r->chunks_sent < chunks) {
      r->status = 0;
      r->reply = 0;
      r->chunks_sent++;
      continue;
    }
    return 0;
  }
}

/* Room for every event of a transaction (11) or of the connection (3). */
#define MAX_EVENTS 16

static int trx_start(mc_trx *t) {
  memset(t, 0, sizeof *t);
  if ((t->ev = calloc(MAX_EVENTS, sizeof *t->ev)) == NULL)
    return MILTER_E_NOMEM;
  t->cap_ev = MAX_EVENTS;
  return 0;
}

/* A new event of t, as check_run.c records it. */
static mc_event *record(mc_trx *t, uint8_t cmd, const char *arg,
                        const milter_client_result *r) {
  if (t->n_ev == t->cap_ev)
    abort(); /* MAX_EVENTS is wrong */
  mc_event *e = &t->ev[t->n_ev++];
  memset(e, 0, sizeof *e);
  e->cmd = cmd;
  e->arg = arg != NULL ? mc_strdup(arg) : NULL;
  e->status = r->status;
  e->reply = r->reply;
  e->progress = r->progress;
  e->chunks = r->chunks_sent;
  e->text = r->text != NULL ? mc_strdup(r->text) : NULL;
  mc_print_event(devnull, e);
  return e;
}

/* What the reply means to the MTA (milter-check's rules). */
static mc_decision decision(mc_trx *t, const milter_client_result *r) {
  if (r->status != MILTER_CLIENT_REPLIED)
    return MC_CONTINUE;
  mc_decision d = MC_CONTINUE;
  const char *text = NULL;
  switch (r->reply) {
  case MILTER_REPLY_ACCEPT:
    d = MC_ACCEPT;
    break;
  case MILTER_REPLY_REJECT:
    d = MC_REJECT, text = "550 5.7.1 Command rejected";
    break;
  case MILTER_REPLY_TEMPFAIL:
    d = MC_TEMPFAIL, text = "451 4.7.1 Service unavailable";
    break;
  case MILTER_REPLY_DISCARD:
    d = MC_DISCARD;
    break;
  case MILTER_REPLY_REPLYCODE:
    text = r->text != NULL ? r->text : "";
    d = text[0] == '4' ? MC_TEMPFAIL : MC_REJECT;
    break;
  }
  if (d != MC_CONTINUE) {
    free(t->reply);
    t->reply = text != NULL ? mc_strdup(text) : NULL;
    t->decision = d;
  }
  return d;
}

/* One event: sent or not as negotiated, and its reply.  Returns the
 * decision, or <0 when the connection is gone. */
static int event(fz *z, mc_trx *t, uint8_t cmd, const char *arg,
                 mc_event **ev) {
  milter_client_result r;
  memset(&r, 0, sizeof r);
  int mode = mcp_event_mode(&z->p, cmd);
  if (mode == MCP_NOT_SENT) {
    r.status = MILTER_CLIENT_NOT_SENT;
  } else if (mode == MCP_NOREPLY) {
    r.status = MILTER_CLIENT_NOREPLY;
  } else {
    int rc = await(z, cmd, &r);
    if (rc < 0) {
      milter_client_result_free(&r);
      return rc;
    }
  }
  mc_event *e = record(t, cmd, arg, &r);
  if (ev != NULL)
    *ev = e;
  int d = decision(t, &r);
  if (cmd == MILTER_CMD_EOB) {
    milter_client_result_free(&t->eom);
    t->eom = r; /* the actions stay with the transaction */
    mc_print_actions(devnull, &t->eom);
  } else {
    milter_client_result_free(&r);
  }
  return d;
}

/* One transaction into t; <0 when the connection is gone. */
static int transaction(fz *z, mc_trx *t) {
  static const char *const rcpts[] = {"<b@example.org>", "<c@example.org>"};
  mc_strv accepted = {0};
  int d = event(z, t, MILTER_CMD_MAIL, "<a@example.org>", NULL);
  for (size_t i = 0; i < 2 && d == MC_CONTINUE; i++) {
    mc_event *e = NULL;
    int rd = event(z, t, MILTER_CMD_RCPT, rcpts[i], &e);
    if (rd < 0) {
      d = rd;
    } else if (rd == MC_REJECT || rd == MC_TEMPFAIL) {
      e->rcpt_rejected = 1; /* the recipient is dropped, the mail goes on */
      t->decision = MC_CONTINUE;
    } else {
      d = rd;
      if (mc_strv_push(&accepted, rcpts[i], (size_t)-1) < 0)
        d = MILTER_E_NOMEM;
    }
  }
  if (d == MC_CONTINUE && accepted.n == 0)
    d = t->decision = MC_REJECT;
  if (d == MC_CONTINUE)
    d = event(z, t, MILTER_CMD_DATA, NULL, NULL);
  for (size_t i = 0; i < msg.n && d == MC_CONTINUE; i++)
    d = event(z, t, MILTER_CMD_HEADER, msg.h[i].name, NULL);
  if (d == MC_CONTINUE)
    d = event(z, t, MILTER_CMD_EOH, NULL, NULL);
  if (d == MC_CONTINUE)
    d = event(z, t, MILTER_CMD_BODY, "body", NULL);
  if (d == MC_CONTINUE)
    d = event(z, t, MILTER_CMD_EOB, NULL, NULL);
  if (d == MC_CONTINUE)
    d = t->decision = MC_ACCEPT;
  if (d == MC_ACCEPT) { /* the message as delivered */
    if (mc_result_init(&t->result, &msg, "<a@example.org>", &accepted) == 0) {
      t->has_result = 1;
      int leadspc = (z->p.protocol & MILTER_P_HDR_LEADSPC) != 0;
      for (size_t i = 0; i < t->eom.n_actions; i++)
        if (mc_result_apply(&t->result, &t->eom.actions[i], leadspc) < 0)
          break;
      if (t->result.quarantine != NULL)
        t->decision = MC_QUARANTINE;
    }
  }
  mc_strv_free(&accepted);
  mc_print_trx_end(devnull, t, 1);
  return d;
}

static void converse(fz *z) {
  mc_report *rep = &z->rep;
  milter_packet pkt;
  int rc = next_packet(z, &pkt);
  if (rc <= 0) {
    rep->error = rc < 0 ? rc : MILTER_E_EOF;
    return;
  }
  if ((rc = mcp_negotiated(&z->p, &pkt)) < 0) {
    rep->error = rc;
    return;
  }
  rep->negotiated = 1;
  mcp_nego_out(&z->p, &rep->nego);
  for (int i = 0; i < MILTER_M_COUNT; i++)
    if (rep->nego.symlist[i] != NULL)
      rep->nego.symlist[i] = mc_strdup(rep->nego.symlist[i]);
  mc_print_negotiation(devnull, &rep->nego);

  if (trx_start(&rep->conn) < 0)
    return;
  int d = event(z, &rep->conn, MILTER_CMD_CONNECT, "[192.0.2.1]", NULL);
  if (d == MC_CONTINUE)
    d = event(z, &rep->conn, MILTER_CMD_HELO, "client.example.org", NULL);
  if (d == MC_CONTINUE)
    d = event(z, &rep->conn, MILTER_CMD_UNKNOWN, "XYZZY", NULL);
  rep->decision = rep->conn.decision;
  rep->reply = rep->conn.reply;
  if (d != MC_CONTINUE) {
    if (d < 0)
      rep->error = d;
    return;
  }
  /* Transactions while the milter has something to say. */
  while (z->off < z->len && rep->n_trx < 32) {
    mc_trx *trx = realloc(rep->trx, (rep->n_trx + 1) * sizeof *trx);
    if (trx == NULL)
      return;
    rep->trx = trx;
    mc_trx *t = &trx[rep->n_trx++];
    if (trx_start(t) < 0)
      return;
    d = transaction(z, t);
    rep->decision = t->decision;
    rep->reply = t->reply;
    if (d < 0) {
      rep->error = d;
      return;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  if (devnull == NULL) {
    /* FUZZ_CLIENT_TRACE=1: the reports on stdout, to check an input. */
    devnull = getenv("FUZZ_CLIENT_TRACE") ? stdout : fopen("/dev/null", "w");
    if (devnull == NULL || mc_msg_parse(&msg, message, sizeof message - 1))
      abort();
  }
  fz z;
  memset(&z, 0, sizeof z);
  z.slice = data[0] % 32;
  milter_client_opts o;
  milter_client_opts_init(&o);
  uint8_t b = data[1], mask = data[2];
  o.version = MILTER_PROTO_VERSION - (uint32_t)((b & 7) % 5);
  for (int i = 0; i < 8; i++) {
    if ((b & 0x08) && (mask & (1u << i)))
      o.actions &= ~act_bits[i];
    if ((b & 0x10) && (mask & (1u << i)))
      o.protocol &= ~proto_bits[i];
  }
  z.body_chunks = 1u + ((b >> 5) & 3u);
  if (b & 0x80)
    o.hard_cap = 512;
  if (mcp_init(&z.p, &o) < 0)
    abort();
  milter_decoder_init(&z.dec, z.p.opts.hard_cap);
  z.in = data + 3;
  z.len = size - 3;

  converse(&z);
  if (z.rep.error != 0) {
    z.rep.errmsg = mc_strdup(z.p.errmsg);
    (void)mc_report_exit(&z.rep);
  }
  static char spec[] = "unix:/fuzz";
  mc_opts mo;
  memset(&mo, 0, sizeof mo);
  mo.spec = spec;
  mc_print_json(devnull, &mo, &z.rep);

  mc_report_free(&z.rep);
  milter_decoder_free(&z.dec);
  mcp_reset(&z.p);
  return 0;
}
