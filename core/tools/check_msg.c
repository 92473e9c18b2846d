/*
 * check_msg.c -- the message milter-check sends, and the message that
 * results from the milter's end-of-message actions.
 *
 * Header fields are handed over as Postfix does: the name, and the value
 * after the colon with continuation lines joined by "\n" (folding whitespace
 * kept); without MILTER_P_HDR_LEADSPC the one space after the colon is
 * dropped.  The body goes with CRLF line ends.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "milter_check.h"

/* ---- Parsing ------------------------------------------------------------ */

/* One line of buf from *pos: [*ls, *le) without its line end; *pos moves
 * past the line end.  Returns 0 at the end of buf. */
static int next_line(const char *buf, size_t len, size_t *pos, size_t *ls,
                     size_t *le) {
  if (*pos >= len)
    return 0;
  *ls = *pos;
  const char *nl = memchr(buf + *pos, '\n', len - *pos);
  size_t e = nl ? (size_t)(nl - buf) : len;
  *pos = nl ? e + 1 : len;
  if (e > *ls && buf[e - 1] == '\r')
    e--;
  *le = e;
  return 1;
}

static int add_header(mc_msg *m, const char *name, size_t nl, char *raw) {
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    mc_header *h = realloc(m->h, cap * sizeof *h);
    if (h == NULL)
      return MILTER_E_NOMEM;
    m->h = h;
    m->cap = cap;
  }
  mc_header *h = &m->h[m->n];
  if ((h->name = mc_strndup(name, nl)) == NULL)
    return MILTER_E_NOMEM;
  h->raw = raw;
  h->lead = raw[0] == ' ' ? 1 : 0;
  m->n++;
  return 0;
}

/* A field name: printable ASCII except colon, at least one character. */
static size_t field_name_len(const char *s, size_t n) {
  size_t i = 0;
  while (i < n && s[i] != ':' && s[i] > ' ' && s[i] < 127)
    i++;
  /* "Name :" (obsolete syntax): allow blanks before the colon. */
  size_t j = i;
  while (j < n && (s[j] == ' ' || s[j] == '\t'))
    j++;
  if (i == 0 || j >= n || s[j] != ':')
    return 0;
  return i;
}

int mc_msg_parse(mc_msg *m, const char *buf, size_t len) {
  memset(m, 0, sizeof *m);
  size_t pos = 0, ls, le, body_start = len;
  int rc;

  /* An mbox "From " envelope line is not part of the message. */
  if (len >= 5 && memcmp(buf, "From ", 5) == 0)
    next_line(buf, len, &pos, &ls, &le);

  /* Header section: until an empty line or a line that is not a field. */
  while (pos < len) {
    size_t save = pos;
    if (!next_line(buf, len, &pos, &ls, &le))
      break;
    if (le == ls) { /* empty line: the body follows it */
      body_start = pos;
      goto body;
    }
    size_t nl = field_name_len(buf + ls, le - ls);
    if (nl == 0) { /* not a header field: the body starts here */
      body_start = save;
      goto body;
    }
    const char *colon = memchr(buf + ls, ':', le - ls);
    size_t vs = (size_t)(colon - buf) + 1;
    /* The value and its continuation lines. */
    size_t cap = le - vs + 1, vlen = le - vs;
    char *raw = malloc(cap);
    if (raw == NULL)
      goto nomem;
    memcpy(raw, buf + vs, vlen);
    for (;;) {
      size_t p2 = pos, l2s, l2e;
      if (!next_line(buf, len, &p2, &l2s, &l2e) || l2e == l2s ||
          (buf[l2s] != ' ' && buf[l2s] != '\t'))
        break;
      size_t add = l2e - l2s + 1;
      char *r2 = realloc(raw, cap + add);
      if (r2 == NULL) {
        free(raw);
        goto nomem;
      }
      raw = r2;
      cap += add;
      raw[vlen++] = '\n';
      memcpy(raw + vlen, buf + l2s, l2e - l2s);
      vlen += l2e - l2s;
      pos = p2;
    }
    raw[vlen] = '\0';
    if ((rc = add_header(m, buf + ls, nl, raw)) < 0) {
      free(raw);
      goto nomem;
    }
  }
  body_start = len;

body:
  /* Body: every line with CRLF, the last one too. */
  {
    size_t n = len - body_start, lines = 1;
    for (size_t i = body_start; i < len; i++)
      lines += buf[i] == '\n';
    if ((m->body = malloc(n + lines + 2)) == NULL)
      goto nomem;
    size_t out = 0;
    pos = body_start;
    while (next_line(buf, len, &pos, &ls, &le)) {
      memcpy(m->body + out, buf + ls, le - ls);
      out += le - ls;
      m->body[out++] = '\r';
      m->body[out++] = '\n';
    }
    m->body_len = out;
  }
  return 0;

nomem:
  mc_msg_free(m);
  return MILTER_E_NOMEM;
}

void mc_msg_free(mc_msg *m) {
  for (size_t i = 0; i < m->n; i++) {
    free(m->h[i].name);
    free(m->h[i].raw);
  }
  free(m->h);
  free(m->body);
  memset(m, 0, sizeof *m);
}

/* ---- The resulting message --------------------------------------------- */

static int field_insert(mc_result *r, size_t at, const char *name,
                        const char *value) {
  if (r->n_f == r->cap_f) {
    size_t cap = r->cap_f ? r->cap_f * 2 : 16;
    mc_field *f = realloc(r->f, cap * sizeof *f);
    if (f == NULL)
      return MILTER_E_NOMEM;
    r->f = f;
    r->cap_f = cap;
  }
  if (at > r->n_f)
    at = r->n_f;
  mc_field nf = {mc_strdup(name), mc_strdup(value)};
  if (nf.name == NULL || nf.value == NULL) {
    free(nf.name);
    free(nf.value);
    return MILTER_E_NOMEM;
  }
  memmove(&r->f[at + 1], &r->f[at], (r->n_f - at) * sizeof *r->f);
  r->f[at] = nf;
  r->n_f++;
  return 0;
}

int mc_result_init(mc_result *r, const mc_msg *m, const char *from,
                   const mc_strv *rcpts) {
  memset(r, 0, sizeof *r);
  if ((r->from = mc_strdup(from)) == NULL)
    goto nomem;
  for (size_t i = 0; i < rcpts->n; i++)
    if (mc_strv_push(&r->rcpts, rcpts->v[i], (size_t)-1) < 0)
      goto nomem;
  for (size_t i = 0; i < m->n; i++)
    if (field_insert(r, r->n_f, m->h[i].name, m->h[i].raw + m->h[i].lead) < 0)
      goto nomem;
  r->body = (const uint8_t *)m->body;
  r->body_len = m->body_len;
  return 0;
nomem:
  mc_result_free(r);
  return MILTER_E_NOMEM;
}

/* A header value from the milter: with HDR_LEADSPC it carries the space
 * after the colon itself. */
static const char *milter_value(const char *v, int leadspc) {
  if (v == NULL)
    return "";
  if (leadspc && v[0] == ' ')
    return v + 1;
  return v;
}

/* Index of the idx-th (1-based) field called name, or n_f. */
static size_t find_field(const mc_result *r, const char *name, uint32_t idx) {
  uint32_t seen = 0;
  for (size_t i = 0; i < r->n_f; i++)
    if (strcasecmp(r->f[i].name, name) == 0 && ++seen == idx)
      return i;
  return r->n_f;
}

/* a and b the same address, with or without angle brackets. */
static int same_addr(const char *a, const char *b) {
  size_t al = strlen(a), bl = strlen(b);
  if (al >= 2 && a[0] == '<' && a[al - 1] == '>')
    a++, al -= 2;
  if (bl >= 2 && b[0] == '<' && b[bl - 1] == '>')
    b++, bl -= 2;
  return al == bl && strncasecmp(a, b, al) == 0;
}

static int remove_rcpt(mc_result *r, const char *addr) {
  for (size_t i = 0; i < r->rcpts.n; i++) {
    if (same_addr(r->rcpts.v[i], addr)) {
      free(r->rcpts.v[i]);
      memmove(&r->rcpts.v[i], &r->rcpts.v[i + 1],
              (r->rcpts.n - i - 1) * sizeof *r->rcpts.v);
      r->rcpts.n--;
      return 1;
    }
  }
  return 0;
}

int mc_result_apply(mc_result *r, const milter_action *a, int leadspc) {
  const char *name = a->name ? a->name : "";
  switch (a->type) {
  case MILTER_ACTION_ADDHEADER:
    return field_insert(r, r->n_f, name, milter_value(a->value, leadspc));
  case MILTER_ACTION_INSHEADER:
    return field_insert(r, a->index, name, milter_value(a->value, leadspc));
  case MILTER_ACTION_CHGHEADER: {
    const char *v = milter_value(a->value, leadspc);
    /* Sendmail and Postfix count from 1; 0 is treated as 1. */
    size_t i = find_field(r, name, a->index ? a->index : 1);
    if (i == r->n_f) /* no such occurrence: add it, unless deleting */
      return v[0] == '\0' ? 0 : field_insert(r, r->n_f, name, v);
    if (v[0] == '\0') { /* empty value: delete the field */
      free(r->f[i].name);
      free(r->f[i].value);
      memmove(&r->f[i], &r->f[i + 1], (r->n_f - i - 1) * sizeof *r->f);
      r->n_f--;
      return 0;
    }
    char *nv = mc_strdup(v);
    if (nv == NULL)
      return MILTER_E_NOMEM;
    free(r->f[i].value);
    r->f[i].value = nv;
    return 0;
  }
  case MILTER_ACTION_ADDRCPT:
  case MILTER_ACTION_ADDRCPT_PAR:
    return mc_strv_push(&r->rcpts, name, (size_t)-1);
  case MILTER_ACTION_DELRCPT:
    remove_rcpt(r, name);
    return 0;
  case MILTER_ACTION_CHGFROM: {
    char *f = mc_strdup(name), *args = mc_strdup(a->value);
    if (f == NULL || (a->value != NULL && args == NULL)) {
      free(f);
      free(args);
      return MILTER_E_NOMEM;
    }
    free(r->from);
    free(r->from_args);
    r->from = f;
    r->from_args = args;
    return 0;
  }
  case MILTER_ACTION_REPLBODY:
    r->body = a->body;
    r->body_len = a->body_len;
    return 0;
  case MILTER_ACTION_QUARANTINE: {
    char *q = mc_strdup(a->value ? a->value : "");
    if (q == NULL)
      return MILTER_E_NOMEM;
    free(r->quarantine);
    r->quarantine = q;
    return 0;
  }
  }
  return 0;
}

void mc_result_free(mc_result *r) {
  free(r->from);
  free(r->from_args);
  mc_strv_free(&r->rcpts);
  for (size_t i = 0; i < r->n_f; i++) {
    free(r->f[i].name);
    free(r->f[i].value);
  }
  free(r->f);
  free(r->quarantine);
  memset(r, 0, sizeof *r);
}
