/*
 * example_cli.h -- the command line the three examples share:
 *
 *   mailfilter-NAME [--syslog[=FACILITY]] [--log-level LEVEL] SOCKETSPEC
 *   mailfilter-NAME --help | --version
 *
 * Logging goes to stderr by default (with the journal's <N> priority
 * prefixes when run by systemd, see <mailfilter/milter_log.h>); --syslog
 * sends it to syslog(3) as "mailfilter-NAME[PID]" with FACILITY (default
 * mail).  --log-level: error, warning, info (default) or debug.
 */
#ifndef MAILFILTER_EXAMPLE_CLI_H
#define MAILFILTER_EXAMPLE_CLI_H

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <mailfilter/milter.h>
#include <mailfilter/milter_log.h>
#include <mailfilter/version.h>

typedef struct example_cli {
  const char *name;    /* "external": installed as mailfilter-external */
  const char *summary; /* one line: what the filter does */
  const char *spec;    /* example SOCKETSPEC for the usage text */
} example_cli;

static void example_usage(const example_cli *c, FILE *f) {
  fprintf(
      f,
      "usage: mailfilter-%s [options] SOCKETSPEC\n"
      "\n"
      "%s\n"
      "\n"
      "SOCKETSPEC: inet:PORT@HOST, inet6:PORT@HOST, unix:/path,\n"
      "  systemd (sockets passed by socket activation) or fd:N,\n"
      "  e.g. %s\n"
      "\n"
      "Options\n"
      "  --syslog[=FACILITY]  log to syslog instead of stderr; FACILITY\n"
      "                       mail (default), daemon, user, local0..local7\n"
      "  --log-level LEVEL    error, warning, info (default) or debug\n"
      "  --help               this text\n"
      "  --version            print the version and exit\n"
      "\n"
      "Runs until SIGTERM or SIGINT; messages in progress are finished.\n"
      "Exit status: 0 stopped by a signal, 1 could not start, 2 bad\n"
      "arguments.  See mailfilter-%s(8).\n",
      c->name, c->summary, c->spec, c->name);
}

/* A bad option value: one line on stderr, exit status 2. */
static int example_bad_value(const example_cli *c, const char *opt,
                             const char *value, const char *expected) {
  fprintf(stderr, "mailfilter-%s: %s%s: expected %s\n", c->name, opt, value,
          expected);
  return 2;
}

/* Parse argv into *so (logging) and *spec.  Returns -1 to go on and
 * serve, or the exit status: 0 after --help/--version, 2 on a usage error
 * (with a line on stderr). */
static int example_cli_parse(const example_cli *c, int argc, char **argv,
                             milter_server_opts *so, const char **spec) {
  static const struct option opts[] = {
      {"syslog", optional_argument, NULL, 's'},
      {"log-level", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  static char ident[64];
  int facility = -1, level, ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
    switch (ch) {
    case 's':
      facility = milter_log_facility_parse(optarg ? optarg : "mail");
      if (facility < 0)
        return example_bad_value(c, "--syslog=", optarg,
                                 "mail, daemon, user, local0..local7");
      break;
    case 'l':
      if ((level = milter_log_level_parse(optarg)) < 0)
        return example_bad_value(c, "--log-level ", optarg,
                                 "error, warning, info or debug");
      so->log_level = (milter_log_level)level;
      break;
    case 'h':
      example_usage(c, stdout);
      return 0;
    case 'V':
      printf("mailfilter-%s (mailfilter) %s\nlibmfcore %s\n", c->name,
             MF_VERSION_STRING, milter_version());
      return 0;
    default:
      fprintf(stderr, "mailfilter-%s: %s '%s' (try --help)\n", c->name,
              ch == ':' ? "missing argument for" : "unknown option",
              argv[optind - 1]);
      return 2;
    }
  }
  if (argc - optind != 1) {
    fprintf(stderr, "mailfilter-%s: %s (try --help)\n", c->name,
            argc - optind < 1 ? "missing SOCKETSPEC" : "too many arguments");
    return 2;
  }
  *spec = argv[optind];
  if (facility >= 0) {
    snprintf(ident, sizeof ident, "mailfilter-%s", c->name);
    milter_log_use_syslog(so, ident, facility);
  }
  return -1;
}

#endif
