/*
 * testtrx.h -- unit-test a decision function with no MTA and no socket.
 *
 *   #include <mailfilter/testtrx.h>        link: mftesttrx
 *
 * Build a transaction in memory -- connection, HELO, MAIL/RCPT with ESMTP
 * args, macros, headers and body (piece by piece or from a raw RFC 5322
 * message), the MTA flavour and what it negotiated -- then run YOUR
 * decision function through the SAME engine and diff engine mf_filter uses
 * (mf_engine.h), at the stage set in mf_opts.  You get back what the MTA
 * would get: the decision with its reply text or quarantine reason, the
 * exact milter actions in wire order, each recipient's validator verdict,
 * and the message after the MTA applied the actions (headers, body,
 * envelope).
 *
 *   mf_testtrx *t;
 *   mf_opts o; mf_opts_init(&o); o.stage = MF_STAGE_EOH;
 *   mf_testtrx_new(&t, &o);
 *   mf_testtrx_mail(t, "<a@example.org>", NULL);
 *   mf_testtrx_rcpt(t, "<b@example.net>", NULL);
 *   mf_testtrx_message(t, "Subject: hi\r\n\r\nbody\r\n", (size_t)-1);
 *   mf_testtrx_run(t, decide, NULL);
 *   assert(mf_testtrx_decision(t) == MF_ACCEPT);
 *   assert(strcmp(mf_testtrx_result_header(t, "Subject", 1), "[X] hi") == 0);
 *   mf_testtrx_free(t);
 *
 * With MF_TESTTRX_CMOCKA defined before the include, cmocka assertion
 * macros are available (assert_trx_decision(), assert_trx_action_count(),
 * assert_trx_header()...).
 *
 * THREADS: an mf_testtrx is used by one thread; the decision function may
 * return MF_PENDING and call mf_trx_complete() from any thread
 * (mf_testtrx_run() waits up to mf_testtrx_set_timeout(), default 10 s).
 *
 * ERRORS: functions return 0 or a negative MF_E_* (mailfilter.h) and never
 * abort; mf_testtrx_errmsg() says what was wrong ("rcpt before mail",
 * "run twice", "bad address ..."), so a misused harness fails the test
 * with a message instead of crashing it.
 *
 * MTA MODEL (how the resulting message is computed).  Two things are set
 * apart: the MTA the ENGINE is told (mf_testtrx_set_mta(): Postfix by
 * default; MF_MTA_AUTO = what macro "v" says, as mf_filter does, unknown
 * without it) and the MTA SIMULATED, whose rules apply the actions
 * (mf_testtrx_set_simulated_mta(); by default the MTA the engine ended up
 * with, Postfix when it did not know).  Both models follow the MTAs'
 * sources (Postfix's cleanup_milter.c, Sendmail 8.17's milter.c and
 * headers.c); mailfilter.h, HEADER EDITS ON EACH MTA, says what the engine
 * sends to each.
 *   Postfix: its list starts with its own Received: (never seen by the
 *     milter).  ADDHEADER appends.  INSHEADER index i goes before entry i
 *     of the list (the Received: is entry 0, so 1 = above the first
 *     message field; past the end appends).  CHGHEADER changes the
 *     index-th field of that name (case-insensitive, the Received: not
 *     counted); an empty value unlinks it; past the last one a non-empty
 *     value is appended.  (Not modelled: once a milter inserted a field
 *     above the Received:, Postfix counts the Received: like any field;
 *     the engine never does that.)
 *   Sendmail: its list starts with the header templates of its sendmail.cf
 *     (the H lines; an m4-built .cf has nine: Return-Path, Received,
 *     Resent-Date, Date, Resent-From, From, Full-Name, Resent-Message-Id,
 *     Message-Id; see mf_testtrx_set_sendmail_templates()), valueless but
 *     the Received: (the MTA's own), then the message's fields (a message
 *     field of a template's name empties the template, which stays in
 *     place).  CHGHEADER counts the fields of that name that came from the
 *     message or a milter, deleted ones included (an empty value only marks
 *     the field deleted); when there are fewer, a template of that name
 *     other than Received: takes the value, else a non-empty value is added
 *     as by ADDHEADER's last rule.  INSHEADER index i goes after entry i of
 *     the list, templates included (past the end appends).  ADDHEADER fills
 *     a template of that name that no milter filled yet (not Received:),
 *     else goes above the first entry of that name, else appends.  A
 *     template a milter filled is delivered in its place, but not when
 *     its value is empty and the message carried a field of that name
 *     (Sendmail skips it then; the template of a field the message lacked,
 *     filled with "", is delivered "Name:").
 *   ADDRCPT/DELRCPT/CHGFROM edit the envelope; REPLBODY replaces the body;
 *   QUARANTINE holds the message (both MTAs).
 * THE RESULT TEXT, byte for byte what the MTA delivers apart from its own
 *   fields: every field the message or a milter put in the list and not
 *   deleted, in the MTA's order, each line name ":" value CRLF (folds as
 *   CRLF), then an empty line and the body.
 *   - a field of the message: its raw value, every byte after the colon as
 *     received (mf_testtrx_message() keeps them; mf_testtrx_header(n, v)
 *     is the line n ": " v).  Neither MTA rewrites a field nobody changed
 *     -- except that Sendmail qualifies addresses in address fields (From,
 *     To, Cc...: "1" -> "1@host") and may wrap lines longer than its
 *     mailer's limit, which the model does not do.
 *   - a value from a milter action with HDR_LEADSPC negotiated (the
 *     default): exactly as sent, on both MTAs: "X-A:v" for "v", "X-A: v"
 *     for " v", "X-New:" for an empty ADDHEADER/INSHEADER value.
 *   - without HDR_LEADSPC both MTAs put one space before the value they
 *     were sent (Sendmail's addleadingspace(), Postfix's header callback):
 *     "X-A: v" for "v", "X-New: " for "".
 *   Not in the text: the MTA's own fields -- its Received: and on Sendmail
 *   the templates it fills itself at delivery (Return-Path, a Date: or
 *   Message-Id: the message lacks).  A field a milter put above the MTA's
 *   Received: is in the text, first; mf_testtrx_result_above_received()
 *   says how many such fields the text starts with.
 */
#ifndef MAILFILTER_TESTTRX_H
#define MAILFILTER_TESTTRX_H

#include <stddef.h>
#include <stdint.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h> /* milter_action */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_testtrx mf_testtrx;

/* New harness.  opts as for mf_filter_new() (stage, validate_rcpt, limits,
 * on_error, flags...; NULL = defaults; mf_opts.mta is overridden by
 * mf_testtrx_set_mta()); copied.  Defaults of the simulated MTA: Postfix
 * (told to the engine and simulated), protocol v6, every action,
 * HDR_LEADSPC, 64 KiB data size, client "client.example" [192.0.2.1]:25,
 * HELO "client.example". */
MF_API int mf_testtrx_new(mf_testtrx **out, const mf_opts *opts);
MF_API void mf_testtrx_free(mf_testtrx *t);
/* Why the last call on t failed ("" if it did not). */
MF_API const char *mf_testtrx_errmsg(const mf_testtrx *t);

/* The MTA the engine is told (as mf_opts.mta; MTA MODEL): MF_MTA_POSTFIX
 * (default), MF_MTA_SENDMAIL, or MF_MTA_AUTO: the engine goes by macro "v"
 * (mf_testtrx_macro(t, "v", "Postfix 3.7.11") or "8.17.1.9") and, without
 * it, sends only the actions that are right on both MTAs.  Unless
 * mf_testtrx_set_simulated_mta() says otherwise, the same MTA is
 * simulated (Postfix when the engine does not know it).  MF_E_INVAL for
 * another value. */
MF_API int mf_testtrx_set_mta(mf_testtrx *t, mf_mta mta);
/* The MTA whose rules apply the actions to the message, whatever the engine
 * was told or detected: MF_MTA_POSTFIX, MF_MTA_SENDMAIL, or MF_MTA_AUTO
 * (default): the MTA the engine ended up with (mf_trx_mta()), Postfix when
 * it did not know.  E.g. set_mta(MF_MTA_AUTO) without "v" and
 * set_simulated_mta(MF_MTA_SENDMAIL): what a Sendmail that does not send
 * "v" delivers.  MF_E_INVAL for another value. */
MF_API int mf_testtrx_set_simulated_mta(mf_testtrx *t, mf_mta mta);
/* The simulated Sendmail's header templates (its sendmail.cf's H lines), in
 * order: names separated by spaces or commas ("Return-Path Received ...");
 * an entry named Received is the MTA's own Received: (the others carry no
 * value until a milter fills them).  NULL (default): the nine of a .cf
 * built from Sendmail's m4 (MTA MODEL).  Only Sendmail uses them.
 * MF_E_INVAL for a name that is not a valid field name. */
MF_API int mf_testtrx_set_sendmail_templates(mf_testtrx *t,
                                             const char *names);
/* actions MILTER_ACT_*, protocol MILTER_P_* (only HDR_LEADSPC matters to
 * the transaction), data_size MILTER_DATA_64K/256K/1M. */
MF_API int mf_testtrx_set_negotiated(mf_testtrx *t, uint32_t actions,
                                     uint32_t protocol, uint32_t data_size);
MF_API int mf_testtrx_set_timeout(mf_testtrx *t, unsigned ms);

/* The transaction, in any order before mf_testtrx_run() (RCPTs keep their
 * order).  Strings are copied.  args: ESMTP args separated by spaces
 * ("SIZE=100 BODY=8BITMIME") or NULL. */
MF_API int mf_testtrx_connect(mf_testtrx *t, const char *hostname,
                              const char *ip, uint16_t port);
MF_API int mf_testtrx_helo(mf_testtrx *t, const char *helo);
MF_API int mf_testtrx_mail(mf_testtrx *t, const char *addr, const char *args);
MF_API int mf_testtrx_rcpt(mf_testtrx *t, const char *addr, const char *args);
/* A macro ("i", "{auth_authen}"), visible to the decision function. */
MF_API int mf_testtrx_macro(mf_testtrx *t, const char *name,
                            const char *value);
/* One header field "name: value": value as after "Name:" without the
 * leading space, which is added (folding with "\r\n" or "\n" allowed).
 * A value without that space ("X-A:v"): mf_testtrx_message(). */
MF_API int mf_testtrx_header(mf_testtrx *t, const char *name,
                             const char *value);
/* Append body bytes (as the MTA sends them: CRLF line ends). */
MF_API int mf_testtrx_body(mf_testtrx *t, const void *data, size_t len);
/* A whole RFC 5322 message: the header fields (each value kept byte for
 * byte: every byte after the colon), then the body.  len (size_t)-1 =
 * strlen. */
MF_API int mf_testtrx_message(mf_testtrx *t, const char *raw, size_t len);
MF_API int mf_testtrx_message_file(mf_testtrx *t, const char *path);

/* Run the transaction through the engine: events in protocol order, the
 * validator (mf_opts.validate_rcpt) at each RCPT, the decision function at
 * the configured stage, the limits, the diff.  Once per mf_testtrx.
 * Returns 0 when the transaction could be run (whatever was decided), or an
 * error (misuse, pending decision timed out). */
MF_API int mf_testtrx_run(mf_testtrx *t, mf_decide_fn decide, void *ud);

/* ---- Results (after mf_testtrx_run) ------------------------------------ */

/* What the MTA was told: MF_ACCEPT (also for an accept with changes),
 * MF_REJECT, MF_TEMPFAIL, MF_DISCARD, MF_QUARANTINE.  MF_FAIL from the
 * function is already mapped through mf_opts.on_error (MF_DO_CLOSE reads as
 * MF_FAIL: the connection would have been dropped). */
MF_API mf_decision mf_testtrx_decision(const mf_testtrx *t);
/* The decision function's own return value (MF_FAIL included), and how
 * many times it ran (1, or 0 when a limit decided). */
MF_API mf_decision mf_testtrx_raw_decision(const mf_testtrx *t);
MF_API int mf_testtrx_calls(const mf_testtrx *t);
/* The SMTP reply for REJECT/TEMPFAIL ("550 5.7.1 go away", lines joined
 * with "\r\n"), NULL when the MTA's default reply applies. */
MF_API const char *mf_testtrx_reply(const mf_testtrx *t);
MF_API const char *mf_testtrx_quarantine_reason(const mf_testtrx *t);
/* 1 when the MTA would have transmitted the body to the milter. */
MF_API int mf_testtrx_body_requested(const mf_testtrx *t);

/* The milter actions in wire order (quarantine and body included). */
MF_API size_t mf_testtrx_action_count(const mf_testtrx *t);
MF_API const milter_action *mf_testtrx_action(const mf_testtrx *t, size_t i);

/* Validator verdict for the i-th mf_testtrx_rcpt() (MF_ACCEPT when there
 * is no validator), and its reply text (NULL if none). */
MF_API mf_decision mf_testtrx_rcpt_result(const mf_testtrx *t, size_t i);
MF_API const char *mf_testtrx_rcpt_reply(const mf_testtrx *t, size_t i);

/* The message after the actions (only for MF_ACCEPT / MF_QUARANTINE):
 * the whole text (THE RESULT TEXT above: each field name ":" value with
 * CRLF, empty line, body), a header's raw value (n-th of that name,
 * 1-based, without its leading space if it has one; NULL if none), its
 * decoded value (RFC 2047 to UTF-8), how many fields there are, the
 * envelope. */
MF_API const char *mf_testtrx_result(const mf_testtrx *t, size_t *len);
MF_API const char *mf_testtrx_result_header(const mf_testtrx *t,
                                            const char *name, size_t nth);
MF_API const char *mf_testtrx_result_header_decoded(const mf_testtrx *t,
                                                    const char *name,
                                                    size_t nth);
MF_API size_t mf_testtrx_result_header_count(const mf_testtrx *t);
MF_API const char *mf_testtrx_result_from(const mf_testtrx *t);
MF_API size_t mf_testtrx_result_rcpt_count(const mf_testtrx *t);
MF_API const char *mf_testtrx_result_rcpt(const mf_testtrx *t, size_t i);
MF_API const uint8_t *mf_testtrx_result_body(const mf_testtrx *t,
                                             size_t *len);
/* How many of the result's first fields the MTA put above its own
 * Received: (0 when every field is below it, as the engine arranges). */
MF_API size_t mf_testtrx_result_above_received(const mf_testtrx *t);
/* How many CHGHEADER actions found no field of that name at that index
 * (MTA MODEL says what each MTA does then); 0 from a correct engine. */
MF_API size_t mf_testtrx_result_unmatched(const mf_testtrx *t);
/* The MTA simulated: MF_MTA_POSTFIX or MF_MTA_SENDMAIL. */
MF_API mf_mta mf_testtrx_result_mta(const mf_testtrx *t);

/* Name of a milter action type ("CHGHEADER"), for messages. */
MF_API const char *mf_testtrx_action_name(int type);

#ifdef MF_TESTTRX_CMOCKA
/* cmocka helpers: include <cmocka.h> first. */
#define assert_trx_ok(call)                                                    \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != 0)                                                              \
      fail_msg("%s: %s", #call, mf_testtrx_errmsg(t));                         \
  } while (0)
#define assert_trx_decision(t, d)                                              \
  assert_int_equal(mf_testtrx_decision(t), (d))
#define assert_trx_action_count(t, n)                                          \
  assert_int_equal(mf_testtrx_action_count(t), (n))
#define assert_trx_action(t, i, type_, name_, value_)                          \
  do {                                                                         \
    const milter_action *a_ = mf_testtrx_action((t), (i));                     \
    assert_non_null(a_);                                                       \
    assert_string_equal(mf_testtrx_action_name((int)a_->type),                 \
                        mf_testtrx_action_name(type_));                        \
    if ((name_) != NULL)                                                       \
      assert_string_equal(a_->name, (name_));                                  \
    if ((value_) != NULL)                                                      \
      assert_string_equal(a_->value, (value_));                                \
  } while (0)
#define assert_trx_header(t, name, nth, decoded)                               \
  do {                                                                         \
    const char *v_ = mf_testtrx_result_header_decoded((t), (name), (nth));     \
    assert_non_null(v_);                                                       \
    assert_string_equal(v_, (decoded));                                        \
  } while (0)
#define assert_trx_no_header(t, name)                                          \
  assert_null(mf_testtrx_result_header((t), (name), 1))
#endif

#ifdef __cplusplus
}
#endif
#endif
