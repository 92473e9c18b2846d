/* mf_int.h -- internals shared by the mailfilter sources. */
#ifndef MAILFILTER_MF_INT_H
#define MAILFILTER_MF_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/mf_engine.h>

#include "spool.h"

/* Recipient states. */
#define MF_RCPT_ORIG 0x1u    /* came from the MTA */
#define MF_RCPT_DELETED 0x2u /* removed by the decision function */

typedef struct mf_rcpt {
  mf_addr *addr;          /* NULL when the MTA's text did not parse */
  mf_addr_params *params; /* may be NULL */
  char *raw;              /* as the MTA sent it ("<a@b>") or as added */
  char *args;             /* added: ESMTP args as given (NULL: none) */
  char *argv;             /* from the MTA: its ESMTP args, NUL-separated */
  size_t argc;
  int parsed;             /* addr/params are valid (parsed on first use:
                             most filters never look at most addresses) */
  unsigned flags;
} mf_rcpt;

/* A trx's connection data.  A trx of the engine API owns its strings, one
 * block "hostname\0ip\0helo\0" through hostname (helo NULL: none); the
 * trx of a message of mf_filter points into the connection's block
 * (filter.c) and owns nothing: the filter clears it before mf_trx_fini(). */
typedef struct mf_conn {
  char *hostname, *ip, *helo;
  char family;
  uint16_t port;
} mf_conn;

/* A macro of the decision's snapshot: offsets into mf_trx.macblk, which
 * holds "name\0value\0" pairs (name without braces). */
typedef struct mf_macro {
  uint32_t name, value;
} mf_macro;

struct mf_trx {
  const mf_opts *opts;
  mf_stage stage;   /* stage of the running / last decision */
  mf_mta mta;       /* as set; MF_MTA_AUTO = look at macro v */
  uint32_t actions, protocol, data_size;

  /* connection */
  mf_conn conn;
  mf_macro *macros;
  size_t nmacros, capmacros;
  char *macblk; /* the pairs, one block reused from decision to decision */
  size_t macblk_len, macblk_cap;

  /* envelope */
  char *from_raw; /* NULL before MAIL */
  mf_addr *from;
  mf_addr_params *from_params;
  char *from_argv; /* ESMTP args, NUL-separated */
  size_t from_argc;
  char *new_from, *new_from_args; /* change_from; NULL = unchanged */
  mf_addr *new_from_addr;
  mf_rcpt *rcpts;
  size_t nrcpts, caprcpts;
  size_t rcpt_over; /* recipients beyond max_rcpts (not stored) */

  /* content */
  mf_hdrs *hdrs;
  size_t hdr_bytes;
  mf_spool body;

  /* the decision's outputs */
  mf_spool *newbody; /* allocated by the first replace_body */
  char *rcode, *xcode, *text;
  char *qreason;

  mf_engine_complete_fn complete;
  void *complete_arg;

  char *err; /* last error message, allocated on first error (an idle
                connection costs no buffer for it) */

  /* The small fields of the parts above, together (no padding holes). */
  atomic_int pending;  /* 1 while MF_PENDING waits for mf_trx_complete() */
  int in_call;         /* inside decide()/validator or pending: edits allowed */
  uint8_t from_parsed; /* envelope: from/from_params are valid */
  uint8_t eoh_seen;    /* content */
  uint8_t truncated;   /* content */
  uint8_t limit;       /* content: 0, 1 header, 2 body, 3 recipients */
  uint8_t body_replaced; /* the decision's outputs */
  uint8_t owns_opts;     /* opts is the trx's own (created with NULL) */
};

/* Parse the MTA's text on first use (addr NULL when it does not parse;
 * the reason goes to t->err). */
void mf_trx_parse_rcpt(mf_trx *t, mf_rcpt *r);
void mf_trx_parse_from(mf_trx *t);

/* The MTA the trx's actions are for: as set, else from macro "v";
 * MF_MTA_AUTO when not known (the actions are then those right on both,
 * diff.c). */
mf_mta mf_engine_mta_of(const mf_trx *t);

/* In-place life cycle. */
void mf_trx_init(mf_trx *t, const mf_opts *opts);
void mf_trx_fini(mf_trx *t);

void mf_trx_seterr(mf_trx *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A failed write to spool s: "what: cause (errno text)" goes to t->err.
 * Returns rc. */
int mf_trx_spool_error(mf_trx *t, const mf_spool *s, const char *what,
                       int rc);

/* Append macro k (klen bytes, no braces) = value to the snapshot, without
 * looking for an earlier one (trx.c).  MF_E_NOMEM. */
int mf_trx_macro_put(mf_trx *t, const char *k, size_t klen, const char *value);

/* Room for one more element in the array *p of *cap elements of size elem
 * holding n: doubled when full (first: the first capacity).  0, or
 * MF_E_NOMEM (*p unchanged). */
int mf_grow(void *p, size_t *cap, size_t n, size_t elem, size_t first);

#endif
