/*
 * milter_proto.h -- constants of the sendmail milter protocol (v2..v6) and the
 * error codes shared by every part of core.
 *
 * The values are protocol facts (they match sendmail's mfdef.h/mfapi.h).  This
 * header has no functions except milter_strerror()/milter_err_name() and may be
 * included from any thread.
 */
#ifndef MAILFILTER_MILTER_PROTO_H
#define MAILFILTER_MILTER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <mailfilter/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Protocol versions --------------------------------------------------- */
#define MILTER_PROTO_VERSION_MIN 2 /* oldest MTA version we serve */
#define MILTER_PROTO_VERSION 6     /* newest, what we offer */

/* ---- Commands, MTA -> milter (SMFIC_*) ----------------------------------- */
#define MILTER_CMD_ABORT 'A'
#define MILTER_CMD_BODY 'B'
#define MILTER_CMD_CONNECT 'C'
#define MILTER_CMD_MACRO 'D'
#define MILTER_CMD_EOB 'E' /* end of body = end of message */
#define MILTER_CMD_HELO 'H'
#define MILTER_CMD_QUIT_NC 'K' /* QUIT, new connection follows on this socket */
#define MILTER_CMD_HEADER 'L'
#define MILTER_CMD_MAIL 'M'
#define MILTER_CMD_EOH 'N'
#define MILTER_CMD_OPTNEG 'O'
#define MILTER_CMD_QUIT 'Q'
#define MILTER_CMD_RCPT 'R'
#define MILTER_CMD_DATA 'T'
#define MILTER_CMD_UNKNOWN 'U'

/* ---- Replies and actions, milter -> MTA (SMFIR_*) ------------------------ */
#define MILTER_REPLY_ADDRCPT '+'
#define MILTER_REPLY_DELRCPT '-'
#define MILTER_REPLY_ADDRCPT_PAR '2'
#define MILTER_REPLY_SHUTDOWN '4'
#define MILTER_REPLY_ACCEPT 'a'
#define MILTER_REPLY_REPLBODY 'b'
#define MILTER_REPLY_CONTINUE 'c'
#define MILTER_REPLY_DISCARD 'd'
#define MILTER_REPLY_CHGFROM 'e'
#define MILTER_REPLY_CONN_FAIL 'f'
#define MILTER_REPLY_ADDHEADER 'h'
#define MILTER_REPLY_INSHEADER 'i'
#define MILTER_REPLY_SETSYMLIST 'l'
#define MILTER_REPLY_CHGHEADER 'm'
#define MILTER_REPLY_PROGRESS 'p'
#define MILTER_REPLY_QUARANTINE 'q'
#define MILTER_REPLY_REJECT 'r'
#define MILTER_REPLY_SKIP 's'
#define MILTER_REPLY_TEMPFAIL 't'
#define MILTER_REPLY_REPLYCODE 'y'
#define MILTER_REPLY_OPTNEG 'O'

/* ---- Connect address families (SMFIA_*) ---------------------------------- */
#define MILTER_FAMILY_UNKNOWN 'U'
#define MILTER_FAMILY_UNIX 'L'
#define MILTER_FAMILY_INET '4'
#define MILTER_FAMILY_INET6 '6'

/* ---- Actions the filter may perform (SMFIF_*) ---------------------------- */
#define MILTER_ACT_ADDHDRS 0x00000001u
#define MILTER_ACT_CHGBODY 0x00000002u
#define MILTER_ACT_ADDRCPT 0x00000004u
#define MILTER_ACT_DELRCPT 0x00000008u
#define MILTER_ACT_CHGHDRS 0x00000010u
#define MILTER_ACT_QUARANTINE 0x00000020u
#define MILTER_ACT_CHGFROM 0x00000040u
#define MILTER_ACT_ADDRCPT_PAR 0x00000080u
#define MILTER_ACT_SETSYMLIST 0x00000100u
#define MILTER_ACT_ALL 0x000001FFu
#define MILTER_ACT_V2 0x0000003Fu /* what a v2 MTA knows */

/* ---- Protocol steps (SMFIP_*) -------------------------------------------- */
#define MILTER_P_NOCONNECT 0x00000001u
#define MILTER_P_NOHELO 0x00000002u
#define MILTER_P_NOMAIL 0x00000004u
#define MILTER_P_NORCPT 0x00000008u
#define MILTER_P_NOBODY 0x00000010u
#define MILTER_P_NOHDRS 0x00000020u
#define MILTER_P_NOEOH 0x00000040u
#define MILTER_P_NR_HDR 0x00000080u
#define MILTER_P_NOUNKNOWN 0x00000100u
#define MILTER_P_NODATA 0x00000200u
#define MILTER_P_SKIP 0x00000400u
#define MILTER_P_RCPT_REJ 0x00000800u
#define MILTER_P_NR_CONN 0x00001000u
#define MILTER_P_NR_HELO 0x00002000u
#define MILTER_P_NR_MAIL 0x00004000u
#define MILTER_P_NR_RCPT 0x00008000u
#define MILTER_P_NR_DATA 0x00010000u
#define MILTER_P_NR_UNKN 0x00020000u
#define MILTER_P_NR_EOH 0x00040000u
#define MILTER_P_NR_BODY 0x00080000u
#define MILTER_P_HDR_LEADSPC 0x00100000u
#define MILTER_P_MDS_256K 0x10000000u
#define MILTER_P_MDS_1M 0x20000000u
#define MILTER_P_ALL_STEPS 0x001FFFFFu /* every step flag of v6 */
#define MILTER_P_ALL_NO                                                       \
  (MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | MILTER_P_NORCPT | \
   MILTER_P_NOBODY | MILTER_P_NOHDRS | MILTER_P_NOEOH | MILTER_P_NOUNKNOWN |  \
   MILTER_P_NODATA)
#define MILTER_P_ALL_NR                                                       \
  (MILTER_P_NR_HDR | MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL | \
   MILTER_P_NR_RCPT | MILTER_P_NR_DATA | MILTER_P_NR_UNKN | MILTER_P_NR_EOH | \
   MILTER_P_NR_BODY)

/* ---- Macro stages for SETSYMLIST (SMFIM_*) ------------------------------- */
typedef enum milter_macro_stage {
  MILTER_M_CONNECT = 0,
  MILTER_M_HELO = 1,
  MILTER_M_ENVFROM = 2,
  MILTER_M_ENVRCPT = 3,
  MILTER_M_DATA = 4,
  MILTER_M_EOM = 5,
  MILTER_M_EOH = 6,
  MILTER_M_COUNT = 7
} milter_macro_stage;

/* ---- Data sizes ----------------------------------------------------------
 * The largest payload a peer may send; 64K is the default, 256K/1M are agreed
 * through MILTER_P_MDS_256K / MILTER_P_MDS_1M in option negotiation. */
#define MILTER_DATA_64K ((64u * 1024u) - 1u)
#define MILTER_DATA_256K ((256u * 1024u) - 1u)
#define MILTER_DATA_1M ((1024u * 1024u) - 1u)
/* Hard cap on any packet length we accept, whatever was negotiated; packets
 * above the negotiated data size are still tolerated up to this cap because
 * Postfix sends larger packets (e.g. long header values) without negotiation.
 * Configurable per server/client; this is the default (64 MiB). */
#define MILTER_DEFAULT_HARD_CAP (64u * 1024u * 1024u)

/* ---- Error codes ----------------------------------------------------------
 * Every function of core returns 0 (or a non-negative count) on success and
 * one of these negative values on failure. */
typedef enum milter_err {
  MILTER_OK = 0,
  MILTER_E_NOMEM = -1,     /* out of memory */
  MILTER_E_INVAL = -2,     /* invalid argument (API misuse) */
  MILTER_E_PROTO = -3,     /* peer broke the protocol (malformed packet) */
  MILTER_E_TOOBIG = -4,    /* packet larger than the allowed size */
  MILTER_E_STATE = -5,     /* command or call not allowed in this state */
  MILTER_E_IO = -6,        /* socket error (errno kept in the log line) */
  MILTER_E_EOF = -7,       /* peer closed the connection */
  MILTER_E_TIMEOUT = -8,   /* a time limit was reached */
  MILTER_E_NEGOTIATE = -9, /* option negotiation failed (required bit missing) */
  MILTER_E_NOTSUP = -10,   /* action not negotiated with the peer */
  MILTER_E_ADDR = -11,     /* bad socket specification */
  MILTER_E_LIMIT = -12,    /* a configured limit was reached */
  MILTER_E_CLOSED = -13,   /* connection already closed */
  MILTER_E_AGAIN = -14     /* need more input (decoder) */
} milter_err;

/* A static English message for an error code; never NULL. */
MF_API const char *milter_strerror(int err);
/* The symbolic name of an error code ("MILTER_E_PROTO"); never NULL. */
MF_API const char *milter_err_name(int err);

/* Human-readable name of a command or reply byte ("SMFIC_HEADER",
 * "SMFIR_ACCEPT"), for log lines; never NULL. */
MF_API const char *milter_cmd_name(int cmd);
MF_API const char *milter_reply_name(int reply);

#ifdef __cplusplus
}
#endif
#endif
