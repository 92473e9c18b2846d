/* client_proto.h -- internal: the MTA side's protocol rules, shared by the
 * blocking client (client.c) and the libuv client (aclient.c).  No I/O here:
 * the callers move bytes, these functions decide what a packet means. */
#ifndef MF_CORE_CLIENT_PROTO_H
#define MF_CORE_CLIENT_PROTO_H

#include <mailfilter/milter_client.h>
#include <mailfilter/milter_codec.h>

typedef struct mcp {
  milter_client_opts opts;
  int negotiated;
  uint32_t version, actions, protocol, data_size;
  char *symlist[MILTER_M_COUNT];
  char errmsg[256];
} mcp;

/* Checks and defaults of the options; 0 or MILTER_E_INVAL. */
int mcp_init(mcp *p, const milter_client_opts *opts);
/* Forget the negotiation (symlists freed). */
void mcp_reset(mcp *p);

/* Set errmsg and return err. */
__attribute__((format(printf, 3, 4))) int mcp_fail(mcp *p, int err,
                                                   const char *fmt, ...);

/* Apply the milter's answer to SMFIC_OPTNEG (checks it first). */
int mcp_negotiated(mcp *p, const milter_packet *pkt);
void mcp_nego_out(const mcp *p, milter_client_nego *out);

/* How an event goes on the wire after negotiation. */
enum { MCP_NOT_SENT = 0, MCP_NOREPLY = 1, MCP_REPLY = 2 };
int mcp_event_mode(const mcp *p, uint8_t cmd);

/* One reply packet to cmd: 1 = final reply stored in r, 0 = PROGRESS or a
 * modification stored in r (keep reading; restart the timer), <0 = the
 * milter broke the protocol (errmsg set). */
int mcp_reply(mcp *p, uint8_t cmd, const milter_packet *pkt,
              milter_client_result *r);

/* The blocking client runs on the libuv one (aclient.c): connect and
 * negotiate as two steps, and the protocol state of an aclient. */
#include <mailfilter/milter_aclient.h>
int mcp_aclient_connect(milter_aclient *ac, const char *spec,
                        milter_aclient_cb cb, void *arg);
int mcp_aclient_negotiate(milter_aclient *ac, milter_aclient_cb cb,
                          void *arg);
const mcp *mcp_aclient_proto(const milter_aclient *ac);

#endif
