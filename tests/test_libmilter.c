/* test_libmilter.c -- interoperability: our MTA-side client (core) against
 * a filter built on Debian's libmilter (tests/libmilter_ref.c), the library
 * sendmail and Postfix are tested with.  Checks the negotiation, every
 * event as libmilter decoded it (from the reference filter's log), every
 * reply and every modification action as our client decoded it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mailfilter/milter_client.h>
#include <mailfilter/milter_proto.h>

#include "testutil.h"

extern char **environ;

typedef struct ref {
  pid_t pid;
  char sock[128];
  char spec[160];
  char log[128];
} ref;

static char ref_path[512];

static int have_ref(void) {
  const char *b = getenv("MF_BUILD_DIR");
  snprintf(ref_path, sizeof ref_path, "%s/tests/libmilter_ref", b ? b : ".");
  return access(ref_path, X_OK) == 0;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return strdup("");
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strdup(buf);
}

static void wait_log(const ref *r, const char *needle) {
  for (int i = 0; i < 500; i++) {
    char *l = slurp(r->log);
    int ok = strstr(l, needle) != NULL;
    free(l);
    if (ok)
      return;
    usleep(10000);
  }
  char *l = slurp(r->log);
  fail_msg("no \"%s\" in the libmilter log:\n%s", needle, l);
}

static void ref_start(ref *r, const char *mode) {
  static int n;
  snprintf(r->sock, sizeof r->sock, "/tmp/mf-lm-%d-%d.sock", (int)getpid(), n);
  snprintf(r->log, sizeof r->log, "/tmp/mf-lm-%d-%d.log", (int)getpid(), n++);
  snprintf(r->spec, sizeof r->spec, "unix:%s", r->sock);
  unlink(r->sock);
  char *argv[] = {ref_path, r->spec, (char *)mode, r->log, NULL};
  assert_int_equal(posix_spawn(&r->pid, ref_path, NULL, NULL, argv, environ),
                   0);
  wait_log(r, "ready");
}

static void ref_stop(ref *r) {
  kill(r->pid, SIGTERM);
  int st;
  waitpid(r->pid, &st, 0);
  unlink(r->sock);
  unlink(r->log);
}

static milter_client *open_to(const ref *r, milter_client_nego *n) {
  milter_client *c = NULL;
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.command_timeout_ms = 10000;
  o.eom_timeout_ms = 10000;
  assert_int_equal(milter_client_new(&c, &o), 0);
  OK(milter_client_open(c, r->spec));
  OK(milter_client_negotiate(c, n));
  return c;
}

static void test_every_action(void **state) {
  (void)state;
  if (!have_ref())
    skip();
  ref r;
  ref_start(&r, "all");
  milter_client_nego n;
  milter_client *c = open_to(&r, &n);
  assert_int_equal(n.version, 6);
  assert_int_equal(n.actions, MILTER_ACT_ALL);
  assert_int_equal(n.protocol & MILTER_P_ALL_NR, 0); /* answers everything */
  /* libmilter decides the data size itself (Debian's: 64K) */
  assert_true(n.data_size == MILTER_DATA_64K ||
              n.data_size == MILTER_DATA_256K || n.data_size == MILTER_DATA_1M);

  milter_client_result res = {0};
  const char *cm[] = {"j", "mx.example", "{daemon_name}", "smtpd"};
  OK(milter_client_macro(c, MILTER_CMD_CONNECT, 2, cm));
  OK(milter_client_connect(c, "client.example", MILTER_FAMILY_INET, 4321,
                           "192.0.2.1", &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_helo(c, "client.example", &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  const char *mm[] = {"{auth_authen}", "alice", "i", "QID1"};
  OK(milter_client_macro(c, MILTER_CMD_MAIL, 2, mm));
  const char *margs[] = {"SIZE=100", "BODY=8BITMIME"};
  OK(milter_client_mail(c, "<a@example.org>", 2, margs, &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_rcpt(c, "<b@example.net>", 0, NULL, &res));
  const char *rargs[] = {"NOTIFY=NEVER"};
  OK(milter_client_rcpt(c, "<c@example.net>", 1, rargs, &res));
  OK(milter_client_data(c, &res));
  OK(milter_client_header(c, "Subject", "hello", &res));
  OK(milter_client_header(c, "X-Old", "old\n\tfolded", &res));
  OK(milter_client_eoh(c, &res));
  size_t blen = 200000;
  char *body = malloc(blen);
  memset(body, 'b', blen);
  OK(milter_client_body(c, body, blen, &res));
  free(body);
  assert_int_equal(res.chunks_sent, (blen + n.data_size - 1) / n.data_size);
  OK(milter_client_eom(c, &res));
  assert_int_equal(res.reply, MILTER_REPLY_ACCEPT);
  assert_true(res.progress >= 1);
  const milter_action *a = res.actions;
  assert_int_equal(res.n_actions, 10);
  assert_int_equal(a[0].type, MILTER_ACTION_ADDHEADER);
  assert_string_equal(a[0].name, "X-Added");
  assert_string_equal(a[0].value, "added value");
  assert_int_equal(a[1].type, MILTER_ACTION_INSHEADER);
  assert_int_equal(a[1].index, 0);
  assert_string_equal(a[1].name, "X-Inserted");
  assert_int_equal(a[2].type, MILTER_ACTION_CHGHEADER);
  assert_int_equal(a[2].index, 1);
  assert_string_equal(a[2].name, "Subject");
  assert_string_equal(a[2].value, "changed subject");
  assert_int_equal(a[3].type, MILTER_ACTION_CHGHEADER);
  assert_string_equal(a[3].name, "X-Old");
  assert_string_equal(a[3].value, "");
  assert_int_equal(a[4].type, MILTER_ACTION_ADDRCPT);
  assert_string_equal(a[4].name, "<new@example.net>");
  assert_int_equal(a[5].type, MILTER_ACTION_ADDRCPT_PAR);
  assert_string_equal(a[5].name, "<par@example.net>");
  assert_string_equal(a[5].value, "NOTIFY=NEVER");
  assert_int_equal(a[6].type, MILTER_ACTION_DELRCPT);
  assert_string_equal(a[6].name, "<b@example.net>");
  assert_int_equal(a[7].type, MILTER_ACTION_CHGFROM);
  assert_string_equal(a[7].name, "<bounce@example.org>");
  assert_string_equal(a[7].value, "SIZE=1000");
  /* libmilter sends its body chunks where they were called */
  assert_int_equal(a[8].type, MILTER_ACTION_REPLBODY);
  assert_int_equal(a[8].body_len, 70006);
  assert_memory_equal(a[8].body + 70000, "tail\r\n", 6);
  assert_int_equal(a[9].type, MILTER_ACTION_QUARANTINE);
  assert_string_equal(a[9].value, "reference hold");

  /* What libmilter decoded from our packets. */
  wait_log(&r, "eom body_total=200000 i=QID1");
  char *l = slurp(r.log);
  assert_non_null(strstr(l, "connect host=client.example j=mx.example daemon=smtpd"));
  assert_non_null(strstr(l, "helo client.example"));
  assert_non_null(
      strstr(l, "mail <a@example.org> args= SIZE=100 BODY=8BITMIME auth=alice i=QID1"));
  assert_non_null(strstr(l, "rcpt <b@example.net> args=\n"));
  assert_non_null(strstr(l, "rcpt <c@example.net> args= NOTIFY=NEVER"));
  assert_non_null(strstr(l, "data\n"));
  assert_non_null(strstr(l, "header Subject=[hello]"));
  assert_non_null(strstr(l, "header X-Old=[old\n\tfolded]"));
  assert_non_null(strstr(l, "eoh\n"));
  free(l);

  /* A second message without ABORT (as Postfix), then one with ABORT,
   * QUIT, and a second connection to the same filter process. (Debian's
   * libmilter 8.17 answers nothing after QUIT_NC -- neither a CONNECT nor
   * a new OPTNEG -- so QUIT_NC is exercised against our server only.) */
  OK(milter_client_mail(c, "<second@example.org>", 0, NULL, &res));
  OK(milter_client_rcpt(c, "<d@example.net>", 0, NULL, &res));
  OK(milter_client_eom(c, &res));
  assert_int_equal(res.reply, MILTER_REPLY_ACCEPT);
  OK(milter_client_mail(c, "<third@example.org>", 0, NULL, &res));
  OK(milter_client_abort(c));
  OK(milter_client_quit(c));
  milter_client_free(c);
  wait_log(&r, "close");

  c = open_to(&r, &n);
  OK(milter_client_connect(c, "again.example", MILTER_FAMILY_INET6, 25,
                           "2001:db8::1", &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_unknown(c, "XFOO bar", &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_quit(c));
  milter_client_result_free(&res);
  milter_client_free(c);
  wait_log(&r, "unknown XFOO bar");
  l = slurp(r.log);
  assert_non_null(strstr(l, "mail <second@example.org>"));
  assert_non_null(strstr(l, "mail <third@example.org>"));
  assert_non_null(strstr(l, "abort\n"));
  assert_non_null(strstr(l, "connect host=again.example"));
  free(l);
  wait_log(&r, "close");
  ref_stop(&r);
}

static void test_no_reply_steps_and_symlist(void **state) {
  (void)state;
  if (!have_ref())
    skip();
  ref r;
  ref_start(&r, "nr");
  milter_client_nego n;
  milter_client *c = open_to(&r, &n);
  uint32_t nr = MILTER_P_NR_MAIL | MILTER_P_NR_RCPT | MILTER_P_NR_HDR |
                MILTER_P_NR_BODY;
  assert_int_equal(n.protocol & (nr | MILTER_P_NOUNKNOWN),
                   nr | MILTER_P_NOUNKNOWN);
  assert_non_null(n.symlist[MILTER_M_ENVFROM]);
  assert_string_equal(n.symlist[MILTER_M_ENVFROM],
                      "{auth_authen} {mail_mailer} i");
  milter_client_result res = {0};
  OK(milter_client_connect(c, "h.example", MILTER_FAMILY_INET, 25, "192.0.2.9",
                           &res));
  assert_int_equal(res.status, MILTER_CLIENT_REPLIED);
  OK(milter_client_mail(c, "<a@example.org>", 0, NULL, &res));
  assert_int_equal(res.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_rcpt(c, "<b@example.net>", 0, NULL, &res));
  assert_int_equal(res.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_header(c, "Subject", " nr", &res));
  assert_int_equal(res.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_eoh(c, &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_body(c, "abc\r\n", 5, &res));
  assert_int_equal(res.status, MILTER_CLIENT_NOREPLY);
  OK(milter_client_unknown(c, "XFOO", &res));
  assert_int_equal(res.status, MILTER_CLIENT_NOT_SENT);
  OK(milter_client_eom(c, &res));
  assert_int_equal(res.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(res.n_actions, 1);
  assert_string_equal(res.actions[0].name, "X-NR");
  OK(milter_client_quit(c));
  milter_client_result_free(&res);
  milter_client_free(c);
  wait_log(&r, "eom body_total=5");
  char *l = slurp(r.log);
  assert_non_null(strstr(l, "mail <a@example.org>"));
  assert_non_null(strstr(l, "rcpt <b@example.net>"));
  assert_non_null(strstr(l, "header Subject=[ nr]")); /* LEADSPC kept */
  assert_null(strstr(l, "unknown"));
  free(l);
  ref_stop(&r);
}

static void test_replies(void **state) {
  (void)state;
  if (!have_ref())
    skip();
  ref r;
  ref_start(&r, "replies");
  milter_client_nego n;
  milter_client *c = open_to(&r, &n);
  assert_true(n.protocol & MILTER_P_SKIP);
  milter_client_result res = {0};
  OK(milter_client_connect(c, "h.example", MILTER_FAMILY_INET, 25, "192.0.2.9",
                           &res));
  OK(milter_client_helo(c, "h.example", &res));
  OK(milter_client_mail(c, "<tempfail@example.org>", 0, NULL, &res));
  assert_int_equal(res.reply, MILTER_REPLY_TEMPFAIL);
  OK(milter_client_mail(c, "<ml@example.org>", 0, NULL, &res));
  assert_int_equal(res.reply, MILTER_REPLY_REPLYCODE);
  assert_string_equal(res.text, "550-5.7.0 line one\r\n550-5.7.0 line two\r\n"
                                "550 5.7.0 line three");
  OK(milter_client_mail(c, "<ok@example.org>", 0, NULL, &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_rcpt(c, "<bad@example.net>", 0, NULL, &res));
  assert_int_equal(res.reply, MILTER_REPLY_REPLYCODE);
  assert_string_equal(res.text, "550 5.1.1 no such user");
  OK(milter_client_rcpt(c, "<good@example.net>", 0, NULL, &res));
  assert_int_equal(res.reply, MILTER_REPLY_CONTINUE);
  OK(milter_client_header(c, "Subject", "s", &res));
  OK(milter_client_eoh(c, &res));
  size_t blen = 3 * MILTER_DATA_64K;
  char *body = calloc(1, blen);
  OK(milter_client_body(c, body, blen, &res));
  free(body);
  assert_int_equal(res.reply, MILTER_REPLY_SKIP);
  assert_int_equal(res.chunks_sent, 1); /* the rest was skipped */
  OK(milter_client_eom(c, &res));
  assert_int_equal(res.reply, MILTER_REPLY_ACCEPT);
  OK(milter_client_quit(c));
  milter_client_result_free(&res);
  milter_client_free(c);
  ref_stop(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_action),
      cmocka_unit_test(test_no_reply_steps_and_symlist),
      cmocka_unit_test(test_replies),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
