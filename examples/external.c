/*
 * external.c -- mark mail from outside, and catch mail sent to a spam trap.
 *
 * What it shows
 *   - a whole filter as ONE decision function on the transaction layer
 *     (<mailfilter/mailfilter.h>): the library collects the SMTP transaction
 *     and calls it once per message;
 *   - deciding at end of headers (MF_STAGE_EOH): the filter never needs the
 *     body, so the library tells the MTA not to send it at all;
 *   - reading a macro the MTA sends (the SMTP AUTH user) and the recipients
 *     as IDNA-aware addresses;
 *   - changing a header with plain UTF-8 text: the library encodes it
 *     (RFC 2047) and sends the ONE milter action that makes the change;
 *   - quarantining: the MTA keeps the message in its hold queue.
 *
 * What it does, for every message
 *   1. If the sender did not authenticate (no {auth_authen} macro), the
 *      Subject gets the prefix "[⚠️EXTERNAL] " (once: a Subject that
 * already carries it is left alone; a message without Subject gets one).
 *   2. If any recipient is spam-trap@スパム.example.com -- in any spelling:
 *      U-label, A-label (xn--zck5b2b), any case of the domain, NFD -- the
 *      message goes to the hold queue with the reason "spam trap".
 *
 * Build: cmake -S . -B build && cmake --build build  -> build/examples/external
 * Run:   ./external inet:10025@127.0.0.1
 * Postfix main.cf:
 *   smtpd_milters = inet:127.0.0.1:10025
 *   non_smtpd_milters = $smtpd_milters
 * Postfix sends {auth_authen} with MAIL FROM by default
 * (milter_mail_macros), so nothing else is needed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/mailfilter.h>

#define TAG_ALONE "[⚠️EXTERNAL]"
#define TAG TAG_ALONE " "
#define SPAM_TRAP "spam-trap@スパム.example.com"
/* Its comparison key (mf_addr_key): the local part exactly (after NFC),
 * the domain in A-label form, lower case.  A recipient is the trap in any
 * spelling -- U-label, A-label, upper case, NFD -- when its key is this
 * one: that is mf_addr_equal(), without parsing the trap, so no IDNA code
 * is loaded before a non-ASCII domain arrives (tests/test_example_external.c
 * checks the key against the parsed SPAM_TRAP). */
#define SPAM_TRAP_KEY "spam-trap@xn--zck5b2b.example.com"

/* Not static so that tests/test_example_external.c can run the decision
 * function under testtrx. */
mf_decision external_decide(mf_trx *trx, void *ud);

/* Put TAG in front of the Subject, unless it is there already. */
static int tag_subject(mf_hdrs *h) {
  size_t i;
  if (mf_hdr_find(h, "Subject", 1, &i) != 0)
    return mf_hdr_add(h, "Subject", TAG_ALONE);
  const char *subject = mf_hdr_value(h, i); /* decoded, UTF-8 */
  if (subject == NULL)
    subject = "";
  if (strncmp(subject, TAG, strlen(TAG)) == 0)
    return 0;
  size_t n = strlen(TAG) + strlen(subject) + 1;
  char *tagged = malloc(n);
  if (tagged == NULL)
    return -1;
  snprintf(tagged, n, "%s%s", TAG, subject);
  int rc = mf_hdr_set(h, i, tagged); /* encoded as RFC 2047 on the wire */
  free(tagged);
  return rc;
}

/* The decision function: runs once per message, at end of headers, on a
 * worker thread (it may block; this one does not need to). */
mf_decision external_decide(mf_trx *trx, void *ud) {
  (void)ud;
  mf_decision verdict = MF_ACCEPT;

  for (size_t i = 0; i < mf_trx_rcpt_count(trx); i++) {
    const mf_addr *rcpt = mf_trx_rcpt(trx, i); /* NULL if it did not parse */
    if (rcpt != NULL && strcmp(mf_addr_key(rcpt), SPAM_TRAP_KEY) == 0) {
      mf_trx_quarantine(trx, "spam trap");
      verdict = MF_QUARANTINE;
      break;
    }
  }

  if (mf_trx_auth_authen(trx) == NULL && tag_subject(mf_trx_headers(trx)) != 0)
    return MF_FAIL; /* the library answers with mf_opts.on_error */

  /* Nothing changed and no quarantine: the library answers ACCEPT at once,
   * and the MTA sends nothing more of this message. */
  return verdict;
}

#ifndef MF_EXAMPLE_NO_MAIN
#include "example_cli.h"

int main(int argc, char **argv) {
  static const example_cli cli = {
      "external",
      "Tag the Subject of mail from unauthenticated senders with\n" TAG_ALONE
      " and quarantine mail to " SPAM_TRAP ".",
      "inet:10025@127.0.0.1"};
  mf_opts opts;
  mf_opts_init(&opts);
  const char *spec;
  int st = example_cli_parse(&cli, argc, argv, &opts.server, &spec);
  if (st >= 0)
    return st;
  opts.stage = MF_STAGE_EOH; /* decide at end of headers: no body needed */

  mf_filter *f;
  int rc = mf_filter_new(&f, external_decide, NULL, &opts);
  if (rc != 0) {
    fprintf(stderr, "external: %s\n", mf_strerror(rc));
    return 1;
  }
  if ((rc = mf_filter_listen(f, spec)) != 0) {
    fprintf(stderr, "external: cannot listen on %s: %s\n", spec,
            mf_strerror(rc));
    mf_filter_free(f);
    return 1;
  }
  mf_filter_run(f); /* until SIGTERM or SIGINT; messages in flight drain */
  mf_filter_free(f);
  return 0;
}
#endif
