/*
 * null_filter.c -- the upper bound of core's callback API: a filter that
 * stores nothing.
 *
 * It asks for NR_MAIL, NR_RCPT, NR_HDR and NR_BODY where the MTA offers
 * them and sets no connect/helo/data/unknown/eoh callbacks (core switches
 * those events off with the NO* steps).  It keeps empty header and body
 * callbacks so that the MTA still sends the whole message, as it does to
 * the other compared filters: only the storing is left out.  It counts the
 * recipients in an int per connection and adds "X-Rcpt-Count: N" at end of
 * message, the same visible work as the other compared filters.
 *
 * Usage: null_filter SOCKETSPEC   (unix:/path, inet:PORT@HOST, ...)
 * Runs until SIGTERM / SIGINT (milter_server handles both by default).
 */
#include <stdio.h>
#include <stdlib.h>

#include <mailfilter/milter.h>

typedef struct conn {
  size_t nrcpt;
} conn;

static conn *conn_get(milter_ctx *ctx) {
  conn *c = milter_ctx_get_data(ctx);
  if (c == NULL) {
    c = calloc(1, sizeof(*c));
    milter_ctx_set_data(ctx, c);
  }
  return c;
}

static milter_status nf_envfrom(milter_ctx *ctx, size_t argc,
                                const char *const *argv) {
  (void)argc;
  (void)argv;
  conn *c = conn_get(ctx);
  if (c == NULL)
    return MILTER_TEMPFAIL; /* dropped (NR) or sent; eom fails as well */
  c->nrcpt = 0;
  return MILTER_NOREPLY;
}

static milter_status nf_envrcpt(milter_ctx *ctx, size_t argc,
                                const char *const *argv) {
  (void)argc;
  (void)argv;
  conn *c = milter_ctx_get_data(ctx);
  if (c != NULL)
    c->nrcpt++;
  return MILTER_NOREPLY;
}

static milter_status nf_header(milter_ctx *ctx, const char *name,
                               const char *value) {
  (void)ctx;
  (void)name;
  (void)value;
  return MILTER_NOREPLY;
}

static milter_status nf_body(milter_ctx *ctx, const uint8_t *chunk,
                             size_t len) {
  (void)ctx;
  (void)chunk;
  (void)len;
  return MILTER_NOREPLY;
}

static milter_status nf_eom(milter_ctx *ctx) {
  conn *c = milter_ctx_get_data(ctx);
  if (c == NULL)
    return MILTER_TEMPFAIL;
  char n[32];
  snprintf(n, sizeof(n), "%zu", c->nrcpt);
  c->nrcpt = 0;
  return milter_ctx_addheader(ctx, "X-Rcpt-Count", n) == 0 ? MILTER_CONTINUE
                                                           : MILTER_TEMPFAIL;
}

static void nf_abort(milter_ctx *ctx) {
  conn *c = milter_ctx_get_data(ctx);
  if (c != NULL)
    c->nrcpt = 0;
}

static void nf_close(milter_ctx *ctx) {
  free(milter_ctx_get_data(ctx));
  milter_ctx_set_data(ctx, NULL);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SOCKETSPEC   (e.g. inet:10026@127.0.0.1)\n",
            argv[0]);
    return 2;
  }

  milter_filter_desc desc = {
      .name = "null_filter",
      .cb =
          {
              .envfrom = nf_envfrom,
              .envrcpt = nf_envrcpt,
              .header = nf_header,
              .body = nf_body,
              .eom = nf_eom,
              .abort = nf_abort,
              .close = nf_close,
          },
      .actions_required = MILTER_ACT_ADDHDRS,
      .protocol_wanted = MILTER_P_NR_MAIL | MILTER_P_NR_RCPT | MILTER_P_NR_HDR |
                         MILTER_P_NR_BODY,
  };
  milter_server_opts opts;
  milter_server_opts_init(&opts);
  opts.max_connections = 20000;
  opts.backlog = 4096; /* as smfi_setbacklog(4096) in lm_filter.c */
  opts.log_level = MILTER_LOG_WARNING;

  milter_server *srv;
  int rc = milter_server_new(&srv, NULL, &desc, &opts);
  if (rc != 0) {
    fprintf(stderr, "null_filter: %s\n", milter_strerror(rc));
    return 1;
  }
  if ((rc = milter_server_listen(srv, argv[1])) != 0) {
    fprintf(stderr, "null_filter: %s: %s\n", argv[1], milter_strerror(rc));
    milter_server_free(srv);
    return 1;
  }
  milter_server_run(srv); /* until SIGTERM or SIGINT */
  milter_server_free(srv);
  return 0;
}
