/*
 * mailfilter.h -- the transaction layer: write ONE decision function, get a
 * milter.
 *
 *   #include <mailfilter/mailfilter.h>      link: mailfilter (pkg-config)
 *
 * The library accumulates each SMTP transaction into an mf_trx (connection,
 * HELO, envelope with IDNA-aware addresses, parsed headers, body spooled to
 * an unlinked temp file past a threshold, macros), calls the decision
 * function once at the configured stage, then turns what the function
 * changed on the mf_trx into the minimal list of milter actions.
 *
 *   static mf_decision decide(mf_trx *trx, void *ud) {
 *     if (mf_trx_auth_authen(trx) == NULL)
 *       mf_hdr_add(mf_trx_headers(trx), "X-External", "yes");
 *     return MF_ACCEPT;
 *   }
 *   ...
 *   mf_opts o; mf_opts_init(&o); o.stage = MF_STAGE_EOH;
 *   mf_filter *f; mf_filter_new(&f, decide, NULL, &o);
 *   mf_filter_listen(f, "inet:10025@127.0.0.1");
 *   mf_filter_run(f);            // until SIGTERM / SIGINT
 *   mf_filter_free(f);
 *
 * THREAD RULES
 *   - The filter's server runs several event loops, one thread each (the
 *     number of CPUs by default; mf_opts.server.loops, or MAILFILTER_LOOPS
 *     in the environment: see LOOPS in <mailfilter/milter.h>).  Each
 *     connection stays on one loop.
 *   - The decision function runs on a worker thread of the filter's pool
 *     (size mf_opts.workers, shared by all loops), unless
 *     MF_OPT_NONBLOCKING is set: then on the thread of the connection's
 *     loop.  Either way decisions for different transactions run at the
 *     same time: what ud points to must be safe to use from several threads.
 *     One mf_trx is owned by exactly one thread at a time
 *     (loop -> worker -> loop), so the function needs no lock for it; it
 *     must not keep the mf_trx pointer after it returned (or, for
 *     MF_PENDING, after mf_trx_complete()).
 *   - mf_trx_complete() may be called from any thread.
 *   - mf_filter_stop() is thread-safe; the other mf_filter_* functions are
 *     called by the thread that created the filter.
 *
 * ERRORS
 *   Functions of this header return 0 or a negative MF_E_* code (below);
 *   errors of the lower layers are mapped to one of them, and the details
 *   (which address, which header, the errno text) are in mf_trx_errmsg()
 *   or the log line.  mf_strerror() names a code.
 */
#ifndef MAILFILTER_MAILFILTER_H
#define MAILFILTER_MAILFILTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <mailfilter/addr.h>
#include <mailfilter/export.h>
#include <mailfilter/header.h>
#include <mailfilter/milter.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_filter mf_filter;
typedef struct mf_trx mf_trx;

/* When the decision function runs.  At CONNECT and HELO it runs once per
 * connection and its verdict applies to every message of that connection
 * (ACCEPT/REJECT/TEMPFAIL answer the connection; DISCARD and QUARANTINE are
 * applied to each of its messages); at the later stages exactly once per
 * message.  MF_STAGE_RCPT means after the last RCPT, i.e. when DATA
 * arrives, as does MF_STAGE_DATA (an MTA older than protocol v4 sends no
 * DATA: both then decide at end of headers).
 * A decision before MF_STAGE_EOM that changes the message (or quarantines)
 * is held until end of message, where the protocol allows changes; an
 * ACCEPT without changes is answered at once, so the MTA sends nothing
 * more of that message.
 *
 * MF_STAGE_EOH, the fast path: the MTA sends no body (NOBODY), and when it
 * offers NR_EOH (protocol v6: Postfix, Sendmail 8.14 and later) end of
 * headers gets no reply either.  decide() starts at end of headers (on a
 * worker it runs while the MTA goes on receiving the body from its SMTP
 * client) and its verdict, whatever it is (REJECT, TEMPFAIL, DISCARD,
 * plain ACCEPT, or changes), answers end of message: one round trip per
 * message, as at MF_STAGE_EOM, instead of two, and no body transfer.  An
 * SMTP client sees the answer after its final "." either way.  What the
 * MTA no longer gets is the early answer: after a REJECT or TEMPFAIL it
 * still stores the body it receives (Postfix writes it to the queue file,
 * then drops it at end of message), and milters configured after this one
 * still see the message.  An MTA without NR_EOH (older protocol versions)
 * gets the verdict at end of headers, as at the earlier stages.  While
 * decide() runs, mf_opts.progress_ms applies as at end of message. */
typedef enum mf_stage {
  MF_STAGE_CONNECT = 1,
  MF_STAGE_HELO = 2,
  MF_STAGE_MAIL = 3,
  MF_STAGE_RCPT = 4,
  MF_STAGE_DATA = 5,
  MF_STAGE_EOH = 6, /* end of headers: the common optimisation */
  MF_STAGE_EOM = 7  /* end of message: sees the body */
} mf_stage;

typedef enum mf_decision {
  MF_ACCEPT = 0,     /* deliver (with the modifications made) */
  MF_REJECT = 1,     /* 5xx (mf_trx_set_reply() for a custom reply) */
  MF_TEMPFAIL = 2,   /* 4xx (idem) */
  MF_DISCARD = 3,    /* accept and drop silently */
  MF_QUARANTINE = 4, /* accept into the MTA's hold queue; reason from
                        mf_trx_quarantine(), "quarantined" otherwise */
  MF_PENDING = 5,    /* asynchronous: the decision comes later through
                        mf_trx_complete(), from any thread */
  MF_FAIL = -1       /* the function failed: the configured
                        mf_opts.on_error action applies; the log line
                        gives mf_trx_errmsg() of the last mf_trx_* call
                        that failed during the decision, if any */
} mf_decision;

/* What happens when the decision function fails (MF_FAIL) or a limit is
 * hit.  mf_opts.on_error also answers every other failure of a message:
 * the body spool (temp file cannot be created, ENOSPC, EIO), allocation
 * failure, a recipient validator failing, the changes that cannot be sent
 * (e.g. the replacement body cannot be written or read back: then none of
 * the changes is sent).  A failure in a stage the MTA expects no reply for
 * (body chunks, headers ...) is kept and answered at the first event that
 * gets a reply, end of message at the latest (milter.h, DEFERRED STATUS):
 * every message gets exactly one final answer.  It is logged once, with
 * the queue id and the cause.  MF_DO_CLOSE closes the milter connection at
 * once (the MTA applies its default action). */
typedef enum mf_action_kind {
  MF_DO_TEMPFAIL = 0, /* 451 4.3.0 (default for errors) */
  MF_DO_ACCEPT = 1,   /* let the message through unchanged */
  MF_DO_REJECT = 2,   /* 550 5.7.1 / 552 5.3.4 for size limits */
  MF_DO_CLOSE = 3,    /* drop the milter connection: the MTA applies its
                         milter_default_action */
  MF_DO_TRUNCATE = 4  /* limits only: keep what fits, mark the trx
                         (mf_trx_truncated()), go on */
} mf_action_kind;

/* HEADER EDITS ON EACH MTA
 *   The diff engine sends what delivers exactly the filter's list (values
 *   byte for byte: HDR_LEADSPC is asked for; an MTA without it adds one
 *   space itself, so a field "Name:" with nothing after the colon cannot
 *   be had there).  The MTA is known from macro "v", which the library
 *   asks for at connect with SETSYMLIST wherever the MTA offers it (stock
 *   Sendmail does not send it otherwise): "Postfix 3.7.11" is Postfix, a
 *   version number ("8.17.1.9") Sendmail; mf_opts.mta forces one.
 *   - Empty values: an added or inserted field with an empty value is
 *     delivered as "Name:".  A change to an empty value cannot be a
 *     CHGHEADER (an empty value there means delete): the field is deleted
 *     and the new one inserted where it was.
 *   - Postfix: the minimal list.  Appends are ADDHEADER, changes and
 *     deletes CHGHEADER (occurrence of the name), a field before the
 *     original field p INSHEADER p + 1 (Postfix's own Received: is the
 *     first of its list), applied bottom up.
 *   - Sendmail, and an MTA not known (no "v", or no SETSYMLIST): only
 *     actions that mean the same on both MTAs.  Sendmail's INSHEADER index
 *     counts the header templates of its sendmail.cf (H lines) before the
 *     message's fields, carried or not (the stock .cf has nine: indexes 1
 *     to 8 all land at the top), so an index in the middle of the header
 *     lands wherever the .cf puts it; and its ADDHEADER puts the field above the first
 *     field of that name, or fills a template of that name.  So:
 *       appends are INSHEADER past the end (1000000);
 *       changes and deletes CHGHEADER, bottom up, before anything above;
 *       fields above every original that stays are INSHEADER 1, right under
 *         the MTA's Received: (right on Sendmail for every .cf with at
 *         least two H lines before the message's fields: every .cf built
 *         from Sendmail's m4 has Return-Path then Received first);
 *       a field inserted in the middle: one run of original fields stays
 *         in place (the run between two such inserts whose keeping saves
 *         the most actions); the original fields above it are deleted and
 *         inserted again at the top with their values, those below it
 *         deleted and appended again.  Inserting one field in the middle
 *         costs 1 + 2 * (the untouched fields on its shorter side) actions
 *         instead of 1; at the top or at the end it costs 1.
 *     The MTA's own fields (Received:, and on Sendmail the templates it
 *     adds such as Date: or Message-Id: when the message lacks them) are
 *     not in the filter's list; a field the filter moves this way goes
 *     below an MTA field that was added at the end of the header before
 *     the milter ran.
 *   - Fields the MTA adds when the message lacks them: Date, From,
 *     Message-Id (and on a resent message Resent-Date, Resent-From,
 *     Resent-Message-Id).  Postfix appends them before the milter runs
 *     (for clients in local_header_rewrite_clients) and sends them: they
 *     are in the filter's list.  Sendmail fills them at delivery from its
 *     .cf templates (H?D?Date: $a...) and never sends them.  So on
 *     Sendmail and an MTA not known, the first field of such a name the
 *     filter adds when the message had none is an ADDHEADER, which fills
 *     Sendmail's template: the message has one such field, but where the
 *     template is (right under Sendmail's Received:, in the .cf's order),
 *     not where the filter put it, and with the template's spelling of
 *     the name ("Message-Id").  Exactness is impossible there (an
 *     INSHEADER would deliver two); one field is the choice.  Further
 *     fields of that name follow the rules above.  (On Postfix with the
 *     MTA not known, that field is appended.)
 *     test_mta_differences.py::MissingHeaders::test_missing.
 *   What Sendmail does that no action changes (Postfix does neither to a
 *   milter's values), shown in tests/integration/test_mta_differences.py:
 *     - on a message that is not resent, a milter's Resent-*, Return-Path
 *       and Content-Length are dropped and Bcc is delivered empty
 *       (SpecialHeaders::test_by_name);
 *     - address fields are rewritten at delivery, a milter's values too:
 *       From, Sender, Reply-To qualified with its host name ("1" ->
 *       "1@host"), To and Cc get commas ("a b" -> "a, b"), 0x7f is put
 *       before each byte 0x80-0x9f (AddressHeaders::test_rewrites).
 *   MF_OPT_RECREATE_HEADERS deletes every field and appends the whole list
 *   on any header change: right on both, at the cost of the whole header. */
typedef enum mf_mta {
  MF_MTA_AUTO = 0, /* from macro "v" (Postfix sends "Postfix 3.7.11",
                      Sendmail its version "8.17.1.9"); mf_trx_mta() gives
                      MF_MTA_AUTO while it is not known */
  MF_MTA_POSTFIX = 1,
  MF_MTA_SENDMAIL = 2
} mf_mta;

/* The decision function.  Returns one mf_decision.  ud is mf_filter_new's
 * userdata. */
typedef mf_decision (*mf_decide_fn)(mf_trx *trx, void *ud);

/* Optional per-recipient validator, called for each RCPT as it arrives
 * (on the same thread rules as the decision function).  Return MF_ACCEPT to
 * keep the recipient, MF_REJECT / MF_TEMPFAIL (with mf_trx_set_reply() for
 * a custom reply) to refuse only this recipient; the message goes on. */
typedef mf_decision (*mf_rcpt_fn)(mf_trx *trx, const mf_addr *rcpt,
                                  const mf_addr_params *params, void *ud);

/* Option flags. */
#define MF_OPT_NONBLOCKING 0x1u /* run decide() on the loop thread */
#define MF_OPT_RECREATE_HEADERS 0x4u /* re-create the whole header in order
                                        when any header changed */

/* Options; fill with mf_opts_init() then change what you need. */
typedef struct mf_opts {
  mf_stage stage;              /* default MF_STAGE_EOM */
  unsigned flags;              /* MF_OPT_* */
  mf_rcpt_fn validate_rcpt;    /* NULL: none */
  /* Macros decide() reads, space-separated ("{auth_type} {cert_subject}");
   * requested with SETSYMLIST at every stage up to the decision, each list
   * with the library's own names of that stage (a list replaces the MTA's
   * configured one for its stage).  Without them only a connect list is
   * sent: Postfix's and Sendmail's default connect macros and "v" (HEADER
   * EDITS ON EACH MTA); the other stages keep the MTA's lists.  An MTA without SETSYMLIST
   * sends what it is configured to.  NULL: none extra. */
  const char *macros;
  unsigned workers;            /* default: number of CPUs (at least 2) */
  uint64_t progress_ms;        /* send SMFIR_PROGRESS every this while a
                                  decision runs; default 5000; 0 = never */
  mf_action_kind on_error;     /* default MF_DO_TEMPFAIL */
  size_t body_mem_max;         /* body kept in memory up to this, then an
                                  unlinked temp file; default 200 KiB */
  size_t body_mem_total;       /* the bodies kept in memory by the whole
                                  process together (every filter and
                                  loop), at most this: a body that would
                                  take more goes to its temp file at once,
                                  so that many messages in flight wait in
                                  the page cache, not in the process (it
                                  stays in memory if no temp file can be
                                  made).  Spooling costs CPU (a temp file
                                  per such message); default 1 MiB (100
                                  bodies of 10 KiB at once); 0 = no bound */
  const char *spool_dir;       /* default $TMPDIR, else /tmp */
  size_t max_headers;          /* default 1000 fields */
  size_t max_header_bytes;     /* all fields together, default 1 MiB */
  mf_action_kind header_limit; /* default MF_DO_REJECT (552 5.3.4) */
  uint64_t max_body;           /* default 100 MiB; 0 = unlimited */
  mf_action_kind body_limit;   /* default MF_DO_REJECT (552 5.3.4);
                                  MF_DO_TRUNCATE or MF_DO_ACCEPT */
  size_t max_rcpts;            /* default 1000 (Postfix's own
                                  smtpd_recipient_limit); recipients past
                                  it are not stored, and the message gets
                                  rcpt_limit at the decision */
  mf_action_kind rcpt_limit;   /* default MF_DO_TEMPFAIL (452 4.5.3);
                                  MF_DO_TRUNCATE: decide on the first
                                  max_rcpts (mf_trx_truncated() is 1) */
  mf_mta mta;                  /* default MF_MTA_AUTO */
  milter_server_opts server;   /* socket, timeouts, logging; defaults of
                                  milter_server_opts_init() */
} mf_opts;

MF_API void mf_opts_init(mf_opts *o);

/* ======================================================================== */
/* The filter                                                               */
/* ======================================================================== */

/* Create a filter.  opts NULL = defaults; opts is copied (strings must
 * outlive the filter).  Returns 0 and *out, or a negative error. */
MF_API int mf_filter_new(mf_filter **out, mf_decide_fn decide, void *ud,
                         const mf_opts *opts);
/* Socket spec as milter_server_listen(). */
MF_API int mf_filter_listen(mf_filter *f, const char *spec);
/* Run until SIGTERM/SIGINT or mf_filter_stop(), draining messages in
 * progress.  Returns 0 or a negative error. */
MF_API int mf_filter_run(mf_filter *f);
MF_API void mf_filter_stop(mf_filter *f);
MF_API void mf_filter_free(mf_filter *f);
/* The underlying core server (e.g. for milter_server_port()). */
MF_API milter_server *mf_filter_server(const mf_filter *f);

/* A static text for an MF_E_* code. */
MF_API const char *mf_strerror(int err);

/* ======================================================================== */
/* The transaction: reading                                                 */
/* ======================================================================== */

/* The stage at which decide() runs now. */
MF_API mf_stage mf_trx_stage(const mf_trx *trx);
/* The MTA the changes are sent for: mf_opts.mta, else from macro "v";
 * MF_MTA_AUTO when not known (HEADER EDITS ON EACH MTA). */
MF_API mf_mta mf_trx_mta(const mf_trx *trx);

/* Connection.  Strings valid while the trx is owned by the caller. */
MF_API const char *mf_trx_client_hostname(const mf_trx *trx);
MF_API char mf_trx_client_family(const mf_trx *trx); /* MILTER_FAMILY_* */
MF_API const char *mf_trx_client_ip(const mf_trx *trx); /* "" if unknown */
MF_API uint16_t mf_trx_client_port(const mf_trx *trx);
MF_API const char *mf_trx_helo(const mf_trx *trx); /* NULL before HELO */

/* Envelope (NULL / 0 before the stage that brings it).  Addresses are
 * parsed on first access; one the MTA passed but that does not parse reads
 * as NULL (mf_trx_errmsg() says why; the *_raw() text is still there). */
MF_API const mf_addr *mf_trx_mail_from(const mf_trx *trx);
MF_API const mf_addr_params *mf_trx_mail_params(const mf_trx *trx);
/* MAIL FROM as the MTA sent it ("<a@b>"), even when it did not parse
 * (mf_trx_mail_from() is then NULL); after mf_trx_change_from() the new
 * one. */
MF_API const char *mf_trx_mail_raw(const mf_trx *trx);
/* The recipients as they are now: the MTA's (minus those a validator
 * refused), minus mf_trx_del_rcpt(), plus mf_trx_add_rcpt(), in that
 * order. */
MF_API size_t mf_trx_rcpt_count(const mf_trx *trx);
MF_API const mf_addr *mf_trx_rcpt(const mf_trx *trx, size_t i);
MF_API const mf_addr_params *mf_trx_rcpt_params(const mf_trx *trx, size_t i);
/* Recipient i as the MTA sent it ("<a@b>"), or as added. */
MF_API const char *mf_trx_rcpt_raw(const mf_trx *trx, size_t i);

/* Why the last mf_trx_* call on trx failed (one line, "" if none). */
MF_API const char *mf_trx_errmsg(const mf_trx *trx);

/* Headers (empty before the header stage).  The collection is the trx's:
 * edit it in place; the diff engine sends the changes. */
MF_API mf_hdrs *mf_trx_headers(mf_trx *trx);

/* Body (only at MF_STAGE_EOM: at earlier stages the library asks the MTA
 * not to send it at all).  Size in bytes as
 * received (CRLF line ends).  mf_trx_body_mem() is the whole body while it
 * is in memory, NULL once spooled to a file; mf_trx_body_fd() is the file
 * (read it with pread; do not close it), -1 while in memory;
 * mf_trx_body_read() works in both cases (MF_E_IO when the file cannot
 * be read: mf_trx_errmsg() gives the errno text).  mf_trx_truncated() is 1
 * when a limit with MF_DO_TRUNCATE cut the body or the header. */
MF_API uint64_t mf_trx_body_size(const mf_trx *trx);
MF_API const uint8_t *mf_trx_body_mem(const mf_trx *trx);
MF_API int mf_trx_body_fd(const mf_trx *trx);
MF_API ssize_t mf_trx_body_read(const mf_trx *trx, uint64_t off, void *buf,
                                size_t len);
MF_API int mf_trx_truncated(const mf_trx *trx);

/* Macros by name ("i", "{i}", "{auth_authen}"); NULL when the MTA did not
 * send it.  The trx holds a copy, taken when the decision starts, of the
 * standard macros (Postfix's default milter_*_macros and Sendmail's
 * defaults: j _ v i {daemon_name} {client_addr} {if_addr} {auth_type}
 * {auth_authen} {auth_ssf} {mail_addr} {rcpt_addr} {cert_subject}
 * {tls_version} {msg_id} ... ) and of those listed in mf_opts.macros;
 * other names give NULL. */
MF_API const char *mf_trx_macro(const mf_trx *trx, const char *name);
MF_API const char *mf_trx_queue_id(const mf_trx *trx);
/* The SMTP AUTH user, NULL when the client did not authenticate (absent or
 * empty macro). */
MF_API const char *mf_trx_auth_authen(const mf_trx *trx);

/* ======================================================================== */
/* The transaction: deciding and changing                                   */
/* ======================================================================== */

/* A custom SMTP reply for MF_REJECT / MF_TEMPFAIL (and the validator):
 * rcode "5xx"/"4xx", xcode "5.7.1" or NULL, text one or more lines
 * separated by "\n".  Errors: MILTER_E_INVAL. */
MF_API int mf_trx_set_reply(mf_trx *trx, const char *rcode, const char *xcode,
                            const char *text);
/* Reason for MF_QUARANTINE (one line). */
MF_API int mf_trx_quarantine(mf_trx *trx, const char *reason);

/* Change the envelope sender; args "SIZE=1 BODY=8BITMIME" or NULL. */
MF_API int mf_trx_change_from(mf_trx *trx, const char *addr,
                              const char *args);
/* Add a recipient (args NULL or ESMTP args). */
MF_API int mf_trx_add_rcpt(mf_trx *trx, const char *addr, const char *args);
/* Delete every recipient equal to addr (mf_addr_equal: IDNA-aware).
 * Returns the number removed (0 if none). */
MF_API int mf_trx_del_rcpt(mf_trx *trx, const char *addr);
/* Replace the body (CRLF line ends expected by Postfix).  From memory
 * (copied), from an fd (read from offset 0 to EOF now; the caller keeps the
 * fd) or from a file path.  A large body goes to a temp file in spool_dir;
 * when that fails (MF_E_IO / MF_E_NOMEM; mf_trx_errmsg() says why) the
 * message is answered with on_error at end of message, whatever the
 * decision, unless a later call replaces the body successfully. */
MF_API int mf_trx_replace_body(mf_trx *trx, const void *data, size_t len);
MF_API int mf_trx_replace_body_fd(mf_trx *trx, int fd);
MF_API int mf_trx_replace_body_file(mf_trx *trx, const char *path);

/* Finish an MF_PENDING decision (any thread, exactly once).  decision must
 * not be MF_PENDING.  Returns 0 or MF_E_STATE. */
MF_API int mf_trx_complete(mf_trx *trx, mf_decision decision);

/* Error codes of this layer. */
enum {
  MF_E_NOMEM = -101,
  MF_E_INVAL = -102,
  MF_E_STATE = -103,   /* call not allowed now (e.g. body before EOM) */
  MF_E_IO = -104,      /* spool file I/O */
  MF_E_LIMIT = -105,   /* a configured limit was reached */
  MF_E_NOTSUP = -106,  /* the MTA did not grant the action this needs */
  MF_E_ADDR = -107,    /* malformed address or ESMTP arguments */
  MF_E_HEADER = -108,  /* header collection refused the edit */
  MF_E_SERVER = -109   /* the core server failed (listen, start) */
};

#ifdef __cplusplus
}
#endif
#endif
