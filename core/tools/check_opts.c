/*
 * check_opts.c -- milter-check's command line (getopt_long) -> mc_opts.
 * Every usage error is one line naming the bad argument.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mailfilter/milter.h>
#include <mailfilter/version.h>

#include "milter_check.h"

/* ---- Small helpers shared by the tool ---------------------------------- */

char *mc_strndup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL)
    return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *mc_strdup(const char *s) {
  return s == NULL ? NULL : mc_strndup(s, strlen(s));
}

int mc_strv_push(mc_strv *sv, const char *s, size_t len) {
  if (sv->n == sv->cap) {
    size_t cap = sv->cap ? sv->cap * 2 : 4;
    char **v = realloc(sv->v, cap * sizeof *v);
    if (v == NULL)
      return MILTER_E_NOMEM;
    sv->v = v;
    sv->cap = cap;
  }
  char *d = mc_strndup(s, len == (size_t)-1 ? strlen(s) : len);
  if (d == NULL)
    return MILTER_E_NOMEM;
  sv->v[sv->n++] = d;
  return 0;
}

void mc_strv_free(mc_strv *sv) {
  for (size_t i = 0; i < sv->n; i++)
    free(sv->v[i]);
  free(sv->v);
  memset(sv, 0, sizeof *sv);
}

char *mc_strv_join(const mc_strv *sv, const char *sep) {
  if (sv->n == 0)
    return NULL;
  size_t len = 0, seplen = strlen(sep);
  for (size_t i = 0; i < sv->n; i++)
    len += strlen(sv->v[i]) + seplen;
  char *s = malloc(len + 1), *p = s;
  if (s == NULL)
    return NULL;
  for (size_t i = 0; i < sv->n; i++) {
    if (i > 0) {
      memcpy(p, sep, seplen);
      p += seplen;
    }
    size_t n = strlen(sv->v[i]);
    memcpy(p, sv->v[i], n);
    p += n;
  }
  *p = '\0';
  return s;
}

/* ---- Stages ------------------------------------------------------------- */

static const char *const stage_names[MC_ST_COUNT] = {
    "connect", "helo", "mail", "rcpt", "data", "eoh", "eom", "header", "body"};

static const uint8_t stage_cmds[MC_ST_COUNT] = {
    MILTER_CMD_CONNECT, MILTER_CMD_HELO,   MILTER_CMD_MAIL,
    MILTER_CMD_RCPT,    MILTER_CMD_DATA,   MILTER_CMD_EOH,
    MILTER_CMD_EOB,     MILTER_CMD_HEADER, MILTER_CMD_BODY};

const char *mc_stage_name(mc_stage st) {
  return st < MC_ST_COUNT ? stage_names[st] : "?";
}

uint8_t mc_stage_cmd(mc_stage st) {
  return st < MC_ST_COUNT ? stage_cmds[st] : 0;
}

/* ---- Usage -------------------------------------------------------------- */

void mc_usage(FILE *f) {
  fputs(
      "usage: milter-check [options] SOCKETSPEC [MESSAGE-FILE|-]\n"
      "\n"
      "Play SMTP transactions against the milter at SOCKETSPEC\n"
      "(unix:/path, inet:PORT@HOST, inet6:PORT@HOST) as an MTA would, and\n"
      "print the negotiation, every reply and action, and the resulting\n"
      "message.  The message is read from MESSAGE-FILE, or stdin when it is\n"
      "'-' or missing.\n"
      "\n"
      "SMTP session\n"
      "  --client-addr IP     client address: IPv4, IPv6, unix:PATH or\n"
      "                       unknown (default 127.0.0.1)\n"
      "  --client-port N      client port (default 0)\n"
      "  --client-name NAME   client host name (default localhost)\n"
      "  --helo NAME          HELO/EHLO argument (default: the client name)\n"
      "  --from ADDR          MAIL FROM address (default "
      "<sender@example.org>)\n"
      "  --from-arg ARG       ESMTP argument of MAIL FROM (repeatable)\n"
      "  --rcpt ADDR          RCPT TO address (repeatable; default\n"
      "                       <recipient@example.org>)\n"
      "  --rcpt-arg ARG       ESMTP argument of the last --rcpt (repeatable)\n"
      "  --macro STAGE:NAME=VALUE\n"
      "                       send macro NAME before STAGE: connect, helo,\n"
      "                       mail, rcpt, data, eoh, eom, header, body\n"
      "                       (a long NAME gets braces: auth_authen =\n"
      "                       {auth_authen}; repeatable)\n"
      "\n"
      "Protocol\n"
      "  --protocol N         protocol version offered, 2..6 (default 6)\n"
      "  --actions HEX|all    actions offered (default: all of the version)\n"
      "  --steps HEX          protocol step bits offered (default: all of\n"
      "                       the version)\n"
      "  --data-size SIZE     64k, 256k or 1m: largest packet offered\n"
      "                       (default 1m)\n"
      "  --count N            transactions per connection (default 1)\n"
      "  --timeout SEC        timeout for connecting, for each reply and\n"
      "                       for end of message (defaults 30, 30, 300)\n"
      "\n"
      "Output\n"
      "  --json               one JSON object on stdout, for scripts\n"
      "  --quiet              no output; only the exit status\n"
      "  --help               this text\n"
      "  --version            the program's and the library's versions\n"
      "\n"
      "Exit status (of the last transaction): 0 accept, 1 reject,\n"
      "2 tempfail, 3 discard, 4 quarantine, 64 bad arguments,\n"
      "66 message file unreadable, 70 connection failed or the milter\n"
      "broke the protocol.  See milter-check(1).\n",
      f);
}

/* ---- Parsing -------------------------------------------------------------*/

enum {
  OPT_CLIENT_ADDR = 256,
  OPT_CLIENT_PORT,
  OPT_CLIENT_NAME,
  OPT_HELO,
  OPT_FROM,
  OPT_FROM_ARG,
  OPT_RCPT,
  OPT_RCPT_ARG,
  OPT_MACRO,
  OPT_PROTOCOL,
  OPT_ACTIONS,
  OPT_STEPS,
  OPT_DATA_SIZE,
  OPT_COUNT,
  OPT_TIMEOUT,
  OPT_JSON,
  OPT_QUIET,
  OPT_HELP,
  OPT_VERSION
};

static const struct option long_opts[] = {
    {"client-addr", required_argument, NULL, OPT_CLIENT_ADDR},
    {"client-port", required_argument, NULL, OPT_CLIENT_PORT},
    {"client-name", required_argument, NULL, OPT_CLIENT_NAME},
    {"helo", required_argument, NULL, OPT_HELO},
    {"from", required_argument, NULL, OPT_FROM},
    {"from-arg", required_argument, NULL, OPT_FROM_ARG},
    {"rcpt", required_argument, NULL, OPT_RCPT},
    {"rcpt-arg", required_argument, NULL, OPT_RCPT_ARG},
    {"macro", required_argument, NULL, OPT_MACRO},
    {"protocol", required_argument, NULL, OPT_PROTOCOL},
    {"actions", required_argument, NULL, OPT_ACTIONS},
    {"steps", required_argument, NULL, OPT_STEPS},
    {"data-size", required_argument, NULL, OPT_DATA_SIZE},
    {"count", required_argument, NULL, OPT_COUNT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0}};

static int bad(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* Unsigned decimal in [lo, hi]. */
static int parse_uint(const char *s, unsigned long lo, unsigned long hi,
                      unsigned long *out) {
  if (s[0] < '0' || s[0] > '9')
    return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* Hexadecimal with or without 0x, 32 bits. */
static int parse_hex(const char *s, uint32_t *out) {
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
    s += 2;
  if (*s == '\0' || strspn(s, "0123456789abcdefABCDEF") != strlen(s) ||
      strlen(s) > 8)
    return -1;
  *out = (uint32_t)strtoul(s, NULL, 16);
  return 0;
}

/* "<a@b>" for "a@b"; "<>" stays. */
static char *envelope_addr(const char *s) {
  if (s[0] == '<')
    return mc_strdup(s);
  size_t n = strlen(s);
  char *d = malloc(n + 3);
  if (d == NULL)
    return NULL;
  d[0] = '<';
  memcpy(d + 1, s, n);
  d[n + 1] = '>';
  d[n + 2] = '\0';
  return d;
}

/* STAGE:NAME=VALUE */
static int add_macro(mc_opts *o, const char *arg, char *err, size_t errlen) {
  const char *colon = strchr(arg, ':');
  const char *eq = colon ? strchr(colon + 1, '=') : NULL;
  if (colon == NULL || eq == NULL || eq == colon + 1)
    return bad(err, errlen,
               "--macro '%s': expected STAGE:NAME=VALUE (e.g. "
               "mail:{auth_authen}=alice)",
               arg);
  size_t sl = (size_t)(colon - arg);
  int st = -1;
  for (int i = 0; i < MC_ST_COUNT; i++)
    if (strlen(stage_names[i]) == sl &&
        strncasecmp(arg, stage_names[i], sl) == 0)
      st = i;
  if (st < 0)
    return bad(err, errlen,
               "--macro '%s': unknown stage '%.*s' (connect, helo, mail, "
               "rcpt, data, eoh, eom, header, body)",
               arg, (int)sl, arg);
  const char *name = colon + 1;
  size_t nl = (size_t)(eq - name);
  char braced[256];
  if (nl > 1 && name[0] != '{') {
    if (nl + 3 > sizeof braced)
      return bad(err, errlen, "--macro '%s': name too long", arg);
    snprintf(braced, sizeof braced, "{%.*s}", (int)nl, name);
    name = braced;
    nl += 2;
  }
  if (mc_strv_push(&o->macros[st], name, nl) < 0 ||
      mc_strv_push(&o->macros[st], eq + 1, (size_t)-1) < 0)
    return bad(err, errlen, "out of memory");
  return 0;
}

static int set_client_addr(mc_opts *o, const char *arg, char *err,
                           size_t errlen) {
  unsigned char buf[16];
  const char *addr = arg;
  if (strcasecmp(arg, "unknown") == 0) {
    o->family = MILTER_FAMILY_UNKNOWN;
  } else if (strncmp(arg, "unix:", 5) == 0) {
    o->family = MILTER_FAMILY_UNIX;
    addr = arg + 5;
  } else if (inet_pton(AF_INET, arg, buf) == 1) {
    o->family = MILTER_FAMILY_INET;
  } else if (inet_pton(AF_INET6, arg, buf) == 1) {
    o->family = MILTER_FAMILY_INET6;
  } else {
    return bad(err, errlen,
               "--client-addr '%s': not an IPv4 or IPv6 address, "
               "unix:PATH or unknown",
               arg);
  }
  free(o->client_addr);
  if ((o->client_addr = mc_strdup(addr)) == NULL)
    return bad(err, errlen, "out of memory");
  return 0;
}

static int replace(char **dst, char *s, char *err, size_t errlen) {
  free(*dst);
  *dst = s;
  return s == NULL ? bad(err, errlen, "out of memory") : 0;
}

/* Steps a version knows, as Postfix offers them. */
static uint32_t steps_of_version(uint32_t v) {
  if (v <= 2)
    return 0x3Fu; /* NOCONNECT .. NOHDRS */
  if (v == 3)
    return 0x7Fu; /* + NOEOH */
  if (v < 6)
    return 0x3FFu; /* + NR_HDR, NOUNKNOWN, NODATA */
  return MILTER_P_ALL_STEPS;
}

int mc_opts_parse(mc_opts *o, int argc, char **argv, FILE *out, char *err,
                  size_t errlen) {
  memset(o, 0, sizeof *o);
  milter_client_opts_init(&o->copts);
  o->family = MILTER_FAMILY_INET;
  o->count = 1;
  if ((o->client_addr = mc_strdup("127.0.0.1")) == NULL)
    return bad(err, errlen, "out of memory");

  int have_actions = 0, have_steps = 0, rc = 0;
  uint32_t actions = 0, steps = 0;
  uint32_t mds = MILTER_P_MDS_256K | MILTER_P_MDS_1M;
  unsigned long v;
  double sec;
  char *end;

  opterr = 0;
  optind = 1;
  int c;
  while (rc == 0 && (c = getopt_long(argc, argv, ":", long_opts, NULL)) != -1) {
    switch (c) {
    case OPT_CLIENT_ADDR:
      rc = set_client_addr(o, optarg, err, errlen);
      break;
    case OPT_CLIENT_PORT:
      if (parse_uint(optarg, 0, 65535, &v) < 0)
        return bad(err, errlen, "--client-port '%s': not a port (0..65535)",
                   optarg);
      o->client_port = (uint16_t)v;
      break;
    case OPT_CLIENT_NAME:
      rc = replace(&o->client_name, mc_strdup(optarg), err, errlen);
      break;
    case OPT_HELO:
      rc = replace(&o->helo, mc_strdup(optarg), err, errlen);
      break;
    case OPT_FROM:
      rc = replace(&o->from, envelope_addr(optarg), err, errlen);
      break;
    case OPT_FROM_ARG:
      if (mc_strv_push(&o->from_args, optarg, (size_t)-1) < 0)
        return bad(err, errlen, "out of memory");
      break;
    case OPT_RCPT: {
      mc_rcpt *r = realloc(o->rcpts, (o->n_rcpts + 1) * sizeof *r);
      if (r == NULL)
        return bad(err, errlen, "out of memory");
      o->rcpts = r;
      memset(&r[o->n_rcpts], 0, sizeof *r);
      if ((r[o->n_rcpts].addr = envelope_addr(optarg)) == NULL)
        return bad(err, errlen, "out of memory");
      o->n_rcpts++;
      break;
    }
    case OPT_RCPT_ARG:
      if (o->n_rcpts == 0)
        return bad(err, errlen, "--rcpt-arg '%s': no --rcpt before it", optarg);
      if (mc_strv_push(&o->rcpts[o->n_rcpts - 1].args, optarg, (size_t)-1) < 0)
        return bad(err, errlen, "out of memory");
      break;
    case OPT_MACRO:
      rc = add_macro(o, optarg, err, errlen);
      break;
    case OPT_PROTOCOL:
      if (parse_uint(optarg, 2, 6, &v) < 0)
        return bad(err, errlen,
                   "--protocol '%s': protocol version must be 2..6", optarg);
      o->copts.version = (uint32_t)v;
      break;
    case OPT_ACTIONS:
      if (strcasecmp(optarg, "all") == 0)
        actions = MILTER_ACT_ALL;
      else if (parse_hex(optarg, &actions) < 0 || (actions & ~MILTER_ACT_ALL))
        return bad(err, errlen,
                   "--actions '%s': expected 'all' or hex bits within 0x%x",
                   optarg, (unsigned)MILTER_ACT_ALL);
      have_actions = 1;
      break;
    case OPT_STEPS:
      if (parse_hex(optarg, &steps) < 0 ||
          (steps & ~(MILTER_P_ALL_STEPS | mds)))
        return bad(err, errlen, "--steps '%s': expected hex bits within 0x%x",
                   optarg, (unsigned)(MILTER_P_ALL_STEPS | mds));
      have_steps = 1;
      break;
    case OPT_DATA_SIZE:
      if (strcasecmp(optarg, "64k") == 0)
        mds = 0;
      else if (strcasecmp(optarg, "256k") == 0)
        mds = MILTER_P_MDS_256K;
      else if (strcasecmp(optarg, "1m") == 0)
        mds = MILTER_P_MDS_256K | MILTER_P_MDS_1M;
      else
        return bad(err, errlen, "--data-size '%s': expected 64k, 256k or 1m",
                   optarg);
      break;
    case OPT_COUNT:
      if (parse_uint(optarg, 1, 100000, &v) < 0)
        return bad(err, errlen, "--count '%s': expected 1..100000", optarg);
      o->count = (unsigned)v;
      break;
    case OPT_TIMEOUT:
      errno = 0;
      sec = strtod(optarg, &end);
      if (errno != 0 || end == optarg || *end != '\0' || !(sec > 0) ||
          sec > 86400)
        return bad(err, errlen, "--timeout '%s': expected seconds (0..86400]",
                   optarg);
      o->copts.connect_timeout_ms = (uint64_t)(sec * 1000.0 + 0.5);
      o->copts.command_timeout_ms = o->copts.connect_timeout_ms;
      o->copts.eom_timeout_ms = o->copts.connect_timeout_ms;
      break;
    case OPT_JSON:
      o->json = 1;
      break;
    case OPT_QUIET:
      o->quiet = 1;
      break;
    case OPT_HELP:
      mc_usage(out);
      return 1;
    case OPT_VERSION:
      /* "--version N" was the protocol version before 0.1: say so rather
       * than take N as the SOCKETSPEC. */
      if (optind < argc && parse_uint(argv[optind], 0, 99, &v) == 0)
        return bad(err, errlen,
                   "--version takes no argument: the protocol version is "
                   "--protocol %s",
                   argv[optind]);
      fprintf(out, "milter-check (mailfilter) %s\nlibmfcore %s\n",
              MF_VERSION_STRING, milter_version());
      return 1;
    case ':':
      return bad(err, errlen, "option '%s' needs an argument",
                 argv[optind - 1]);
    default:
      if (optopt != 0)
        return bad(err, errlen, "unknown option '-%c'", optopt);
      return bad(err, errlen, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (rc != 0)
    return rc;

  int left = argc - optind;
  if (left < 1)
    return bad(err, errlen, "missing SOCKETSPEC (e.g. unix:/run/milter.sock)");
  if (left > 2)
    return bad(err, errlen, "unexpected argument '%s'", argv[optind + 2]);
  if ((o->spec = mc_strdup(argv[optind])) == NULL)
    return bad(err, errlen, "out of memory");
  if (left == 2 && (o->msgfile = mc_strdup(argv[optind + 1])) == NULL)
    return bad(err, errlen, "out of memory");
  if (o->spec[0] == '\0')
    return bad(err, errlen, "empty SOCKETSPEC");

  /* Defaults that depend on other options. */
  uint32_t ver = o->copts.version;
  o->copts.actions = have_actions ? actions
                     : ver >= 6   ? MILTER_ACT_ALL
                                  : MILTER_ACT_V2;
  o->copts.protocol = ((have_steps ? steps : steps_of_version(ver)) &
                       ~(MILTER_P_MDS_256K | MILTER_P_MDS_1M)) |
                      mds;
  if (o->client_name == NULL &&
      (o->client_name = mc_strdup("localhost")) == NULL)
    return bad(err, errlen, "out of memory");
  if (o->helo == NULL && (o->helo = mc_strdup(o->client_name)) == NULL)
    return bad(err, errlen, "out of memory");
  if (o->from == NULL && (o->from = mc_strdup("<sender@example.org>")) == NULL)
    return bad(err, errlen, "out of memory");
  if (o->n_rcpts == 0) {
    if ((o->rcpts = calloc(1, sizeof *o->rcpts)) == NULL ||
        (o->rcpts[0].addr = mc_strdup("<recipient@example.org>")) == NULL)
      return bad(err, errlen, "out of memory");
    o->n_rcpts = 1;
  }
  return 0;
}

void mc_opts_free(mc_opts *o) {
  free(o->spec);
  free(o->msgfile);
  free(o->client_addr);
  free(o->client_name);
  free(o->helo);
  free(o->from);
  mc_strv_free(&o->from_args);
  for (size_t i = 0; i < o->n_rcpts; i++) {
    free(o->rcpts[i].addr);
    mc_strv_free(&o->rcpts[i].args);
  }
  free(o->rcpts);
  for (int i = 0; i < MC_ST_COUNT; i++)
    mc_strv_free(&o->macros[i]);
  memset(o, 0, sizeof *o);
}
