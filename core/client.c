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

struct milter_client {
  milter_client_opts opts;
  int fd;
  int negotiated;
  uint32_t version, actions, protocol, data_size;
  char *symlist[MILTER_M_COUNT];
  milter_decoder dec;
  milter_buf out;
  /* input bytes read but not yet decoded */
  uint8_t rbuf[65536];
  size_t rpos, rlen;
  char errmsg[256];
};

void milter_client_opts_init(milter_client_opts *o) {
  memset(o, 0, sizeof *o);
  o->version = MILTER_PROTO_VERSION;
  o->actions = MILTER_ACT_ALL;
  o->protocol = MILTER_P_ALL_STEPS | MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  o->connect_timeout_ms = 30000;
  o->command_timeout_ms = 30000;
  o->eom_timeout_ms = 300000;
  o->hard_cap = MILTER_DEFAULT_HARD_CAP;
}

__attribute__((format(printf, 3, 4))) static int fail(milter_client *c, int err,
                                                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  if (err != MILTER_E_INVAL && err != MILTER_E_STATE)
    milter_client_close(c);
  return err;
}

static void free_symlists(milter_client *c) {
  for (int i = 0; i < MILTER_M_COUNT; i++) {
    free(c->symlist[i]);
    c->symlist[i] = NULL;
  }
}

int milter_client_new(milter_client **out, const milter_client_opts *opts) {
  if (out == NULL)
    return MILTER_E_INVAL;
  *out = NULL;
  milter_client_opts o;
  if (opts != NULL)
    o = *opts;
  else
    milter_client_opts_init(&o);
  if (o.version < MILTER_PROTO_VERSION_MIN || o.version > MILTER_PROTO_VERSION)
    return MILTER_E_INVAL;
  if (o.hard_cap == 0)
    o.hard_cap = MILTER_DEFAULT_HARD_CAP;
  milter_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return MILTER_E_NOMEM;
  c->opts = o;
  c->fd = -1;
  milter_decoder_init(&c->dec, o.hard_cap);
  *out = c;
  return 0;
}

void milter_client_close(milter_client *c) {
  if (c == NULL)
    return;
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->negotiated = 0;
  c->rpos = c->rlen = 0;
  milter_decoder_free(&c->dec);
  milter_decoder_init(&c->dec, c->opts.hard_cap);
  c->out.len = 0;
}

void milter_client_free(milter_client *c) {
  if (c == NULL)
    return;
  milter_client_close(c);
  milter_decoder_free(&c->dec);
  milter_buf_free(&c->out);
  free_symlists(c);
  free(c);
}

const char *milter_client_errmsg(const milter_client *c) {
  return c != NULL ? c->errmsg : "";
}

uint32_t milter_client_version(const milter_client *c) {
  return c->negotiated ? c->version : 0;
}
uint32_t milter_client_actions(const milter_client *c) {
  return c->negotiated ? c->actions : 0;
}
uint32_t milter_client_protocol(const milter_client *c) {
  return c->negotiated ? c->protocol : 0;
}
uint32_t milter_client_data_size(const milter_client *c) {
  return c->negotiated ? c->data_size : 0;
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
  free_symlists(c);
  c->errmsg[0] = '\0';
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
    int w = wait_fd(fd, POLLOUT, now_ms() + c->opts.connect_timeout_ms);
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
  uint64_t deadline = now_ms() + c->opts.command_timeout_ms;
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
                    (unsigned)c->dec.need, (unsigned)c->opts.hard_cap);
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

static char *dup_str(const char *s) {
  return s != NULL ? strdup(s) : NULL;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

void milter_client_result_free(milter_client_result *r) {
  if (r == NULL)
    return;
  free(r->text);
  for (size_t i = 0; i < r->n_actions; i++) {
    free(r->actions[i].name);
    free(r->actions[i].value);
    free(r->actions[i].body);
  }
  free(r->actions);
  memset(r, 0, sizeof *r);
}

static int is_final(uint8_t code) {
  switch (code) {
  case MILTER_REPLY_ACCEPT:
  case MILTER_REPLY_CONTINUE:
  case MILTER_REPLY_REJECT:
  case MILTER_REPLY_TEMPFAIL:
  case MILTER_REPLY_DISCARD:
  case MILTER_REPLY_REPLYCODE:
    return 1;
  }
  return 0;
}

static uint32_t action_bit(uint8_t code) {
  switch (code) {
  case MILTER_REPLY_ADDHEADER:
  case MILTER_REPLY_INSHEADER:
    return MILTER_ACT_ADDHDRS;
  case MILTER_REPLY_CHGHEADER:
    return MILTER_ACT_CHGHDRS;
  case MILTER_REPLY_ADDRCPT:
    return MILTER_ACT_ADDRCPT;
  case MILTER_REPLY_ADDRCPT_PAR:
    return MILTER_ACT_ADDRCPT_PAR;
  case MILTER_REPLY_DELRCPT:
    return MILTER_ACT_DELRCPT;
  case MILTER_REPLY_CHGFROM:
    return MILTER_ACT_CHGFROM;
  case MILTER_REPLY_REPLBODY:
    return MILTER_ACT_CHGBODY;
  case MILTER_REPLY_QUARANTINE:
    return MILTER_ACT_QUARANTINE;
  }
  return 0;
}

static milter_action *new_action(milter_client_result *r) {
  milter_action *a = realloc(r->actions, (r->n_actions + 1) * sizeof *a);
  if (a == NULL)
    return NULL;
  r->actions = a;
  a = &r->actions[r->n_actions++];
  memset(a, 0, sizeof *a);
  return a;
}

/* Store one modification packet in r. */
static int add_action(milter_client *c, const milter_reply *rep,
                      milter_client_result *r) {
  if (rep->code == MILTER_REPLY_REPLBODY) {
    milter_action *b = NULL;
    for (size_t i = 0; i < r->n_actions; i++)
      if (r->actions[i].type == MILTER_ACTION_REPLBODY)
        b = &r->actions[i];
    if (b == NULL) {
      if ((b = new_action(r)) == NULL)
        return fail(c, MILTER_E_NOMEM, "out of memory");
      b->type = MILTER_ACTION_REPLBODY;
    }
    size_t n = rep->u.body.len;
    if (n > 0) {
      uint8_t *p = realloc(b->body, b->body_len + n);
      if (p == NULL)
        return fail(c, MILTER_E_NOMEM, "out of memory");
      memcpy(p + b->body_len, rep->u.body.data, n);
      b->body = p;
      b->body_len += n;
    }
    b->chunks++;
    return 0;
  }
  milter_action *a = new_action(r);
  if (a == NULL)
    return fail(c, MILTER_E_NOMEM, "out of memory");
  a->type = (milter_action_type)rep->code;
  const char *name = NULL, *value = NULL;
  switch (rep->code) {
  case MILTER_REPLY_ADDHEADER:
  case MILTER_REPLY_INSHEADER:
  case MILTER_REPLY_CHGHEADER:
    a->index = rep->u.header.index;
    name = rep->u.header.name;
    value = rep->u.header.value;
    break;
  case MILTER_REPLY_QUARANTINE:
    value = rep->u.text;
    break;
  default: /* + 2 - e */
    name = rep->u.rcpt.addr;
    value = rep->u.rcpt.args;
    break;
  }
  a->name = dup_str(name);
  a->value = dup_str(value);
  if ((name != NULL && a->name == NULL) || (value != NULL && a->value == NULL))
    return fail(c, MILTER_E_NOMEM, "out of memory");
  return 0;
}

/* Read replies to cmd until a final one.  eom: modifications allowed. */
static int read_reply(milter_client *c, uint8_t cmd, milter_client_result *r) {
  int eom = cmd == MILTER_CMD_EOB;
  uint64_t tmo = eom ? c->opts.eom_timeout_ms : c->opts.command_timeout_ms;
  uint64_t deadline = now_ms() + tmo;
  for (;;) {
    milter_packet pkt;
    int rc = read_packet(c, deadline, &pkt);
    if (rc < 0)
      return rc;
    milter_reply rep;
    const char *why = NULL;
    if (milter_parse_reply(&pkt, &rep, &why) < 0)
      return fail(c, MILTER_E_PROTO, "malformed %s (0x%02x) after %s: %s",
                  milter_reply_name(pkt.cmd), pkt.cmd, milter_cmd_name(cmd),
                  why ? why : "invalid");
    if (rep.code == MILTER_REPLY_PROGRESS) {
      r->progress++;
      deadline = now_ms() + tmo;
      continue;
    }
    if (is_final(rep.code) ||
        (rep.code == MILTER_REPLY_SKIP && cmd == MILTER_CMD_BODY &&
         (c->protocol & MILTER_P_SKIP))) {
      r->status = MILTER_CLIENT_REPLIED;
      r->reply = rep.code;
      if (rep.code == MILTER_REPLY_REPLYCODE) {
        if ((r->text = dup_str(rep.u.text)) == NULL)
          return fail(c, MILTER_E_NOMEM, "out of memory");
      }
      return 0;
    }
    uint32_t bit = action_bit(rep.code);
    if (bit == 0)
      return fail(c, MILTER_E_PROTO, "milter sent %s (0x%02x) in reply to %s",
                  milter_reply_name(rep.code), rep.code, milter_cmd_name(cmd));
    if (!eom)
      return fail(c, MILTER_E_PROTO,
                  "milter sent %s before end of message "
                  "(in reply to %s)",
                  milter_reply_name(rep.code), milter_cmd_name(cmd));
    if (!(c->actions & bit))
      return fail(c, MILTER_E_NOTSUP, "milter sent %s without negotiating it",
                  milter_reply_name(rep.code));
    if ((rc = add_action(c, &rep, r)) < 0)
      return rc;
    deadline = now_ms() + tmo;
  }
}

/* ------------------------------------------------------------------------ */
/* Negotiation                                                              */
/* ------------------------------------------------------------------------ */

static int ready(milter_client *c, int need_nego) {
  if (c->fd < 0)
    return fail(c, MILTER_E_STATE, "not connected");
  if (need_nego && !c->negotiated)
    return fail(c, MILTER_E_STATE, "not negotiated");
  c->errmsg[0] = '\0';
  return 0;
}

int milter_client_negotiate(milter_client *c, milter_client_nego *out) {
  if (c == NULL)
    return MILTER_E_INVAL;
  int rc = ready(c, 0);
  if (rc < 0)
    return rc;
  if (c->negotiated)
    return fail(c, MILTER_E_STATE, "already negotiated");
  free_symlists(c);
  if ((rc = milter_enc_optneg(&c->out, c->opts.version, c->opts.actions,
                              c->opts.protocol)) < 0)
    return fail(c, rc, "encode: %s", milter_strerror(rc));
  if ((rc = flush(c)) < 0)
    return rc;
  milter_packet pkt;
  if ((rc = read_packet(c, now_ms() + c->opts.command_timeout_ms, &pkt)) < 0)
    return rc;
  milter_reply rep;
  const char *why = NULL;
  if (pkt.cmd != MILTER_REPLY_OPTNEG)
    return fail(c, MILTER_E_NEGOTIATE,
                "milter answered option negotiation with %s (0x%02x)",
                milter_reply_name(pkt.cmd), pkt.cmd);
  if (milter_parse_reply(&pkt, &rep, &why) < 0)
    return fail(c, MILTER_E_PROTO, "malformed SMFIR_OPTNEG: %s",
                why ? why : "invalid");
  const milter_optneg *o = &rep.u.optneg;
  if (o->version < MILTER_PROTO_VERSION_MIN)
    return fail(c, MILTER_E_NEGOTIATE, "milter speaks protocol version %u",
                (unsigned)o->version);
  if (o->actions & ~c->opts.actions)
    return fail(c, MILTER_E_NEGOTIATE,
                "milter asks for actions 0x%x not offered (offered 0x%x)",
                (unsigned)(o->actions & ~c->opts.actions),
                (unsigned)c->opts.actions);
  uint32_t mds = MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  if (o->protocol & ~c->opts.protocol & ~mds)
    return fail(c, MILTER_E_NEGOTIATE,
                "milter asks for protocol steps 0x%x not offered (offered "
                "0x%x)",
                (unsigned)(o->protocol & ~c->opts.protocol & ~mds),
                (unsigned)c->opts.protocol);
  c->version = o->version < c->opts.version ? o->version : c->opts.version;
  c->actions = o->actions;
  c->protocol = o->protocol;
  uint32_t both = o->protocol & c->opts.protocol;
  c->data_size = (both & MILTER_P_MDS_1M)     ? MILTER_DATA_1M
                 : (both & MILTER_P_MDS_256K) ? MILTER_DATA_256K
                                              : MILTER_DATA_64K;
  for (int i = 0; i < MILTER_M_COUNT; i++)
    if (o->symlist[i] != NULL && o->symlist[i][0] != '\0' &&
        (c->symlist[i] = strdup(o->symlist[i])) == NULL)
      return fail(c, MILTER_E_NOMEM, "out of memory");
  c->negotiated = 1;
  if (out != NULL) {
    out->version = c->version;
    out->actions = c->actions;
    out->protocol = c->protocol;
    out->data_size = c->data_size;
    for (int i = 0; i < MILTER_M_COUNT; i++)
      out->symlist[i] = c->symlist[i];
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

/* NO* and NR_* bits of an event; min version. */
static void event_bits(uint8_t cmd, uint32_t *no, uint32_t *nr,
                       uint32_t *minv) {
  *no = *nr = 0;
  *minv = 2;
  switch (cmd) {
  case MILTER_CMD_CONNECT:
    *no = MILTER_P_NOCONNECT, *nr = MILTER_P_NR_CONN;
    break;
  case MILTER_CMD_HELO:
    *no = MILTER_P_NOHELO, *nr = MILTER_P_NR_HELO;
    break;
  case MILTER_CMD_MAIL:
    *no = MILTER_P_NOMAIL, *nr = MILTER_P_NR_MAIL;
    break;
  case MILTER_CMD_RCPT:
    *no = MILTER_P_NORCPT, *nr = MILTER_P_NR_RCPT;
    break;
  case MILTER_CMD_DATA:
    *no = MILTER_P_NODATA, *nr = MILTER_P_NR_DATA, *minv = 4;
    break;
  case MILTER_CMD_HEADER:
    *no = MILTER_P_NOHDRS, *nr = MILTER_P_NR_HDR;
    break;
  case MILTER_CMD_EOH:
    *no = MILTER_P_NOEOH, *nr = MILTER_P_NR_EOH;
    break;
  case MILTER_CMD_BODY:
    *no = MILTER_P_NOBODY, *nr = MILTER_P_NR_BODY;
    break;
  case MILTER_CMD_UNKNOWN:
    *no = MILTER_P_NOUNKNOWN, *nr = MILTER_P_NR_UNKN, *minv = 3;
    break;
  }
}

/* Common start of an event: checks, result reset.  Returns 1 to send, 0 for
 * NOT_SENT, or an error. */
static int begin_event(milter_client *c, uint8_t cmd, milter_client_result *r) {
  if (c == NULL || r == NULL)
    return MILTER_E_INVAL;
  milter_client_result_free(r);
  int rc = ready(c, 1);
  if (rc < 0)
    return rc;
  uint32_t no, nr, minv;
  event_bits(cmd, &no, &nr, &minv);
  if ((c->protocol & no) || c->version < minv) {
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
  uint32_t no, nr, minv;
  event_bits(cmd, &no, &nr, &minv);
  if (c->protocol & nr) {
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
    size_t n = len - off < c->data_size ? len - off : c->data_size;
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
