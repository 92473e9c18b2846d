/*
 * mfvariant.c -- one decide(), four ways to run it: the benchmark's
 * stage/mode variants (issue 14).
 *
 * The decision is examples/rcptcount.c's rcptcount_decide() itself (add
 * "X-Rcpt-Count: N"), linked in from that file, so that the four variants
 * differ only in when and where the library calls it:
 *
 *   --stage eom    at end of message (MF_STAGE_EOM, the library's default)
 *   --stage eoh    at end of headers (MF_STAGE_EOH); the added header is
 *                  held until end of message, where the protocol allows it
 *   --mode loop    on the event-loop thread (MF_OPT_NONBLOCKING)
 *   --mode worker  on the worker pool (the default; mf_opts.workers)
 *
 * Usage: mfvariant --stage eom|eoh --mode loop|worker SOCKETSPEC
 * Runs until SIGTERM / SIGINT; prints nothing per message.  The number of
 * event loops is the library's default (MAILFILTER_LOOPS in the
 * environment, once the library reads it; bench/run sets it).
 */
#include <stdio.h>
#include <string.h>

#include <mailfilter/mailfilter.h>

/* examples/rcptcount.c, compiled with MF_EXAMPLE_NO_MAIN. */
mf_decision rcptcount_decide(mf_trx *trx, void *ud);

static int usage(void) {
  fprintf(stderr, "usage: mfvariant --stage eom|eoh --mode loop|worker "
                  "SOCKETSPEC\n");
  return 2;
}

int main(int argc, char **argv) {
  mf_opts opts;
  mf_opts_init(&opts);
  const char *stage = NULL, *mode = NULL, *spec = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--stage") == 0 && i + 1 < argc)
      stage = argv[++i];
    else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
      mode = argv[++i];
    else if (argv[i][0] != '-' && spec == NULL)
      spec = argv[i];
    else
      return usage();
  }
  if (stage == NULL || mode == NULL || spec == NULL)
    return usage();
  if (strcmp(stage, "eom") == 0)
    opts.stage = MF_STAGE_EOM;
  else if (strcmp(stage, "eoh") == 0)
    opts.stage = MF_STAGE_EOH;
  else
    return usage();
  if (strcmp(mode, "loop") == 0)
    opts.flags |= MF_OPT_NONBLOCKING;
  else if (strcmp(mode, "worker") != 0)
    return usage();
  mf_filter *f;
  int rc = mf_filter_new(&f, rcptcount_decide, NULL, &opts);
  if (rc == 0 && (rc = mf_filter_listen(f, spec)) != 0)
    mf_filter_free(f);
  if (rc != 0) {
    fprintf(stderr, "mfvariant: %s: %s\n", spec, mf_strerror(rc));
    return 1;
  }
  mf_filter_run(f); /* until SIGTERM or SIGINT */
  mf_filter_free(f);
  return 0;
}
