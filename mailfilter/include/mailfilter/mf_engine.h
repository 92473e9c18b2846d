/*
 * mf_engine.h -- the transaction engine under mf_filter, exported for
 * testtrx (and for users who drive the engine from their own server).
 *
 *   #include <mailfilter/mf_engine.h>       link: mailfilter
 *
 * An mf_filter feeds each milter event into an mf_trx through these calls,
 * runs the decision function with mf_engine_decide(), and turns the result
 * into milter actions with mf_engine_actions().  testtrx does exactly the
 * same without a socket, which is why a passing testtrx test means the same
 * actions on the wire.  Most users want <mailfilter/testtrx.h> instead.
 *
 * THREAD RULES: an mf_trx is used by one thread at a time; the caller
 * serialises.  mf_trx_complete() (mailfilter.h) may come from any thread: it
 * calls the hook set with mf_engine_set_complete_hook() on that thread.
 *
 * ERRORS: 0 or a negative MF_E_* (mailfilter.h); mf_engine_last_error()
 * has a message for the last failure on that trx.
 */
#ifndef MAILFILTER_MF_ENGINE_H
#define MAILFILTER_MF_ENGINE_H

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h> /* milter_action */

#ifdef __cplusplus
extern "C" {
#endif

/* A fresh trx for one connection.  opts is copied by pointer: it must
 * outlive the trx (mf_filter keeps it in the filter).  NULL = defaults. */
MF_API int mf_engine_trx_new(mf_trx **out, const mf_opts *opts);
MF_API void mf_engine_trx_free(mf_trx *trx);
/* Forget the message (envelope, headers, body, decision, changes); the
 * connection data stays.  Closes the body spool: nothing is left behind. */
MF_API void mf_engine_reset_message(mf_trx *trx);
/* Forget everything (QUIT_NC: a new connection on the same trx). */
MF_API void mf_engine_reset_connection(mf_trx *trx);

/* What the MTA negotiated: MILTER_ACT_*, MILTER_P_*, data size (bytes).
 * Defaults before this call: every action, HDR_LEADSPC off, 64 KiB. */
MF_API void mf_engine_set_negotiated(mf_trx *trx, uint32_t actions,
                                     uint32_t protocol, uint32_t data_size);
/* MTA flavour (MF_MTA_AUTO: decided from macro "v" when it is set; not
 * known without it: actions right on both, mailfilter.h HEADER EDITS ON
 * EACH MTA). */
MF_API void mf_engine_set_mta(mf_trx *trx, mf_mta mta);

/* Events, in protocol order.  Strings are copied. */
MF_API int mf_engine_connect(mf_trx *trx, const char *hostname, char family,
                             uint16_t port, const char *address);
MF_API int mf_engine_helo(mf_trx *trx, const char *helo);
/* argv[0] the address as the MTA sends it ("<a@b>"), argv[1..] ESMTP args.
 * Stored as text; parsed on first use (most filters never read most
 * addresses): a malformed one then reads as NULL from mf_trx_mail_from() /
 * mf_trx_rcpt(), with the reason in mf_trx_errmsg(), and its text stays
 * available (mf_trx_mail_raw(), mf_trx_rcpt_raw()).  mf_engine_rcpt()
 * returns MF_E_LIMIT past max_rcpts (the recipient is not stored). */
MF_API int mf_engine_mail(mf_trx *trx, size_t argc, const char *const *argv);
MF_API int mf_engine_rcpt(mf_trx *trx, size_t argc, const char *const *argv);
/* Undo the last mf_engine_rcpt() (the validator or the MTA refused it). */
MF_API void mf_engine_rcpt_drop_last(mf_trx *trx);
/* One header field as received: value raw, leadspc as negotiated.
 * Returns MF_E_LIMIT when a header limit is passed (the field is not stored;
 * the trx remembers it, see mf_engine_limit_hit()). */
MF_API int mf_engine_header(mf_trx *trx, const char *name, const char *value,
                            size_t len, int leadspc);
/* End of headers: the collection becomes the original (change tracking). */
MF_API int mf_engine_eoh(mf_trx *trx);
/* A body chunk.  MF_E_LIMIT past max_body (with TRUNCATE the rest is
 * dropped and the trx is marked truncated), MF_E_IO / MF_E_NOMEM. */
MF_API int mf_engine_body(mf_trx *trx, const void *data, size_t len);
/* A macro value as the MTA sent it (name with or without braces).  mf_filter
 * copies the macros it knows into the trx before each decision. */
MF_API int mf_engine_macro(mf_trx *trx, const char *name, const char *value);
MF_API void mf_engine_clear_macros(mf_trx *trx);

/* Which limit was hit (0 none): 1 header count/bytes, 2 body, 3 recipients. */
MF_API int mf_engine_limit_hit(const mf_trx *trx);

/* Run decide() (or the rcpt validator for the last recipient) at stage.
 * Snapshots nothing: changes are tracked against what the events brought.
 * Returns the decision; MF_PENDING means mf_trx_complete() will deliver it
 * through the complete hook. */
MF_API mf_decision mf_engine_decide(mf_trx *trx, mf_stage stage,
                                    mf_decide_fn decide, void *ud);
MF_API mf_decision mf_engine_validate_rcpt(mf_trx *trx, mf_rcpt_fn fn,
                                           void *ud);
typedef void (*mf_engine_complete_fn)(mf_trx *trx, mf_decision d, void *arg);
MF_API void mf_engine_set_complete_hook(mf_trx *trx, mf_engine_complete_fn fn,
                                        void *arg);

/* 1 when the function changed anything that needs end-of-message actions
 * (headers, recipients, sender, body, or a quarantine). */
MF_API int mf_engine_has_changes(mf_trx *trx);

/* The minimal list of milter actions for what the decision function changed,
 * in wire order, by the index rules of the trx's MTA.  An action the MTA
 * did not grant fails the whole list with MF_E_NOTSUP and a message naming
 * it (mf_engine_last_error()): a partial change set would be worse than
 * none.  A REPLBODY action carries the whole new body, or with
 * MF_ENGINE_BODY_REF only its size (body NULL, body_len set: stream it with
 * mf_engine_replbody(), as mf_filter does, in chunks of the data size).
 * The quarantine reason is the last action when the decision is
 * MF_QUARANTINE (pass it as d; MF_ACCEPT etc. otherwise).
 * *out is freed with mf_engine_actions_free().  Returns 0 or MF_E_*. */
#define MF_ENGINE_BODY_REF 0x1u
MF_API int mf_engine_actions(mf_trx *trx, mf_decision d, unsigned flags,
                             milter_action **out, size_t *n);
MF_API void mf_engine_actions_free(milter_action *a, size_t n);
/* Stream the replacement body (when the trx has one): calls fn with pieces
 * of at most max bytes, in order.  Returns 0, fn's non-zero, or MF_E_IO. */
MF_API int mf_engine_replbody(mf_trx *trx, size_t max,
                              int (*fn)(void *arg, const void *p, size_t n),
                              void *arg);

/* The custom reply set by the decision function (NULL when none). */
MF_API const char *mf_engine_reply_rcode(const mf_trx *trx);
MF_API const char *mf_engine_reply_xcode(const mf_trx *trx);
MF_API const char *mf_engine_reply_text(const mf_trx *trx);
/* Forget the custom reply (after it was used for one recipient). */
MF_API void mf_engine_clear_reply(mf_trx *trx);
/* Quarantine reason ("quarantined" by default after MF_QUARANTINE). */
MF_API const char *mf_engine_quarantine_reason(const mf_trx *trx);
MF_API const char *mf_engine_last_error(const mf_trx *trx);
/* 1 when the MTA is treated as Sendmail for index rules. */
MF_API int mf_engine_is_sendmail(const mf_trx *trx);

#ifdef __cplusplus
}
#endif
#endif
