/* codec.c -- GMime initialisation, RFC 2047 decoding (GMime), RFC 2047
 * encoding and folding (ours, so that line widths are under control). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>

#include "internal.h"
#include "mf_alloc.h"

#define FOLD_WIDTH 78
#define EW_MAX 75 /* RFC 2047: an encoded word is at most 75 characters */

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;
static GMimeParserOptions *parser_opts;
static GMimeFormatOptions *format_opts;

static void gmime_init_once(void) {
  g_mime_init();
  parser_opts = g_mime_parser_options_new();
  if (parser_opts != NULL) {
    /* Be lenient with real-world encoded words (no spaces around them,
     * encoded words inside quoted strings, ...). */
    g_mime_parser_options_set_rfc2047_compliance_mode(
        parser_opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_address_compliance_mode(
        parser_opts, GMIME_RFC_COMPLIANCE_LOOSE);
  }
  format_opts = g_mime_format_options_new();
  if (format_opts != NULL)
    g_mime_format_options_set_newline_format(format_opts,
                                             GMIME_NEWLINE_FORMAT_UNIX);
}

void mfh_gmime_init(void) {
  pthread_once(&gmime_once, gmime_init_once);
}

void *mfh_parser_options(void) {
  mfh_gmime_init();
  return parser_opts;
}

void *mfh_format_options(void) {
  mfh_gmime_init();
  return format_opts;
}

/* As g_utf8_validate() with a length: shortest forms only, no surrogates,
 * nothing past U+10FFFF, no NUL (ours: GLib is not needed for this). */
bool mfh_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    unsigned c = *p;
    if (c < 0x80) {
      if (c == 0)
        return false;
      p++;
      continue;
    }
    size_t n;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf)
      n = 1, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
      n = 2, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
      n = 3, cp = c & 0x07, min = 0x10000;
    else
      return false;
    if ((size_t)(end - p) <= n)
      return false;
    for (size_t k = 1; k <= n; k++) {
      if ((p[k] & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (p[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    p += n + 1;
  }
  return true;
}

static int ascii_lower(int c) {
  return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int mfh_ascii_casecmp(const char *a, const char *b) {
  const unsigned char *p = (const unsigned char *)a;
  const unsigned char *q = (const unsigned char *)b;
  for (;; p++, q++) {
    int d = ascii_lower(*p) - ascii_lower(*q);
    if (d != 0 || *p == '\0')
      return d;
  }
}

static bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

int mf_hdr_decode(const char *raw, size_t len, char **out) {
  if ((raw == NULL && len > 0) || out == NULL)
    return MF_HDR_E_INVAL;
  *out = NULL;
  char *buf = xmalloc(len + 1);
  if (buf == NULL)
    return MF_HDR_E_NOMEM;
  /* Unfold: RFC 5322 removes the CRLF of a fold and keeps the WSP; we also
   * drop stray CR/LF (and NUL) rather than keep control characters. */
  size_t n = 0;
  bool ascii = true;
  for (size_t i = 0; i < len; i++) {
    char c = raw[i];
    if (c == '\r' || c == '\n' || c == '\0')
      continue;
    if ((unsigned char)c >= 0x80)
      ascii = false;
    buf[n++] = c;
  }
  size_t start = 0;
  while (start < n && is_wsp(buf[start]))
    start++;
  while (n > start && is_wsp(buf[n - 1]))
    n--;
  memmove(buf, buf + start, n - start);
  n -= start;
  buf[n] = '\0';
  if (ascii && strstr(buf, "=?") == NULL) {
    *out = buf;
    return MF_HDR_OK;
  }
  char *dec = g_mime_utils_header_decode_text(mfh_parser_options(), buf);
  free(buf);
  if (dec == NULL)
    return MF_HDR_E_NOMEM;
  if (!mfh_utf8_valid(dec, strlen(dec))) {
    /* Should not happen (GMime converts via its fallback charsets), but
     * never hand out invalid UTF-8. */
    char *fixed =
        g_mime_utils_decode_8bit(mfh_parser_options(), dec, strlen(dec));
    g_free(dec);
    dec = fixed;
    if (dec == NULL)
      return MF_HDR_E_NOMEM;
  }
  *out = xstrdup(dec);
  g_free(dec);
  return *out != NULL ? MF_HDR_OK : MF_HDR_E_NOMEM;
}

/* ------------------------------------------------------------------------ */
/* A tiny growable string                                                   */
/* ------------------------------------------------------------------------ */

void mfh_buf_add(mfh_buf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = xrealloc(b->p, cap);
    if (p == NULL) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void mfh_buf_adds(mfh_buf *b, const char *s) {
  mfh_buf_add(b, s, strlen(s));
}

static void sb_addc(mfh_buf *b, char c) {
  mfh_buf_add(b, &c, 1);
}

int mfh_buf_finish(mfh_buf *b, char **out, size_t *outlen) {
  if (!b->oom && b->p == NULL)
    mfh_buf_add(b, "", 0);
  if (b->oom) {
    free(b->p);
    b->p = NULL;
    return MF_HDR_E_NOMEM;
  }
  *out = b->p;
  if (outlen != NULL)
    *outlen = b->len;
  return MF_HDR_OK;
}

/* Next whitespace run + word of s[0..n) from *i: the run is s[*ws..*w), the
 * word s[*w..*i) (empty at the end). */
static void next_word(const char *s, size_t n, size_t *i, size_t *ws,
                      size_t *w) {
  *ws = *i;
  while (*i < n && is_wsp(s[*i]))
    (*i)++;
  *w = *i;
  while (*i < n && !is_wsp(s[*i]))
    (*i)++;
}

/* ------------------------------------------------------------------------ */
/* Folding                                                                  */
/* ------------------------------------------------------------------------ */

int mfh_fold(const char *s, size_t col, char **out, size_t *outlen) {
  mfh_buf b = {0};
  size_t i = 0, n = strlen(s);
  bool line_has_text = false; /* never fold before the first word */
  while (i < n) {
    size_t ws, w;
    next_word(s, n, &i, &ws, &w);
    size_t wslen = w - ws, wlen = i - w;
    /* Break before a whitespace run when the word would overflow, never
     * before trailing whitespace (a line of only WSP is not allowed). */
    if (wslen > 0 && wlen > 0 && line_has_text &&
        col + wslen + wlen > FOLD_WIDTH) {
      sb_addc(&b, '\n');
      col = 0;
    }
    mfh_buf_add(&b, s + ws, wslen + wlen);
    col += wslen + wlen;
    if (wlen > 0)
      line_has_text = true;
  }
  return mfh_buf_finish(&b, out, outlen);
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

int mfh_unfold_user(const char *text, char **out) {
  size_t n = strlen(text);
  char *buf = xmalloc(n + 1);
  if (buf == NULL)
    return MF_HDR_E_NOMEM;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char c = text[i];
    if (c == '\r' || c == '\n') {
      size_t j = i;
      if (c == '\r' && j + 1 < n && text[j + 1] == '\n')
        j++;
      if (j + 1 >= n || !is_wsp(text[j + 1])) {
        free(buf);
        return MF_HDR_E_VALUE;
      }
      i = j;
      continue;
    }
    buf[o++] = c;
  }
  buf[o] = '\0';
  *out = buf;
  return MF_HDR_OK;
}

static bool q_safe(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '!' || c == '*' || c == '+' ||
         c == '-' || c == '/';
}

static size_t q_cost(unsigned char c) {
  return (q_safe(c) || c == ' ') ? 1 : 3;
}

static size_t utf8_seq_len(const char *s, size_t avail) {
  unsigned char c = (unsigned char)s[0];
  size_t l = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
  return l <= avail ? l : avail;
}

/* End of the next chunk starting at t[i] whose encoded word (overhead
 * included) fits in max characters: whole UTF-8 sequences, at least one.
 * In B mode a chunk that is not the last must be a multiple of 3 bytes:
 * GMime joins adjacent B words of one charset before decoding, and a "="
 * pad in the middle would cut the rest off.  Returns 0 if no such chunk. */
static size_t chunk_end(const char *t, size_t i, size_t n, bool q, size_t max) {
  const size_t overhead = 12; /* "=?UTF-8?X?" + "?=" */
  size_t j = i, enc = 0, best3 = 0;
  while (j < n) {
    size_t l = utf8_seq_len(t + j, n - j);
    size_t add = 0;
    if (q) {
      for (size_t k = 0; k < l; k++)
        add += q_cost((unsigned char)t[j + k]);
    } else {
      add = 4 * ((j + l - i + 2) / 3) - enc;
    }
    if (j > i && overhead + enc + add > max)
      break;
    enc += add;
    j += l;
    if ((j - i) % 3 == 0)
      best3 = j;
  }
  if (q || j == n)
    return j;
  return best3;
}

/* RFC 4648 base64 of p[0..n), with padding. */
static void base64(mfh_buf *b, const unsigned char *p, size_t n) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n)
      v |= p[i + 2];
    char q[4] = {a[v >> 18], a[(v >> 12) & 63],
                 i + 1 < n ? a[(v >> 6) & 63] : '=', i + 2 < n ? a[v & 63] : '='};
    mfh_buf_add(b, q, 4);
  }
}

/* Encode text[0..n) (valid UTF-8) as encoded words separated by SP.  The
 * first word is at most `first_max` characters, the others EW_MAX. */
static void encode_run(mfh_buf *b, const char *t, size_t n, size_t first_max) {
  static const char hex[] = "0123456789ABCDEF";
  size_t qlen = 0;
  for (size_t i = 0; i < n; i++)
    qlen += q_cost((unsigned char)t[i]);
  /* Q when it is not much longer than B: readable for mostly-ASCII text. */
  bool use_q = qlen * 2 <= 4 * ((n + 2) / 3) * 3;
  size_t max = first_max;
  size_t i = 0;
  bool first = true;
  while (i < n) {
    bool q = use_q;
    size_t j = chunk_end(t, i, n, q, max);
    if (j == 0) { /* no 3-byte aligned B chunk fits: this one in Q */
      q = true;
      j = chunk_end(t, i, n, q, max);
    }
    if (!first)
      sb_addc(b, ' ');
    if (q) {
      mfh_buf_add(b, "=?UTF-8?Q?", 10);
      for (size_t k = i; k < j; k++) {
        unsigned char c = (unsigned char)t[k];
        if (c == ' ') {
          sb_addc(b, '_');
        } else if (q_safe(c)) {
          sb_addc(b, (char)c);
        } else {
          char e[3] = {'=', hex[c >> 4], hex[c & 15]};
          mfh_buf_add(b, e, 3);
        }
      }
    } else {
      mfh_buf_add(b, "=?UTF-8?B?", 10);
      base64(b, (const unsigned char *)t + i, j - i);
    }
    mfh_buf_add(b, "?=", 2);
    i = j;
    first = false;
    max = EW_MAX;
  }
}

static bool word_needs_encoding(const char *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)w[i];
    if (c >= 0x80 || c < 0x20 || c == 0x7f)
      return true;
    if (c == '=' && i + 1 < n && w[i + 1] == '?')
      return true;
  }
  return false;
}

/* Encode a one-line UTF-8 text for a field whose first line starts at column
 * col.  Plain words stay; runs of words needing encoding (with the
 * whitespace between them) become encoded words. */
static int encode_words(const char *s, size_t col, char **out) {
  mfh_buf b = {0};
  size_t n = strlen(s), i = 0;
  bool at_start = true;
  while (i < n) {
    size_t ws, w;
    next_word(s, n, &i, &ws, &w);
    if (w == i) { /* trailing whitespace */
      mfh_buf_add(&b, s + ws, i - ws);
      break;
    }
    if (!word_needs_encoding(s + w, i - w)) {
      mfh_buf_add(&b, s + ws, i - ws);
      at_start = false;
      continue;
    }
    /* Extend the run over following words that need encoding too. */
    size_t end = i;
    for (;;) {
      size_t k = end;
      while (k < n && is_wsp(s[k]))
        k++;
      size_t e = k;
      while (e < n && !is_wsp(s[e]))
        e++;
      if (e == k || !word_needs_encoding(s + k, e - k))
        break;
      end = e;
    }
    mfh_buf_add(&b, s + ws, w - ws);
    size_t first_max = EW_MAX;
    if (at_start && w == ws) {
      size_t room = col + 1 < FOLD_WIDTH ? FOLD_WIDTH - col - 1 : 0;
      first_max = room < 24 ? 24 : room < EW_MAX ? room : EW_MAX;
    }
    encode_run(&b, s + w, end - w, first_max);
    i = end;
    at_start = false;
  }
  return mfh_buf_finish(&b, out, NULL);
}

/* Text that unfolding, encoding and folding would all leave as it is:
 * printable ASCII and tabs without "=?", short enough for the first line
 * (starting at column col) -- the common "X-Flag: yes" case. */
static bool plain_short(const char *text, size_t n, size_t col) {
  if (n > FOLD_WIDTH || col > FOLD_WIDTH - n)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)text[i];
    if ((c < 0x20 && c != '\t') || c >= 0x7f ||
        (c == '=' && text[i + 1] == '?'))
      return false;
  }
  return true;
}

int mf_hdr_encode(const char *name, const char *text, int leadspc, char **out,
                  size_t *len) {
  if (name == NULL || text == NULL || out == NULL)
    return MF_HDR_E_INVAL;
  *out = NULL;
  size_t n = strlen(text);
  if (plain_short(text, n, strlen(name) + 2)) {
    char *p = xmalloc(n + 2);
    if (p == NULL)
      return MF_HDR_E_NOMEM;
    p[0] = ' ';
    memcpy(p + (leadspc ? 1 : 0), text, n + 1);
    *out = p;
    if (len != NULL)
      *len = n + (leadspc ? 1 : 0);
    return MF_HDR_OK;
  }
  if (!mfh_utf8_valid(text, n))
    return MF_HDR_E_UTF8;
  char *flat = NULL;
  int rc = mfh_unfold_user(text, &flat);
  if (rc != MF_HDR_OK)
    return rc;
  size_t col = strlen(name) + 2; /* "Name: " */
  char *enc = NULL;
  rc = encode_words(flat, col, &enc);
  free(flat);
  if (rc != MF_HDR_OK)
    return rc;
  char *folded = NULL;
  size_t flen = 0;
  rc = mfh_fold(enc, col, &folded, &flen);
  free(enc);
  if (rc != MF_HDR_OK)
    return rc;
  if (leadspc) {
    char *p = xmalloc(flen + 2);
    if (p == NULL) {
      free(folded);
      return MF_HDR_E_NOMEM;
    }
    p[0] = ' ';
    memcpy(p + 1, folded, flen + 1);
    free(folded);
    folded = p;
    flen++;
  }
  *out = folded;
  if (len != NULL)
    *len = flen;
  return MF_HDR_OK;
}

static bool is_atext_phrase(const char *s) {
  static const char specials[] = "()<>[]:;@\\,.\"";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p >= 0x7f || strchr(specials, *p) != NULL)
      return false;
  }
  return *s != '\0' && !is_wsp(s[0]) && !is_wsp(s[strlen(s) - 1]);
}

int mfh_encode_phrase(const char *text, char **out) {
  mfh_buf b = {0};
  size_t n = strlen(text);
  if (!mfh_utf8_valid(text, n))
    return MF_HDR_E_UTF8;
  if (word_needs_encoding(text, n) || memchr(text, '\t', n) != NULL) {
    encode_run(&b, text, n, EW_MAX);
  } else if (is_atext_phrase(text)) {
    mfh_buf_add(&b, text, n);
  } else {
    sb_addc(&b, '"');
    for (size_t i = 0; i < n; i++) {
      if (text[i] == '"' || text[i] == '\\')
        sb_addc(&b, '\\');
      sb_addc(&b, text[i]);
    }
    sb_addc(&b, '"');
  }
  return mfh_buf_finish(&b, out, NULL);
}

const char *mf_hdr_strerror(int err) {
  switch (err) {
  case MF_HDR_OK:
    return "success";
  case MF_HDR_E_NOMEM:
    return "out of memory";
  case MF_HDR_E_INVAL:
    return "invalid argument";
  case MF_HDR_E_NAME:
    return "invalid header field name";
  case MF_HDR_E_UTF8:
    return "text is not valid UTF-8";
  case MF_HDR_E_VALUE:
    return "header value not representable";
  case MF_HDR_E_NOTFOUND:
    return "no such header field";
  case MF_HDR_E_PARSE:
    return "malformed header block";
  case MF_HDR_E_ADDR:
    return "bad address list";
  }
  return "unknown error";
}
