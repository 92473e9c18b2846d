/*
 * milter_aclient.h -- the MTA side of the milter protocol on a libuv loop:
 * many connections to milters from one thread, as an MTA or a load
 * generator needs.  The blocking milter_client (milter_client.h) has the
 * same options, negotiation rules and result types.
 *
 *   #include <mailfilter/milter_aclient.h>
 *
 * MODEL
 *   One milter_aclient is one connection to a milter.  Commands are issued
 *   one after the other, as the protocol wants; each event function says
 *   whether a reply is awaited:
 *     return 1  the milter will answer: cb runs exactly once, later, on the
 *               loop thread, with the result (never from inside the call);
 *     return 0  nothing awaited: the event was switched off by a NO* bit
 *               or the version (not sent), or its NR_* bit was negotiated
 *               (queued, no reply); cb is not called;
 *     return <0 a MILTER_E_* error; cb is not called.
 *   While a reply is awaited, a further event returns MILTER_E_STATE.
 *   Commands that need no reply are buffered and go out with the next
 *   command that waits for one, with ABORT, QUIT, QUIT_NC, or
 *   milter_aclient_flush(): a run of NR_HDR headers costs one write.
 *
 * RESULTS
 *   cb runs from a read callback or from a timer callback (bytes the
 *   milter sent early are decoded from a 0 ms timer): a caller that waits
 *   for one answer with uv_run(loop, UV_RUN_ONCE) should call uv_stop()
 *   in cb, or that uv_run may go on to block in its poll phase.
 *   cb(ac, err, r, arg): err 0 and r the result (status, reply, text,
 *   progress, actions -- see milter_client_result), or err < 0 and r NULL.
 *   r is owned by the aclient and freed when cb returns; move what you keep.
 *   Errors of milter_aclient_open: MILTER_E_ADDR, _IO, _TIMEOUT, _EOF,
 *   _NEGOTIATE, _PROTO.  Of events: _IO, _EOF, _TIMEOUT, _PROTO, _TOOBIG,
 *   _NOTSUP (as for milter_client).  After an error the connection is
 *   closed; later calls return MILTER_E_CLOSED.  An error while no reply is
 *   awaited (the milter closes an idle connection, a write fails after an
 *   NR command) is reported by the next call.  milter_aclient_errmsg()
 *   explains the last error.
 *
 * THREAD RULES
 *   Every function runs on the loop's thread (no locking inside); different
 *   loops on different threads are independent.  No global state.
 *
 * LIFETIME
 *   milter_aclient_new() -> open -> events ... -> milter_aclient_close().
 *   close() sends QUIT when the connection is healthy and no reply is
 *   awaited, closes the socket and frees the aclient after the loop has
 *   run its close callback; a reply still awaited is cancelled (its cb runs
 *   with MILTER_E_CLOSED).  The loop must run until closed_cb has been
 *   called (or until uv_run returns).
 *
 * SIGNALS
 *   A milter that has gone makes writes fail with MILTER_E_EOF, never
 *   SIGPIPE, whatever the application's disposition (no disposition is
 *   changed): the aclient writes with send(MSG_NOSIGNAL), blocks SIGPIPE
 *   around its uv_write calls, and adds a prepare/check handle pair to the
 *   loop (unref'd) that blocks SIGPIPE in the loop's thread around the
 *   poll phase, where libuv writes what the socket did not take at once.
 *   See milter.h, SIGNALS (SIGPIPE).
 */
#ifndef MAILFILTER_MILTER_ACLIENT_H
#define MAILFILTER_MILTER_ACLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <mailfilter/export.h>
#include <mailfilter/milter_client.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct milter_aclient milter_aclient;

/* The answer to open (r NULL) or to one event. */
typedef void (*milter_aclient_cb)(milter_aclient *ac, int err,
                                  milter_client_result *r, void *arg);
typedef void (*milter_aclient_closed_cb)(void *arg);

/* Create an aclient on loop (not connected).  opts NULL = defaults, copied
 * (milter_client_opts_init documents them; the timeouts run on the loop's
 * timers).  Returns 0 and *out, MILTER_E_INVAL or MILTER_E_NOMEM. */
MF_API int milter_aclient_new(milter_aclient **out, uv_loop_t *loop,
                              const milter_client_opts *opts);

/* The loop the aclient runs on. */
MF_API uv_loop_t *milter_aclient_loop(const milter_aclient *ac);

/* A user pointer (default NULL). */
MF_API void milter_aclient_set_data(milter_aclient *ac, void *data);
MF_API void *milter_aclient_get_data(const milter_aclient *ac);

/* Connect to the milter at spec (unix:/path, local:/path, inet:PORT@HOST,
 * inet6:PORT@HOST, inet:HOST:PORT) and negotiate.  cb(ac, err, NULL, arg)
 * runs once when the milter has answered SMFIC_OPTNEG (err 0) or failed.
 * Returns 0 (cb pending) or an error now (MILTER_E_ADDR, _STATE when opened
 * before, _IO, _NOMEM; cb not called). */
MF_API int milter_aclient_open(milter_aclient *ac, const char *spec,
                               milter_aclient_cb cb, void *arg);

/* The negotiation, after open's cb ran with 0 (zeros before).  The symlist
 * strings are owned by the aclient. */
MF_API void milter_aclient_nego(const milter_aclient *ac,
                                milter_client_nego *out);

/* English text of the last error ("" when none); owned by the aclient. */
MF_API const char *milter_aclient_errmsg(const milter_aclient *ac);

/* ---- Events (see MODEL for the return values) ----------------------------
 * Arguments as for the milter_client_* functions of the same name; strings
 * are copied during the call. */
MF_API int milter_aclient_macro(milter_aclient *ac, uint8_t cmd,
                                size_t n_pairs,
                                const char *const *names_values);
MF_API int milter_aclient_connect(milter_aclient *ac, const char *hostname,
                                  char family, uint16_t port,
                                  const char *address, milter_aclient_cb cb,
                                  void *arg);
MF_API int milter_aclient_helo(milter_aclient *ac, const char *helo,
                               milter_aclient_cb cb, void *arg);
MF_API int milter_aclient_mail(milter_aclient *ac, const char *addr,
                               size_t argc, const char *const *argv,
                               milter_aclient_cb cb, void *arg);
MF_API int milter_aclient_rcpt(milter_aclient *ac, const char *addr,
                               size_t argc, const char *const *argv,
                               milter_aclient_cb cb, void *arg);
MF_API int milter_aclient_data(milter_aclient *ac, milter_aclient_cb cb,
                               void *arg);
MF_API int milter_aclient_header(milter_aclient *ac, const char *name,
                                 const char *value, milter_aclient_cb cb,
                                 void *arg);
MF_API int milter_aclient_eoh(milter_aclient *ac, milter_aclient_cb cb,
                              void *arg);
/* Splits data into SMFIC_BODY packets of the negotiated data size.  With
 * NR_BODY every chunk is queued now (copied) and 0 is returned.  Otherwise
 * the chunks go one at a time, each after the CONTINUE of the previous one;
 * data must then stay valid and unchanged until cb has run.  cb gets the
 * last reply (the first that is not CONTINUE stops the sending), with
 * r->chunks_sent and r->progress over all chunks.  len 0 sends nothing. */
MF_API int milter_aclient_body(milter_aclient *ac, const void *data,
                               size_t len, milter_aclient_cb cb, void *arg);
/* SMFIC_BODYEOB: r->actions holds the modifications in wire order. */
MF_API int milter_aclient_eom(milter_aclient *ac, milter_aclient_cb cb,
                              void *arg);
MF_API int milter_aclient_unknown(milter_aclient *ac, const char *line,
                                  milter_aclient_cb cb, void *arg);
/* Never answered; these write at once (with anything buffered). */
MF_API int milter_aclient_abort(milter_aclient *ac);
MF_API int milter_aclient_quit_nc(milter_aclient *ac);

/* Write buffered commands now.  0 or an error. */
MF_API int milter_aclient_flush(milter_aclient *ac);

/* Bytes written to / read from the socket so far (for measurements). */
MF_API uint64_t milter_aclient_bytes_out(const milter_aclient *ac);
MF_API uint64_t milter_aclient_bytes_in(const milter_aclient *ac);

/* QUIT (when healthy and idle), close, free.  closed_cb (may be NULL) runs
 * on the loop after the aclient is gone.  NULL ac is a no-op. */
MF_API void milter_aclient_close(milter_aclient *ac,
                                 milter_aclient_closed_cb closed_cb,
                                 void *arg);

#ifdef __cplusplus
}
#endif
#endif
