/*
 * sizes.c -- print the sizes of the per-connection structures, for the
 * idle-memory breakdown of bench/RESULTS.md (bench/run records them next
 * to the measured bytes per idle connection).
 *
 * Built in the bench only: it includes the libraries' internal headers
 * (core/session.h, mailfilter/mf_int.h) and links nothing of theirs.  The
 * server's connection (struct conn, core/server_uv.c) and the filter's
 * (struct fconn, mailfilter/filter.c) are private to their sources: what
 * is printed for them is the sum of the members visible here, a lower
 * bound (their scalars and padding come on top).
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
  size_t stream = sizeof(uv_tcp_t) > sizeof(uv_pipe_t) ? sizeof(uv_tcp_t)
                                                        : sizeof(uv_pipe_t);
  /* core: one per connection */
  ROW("milter_ctx", sizeof(milter_ctx));
  /* allocated only while input is held (a reply pending with bytes behind
   * it, or a packet arrived in part), and during a message */
  ROW("milter_input", sizeof(struct milter_input));
  ROW("milter_msg", sizeof(struct milter_msg));
  ROW("milter_decoder", sizeof(milter_decoder));
  ROW("milter_buf", sizeof(milter_buf));
  ROW("uv_pipe_t", sizeof(uv_pipe_t));
  ROW("uv_tcp_t", sizeof(uv_tcp_t));
  ROW("uv_timer_t", sizeof(uv_timer_t));
  ROW("uv_write_t", sizeof(uv_write_t));
  /* the server's struct conn: the stream handle and the ctx (timeouts are
   * lists on one timer per server since 28e14e8, no uv_timer_t each) */
  ROW("conn_min", stream + sizeof(milter_ctx));
  /* mailfilter: one per connection on top of core's */
  ROW("mf_trx", sizeof(mf_trx));
  ROW("mf_spool", sizeof(mf_spool));
  ROW("mf_job", sizeof(mf_job));
  ROW("fconn_min", sizeof(mf_trx) + sizeof(mf_job));
  /* per recipient / per macro of a transaction */
  ROW("mf_rcpt", sizeof(mf_rcpt));
  ROW("mf_macro", sizeof(mf_macro));
  printf("\n}\n");
  return 0;
}
