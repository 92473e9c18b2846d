/*
 * lm_filter.c -- the libmilter filters the benchmark compares against.
 *
 * One source, built twice:
 *   lm_plain  a transaction-level filter written the way most libmilter
 *             filters are: it copies the sender, the recipients and every
 *             header into per-connection data, keeps the body in memory up
 *             to 200 KiB and in an unlinked temp file beyond, adds
 *             "X-Rcpt-Count: N" at end of message and answers every event.
 *   lm_tuned  (-DLM_TUNED=1) the same filter as an expert writes it:
 *             xxfi_negotiate asks for SMFIP_NR_{MAIL,RCPT,HDR,BODY} and
 *             switches off the events it does not use (connect, helo,
 *             unknown, data, eoh) where the MTA offers that; the mail,
 *             rcpt, header and body callbacks then return SMFIS_NOREPLY.
 *             It still copies exactly what lm_plain copies.  The bar to
 *             beat.
 *
 * Usage: lm_plain SOCKETSPEC   (unix:/path, inet:PORT@HOST, ...)
 * Runs smfi_main() until SIGTERM / SIGINT (libmilter's own signal thread
 * handles them).  Prints nothing per message.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#ifndef LM_TUNED
#define LM_TUNED 0
#endif

#define BODY_MEM_MAX (200u * 1024u)

typedef struct hdr {
  char *name;
  char *value;
} hdr;

typedef struct conn {
  /* NR bits negotiated on this connection (lm_tuned only; 0 for plain).
   * After a QUIT_NC (Sendmail's connection reuse; Postfix never sends it)
   * libmilter keeps the negotiated bits but close has freed this struct:
   * the callbacks then return CONTINUE, which libmilter logs and turns
   * into NOREPLY itself. */
  unsigned long nr;
  int in_msg;
  char *sender;
  char **rcpts;
  size_t nrcpt, caprcpt;
  hdr *hdrs;
  size_t nhdr, caphdr;
  /* Body: memory up to BODY_MEM_MAX, then an unlinked temp file. */
  unsigned char *body;
  size_t bodylen, bodycap;
  size_t bodysize; /* total bytes received */
  int bodyfd;
} conn;

static conn *conn_get(SMFICTX *ctx) {
  conn *c = smfi_getpriv(ctx);
  if (c == NULL) {
    c = calloc(1, sizeof(*c));
    if (c == NULL)
      return NULL;
    c->bodyfd = -1;
    if (smfi_setpriv(ctx, c) != MI_SUCCESS) {
      free(c);
      return NULL;
    }
  }
  return c;
}

static void msg_reset(conn *c) {
  free(c->sender);
  c->sender = NULL;
  for (size_t i = 0; i < c->nrcpt; i++)
    free(c->rcpts[i]);
  free(c->rcpts);
  c->rcpts = NULL;
  c->nrcpt = c->caprcpt = 0;
  for (size_t i = 0; i < c->nhdr; i++) {
    free(c->hdrs[i].name);
    free(c->hdrs[i].value);
  }
  free(c->hdrs);
  c->hdrs = NULL;
  c->nhdr = c->caphdr = 0;
  free(c->body);
  c->body = NULL;
  c->bodylen = c->bodycap = c->bodysize = 0;
  if (c->bodyfd >= 0)
    close(c->bodyfd);
  c->bodyfd = -1;
  c->in_msg = 0;
}

/* The reply to an event whose NR bit may have been negotiated. */
static sfsistat ok(const conn *c, unsigned long nrbit) {
  return (c->nr & nrbit) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static int write_all(int fd, const unsigned char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int body_add(conn *c, const unsigned char *p, size_t len) {
  if (c->bodyfd < 0 && c->bodysize + len > BODY_MEM_MAX) {
    char path[] = "/tmp/lm_filter-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
      return -1;
    unlink(path);
    if (c->bodylen > 0 && write_all(fd, c->body, c->bodylen) != 0) {
      close(fd);
      return -1;
    }
    free(c->body);
    c->body = NULL;
    c->bodylen = c->bodycap = 0;
    c->bodyfd = fd;
  }
  if (c->bodyfd >= 0) {
    if (write_all(c->bodyfd, p, len) != 0)
      return -1;
  } else if (len > 0) {
    if (c->bodylen + len > c->bodycap) {
      size_t cap = c->bodycap ? c->bodycap : 4096;
      while (cap < c->bodylen + len)
        cap *= 2;
      unsigned char *m = realloc(c->body, cap);
      if (m == NULL)
        return -1;
      c->body = m;
      c->bodycap = cap;
    }
    memcpy(c->body + c->bodylen, p, len);
    c->bodylen += len;
  }
  c->bodysize += len;
  return 0;
}

#if LM_TUNED
static sfsistat lm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                             unsigned long f2, unsigned long f3,
                             unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3) {
  (void)f2;
  (void)f3;
  conn *c = conn_get(ctx);
  if (c == NULL)
    return SMFIS_TEMPFAIL;
  const unsigned long nr =
      SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_HDR | SMFIP_NR_BODY;
  const unsigned long no = SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOUNKNOWN |
                           SMFIP_NODATA | SMFIP_NOEOH;
  c->nr = f1 & nr;
  *pf0 = f0 & SMFIF_ADDHDRS;
  *pf1 = f1 & (nr | no);
  *pf2 = 0;
  *pf3 = 0;
  return SMFIS_CONTINUE;
}
#else
static sfsistat lm_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa) {
  (void)host;
  (void)sa;
  return conn_get(ctx) ? SMFIS_CONTINUE : SMFIS_TEMPFAIL;
}

static sfsistat lm_helo(SMFICTX *ctx, char *helo) {
  (void)ctx;
  (void)helo;
  return SMFIS_CONTINUE;
}

static sfsistat lm_unknown(SMFICTX *ctx, const char *cmd) {
  (void)ctx;
  (void)cmd;
  return SMFIS_CONTINUE;
}

static sfsistat lm_data(SMFICTX *ctx) {
  (void)ctx;
  return SMFIS_CONTINUE;
}

static sfsistat lm_eoh(SMFICTX *ctx) {
  (void)ctx;
  return SMFIS_CONTINUE;
}
#endif

/* A callback that cannot go on.  Where the NR bit of its event was
 * negotiated the MTA reads no reply, so the failure is remembered by
 * dropping the message state; eom then answers TEMPFAIL. */
static sfsistat fail(conn *c, unsigned long nrbit) {
  if (c == NULL)
    return SMFIS_TEMPFAIL;
  msg_reset(c);
  return (c->nr & nrbit) ? SMFIS_NOREPLY : SMFIS_TEMPFAIL;
}

static sfsistat lm_envfrom(SMFICTX *ctx, char **argv) {
  conn *c = conn_get(ctx);
  if (c == NULL)
    return SMFIS_TEMPFAIL;
  msg_reset(c); /* Postfix sends MAIL after an early reply without ABORT */
  c->sender = strdup(argv[0] ? argv[0] : "");
  if (c->sender == NULL)
    return fail(c, SMFIP_NR_MAIL);
  c->in_msg = 1;
  return ok(c, SMFIP_NR_MAIL);
}

static sfsistat lm_envrcpt(SMFICTX *ctx, char **argv) {
  conn *c = conn_get(ctx);
  if (c == NULL || !c->in_msg)
    return fail(c, SMFIP_NR_RCPT);
  if (c->nrcpt == c->caprcpt) {
    size_t cap = c->caprcpt ? 2 * c->caprcpt : 8;
    char **r = realloc(c->rcpts, cap * sizeof(*r));
    if (r == NULL)
      return fail(c, SMFIP_NR_RCPT);
    c->rcpts = r;
    c->caprcpt = cap;
  }
  char *s = strdup(argv[0] ? argv[0] : "");
  if (s == NULL)
    return fail(c, SMFIP_NR_RCPT);
  c->rcpts[c->nrcpt++] = s;
  return ok(c, SMFIP_NR_RCPT);
}

static sfsistat lm_header(SMFICTX *ctx, char *name, char *value) {
  conn *c = conn_get(ctx);
  if (c == NULL || !c->in_msg)
    return fail(c, SMFIP_NR_HDR);
  if (c->nhdr == c->caphdr) {
    size_t cap = c->caphdr ? 2 * c->caphdr : 16;
    hdr *h = realloc(c->hdrs, cap * sizeof(*h));
    if (h == NULL)
      return fail(c, SMFIP_NR_HDR);
    c->hdrs = h;
    c->caphdr = cap;
  }
  hdr h = {strdup(name), strdup(value)};
  if (h.name == NULL || h.value == NULL) {
    free(h.name);
    free(h.value);
    return fail(c, SMFIP_NR_HDR);
  }
  c->hdrs[c->nhdr++] = h;
  return ok(c, SMFIP_NR_HDR);
}

static sfsistat lm_body(SMFICTX *ctx, unsigned char *p, size_t len) {
  conn *c = conn_get(ctx);
  if (c == NULL || !c->in_msg || body_add(c, p, len) != 0)
    return fail(c, SMFIP_NR_BODY);
  return ok(c, SMFIP_NR_BODY);
}

static sfsistat lm_eom(SMFICTX *ctx) {
  conn *c = smfi_getpriv(ctx);
  if (c == NULL || !c->in_msg) {
    if (c != NULL)
      msg_reset(c);
    return SMFIS_TEMPFAIL;
  }
  char n[32];
  snprintf(n, sizeof(n), "%zu", c->nrcpt);
  sfsistat r = smfi_addheader(ctx, "X-Rcpt-Count", n) == MI_SUCCESS
                   ? SMFIS_CONTINUE
                   : SMFIS_TEMPFAIL;
  msg_reset(c);
  return r;
}

static sfsistat lm_abort(SMFICTX *ctx) {
  conn *c = smfi_getpriv(ctx);
  if (c != NULL)
    msg_reset(c);
  return SMFIS_CONTINUE;
}

static sfsistat lm_close(SMFICTX *ctx) {
  conn *c = smfi_getpriv(ctx);
  if (c != NULL) {
    msg_reset(c);
    free(c);
    smfi_setpriv(ctx, NULL);
  }
  return SMFIS_CONTINUE;
}

static struct smfiDesc lm_desc = {
#if LM_TUNED
    .xxfi_name = "lm_tuned",
#else
    .xxfi_name = "lm_plain",
#endif
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_ADDHDRS,
#if LM_TUNED
    .xxfi_negotiate = lm_negotiate,
#else
    .xxfi_connect = lm_connect,
    .xxfi_helo = lm_helo,
    .xxfi_unknown = lm_unknown,
    .xxfi_data = lm_data,
    .xxfi_eoh = lm_eoh,
#endif
    .xxfi_envfrom = lm_envfrom,
    .xxfi_envrcpt = lm_envrcpt,
    .xxfi_header = lm_header,
    .xxfi_body = lm_body,
    .xxfi_eom = lm_eom,
    .xxfi_abort = lm_abort,
    .xxfi_close = lm_close,
};

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SOCKETSPEC   (e.g. inet:10026@127.0.0.1)\n",
            argv[0]);
    return 2;
  }
  if (strncmp(argv[1], "unix:", 5) == 0 || strncmp(argv[1], "local:", 6) == 0)
    (void)unlink(strchr(argv[1], ':') + 1); /* stale socket of a past run */
  if (smfi_setconn(argv[1]) != MI_SUCCESS ||
      smfi_setbacklog(4096) != MI_SUCCESS ||
      smfi_register(lm_desc) != MI_SUCCESS) {
    fprintf(stderr, "%s: cannot set up %s\n", lm_desc.xxfi_name, argv[1]);
    return 1;
  }
  return smfi_main() == MI_SUCCESS ? 0 : 1;
}
