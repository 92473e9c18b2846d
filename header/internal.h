/* internal.h -- private declarations shared by the header/ sources. */
#ifndef MF_HEADER_INTERNAL_H
#define MF_HEADER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mailfilter/header.h>

/* One original field (snapshot taken when it was received, or by
 * mf_hdr_commit()).  Its name and value are one "name\0value\0" pair in
 * the collection's arena: never freed on their own, never written after they
 * were copied there, so a current field and later originals may point to
 * the same bytes.  The value is at name + nl + 1 (mfh_orig_value()). */
typedef struct mfh_orig {
  char *name;
  size_t len;  /* of the value */
  uint32_t nl; /* strlen(name): names are shorter than 4 GiB */
  bool leadspc;
} mfh_orig;

static inline const char *mfh_orig_value(const mfh_orig *o) {
  return o->name + o->nl + 1;
}

/* Where a field's name or value lives. */
enum {
  MFH_IN_ARENA = 0, /* the collection's arena (freed with it) */
  MFH_IN_HEAP = 1,  /* its own allocation, freed when replaced */
  MFH_IN_SELF = 2   /* the field's own heap block, after the struct */
};

/* One current field.  A received field (struct, name, value) is one piece
 * of the arena and its original points to the same name and value; an
 * inserted field is a heap block (struct and name); an edited name or
 * value gets its own allocation (so that editing in a loop does not grow
 * the arena). */
typedef struct mfh_field {
  char *name;
  char *value; /* NUL-terminated raw value */
  size_t len;
  char *decoded; /* lazily filled cache, or NULL */
  uint32_t orig; /* index in originals, or MFH_NEW */
  bool leadspc;
  unsigned char name_in, value_in; /* MFH_IN_* */
  bool self_heap;                  /* the struct is a heap block */
} mfh_field;

/* A block of the arena: fields and strings are carved from data[]. */
typedef struct mfh_chunk {
  struct mfh_chunk *next;
  size_t used, cap;
  char data[];
} mfh_chunk;

#define MFH_NEW UINT32_MAX /* at most UINT32_MAX - 1 originals */

#define MFH_INLINE 24

struct mf_hdrs {
  unsigned flags;
  bool edited; /* any edit since the last original was appended */
  mfh_field **fields;
  size_t nfields, capfields;
  mfh_orig *origs;
  size_t norigs, caporigs;
  mfh_chunk *arena; /* the block being filled first, then older ones */
  char errmsg[160];
  /* The first MFH_INLINE fields and originals are listed here, and the
   * first block of the arena follows the struct in the same allocation: a
   * message of twenty-odd ordinary fields costs one allocation. */
  mfh_field *fields0[MFH_INLINE];
  mfh_orig origs0[MFH_INLINE];
};

/* A growable string; on allocation failure it sets oom and ignores further
 * additions (checked once at the end by mfh_buf_finish). */
typedef struct mfh_buf {
  char *p;
  size_t len, cap;
  bool oom;
} mfh_buf;

void mfh_buf_add(mfh_buf *b, const char *s, size_t n);
void mfh_buf_adds(mfh_buf *b, const char *s);
/* Hand the string over (*out malloc'd, "" if empty) or MF_HDR_E_NOMEM. */
int mfh_buf_finish(mfh_buf *b, char **out, size_t *outlen);

/* codec.c */
void mfh_gmime_init(void);
void *mfh_parser_options(void); /* GMimeParserOptions*, read-only */
void *mfh_format_options(void); /* GMimeFormatOptions*, read-only */
bool mfh_utf8_valid(const char *s, size_t len);
int mfh_ascii_casecmp(const char *a, const char *b);
/* Unfold text given by the user: remove CR/LF followed by WSP; a line break
 * not followed by WSP, or NUL, is an error.  *out malloc'd. */
int mfh_unfold_user(const char *text, char **out);
/* Fold s (no line breaks) at existing whitespace so that lines stay within
 * 78 columns, the first line starting at column `col`.  *out malloc'd. */
int mfh_fold(const char *s, size_t col, char **out, size_t *outlen);

/* A display name or group name as an RFC 5322 phrase: atoms as is, else a
 * quoted string, or RFC 2047 encoded words when not ASCII.  *out malloc'd. */
int mfh_encode_phrase(const char *text, char **out);

#endif
