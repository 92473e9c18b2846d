/* errors.c -- error codes and the names of commands and replies. */
#include <mailfilter/milter_proto.h>

const char *milter_strerror(int err) {
  switch (err) {
  case MILTER_OK: return "success";
  case MILTER_E_NOMEM: return "out of memory";
  case MILTER_E_INVAL: return "invalid argument";
  case MILTER_E_PROTO: return "protocol violation by the peer";
  case MILTER_E_TOOBIG: return "packet larger than allowed";
  case MILTER_E_STATE: return "not allowed in this state";
  case MILTER_E_IO: return "socket error";
  case MILTER_E_EOF: return "peer closed the connection";
  case MILTER_E_TIMEOUT: return "timed out";
  case MILTER_E_NEGOTIATE: return "option negotiation failed";
  case MILTER_E_NOTSUP: return "action not negotiated";
  case MILTER_E_ADDR: return "bad socket specification";
  case MILTER_E_LIMIT: return "limit reached";
  case MILTER_E_CLOSED: return "connection closed";
  case MILTER_E_AGAIN: return "more input needed";
  }
  return "unknown error";
}

const char *milter_err_name(int err) {
  switch (err) {
  case MILTER_OK: return "MILTER_OK";
  case MILTER_E_NOMEM: return "MILTER_E_NOMEM";
  case MILTER_E_INVAL: return "MILTER_E_INVAL";
  case MILTER_E_PROTO: return "MILTER_E_PROTO";
  case MILTER_E_TOOBIG: return "MILTER_E_TOOBIG";
  case MILTER_E_STATE: return "MILTER_E_STATE";
  case MILTER_E_IO: return "MILTER_E_IO";
  case MILTER_E_EOF: return "MILTER_E_EOF";
  case MILTER_E_TIMEOUT: return "MILTER_E_TIMEOUT";
  case MILTER_E_NEGOTIATE: return "MILTER_E_NEGOTIATE";
  case MILTER_E_NOTSUP: return "MILTER_E_NOTSUP";
  case MILTER_E_ADDR: return "MILTER_E_ADDR";
  case MILTER_E_LIMIT: return "MILTER_E_LIMIT";
  case MILTER_E_CLOSED: return "MILTER_E_CLOSED";
  case MILTER_E_AGAIN: return "MILTER_E_AGAIN";
  }
  return "MILTER_E_UNKNOWN";
}

const char *milter_cmd_name(int cmd) {
  switch (cmd) {
  case MILTER_CMD_ABORT: return "SMFIC_ABORT";
  case MILTER_CMD_BODY: return "SMFIC_BODY";
  case MILTER_CMD_CONNECT: return "SMFIC_CONNECT";
  case MILTER_CMD_MACRO: return "SMFIC_MACRO";
  case MILTER_CMD_EOB: return "SMFIC_BODYEOB";
  case MILTER_CMD_HELO: return "SMFIC_HELO";
  case MILTER_CMD_QUIT_NC: return "SMFIC_QUIT_NC";
  case MILTER_CMD_HEADER: return "SMFIC_HEADER";
  case MILTER_CMD_MAIL: return "SMFIC_MAIL";
  case MILTER_CMD_EOH: return "SMFIC_EOH";
  case MILTER_CMD_OPTNEG: return "SMFIC_OPTNEG";
  case MILTER_CMD_QUIT: return "SMFIC_QUIT";
  case MILTER_CMD_RCPT: return "SMFIC_RCPT";
  case MILTER_CMD_DATA: return "SMFIC_DATA";
  case MILTER_CMD_UNKNOWN: return "SMFIC_UNKNOWN";
  }
  return "SMFIC_?";
}

const char *milter_reply_name(int reply) {
  switch (reply) {
  case MILTER_REPLY_ADDRCPT: return "SMFIR_ADDRCPT";
  case MILTER_REPLY_DELRCPT: return "SMFIR_DELRCPT";
  case MILTER_REPLY_ADDRCPT_PAR: return "SMFIR_ADDRCPT_PAR";
  case MILTER_REPLY_SHUTDOWN: return "SMFIR_SHUTDOWN";
  case MILTER_REPLY_ACCEPT: return "SMFIR_ACCEPT";
  case MILTER_REPLY_REPLBODY: return "SMFIR_REPLBODY";
  case MILTER_REPLY_CONTINUE: return "SMFIR_CONTINUE";
  case MILTER_REPLY_DISCARD: return "SMFIR_DISCARD";
  case MILTER_REPLY_CHGFROM: return "SMFIR_CHGFROM";
  case MILTER_REPLY_CONN_FAIL: return "SMFIR_CONN_FAIL";
  case MILTER_REPLY_ADDHEADER: return "SMFIR_ADDHEADER";
  case MILTER_REPLY_INSHEADER: return "SMFIR_INSHEADER";
  case MILTER_REPLY_SETSYMLIST: return "SMFIR_SETSYMLIST";
  case MILTER_REPLY_CHGHEADER: return "SMFIR_CHGHEADER";
  case MILTER_REPLY_PROGRESS: return "SMFIR_PROGRESS";
  case MILTER_REPLY_QUARANTINE: return "SMFIR_QUARANTINE";
  case MILTER_REPLY_REJECT: return "SMFIR_REJECT";
  case MILTER_REPLY_SKIP: return "SMFIR_SKIP";
  case MILTER_REPLY_TEMPFAIL: return "SMFIR_TEMPFAIL";
  case MILTER_REPLY_REPLYCODE: return "SMFIR_REPLYCODE";
  case MILTER_REPLY_OPTNEG: return "SMFIR_OPTNEG";
  }
  return "SMFIR_?";
}
