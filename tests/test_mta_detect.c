/* test_mta_detect.c -- mf_filter knows the MTA whatever its macro
 * configuration: it asks for "v" at connect with SETSYMLIST (the list
 * keeping the macros the library reads, as a list replaces the MTA's own),
 * and an MTA still not known gets header actions right on both MTAs.
 * Over a real socket with core's MTA-side client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/mailfilter.h>
#include <mailfilter/milter_client.h>
#include <mailfilter/milter_proto.h>

#include "testutil.h"
#include "mftest.h"

static atomic_int seen_mta = -1;

static mf_decision add_foo(mf_trx *trx, void *ud) {
  (void)ud;
  atomic_store(&seen_mta, (int)mf_trx_mta(trx));
  mf_hdr_add(mf_trx_headers(trx), "X-Foo", "two");
  return MF_ACCEPT;
}

static void quiet_log(void *ud, milter_log_level lvl, const char *msg) {
  (void)ud;
  if (getenv("MF_TEST_VERBOSE") != NULL || lvl <= MILTER_LOG_ERROR)
    fprintf(stderr, "[filter] %s\n", msg);
}

static void opts(mf_opts *o, mf_stage stage, const char *macros) {
  mf_opts_init(o);
  o->stage = stage;
  o->macros = macros;
  o->server.handle_signals = 0;
  o->server.log = quiet_log;
  o->server.drain_timeout_ms = 2000;
  o->workers = 2;
}

/* 1 when the space-separated list has the name. */
static int has(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p != NULL && *p;) {
    p += strspn(p, " ");
    size_t k = strcspn(p, " ");
    if (k == n && memcmp(p, name, n) == 0)
      return 1;
    p += k;
  }
  return 0;
}

/* A client offering actions (0: all) to the filter of t. */
static milter_client *client(const tf *t, uint32_t actions,
                             milter_client_nego *n) {
  milter_client *c = NULL;
  milter_client_opts o;
  milter_client_opts_init(&o);
  o.actions = actions != 0 ? actions : o.actions;
  assert_int_equal(milter_client_new(&c, &o), 0);
  OK(milter_client_open(c, t->spec));
  OK(milter_client_negotiate(c, n));
  return c;
}

/* A filter deciding at stage with user macros, and its negotiation with
 * a client offering actions. */
static void negotiate(tf *t, mf_stage stage, const char *macros,
                      uint32_t actions, milter_client_nego *n) {
  mf_opts o;
  opts(&o, stage, macros);
  tf_launch(t, &o, add_foo, NULL);
  milter_client *c = client(t, actions, n);
  /* n's lists are the client's: kept in a copy until the test ends */
  static char copies[MILTER_M_COUNT][512];
  for (int m = 0; m < MILTER_M_COUNT; m++)
    if (n->symlist[m] != NULL) {
      snprintf(copies[m], sizeof copies[m], "%s", n->symlist[m]);
      n->symlist[m] = copies[m];
    }
  milter_client_quit(c);
  milter_client_free(c);
  tf_halt(t);
}

static void test_connect_list_asks_for_v(void **state) {
  (void)state;
  tf t;
  milter_client_nego n;
  negotiate(&t, MF_STAGE_EOM, NULL, 0, &n);
  assert_true(n.actions & MILTER_ACT_SETSYMLIST);
  const char *l = n.symlist[MILTER_M_CONNECT];
  assert_non_null(l);
  /* v, and what either MTA sends by default at connect (Sendmail:
   * j _ {daemon_name} {if_name} {if_addr}) */
  static const char *const want[] = {"v",           "j",         "_",
                                     "{daemon_name}", "{if_name}", "{if_addr}",
                                     "{daemon_addr}"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!has(l, want[i]))
      fail_msg("connect list \"%s\" lacks %s", l, want[i]);
  assert_false(has(l, "{client_addr}")); /* no more than the MTAs' own */
  /* the other stages keep the MTA's own lists */
  for (int m = 0; m < MILTER_M_COUNT; m++)
    if (m != MILTER_M_CONNECT)
      assert_null(n.symlist[m]);
}

static void test_user_macros_keep_defaults(void **state) {
  (void)state;
  tf t;
  milter_client_nego n;
  negotiate(&t, MF_STAGE_EOH, "{auth_type} {cert_subject}", 0, &n);
  static const int upto[] = {MILTER_M_CONNECT, MILTER_M_HELO,
                             MILTER_M_ENVFROM, MILTER_M_ENVRCPT,
                             MILTER_M_DATA,    MILTER_M_EOH};
  for (size_t i = 0; i < sizeof upto / sizeof upto[0]; i++) {
    const char *l = n.symlist[upto[i]];
    assert_non_null(l);
    assert_true(has(l, "{auth_type}") && has(l, "{cert_subject}"));
  }
  assert_true(has(n.symlist[MILTER_M_CONNECT], "v"));
  assert_true(has(n.symlist[MILTER_M_ENVFROM], "{auth_authen}"));
  assert_true(has(n.symlist[MILTER_M_ENVFROM], "i"));
  assert_null(n.symlist[MILTER_M_EOM]); /* after the decision */
}

static void test_no_setsymlist_offered(void **state) {
  (void)state;
  tf t;
  milter_client_nego n;
  negotiate(&t, MF_STAGE_EOM, NULL, MILTER_ACT_ALL & ~MILTER_ACT_SETSYMLIST,
            &n);
  assert_false(n.actions & MILTER_ACT_SETSYMLIST);
  for (int m = 0; m < MILTER_M_COUNT; m++)
    assert_null(n.symlist[m]);
}

/* One message with "X-Foo: one"; decide() adds "X-Foo: two".  v NULL: the
 * MTA sends no v. */
static void one_message(const tf *t, const char *v, mf_mta want_mta,
                        milter_action_type want_type) {
  milter_client_nego n;
  milter_client *c = client(t, 0, &n);
  milter_client_result r = {0};
  if (v != NULL) {
    const char *cv[] = {"v", v};
    OK(milter_client_macro(c, MILTER_CMD_CONNECT, 1, cv));
  }
  OK(milter_client_connect(c, "client.example", MILTER_FAMILY_INET, 2525,
                           "192.0.2.7", &r));
  OK(milter_client_helo(c, "client.example", &r));
  OK(milter_client_mail(c, "<s@example.org>", 0, NULL, &r));
  OK(milter_client_rcpt(c, "<a@example.net>", 0, NULL, &r));
  OK(milter_client_header(c, "From", " s@example.org", &r));
  OK(milter_client_header(c, "X-Foo", " one", &r));
  OK(milter_client_eoh(c, &r));
  OK(milter_client_eom(c, &r));
  assert_int_equal(r.reply, MILTER_REPLY_ACCEPT);
  assert_int_equal(atomic_load(&seen_mta), (int)want_mta);
  assert_int_equal(r.n_actions, 1);
  assert_int_equal(r.actions[0].type, want_type);
  assert_string_equal(r.actions[0].name, "X-Foo");
  assert_string_equal(r.actions[0].value, " two");
  if (want_type == MILTER_ACTION_INSHEADER)
    assert_true(r.actions[0].index >= 1000); /* past the end */
  milter_client_result_free(&r);
  milter_client_quit(c);
  milter_client_free(c);
}

static void test_v_chooses_the_actions(void **state) {
  (void)state;
  tf t;
  mf_opts o;
  opts(&o, MF_STAGE_EOM, NULL);
  tf_launch(&t, &o, add_foo, NULL);
  one_message(&t, "8.17.1", MF_MTA_SENDMAIL, MILTER_ACTION_INSHEADER);
  one_message(&t, "Postfix 3.7.11", MF_MTA_POSTFIX, MILTER_ACTION_ADDHEADER);
  one_message(&t, NULL, MF_MTA_AUTO, MILTER_ACTION_INSHEADER);
  tf_halt(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connect_list_asks_for_v),
      cmocka_unit_test(test_user_macros_keep_defaults),
      cmocka_unit_test(test_no_setsymlist_offered),
      cmocka_unit_test(test_v_chooses_the_actions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
