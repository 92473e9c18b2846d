/*
 * check_run.c -- milter-check's conversation with the milter, through the
 * blocking client of <mailfilter/milter_client.h> only.
 *
 * The order is Postfix's: OPTNEG, CONNECT, HELO, then per transaction MAIL,
 * RCPT..., DATA, HEADER..., EOH, BODY, EOB; the macros of a stage go just
 * before its command.  A transaction stops at the first reply that is not
 * CONTINUE (a rejected RCPT only drops that recipient; when none is left the
 * transaction stops like an MTA's would).  A transaction that stopped early
 * is closed with ABORT when another one follows; one that reached end of
 * message is not (as Postfix does).  QUIT at the end.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "milter_check.h"

typedef struct run {
  const mc_opts *o;
  const mc_msg *m;
  mc_report *rep;
  milter_client *c;
  FILE *live; /* human output as it happens, or NULL */
} run;

/* ---- Decisions ---------------------------------------------------------- */

const char *mc_decision_name(mc_decision d) {
  switch (d) {
  case MC_CONTINUE:
    return "continue";
  case MC_ACCEPT:
    return "accept";
  case MC_REJECT:
    return "reject";
  case MC_TEMPFAIL:
    return "tempfail";
  case MC_DISCARD:
    return "discard";
  case MC_QUARANTINE:
    return "quarantine";
  }
  return "?";
}

int mc_decision_exit(mc_decision d) {
  switch (d) {
  case MC_CONTINUE:
  case MC_ACCEPT:
    return MC_EXIT_ACCEPT;
  case MC_REJECT:
    return MC_EXIT_REJECT;
  case MC_TEMPFAIL:
    return MC_EXIT_TEMPFAIL;
  case MC_DISCARD:
    return MC_EXIT_DISCARD;
  case MC_QUARANTINE:
    return MC_EXIT_QUARANTINE;
  }
  return MC_EXIT_ERROR;
}

int mc_report_exit(const mc_report *rep) {
  if (rep->error == MILTER_E_ADDR)
    return MC_EXIT_USAGE;
  if (rep->error != 0)
    return MC_EXIT_ERROR;
  return mc_decision_exit(rep->decision);
}

/* What a reply means to the MTA; *text gets the SMTP reply for reject and
 * tempfail (the milter's, or Postfix's default), NULL otherwise.  Returns
 * MC_CONTINUE for CONTINUE, SKIP, no reply and not sent. */
static mc_decision decide(const milter_client_result *r, char **text) {
  *text = NULL;
  if (r->status != MILTER_CLIENT_REPLIED)
    return MC_CONTINUE;
  switch (r->reply) {
  case MILTER_REPLY_ACCEPT:
    return MC_ACCEPT;
  case MILTER_REPLY_REJECT:
    *text = mc_strdup("550 5.7.1 Command rejected");
    return MC_REJECT;
  case MILTER_REPLY_TEMPFAIL:
    *text = mc_strdup("451 4.7.1 Service unavailable - try again later");
    return MC_TEMPFAIL;
  case MILTER_REPLY_DISCARD:
    return MC_DISCARD;
  case MILTER_REPLY_REPLYCODE:
    *text = mc_strdup(r->text ? r->text : "");
    return r->text != NULL && r->text[0] == '4' ? MC_TEMPFAIL : MC_REJECT;
  default: /* CONTINUE, SKIP */
    return MC_CONTINUE;
  }
}

/* ---- Recording ---------------------------------------------------------- */

static mc_event *new_event(mc_trx *t) {
  if (t->n_ev == t->cap_ev) {
    size_t cap = t->cap_ev ? t->cap_ev * 2 : 16;
    mc_event *ev = realloc(t->ev, cap * sizeof *ev);
    if (ev == NULL)
      return NULL;
    t->ev = ev;
    t->cap_ev = cap;
  }
  mc_event *e = &t->ev[t->n_ev++];
  memset(e, 0, sizeof *e);
  return e;
}

static int set_error(run *R, int err, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  free(R->rep->errmsg);
  R->rep->errmsg = mc_strdup(buf);
  R->rep->error = err;
  return err;
}

/* Explain a client error that happened while doing `what`. */
static int failed(run *R, int rc, const char *what) {
  const char *msg = milter_client_errmsg(R->c);
  if (msg == NULL || msg[0] == '\0')
    msg = milter_strerror(rc);
  switch (rc) {
  case MILTER_E_NEGOTIATE:
    return set_error(R, rc, "option negotiation failed: %s (%s)", msg,
                     milter_err_name(rc));
  case MILTER_E_PROTO:
  case MILTER_E_TOOBIG:
  case MILTER_E_NOTSUP:
    return set_error(R, rc, "milter broke the protocol at %s: %s (%s)", what,
                     msg, milter_err_name(rc));
  case MILTER_E_TIMEOUT:
    return set_error(R, rc, "milter timed out at %s: %s", what, msg);
  case MILTER_E_EOF:
    return set_error(R, rc, "milter closed the connection at %s: %s", what,
                     msg);
  default:
    return set_error(R, rc, "%s: %s (%s)", what, msg, milter_err_name(rc));
  }
}

/* Record one event (arg is taken over) with its result, print it. */
static int record(run *R, mc_trx *t, uint8_t cmd, char *arg,
                  const milter_client_result *r, mc_event **out) {
  mc_event *e = new_event(t);
  if (e == NULL) {
    free(arg);
    return set_error(R, MILTER_E_NOMEM, "out of memory");
  }
  e->cmd = cmd;
  e->arg = arg;
  if (r != NULL) {
    e->status = r->status;
    e->reply = r->reply;
    e->progress = r->progress;
    e->chunks = r->chunks_sent;
    if (r->text != NULL && (e->text = mc_strdup(r->text)) == NULL)
      return set_error(R, MILTER_E_NOMEM, "out of memory");
  } else {
    e->status = MILTER_CLIENT_NOREPLY;
  }
  if (out != NULL)
    *out = e;
  if (R->live != NULL && cmd != MILTER_CMD_MACRO) /* macros: by the caller */
    mc_print_event(R->live, e);
  return 0;
}

/* "addr ARG ARG" */
static char *addr_line(const char *addr, const mc_strv *args) {
  char *a = mc_strv_join(args, " ");
  if (a == NULL)
    return mc_strdup(addr);
  size_t n = strlen(addr) + strlen(a) + 2;
  char *s = malloc(n);
  if (s != NULL)
    snprintf(s, n, "%s %s", addr, a);
  free(a);
  return s;
}

/* The macros of stage st, if any, as one SMFIC_MACRO. */
static int send_macros(run *R, mc_trx *t, mc_stage st) {
  const mc_strv *mv = &R->o->macros[st];
  if (mv->n == 0)
    return 0;
  uint8_t cmd = mc_stage_cmd(st);
  int rc =
      milter_client_macro(R->c, cmd, mv->n / 2, (const char *const *)mv->v);
  if (rc < 0)
    return failed(R, rc, "SMFIC_MACRO");
  /* "{a}=1 {b}=2" for the reader */
  mc_strv pairs = {0};
  for (size_t i = 0; i + 1 < mv->n; i += 2) {
    size_t n = strlen(mv->v[i]) + strlen(mv->v[i + 1]) + 2;
    char *p = malloc(n);
    if (p == NULL || (snprintf(p, n, "%s=%s", mv->v[i], mv->v[i + 1]),
                      mc_strv_push(&pairs, p, (size_t)-1)) < 0) {
      free(p);
      mc_strv_free(&pairs);
      return set_error(R, MILTER_E_NOMEM, "out of memory");
    }
    free(p);
  }
  char *arg = mc_strv_join(&pairs, " ");
  mc_strv_free(&pairs);
  if (arg == NULL)
    return set_error(R, MILTER_E_NOMEM, "out of memory");
  mc_event *e;
  if ((rc = record(R, t, MILTER_CMD_MACRO, arg, NULL, &e)) < 0)
    return rc;
  e->for_cmd = cmd;
  if (R->live != NULL)
    mc_print_event(R->live, e);
  return 0;
}

/* After an event: note the decision in t; 1 when it stops the transaction. */
static int stops(run *R, mc_trx *t, const milter_client_result *r) {
  char *text;
  mc_decision d = decide(r, &text);
  if (d == MC_CONTINUE)
    return 0;
  if ((d == MC_REJECT || d == MC_TEMPFAIL) && text == NULL)
    return set_error(R, MILTER_E_NOMEM, "out of memory");
  free(t->reply);
  t->reply = text;
  t->decision = d;
  return 1;
}

/* ---- One transaction ------------------------------------------------------
 * Returns 0 (t->decision set; *at_eom: end of message was replied to) or an
 * error. */
static int run_trx(run *R, mc_trx *t, int leadspc, int *at_eom) {
  const mc_opts *o = R->o;
  const mc_msg *m = R->m;
  milter_client_result r;
  memset(&r, 0, sizeof r);
  mc_strv accepted = {0};
  int rc, st;
  *at_eom = 0;

  /* MAIL FROM */
  if ((rc = send_macros(R, t, MC_ST_MAIL)) < 0)
    goto out;
  rc = milter_client_mail(R->c, o->from, o->from_args.n,
                          (const char *const *)o->from_args.v, &r);
  if (rc < 0) {
    rc = failed(R, rc, "MAIL FROM");
    goto out;
  }
  if ((rc = record(R, t, MILTER_CMD_MAIL, addr_line(o->from, &o->from_args), &r,
                   NULL)) < 0)
    goto out;
  if ((st = stops(R, t, &r)) != 0) {
    rc = st < 0 ? st : 0;
    if (t->decision == MC_ACCEPT) /* the MTA takes every recipient */
      for (size_t i = 0; i < o->n_rcpts && rc == 0; i++)
        if (mc_strv_push(&accepted, o->rcpts[i].addr, (size_t)-1) < 0)
          rc = set_error(R, MILTER_E_NOMEM, "out of memory");
    goto done;
  }

  /* RCPT TO: a rejected recipient is dropped, the others go on. */
  mc_decision rejected = MC_CONTINUE;
  char *rej_text = NULL;
  for (size_t i = 0; i < o->n_rcpts; i++) {
    const mc_rcpt *rc_ = &o->rcpts[i];
    if ((rc = send_macros(R, t, MC_ST_RCPT)) < 0)
      break;
    rc = milter_client_rcpt(R->c, rc_->addr, rc_->args.n,
                            (const char *const *)rc_->args.v, &r);
    if (rc < 0) {
      rc = failed(R, rc, "RCPT TO");
      break;
    }
    mc_event *e;
    if ((rc = record(R, t, MILTER_CMD_RCPT, addr_line(rc_->addr, &rc_->args),
                     &r, &e)) < 0)
      break;
    char *text;
    mc_decision d = decide(&r, &text);
    if (d == MC_REJECT || d == MC_TEMPFAIL) {
      e->rcpt_rejected = 1;
      rejected = d;
      free(rej_text);
      rej_text = text;
      continue;
    }
    free(text);
    if (d == MC_DISCARD) {
      t->decision = d;
      break;
    }
    /* CONTINUE, or ACCEPT: this and every later recipient is taken */
    for (size_t j = i; j < (d == MC_ACCEPT ? o->n_rcpts : i + 1); j++)
      if (mc_strv_push(&accepted, o->rcpts[j].addr, (size_t)-1) < 0) {
        rc = set_error(R, MILTER_E_NOMEM, "out of memory");
        break;
      }
    if (rc < 0)
      break;
    if (d == MC_ACCEPT) {
      t->decision = d;
      break;
    }
  }
  if (rc < 0 || t->decision != MC_CONTINUE) {
    free(rej_text);
    goto done;
  }
  if (accepted.n == 0) { /* every recipient rejected: no DATA */
    t->decision = rejected;
    t->reply = rej_text;
    goto done;
  }
  free(rej_text);

  /* DATA */
  if ((rc = send_macros(R, t, MC_ST_DATA)) < 0)
    goto done;
  if ((rc = milter_client_data(R->c, &r)) < 0) {
    rc = failed(R, rc, "DATA");
    goto done;
  }
  if ((rc = record(R, t, MILTER_CMD_DATA, NULL, &r, NULL)) < 0)
    goto done;
  if ((st = stops(R, t, &r)) != 0) {
    rc = st < 0 ? st : 0;
    goto done;
  }

  /* Header fields */
  for (size_t i = 0; i < m->n; i++) {
    const mc_header *h = &m->h[i];
    const char *value = leadspc ? h->raw : h->raw + h->lead;
    if ((rc = send_macros(R, t, MC_ST_HEADER)) < 0)
      goto done;
    if ((rc = milter_client_header(R->c, h->name, value, &r)) < 0) {
      rc = failed(R, rc, "HEADER");
      goto done;
    }
    size_t n = strlen(h->name) + strlen(value) + 3;
    char *arg = malloc(n);
    if (arg != NULL)
      snprintf(arg, n, "%s:%s%s", h->name, leadspc ? "" : " ", value);
    if ((rc = record(R, t, MILTER_CMD_HEADER, arg, &r, NULL)) < 0)
      goto done;
    if ((st = stops(R, t, &r)) != 0) {
      rc = st < 0 ? st : 0;
      goto done;
    }
  }

  /* End of headers */
  if ((rc = send_macros(R, t, MC_ST_EOH)) < 0)
    goto done;
  if ((rc = milter_client_eoh(R->c, &r)) < 0) {
    rc = failed(R, rc, "EOH");
    goto done;
  }
  if ((rc = record(R, t, MILTER_CMD_EOH, NULL, &r, NULL)) < 0)
    goto done;
  if ((st = stops(R, t, &r)) != 0) {
    rc = st < 0 ? st : 0;
    goto done;
  }

  /* Body (SKIP ends it early and goes on to end of message) */
  if (m->body_len > 0) {
    if ((rc = send_macros(R, t, MC_ST_BODY)) < 0)
      goto done;
    if ((rc = milter_client_body(R->c, m->body, m->body_len, &r)) < 0) {
      rc = failed(R, rc, "BODY");
      goto done;
    }
    char arg[64];
    snprintf(arg, sizeof arg, "%zu bytes", m->body_len);
    if ((rc = record(R, t, MILTER_CMD_BODY, mc_strdup(arg), &r, NULL)) < 0)
      goto done;
    if ((st = stops(R, t, &r)) != 0) {
      rc = st < 0 ? st : 0;
      goto done;
    }
  }

  /* End of message */
  if ((rc = send_macros(R, t, MC_ST_EOM)) < 0)
    goto done;
  if ((rc = milter_client_eom(R->c, &r)) < 0) {
    rc = failed(R, rc, "end of message");
    goto done;
  }
  *at_eom = 1;
  if ((rc = record(R, t, MILTER_CMD_EOB, NULL, &r, NULL)) < 0)
    goto done;
  t->eom = r; /* the actions stay with the transaction */
  memset(&r, 0, sizeof r);
  if (R->live != NULL)
    mc_print_actions(R->live, &t->eom);
  if ((st = stops(R, t, &t->eom)) < 0) {
    rc = st;
    goto done;
  }
  if (t->decision == MC_CONTINUE)
    t->decision = MC_ACCEPT;

done:
  if (rc == 0 && t->decision == MC_CONTINUE)
    t->decision = MC_ACCEPT;
  /* The message as delivered: only when the MTA keeps it. */
  if (rc == 0 && t->decision == MC_ACCEPT) {
    if ((rc = mc_result_init(&t->result, m, o->from, &accepted)) < 0) {
      rc = set_error(R, rc, "out of memory");
      goto out;
    }
    t->has_result = 1;
    for (size_t i = 0; i < t->eom.n_actions && rc == 0; i++)
      if ((rc = mc_result_apply(&t->result, &t->eom.actions[i], leadspc)) < 0)
        rc = set_error(R, rc, "out of memory");
    if (t->result.quarantine != NULL)
      t->decision = MC_QUARANTINE;
  }
out:
  milter_client_result_free(&r);
  mc_strv_free(&accepted);
  return rc;
}

/* ---- The connection ------------------------------------------------------*/

static int copy_nego(run *R, const milter_client_nego *n) {
  mc_report *rep = R->rep;
  rep->nego = *n;
  for (int i = 0; i < MILTER_M_COUNT; i++) {
    rep->nego.symlist[i] = NULL;
    if (n->symlist[i] != NULL &&
        (rep->nego.symlist[i] = mc_strdup(n->symlist[i])) == NULL)
      return set_error(R, MILTER_E_NOMEM, "out of memory");
  }
  rep->negotiated = 1;
  return 0;
}

/* CONNECT and HELO; 1 when a reply ends the session for the milter. */
static int run_connection(run *R) {
  const mc_opts *o = R->o;
  mc_trx *t = &R->rep->conn;
  milter_client_result r;
  memset(&r, 0, sizeof r);
  int rc;

  if ((rc = send_macros(R, t, MC_ST_CONNECT)) < 0)
    return rc;
  rc = milter_client_connect(R->c, o->client_name, o->family, o->client_port,
                             o->client_addr, &r);
  if (rc < 0)
    return failed(R, rc, "CONNECT");
  char arg[600];
  if (o->family == MILTER_FAMILY_UNKNOWN)
    snprintf(arg, sizeof arg, "%.255s [unknown]", o->client_name);
  else if (o->family == MILTER_FAMILY_UNIX)
    snprintf(arg, sizeof arg, "%.255s [unix:%.255s]", o->client_name,
             o->client_addr);
  else
    snprintf(arg, sizeof arg, "%.255s [%.255s]:%u", o->client_name,
             o->client_addr, (unsigned)o->client_port);
  rc = record(R, t, MILTER_CMD_CONNECT, mc_strdup(arg), &r, NULL);
  if (rc == 0)
    rc = stops(R, t, &r);
  if (rc != 0)
    goto out;

  if ((rc = send_macros(R, t, MC_ST_HELO)) < 0)
    goto out;
  if ((rc = milter_client_helo(R->c, o->helo, &r)) < 0) {
    rc = failed(R, rc, "HELO");
    goto out;
  }
  rc = record(R, t, MILTER_CMD_HELO, mc_strdup(o->helo), &r, NULL);
  if (rc == 0)
    rc = stops(R, t, &r);
out:
  milter_client_result_free(&r);
  return rc;
}

int mc_run(const mc_opts *o, const mc_msg *m, mc_report *rep) {
  memset(rep, 0, sizeof *rep);
  run R = {o, m, rep, NULL, (!o->json && !o->quiet) ? stdout : NULL};
  int rc = milter_client_new(&R.c, &o->copts);
  if (rc < 0)
    return set_error(&R, rc, "cannot create the client: %s",
                     milter_strerror(rc));

  if ((rc = milter_client_open(R.c, o->spec)) < 0) {
    const char *msg = milter_client_errmsg(R.c);
    set_error(&R, rc, "cannot connect to %s: %s", o->spec,
              msg && msg[0] ? msg : milter_strerror(rc));
    goto out;
  }
  milter_client_nego nego;
  if ((rc = milter_client_negotiate(R.c, &nego)) < 0) {
    failed(&R, rc, "option negotiation");
    goto out;
  }
  if ((rc = copy_nego(&R, &nego)) < 0)
    goto out;
  if (R.live != NULL)
    mc_print_negotiation(R.live, &rep->nego);
  int leadspc = (nego.protocol & MILTER_P_HDR_LEADSPC) != 0;

  if ((rc = run_connection(&R)) < 0)
    goto out;
  if (rc == 1) { /* the milter decided for the whole session */
    rep->decision = rep->conn.decision;
    rep->reply = rep->conn.reply;
    if (R.live != NULL)
      mc_print_trx_end(R.live, &rep->conn, 0);
    rc = 0;
    goto quit;
  }

  if ((rep->trx = calloc(o->count, sizeof *rep->trx)) == NULL) {
    rc = set_error(&R, MILTER_E_NOMEM, "out of memory");
    goto out;
  }
  for (unsigned i = 0; i < o->count; i++) {
    mc_trx *t = &rep->trx[i];
    rep->n_trx = i + 1;
    if (R.live != NULL)
      fprintf(R.live, "--- transaction %u\n", i + 1);
    int at_eom;
    if ((rc = run_trx(&R, t, leadspc, &at_eom)) < 0)
      goto out;
    rep->decision = t->decision;
    rep->reply = t->reply;
    if (R.live != NULL)
      mc_print_trx_end(R.live, t, i + 1);
    if (!at_eom && i + 1 < o->count) {
      if ((rc = milter_client_abort(R.c)) < 0) {
        failed(&R, rc, "ABORT");
        goto out;
      }
      if ((rc = record(&R, t, MILTER_CMD_ABORT, NULL, NULL, NULL)) < 0)
        goto out;
    }
  }

quit:
  /* The decisions are in; a milter that already hung up does not make
   * QUIT an error. */
  rc = milter_client_quit(R.c);
  if (R.live != NULL)
    fprintf(R.live, "quit%s\n", rc < 0 ? " (not delivered)" : "");
  rc = 0;
out:
  milter_client_free(R.c);
  return rc < 0 ? rc : 0;
}

static void trx_free(mc_trx *t) {
  for (size_t i = 0; i < t->n_ev; i++) {
    free(t->ev[i].arg);
    free(t->ev[i].text);
  }
  free(t->ev);
  milter_client_result_free(&t->eom);
  free(t->reply);
  if (t->has_result)
    mc_result_free(&t->result);
  memset(t, 0, sizeof *t);
}

void mc_report_free(mc_report *rep) {
  for (int i = 0; i < MILTER_M_COUNT; i++)
    free((char *)rep->nego.symlist[i]);
  trx_free(&rep->conn);
  for (size_t i = 0; i < rep->n_trx; i++)
    trx_free(&rep->trx[i]);
  free(rep->trx);
  free(rep->errmsg);
  memset(rep, 0, sizeof *rep);
}
