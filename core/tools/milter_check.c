/*
 * milter_check.c -- milter-check: play SMTP transactions against a milter
 * and print what it did.
 *
 *   milter-check [options] SOCKETSPEC [MESSAGE-FILE|-]
 *
 * See mc_usage() (check_opts.c) for the options and the exit status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter_check.h"

/* Read all of f into *out (NUL-terminated; *len without it). */
static int slurp(FILE *f, char **out, size_t *len) {
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  if (buf == NULL)
    return -1;
  for (;;) {
    if (cap - n < 2) {
      char *b2 = realloc(buf, cap * 2);
      if (b2 == NULL) {
        free(buf);
        return -1;
      }
      buf = b2;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0)
      break;
  }
  if (ferror(f)) {
    free(buf);
    return -1;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

/* The message from the file or stdin; 0, or an exit status with a message
 * on stderr. */
static int load_message(const char *path, mc_msg *m) {
  int from_stdin = path == NULL || strcmp(path, "-") == 0;
  FILE *f = from_stdin ? stdin : fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "milter-check: cannot open message file '%s': %s\n", path,
            strerror(errno));
    return MC_EXIT_NOINPUT;
  }
  char *buf = NULL;
  size_t len = 0;
  int rc = slurp(f, &buf, &len);
  int err = errno;
  if (!from_stdin)
    fclose(f);
  if (rc < 0) {
    fprintf(stderr, "milter-check: cannot read %s: %s\n",
            from_stdin ? "the message from stdin" : path, strerror(err));
    return MC_EXIT_NOINPUT;
  }
  rc = mc_msg_parse(m, buf, len);
  free(buf);
  if (rc < 0) {
    fprintf(stderr, "milter-check: out of memory\n");
    return MC_EXIT_ERROR;
  }
  return 0;
}

int main(int argc, char **argv) {
  mc_opts o;
  char err[512] = "";
  int rc = mc_opts_parse(&o, argc, argv, stdout, err, sizeof err);
  if (rc != 0) {
    mc_opts_free(&o);
    if (rc > 0)
      return 0; /* --help, --version */
    fprintf(stderr, "milter-check: %s (try --help)\n", err);
    return MC_EXIT_USAGE;
  }

  mc_msg m;
  memset(&m, 0, sizeof m);
  int status = load_message(o.msgfile, &m);
  if (status != 0) {
    mc_opts_free(&o);
    return status;
  }

  mc_report rep;
  mc_run(&o, &m, &rep);
  status = mc_report_exit(&rep);
  if (o.json)
    mc_print_json(stdout, &o, &rep);
  if (rep.error != 0)
    fprintf(stderr, "milter-check: %s\n", rep.errmsg ? rep.errmsg : "error");
  fflush(stdout);

  mc_report_free(&rep);
  mc_msg_free(&m);
  mc_opts_free(&o);
  return status;
}
