/*
 * rcptcount.c -- add "X-Rcpt-Count: N" to every message.
 *
 * What it shows
 *   - deciding at end of message (MF_STAGE_EOM, the default): the library
 *     receives the headers and the body (spooled to an unlinked temp file
 *     past 200 KiB) before calling the function;
 *   - a function that never blocks can run on the event-loop thread
 *     (MF_OPT_NONBLOCKING): no hand-off to a worker thread at all;
 *   - adding a header: the library sends exactly one ADDHEADER.
 *
 * N is the number of recipients the message is delivered to (those the MTA
 * accepted).
 *
 * Build: cmake -S . -B build && cmake --build build -> build/examples/rcptcount
 * Run:   ./rcptcount inet:10026@127.0.0.1
 */
#include <stdio.h>

#include <mailfilter/mailfilter.h>

/* Not static: tests/test_example_rcptcount.c runs it under testtrx. */
mf_decision rcptcount_decide(mf_trx *trx, void *ud);

mf_decision rcptcount_decide(mf_trx *trx, void *ud) {
  (void)ud;
  char n[32];
  snprintf(n, sizeof n, "%zu", mf_trx_rcpt_count(trx));
  if (mf_hdr_add(mf_trx_headers(trx), "X-Rcpt-Count", n) != 0)
    return MF_FAIL;
  return MF_ACCEPT;
}

#ifndef MF_EXAMPLE_NO_MAIN
#include "example_cli.h"

int main(int argc, char **argv) {
  static const example_cli cli = {
      "rcptcount",
      "Add \"X-Rcpt-Count: N\" to every message, N being the number of\n"
      "recipients the MTA accepted.",
      "inet:10026@127.0.0.1"};
  mf_opts opts;
  mf_opts_init(&opts);
  opts.stage = MF_STAGE_EOM;
  opts.flags |= MF_OPT_NONBLOCKING; /* counting never blocks */
  const char *spec; /* and the logging options, in opts.server */
  int st = example_cli_parse(&cli, argc, argv, &opts.server, &spec);
  if (st >= 0)
    return st;

  mf_filter *f;
  int rc = mf_filter_new(&f, rcptcount_decide, NULL, &opts);
  if (rc == 0 && (rc = mf_filter_listen(f, spec)) != 0)
    mf_filter_free(f);
  if (rc != 0) {
    fprintf(stderr, "rcptcount: %s: %s\n", spec, mf_strerror(rc));
    return 1;
  }
  mf_filter_run(f); /* until SIGTERM or SIGINT */
  mf_filter_free(f);
  return 0;
}
#endif
