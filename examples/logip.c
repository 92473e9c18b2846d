/*
 * logip.c -- the smallest useful milter: log who connects, then step aside.
 *
 * What it shows
 *   - how a filter is described with core's callback API
 * (<mailfilter/milter.h>): one callback, everything else NULL;
 *   - that a NULL callback costs nothing: the library tells the MTA, during
 *     option negotiation, not to send those events at all;
 *   - how to log through the library's logger (milter_ctx_log);
 *   - how to run a server that stops cleanly on SIGTERM/SIGINT.
 *
 * For every SMTP client that connects to the MTA, logip logs one line with
 * the client's IP address and the host name the MTA resolved, then answers
 * ACCEPT: the MTA sends nothing more about that connection, and the mail
 * flows on untouched.
 *
 * Build (from the top of the source tree)
 *   cmake -S . -B build && cmake --build build
 *   -> build/examples/logip
 * or, against an installed library:
 *   cc -o logip logip.c $(pkg-config --cflags --libs mfcore)
 *
 * Run
 *   ./logip inet:10025@127.0.0.1
 * and add these two lines to Postfix's main.cf, then `postfix reload`:
 *   smtpd_milters = inet:127.0.0.1:10025
 *   non_smtpd_milters = $smtpd_milters
 *
 * Each connection then logs a line like
 *   mailfilter[1234]: info: logip: 127.0.0.1:43512: client 192.0.2.7
 * [mx.example.org] on stderr.  Stop it with Ctrl-C or SIGTERM.
 */
#include <stdio.h>

#include <mailfilter/milter.h>

#include "example_cli.h"

/* Called once per SMTP client, when it connects to the MTA. */
static milter_status on_connect(milter_ctx *ctx,
                                const milter_connect_info *ci) {
  /* ci->address is the IP as text ("" when the MTA does not know it);
   * ci->hostname is the name the MTA found, "[1.2.3.4]" if none.  Both are
   * valid only during this call: copy them if you need them later. */
  const char *ip = ci->address && ci->address[0] ? ci->address : "unknown";
  milter_ctx_log(ctx, MILTER_LOG_INFO, "client %s [%s]", ip, ci->hostname);

  /* ACCEPT at connect: "no further events for this connection". */
  return MILTER_ACCEPT;
}

int main(int argc, char **argv) {
  /* Server options: the defaults log INFO and above to stderr and stop the
   * server on SIGTERM/SIGINT (handle_signals).  The command line
   * (example_cli.h) may choose syslog and another level. */
  milter_server_opts opts;
  milter_server_opts_init(&opts);
  opts.handle_signals = 1;
  static const example_cli cli = {
      "logip",
      "Log the IP address and host name of every SMTP client that connects\n"
      "to the MTA, then step aside (ACCEPT).",
      "inet:10025@127.0.0.1   or   unix:/run/logip.sock"};
  const char *spec;
  int st = example_cli_parse(&cli, argc, argv, &opts, &spec);
  if (st >= 0)
    return st;

  /* The filter: a name for log lines and its callbacks.  Every callback
   * left NULL is negotiated away, so the MTA only ever sends us CONNECT. */
  milter_filter_desc desc = {0};
  desc.name = "logip";
  desc.cb.connect = on_connect;

  /* NULL loop: the server creates and runs its own libuv loop. */
  milter_server *srv;
  int rc = milter_server_new(&srv, NULL, &desc, &opts);
  if (rc < 0) {
    fprintf(stderr, "logip: cannot create server: %s\n", milter_strerror(rc));
    return 1;
  }

  rc = milter_server_listen(srv, spec);
  if (rc < 0) {
    /* The reason has already been logged; the spec itself may be bad. */
    fprintf(stderr, "logip: cannot listen on %s: %s\n", spec,
            milter_strerror(rc));
    milter_server_free(srv);
    return rc == MILTER_E_ADDR ? 2 : 1;
  }

  /* Serve until SIGTERM/SIGINT; connections in progress are drained. */
  milter_server_run(srv);
  milter_server_free(srv);
  return 0;
}
