/*
 * milter_codec.h -- the sans-I/O wire codec of the milter protocol.
 *
 * Framing: every packet is a 4-byte big-endian length L, then L bytes: one
 * command/reply byte and L-1 payload bytes.  L == 0 is invalid.
 *
 * Nothing here does I/O or knows about sockets.  The decoder is fed byte
 * slices of any size (one byte at a time works) and yields packets; the
 * encoders append complete packets to a growable buffer; the parsers validate
 * one payload and give pointers into it.
 *
 * Thread rules: a milter_decoder / milter_buf is used by one thread at a time;
 * the functions keep no global state and may run on any thread.
 */
#ifndef MAILFILTER_MILTER_CODEC_H
#define MAILFILTER_MILTER_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <mailfilter/export.h>
#include <mailfilter/milter_proto.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* Output buffer                                                            */
/* ======================================================================== */

/* A growable byte buffer.  Zero-initialise it (or milter_buf_init) before use;
 * release with milter_buf_free.  data is NULL while cap is 0. */
typedef struct milter_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} milter_buf;

MF_API void milter_buf_init(milter_buf *b);
MF_API void milter_buf_free(milter_buf *b);
/* Drop the first n bytes (n <= len), keeping the capacity. */
MF_API void milter_buf_consume(milter_buf *b, size_t n);
/* Append raw bytes. Returns 0 or MILTER_E_NOMEM (buffer unchanged then). */
MF_API int milter_buf_append(milter_buf *b, const void *p, size_t n);

/* ======================================================================== */
/* Decoder                                                                  */
/* ======================================================================== */

/* One decoded packet.  data points at the payload (after the command byte);
 * it stays valid until the next call on the same decoder (or on the same
 * input slice, whichever comes first).  The payload is NOT NUL-terminated by
 * the decoder; use the parsers below. */
typedef struct milter_packet {
  uint8_t cmd;
  const uint8_t *data;
  uint32_t len;
  /* 0: a whole packet.  Otherwise a piece of a packet whose command is the
   * decoder's stream_cmd, handed over as it arrives instead of being
   * collected: MILTER_FRAG_MORE (more pieces follow) and/or MILTER_FRAG_CONT
   * (not the first piece).  Every piece carries cmd; only the first may be
   * empty. */
  uint8_t frag;
} milter_packet;

#define MILTER_FRAG_MORE 1
#define MILTER_FRAG_CONT 2

/* Embeddable decoder state (about 40 bytes while no partial packet is held).
 * A partial packet is copied into a heap buffer that is freed as soon as the
 * packet completes, so an idle connection holds no read buffer. */
typedef struct milter_decoder {
  uint32_t max_len;   /* largest accepted packet length L (cmd + payload) */
  uint32_t need;      /* total length L of the packet being assembled */
  uint8_t hdr[4];     /* length bytes collected so far */
  uint8_t hdr_have;   /* 0..4 */
  uint8_t *part;      /* partial packet bytes (cmd + payload), or NULL */
  uint32_t part_have; /* bytes in part */
  uint32_t part_cap;
  /* A command whose packets are not collected when they arrive in pieces
   * but handed over piece by piece (see milter_packet.frag): 0 = none
   * (default).  The server sets MILTER_CMD_BODY for filters that ask for
   * it (MILTER_DESC_STREAM_BODY), so that a 64 KiB body packet arriving in
   * several reads costs no per-connection buffer. */
  uint8_t stream_cmd;
  uint8_t streaming;    /* inside a streamed packet */
  uint32_t stream_left; /* its payload bytes still to come */
} milter_decoder;

/* Initialise with the largest allowed packet length (cmd byte + payload);
 * 0 means MILTER_DATA_64K + 1. */
MF_API void milter_decoder_init(milter_decoder *d, uint32_t max_len);
/* Change the limit (after negotiating a data size). */
MF_API void milter_decoder_set_max(milter_decoder *d, uint32_t max_len);
/* Free a held partial packet; the decoder can be re-used after init. */
MF_API void milter_decoder_free(milter_decoder *d);
/* True while a packet is partly received (used to apply a read timeout only
 * to packets in flight). */
MF_API int milter_decoder_busy(const milter_decoder *d);

/* Decode from buf[0..len).  *consumed is set to the number of bytes used.
 * Returns:
 *   1                a packet is in *pkt; call again with buf + *consumed
 *   0                all input consumed, no complete packet yet
 *   MILTER_E_PROTO   zero-length packet
 *   MILTER_E_TOOBIG  length above max_len (the length is in d->need)
 *   MILTER_E_NOMEM
 * After an error the decoder must not be fed again (close the connection).
 * A packet entirely inside buf is returned without copying. */
MF_API int milter_decoder_feed(milter_decoder *d, const uint8_t *buf,
                               size_t len, size_t *consumed,
                               milter_packet *pkt);

/* ======================================================================== */
/* String lists (NUL-separated fields, zero-copy)                           */
/* ======================================================================== */

/* A run of NUL-terminated strings inside a payload. */
typedef struct milter_strlist {
  const char *p;   /* first string */
  size_t len;      /* bytes, including every terminating NUL */
  unsigned count;  /* number of strings */
} milter_strlist;

/* Iterate: set *cursor = NULL first; returns the next string or NULL. */
MF_API const char *milter_strlist_next(const milter_strlist *l,
                                       const char **cursor);

/* ======================================================================== */
/* Parsed commands (MTA -> milter)                                          */
/* ======================================================================== */

typedef struct milter_optneg {
  uint32_t version;
  uint32_t actions;
  uint32_t protocol;
  /* Replies only (SMFIR_OPTNEG from milter): requested macro lists; empty
   * string means "none requested" for that stage. */
  const char *symlist[MILTER_M_COUNT];
} milter_optneg;

typedef struct milter_connect_info {
  const char *hostname; /* as the MTA resolved it, "[1.2.3.4]" if unknown */
  char family;          /* MILTER_FAMILY_* */
  uint16_t port;        /* host byte order; 0 for 'L' and 'U' */
  const char *address;  /* IP text or unix path; "" for 'U' */
} milter_connect_info;

/* A parsed command.  All pointers point into the packet's payload, so they
 * share the packet's lifetime. */
typedef struct milter_cmd {
  uint8_t code; /* MILTER_CMD_* */
  union {
    milter_optneg optneg;           /* O */
    struct {                        /* D */
      uint8_t for_cmd;              /* command the macros belong to */
      milter_strlist pairs;         /* name, value, name, value ... */
    } macro;
    milter_connect_info connect;    /* C */
    const char *helo;               /* H */
    milter_strlist args;            /* M, R: address first, then ESMTP args */
    struct {                        /* L */
      const char *name;
      const char *value;
    } header;
    struct {                        /* B */
      const uint8_t *data;
      size_t len;
    } body;
    const char *unknown;            /* U: the raw SMTP command line */
  } u;
} milter_cmd;

/* Validate and parse one command packet.  Returns 0, MILTER_E_PROTO (with a
 * static reason in *why if why != NULL: "missing NUL", "bad family" ...).
 * Unknown command bytes are MILTER_E_PROTO ("unknown command").
 * Commands with no payload (A E N Q K T) must have an empty payload... except
 * that, like libmilter, trailing bytes are tolerated for them. */
MF_API int milter_parse_cmd(const milter_packet *pkt, milter_cmd *out,
                            const char **why);

/* ======================================================================== */
/* Parsed replies (milter -> MTA)                                           */
/* ======================================================================== */

typedef struct milter_reply {
  uint8_t code; /* MILTER_REPLY_* */
  union {
    milter_optneg optneg; /* O */
    const char *text;     /* y (full "550 5.7.1 text"), q (reason) */
    struct {              /* h, m, i */
      uint32_t index;     /* m: 1-based per-name index; i: 0-based position */
      const char *name;
      const char *value;
    } header;
    struct {              /* + - e 2 */
      const char *addr;
      const char *args;   /* NULL when absent ('+', '-') */
    } rcpt;
    struct {              /* b */
      const uint8_t *data;
      size_t len;
    } body;
  } u;
} milter_reply;

/* Validate and parse one reply packet (used by the MTA-side client). */
MF_API int milter_parse_reply(const milter_packet *pkt, milter_reply *out,
                              const char **why);

/* ======================================================================== */
/* Encoders: each appends one complete packet to *b.                        */
/* Return 0, MILTER_E_NOMEM, or MILTER_E_INVAL (bad argument, e.g. a NULL    */
/* string, a reply code not 4xx/5xx, a string containing NUL is impossible). */
/* ======================================================================== */

/* Any packet: cmd + raw payload (payload may be NULL when len == 0). */
MF_API int milter_enc_packet(milter_buf *b, uint8_t cmd, const void *payload,
                             size_t len);
/* cmd followed by n NUL-terminated strings. */
MF_API int milter_enc_strings(milter_buf *b, uint8_t cmd, size_t n,
                              const char *const *strs);

/* --- MTA side --- */
MF_API int milter_enc_optneg(milter_buf *b, uint32_t version, uint32_t actions,
                             uint32_t protocol);
/* for_cmd + name/value pairs (n_pairs pairs, 2*n_pairs strings). */
MF_API int milter_enc_macro(milter_buf *b, uint8_t for_cmd, size_t n_pairs,
                            const char *const *names_values);
MF_API int milter_enc_connect(milter_buf *b, const char *hostname, char family,
                              uint16_t port, const char *address);
MF_API int milter_enc_helo(milter_buf *b, const char *helo);
/* M or R: address then ESMTP args (argc may be 0). */
MF_API int milter_enc_envaddr(milter_buf *b, uint8_t cmd, const char *addr,
                              size_t argc, const char *const *argv);
MF_API int milter_enc_header(milter_buf *b, const char *name,
                             const char *value);
MF_API int milter_enc_body(milter_buf *b, const void *data, size_t len);
MF_API int milter_enc_unknown(milter_buf *b, const char *line);
/* A, E, N, Q, K, T. */
MF_API int milter_enc_simple(milter_buf *b, uint8_t cmd);

/* --- milter side --- */
/* SMFIR_OPTNEG, with optional macro lists per stage (symlist may be NULL, or
 * entries NULL/"" to skip a stage). */
MF_API int milter_enc_optneg_reply(milter_buf *b, uint32_t version,
                                   uint32_t actions, uint32_t protocol,
                                   const char *const symlist[MILTER_M_COUNT]);
/* a c r t d s p (no payload). */
MF_API int milter_enc_reply_simple(milter_buf *b, uint8_t code);
/* SMFIR_REPLYCODE.  rcode "4xx"/"5xx" (3 digits, first 4 or 5), xcode may be
 * NULL ("x.y.z" otherwise, first digit equal to rcode's), text may be NULL or
 * contain several lines separated by "\n" or "\r\n" (a multi-line reply,
 * at most 32 lines of at most 980 bytes each); '%' is doubled as sendmail
 * requires.  The result is "550-5.7.1 l1\r\n550 5.7.1 l2". */
MF_API int milter_enc_replycode(milter_buf *b, const char *rcode,
                                const char *xcode, const char *text);
MF_API int milter_enc_quarantine(milter_buf *b, const char *reason);
MF_API int milter_enc_addheader(milter_buf *b, const char *name,
                                const char *value);
MF_API int milter_enc_insheader(milter_buf *b, uint32_t index,
                                const char *name, const char *value);
/* value "" deletes the header. */
MF_API int milter_enc_chgheader(milter_buf *b, uint32_t index,
                                const char *name, const char *value);
/* '+' (args NULL) or '2' (args given) */
MF_API int milter_enc_addrcpt(milter_buf *b, const char *rcpt,
                              const char *args);
MF_API int milter_enc_delrcpt(milter_buf *b, const char *rcpt);
/* 'e'; args may be NULL */
MF_API int milter_enc_chgfrom(milter_buf *b, const char *from,
                              const char *args);
/* One 'b' packet per chunk of at most chunk_max bytes (len 0: one empty
 * packet, so that an empty replacement body is possible). */
MF_API int milter_enc_replbody(milter_buf *b, const void *data, size_t len,
                               size_t chunk_max);

#ifdef __cplusplus
}
#endif
#endif
