/*
 * milter_check.h -- internal to the milter-check tool (core/tools); not
 * installed.  The tool plays SMTP transactions against a milter through the
 * public blocking client <mailfilter/milter_client.h> only.
 *
 *   check_opts.c   command line -> mc_opts
 *   check_msg.c    the message file -> header fields and body; the resulting
 *                  message after the milter's end-of-message actions
 *   check_run.c    the conversation with the milter -> mc_report
 *   check_out.c    human output (as it happens) and the JSON report
 *   milter_check.c main(): wires them together, exit status
 *
 * Nothing here calls exit(); every object is freed by its *_free().
 */
#ifndef MILTER_CHECK_H
#define MILTER_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <mailfilter/milter_client.h>

/* ---- Exit status ------------------------------------------------------- */
#define MC_EXIT_ACCEPT 0
#define MC_EXIT_REJECT 1
#define MC_EXIT_TEMPFAIL 2
#define MC_EXIT_DISCARD 3
#define MC_EXIT_QUARANTINE 4
#define MC_EXIT_USAGE 64   /* EX_USAGE */
#define MC_EXIT_NOINPUT 66 /* EX_NOINPUT: message file unreadable */
#define MC_EXIT_ERROR 70   /* EX_SOFTWARE: connect failed, protocol error */

/* ---- Small owned string vector ---------------------------------------- */
typedef struct mc_strv {
  char **v;
  size_t n, cap;
} mc_strv;

/* Append a copy of s (len bytes when len != (size_t)-1, else strlen). */
int mc_strv_push(mc_strv *sv, const char *s, size_t len);
void mc_strv_free(mc_strv *sv);
/* "a b c" of the vector, or NULL when empty / out of memory (check n). */
char *mc_strv_join(const mc_strv *sv, const char *sep);
/* strdup that the C11 library does not promise. */
char *mc_strdup(const char *s);
char *mc_strndup(const char *s, size_t n);

/* ---- Options ----------------------------------------------------------- */

/* Where --macro puts a macro: before which command it is sent. */
typedef enum mc_stage {
  MC_ST_CONNECT,
  MC_ST_HELO,
  MC_ST_MAIL,
  MC_ST_RCPT,
  MC_ST_DATA,
  MC_ST_EOH,
  MC_ST_EOM,
  MC_ST_HEADER,
  MC_ST_BODY,
  MC_ST_COUNT
} mc_stage;

typedef struct mc_rcpt {
  char *addr;   /* "<a@b>" */
  mc_strv args; /* ESMTP args of RCPT TO */
} mc_rcpt;

typedef struct mc_opts {
  char *spec;    /* milter socket spec */
  char *msgfile; /* message file; NULL or "-" = stdin */

  char family; /* MILTER_FAMILY_* of the SMTP client */
  char *client_addr;
  uint16_t client_port;
  char *client_name;
  char *helo;
  char *from; /* "<a@b>" or "<>" */
  mc_strv from_args;
  mc_rcpt *rcpts;
  size_t n_rcpts;
  mc_strv macros[MC_ST_COUNT]; /* name, value, name, value ... */

  milter_client_opts copts; /* version, actions, steps, timeouts */
  unsigned count;           /* transactions per connection */
  int json;
  int quiet;
} mc_opts;

/* Parse the command line into o (initialised here).  Returns 0 to run,
 * 1 when --help or --version printed its text on out, or -1 on a usage error
 * with a one-line message in err.  Free o with mc_opts_free() in every case. */
int mc_opts_parse(mc_opts *o, int argc, char **argv, FILE *out, char *err,
                  size_t errlen);
void mc_opts_free(mc_opts *o);
void mc_usage(FILE *f);
const char *mc_stage_name(mc_stage st);
uint8_t mc_stage_cmd(mc_stage st);

/* ---- The message ------------------------------------------------------- */

typedef struct mc_header {
  char *name;
  /* Everything after the colon, continuation lines joined with "\n" (the
   * folding whitespace kept).  The value Postfix sends without
   * MILTER_P_HDR_LEADSPC is raw + lead (one leading space dropped). */
  char *raw;
  size_t lead;
} mc_header;

typedef struct mc_msg {
  mc_header *h;
  size_t n, cap;
  char *body; /* CRLF line ends */
  size_t body_len;
} mc_msg;

/* Parse an RFC 5322 message (CRLF or LF line ends).  Returns 0 or
 * MILTER_E_NOMEM. */
int mc_msg_parse(mc_msg *m, const char *buf, size_t len);
void mc_msg_free(mc_msg *m);

/* A header field of the resulting message: value without the space after
 * the colon. */
typedef struct mc_field {
  char *name;
  char *value;
} mc_field;

/* The message as the MTA would deliver it. */
typedef struct mc_result {
  char *from;
  char *from_args; /* CHGFROM args, NULL if none */
  mc_strv rcpts;
  mc_field *f;
  size_t n_f, cap_f;
  const uint8_t *body; /* borrowed: the message or a REPLBODY action */
  size_t body_len;
  char *quarantine; /* reason, NULL if not quarantined */
} mc_result;

/* Start from the message as sent (headers, body) and the envelope. */
int mc_result_init(mc_result *r, const mc_msg *m, const char *from,
                   const mc_strv *rcpts);
/* Apply one end-of-message action the way Postfix does.  leadspc: the
 * milter negotiated MILTER_P_HDR_LEADSPC (its header values carry the
 * leading space).  a must outlive r (REPLBODY is borrowed). */
int mc_result_apply(mc_result *r, const milter_action *a, int leadspc);
void mc_result_free(mc_result *r);

/* ---- The conversation -------------------------------------------------- */

typedef enum mc_decision {
  MC_CONTINUE = 0, /* still going: no final reply yet */
  MC_ACCEPT,
  MC_REJECT,
  MC_TEMPFAIL,
  MC_DISCARD,
  MC_QUARANTINE
} mc_decision;

const char *mc_decision_name(mc_decision d);
int mc_decision_exit(mc_decision d);

/* One command sent to the milter and what came back. */
typedef struct mc_event {
  uint8_t cmd;     /* MILTER_CMD_*; MILTER_CMD_MACRO for macros */
  uint8_t for_cmd; /* macros: the command they precede */
  char *arg;       /* what was sent, for the reader ("<a@b> SIZE=10") */
  milter_client_status status;
  uint8_t reply; /* MILTER_REPLY_*, 0 unless REPLIED */
  char *text;    /* SMFIR_REPLYCODE text */
  unsigned progress;
  unsigned chunks;   /* body packets */
  int rcpt_rejected; /* RCPT: the MTA drops this recipient */
} mc_event;

typedef struct mc_trx {
  mc_event *ev;
  size_t n_ev, cap_ev;
  milter_client_result eom; /* actions, when EOM was replied */
  mc_decision decision;
  char *reply; /* "550 5.7.1 ..." for reject/tempfail, else NULL */
  int has_result;
  mc_result result;
} mc_trx;

typedef struct mc_report {
  int negotiated;
  milter_client_nego nego; /* symlist strings owned by the report */
  mc_trx conn;             /* CONNECT, HELO */
  mc_trx *trx;
  size_t n_trx;
  mc_decision decision; /* of the last transaction, or the connection */
  char *reply;          /* borrowed from the trx that decided */
  int error;            /* MILTER_E_*, 0 if none */
  char *errmsg;
} mc_report;

/* Play the transactions of o against the milter.  Always fills rep (free it
 * with mc_report_free); returns 0, or the MILTER_E_* error also kept in
 * rep->error / rep->errmsg.  Prints human output as it goes when
 * !o->json && !o->quiet. */
int mc_run(const mc_opts *o, const mc_msg *m, mc_report *rep);
void mc_report_free(mc_report *rep);
/* The exit status the report stands for: a decision, MC_EXIT_USAGE for a bad
 * socket spec, MC_EXIT_ERROR for any other error. */
int mc_report_exit(const mc_report *rep);

/* ---- Output ------------------------------------------------------------ */
void mc_print_negotiation(FILE *f, const milter_client_nego *n);
void mc_print_event(FILE *f, const mc_event *e);
void mc_print_actions(FILE *f, const milter_client_result *eom);
void mc_print_trx_end(FILE *f, const mc_trx *t, size_t no);
void mc_print_json(FILE *f, const mc_opts *o, const mc_report *rep);
const char *mc_reply_short(uint8_t reply);
const char *mc_cmd_short(uint8_t cmd);

#endif
