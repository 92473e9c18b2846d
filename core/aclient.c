/* aclient.c -- the MTA-side milter client on a libuv loop
 * (milter_aclient.h).  The protocol rules are client_proto.c's, shared with
 * the blocking client; this file only moves bytes and keeps time. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_aclient.h>
#include <mailfilter/milter_codec.h>

#include "client_proto.h"
#include "sigpipe.h"
#include "mf_alloc.h"

/* ac->awaiting while the socket connects (no command letter is 1). */
#define AWAIT_CONNECT 1

/* Most bytes kept from a milter that sends while no reply is due. */
#define PEND_MAX (1024u * 1024u)

/* Buffered NR commands are written once this much has piled up. */
#define FLUSH_AT (256u * 1024u)

struct milter_aclient {
  mcp p;
  uv_loop_t *loop;
  void *data;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_timer_t timer;
  mf_sigpipe_pair sigpipe; /* SIGPIPE blocked in the poll phase */
  int sigpipe_closed;
  uv_connect_t conn_req;
  uv_shutdown_t shut_req;
  int stream_init;   /* h was initialised (needs uv_close) */
  int writing;       /* a uv_write in flight (one at a time, sigpipe.h) */
  int shut_pending;  /* close: shut down once out is written */
  int stream_closed; /* uv_close(h) was called */
  int open_handles;  /* initialised handles whose close callback has not run;
                        the aclient is freed when it drops to 0 */
  int err;           /* sticky error: the connection is gone */
  int err_told;      /* err was returned or passed to a callback */
  int closing;       /* milter_aclient_close() was called */
  int then_negotiate; /* open: negotiate once connected */
  milter_aclient_closed_cb closed_cb;
  void *closed_arg;
  milter_decoder dec;
  milter_buf out;
  /* Bytes that arrived while no reply was due, kept for the next command
   * that awaits one: the socket is read all the time (to see EOF), but a
   * reply is matched only with a command, as an MTA reading on demand
   * would. */
  milter_buf pend;
  /* the command whose reply is awaited (0: none) and who gets it */
  uint8_t awaiting;
  milter_aclient_cb cb;
  void *cb_arg;
  milter_client_result res;
  /* body sent chunk by chunk (no NR_BODY) */
  const uint8_t *body;
  size_t body_len, body_off;
  uint64_t bytes_out, bytes_in;
};

typedef struct wreq {
  uv_write_t req;
  milter_aclient *ac;
  milter_buf buf;
} wreq;

static void on_handle_closed(uv_handle_t *h);
static int gone(milter_aclient *ac);
static int send_chunk(milter_aclient *ac);

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

int milter_aclient_new(milter_aclient **out, uv_loop_t *loop,
                       const milter_client_opts *opts) {
  if (out == NULL || loop == NULL)
    return MILTER_E_INVAL;
  *out = NULL;
  mcp p;
  if (mcp_init(&p, opts) < 0)
    return MILTER_E_INVAL;
  milter_aclient *ac = xcalloc(1, sizeof *ac);
  if (ac == NULL)
    return MILTER_E_NOMEM;
  ac->p = p;
  ac->loop = loop;
  if (uv_timer_init(loop, &ac->timer) < 0) {
    free(ac);
    return MILTER_E_NOMEM;
  }
  ac->timer.data = ac;
  mf_sigpipe_pair_init(&ac->sigpipe, loop, ac);
  ac->open_handles = 3;
  milter_decoder_init(&ac->dec, p.opts.hard_cap);
  *out = ac;
  return 0;
}

uv_loop_t *milter_aclient_loop(const milter_aclient *ac) { return ac->loop; }

void milter_aclient_set_data(milter_aclient *ac, void *data) { ac->data = data; }
void *milter_aclient_get_data(const milter_aclient *ac) { return ac->data; }

const char *milter_aclient_errmsg(const milter_aclient *ac) {
  return ac != NULL ? ac->p.errmsg : "";
}

void milter_aclient_nego(const milter_aclient *ac, milter_client_nego *out) {
  memset(out, 0, sizeof *out);
  if (ac->p.negotiated)
    mcp_nego_out(&ac->p, out);
}

uint64_t milter_aclient_bytes_out(const milter_aclient *ac) {
  return ac->bytes_out;
}
uint64_t milter_aclient_bytes_in(const milter_aclient *ac) {
  return ac->bytes_in;
}

/* Once the stream is closing (or was never opened) nothing more is
 * written: the poll-phase guard can go. */
static void close_sigpipe(milter_aclient *ac) {
  if (!ac->sigpipe_closed) {
    ac->sigpipe_closed = 1;
    mf_sigpipe_pair_close(&ac->sigpipe, on_handle_closed);
  }
}

static void close_stream(milter_aclient *ac) {
  if (ac->stream_init && !ac->stream_closed) {
    ac->stream_closed = 1;
    uv_close(&ac->h.handle, on_handle_closed);
    close_sigpipe(ac);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  milter_aclient *ac = h->data;
  if (--ac->open_handles > 0)
    return;
  milter_aclient_closed_cb cb = ac->closed_cb;
  void *arg = ac->closed_arg;
  milter_decoder_free(&ac->dec);
  milter_buf_free(&ac->out);
  milter_buf_free(&ac->pend);
  milter_client_result_free(&ac->res);
  mcp_reset(&ac->p);
  free(ac);
  if (cb != NULL)
    cb(arg);
}

/* ------------------------------------------------------------------------ */
/* Replies and errors                                                       */
/* ------------------------------------------------------------------------ */

/* Hand the awaited result (or err) to its callback. */
static void deliver(milter_aclient *ac, int err) {
  milter_aclient_cb cb = ac->cb;
  void *arg = ac->cb_arg;
  milter_client_result r = ac->res;
  int is_open =
      ac->awaiting == MILTER_CMD_OPTNEG || ac->awaiting == AWAIT_CONNECT;
  memset(&ac->res, 0, sizeof ac->res);
  ac->cb = NULL;
  ac->awaiting = 0;
  ac->body = NULL;
  uv_timer_stop(&ac->timer);
  if (err < 0)
    ac->err_told = 1;
  if (cb != NULL)
    cb(ac, err, err < 0 || is_open ? NULL : &r, arg);
  milter_client_result_free(&r);
}

/* The connection is unusable: keep err, close the socket, fail the awaited
 * reply.  errmsg must be set already. */
static void die(milter_aclient *ac, int err) {
  if (ac->err != 0)
    return;
  ac->err = err;
  uv_timer_stop(&ac->timer);
  close_stream(ac);
  if (ac->awaiting)
    deliver(ac, err);
}

/* die() for an error the caller returns now. */
static int die_now(milter_aclient *ac, int err) {
  die(ac, err);
  ac->err_told = 1;
  return err;
}

__attribute__((format(printf, 3, 4))) static void
die_msg(milter_aclient *ac, int err, const char *fmt, ...) {
  if (ac->err != 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ac->p.errmsg, sizeof ac->p.errmsg, fmt, ap);
  va_end(ap);
  die(ac, err);
}

static void on_timeout(uv_timer_t *t) {
  milter_aclient *ac = t->data;
  if (ac->awaiting == AWAIT_CONNECT)
    die_msg(ac, MILTER_E_TIMEOUT, "connect to the milter timed out");
  else
    die_msg(ac, MILTER_E_TIMEOUT, "no reply from the milter in time (to %s)",
            milter_cmd_name(ac->awaiting));
}

static void arm_timer(milter_aclient *ac) {
  uint64_t ms = ac->awaiting == MILTER_CMD_EOB ? ac->p.opts.eom_timeout_ms
                                               : ac->p.opts.command_timeout_ms;
  uv_timer_start(&ac->timer, on_timeout, ms, 0);
}

static void on_packet(milter_aclient *ac, const milter_packet *pkt) {
  if (ac->awaiting == 0) {
    die_msg(ac, MILTER_E_PROTO, "milter sent %s (0x%02x) while no reply was due",
            milter_reply_name(pkt->cmd), pkt->cmd);
    return;
  }
  if (ac->awaiting == MILTER_CMD_OPTNEG) {
    int rc = mcp_negotiated(&ac->p, pkt);
    if (rc < 0)
      die(ac, rc);
    else
      deliver(ac, 0);
    return;
  }
  int rc = mcp_reply(&ac->p, ac->awaiting, pkt, &ac->res);
  if (rc < 0) {
    die(ac, rc);
  } else if (rc == 0) {
    arm_timer(ac); /* PROGRESS or a modification restarts the clock */
  } else if (ac->awaiting == MILTER_CMD_BODY && ac->body != NULL &&
             ac->res.reply == MILTER_REPLY_CONTINUE &&
             ac->body_off < ac->body_len) {
    ac->res.status = 0;
    ac->res.reply = 0;
    if ((rc = send_chunk(ac)) < 0)
      die(ac, rc);
  } else {
    deliver(ac, 0);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  /* Packets are decoded before the next read; partial ones are copied by
   * the decoder.  So one buffer per thread serves every connection. */
  static _Thread_local char rbuf[65536];
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(rbuf, sizeof rbuf);
}

/* Decode input; what comes while no reply is due waits in ac->pend. */
static void process_input(milter_aclient *ac, const uint8_t *p, size_t n) {
  size_t off = 0;
  while (off < n && ac->err == 0) {
    if (!ac->awaiting) {
      if (ac->pend.len + (n - off) > PEND_MAX) {
        die_msg(ac, MILTER_E_PROTO,
                "milter sent more than %u bytes while no reply was due",
                PEND_MAX);
      } else if (milter_buf_append(&ac->pend, p + off, n - off) < 0) {
        die_msg(ac, MILTER_E_NOMEM, "out of memory");
      }
      return;
    }
    size_t used = 0;
    milter_packet pkt;
    int rc = milter_decoder_feed(&ac->dec, p + off, n - off, &used, &pkt);
    off += used;
    if (rc == 1) {
      on_packet(ac, &pkt);
    } else if (rc == MILTER_E_TOOBIG) {
      die_msg(ac, rc, "milter sent a packet of %u bytes (limit %u)",
              (unsigned)ac->dec.need, (unsigned)ac->p.opts.hard_cap);
    } else if (rc < 0) {
      die_msg(ac, rc == MILTER_E_PROTO ? MILTER_E_PROTO : rc,
              "milter sent a malformed packet: %s", milter_strerror(rc));
    } else {
      break; /* the decoder keeps the partial packet */
    }
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  milter_aclient *ac = s->data;
  if (n < 0) {
    if (n == UV_EOF || n == UV_ECONNRESET)
      die_msg(ac, MILTER_E_EOF, "milter closed the connection");
    else
      die_msg(ac, MILTER_E_IO, "read: %s", uv_strerror((int)n));
    return;
  }
  ac->bytes_in += (uint64_t)n;
  process_input(ac, (const uint8_t *)buf->base, (size_t)n);
}

/* A reply is now awaited and bytes were kept: decode them from the loop
 * (never inside the API call that started the wait). */
static void on_kick(uv_timer_t *t) {
  milter_aclient *ac = t->data;
  arm_timer(ac);
  milter_buf b = ac->pend;
  milter_buf_init(&ac->pend);
  process_input(ac, b.data, b.len);
  milter_buf_free(&b);
}

/* Start the clock for the awaited reply (or decode kept bytes first). */
static void await_reply(milter_aclient *ac) {
  if (ac->pend.len > 0)
    uv_timer_start(&ac->timer, on_kick, 0, 0);
  else
    arm_timer(ac);
}

/* The sticky error once (it happened while nothing was awaited), then
 * MILTER_E_CLOSED. */
static int gone(milter_aclient *ac) {
  if (ac->err != 0 && !ac->err_told) {
    ac->err_told = 1;
    return ac->err;
  }
  return MILTER_E_CLOSED;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */

static int flush(milter_aclient *ac);
static void start_shutdown(milter_aclient *ac);

static void on_write(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  milter_aclient *ac = w->ac;
  ac->writing = 0;
  if (status == 0)
    ac->bytes_out += w->buf.len;
  milter_buf_free(&w->buf);
  free(w);
  if (status < 0 && status != UV_ECANCELED) {
    if (status == UV_EPIPE || status == UV_ECONNRESET)
      die_msg(ac, MILTER_E_EOF, "milter closed the connection (write: %s)",
              uv_strerror(status));
    else
      die_msg(ac, MILTER_E_IO, "write: %s", uv_strerror(status));
  }
  if (status < 0 || ac->err != 0 || ac->stream_closed)
    return;
  int rc = flush(ac); /* what came meanwhile */
  if (rc < 0) {
    die(ac, rc);
  } else if (ac->shut_pending && ac->out.len == 0) {
    ac->shut_pending = 0;
    start_shutdown(ac);
  }
}

/* Write ac->out: directly when the socket takes it (send, no SIGPIPE),
 * else handed to libuv (written with SIGPIPE blocked, see sigpipe.h).
 * While that write is in flight, new output waits in ac->out for
 * on_write. */
static int flush(milter_aclient *ac) {
  if (ac->out.len == 0 || ac->writing)
    return 0;
  int n = mf_send_nosig(&ac->h.stream, ac->out.data, ac->out.len);
  if (n < 0) {
    if (n == UV_EPIPE || n == UV_ECONNRESET)
      return mcp_fail(&ac->p, MILTER_E_EOF,
                      "milter closed the connection (write: %s)",
                      uv_strerror(n));
    return mcp_fail(&ac->p, MILTER_E_IO, "write: %s", uv_strerror(n));
  }
  ac->bytes_out += (uint64_t)n;
  if ((size_t)n == ac->out.len) {
    ac->out.len = 0;
    return 0;
  }
  milter_buf_consume(&ac->out, (size_t)n);
  wreq *w = xmalloc(sizeof *w);
  if (w == NULL)
    return mcp_fail(&ac->p, MILTER_E_NOMEM, "out of memory");
  w->ac = ac;
  w->buf = ac->out; /* the request takes the bytes */
  milter_buf_init(&ac->out);
  uv_buf_t b = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
  int rc = mf_uv_write(&w->req, &ac->h.stream, &b, 1, on_write);
  if (rc < 0) {
    milter_buf_free(&w->buf);
    free(w);
    return mcp_fail(&ac->p, MILTER_E_IO, "write: %s", uv_strerror(rc));
  }
  ac->writing = 1;
  return 0;
}

int milter_aclient_flush(milter_aclient *ac) {
  if (ac == NULL)
    return MILTER_E_INVAL;
  if (ac->err != 0)
    return gone(ac);
  if (!ac->stream_init)
    return mcp_fail(&ac->p, MILTER_E_STATE, "not connected");
  int rc = flush(ac);
  return rc < 0 ? die_now(ac, rc) : 0;
}

/* ------------------------------------------------------------------------ */
/* Connecting                                                               */
/* ------------------------------------------------------------------------ */

/* Send SMFIC_OPTNEG and await the answer (ac->cb is set). */
static int send_optneg(milter_aclient *ac) {
  const milter_client_opts *o = &ac->p.opts;
  int rc = milter_enc_optneg(&ac->out, o->version, o->actions, o->protocol);
  if (rc == 0)
    rc = flush(ac);
  if (rc < 0)
    return rc;
  ac->awaiting = MILTER_CMD_OPTNEG;
  await_reply(ac);
  return 0;
}

static void on_connect(uv_connect_t *req, int status) {
  milter_aclient *ac = req->data;
  if (ac->err != 0 || ac->closing) /* closed or timed out meanwhile */
    return;
  if (status < 0) {
    die_msg(ac, MILTER_E_IO, "connect: %s", uv_strerror(status));
    return;
  }
  int rc = uv_read_start(&ac->h.stream, on_alloc, on_read);
  if (rc < 0) {
    die_msg(ac, MILTER_E_IO, "read: %s", uv_strerror(rc));
    return;
  }
  if (!ac->then_negotiate) {
    deliver(ac, 0); /* connected; mcp_aclient_negotiate() follows */
    return;
  }
  if ((rc = send_optneg(ac)) < 0)
    die(ac, rc);
}

/* Connect; cb(ac, err, NULL, arg) when connected or failed (and, with
 * then_negotiate set by milter_aclient_open, negotiated). */
int mcp_aclient_connect(milter_aclient *ac, const char *spec,
                        milter_aclient_cb cb, void *arg) {
  if (ac == NULL || spec == NULL || cb == NULL)
    return MILTER_E_INVAL;
  if (ac->stream_init || ac->closing)
    return mcp_fail(&ac->p, MILTER_E_STATE, "already opened");
  struct sockaddr_storage ss;
  int is_unix = 0;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  if (milter_parse_spec(spec, &ss, &is_unix, path, sizeof path) < 0)
    return mcp_fail(&ac->p, MILTER_E_ADDR, "bad socket spec '%s'", spec);
  int rc = is_unix ? uv_pipe_init(ac->loop, &ac->h.pipe, 0)
                   : uv_tcp_init(ac->loop, &ac->h.tcp);
  if (rc < 0)
    return mcp_fail(&ac->p, MILTER_E_IO, "socket: %s", uv_strerror(rc));
  ac->h.handle.data = ac;
  ac->stream_init = 1;
  ac->open_handles++;
  ac->conn_req.data = ac;
  if (is_unix) {
    uv_pipe_connect(&ac->conn_req, &ac->h.pipe, path, on_connect);
  } else {
    uv_tcp_nodelay(&ac->h.tcp, 1);
    rc = uv_tcp_connect(&ac->conn_req, &ac->h.tcp, (struct sockaddr *)&ss,
                        on_connect);
    if (rc < 0) {
      mcp_fail(&ac->p, MILTER_E_IO, "connect to %s: %s", spec,
               uv_strerror(rc));
      ac->err = MILTER_E_IO;
      ac->err_told = 1;
      close_stream(ac);
      return MILTER_E_IO;
    }
  }
  ac->awaiting = AWAIT_CONNECT;
  ac->cb = cb;
  ac->cb_arg = arg;
  uv_timer_start(&ac->timer, on_timeout, ac->p.opts.connect_timeout_ms, 0);
  return 0;
}

int mcp_aclient_negotiate(milter_aclient *ac, milter_aclient_cb cb,
                          void *arg) {
  if (ac == NULL || cb == NULL)
    return MILTER_E_INVAL;
  if (ac->err != 0 || ac->closing)
    return gone(ac);
  if (!ac->stream_init || ac->awaiting)
    return mcp_fail(&ac->p, MILTER_E_STATE, "not connected");
  if (ac->p.negotiated)
    return mcp_fail(&ac->p, MILTER_E_STATE, "already negotiated");
  ac->cb = cb;
  ac->cb_arg = arg;
  int rc = send_optneg(ac);
  if (rc < 0) {
    ac->cb = NULL;
    return die_now(ac, rc);
  }
  return 0;
}

const mcp *mcp_aclient_proto(const milter_aclient *ac) { return &ac->p; }

int milter_aclient_open(milter_aclient *ac, const char *spec,
                        milter_aclient_cb cb, void *arg) {
  int rc = mcp_aclient_connect(ac, spec, cb, arg);
  if (rc == 0)
    ac->then_negotiate = 1;
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

/* Checks before an event.  Returns its mode (MCP_*) or an error. */
static int begin(milter_aclient *ac, uint8_t cmd) {
  if (ac == NULL)
    return MILTER_E_INVAL;
  if (ac->err != 0 || ac->closing)
    return gone(ac);
  if (!ac->p.negotiated)
    return mcp_fail(&ac->p, MILTER_E_STATE, "not negotiated");
  if (ac->awaiting)
    return mcp_fail(&ac->p, MILTER_E_STATE,
                    "%s while the reply to %s is awaited",
                    milter_cmd_name(cmd), milter_cmd_name(ac->awaiting));
  return mcp_event_mode(&ac->p, cmd);
}

/* After encoding cmd into ac->out (enc_rc = encoder's result; mark = out.len
 * before): queue it, or send it and await the reply. */
static int finish(milter_aclient *ac, uint8_t cmd, int mode, int enc_rc,
                  size_t mark, milter_aclient_cb cb, void *arg) {
  if (enc_rc < 0) {
    ac->out.len = mark;
    return mcp_fail(&ac->p, MILTER_E_INVAL, "cannot encode %s: %s",
                    milter_cmd_name(cmd), milter_strerror(enc_rc));
  }
  int rc;
  if (mode == MCP_NOREPLY) {
    if (ac->out.len >= FLUSH_AT && (rc = flush(ac)) < 0)
      return die_now(ac, rc);
    return 0;
  }
  if (cb == NULL) {
    ac->out.len = mark;
    return mcp_fail(&ac->p, MILTER_E_INVAL, "%s needs a callback",
                    milter_cmd_name(cmd));
  }
  if ((rc = flush(ac)) < 0)
    return die_now(ac, rc);
  milter_client_result_free(&ac->res);
  ac->awaiting = cmd;
  ac->cb = cb;
  ac->cb_arg = arg;
  await_reply(ac);
  return 1;
}

int milter_aclient_macro(milter_aclient *ac, uint8_t cmd, size_t n_pairs,
                         const char *const *names_values) {
  if (ac == NULL || (n_pairs > 0 && names_values == NULL))
    return MILTER_E_INVAL;
  int mode = begin(ac, MILTER_CMD_MACRO);
  if (mode < 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = milter_enc_macro(&ac->out, cmd, n_pairs, names_values);
  return finish(ac, MILTER_CMD_MACRO, MCP_NOREPLY, rc, mark, NULL, NULL);
}

int milter_aclient_connect(milter_aclient *ac, const char *hostname,
                           char family, uint16_t port, const char *address,
                           milter_aclient_cb cb, void *arg) {
  int mode = begin(ac, MILTER_CMD_CONNECT);
  if (mode <= 0)
    return mode;
  if (family == MILTER_FAMILY_UNKNOWN)
    address = NULL, port = 0;
  size_t mark = ac->out.len;
  int rc = milter_enc_connect(&ac->out, hostname, family, port, address);
  return finish(ac, MILTER_CMD_CONNECT, mode, rc, mark, cb, arg);
}

int milter_aclient_helo(milter_aclient *ac, const char *helo,
                        milter_aclient_cb cb, void *arg) {
  int mode = begin(ac, MILTER_CMD_HELO);
  if (mode <= 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = milter_enc_helo(&ac->out, helo);
  return finish(ac, MILTER_CMD_HELO, mode, rc, mark, cb, arg);
}

static int envaddr(milter_aclient *ac, uint8_t cmd, const char *addr,
                   size_t argc, const char *const *argv, milter_aclient_cb cb,
                   void *arg) {
  int mode = begin(ac, cmd);
  if (mode <= 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = argc > 0 && argv == NULL
               ? MILTER_E_INVAL
               : milter_enc_envaddr(&ac->out, cmd, addr, argc, argv);
  return finish(ac, cmd, mode, rc, mark, cb, arg);
}

int milter_aclient_mail(milter_aclient *ac, const char *addr, size_t argc,
                        const char *const *argv, milter_aclient_cb cb,
                        void *arg) {
  return envaddr(ac, MILTER_CMD_MAIL, addr, argc, argv, cb, arg);
}

int milter_aclient_rcpt(milter_aclient *ac, const char *addr, size_t argc,
                        const char *const *argv, milter_aclient_cb cb,
                        void *arg) {
  return envaddr(ac, MILTER_CMD_RCPT, addr, argc, argv, cb, arg);
}

static int simple(milter_aclient *ac, uint8_t cmd, milter_aclient_cb cb,
                  void *arg) {
  int mode = begin(ac, cmd);
  if (mode <= 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = milter_enc_simple(&ac->out, cmd);
  return finish(ac, cmd, mode, rc, mark, cb, arg);
}

int milter_aclient_data(milter_aclient *ac, milter_aclient_cb cb, void *arg) {
  return simple(ac, MILTER_CMD_DATA, cb, arg);
}

int milter_aclient_eoh(milter_aclient *ac, milter_aclient_cb cb, void *arg) {
  return simple(ac, MILTER_CMD_EOH, cb, arg);
}

int milter_aclient_eom(milter_aclient *ac, milter_aclient_cb cb, void *arg) {
  return simple(ac, MILTER_CMD_EOB, cb, arg);
}

int milter_aclient_header(milter_aclient *ac, const char *name,
                          const char *value, milter_aclient_cb cb, void *arg) {
  int mode = begin(ac, MILTER_CMD_HEADER);
  if (mode <= 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = milter_enc_header(&ac->out, name, value);
  return finish(ac, MILTER_CMD_HEADER, mode, rc, mark, cb, arg);
}

int milter_aclient_unknown(milter_aclient *ac, const char *line,
                           milter_aclient_cb cb, void *arg) {
  int mode = begin(ac, MILTER_CMD_UNKNOWN);
  if (mode <= 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = milter_enc_unknown(&ac->out, line);
  return finish(ac, MILTER_CMD_UNKNOWN, mode, rc, mark, cb, arg);
}

/* Send the next body chunk of a reply-per-chunk body. */
static int send_chunk(milter_aclient *ac) {
  size_t n = ac->body_len - ac->body_off;
  if (n > ac->p.data_size)
    n = ac->p.data_size;
  int rc = milter_enc_body(&ac->out, ac->body + ac->body_off, n);
  if (rc == 0)
    rc = flush(ac);
  if (rc < 0)
    return rc;
  ac->body_off += n;
  ac->res.chunks_sent++;
  await_reply(ac);
  return 0;
}

int milter_aclient_body(milter_aclient *ac, const void *data, size_t len,
                        milter_aclient_cb cb, void *arg) {
  if (ac != NULL && len > 0 && data == NULL)
    return MILTER_E_INVAL;
  int mode = begin(ac, MILTER_CMD_BODY);
  if (mode <= 0 || len == 0)
    return mode < 0 ? mode : 0;
  const uint8_t *p = data;
  if (mode == MCP_NOREPLY) {
    for (size_t off = 0; off < len;) {
      size_t n = len - off < ac->p.data_size ? len - off : ac->p.data_size;
      size_t mark = ac->out.len;
      int rc = milter_enc_body(&ac->out, p + off, n);
      if ((rc = finish(ac, MILTER_CMD_BODY, mode, rc, mark, NULL, NULL)) < 0)
        return rc;
      off += n;
    }
    return 0;
  }
  if (cb == NULL)
    return mcp_fail(&ac->p, MILTER_E_INVAL, "SMFIC_BODY needs a callback");
  milter_client_result_free(&ac->res);
  ac->awaiting = MILTER_CMD_BODY;
  ac->cb = cb;
  ac->cb_arg = arg;
  ac->body = p;
  ac->body_len = len;
  ac->body_off = 0;
  int rc = send_chunk(ac);
  if (rc < 0) {
    ac->awaiting = 0; /* failed now: no callback */
    ac->cb = NULL;
    ac->body = NULL;
    return die_now(ac, rc);
  }
  return 1;
}

static int no_reply(milter_aclient *ac, uint8_t cmd) {
  int mode = begin(ac, cmd);
  if (mode < 0)
    return mode;
  size_t mark = ac->out.len;
  int rc = milter_enc_simple(&ac->out, cmd);
  if (rc < 0) {
    ac->out.len = mark;
    return mcp_fail(&ac->p, MILTER_E_INVAL, "cannot encode %s",
                    milter_cmd_name(cmd));
  }
  return (rc = flush(ac)) < 0 ? die_now(ac, rc) : 0;
}

int milter_aclient_abort(milter_aclient *ac) {
  return no_reply(ac, MILTER_CMD_ABORT);
}

int milter_aclient_quit_nc(milter_aclient *ac) {
  return no_reply(ac, MILTER_CMD_QUIT_NC);
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                  */
/* ------------------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  close_stream(req->data);
}

/* After the queued bytes (QUIT included), shut down, then close. */
static void start_shutdown(milter_aclient *ac) {
  ac->shut_req.data = ac;
  if (uv_shutdown(&ac->shut_req, &ac->h.stream, on_shutdown) != 0)
    close_stream(ac);
}

void milter_aclient_close(milter_aclient *ac,
                          milter_aclient_closed_cb closed_cb, void *arg) {
  if (ac == NULL || ac->closing)
    return;
  ac->closing = 1;
  ac->closed_cb = closed_cb;
  ac->closed_arg = arg;
  uv_timer_stop(&ac->timer);
  int quit = ac->err == 0 && ac->p.negotiated && !ac->awaiting;
  if (ac->awaiting) {
    mcp_fail(&ac->p, MILTER_E_CLOSED, "closed while awaiting the reply to %s",
             milter_cmd_name(ac->awaiting));
    deliver(ac, MILTER_E_CLOSED);
  }
  if (quit && milter_enc_simple(&ac->out, MILTER_CMD_QUIT) == 0 &&
      flush(ac) == 0) {
    uv_close((uv_handle_t *)&ac->timer, on_handle_closed);
    if (ac->out.len > 0)
      ac->shut_pending = 1; /* behind the write in flight: on_write */
    else
      start_shutdown(ac);
    return; /* the stream is closed by on_shutdown */
  }
  close_stream(ac);
  close_sigpipe(ac); /* never connected */
  uv_close((uv_handle_t *)&ac->timer, on_handle_closed);
}
