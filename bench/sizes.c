/*
 * sizes.c -- print the sizes of the per-connection structures, for the
 * idle-memory breakdown of bench/RESULTS.md (bench/run records them next
 * to the measured bytes per idle connection).
 *
 * Built in the bench only: it includes the libraries' internal headers
 * (core/session.h, mailfilter/mf_int.h) and links nothing of theirs.  The
 * server's connection (struct conn, core/server_uv.c) and the filter's
 * (struct fconn, mailfilter/filter.c) are private to their sources: what
 * is printed for the server's is the sum of the members visible here, a
 * lower bound (its links, deadline, flags and write offset, 64 bytes,
 * come on top); fconn is 16 bytes and the connection's strings.
 *
 * Output: one JSON object, {"name": bytes, ...}, on stdout.
 */
#include <stdio.h>

#include <uv.h>

#include "mf_int.h"
#include "pool.h"
#include "session.h"

#define ROW(name, n)                                                         \
  printf("%s\n  \"%s\": %zu", first ? "{" : ",", name, (size_t)(n)),       \
      first = 0

int main(void) {
  int first = 1;
  /* core: one per connection */
  ROW("milter_ctx", sizeof(milter_ctx));
  /* allocated only while input is held (a reply pending with bytes behind
   * it, or a packet arrived in part), and during a message */
  ROW("milter_input", sizeof(struct milter_input));
  ROW("milter_msg", sizeof(struct milter_msg));
  ROW("milter_decoder", sizeof(milter_decoder));
  ROW("milter_buf", sizeof(milter_buf));
  ROW("uv_poll_t", sizeof(uv_poll_t));
  /* the server's struct conn: a uv_poll_t on the socket and the ctx
   * (timeouts are lists on one timer per loop, no uv_timer_t each) */
  ROW("conn_min", sizeof(uv_poll_t) + sizeof(milter_ctx));
  /* mailfilter: per message (in its message block, filter.c's fmsg) */
  ROW("mf_trx", sizeof(mf_trx));
  ROW("mf_spool", sizeof(mf_spool));
  ROW("mf_job", sizeof(mf_job));
  /* per recipient / per macro of a transaction */
  ROW("mf_rcpt", sizeof(mf_rcpt));
  ROW("mf_macro", sizeof(mf_macro));
  printf("\n}\n");
  return 0;
}
