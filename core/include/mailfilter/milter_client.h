/*
 * milter_client.h -- the MTA side of the milter protocol: connect to a
 * milter, negotiate, send every SMTP event and collect the replies and the
 * end-of-message modifications, as Postfix or Sendmail would.
 *
 *   #include <mailfilter/milter_client.h>
 *
 * Uses: testing a milter byte for byte, driving load against it, or an MTA
 * that wants to call milters.
 *
 * THIS CLIENT IS BLOCKING: a convenience wrapper over the libuv client
 * (milter_aclient.h).  Each milter_client owns a private uv loop; each call
 * sends its command (its bytes are on the wire when it returns) and runs
 * that loop until the reply is in or a timeout fires.  For many connections
 * on one loop use milter_aclient directly: same options, negotiation rules
 * and result types.
 *
 * THREAD RULES
 *   A milter_client is used by one thread at a time (no internal locking);
 *   its private loop is never shared.
 *   Different clients may be used on different threads concurrently.  The
 *   functions keep no global state.
 *
 * ERRORS
 *   Every function returns 0 on success or a negative MILTER_E_* code:
 *     MILTER_E_INVAL    bad argument (API misuse), connection unchanged
 *     MILTER_E_STATE    not connected / not negotiated
 *     MILTER_E_ADDR     bad socket spec (milter_client_open)
 *     MILTER_E_IO       socket error
 *     MILTER_E_EOF      the milter closed the connection
 *     MILTER_E_TIMEOUT  no (complete) reply within the timeout
 *     MILTER_E_PROTO    the milter broke the protocol: malformed packet,
 *                       unexpected reply code, modification before end of
 *                       message, SKIP without MILTER_P_SKIP ...
 *     MILTER_E_TOOBIG   a reply packet larger than the hard cap
 *     MILTER_E_NOTSUP   the milter sent a modification it did not negotiate
 *     MILTER_E_NEGOTIATE the milter's option negotiation is unacceptable
 *     MILTER_E_NOMEM    out of memory
 *   After any error other than MILTER_E_INVAL and MILTER_E_STATE the
 *   connection is closed (the stream cannot be trusted any more); later
 *   calls return MILTER_E_STATE until milter_client_open() is called again.
 * milter_client_errmsg() describes the last error in English.
 *
 * SIGNALS
 *   Writing to a milter that has gone returns MILTER_E_EOF (or _IO) and
 *   never raises SIGPIPE, whatever the application's disposition (none is
 *   changed): the private loop runs with SIGPIPE blocked in the calling
 *   thread, the mask is restored before the call returns.  See milter.h,
 *   SIGNALS (SIGPIPE).
 */
#ifndef MAILFILTER_MILTER_CLIENT_H
#define MAILFILTER_MILTER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <mailfilter/export.h>
#include <mailfilter/milter_proto.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct milter_client milter_client;

/* ======================================================================== */
/* Options                                                                  */
/* ======================================================================== */

/* What the client offers and how long it waits; fill with
 * milter_client_opts_init() and change what you need. */
typedef struct milter_client_opts {
  /* Protocol version offered (2..6).  Default MILTER_PROTO_VERSION (6). */
  uint32_t version;
  /* Actions offered (MILTER_ACT_*).  Default MILTER_ACT_ALL. */
  uint32_t actions;
  /* Protocol steps offered (MILTER_P_*, including MILTER_P_MDS_256K /
   * MILTER_P_MDS_1M).  Default MILTER_P_ALL_STEPS | MILTER_P_MDS_256K |
   * MILTER_P_MDS_1M.  Bits the version does not know are NOT removed: the
   * caller offers exactly what it sets. */
  uint32_t protocol;
  /* Time to establish the socket connection.  Default 30000 ms. */
  uint64_t connect_timeout_ms;
  /* Time to wait for the reply to one command (restarted by each
   * SMFIR_PROGRESS).  Default 30000 ms (Postfix's milter_command_timeout). */
  uint64_t command_timeout_ms;
  /* Time to wait for the replies to end of message (restarted by each
   * packet).  Default 300000 ms (Postfix's milter_content_timeout). */
  uint64_t eom_timeout_ms;
  /* Largest reply packet accepted.  Default MILTER_DEFAULT_HARD_CAP. */
  uint32_t hard_cap;
} milter_client_opts;

MF_API void milter_client_opts_init(milter_client_opts *opts);

/* ======================================================================== */
/* Results                                                                  */
/* ======================================================================== */

/* Whether an event went on the wire and whether the milter answered. */
typedef enum milter_client_status {
  MILTER_CLIENT_REPLIED = 0, /* sent; reply (and actions) in the result */
  MILTER_CLIENT_NOREPLY = 1, /* sent; the NR_* bit says no reply comes
                                (also ABORT, QUIT, QUIT_NC, macros) */
  MILTER_CLIENT_NOT_SENT = 2 /* not sent: the milter switched the event off
                                with a NO* bit, or the negotiated version
                                predates it (DATA < v4, UNKNOWN < v3) */
} milter_client_status;

/* One end-of-message modification, in the order the milter sent them. */
typedef enum milter_action_type {
  MILTER_ACTION_ADDHEADER = MILTER_REPLY_ADDHEADER,     /* name, value */
  MILTER_ACTION_INSHEADER = MILTER_REPLY_INSHEADER,     /* index, name, value */
  MILTER_ACTION_CHGHEADER = MILTER_REPLY_CHGHEADER,     /* index, name, value
                                                           ("" = delete) */
  MILTER_ACTION_ADDRCPT = MILTER_REPLY_ADDRCPT,         /* name = rcpt */
  MILTER_ACTION_ADDRCPT_PAR = MILTER_REPLY_ADDRCPT_PAR, /* name, value=args */
  MILTER_ACTION_DELRCPT = MILTER_REPLY_DELRCPT,         /* name = rcpt */
  MILTER_ACTION_CHGFROM = MILTER_REPLY_CHGFROM,         /* name, value=args or
                                                           NULL */
  MILTER_ACTION_REPLBODY = MILTER_REPLY_REPLBODY,       /* body, body_len */
  MILTER_ACTION_QUARANTINE = MILTER_REPLY_QUARANTINE    /* value = reason */
} milter_action_type;

typedef struct milter_action {
  milter_action_type type;
  uint32_t index; /* INSHEADER (0-based position), CHGHEADER (1-based) */
  char *name;     /* header name or address; NULL where unused */
  char *value;    /* header value, ESMTP args or reason; NULL where unused */
  /* REPLBODY: every SMFIR_REPLBODY packet of the message concatenated into
   * one body (one action, at the position of the first packet).  Not
   * NUL-terminated; NULL when the replacement body is empty. */
  uint8_t *body;
  size_t body_len;
  /* REPLBODY: how many SMFIR_REPLBODY packets carried it. */
  unsigned chunks;
} milter_action;

/* The outcome of one event.  Zero-initialise it (or pass one returned
 * earlier: the event functions call milter_client_result_free() on it
 * first).  All pointers are owned by the result and released with
 * milter_client_result_free(). */
typedef struct milter_client_result {
  milter_client_status status;
  /* The final reply: MILTER_REPLY_ACCEPT, _CONTINUE, _REJECT, _TEMPFAIL,
   * _DISCARD, _SKIP (body only) or _REPLYCODE; 0 unless REPLIED. */
  uint8_t reply;
  /* SMFIR_REPLYCODE: the full text as sent ("550 5.7.1 go away", lines
   * joined by "\r\n"); NULL otherwise. */
  char *text;
  /* SMFIR_PROGRESS packets received before the reply. */
  unsigned progress;
  /* milter_client_body(): number of SMFIC_BODY packets sent. */
  unsigned chunks_sent;
  /* End of message only: the modifications in wire order. */
  milter_action *actions;
  size_t n_actions;
} milter_client_result;

/* Free everything a result owns and zero it.  NULL is a no-op. */
MF_API void milter_client_result_free(milter_client_result *r);

/* ======================================================================== */
/* The client                                                               */
/* ======================================================================== */

/* Create a client (not connected).  opts NULL = defaults; it is copied.
 * Returns 0 and *out, MILTER_E_NOMEM, or MILTER_E_INVAL (version outside
 * 2..6).  Free with milter_client_free(). */
MF_API int milter_client_new(milter_client **out,
                             const milter_client_opts *opts);

/* Close the connection (without sending QUIT) and free the client.  NULL is
 * a no-op. */
MF_API void milter_client_free(milter_client *c);

/* Connect to a milter socket spec as milter_parse_spec() reads it
 * ("unix:/path", "inet:PORT@HOST", "inet6:PORT@HOST" ...).  Closes a
 * previous connection first.  Returns 0, MILTER_E_ADDR, MILTER_E_IO,
 * MILTER_E_TIMEOUT. */
MF_API int milter_client_open(milter_client *c, const char *spec);

/* Close the socket without sending anything.  Safe to call twice. */
MF_API void milter_client_close(milter_client *c);

/* The last error in English ("milter sent SMFIR_ADDHEADER before end of
 * message"), "" if none.  Valid until the next call on c. */
MF_API const char *milter_client_errmsg(const milter_client *c);

/* ---- Negotiation --------------------------------------------------------- */

/* The milter's answer to option negotiation. */
typedef struct milter_client_nego {
  uint32_t version;   /* the version both sides use: min(offered, milter's) */
  uint32_t actions;   /* what the milter asked for (subset of offered) */
  uint32_t protocol;  /* what the milter asked for, MDS bits included */
  uint32_t data_size; /* MILTER_DATA_64K, _256K or _1M */
  /* Macro lists the milter requested per stage (space-separated names as
   * sent), NULL where none.  Owned by the client, valid until the next
   * milter_client_negotiate/open or milter_client_free. */
  const char *symlist[MILTER_M_COUNT];
} milter_client_nego;

/* Send SMFIC_OPTNEG with the offered version/actions/protocol and read the
 * answer.  *out (may be NULL) receives it.  The answer must be SMFIR_OPTNEG
 * with version >= 2 and no action or step bit beyond what was offered (else
 * MILTER_E_NEGOTIATE).  Then the NO* and NR_* bits decide for every later
 * event whether it is sent and whether a reply is read. */
MF_API int milter_client_negotiate(milter_client *c, milter_client_nego *out);

/* The negotiated values (all 0 before negotiation). */
MF_API uint32_t milter_client_version(const milter_client *c);
MF_API uint32_t milter_client_actions(const milter_client *c);
MF_API uint32_t milter_client_protocol(const milter_client *c);
MF_API uint32_t milter_client_data_size(const milter_client *c);

/* ---- Events --------------------------------------------------------------
 * Each sends one command (body: one per chunk) and fills *r (r must not be
 * NULL).  Strings are copied onto the wire during the call; nothing is kept.
 * A reply that is not allowed for the event is MILTER_E_PROTO: before end of
 * message a, c, r, t, d, y (and s at BODY when MILTER_P_SKIP was
 * negotiated), with any number of p before; at end of message modification
 * packets first, then one of a, c, r, t, d, y. */

/* SMFIC_MACRO for the command cmd (MILTER_CMD_CONNECT, _HELO, _MAIL, _RCPT,
 * _DATA, _EOH, _EOB, _HEADER, _BODY, _UNKNOWN): n_pairs name/value pairs in
 * names_values[0..2*n_pairs).  Never answered; sent even when the command
 * itself is switched off (as Postfix does), so call it only when you will
 * send the command. */
MF_API int milter_client_macro(milter_client *c, uint8_t cmd, size_t n_pairs,
                               const char *const *names_values);

/* family: MILTER_FAMILY_INET/_INET6 (address = IP text, port in host
 * order), _UNIX (address = path), _UNKNOWN (address and port ignored). */
MF_API int milter_client_connect(milter_client *c, const char *hostname,
                                 char family, uint16_t port,
                                 const char *address, milter_client_result *r);
MF_API int milter_client_helo(milter_client *c, const char *helo,
                              milter_client_result *r);
/* addr as in the SMTP command ("<a@b>"), argv: ESMTP args (argc may be 0). */
MF_API int milter_client_mail(milter_client *c, const char *addr, size_t argc,
                              const char *const *argv, milter_client_result *r);
MF_API int milter_client_rcpt(milter_client *c, const char *addr, size_t argc,
                              const char *const *argv, milter_client_result *r);
MF_API int milter_client_data(milter_client *c, milter_client_result *r);
MF_API int milter_client_header(milter_client *c, const char *name,
                                const char *value, milter_client_result *r);
MF_API int milter_client_eoh(milter_client *c, milter_client_result *r);
/* Splits data into SMFIC_BODY packets of at most the negotiated data size
 * (len 0 sends nothing: NOT_SENT).  Without NR_BODY each chunk's reply is
 * read; the first reply other than CONTINUE (SKIP, ACCEPT, REJECT ...) stops
 * the sending and is the result; r->chunks_sent counts the packets sent and
 * r->progress the PROGRESS packets of all chunks. */
MF_API int milter_client_body(milter_client *c, const void *data, size_t len,
                              milter_client_result *r);
/* SMFIC_BODYEOB; r->actions gets every modification in wire order. */
MF_API int milter_client_eom(milter_client *c, milter_client_result *r);
/* SMFIC_ABORT, SMFIC_QUIT, SMFIC_QUIT_NC: never answered.  QUIT closes the
 * socket afterwards; QUIT_NC keeps it (a new CONNECT follows, without a new
 * negotiation). */
MF_API int milter_client_abort(milter_client *c);
MF_API int milter_client_quit(milter_client *c);
MF_API int milter_client_quit_nc(milter_client *c);
/* SMFIC_UNKNOWN with the raw SMTP command line. */
MF_API int milter_client_unknown(milter_client *c, const char *line,
                                 milter_client_result *r);

#ifdef __cplusplus
}
#endif
#endif
