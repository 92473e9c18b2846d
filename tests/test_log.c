/* test_log.c -- the loggers of <mailfilter/milter_log.h>: level and facility
 * names, the syslog priority of each level, the stderr line with and
 * without the journal's <N> prefix, JOURNAL_STREAM matching, and one real
 * syslog(3) call received on a /dev/log socket of a private mount namespace
 * (root only; skipped otherwise). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <mailfilter/milter_log.h>
#include <mailfilter/version.h>

#include "core/log.h"

static void test_priority(void **state) {
  (void)state;
  /* The sd-daemon(3) prefixes are the syslog priorities: 3 4 6 7. */
  assert_int_equal(milter_log_priority(MILTER_LOG_ERROR), 3);
  assert_int_equal(milter_log_priority(MILTER_LOG_WARNING), 4);
  assert_int_equal(milter_log_priority(MILTER_LOG_INFO), 6);
  assert_int_equal(milter_log_priority(MILTER_LOG_DEBUG), 7);
  assert_int_equal(LOG_ERR, 3);
  assert_int_equal(LOG_DEBUG, 7);
  assert_int_equal(milter_log_priority((milter_log_level)9), LOG_DEBUG);
}

static void test_parse(void **state) {
  (void)state;
  assert_int_equal(milter_log_level_parse("error"), MILTER_LOG_ERROR);
  assert_int_equal(milter_log_level_parse("WARN"), MILTER_LOG_WARNING);
  assert_int_equal(milter_log_level_parse("info"), MILTER_LOG_INFO);
  assert_int_equal(milter_log_level_parse("Debug"), MILTER_LOG_DEBUG);
  assert_int_equal(milter_log_level_parse("verbose"), -1);
  assert_int_equal(milter_log_level_parse(""), -1);
  assert_int_equal(milter_log_level_parse(NULL), -1);

  assert_int_equal(milter_log_facility_parse("mail"), LOG_MAIL);
  assert_int_equal(milter_log_facility_parse("LOG_DAEMON"), LOG_DAEMON);
  assert_int_equal(milter_log_facility_parse("local0"), LOG_LOCAL0);
  assert_int_equal(milter_log_facility_parse("Local7"), LOG_LOCAL7);
  assert_int_equal(milter_log_facility_parse("user"), LOG_USER);
  assert_int_equal(milter_log_facility_parse("local8"), -1);
  assert_int_equal(milter_log_facility_parse("kern"), -1);
  assert_int_equal(milter_log_facility_parse(NULL), -1);
}

static void test_format(void **state) {
  (void)state;
  char buf[256], want[256];
  milter_log_format_stderr(buf, sizeof buf, 1, MILTER_LOG_ERROR, "a b");
  assert_string_equal(buf, "<3>a b\n");
  milter_log_format_stderr(buf, sizeof buf, 1, MILTER_LOG_WARNING, "w");
  assert_string_equal(buf, "<4>w\n");
  milter_log_format_stderr(buf, sizeof buf, 1, MILTER_LOG_INFO, "i");
  assert_string_equal(buf, "<6>i\n");
  milter_log_format_stderr(buf, sizeof buf, 1, MILTER_LOG_DEBUG, "d");
  assert_string_equal(buf, "<7>d\n");
  milter_log_format_stderr(buf, sizeof buf, 0, MILTER_LOG_WARNING, "w");
  snprintf(want, sizeof want, "mailfilter[%ld]: warning: w\n", (long)getpid());
  assert_string_equal(buf, want);
  milter_log_format_stderr(buf, sizeof buf, 0, MILTER_LOG_DEBUG, "d");
  snprintf(want, sizeof want, "mailfilter[%ld]: debug: d\n", (long)getpid());
  assert_string_equal(buf, want);
}

static void test_journal_stream(void **state) {
  (void)state;
  char path[] = "/tmp/mf-test-log-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  char env[64];
  snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino);
  assert_int_equal(milter_log_journal_stream_matches(env, fd), 1);
  /* Another inode, another device, junk: not the journal. */
  snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino + 1);
  assert_int_equal(milter_log_journal_stream_matches(env, fd), 0);
  snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev + 1,
           (unsigned long long)st.st_ino);
  assert_int_equal(milter_log_journal_stream_matches(env, fd), 0);
  snprintf(env, sizeof env, "%llu:%llux", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino);
  assert_int_equal(milter_log_journal_stream_matches(env, fd), 0);
  assert_int_equal(milter_log_journal_stream_matches("", fd), 0);
  assert_int_equal(milter_log_journal_stream_matches(":", fd), 0);
  assert_int_equal(milter_log_journal_stream_matches(NULL, fd), 0);
  close(fd);
}

static void test_version(void **state) {
  (void)state;
  assert_string_equal(milter_version(), MF_VERSION_STRING);
}

/* In a child with its own mount namespace and a tmpfs on /dev: bind a
 * datagram socket at /dev/log, log one line through milter_log_use_syslog
 * and milter_log_syslog, and compare the datagram.  Exit 0 ok, 77 cannot
 * set up (not root, no namespaces), 1 wrong datagram. */
static int syslog_child(void) {
  if (unshare(CLONE_NEWNS) != 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("mf-test-dev", "/dev", "tmpfs", 0, NULL) != 0)
    return 77;
  int s = socket(AF_UNIX, SOCK_DGRAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0)
    return 77;
  milter_server_opts o;
  memset(&o, 0, sizeof o);
  milter_log_use_syslog(&o, "mf-test", LOG_LOCAL3);
  if (o.log != milter_log_syslog)
    return 1;
  o.log(NULL, MILTER_LOG_WARNING, "hello 100%s");
  char buf[512];
  ssize_t n = recv(s, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return 1;
  buf[n] = '\0';
  /* "<PRI>Mmm dd hh:mm:ss mf-test[PID]: hello 100%s", PRI = facility|prio */
  char head[32], tail[64];
  snprintf(head, sizeof head, "<%d>", LOG_LOCAL3 | LOG_WARNING);
  snprintf(tail, sizeof tail, " mf-test[%ld]: hello 100%%s", (long)getpid());
  size_t tl = strlen(tail);
  if (strncmp(buf, head, strlen(head)) != 0 || (size_t)n < tl ||
      strcmp(buf + n - tl, tail) != 0) {
    fprintf(stderr, "syslog datagram: '%s'\n", buf);
    return 1;
  }
  return 0;
}

static void test_syslog_datagram(void **state) {
  (void)state;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(syslog_child());
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77)
    skip();
  assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_priority), cmocka_unit_test(test_parse),
      cmocka_unit_test(test_format),   cmocka_unit_test(test_journal_stream),
      cmocka_unit_test(test_version),  cmocka_unit_test(test_syslog_datagram),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
