/* The README's "A filter is one function", as a user writes it outside the
   source tree: built by tests/install/test_consumers.py against an installed
   prefix, with pkg-config (Makefile) and with find_package (CMakeLists.txt). */
#include <mailfilter/mailfilter.h>

/* Runs once per message, at end of headers, on a worker thread. */
static mf_decision decide(mf_trx *trx, void *ud) {
  (void)ud;
  if (mf_trx_auth_authen(trx) == NULL)              /* not authenticated */
    mf_hdr_add(mf_trx_headers(trx), "X-External", "yes");
  return MF_ACCEPT;          /* the library sends one ADDHEADER, nothing else */
}

int main(int argc, char **argv) {
  mf_opts o;
  mf_opts_init(&o);
  o.stage = MF_STAGE_EOH;    /* the MTA never sends the body */
  mf_filter *f;
  if (argc != 2 || mf_filter_new(&f, decide, NULL, &o) != 0 ||
      mf_filter_listen(f, argv[1]) != 0)
    return 1;
  mf_filter_run(f);          /* until SIGTERM/SIGINT, draining messages */
  mf_filter_free(f);
  return 0;
}
