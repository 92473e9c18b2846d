/*
 * check_out.c -- what milter-check prints: human lines as the conversation
 * goes, or one JSON object at the end (--json).
 */
#include <stdio.h>
#include <string.h>

#include "milter_check.h"

/* ---- Names -------------------------------------------------------------- */

static const char *const action_bits[] = {
    "ADDHDRS",    "CHGBODY", "ADDRCPT",     "DELRCPT",   "CHGHDRS",
    "QUARANTINE", "CHGFROM", "ADDRCPT_PAR", "SETSYMLIST"};

static const char *const step_bits[] = {
    "NOCONNECT", "NOHELO",  "NOMAIL",     "NORCPT",  "NOBODY",  "NOHDRS",
    "NOEOH",     "NR_HDR",  "NOUNKNOWN",  "NODATA",  "SKIP",    "RCPT_REJ",
    "NR_CONN",   "NR_HELO", "NR_MAIL",    "NR_RCPT", "NR_DATA", "NR_UNKN",
    "NR_EOH",    "NR_BODY", "HDR_LEADSPC"};

static const char *const symlist_stages[MILTER_M_COUNT] = {
    "connect", "helo", "envfrom", "envrcpt", "data", "eom", "eoh"};

/* Name of bit i of a step mask (MDS bits included), NULL if unknown. */
static const char *step_name(unsigned i) {
  if (i < sizeof step_bits / sizeof *step_bits)
    return step_bits[i];
  if ((1u << i) == MILTER_P_MDS_256K)
    return "MDS_256K";
  if ((1u << i) == MILTER_P_MDS_1M)
    return "MDS_1M";
  return NULL;
}

static const char *action_name(unsigned i) {
  return i < sizeof action_bits / sizeof *action_bits ? action_bits[i] : NULL;
}

const char *mc_cmd_short(uint8_t cmd) {
  switch (cmd) {
  case MILTER_CMD_CONNECT:
    return "connect";
  case MILTER_CMD_HELO:
    return "helo";
  case MILTER_CMD_MAIL:
    return "mail";
  case MILTER_CMD_RCPT:
    return "rcpt";
  case MILTER_CMD_DATA:
    return "data";
  case MILTER_CMD_HEADER:
    return "header";
  case MILTER_CMD_EOH:
    return "eoh";
  case MILTER_CMD_BODY:
    return "body";
  case MILTER_CMD_EOB:
    return "eom";
  case MILTER_CMD_ABORT:
    return "abort";
  case MILTER_CMD_MACRO:
    return "macro";
  case MILTER_CMD_QUIT:
    return "quit";
  default:
    return "?";
  }
}

const char *mc_reply_short(uint8_t reply) {
  switch (reply) {
  case MILTER_REPLY_ACCEPT:
    return "accept";
  case MILTER_REPLY_CONTINUE:
    return "continue";
  case MILTER_REPLY_REJECT:
    return "reject";
  case MILTER_REPLY_TEMPFAIL:
    return "tempfail";
  case MILTER_REPLY_DISCARD:
    return "discard";
  case MILTER_REPLY_SKIP:
    return "skip";
  case MILTER_REPLY_REPLYCODE:
    return "replycode";
  default:
    return milter_reply_name(reply);
  }
}

static const char *status_name(milter_client_status s) {
  switch (s) {
  case MILTER_CLIENT_REPLIED:
    return "replied";
  case MILTER_CLIENT_NOREPLY:
    return "noreply";
  case MILTER_CLIENT_NOT_SENT:
    return "not_sent";
  }
  return "?";
}

static const char *action_type_name(milter_action_type t) {
  switch (t) {
  case MILTER_ACTION_ADDHEADER:
    return "addheader";
  case MILTER_ACTION_INSHEADER:
    return "insheader";
  case MILTER_ACTION_CHGHEADER:
    return "chgheader";
  case MILTER_ACTION_ADDRCPT:
    return "addrcpt";
  case MILTER_ACTION_ADDRCPT_PAR:
    return "addrcpt_par";
  case MILTER_ACTION_DELRCPT:
    return "delrcpt";
  case MILTER_ACTION_CHGFROM:
    return "chgfrom";
  case MILTER_ACTION_REPLBODY:
    return "replbody";
  case MILTER_ACTION_QUARANTINE:
    return "quarantine";
  }
  return "?";
}

static const char *data_size_name(uint32_t ds) {
  return ds == MILTER_DATA_1M ? "1m" : ds == MILTER_DATA_256K ? "256k" : "64k";
}

/* ---- Human output -------------------------------------------------------- */

static void print_bits(FILE *f, uint32_t mask, const char *(*name)(unsigned)) {
  int first = 1;
  fputs(" (", f);
  for (unsigned i = 0; i < 32; i++) {
    if (!(mask & (1u << i)))
      continue;
    const char *n = name(i);
    if (n != NULL)
      fprintf(f, "%s%s", first ? "" : " ", n);
    else
      fprintf(f, "%s0x%x", first ? "" : " ", 1u << i);
    first = 0;
  }
  fputs(first ? "none)" : ")", f);
}

void mc_print_negotiation(FILE *f, const milter_client_nego *n) {
  fprintf(f, "negotiated: version %u, actions 0x%x", (unsigned)n->version,
          (unsigned)n->actions);
  print_bits(f, n->actions, action_name);
  fprintf(f, ", steps 0x%x", (unsigned)n->protocol);
  print_bits(f, n->protocol, step_name);
  fprintf(f, ", data size %s (%u)\n", data_size_name(n->data_size),
          (unsigned)n->data_size);
  fputs("macros requested:", f);
  int any = 0;
  for (int i = 0; i < MILTER_M_COUNT; i++) {
    if (n->symlist[i] == NULL)
      continue;
    fprintf(f, "%s %s: %s", any ? ";" : "", symlist_stages[i], n->symlist[i]);
    any = 1;
  }
  fputs(any ? "\n" : " none (the milter's defaults)\n", f);
}

void mc_print_event(FILE *f, const mc_event *e) {
  if (e->cmd == MILTER_CMD_MACRO) {
    fprintf(f, "macros before %s: %s\n", mc_cmd_short(e->for_cmd),
            e->arg ? e->arg : "");
    return;
  }
  fprintf(f, "%s%s%s", mc_cmd_short(e->cmd), e->arg ? " " : "",
          e->arg ? e->arg : "");
  if (e->cmd == MILTER_CMD_ABORT) {
    fputc('\n', f);
    return;
  }
  switch (e->status) {
  case MILTER_CLIENT_REPLIED:
    fprintf(f, " -> %s", mc_reply_short(e->reply));
    if (e->text != NULL)
      fprintf(f, " \"%s\"", e->text);
    break;
  case MILTER_CLIENT_NOREPLY:
    fputs(" -> (no reply expected)", f);
    break;
  case MILTER_CLIENT_NOT_SENT:
    fputs(" -> not sent (switched off by the milter)", f);
    break;
  }
  if (e->cmd == MILTER_CMD_BODY && e->chunks > 0)
    fprintf(f, " [%u packet%s]", e->chunks, e->chunks == 1 ? "" : "s");
  if (e->progress > 0)
    fprintf(f, " [%u progress]", e->progress);
  if (e->rcpt_rejected)
    fputs(" (recipient dropped)", f);
  fputc('\n', f);
}

/* The space after "Name:" unless the value brings its own (LEADSPC). */
static const char *sp(const char *value) {
  return value[0] == ' ' || value[0] == '\t' ? "" : " ";
}

void mc_print_actions(FILE *f, const milter_client_result *eom) {
  for (size_t i = 0; i < eom->n_actions; i++) {
    const milter_action *a = &eom->actions[i];
    const char *name = a->name ? a->name : "";
    const char *value = a->value ? a->value : "";
    fprintf(f, "  action %s", action_type_name(a->type));
    switch (a->type) {
    case MILTER_ACTION_ADDHEADER:
      fprintf(f, " %s:%s%s\n", name, sp(value), value);
      break;
    case MILTER_ACTION_INSHEADER:
      fprintf(f, " at %u %s:%s%s\n", (unsigned)a->index, name, sp(value),
              value);
      break;
    case MILTER_ACTION_CHGHEADER:
      if (value[strspn(value, " ")] == '\0')
        fprintf(f, " %s[%u] deleted\n", name, (unsigned)a->index);
      else
        fprintf(f, " %s[%u]:%s%s\n", name, (unsigned)a->index, sp(value),
                value);
      break;
    case MILTER_ACTION_ADDRCPT:
    case MILTER_ACTION_DELRCPT:
      fprintf(f, " %s\n", name);
      break;
    case MILTER_ACTION_ADDRCPT_PAR:
    case MILTER_ACTION_CHGFROM:
      fprintf(f, " %s%s%s\n", name, a->value ? " " : "", value);
      break;
    case MILTER_ACTION_REPLBODY:
      fprintf(f, " %zu bytes in %u packet%s\n", a->body_len, a->chunks,
              a->chunks == 1 ? "" : "s");
      break;
    case MILTER_ACTION_QUARANTINE:
      fprintf(f, " \"%s\"\n", value);
      break;
    }
  }
}

void mc_print_trx_end(FILE *f, const mc_trx *t, size_t no) {
  fprintf(f, "decision%s: %s", no == 0 ? " (whole session)" : "",
          mc_decision_name(t->decision));
  if (t->reply != NULL)
    fprintf(f, " \"%s\"", t->reply);
  fputc('\n', f);
  if (!t->has_result)
    return;
  const mc_result *r = &t->result;
  fputs("--- resulting message\n", f);
  fprintf(f, "MAIL FROM:%s%s%s\n", r->from, r->from_args ? " " : "",
          r->from_args ? r->from_args : "");
  for (size_t i = 0; i < r->rcpts.n; i++)
    fprintf(f, "RCPT TO:%s\n", r->rcpts.v[i]);
  if (r->quarantine != NULL)
    fprintf(f, "(quarantined: %s)\n", r->quarantine);
  fputc('\n', f);
  for (size_t i = 0; i < r->n_f; i++)
    fprintf(f, "%s: %s\n", r->f[i].name, r->f[i].value);
  fputc('\n', f);
  /* The body with LF line ends. */
  for (size_t i = 0; i < r->body_len; i++) {
    if (r->body[i] == '\r' && i + 1 < r->body_len && r->body[i + 1] == '\n')
      continue;
    fputc(r->body[i], f);
  }
  fputs("--- end of message\n", f);
}

/* ---- JSON ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, cp = c & 0x07;
  else
    return 0;
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return len;
}

/* A JSON string; NULL is null.  UTF-8 passes through, invalid bytes become
 * U+FFFD. */
static void json_str(FILE *f, const char *s) {
  if (s == NULL) {
    fputs("null", f);
    return;
  }
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s);
  fputc('"', f);
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      fputc('\\', f);
      fputc(c, f);
    } else if (c == '\n') {
      fputs("\\n", f);
    } else if (c == '\r') {
      fputs("\\r", f);
    } else if (c == '\t') {
      fputs("\\t", f);
    } else if (c < 0x20 || c == 0x7F) {
      fprintf(f, "\\u%04x", c);
    } else if (c >= 0x80) {
      size_t len = utf8_len(p + i, n - i);
      if (len == 0) {
        fputs("\\ufffd", f);
        i++;
        continue;
      }
      fwrite(p + i, 1, len, f);
      i += len;
      continue;
    } else {
      fputc(c, f);
    }
    i++;
  }
  fputc('"', f);
}

static void json_bits(FILE *f, uint32_t mask, const char *(*name)(unsigned)) {
  int first = 1;
  fputc('[', f);
  for (unsigned i = 0; i < 32; i++) {
    if (!(mask & (1u << i)))
      continue;
    char hex[16];
    const char *n = name(i);
    if (n == NULL) {
      snprintf(hex, sizeof hex, "0x%x", 1u << i);
      n = hex;
    }
    fputs(first ? "" : ",", f);
    json_str(f, n);
    first = 0;
  }
  fputc(']', f);
}

static void json_negotiation(FILE *f, const mc_report *rep) {
  const milter_client_nego *n = &rep->nego;
  if (!rep->negotiated) {
    fputs("null", f);
    return;
  }
  fprintf(f, "{\"version\":%u,\"actions\":%u,\"action_names\":",
          (unsigned)n->version, (unsigned)n->actions);
  json_bits(f, n->actions, action_name);
  fprintf(f, ",\"steps\":%u,\"step_names\":", (unsigned)n->protocol);
  json_bits(f, n->protocol, step_name);
  fprintf(f, ",\"data_size\":%u,\"macros\":{", (unsigned)n->data_size);
  int first = 1;
  for (int i = 0; i < MILTER_M_COUNT; i++) {
    if (n->symlist[i] == NULL)
      continue;
    fprintf(f, "%s\"%s\":", first ? "" : ",", symlist_stages[i]);
    json_str(f, n->symlist[i]);
    first = 0;
  }
  fputs("}}", f);
}

static void json_event(FILE *f, const mc_event *e) {
  fputs("{\"event\":", f);
  json_str(f, mc_cmd_short(e->cmd));
  if (e->cmd == MILTER_CMD_MACRO) {
    fputs(",\"for\":", f);
    json_str(f, mc_cmd_short(e->for_cmd));
  }
  fputs(",\"arg\":", f);
  json_str(f, e->arg);
  fputs(",\"status\":", f);
  json_str(f, status_name(e->status));
  fputs(",\"reply\":", f);
  json_str(f, e->status == MILTER_CLIENT_REPLIED ? mc_reply_short(e->reply)
                                                 : NULL);
  fputs(",\"text\":", f);
  json_str(f, e->text);
  if (e->cmd == MILTER_CMD_BODY)
    fprintf(f, ",\"packets\":%u", e->chunks);
  if (e->progress > 0)
    fprintf(f, ",\"progress\":%u", e->progress);
  if (e->cmd == MILTER_CMD_RCPT)
    fprintf(f, ",\"rcpt_rejected\":%s", e->rcpt_rejected ? "true" : "false");
  fputc('}', f);
}

static void json_action(FILE *f, const milter_action *a) {
  fputs("{\"type\":", f);
  json_str(f, action_type_name(a->type));
  switch (a->type) {
  case MILTER_ACTION_INSHEADER:
  case MILTER_ACTION_CHGHEADER:
    fprintf(f, ",\"index\":%u", (unsigned)a->index);
    /* fall through */
  case MILTER_ACTION_ADDHEADER:
    fputs(",\"name\":", f);
    json_str(f, a->name);
    fputs(",\"value\":", f);
    json_str(f, a->value ? a->value : "");
    break;
  case MILTER_ACTION_ADDRCPT:
  case MILTER_ACTION_DELRCPT:
    fputs(",\"rcpt\":", f);
    json_str(f, a->name);
    break;
  case MILTER_ACTION_ADDRCPT_PAR:
    fputs(",\"rcpt\":", f);
    json_str(f, a->name);
    fputs(",\"args\":", f);
    json_str(f, a->value);
    break;
  case MILTER_ACTION_CHGFROM:
    fputs(",\"from\":", f);
    json_str(f, a->name);
    fputs(",\"args\":", f);
    json_str(f, a->value);
    break;
  case MILTER_ACTION_REPLBODY:
    fprintf(f, ",\"body_bytes\":%zu,\"packets\":%u", a->body_len, a->chunks);
    break;
  case MILTER_ACTION_QUARANTINE:
    fputs(",\"reason\":", f);
    json_str(f, a->value ? a->value : "");
    break;
  }
  fputc('}', f);
}

static void json_result(FILE *f, const mc_trx *t) {
  if (!t->has_result) {
    fputs("null", f);
    return;
  }
  const mc_result *r = &t->result;
  fputs("{\"from\":", f);
  json_str(f, r->from);
  fputs(",\"from_args\":", f);
  json_str(f, r->from_args);
  fputs(",\"rcpts\":[", f);
  for (size_t i = 0; i < r->rcpts.n; i++) {
    fputs(i ? "," : "", f);
    json_str(f, r->rcpts.v[i]);
  }
  fputs("],\"headers\":[", f);
  for (size_t i = 0; i < r->n_f; i++) {
    fputs(i ? ",[" : "[", f);
    json_str(f, r->f[i].name);
    fputc(',', f);
    json_str(f, r->f[i].value);
    fputc(']', f);
  }
  fprintf(f, "],\"body_bytes\":%zu,\"quarantine\":", r->body_len);
  json_str(f, r->quarantine);
  fputc('}', f);
}

static void json_trx(FILE *f, const mc_trx *t, int with_result) {
  fputs("{\"events\":[", f);
  for (size_t i = 0; i < t->n_ev; i++) {
    fputs(i ? ",\n    " : "\n    ", f);
    json_event(f, &t->ev[i]);
  }
  fputs("],\n   \"actions\":[", f);
  for (size_t i = 0; i < t->eom.n_actions; i++) {
    fputs(i ? ",\n    " : "\n    ", f);
    json_action(f, &t->eom.actions[i]);
  }
  fputs("],\n   \"decision\":", f);
  json_str(f, mc_decision_name(t->decision));
  fputs(",\"reply\":", f);
  json_str(f, t->reply);
  if (with_result) {
    fputs(",\n   \"result\":", f);
    json_result(f, t);
  }
  fputc('}', f);
}

void mc_print_json(FILE *f, const mc_opts *o, const mc_report *rep) {
  fputs("{\"milter\":", f);
  json_str(f, o->spec);
  fputs(",\n \"negotiation\":", f);
  json_negotiation(f, rep);
  fputs(",\n \"connection\":", f);
  json_trx(f, &rep->conn, 0);
  fputs(",\n \"transactions\":[", f);
  for (size_t i = 0; i < rep->n_trx; i++) {
    fputs(i ? ",\n  " : "\n  ", f);
    json_trx(f, &rep->trx[i], 1);
  }
  fputs("],\n \"decision\":", f);
  json_str(f, rep->error ? "error" : mc_decision_name(rep->decision));
  fputs(",\"reply\":", f);
  json_str(f, rep->reply);
  fprintf(f, ",\"exit\":%d,\"error\":", mc_report_exit(rep));
  json_str(f, rep->errmsg);
  fputs("}\n", f);
}
