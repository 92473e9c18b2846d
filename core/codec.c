/* codec.c -- the sans-I/O milter wire codec: buffer, incremental decoder,
 * payload parsers and encoders (see milter_codec.h). */
#include <mailfilter/milter_codec.h>

#include "mf_alloc.h"
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* Buffer                                                                   */
/* ======================================================================== */

void milter_buf_init(milter_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void milter_buf_free(milter_buf *b) {
  free(b->data);
  milter_buf_init(b);
}

void milter_buf_consume(milter_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

static int buf_reserve(milter_buf *b, size_t extra) {
  if (b->len + extra < b->len)
    return MILTER_E_NOMEM;
  size_t need = b->len + extra;
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap * 2 > cap ? cap * 2 : need;
  uint8_t *p = xrealloc(b->data, cap);
  if (p == NULL)
    return MILTER_E_NOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int milter_buf_append(milter_buf *b, const void *p, size_t n) {
  if (n == 0)
    return 0;
  int rc = buf_reserve(b, n);
  if (rc < 0)
    return rc;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* ======================================================================== */
/* Decoder                                                                  */
/* ======================================================================== */

void milter_decoder_init(milter_decoder *d, uint32_t max_len) {
  memset(d, 0, sizeof *d);
  d->max_len = max_len ? max_len : MILTER_DATA_64K + 1;
}

void milter_decoder_set_max(milter_decoder *d, uint32_t max_len) {
  d->max_len = max_len ? max_len : MILTER_DATA_64K + 1;
}

void milter_decoder_free(milter_decoder *d) {
  free(d->part);
  d->part = NULL;
  d->part_have = d->part_cap = 0;
  d->hdr_have = 0;
}

int milter_decoder_busy(const milter_decoder *d) {
  return d->hdr_have > 0;
}

/* Release the buffer of a packet returned by the previous call. */
static void release_done(milter_decoder *d) {
  if (d->hdr_have == 0 && d->part != NULL) {
    free(d->part);
    d->part = NULL;
    d->part_have = d->part_cap = 0;
  }
}

int milter_decoder_feed(milter_decoder *d, const uint8_t *buf, size_t len,
                        size_t *consumed, milter_packet *pkt) {
  size_t off = 0;
  release_done(d);
  while (d->hdr_have < 4) {
    if (off == len) {
      *consumed = off;
      return 0;
    }
    d->hdr[d->hdr_have++] = buf[off++];
    if (d->hdr_have == 4) {
      d->need = get32(d->hdr);
      if (d->need == 0) {
        *consumed = off;
        return MILTER_E_PROTO;
      }
      if (d->need > d->max_len) {
        *consumed = off;
        return MILTER_E_TOOBIG;
      }
    }
  }
  if (d->streaming) {
    /* The next piece of a streamed packet. */
    size_t take = len - off < d->stream_left ? len - off : d->stream_left;
    if (take == 0) {
      *consumed = off;
      return 0;
    }
    pkt->cmd = d->stream_cmd;
    pkt->data = buf + off;
    pkt->len = (uint32_t)take;
    d->stream_left -= (uint32_t)take;
    pkt->frag = MILTER_FRAG_CONT | (d->stream_left ? MILTER_FRAG_MORE : 0);
    if (d->stream_left == 0) {
      d->streaming = 0;
      d->hdr_have = 0;
    }
    *consumed = off + take;
    return 1;
  }
  pkt->frag = 0;
  if (d->part == NULL && len - off >= d->need) {
    /* The whole packet is in the caller's slice: no copy. */
    pkt->cmd = buf[off];
    pkt->data = buf + off + 1;
    pkt->len = d->need - 1;
    off += d->need;
    d->hdr_have = 0;
    *consumed = off;
    return 1;
  }
  if (d->stream_cmd != 0 && d->part == NULL && off < len &&
      buf[off] == d->stream_cmd) {
    /* A streamed packet that does not fit this slice: its first piece now,
     * the rest as it comes (need > len - off >= 1, so more follows). */
    d->streaming = 1;
    d->stream_left = d->need - 1;
    off++;
    size_t take = len - off;
    pkt->cmd = d->stream_cmd;
    pkt->data = buf + off;
    pkt->len = (uint32_t)take;
    d->stream_left -= (uint32_t)take;
    pkt->frag = MILTER_FRAG_MORE;
    *consumed = off + take;
    return 1;
  }
  size_t take = len - off;
  if (take == 0) {
    *consumed = off;
    return 0;
  }
  if (take > d->need - d->part_have)
    take = d->need - d->part_have;
  if (d->part_have + take > d->part_cap) {
    /* Grow with what actually arrives, so a claimed length alone cannot
     * make us allocate it. */
    size_t cap = d->part_cap ? (size_t)d->part_cap * 2 : 4096;
    if (cap < d->part_have + take)
      cap = d->part_have + take;
    if (cap > d->need)
      cap = d->need;
    uint8_t *p = xrealloc(d->part, cap);
    if (p == NULL) {
      *consumed = off;
      return MILTER_E_NOMEM;
    }
    d->part = p;
    d->part_cap = (uint32_t)cap;
  }
  memcpy(d->part + d->part_have, buf + off, take);
  d->part_have += (uint32_t)take;
  off += take;
  *consumed = off;
  if (d->part_have < d->need)
    return 0;
  pkt->cmd = d->part[0];
  pkt->data = d->part + 1;
  pkt->len = d->need - 1;
  d->hdr_have = 0; /* part is freed at the next call */
  return 1;
}

/* ======================================================================== */
/* String lists                                                             */
/* ======================================================================== */

const char *milter_strlist_next(const milter_strlist *l, const char **cursor) {
  const char *s;
  if (*cursor == NULL)
    s = l->p;
  else
    s = *cursor + strlen(*cursor) + 1;
  if (l->p == NULL || s >= l->p + l->len)
    return NULL;
  *cursor = s;
  return s;
}

/* A run of NUL-terminated strings filling p[0..len): len > 0 and the last
 * byte NUL.  Returns the number of strings or -1. */
static int strlist_of(const uint8_t *p, size_t len, milter_strlist *out) {
  if (len == 0 || p[len - 1] != '\0')
    return -1;
  /* One memchr per string (the last byte is a NUL: each finds one). */
  unsigned n = 0;
  for (const uint8_t *q = p, *end = p + len; q < end; n++)
    q = (const uint8_t *)memchr(q, '\0', (size_t)(end - q)) + 1;
  out->p = (const char *)p;
  out->len = len;
  out->count = n;
  return (int)n;
}

static int fail(const char **why, const char *msg) {
  if (why != NULL)
    *why = msg;
  return MILTER_E_PROTO;
}

/* Exactly one string filling the payload. */
static int one_string(const milter_packet *pkt, const char **s,
                      const char **why) {
  milter_strlist l;
  if (strlist_of(pkt->data, pkt->len, &l) < 0)
    return fail(why, "missing NUL terminator");
  if (l.count != 1)
    return fail(why, "expected one string");
  *s = l.p;
  return 0;
}

/* Commands and replies that carry no payload. */
static int is_simple_cmd(uint8_t c) {
  return c != 0 && strchr("AENQKT", c) != NULL;
}

static int is_simple_reply(uint8_t c) {
  return c != 0 && strchr("acrtdsp4f", c) != NULL;
}

/* ======================================================================== */
/* Commands                                                                 */
/* ======================================================================== */

static int parse_connect(const milter_packet *pkt, milter_connect_info *ci,
                         const char **why) {
  const uint8_t *p = pkt->data;
  size_t len = pkt->len;
  const uint8_t *nul = memchr(p, '\0', len);
  if (nul == NULL)
    return fail(why, "missing NUL after hostname");
  ci->hostname = (const char *)p;
  size_t off = (size_t)(nul - p) + 1;
  if (off >= len)
    return fail(why, "missing address family");
  ci->family = (char)p[off++];
  ci->port = 0;
  ci->address = "";
  switch (ci->family) {
  case MILTER_FAMILY_UNKNOWN:
    /* Sendmail sends nothing after 'U'; tolerate a port and address. */
    if (off == len)
      return 0;
    break;
  case MILTER_FAMILY_UNIX:
  case MILTER_FAMILY_INET:
  case MILTER_FAMILY_INET6:
    break;
  default:
    return fail(why, "bad address family");
  }
  if (len - off < 2)
    return fail(why, "missing port");
  ci->port = (uint16_t)((p[off] << 8) | p[off + 1]);
  off += 2;
  if (off >= len || p[len - 1] != '\0')
    return fail(why, "missing NUL after address");
  if (memchr(p + off, '\0', len - off) != p + len - 1)
    return fail(why, "trailing data after address");
  ci->address = (const char *)p + off;
  return 0;
}

int milter_parse_cmd(const milter_packet *pkt, milter_cmd *out,
                     const char **why) {
  memset(out, 0, sizeof *out);
  out->code = pkt->cmd;
  milter_strlist l;
  switch (pkt->cmd) {
  case MILTER_CMD_OPTNEG:
    /* st_optionneg() needs the three 32-bit words; more is tolerated. */
    if (pkt->len < 12)
      return fail(why, "option negotiation shorter than 12 bytes");
    out->u.optneg.version = get32(pkt->data);
    out->u.optneg.actions = get32(pkt->data + 4);
    out->u.optneg.protocol = get32(pkt->data + 8);
    return 0;
  case MILTER_CMD_MACRO:
    if (pkt->len < 1)
      return fail(why, "macro packet without command");
    out->u.macro.for_cmd = pkt->data[0];
    if (pkt->len == 1)
      return 0; /* no macros: Postfix may send that */
    if (strlist_of(pkt->data + 1, pkt->len - 1, &out->u.macro.pairs) < 0)
      return fail(why, "missing NUL terminator in macros");
    if (out->u.macro.pairs.count % 2 != 0)
      return fail(why, "macro name without value");
    return 0;
  case MILTER_CMD_CONNECT:
    return parse_connect(pkt, &out->u.connect, why);
  case MILTER_CMD_HELO:
    return one_string(pkt, &out->u.helo, why);
  case MILTER_CMD_MAIL:
  case MILTER_CMD_RCPT:
    if (strlist_of(pkt->data, pkt->len, &out->u.args) < 0)
      return fail(why, "missing NUL terminator");
    return 0;
  case MILTER_CMD_HEADER:
    if (strlist_of(pkt->data, pkt->len, &l) < 0)
      return fail(why, "missing NUL terminator");
    if (l.count != 2)
      return fail(why, "header needs exactly a name and a value");
    out->u.header.name = l.p;
    out->u.header.value = l.p + strlen(l.p) + 1;
    return 0;
  case MILTER_CMD_BODY:
    out->u.body.data = pkt->data;
    out->u.body.len = pkt->len;
    return 0;
  case MILTER_CMD_UNKNOWN:
    return one_string(pkt, &out->u.unknown, why);
  default:
    /* libmilter ignores a payload of A E N Q K T (EOB may even carry a
     * last body chunk in old sendmails). */
    if (is_simple_cmd(pkt->cmd))
      return 0;
    return fail(why, "unknown command");
  }
}

/* ======================================================================== */
/* Replies                                                                  */
/* ======================================================================== */

static int parse_hdr_reply(const milter_packet *pkt, int indexed,
                           milter_reply *out, const char **why) {
  const uint8_t *p = pkt->data;
  size_t len = pkt->len;
  if (indexed) {
    if (len < 4)
      return fail(why, "header action without index");
    out->u.header.index = get32(p);
    p += 4;
    len -= 4;
  }
  milter_strlist l;
  if (strlist_of(p, len, &l) < 0)
    return fail(why, "missing NUL terminator");
  if (l.count != 2)
    return fail(why, "header action needs a name and a value");
  out->u.header.name = l.p;
  out->u.header.value = l.p + strlen(l.p) + 1;
  return 0;
}

static int parse_rcpt_reply(const milter_packet *pkt, unsigned max_strings,
                            milter_reply *out, const char **why) {
  milter_strlist l;
  if (strlist_of(pkt->data, pkt->len, &l) < 0)
    return fail(why, "missing NUL terminator");
  if (l.count < 1 || l.count > max_strings)
    return fail(why, "wrong number of strings");
  out->u.rcpt.addr = l.p;
  out->u.rcpt.args = l.count == 2 ? l.p + strlen(l.p) + 1 : NULL;
  return 0;
}

int milter_parse_reply(const milter_packet *pkt, milter_reply *out,
                       const char **why) {
  memset(out, 0, sizeof *out);
  out->code = pkt->cmd;
  switch (pkt->cmd) {
  case MILTER_REPLY_OPTNEG: {
    if (pkt->len < 12)
      return fail(why, "option negotiation shorter than 12 bytes");
    out->u.optneg.version = get32(pkt->data);
    out->u.optneg.actions = get32(pkt->data + 4);
    out->u.optneg.protocol = get32(pkt->data + 8);
    size_t off = 12;
    while (off < pkt->len) {
      if (pkt->len - off < 5)
        return fail(why, "truncated macro list");
      uint32_t stage = get32(pkt->data + off);
      off += 4;
      const uint8_t *nul = memchr(pkt->data + off, '\0', pkt->len - off);
      if (nul == NULL)
        return fail(why, "missing NUL terminator in macro list");
      if (stage >= MILTER_M_COUNT)
        return fail(why, "bad macro stage");
      out->u.optneg.symlist[stage] = (const char *)pkt->data + off;
      off = (size_t)(nul - pkt->data) + 1;
    }
    return 0;
  }
  case MILTER_REPLY_REPLYCODE:
  case MILTER_REPLY_QUARANTINE:
    return one_string(pkt, &out->u.text, why);
  case MILTER_REPLY_ADDHEADER:
    return parse_hdr_reply(pkt, 0, out, why);
  case MILTER_REPLY_CHGHEADER:
  case MILTER_REPLY_INSHEADER:
    return parse_hdr_reply(pkt, 1, out, why);
  case MILTER_REPLY_ADDRCPT:
  case MILTER_REPLY_DELRCPT:
    return parse_rcpt_reply(pkt, 1, out, why);
  case MILTER_REPLY_ADDRCPT_PAR:
  case MILTER_REPLY_CHGFROM:
    return parse_rcpt_reply(pkt, 2, out, why);
  case MILTER_REPLY_REPLBODY:
    out->u.body.data = pkt->data;
    out->u.body.len = pkt->len;
    return 0;
  default:
    if (is_simple_reply(pkt->cmd))
      return 0;
    return fail(why, "unknown reply");
  }
}

/* ======================================================================== */
/* Encoders                                                                 */
/* ======================================================================== */

/* Start a packet: reserve room, write the length later with end_packet. */
static int begin(milter_buf *b, uint8_t cmd, size_t payload, size_t *start) {
  if (payload > UINT32_MAX - 1)
    return MILTER_E_INVAL;
  int rc = buf_reserve(b, 5 + payload);
  if (rc < 0)
    return rc;
  *start = b->len;
  put32(b->data + b->len, (uint32_t)(payload + 1));
  b->data[b->len + 4] = cmd;
  b->len += 5;
  return 0;
}

static void add(milter_buf *b, const void *p, size_t n) {
  if (n > 0)
    memcpy(b->data + b->len, p, n); /* room reserved by begin() */
  b->len += n;
}

static void add_str(milter_buf *b, const char *s) {
  add(b, s, strlen(s) + 1);
}

static void add32(milter_buf *b, uint32_t v) {
  put32(b->data + b->len, v);
  b->len += 4;
}

int milter_enc_packet(milter_buf *b, uint8_t cmd, const void *payload,
                      size_t len) {
  size_t start;
  if (payload == NULL && len > 0)
    return MILTER_E_INVAL;
  int rc = begin(b, cmd, len, &start);
  if (rc < 0)
    return rc;
  add(b, payload, len);
  return 0;
}

int milter_enc_strings(milter_buf *b, uint8_t cmd, size_t n,
                       const char *const *strs) {
  size_t total = 0, start;
  for (size_t i = 0; i < n; i++) {
    if (strs[i] == NULL)
      return MILTER_E_INVAL;
    total += strlen(strs[i]) + 1;
  }
  int rc = begin(b, cmd, total, &start);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    add_str(b, strs[i]);
  return 0;
}

int milter_enc_optneg(milter_buf *b, uint32_t version, uint32_t actions,
                      uint32_t protocol) {
  size_t start;
  int rc = begin(b, MILTER_CMD_OPTNEG, 12, &start);
  if (rc < 0)
    return rc;
  add32(b, version);
  add32(b, actions);
  add32(b, protocol);
  return 0;
}

int milter_enc_macro(milter_buf *b, uint8_t for_cmd, size_t n_pairs,
                     const char *const *names_values) {
  size_t total = 1, start;
  for (size_t i = 0; i < 2 * n_pairs; i++) {
    if (names_values[i] == NULL)
      return MILTER_E_INVAL;
    total += strlen(names_values[i]) + 1;
  }
  int rc = begin(b, MILTER_CMD_MACRO, total, &start);
  if (rc < 0)
    return rc;
  add(b, &for_cmd, 1);
  for (size_t i = 0; i < 2 * n_pairs; i++)
    add_str(b, names_values[i]);
  return 0;
}

int milter_enc_connect(milter_buf *b, const char *hostname, char family,
                       uint16_t port, const char *address) {
  if (hostname == NULL)
    return MILTER_E_INVAL;
  int has_addr = family != MILTER_FAMILY_UNKNOWN;
  if (family != MILTER_FAMILY_UNKNOWN && family != MILTER_FAMILY_UNIX &&
      family != MILTER_FAMILY_INET && family != MILTER_FAMILY_INET6)
    return MILTER_E_INVAL;
  if (has_addr && address == NULL)
    return MILTER_E_INVAL;
  size_t total = strlen(hostname) + 2, start;
  if (has_addr)
    total += 2 + strlen(address) + 1;
  int rc = begin(b, MILTER_CMD_CONNECT, total, &start);
  if (rc < 0)
    return rc;
  add_str(b, hostname);
  add(b, &family, 1);
  if (has_addr) {
    uint8_t p[2] = {(uint8_t)(port >> 8), (uint8_t)port};
    add(b, p, 2);
    add_str(b, address);
  }
  return 0;
}

int milter_enc_helo(milter_buf *b, const char *helo) {
  return milter_enc_strings(b, MILTER_CMD_HELO, 1, &helo);
}

int milter_enc_envaddr(milter_buf *b, uint8_t cmd, const char *addr,
                       size_t argc, const char *const *argv) {
  if (addr == NULL || (cmd != MILTER_CMD_MAIL && cmd != MILTER_CMD_RCPT) ||
      (argc > 0 && argv == NULL))
    return MILTER_E_INVAL;
  size_t total = strlen(addr) + 1, start;
  for (size_t i = 0; i < argc; i++) {
    if (argv[i] == NULL)
      return MILTER_E_INVAL;
    total += strlen(argv[i]) + 1;
  }
  int rc = begin(b, cmd, total, &start);
  if (rc < 0)
    return rc;
  add_str(b, addr);
  for (size_t i = 0; i < argc; i++)
    add_str(b, argv[i]);
  return 0;
}

int milter_enc_header(milter_buf *b, const char *name, const char *value) {
  const char *s[2] = {name, value};
  return milter_enc_strings(b, MILTER_CMD_HEADER, 2, s);
}

int milter_enc_body(milter_buf *b, const void *data, size_t len) {
  return milter_enc_packet(b, MILTER_CMD_BODY, data, len);
}

int milter_enc_unknown(milter_buf *b, const char *line) {
  return milter_enc_strings(b, MILTER_CMD_UNKNOWN, 1, &line);
}

int milter_enc_simple(milter_buf *b, uint8_t cmd) {
  if (!is_simple_cmd(cmd))
    return MILTER_E_INVAL;
  return milter_enc_packet(b, cmd, NULL, 0);
}

int milter_enc_optneg_reply(milter_buf *b, uint32_t version, uint32_t actions,
                            uint32_t protocol,
                            const char *const symlist[MILTER_M_COUNT]) {
  size_t total = 12, start;
  for (int i = 0; symlist != NULL && i < MILTER_M_COUNT; i++)
    if (symlist[i] != NULL && symlist[i][0] != '\0')
      total += 4 + strlen(symlist[i]) + 1;
  int rc = begin(b, MILTER_REPLY_OPTNEG, total, &start);
  if (rc < 0)
    return rc;
  add32(b, version);
  add32(b, actions);
  add32(b, protocol);
  for (int i = 0; symlist != NULL && i < MILTER_M_COUNT; i++)
    if (symlist[i] != NULL && symlist[i][0] != '\0') {
      add32(b, (uint32_t)i);
      add_str(b, symlist[i]);
    }
  return 0;
}

int milter_enc_reply_simple(milter_buf *b, uint8_t code) {
  if (!is_simple_reply(code))
    return MILTER_E_INVAL;
  return milter_enc_packet(b, code, NULL, 0);
}

#define REPLY_MAX_LINES 32 /* libmilter MAXREPLIES */
#define REPLY_MAX_LINE 980 /* libmilter MAXREPLYLEN */

static int digit(char c) {
  return c >= '0' && c <= '9';
}

/* "x.y.z": class digit, then 1-3 digits, then 1-3 digits (RFC 3463). */
static int xcode_ok(const char *x, char cls) {
  if (x[0] != cls || x[1] != '.')
    return 0;
  const char *p = x + 2;
  for (int part = 0; part < 2; part++) {
    int n = 0;
    while (digit(*p) && n < 4) {
      p++;
      n++;
    }
    if (n < 1 || n > 3)
      return 0;
    if (part == 0 && *p++ != '.')
      return 0;
  }
  return *p == '\0';
}

int milter_enc_replycode(milter_buf *b, const char *rcode, const char *xcode,
                         const char *text) {
  if (rcode == NULL || (rcode[0] != '4' && rcode[0] != '5') ||
      !digit(rcode[1]) || !digit(rcode[2]) || rcode[3] != '\0')
    return MILTER_E_INVAL;
  char defx[6] = {rcode[0], '.', '0', '.', '0', '\0'};
  if (xcode == NULL)
    xcode = defx; /* as smfi_setreply: "4.0.0" / "5.0.0" */
  else if (!xcode_ok(xcode, rcode[0]))
    return MILTER_E_INVAL;
  if (text == NULL)
    text = "";

  /* Split into lines on "\n" or "\r\n"; check limits and characters. */
  size_t lines = 0, total = 0;
  const char *p = text;
  for (;;) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (e && n > 0 && p[n - 1] == '\r')
      n--;
    size_t esc = 0;
    for (size_t i = 0; i < n; i++) {
      unsigned char c = (unsigned char)p[i];
      if ((c < 0x20 && c != '\t') || c == 0x7f)
        return MILTER_E_INVAL;
      if (c == '%')
        esc++;
    }
    if (n + esc > REPLY_MAX_LINE)
      return MILTER_E_INVAL;
    if (++lines > REPLY_MAX_LINES)
      return MILTER_E_INVAL;
    total += 3 + 1 + strlen(xcode) + 1 + n + esc + 2;
    if (e == NULL)
      break;
    p = e + 1;
  }
  size_t start;
  int rc = begin(b, MILTER_REPLY_REPLYCODE, total + 1, &start);
  if (rc < 0)
    return rc;
  p = text;
  size_t line = 0;
  for (;;) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (e && n > 0 && p[n - 1] == '\r')
      n--;
    int last = ++line == lines;
    add(b, rcode, 3);
    add(b, last ? " " : "-", 1);
    add(b, xcode, strlen(xcode));
    if (n > 0)
      add(b, " ", 1);
    for (size_t i = 0; i < n; i++) {
      add(b, &p[i], 1);
      if (p[i] == '%')
        add(b, "%", 1);
    }
    if (last)
      break;
    add(b, "\r\n", 2);
    p = e + 1;
  }
  add(b, "", 1);
  /* Fix the length: we reserved an upper bound. */
  put32(b->data + start, (uint32_t)(b->len - start - 4));
  return 0;
}

int milter_enc_quarantine(milter_buf *b, const char *reason) {
  if (reason == NULL || strpbrk(reason, "\r\n") != NULL)
    return MILTER_E_INVAL; /* sendmail wants one line */
  return milter_enc_strings(b, MILTER_REPLY_QUARANTINE, 1, &reason);
}

int milter_enc_addheader(milter_buf *b, const char *name, const char *value) {
  if (name == NULL || value == NULL || name[0] == '\0')
    return MILTER_E_INVAL;
  const char *s[2] = {name, value};
  return milter_enc_strings(b, MILTER_REPLY_ADDHEADER, 2, s);
}

static int enc_indexed_header(milter_buf *b, uint8_t code, uint32_t index,
                              const char *name, const char *value) {
  if (name == NULL || value == NULL || name[0] == '\0')
    return MILTER_E_INVAL;
  size_t start;
  int rc = begin(b, code, 4 + strlen(name) + 1 + strlen(value) + 1, &start);
  if (rc < 0)
    return rc;
  add32(b, index);
  add_str(b, name);
  add_str(b, value);
  return 0;
}

int milter_enc_insheader(milter_buf *b, uint32_t index, const char *name,
                         const char *value) {
  return enc_indexed_header(b, MILTER_REPLY_INSHEADER, index, name, value);
}

int milter_enc_chgheader(milter_buf *b, uint32_t index, const char *name,
                         const char *value) {
  return enc_indexed_header(b, MILTER_REPLY_CHGHEADER, index, name,
                            value ? value : "");
}

int milter_enc_addrcpt(milter_buf *b, const char *rcpt, const char *args) {
  if (rcpt == NULL)
    return MILTER_E_INVAL;
  if (args == NULL)
    return milter_enc_strings(b, MILTER_REPLY_ADDRCPT, 1, &rcpt);
  const char *s[2] = {rcpt, args};
  return milter_enc_strings(b, MILTER_REPLY_ADDRCPT_PAR, 2, s);
}

int milter_enc_delrcpt(milter_buf *b, const char *rcpt) {
  if (rcpt == NULL)
    return MILTER_E_INVAL;
  return milter_enc_strings(b, MILTER_REPLY_DELRCPT, 1, &rcpt);
}

int milter_enc_chgfrom(milter_buf *b, const char *from, const char *args) {
  if (from == NULL)
    return MILTER_E_INVAL;
  const char *s[2] = {from, args};
  return milter_enc_strings(b, MILTER_REPLY_CHGFROM, args ? 2 : 1, s);
}

int milter_enc_replbody(milter_buf *b, const void *data, size_t len,
                        size_t chunk_max) {
  if ((data == NULL && len > 0) || chunk_max == 0)
    return MILTER_E_INVAL;
  if (len == 0)
    return milter_enc_packet(b, MILTER_REPLY_REPLBODY, NULL, 0);
  const uint8_t *p = data;
  size_t old = b->len;
  while (len > 0) {
    size_t n = len < chunk_max ? len : chunk_max;
    int rc = milter_enc_packet(b, MILTER_REPLY_REPLBODY, p, n);
    if (rc < 0) {
      b->len = old; /* all or nothing */
      return rc;
    }
    p += n;
    len -= n;
  }
  return 0;
}
