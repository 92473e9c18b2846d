/* client_proto.c -- the MTA side's protocol rules (client_proto.h): option
 * negotiation checks, which events go on the wire and are answered, and
 * what a reply packet means.  Shared by client.c and aclient.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_proto.h"
#include "mf_alloc.h"

void milter_client_opts_init(milter_client_opts *o) {
  memset(o, 0, sizeof *o);
  o->version = MILTER_PROTO_VERSION;
  o->actions = MILTER_ACT_ALL;
  o->protocol = MILTER_P_ALL_STEPS | MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  o->connect_timeout_ms = 30000;
  o->command_timeout_ms = 30000;
  o->eom_timeout_ms = 300000;
  o->hard_cap = MILTER_DEFAULT_HARD_CAP;
}

int mcp_init(mcp *p, const milter_client_opts *opts) {
  memset(p, 0, sizeof *p);
  if (opts != NULL)
    p->opts = *opts;
  else
    milter_client_opts_init(&p->opts);
  if (p->opts.version < MILTER_PROTO_VERSION_MIN ||
      p->opts.version > MILTER_PROTO_VERSION)
    return MILTER_E_INVAL;
  if (p->opts.hard_cap == 0)
    p->opts.hard_cap = MILTER_DEFAULT_HARD_CAP;
  return 0;
}

void mcp_reset(mcp *p) {
  p->negotiated = 0;
  p->version = p->actions = p->protocol = p->data_size = 0;
  for (int i = 0; i < MILTER_M_COUNT; i++) {
    free(p->symlist[i]);
    p->symlist[i] = NULL;
  }
}

int mcp_fail(mcp *p, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->errmsg, sizeof p->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

/* ------------------------------------------------------------------------ */
/* Negotiation                                                              */
/* ------------------------------------------------------------------------ */

int mcp_negotiated(mcp *p, const milter_packet *pkt) {
  mcp_reset(p);
  milter_reply rep;
  const char *why = NULL;
  if (pkt->cmd != MILTER_REPLY_OPTNEG)
    return mcp_fail(p, MILTER_E_NEGOTIATE,
                    "milter answered option negotiation with %s (0x%02x)",
                    milter_reply_name(pkt->cmd), pkt->cmd);
  if (milter_parse_reply(pkt, &rep, &why) < 0)
    return mcp_fail(p, MILTER_E_PROTO, "malformed SMFIR_OPTNEG: %s",
                    why ? why : "invalid");
  const milter_optneg *o = &rep.u.optneg;
  const milter_client_opts *off = &p->opts;
  if (o->version < MILTER_PROTO_VERSION_MIN)
    return mcp_fail(p, MILTER_E_NEGOTIATE, "milter speaks protocol version %u",
                    (unsigned)o->version);
  if (o->actions & ~off->actions)
    return mcp_fail(p, MILTER_E_NEGOTIATE,
                    "milter asks for actions 0x%x not offered (offered 0x%x)",
                    (unsigned)(o->actions & ~off->actions),
                    (unsigned)off->actions);
  uint32_t mds = MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  if (o->protocol & ~off->protocol & ~mds)
    return mcp_fail(p, MILTER_E_NEGOTIATE,
                    "milter asks for protocol steps 0x%x not offered "
                    "(offered 0x%x)",
                    (unsigned)(o->protocol & ~off->protocol & ~mds),
                    (unsigned)off->protocol);
  p->version = o->version < off->version ? o->version : off->version;
  p->actions = o->actions;
  p->protocol = o->protocol;
  uint32_t both = o->protocol & off->protocol;
  p->data_size = (both & MILTER_P_MDS_1M)     ? MILTER_DATA_1M
                 : (both & MILTER_P_MDS_256K) ? MILTER_DATA_256K
                                              : MILTER_DATA_64K;
  for (int i = 0; i < MILTER_M_COUNT; i++)
    if (o->symlist[i] != NULL && o->symlist[i][0] != '\0' &&
        (p->symlist[i] = xstrdup(o->symlist[i])) == NULL) {
      mcp_reset(p);
      return mcp_fail(p, MILTER_E_NOMEM, "out of memory");
    }
  p->negotiated = 1;
  return 0;
}

void mcp_nego_out(const mcp *p, milter_client_nego *out) {
  out->version = p->version;
  out->actions = p->actions;
  out->protocol = p->protocol;
  out->data_size = p->data_size;
  for (int i = 0; i < MILTER_M_COUNT; i++)
    out->symlist[i] = p->symlist[i];
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

int mcp_event_mode(const mcp *p, uint8_t cmd) {
  uint32_t no = 0, nr = 0, minv = 2;
  switch (cmd) {
  case MILTER_CMD_CONNECT:
    no = MILTER_P_NOCONNECT, nr = MILTER_P_NR_CONN;
    break;
  case MILTER_CMD_HELO:
    no = MILTER_P_NOHELO, nr = MILTER_P_NR_HELO;
    break;
  case MILTER_CMD_MAIL:
    no = MILTER_P_NOMAIL, nr = MILTER_P_NR_MAIL;
    break;
  case MILTER_CMD_RCPT:
    no = MILTER_P_NORCPT, nr = MILTER_P_NR_RCPT;
    break;
  case MILTER_CMD_DATA:
    no = MILTER_P_NODATA, nr = MILTER_P_NR_DATA, minv = 4;
    break;
  case MILTER_CMD_HEADER:
    no = MILTER_P_NOHDRS, nr = MILTER_P_NR_HDR;
    break;
  case MILTER_CMD_EOH:
    no = MILTER_P_NOEOH, nr = MILTER_P_NR_EOH;
    break;
  case MILTER_CMD_BODY:
    no = MILTER_P_NOBODY, nr = MILTER_P_NR_BODY;
    break;
  case MILTER_CMD_UNKNOWN:
    no = MILTER_P_NOUNKNOWN, nr = MILTER_P_NR_UNKN, minv = 3;
    break;
  case MILTER_CMD_EOB:
    break;
  default: /* ABORT, QUIT, QUIT_NC, MACRO: never answered */
    return MCP_NOREPLY;
  }
  if ((p->protocol & no) || p->version < minv)
    return MCP_NOT_SENT;
  return (p->protocol & nr) ? MCP_NOREPLY : MCP_REPLY;
}

static int is_final(uint8_t code) {
  switch (code) {
  case MILTER_REPLY_ACCEPT:
  case MILTER_REPLY_CONTINUE:
  case MILTER_REPLY_REJECT:
  case MILTER_REPLY_TEMPFAIL:
  case MILTER_REPLY_DISCARD:
  case MILTER_REPLY_REPLYCODE:
    return 1;
  }
  return 0;
}

static uint32_t action_bit(uint8_t code) {
  switch (code) {
  case MILTER_REPLY_ADDHEADER:
  case MILTER_REPLY_INSHEADER:
    return MILTER_ACT_ADDHDRS;
  case MILTER_REPLY_CHGHEADER:
    return MILTER_ACT_CHGHDRS;
  case MILTER_REPLY_ADDRCPT:
    return MILTER_ACT_ADDRCPT;
  case MILTER_REPLY_ADDRCPT_PAR:
    return MILTER_ACT_ADDRCPT_PAR;
  case MILTER_REPLY_DELRCPT:
    return MILTER_ACT_DELRCPT;
  case MILTER_REPLY_CHGFROM:
    return MILTER_ACT_CHGFROM;
  case MILTER_REPLY_REPLBODY:
    return MILTER_ACT_CHGBODY;
  case MILTER_REPLY_QUARANTINE:
    return MILTER_ACT_QUARANTINE;
  }
  return 0;
}

static char *dup_str(const char *s) { return s != NULL ? xstrdup(s) : NULL; }

void milter_client_result_free(milter_client_result *r) {
  if (r == NULL)
    return;
  free(r->text);
  for (size_t i = 0; i < r->n_actions; i++) {
    free(r->actions[i].name);
    free(r->actions[i].value);
    free(r->actions[i].body);
  }
  free(r->actions);
  memset(r, 0, sizeof *r);
}

static milter_action *new_action(milter_client_result *r) {
  milter_action *a = xrealloc(r->actions, (r->n_actions + 1) * sizeof *a);
  if (a == NULL)
    return NULL;
  r->actions = a;
  a = &r->actions[r->n_actions++];
  memset(a, 0, sizeof *a);
  return a;
}

/* Every SMFIR_REPLBODY packet goes into one action at the position of the
 * first. */
static int add_body(mcp *p, const milter_reply *rep, milter_client_result *r) {
  milter_action *b = NULL;
  for (size_t i = 0; i < r->n_actions; i++)
    if (r->actions[i].type == MILTER_ACTION_REPLBODY)
      b = &r->actions[i];
  if (b == NULL) {
    if ((b = new_action(r)) == NULL)
      return mcp_fail(p, MILTER_E_NOMEM, "out of memory");
    b->type = MILTER_ACTION_REPLBODY;
  }
  size_t n = rep->u.body.len;
  if (n > 0) {
    uint8_t *q = xrealloc(b->body, b->body_len + n);
    if (q == NULL)
      return mcp_fail(p, MILTER_E_NOMEM, "out of memory");
    memcpy(q + b->body_len, rep->u.body.data, n);
    b->body = q;
    b->body_len += n;
  }
  b->chunks++;
  return 0;
}

static int add_action(mcp *p, const milter_reply *rep,
                      milter_client_result *r) {
  if (rep->code == MILTER_REPLY_REPLBODY)
    return add_body(p, rep, r);
  milter_action *a = new_action(r);
  if (a == NULL)
    return mcp_fail(p, MILTER_E_NOMEM, "out of memory");
  a->type = (milter_action_type)rep->code;
  const char *name = NULL, *value = NULL;
  switch (rep->code) {
  case MILTER_REPLY_ADDHEADER:
  case MILTER_REPLY_INSHEADER:
  case MILTER_REPLY_CHGHEADER:
    a->index = rep->u.header.index;
    name = rep->u.header.name;
    value = rep->u.header.value;
    break;
  case MILTER_REPLY_QUARANTINE:
    value = rep->u.text;
    break;
  default: /* + 2 - e */
    name = rep->u.rcpt.addr;
    value = rep->u.rcpt.args;
    break;
  }
  a->name = dup_str(name);
  a->value = dup_str(value);
  if ((name != NULL && a->name == NULL) || (value != NULL && a->value == NULL))
    return mcp_fail(p, MILTER_E_NOMEM, "out of memory");
  return 0;
}

int mcp_reply(mcp *p, uint8_t cmd, const milter_packet *pkt,
              milter_client_result *r) {
  milter_reply rep;
  const char *why = NULL;
  if (milter_parse_reply(pkt, &rep, &why) < 0)
    return mcp_fail(p, MILTER_E_PROTO, "malformed %s (0x%02x) after %s: %s",
                    milter_reply_name(pkt->cmd), pkt->cmd, milter_cmd_name(cmd),
                    why ? why : "invalid");
  if (rep.code == MILTER_REPLY_PROGRESS) {
    r->progress++;
    return 0;
  }
  if (is_final(rep.code) ||
      (rep.code == MILTER_REPLY_SKIP && cmd == MILTER_CMD_BODY &&
       (p->protocol & MILTER_P_SKIP))) {
    r->status = MILTER_CLIENT_REPLIED;
    r->reply = rep.code;
    if (rep.code == MILTER_REPLY_REPLYCODE &&
        (r->text = dup_str(rep.u.text)) == NULL)
      return mcp_fail(p, MILTER_E_NOMEM, "out of memory");
    return 1;
  }
  uint32_t bit = action_bit(rep.code);
  if (bit == 0)
    return mcp_fail(p, MILTER_E_PROTO, "milter sent %s (0x%02x) in reply to %s",
                    milter_reply_name(rep.code), rep.code,
                    milter_cmd_name(cmd));
  if (cmd != MILTER_CMD_EOB)
    return mcp_fail(p, MILTER_E_PROTO,
                    "milter sent %s before end of message (in reply to %s)",
                    milter_reply_name(rep.code), milter_cmd_name(cmd));
  if (!(p->actions & bit))
    return mcp_fail(p, MILTER_E_NOTSUP, "milter sent %s without negotiating it",
                    milter_reply_name(rep.code));
  return add_action(p, &rep, r);
}
