/* client.c -- the blocking MTA-side milter client (milter_client.h): a
 * convenience wrapper over the libuv client (aclient.c).  Each
 * milter_client owns a private uv loop and one milter_aclient; every call
 * issues the event and runs the loop until its answer is in.  NR commands
 * are flushed at once, so that a call returns with its bytes on the wire. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include <mailfilter/milter_aclient.h>
#include <mailfilter/milter_client.h>

#include "client_proto.h"
#include "sigpipe.h"
#include "mf_alloc.h"

struct milter_client {
  milter_client_opts opts;
  uv_loop_t loop;
  milter_aclient *ac; /* NULL when not connected */
  int negotiated;
  /* the awaited answer */
  int done, err;
  milter_client_result res;
  char errmsg[256];
};

__attribute__((format(printf, 3, 4))) static int fail(milter_client *c, int err,
                                                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

/* The private loop runs with SIGPIPE blocked in this thread (libuv writes
 * what the socket did not take at once in it; see sigpipe.h). */
static void run_loop(milter_client *c) {
  mf_sigpipe_enter();
  uv_run(&c->loop, UV_RUN_DEFAULT);
  mf_sigpipe_leave();
}

/* Answers can arrive from a timer callback, after which uv_run(ONCE)
 * would still block in its poll phase: uv_stop() makes that poll return
 * at once. */
typedef struct closing {
  uv_loop_t *loop;
  int closed;
} closing;

static void on_closed(void *arg) {
  closing *cl = arg;
  cl->closed = 1;
  uv_stop(cl->loop);
}

/* Close the aclient (QUIT when it is healthy and idle) and wait until it is
 * gone. */
static void drop(milter_client *c) {
  if (c->ac == NULL)
    return;
  closing cl = {&c->loop, 0};
  milter_aclient_close(c->ac, on_closed, &cl);
  while (!cl.closed)
    run_loop(c);
  c->ac = NULL;
  c->negotiated = 0;
}

/* An error from the aclient: keep its text; after anything but misuse the
 * connection is gone (later calls: MILTER_E_STATE). */
static int failed(milter_client *c, int err) {
  snprintf(c->errmsg, sizeof c->errmsg, "%s",
           c->ac != NULL ? milter_aclient_errmsg(c->ac) : "not connected");
  if (err == MILTER_E_CLOSED)
    err = MILTER_E_STATE;
  if (err != MILTER_E_INVAL && err != MILTER_E_STATE)
    drop(c);
  return err;
}

static void on_answer(milter_aclient *ac, int err, milter_client_result *r,
                      void *arg) {
  (void)ac;
  milter_client *c = arg;
  c->done = 1;
  c->err = err;
  uv_stop(&c->loop);
  if (r != NULL) {
    c->res = *r; /* take it over */
    memset(r, 0, sizeof *r);
  }
}

/* rc: what the aclient call returned (1: an answer is coming). */
static int wait_answer(milter_client *c, int rc) {
  if (rc != 1)
    return rc;
  while (!c->done)
    run_loop(c); /* on_answer stops it */
  return c->err;
}

static void arm(milter_client *c) {
  c->done = 0;
  c->err = 0;
  milter_client_result_free(&c->res);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

int milter_client_new(milter_client **out, const milter_client_opts *opts) {
  if (out == NULL)
    return MILTER_E_INVAL;
  *out = NULL;
  mcp p;
  if (mcp_init(&p, opts) < 0)
    return MILTER_E_INVAL;
  milter_client *c = xcalloc(1, sizeof *c);
  if (c == NULL)
    return MILTER_E_NOMEM;
  c->opts = p.opts;
  if (uv_loop_init(&c->loop) < 0) {
    free(c);
    return MILTER_E_NOMEM;
  }
  *out = c;
  return 0;
}

void milter_client_close(milter_client *c) {
  if (c != NULL)
    drop(c);
}

void milter_client_free(milter_client *c) {
  if (c == NULL)
    return;
  drop(c);
  run_loop(c);
  uv_loop_close(&c->loop);
  milter_client_result_free(&c->res);
  free(c);
}

const char *milter_client_errmsg(const milter_client *c) {
  return c != NULL ? c->errmsg : "";
}

static const mcp *proto(const milter_client *c) {
  return c->ac != NULL && c->negotiated ? mcp_aclient_proto(c->ac) : NULL;
}

uint32_t milter_client_version(const milter_client *c) {
  return proto(c) ? proto(c)->version : 0;
}
uint32_t milter_client_actions(const milter_client *c) {
  return proto(c) ? proto(c)->actions : 0;
}
uint32_t milter_client_protocol(const milter_client *c) {
  return proto(c) ? proto(c)->protocol : 0;
}
uint32_t milter_client_data_size(const milter_client *c) {
  return proto(c) ? proto(c)->data_size : 0;
}

int milter_client_open(milter_client *c, const char *spec) {
  if (c == NULL || spec == NULL)
    return MILTER_E_INVAL;
  drop(c);
  c->errmsg[0] = '\0';
  int rc = milter_aclient_new(&c->ac, &c->loop, &c->opts);
  if (rc < 0) {
    c->ac = NULL;
    return fail(c, rc, "out of memory");
  }
  arm(c);
  rc = mcp_aclient_connect(c->ac, spec, on_answer, c);
  if (rc == 0)
    rc = wait_answer(c, 1);
  return rc < 0 ? failed(c, rc) : 0;
}

int milter_client_negotiate(milter_client *c, milter_client_nego *out) {
  if (c == NULL)
    return MILTER_E_INVAL;
  if (c->ac == NULL)
    return fail(c, MILTER_E_STATE, "not connected");
  if (c->negotiated)
    return fail(c, MILTER_E_STATE, "already negotiated");
  c->errmsg[0] = '\0';
  arm(c);
  int rc = mcp_aclient_negotiate(c->ac, on_answer, c);
  if (rc == 0)
    rc = wait_answer(c, 1);
  if (rc < 0)
    return failed(c, rc);
  c->negotiated = 1;
  if (out != NULL)
    milter_aclient_nego(c->ac, out);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

/* Before an event: checks, r emptied.  Returns its mode (MCP_*) or an
 * error. */
static int begin(milter_client *c, uint8_t cmd, milter_client_result *r) {
  if (c == NULL || r == NULL)
    return MILTER_E_INVAL;
  milter_client_result_free(r);
  if (c->ac == NULL)
    return fail(c, MILTER_E_STATE, "not connected");
  if (!c->negotiated)
    return fail(c, MILTER_E_STATE, "not negotiated");
  c->errmsg[0] = '\0';
  arm(c);
  int mode = mcp_event_mode(mcp_aclient_proto(c->ac), cmd);
  if (mode == MCP_NOT_SENT)
    r->status = MILTER_CLIENT_NOT_SENT;
  return mode;
}

/* After the aclient call: wait for the answer, or flush an NR command. */
static int finish(milter_client *c, int mode, int rc,
                  milter_client_result *r) {
  if (rc < 0)
    return failed(c, rc);
  if (mode == MCP_NOREPLY) {
    r->status = MILTER_CLIENT_NOREPLY;
    rc = milter_aclient_flush(c->ac);
    return rc < 0 ? failed(c, rc) : 0;
  }
  if ((rc = wait_answer(c, rc)) < 0)
    return failed(c, rc);
  *r = c->res;
  memset(&c->res, 0, sizeof c->res);
  return 0;
}

int milter_client_macro(milter_client *c, uint8_t cmd, size_t n_pairs,
                        const char *const *names_values) {
  if (c == NULL || (n_pairs > 0 && names_values == NULL))
    return MILTER_E_INVAL;
  if (c->ac == NULL || !c->negotiated)
    return fail(c, MILTER_E_STATE, "not negotiated");
  int rc = milter_aclient_macro(c->ac, cmd, n_pairs, names_values);
  if (rc == 0)
    rc = milter_aclient_flush(c->ac);
  return rc < 0 ? failed(c, rc) : 0;
}

int milter_client_connect(milter_client *c, const char *hostname, char family,
                          uint16_t port, const char *address,
                          milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_CONNECT, r);
  if (mode <= 0)
    return mode;
  int rc = milter_aclient_connect(c->ac, hostname, family, port, address,
                                  on_answer, c);
  return finish(c, mode, rc, r);
}

int milter_client_helo(milter_client *c, const char *helo,
                       milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_HELO, r);
  if (mode <= 0)
    return mode;
  return finish(c, mode, milter_aclient_helo(c->ac, helo, on_answer, c), r);
}

int milter_client_mail(milter_client *c, const char *addr, size_t argc,
                       const char *const *argv, milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_MAIL, r);
  if (mode <= 0)
    return mode;
  int rc = milter_aclient_mail(c->ac, addr, argc, argv, on_answer, c);
  return finish(c, mode, rc, r);
}

int milter_client_rcpt(milter_client *c, const char *addr, size_t argc,
                       const char *const *argv, milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_RCPT, r);
  if (mode <= 0)
    return mode;
  int rc = milter_aclient_rcpt(c->ac, addr, argc, argv, on_answer, c);
  return finish(c, mode, rc, r);
}

int milter_client_data(milter_client *c, milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_DATA, r);
  if (mode <= 0)
    return mode;
  return finish(c, mode, milter_aclient_data(c->ac, on_answer, c), r);
}

int milter_client_eoh(milter_client *c, milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_EOH, r);
  if (mode <= 0)
    return mode;
  return finish(c, mode, milter_aclient_eoh(c->ac, on_answer, c), r);
}

int milter_client_eom(milter_client *c, milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_EOB, r);
  if (mode <= 0)
    return mode;
  return finish(c, mode, milter_aclient_eom(c->ac, on_answer, c), r);
}

int milter_client_header(milter_client *c, const char *name, const char *value,
                         milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_HEADER, r);
  if (mode <= 0)
    return mode;
  int rc = milter_aclient_header(c->ac, name, value, on_answer, c);
  return finish(c, mode, rc, r);
}

int milter_client_unknown(milter_client *c, const char *line,
                          milter_client_result *r) {
  int mode = begin(c, MILTER_CMD_UNKNOWN, r);
  if (mode <= 0)
    return mode;
  return finish(c, mode, milter_aclient_unknown(c->ac, line, on_answer, c), r);
}

int milter_client_body(milter_client *c, const void *data, size_t len,
                       milter_client_result *r) {
  if (len > 0 && data == NULL)
    return MILTER_E_INVAL;
  int mode = begin(c, MILTER_CMD_BODY, r);
  if (mode <= 0)
    return mode;
  if (len == 0) {
    r->status = MILTER_CLIENT_NOT_SENT;
    return 0;
  }
  int rc = milter_aclient_body(c->ac, data, len, on_answer, c);
  if ((rc = finish(c, mode, rc, r)) < 0)
    return rc;
  if (mode == MCP_NOREPLY) { /* every chunk went out */
    size_t ds = mcp_aclient_proto(c->ac)->data_size;
    r->chunks_sent = (unsigned)((len + ds - 1) / ds);
  }
  return 0;
}

static int no_reply(milter_client *c, int (*fn)(milter_aclient *)) {
  if (c == NULL)
    return MILTER_E_INVAL;
  if (c->ac == NULL || !c->negotiated)
    return fail(c, MILTER_E_STATE, "not negotiated");
  int rc = fn(c->ac);
  return rc < 0 ? failed(c, rc) : 0;
}

int milter_client_abort(milter_client *c) {
  return no_reply(c, milter_aclient_abort);
}

int milter_client_quit_nc(milter_client *c) {
  return no_reply(c, milter_aclient_quit_nc);
}

int milter_client_quit(milter_client *c) {
  if (c == NULL)
    return MILTER_E_INVAL;
  if (c->ac == NULL || !c->negotiated)
    return fail(c, MILTER_E_STATE, "not negotiated");
  drop(c); /* QUIT, drain, close */
  return 0;
}
