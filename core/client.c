/* client.c -- the blocking MTA-side milter client (milter_client.h).
 *
 * Plain sockets, poll() for every wait; the codec (milter_enc_*,
 * milter_decoder_*, milter_parse_reply) does all framing and parsing. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_codec.h>

#include "client_proto.h"

struct milter_client {
  mcp p; /* options, negotiation, error text */
  int fd;
  milter_decoder dec;
  milter_buf out;
  /* input bytes read but not yet decoded */
  uint8_t rbuf[65536];
  size_t rpos, rlen;
};

__attribute__((format(printf, 3, 4))) static int fail(milter_client *c, int err,
                                                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->p.errmsg, sizeof c->p.errmsg, fmt, ap);
  va_end(ap);
  if (err != MILTER_E_INVAL && err != MILTER_E_STATE)
    milter_client_close(c);
  return err;
}

/* An error the shared protocol code reported (errmsg already set). */
static int failed(milter_client *c, int err) {
  if (err != MILTER_E_INVAL && err != MILTER_E_STATE)
    milter_client_close(c);
  return err;
}

int milter_client_new(milter_client **out, const milter_client_opts *opts) {
  if (out == NULL)
    return MILTER_E_INVAL;
  *out = NULL;
  mcp p;
  if (mcp_init(&p, opts) < 0)
    return MILTER_E_INVAL;
  milter_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return MILTER_E_NOMEM;
  c->p = p;
  c->fd = -1;
  milter_decoder_init(&c->dec, p.opts.hard_cap);
  *out = c;
  return 0;
}

void milter_client_close(milter_client *c) {
  if (c == NULL)
    return;
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->p.negotiated = 0;
  c->rpos = c->rlen = 0;
  milter_decoder_free(&c->dec);
  milter_decoder_init(&c->dec, c->p.opts.hard_cap);
  c->out.len = 0;
}

void milter_client_free(milter_client *c) {
  if (c == NULL)
    return;
  milter_client_close(c);
  milter_decoder_free(&c->dec);
  milter_buf_free(&c->out);
  mcp_reset(&c->p);
  free(c);
}

const char *milter_client_errmsg(const milter_client *c) {
  return c != NULL ? c->p.errmsg : "";
}

uint32_t milter_client_version(const milter_client *c) {
  return c->p.negotiated ? c->p.version : 0;
}
uint32_t milter_client_actions(const milter_client *c) {
  return c->p.negotiated ? c->p.actions : 0;
}
uint32_t milter_client_protocol(const milter_client *c) {
  return c->p.negotiated ? c->p.protocol : 0;
}
uint32_t milter_client_data_size(const milter_client *c) {
  return c->p.negotiated ? c->p.data_size : 0;
}

/* ------------------------------------------------------------------------ */
/* Time and I/O                                                             */
/* ------------------------------------------------------------------------ */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wait for events on fd until deadline.  1 ready, 0 timeout, <0 error. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t now = now_ms();
    if (now >= deadline)
      return 0;
    uint64_t left = deadline - now;
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n > 0)
      return 1;
  }
}

int milter_client_open(milter_client *c, const char *spec) {
  if (c == NULL || spec == NULL)
    return MILTER_E_INVAL;
  milter_client_close(c);
  mcp_reset(&c->p);
  c->p.errmsg[0] = '\0';
  struct sockaddr_storage ss;
  int is_unix = 0;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  if (milter_parse_spec(spec, &ss, &is_unix, path, sizeof path) < 0)
    return fail(c, MILTER_E_ADDR, "bad socket spec '%s'", spec);
  socklen_t slen;
  if (is_unix) {
    struct sockaddr_un *su = (struct sockaddr_un *)&ss;
    memset(su, 0, sizeof *su);
    su->sun_family = AF_UNIX;
    memcpy(su->sun_path, path, strlen(path) + 1);
    slen = (socklen_t)sizeof *su;
  } else {
    slen = ss.ss_family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
                                    : (socklen_t)sizeof(struct sockaddr_in);
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return fail(c, MILTER_E_IO, "socket: %s", strerror(errno));
  c->fd = fd;
  if (connect(fd, (struct sockaddr *)&ss, slen) < 0) {
    if (errno != EINPROGRESS && errno != EAGAIN)
      return fail(c, MILTER_E_IO, "connect to %s: %s", spec, strerror(errno));
    int w = wait_fd(fd, POLLOUT, now_ms() + c->p.opts.connect_timeout_ms);
    if (w == 0)
      return fail(c, MILTER_E_TIMEOUT, "connect to %s: timed out", spec);
    int err = 0;
    socklen_t el = sizeof err;
    if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
      err = errno;
    if (err != 0)
      return fail(c, MILTER_E_IO, "connect to %s: %s", spec, strerror(err));
  }
  return 0;
}

/* Write c->out completely, then empty it. */
static int flush(milter_client *c) {
  size_t off = 0;
  uint64_t deadline = now_ms() + c->p.opts.command_timeout_ms;
  while (off < c->out.len) {
    ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait_fd(c->fd, POLLOUT, deadline);
      if (w == 0)
        return fail(c, MILTER_E_TIMEOUT, "write to milter timed out");
      if (w < 0)
        return fail(c, MILTER_E_IO, "poll: %s", strerror(errno));
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
      return fail(c, MILTER_E_EOF, "milter closed the connection (write: %s)",
                  strerror(errno));
    return fail(c, MILTER_E_IO, "write: %s", strerror(errno));
  }
  c->out.len = 0;
  return 0;
}

/* Read one packet, waiting until deadline.  The packet stays valid until the
 * next call. */
static int read_packet(milter_client *c, uint64_t deadline,
                       milter_packet *pkt) {
  for (;;) {
    if (c->rpos < c->rlen) {
      size_t used = 0;
      int rc = milter_decoder_feed(&c->dec, c->rbuf + c->rpos,
                                   c->rlen - c->rpos, &used, pkt);
      c->rpos += used;
      if (rc == 1)
        return 0;
      if (rc == MILTER_E_TOOBIG)
        return fail(c, MILTER_E_TOOBIG,
                    "milter sent a packet of %u bytes (limit %u)",
                    (unsigned)c->dec.need, (unsigned)c->p.opts.hard_cap);
      if (rc == MILTER_E_PROTO)
        return fail(c, MILTER_E_PROTO, "milter sent a zero-length packet");
      if (rc < 0)
        return fail(c, rc, "decoder: %s", milter_strerror(rc));
    }
    /* The decoder copied a partial packet; the read buffer is free. */
    c->rpos = c->rlen = 0;
    int w = wait_fd(c->fd, POLLIN, deadline);
    if (w == 0)
      return fail(c, MILTER_E_TIMEOUT, "no reply from the milter in time");
    if (w < 0)
      return fail(c, MILTER_E_IO, "poll: %s", strerror(errno));
    ssize_t n = recv(c->fd, c->rbuf, sizeof c->rbuf, 0);
    if (n == 0)
      return fail(c, MILTER_E_EOF, "milter closed the connection");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      if (errno == ECONNRESET)
        return fail(c, MILTER_E_EOF, "milter reset the connection");
      return fail(c, MILTER_E_IO, "read: %s", strerror(errno));
    }
    c->rlen = (size_t)n;
  }
}

/* Read replies to cmd until a final one. */
static int read_reply(milter_client *c, uint8_t cmd, milter_client_result *r) {
  uint64_t tmo = cmd == MILTER_CMD_EOB ? c->p.opts.eom_timeout_ms
                                       : c->p.opts.command_timeout_ms;
  uint64_t deadline = now_ms() + tmo;
  for (;;) {
    milter_packet pkt;
    int rc = read_packet(c, deadline, &pkt);
    if (rc < 0)
      return rc;
    if ((rc = mcp_reply(&c->p, cmd, &pkt, r)) < 0)
      return failed(c, rc);
    if (rc == 1)
      return 0;
    deadline = now_ms() + tmo; /* PROGRESS or a modification */
  }
}

/* ------------------------------------------------------------------------ */
/* Negotiation                                                              */
/* ------------------------------------------------------------------------ */

static int ready(milter_client *c, int need_nego) {
  if (c->fd < 0)
    return fail(c, MILTER_E_STATE, "not connected");
  if (need_nego && !c->p.negotiated)
    return fail(c, MILTER_E_STATE, "not negotiated");
  c->p.errmsg[0] = '\0';
  return 0;
}

int milter_client_negotiate(milter_client *c, milter_client_nego *out) {
  if (c == NULL)
    return MILTER_E_INVAL;
  int rc = ready(c, 0);
  if (rc < 0)
    return rc;
  if (c->p.negotiated)
    return fail(c, MILTER_E_STATE, "already negotiated");
  mcp_reset(&c->p);
  const milter_client_opts *o = &c->p.opts;
  if ((rc = milter_enc_optneg(&c->out, o->version, o->actions, o->protocol)) <
      0)
    return fail(c, rc, "encode: %s", milter_strerror(rc));
  if ((rc = flush(c)) < 0)
    return rc;
  milter_packet pkt;
  if ((rc = read_packet(c, now_ms() + o->command_timeout_ms, &pkt)) < 0)
    return rc;
  if ((rc = mcp_negotiated(&c->p, &pkt)) < 0)
    return failed(c, rc);
  if (out != NULL)
    mcp_nego_out(&c->p, out);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

/* Common start of an event: checks, result reset.  Returns 1 to send, 0 for
 * NOT_SENT, or an error. */
static int begin_event(milter_client *c, uint8_t cmd, milter_client_result *r) {
  if (c == NULL || r == NULL)
    return MILTER_E_INVAL;
  milter_client_result_free(r);
  int rc = ready(c, 1);
  if (rc < 0)
    return rc;
  if (mcp_event_mode(&c->p, cmd) == MCP_NOT_SENT) {
    r->status = MILTER_CLIENT_NOT_SENT;
    return 0;
  }
  return 1;
}

/* Send what is in c->out (one command cmd) and read its reply if one is
 * due. */
static int finish_event(milter_client *c, uint8_t cmd, int enc_rc,
                        milter_client_result *r) {
  if (enc_rc < 0) {
    c->out.len = 0;
    return fail(c, MILTER_E_INVAL, "cannot encode %s: %s", milter_cmd_name(cmd),
                milter_strerror(enc_rc));
  }
  int rc = flush(c);
  if (rc < 0)
    return rc;
  if (mcp_event_mode(&c->p, cmd) == MCP_NOREPLY) {
    r->status = MILTER_CLIENT_NOREPLY;
    return 0;
  }
  return read_reply(c, cmd, r);
}

int milter_client_macro(milter_client *c, uint8_t cmd, size_t n_pairs,
                        const char *const *names_values) {
  if (c == NULL || (n_pairs > 0 && names_values == NULL))
    return MILTER_E_INVAL;
  int rc = ready(c, 1);
  if (rc < 0)
    return rc;
  rc = milter_enc_macro(&c->out, cmd, n_pairs, names_values);
  if (rc < 0) {
    c->out.len = 0;
    return fail(c, MILTER_E_INVAL, "cannot encode SMFIC_MACRO: %s",
                milter_strerror(rc));
  }
  return flush(c);
}

int milter_client_connect(milter_client *c, const char *hostname, char family,
                          uint16_t port, const char *address,
                          milter_client_result *r) {
  int rc = begin_event(c, MILTER_CMD_CONNECT, r);
  if (rc <= 0)
    return rc;
  if (family == MILTER_FAMILY_UNKNOWN)
    address = NULL, port = 0;
  rc = milter_enc_connect(&c->out, hostname, family, port, address);
  return finish_event(c, MILTER_CMD_CONNECT, rc, r);
}

int milter_client_helo(milter_client *c, const char *helo,
                       milter_client_result *r) {
  int rc = begin_event(c, MILTER_CMD_HELO, r);
  if (rc <= 0)
    return rc;
  rc = milter_enc_helo(&c->out, helo);
  return finish_event(c, MILTER_CMD_HELO, rc, r);
}

static int envaddr(milter_client *c, uint8_t cmd, const char *addr, size_t argc,
                   const char *const *argv, milter_client_result *r) {
  int rc = begin_event(c, cmd, r);
  if (rc <= 0)
    return rc;
  rc = argc > 0 && argv == NULL
           ? MILTER_E_INVAL
           : milter_enc_envaddr(&c->out, cmd, addr, argc, argv);
  return finish_event(c, cmd, rc, r);
}

int milter_client_mail(milter_client *c, const char *addr, size_t argc,
                       const char *const *argv, milter_client_result *r) {
  return envaddr(c, MILTER_CMD_MAIL, addr, argc, argv, r);
}

int milter_client_rcpt(milter_client *c, const char *addr, size_t argc,
                       const char *const *argv, milter_client_result *r) {
  return envaddr(c, MILTER_CMD_RCPT, addr, argc, argv, r);
}

static int simple(milter_client *c, uint8_t cmd, milter_client_result *r) {
  int rc = begin_event(c, cmd, r);
  if (rc <= 0)
    return rc;
  rc = milter_enc_simple(&c->out, cmd);
  return finish_event(c, cmd, rc, r);
}

int milter_client_data(milter_client *c, milter_client_result *r) {
  return simple(c, MILTER_CMD_DATA, r);
}

int milter_client_eoh(milter_client *c, milter_client_result *r) {
  return simple(c, MILTER_CMD_EOH, r);
}

int milter_client_eom(milter_client *c, milter_client_result *r) {
  return simple(c, MILTER_CMD_EOB, r);
}

int milter_client_header(milter_client *c, const char *name, const char *value,
                         milter_client_result *r) {
  int rc = begin_event(c, MILTER_CMD_HEADER, r);
  if (rc <= 0)
    return rc;
  rc = milter_enc_header(&c->out, name, value);
  return finish_event(c, MILTER_CMD_HEADER, rc, r);
}

int milter_client_unknown(milter_client *c, const char *line,
                          milter_client_result *r) {
  int rc = begin_event(c, MILTER_CMD_UNKNOWN, r);
  if (rc <= 0)
    return rc;
  rc = milter_enc_unknown(&c->out, line);
  return finish_event(c, MILTER_CMD_UNKNOWN, rc, r);
}

int milter_client_body(milter_client *c, const void *data, size_t len,
                       milter_client_result *r) {
  if (len > 0 && data == NULL)
    return MILTER_E_INVAL;
  int rc = begin_event(c, MILTER_CMD_BODY, r);
  if (rc <= 0)
    return rc;
  if (len == 0) {
    r->status = MILTER_CLIENT_NOT_SENT;
    return 0;
  }
  const uint8_t *p = data;
  size_t off = 0;
  while (off < len) {
    size_t n = len - off < c->p.data_size ? len - off : c->p.data_size;
    rc = milter_enc_body(&c->out, p + off, n);
    unsigned progress = r->progress;
    r->progress = 0;
    rc = finish_event(c, MILTER_CMD_BODY, rc, r);
    r->progress += progress;
    if (rc < 0)
      return rc;
    off += n;
    r->chunks_sent++;
    if (r->status == MILTER_CLIENT_REPLIED && r->reply != MILTER_REPLY_CONTINUE)
      break;
  }
  return 0;
}

static int no_reply(milter_client *c, uint8_t cmd) {
  if (c == NULL)
    return MILTER_E_INVAL;
  int rc = ready(c, 1);
  if (rc < 0)
    return rc;
  rc = milter_enc_simple(&c->out, cmd);
  if (rc < 0) {
    c->out.len = 0;
    return fail(c, rc, "cannot encode %s", milter_cmd_name(cmd));
  }
  return flush(c);
}

int milter_client_abort(milter_client *c) {
  return no_reply(c, MILTER_CMD_ABORT);
}

int milter_client_quit(milter_client *c) {
  int rc = no_reply(c, MILTER_CMD_QUIT);
  if (rc == 0)
    milter_client_close(c);
  return rc;
}

int milter_client_quit_nc(milter_client *c) {
  return no_reply(c, MILTER_CMD_QUIT_NC);
}
