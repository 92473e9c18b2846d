/* mftest.h -- an mf_filter on a thread, driven by core's blocking MTA-side
 * client: the harness of test_mailfilter.c and test_spool_faults.c.
 * Include after <cmocka.h>, <mailfilter/mailfilter.h>,
 * <mailfilter/milter_client.h> and "testutil.h". */
#ifndef MF_TESTS_MFTEST_H
#define MF_TESTS_MFTEST_H

#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tf {
  mf_filter *f;
  pthread_t thread;
  char spec[64];
} tf;

static inline void *tf_run_thread(void *arg) {
  mf_filter_run(arg);
  return NULL;
}

/* mf_filter_new + listen on a free loopback port + run on a thread. */
static inline void tf_launch(tf *t, const mf_opts *o, mf_decide_fn fn,
                             void *ud) {
  assert_int_equal(mf_filter_new(&t->f, fn, ud, o), 0);
  assert_int_equal(mf_filter_listen(t->f, "inet:0@127.0.0.1"), 0);
  snprintf(t->spec, sizeof t->spec, "inet:%d@127.0.0.1",
           milter_server_port(mf_filter_server(t->f)));
  assert_int_equal(pthread_create(&t->thread, NULL, tf_run_thread, t->f), 0);
}

static inline void tf_halt(tf *t) {
  mf_filter_stop(t->f);
  pthread_join(t->thread, NULL);
  mf_filter_free(t->f);
}

/* A negotiated client; protocol 0 = the client's default offer. */
static inline milter_client *tf_client(const tf *t, uint32_t protocol,
                                       milter_client_nego *nego) {
  milter_client *c = NULL;
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.command_timeout_ms = 5000;
  o.eom_timeout_ms = 5000;
  if (protocol != 0)
    o.protocol = protocol;
  assert_int_equal(milter_client_new(&c, &o), 0);
  OK(milter_client_open(c, t->spec));
  milter_client_nego n;
  OK(milter_client_negotiate(c, nego ? nego : &n));
  return c;
}

/* Connect (macro v: Postfix) + HELO + MAIL (with queue id 4XyZ12) +
 * RCPTs; each result's status must be expect. */
static inline void tf_envelope(milter_client *c, const char *from, int nrcpt,
                               const char *const *rcpts,
                               milter_client_status expect) {
  milter_client_result r = {0};
  const char *mv[] = {"{auth_authen}", "", "i", "4XyZ12"};
  /* "v" at connect as Postfix sends it: the header actions are then
   * Postfix's (an MTA not known gets those right on both MTAs). */
  const char *cv[] = {"v", "Postfix 3.7.11"};
  OK(milter_client_macro(c, MILTER_CMD_CONNECT, 1, cv));
  OK(milter_client_connect(c, "client.example", MILTER_FAMILY_INET, 2525,
                           "192.0.2.7", &r));
  assert_int_equal(r.status, expect);
  OK(milter_client_helo(c, "client.example", &r));
  assert_int_equal(r.status, expect);
  OK(milter_client_macro(c, MILTER_CMD_MAIL, 2, mv));
  OK(milter_client_mail(c, from, 0, NULL, &r));
  assert_int_equal(r.status, expect);
  for (int i = 0; i < nrcpt; i++) {
    OK(milter_client_rcpt(c, rcpts[i], 0, NULL, &r));
    assert_int_equal(r.status, expect);
  }
  milter_client_result_free(&r);
}

/* n bytes of text lines (CRLF), different for each seed; malloc'd. */
static inline uint8_t *tf_pattern(size_t n, unsigned seed) {
  uint8_t *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++)
    b[i] = (uint8_t)("abcdefghijklmnopqrstuvwxyz0123456789\r\n"[(i + seed) %
                                                               38]);
  return b;
}

/* Entries of a directory but . and .., or -1. */
static inline int tf_count_dir(const char *path) {
  DIR *d = opendir(path);
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

#endif
