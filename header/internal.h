/* internal.h -- private declarations shared by the header/ sources. */
#ifndef MF_HEADER_INTERNAL_H
#define MF_HEADER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <mailfilter/header.h>

/* One original field (snapshot taken when it was received). */
typedef struct mfh_orig {
  char *name;  /* one allocation: name, NUL, value, NUL */
  char *value; /* points into name's block */
  size_t len;
  bool leadspc;
} mfh_orig;

/* One current field. */
typedef struct mfh_field {
  char *name;
  char *value; /* NUL-terminated raw value */
  size_t len;
  bool leadspc;
  size_t orig;   /* index in originals, or MFH_NEW */
  char *decoded; /* lazily filled cache, or NULL */
  /* name / value live in the field's own allocation (after the struct) and
   * are not freed on their own; set on receipt, cleared when replaced. */
  bool name_inline, value_inline;
} mfh_field;

#define MFH_NEW ((size_t)-1)

struct mf_hdrs {
  unsigned flags;
  bool edited; /* any edit since the last original was appended */
  mfh_field **fields;
  size_t nfields, capfields;
  mfh_orig *origs;
  size_t norigs, caporigs;
  char errmsg[160];
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
