/* mfmacros.c -- a milter on the transaction layer that reports the macros
 * decide() sees, for the integration tests (test_sendmail_macros.py).
 *
 *   mfmacros SOCKETSPEC [--stage connect|...|eom] [--macros "LIST"] NAME...
 *
 * For every message it prints one line, then accepts:
 *   mfmacros: <first rcpt> NAME=<value> NAME=- ...
 * ("-" when mf_trx_macro() gives NULL).  --macros is mf_opts.macros.
 */
#include <stdio.h>
#include <string.h>

#include <mailfilter/mailfilter.h>

static char **names;
static int n_names;

static mf_decision decide(mf_trx *trx, void *ud) {
  (void)ud;
  char line[4096];
  size_t len = 0;
  const char *r = mf_trx_rcpt_count(trx) ? mf_trx_rcpt_raw(trx, 0) : "-";
  len += (size_t)snprintf(line, sizeof line, "mfmacros: %s", r);
  for (int i = 0; i < n_names && len < sizeof line; i++) {
    const char *v = mf_trx_macro(trx, names[i]);
    len += (size_t)snprintf(line + len, sizeof line - len, " %s=%s", names[i],
                            v ? v : "-");
  }
  fprintf(stderr, "%s\n", line); /* one write per message */
  return MF_ACCEPT;
}

static const char *const stages[] = {"connect", "helo", "mail", "rcpt",
                                     "data",    "eoh",  "eom"};

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: mfmacros SOCKETSPEC [--stage S] [--macros LIST] NAME...\n");
    return 2;
  }
  mf_opts o;
  mf_opts_init(&o);
  int i = 2;
  for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    for (int s = 0; strcmp(argv[i], "--stage") == 0 && s < 7; s++)
      if (strcmp(argv[i + 1], stages[s]) == 0)
        o.stage = (mf_stage)(MF_STAGE_CONNECT + s);
    if (strcmp(argv[i], "--macros") == 0)
      o.macros = argv[i + 1];
  }
  names = argv + i;
  n_names = argc - i;
  setvbuf(stderr, NULL, _IOLBF, 0);
  mf_filter *f = NULL;
  int rc = mf_filter_new(&f, decide, NULL, &o);
  if (rc == 0)
    rc = mf_filter_listen(f, argv[1]);
  if (rc == 0)
    rc = mf_filter_run(f);
  else
    fprintf(stderr, "mfmacros: %s\n", mf_strerror(rc));
  if (f != NULL)
    mf_filter_free(f);
  return rc == 0 ? 0 : 1;
}
