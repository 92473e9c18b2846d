/* test_engine.c -- the diff engine through mf_engine.h: what the decision
 * function changed -> the milter actions, by the MTA's index rules and
 * within what was negotiated.  (mf_filter and testtrx both drive this.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailfilter/mf_engine.h>
#include <mailfilter/milter_proto.h>

typedef mf_decision (*edit_fn)(mf_trx *t);

/* A trx with MAIL, two RCPTs and four headers, as an MTA with `protocol`
 * (LEADSPC or not) and `mta` would send them. */
static mf_trx *make(uint32_t actions, uint32_t protocol, mf_mta mta) {
  mf_trx *t = NULL;
  assert_int_equal(mf_engine_trx_new(&t, NULL), 0);
  mf_engine_set_negotiated(t, actions, protocol, MILTER_DATA_64K);
  mf_engine_set_mta(t, mta);
  assert_int_equal(mf_engine_connect(t, "c.example", '4', 25, "192.0.2.1"),
                   0);
  const char *from[] = {"<s@example.org>", "SIZE=100"};
  assert_int_equal(mf_engine_mail(t, 2, from), 0);
  const char *r1[] = {"<a@example.net>"};
  const char *r2[] = {"<b@example.net>", "NOTIFY=NEVER"};
  assert_int_equal(mf_engine_rcpt(t, 1, r1), 0);
  assert_int_equal(mf_engine_rcpt(t, 2, r2), 0);
  int lead = (protocol & MILTER_P_HDR_LEADSPC) != 0;
  const char *h[][2] = {{"From", "a@example.org"},
                        {"Subject", "hello\r\n world"},
                        {"X-A", "1"},
                        {"X-A", "2"}};
  for (size_t i = 0; i < 4; i++) {
    char v[64];
    snprintf(v, sizeof v, "%s%s", lead ? " " : "", h[i][1]);
    assert_int_equal(mf_engine_header(t, h[i][0], v, strlen(v), lead), 0);
  }
  assert_int_equal(mf_engine_eoh(t), 0);
  return t;
}

static edit_fn current;
static mf_decision run_edit(mf_trx *t, void *ud) {
  (void)ud;
  return current(t);
}

static milter_action *run(mf_trx *t, edit_fn fn, size_t *n, int *rc) {
  current = fn;
  mf_decision d = mf_engine_decide(t, MF_STAGE_EOM, run_edit, NULL);
  milter_action *a = NULL;
  *rc = mf_engine_actions(t, d, 0, &a, n);
  return a;
}

static mf_decision untouched(mf_trx *t) {
  (void)t;
  return MF_ACCEPT;
}

static void test_untouched_zero(void **state) {
  (void)state;
  mf_trx *t = make(MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC, MF_MTA_POSTFIX);
  size_t n;
  int rc;
  milter_action *a = run(t, untouched, &n, &rc);
  assert_int_equal(rc, 0);
  assert_int_equal(n, 0);
  assert_int_equal(mf_engine_has_changes(t), 0);
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);
}

static mf_decision change_back(mf_trx *t) {
  mf_hdrs *h = mf_trx_headers(t);
  mf_hdr_set_nth(h, "X-A", 1, "changed");
  mf_hdr_set_raw(h, 2, " 1", 2); /* and back, byte for byte */
  mf_trx_add_rcpt(t, "<c@example.net>", NULL);
  mf_trx_del_rcpt(t, "<c@example.net>");
  mf_trx_del_rcpt(t, "<b@example.net>");
  mf_trx_add_rcpt(t, "<b@example.net>", "NOTIFY=NEVER"); /* same as before */
  mf_trx_change_from(t, "<s@example.org>", "SIZE=100");
  return MF_ACCEPT;
}

static void test_changes_undone_are_no_changes(void **state) {
  (void)state;
  mf_trx *t = make(MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC, MF_MTA_POSTFIX);
  size_t n;
  int rc;
  milter_action *a = run(t, change_back, &n, &rc);
  assert_int_equal(rc, 0);
  assert_int_equal(n, 0);
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);
}

static mf_decision append_two(mf_trx *t) {
  mf_hdrs *h = mf_trx_headers(t);
  mf_hdr_add(h, "X-One", "1");
  mf_hdr_add(h, "X-Two", "2");
  return MF_ACCEPT;
}

static void test_appends_postfix_vs_sendmail(void **state) {
  (void)state;
  static const mf_mta mtas[] = {MF_MTA_POSTFIX, MF_MTA_SENDMAIL, MF_MTA_AUTO};
  for (size_t k = 0; k < 3; k++) {
    mf_trx *t = make(MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC, mtas[k]);
    size_t n;
    int rc;
    milter_action *a = run(t, append_two, &n, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < 2; i++) {
      /* Sendmail may put an ADDHEADER above a field of that name or into
       * a template: append with an INSHEADER past the end instead, also
       * when the MTA is not known (no macro v). */
      int sm = mtas[k] != MF_MTA_POSTFIX;
      assert_int_equal(a[i].type, sm ? MILTER_ACTION_INSHEADER
                                     : MILTER_ACTION_ADDHEADER);
      if (sm)
        assert_true(a[i].index >= 1000);
    }
    assert_string_equal(a[0].name, "X-One");
    assert_string_equal(a[1].name, "X-Two");
    mf_engine_actions_free(a, n);
    mf_engine_trx_free(t);
  }
}

static void test_mta_from_macro_v(void **state) {
  (void)state;
  mf_trx *t = make(MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC, MF_MTA_AUTO);
  assert_int_equal(mf_trx_mta(t), MF_MTA_AUTO); /* not known: no v */
  assert_int_equal(mf_engine_is_sendmail(t), 0);
  mf_engine_macro(t, "v", "8.17.1");
  assert_int_equal(mf_engine_is_sendmail(t), 1);
  assert_int_equal(mf_trx_mta(t), MF_MTA_SENDMAIL);
  mf_engine_macro(t, "{v}", "Postfix 3.7.11");
  assert_int_equal(mf_engine_is_sendmail(t), 0);
  assert_int_equal(mf_trx_mta(t), MF_MTA_POSTFIX);
  mf_engine_macro(t, "v", "Exim 4.96");
  assert_int_equal(mf_trx_mta(t), MF_MTA_AUTO);
  mf_engine_trx_free(t);
}

static mf_decision fold_and_empty(mf_trx *t) {
  mf_hdrs *h = mf_trx_headers(t);
  /* A long non-ASCII value: RFC 2047-encoded and folded by the header
   * module; on the wire the folds must be LF only. */
  mf_hdr_set_nth(h, "Subject",
                 1, "Ünïcödé subject that is long enough to be folded at "
                    "seventy-eight columns by the header module, surely");
  mf_hdr_set_nth(h, "X-A", 2, "");
  return MF_ACCEPT;
}

static void test_values_lf_and_nonempty(void **state) {
  (void)state;
  for (int lead = 0; lead < 2; lead++) {
    mf_trx *t =
        make(MILTER_ACT_ALL, lead ? MILTER_P_HDR_LEADSPC : 0, MF_MTA_POSTFIX);
    size_t n;
    int rc;
    milter_action *a = run(t, fold_and_empty, &n, &rc);
    assert_int_equal(rc, 0);
    /* "X-A: " (the text "" in this collection's convention): with
     * LEADSPC the value " ", a change; without, the MTA adds the space to
     * "", which CHGHEADER cannot send (it would delete): the field is
     * deleted and "X-A" "" appended (ADDHEADER: Postfix) */
    assert_int_equal(n, lead ? 2 : 3);
    size_t k = 0;
    if (!lead) {
      assert_int_equal(a[0].type, MILTER_ACTION_ADDHEADER);
      assert_string_equal(a[0].name, "X-A");
      assert_string_equal(a[0].value, "");
      k = 1;
    }
    /* bottom up: X-A #2 first */
    assert_int_equal(a[k].type, MILTER_ACTION_CHGHEADER);
    assert_string_equal(a[k].name, "X-A");
    assert_int_equal(a[k].index, 2);
    assert_string_equal(a[k].value, lead ? " " : ""); /* change / delete */
    assert_int_equal(a[k + 1].type, MILTER_ACTION_CHGHEADER);
    assert_string_equal(a[k + 1].name, "Subject");
    assert_null(strchr(a[k + 1].value, '\r'));
    assert_non_null(strstr(a[k + 1].value, "=?"));
    assert_non_null(strchr(a[k + 1].value, '\n'));
    /* one leading space exactly when the MTA does not add one */
    assert_int_equal(a[k + 1].value[0] == ' ', lead);
    if (lead)
      assert_true(a[k + 1].value[1] != ' ');
    mf_engine_actions_free(a, n);
    mf_engine_trx_free(t);
  }
}

static mf_decision recreate(mf_trx *t) {
  mf_hdr_insert(mf_trx_headers(t), 1, "X-Mid", "m");
  return MF_ACCEPT;
}

static void test_recreate_mode(void **state) {
  (void)state;
  mf_opts o;
  mf_opts_init(&o);
  o.flags |= MF_OPT_RECREATE_HEADERS;
  mf_trx *t = NULL;
  assert_int_equal(mf_engine_trx_new(&t, &o), 0);
  mf_engine_set_negotiated(t, MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC,
                           MILTER_DATA_64K);
  mf_engine_set_mta(t, MF_MTA_SENDMAIL);
  const char *from[] = {"<s@example.org>"};
  mf_engine_mail(t, 1, from);
  mf_engine_header(t, "A", " 1", 2, 1);
  mf_engine_header(t, "B", " 2", 2, 1);
  mf_engine_eoh(t);
  size_t n;
  int rc;
  milter_action *a = run(t, recreate, &n, &rc);
  assert_int_equal(rc, 0);
  /* delete both originals (bottom up), then append all three in order */
  assert_int_equal(n, 5);
  assert_int_equal(a[0].type, MILTER_ACTION_INSHEADER);
  assert_string_equal(a[0].name, "A");
  assert_string_equal(a[1].name, "X-Mid");
  assert_string_equal(a[2].name, "B");
  assert_int_equal(a[3].type, MILTER_ACTION_CHGHEADER);
  assert_string_equal(a[3].name, "B");
  assert_string_equal(a[3].value, "");
  assert_int_equal(a[4].type, MILTER_ACTION_CHGHEADER);
  assert_string_equal(a[4].name, "A");
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);
}

static mf_decision needs_chgfrom(mf_trx *t) {
  mf_trx_change_from(t, "<x@example.org>", NULL);
  return MF_ACCEPT;
}

static void test_not_granted_fails_whole_list(void **state) {
  (void)state;
  mf_trx *t = make(MILTER_ACT_ALL & ~MILTER_ACT_CHGFROM, MILTER_P_HDR_LEADSPC,
                   MF_MTA_POSTFIX);
  size_t n;
  int rc;
  milter_action *a = run(t, needs_chgfrom, &n, &rc);
  assert_int_equal(rc, MF_E_NOTSUP);
  assert_null(a);
  assert_non_null(strstr(mf_engine_last_error(t), "CHGFROM"));
  mf_engine_trx_free(t);
}

static mf_decision quarantine_replace(mf_trx *t) {
  mf_trx_quarantine(t, "held for review");
  mf_trx_replace_body(t, "new\r\n", 5);
  return MF_QUARANTINE;
}

static void test_quarantine_and_body_last(void **state) {
  (void)state;
  mf_trx *t = make(MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC, MF_MTA_POSTFIX);
  size_t n;
  int rc;
  milter_action *a = run(t, quarantine_replace, &n, &rc);
  assert_int_equal(rc, 0);
  assert_int_equal(n, 2);
  assert_int_equal(a[0].type, MILTER_ACTION_QUARANTINE);
  assert_string_equal(a[0].value, "held for review");
  assert_int_equal(a[1].type, MILTER_ACTION_REPLBODY);
  assert_int_equal(a[1].body_len, 5);
  assert_memory_equal(a[1].body, "new\r\n", 5);
  mf_engine_actions_free(a, n);
  mf_engine_trx_free(t);
}

static mf_decision misuse(mf_trx *t) {
  (void)t;
  return MF_ACCEPT;
}

static void test_edits_outside_decide_refused(void **state) {
  (void)state;
  mf_trx *t = make(MILTER_ACT_ALL, MILTER_P_HDR_LEADSPC, MF_MTA_POSTFIX);
  size_t n;
  int rc;
  milter_action *a = run(t, misuse, &n, &rc);
  mf_engine_actions_free(a, n);
  assert_int_equal(mf_trx_add_rcpt(t, "<late@example.net>", NULL), MF_E_STATE);
  assert_int_equal(mf_trx_quarantine(t, "late"), MF_E_STATE);
  assert_int_equal(mf_trx_set_reply(t, "550", NULL, "x"), MF_E_STATE);
  assert_non_null(strstr(mf_trx_errmsg(t), "decision function"));
  assert_int_equal(mf_trx_complete(t, MF_ACCEPT), MF_E_STATE);
  mf_engine_trx_free(t);
}

static void test_limits(void **state) {
  (void)state;
  mf_opts o;
  mf_opts_init(&o);
  o.max_headers = 2;
  o.max_body = 10;
  o.body_limit = MF_DO_TRUNCATE;
  o.max_rcpts = 1;
  mf_trx *t = NULL;
  assert_int_equal(mf_engine_trx_new(&t, &o), 0);
  const char *from[] = {"<s@example.org>"};
  mf_engine_mail(t, 1, from);
  const char *r[] = {"<a@x.example>"};
  assert_int_equal(mf_engine_rcpt(t, 1, r), 0);
  assert_int_equal(mf_engine_rcpt(t, 1, r), MF_E_LIMIT);
  assert_int_equal(mf_engine_limit_hit(t), 3);
  assert_int_equal(mf_engine_header(t, "A", "1", 1, 0), 0);
  assert_int_equal(mf_engine_header(t, "B", "2", 1, 0), 0);
  assert_int_equal(mf_engine_header(t, "C", "3", 1, 0), MF_E_LIMIT);
  assert_int_equal(mf_engine_body(t, "0123456789abc", 13), MF_E_LIMIT);
  assert_int_equal(mf_trx_body_size(t), 10); /* truncated to the limit */
  assert_int_equal(mf_trx_truncated(t), 1);
  assert_int_equal(mf_hdr_count(mf_trx_headers(t)), 2);
  mf_engine_trx_free(t);
}

/* The connection's strings (one block in the trx): HELO and CONNECT in
 * either order, repeated, and gone with the connection. */
static void test_connection_strings(void **state) {
  (void)state;
  mf_trx *t = NULL;
  assert_int_equal(mf_engine_trx_new(&t, NULL), 0);
  assert_null(mf_trx_helo(t));
  assert_string_equal(mf_trx_client_hostname(t), "");
  assert_int_equal(mf_engine_helo(t, "early.example"), 0);
  assert_string_equal(mf_trx_helo(t), "early.example");
  assert_string_equal(mf_trx_client_ip(t), "");
  assert_int_equal(mf_engine_connect(t, "c.example", '6', 2525, "2001:db8::1"),
                   0);
  assert_string_equal(mf_trx_helo(t), "early.example"); /* kept */
  assert_string_equal(mf_trx_client_hostname(t), "c.example");
  assert_string_equal(mf_trx_client_ip(t), "2001:db8::1");
  assert_int_equal(mf_engine_helo(t, "a-much-longer-helo-name.example"), 0);
  assert_int_equal(mf_engine_helo(t, "h.example"), 0);
  assert_string_equal(mf_trx_helo(t), "h.example");
  assert_string_equal(mf_trx_client_hostname(t), "c.example");
  assert_string_equal(mf_trx_client_ip(t), "2001:db8::1");
  assert_int_equal(mf_trx_client_port(t), 2525);
  assert_int_equal(mf_trx_client_family(t), '6');
  assert_int_equal(mf_engine_connect(t, NULL, '4', 25, NULL), 0);
  assert_string_equal(mf_trx_client_hostname(t), "");
  assert_string_equal(mf_trx_helo(t), "h.example");
  assert_int_equal(mf_engine_helo(t, NULL), MF_E_INVAL);
  mf_engine_reset_connection(t);
  assert_null(mf_trx_helo(t));
  assert_string_equal(mf_trx_client_ip(t), "");
  mf_engine_trx_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connection_strings),
      cmocka_unit_test(test_untouched_zero),
      cmocka_unit_test(test_changes_undone_are_no_changes),
      cmocka_unit_test(test_appends_postfix_vs_sendmail),
      cmocka_unit_test(test_mta_from_macro_v),
      cmocka_unit_test(test_values_lf_and_nonempty),
      cmocka_unit_test(test_recreate_mode),
      cmocka_unit_test(test_not_granted_fails_whole_list),
      cmocka_unit_test(test_quarantine_and_body_last),
      cmocka_unit_test(test_edits_outside_decide_refused),
      cmocka_unit_test(test_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
