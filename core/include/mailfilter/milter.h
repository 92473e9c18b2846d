/*
 * milter.h -- core's filter API: per-event callbacks (the libmilter level) and
 * the libuv server that runs them.
 *
 *   #include <mailfilter/milter.h>
 *
 * A filter is a milter_filter_desc (callbacks + what it needs from the MTA).
 * A milter_server listens on one or more sockets and runs one milter_ctx per
 * MTA connection.  Every callback returns a milter_status that becomes the
 * reply to that event, or MILTER_PENDING to reply later with
 * milter_ctx_reply().
 *
 * THREAD RULES
 *   - A server runs one or more event loops (see LOOPS), each on its own
 *     thread.  Every connection (milter_ctx) belongs to one loop for its
 *     whole life: all its callbacks run on that loop's thread, one at a
 *     time and in protocol order, and all milter_ctx_* functions for it must
 *     be called on that thread, EXCEPT milter_ctx_post(), which is
 *     thread-safe and is the hand-off for work done on other threads.
 *   - Callbacks of DIFFERENT connections may run at the same time on
 *     different loop threads.  desc.userdata (milter_ctx_filter_data) is
 *     shared by all of them: what it points to must be safe to use from
 *     several threads (or run the server with one loop: opts.loops = 1 or
 *     MAILFILTER_LOOPS=1).  Data of one connection (milter_ctx_set_data)
 *     needs no locking.
 *   - milter_server_stop() is thread-safe and async-signal-safe-ish (it only
 *     calls uv_async_send).  Everything else on milter_server: the thread
 *     that runs loop 0 (milter_server_run's, or the application's loop), or
 *     before the loops run.
 *
 * LOOPS
 *   A server that owns its loop (milter_server_new with loop NULL) runs N
 *   event loops: loop 0 in the thread that calls milter_server_run(), loops
 *   1..N-1 in threads it starts there and joins before returning.  N is
 *   opts.loops if nonzero, else MAILFILTER_LOOPS from the environment (a
 *   decimal number from 1, read by milter_server_new; an invalid value is
 *   logged and ignored), else the number of CPUs the process may use
 *   (uv_available_parallelism), at most 1024.  Loop 0 accepts every
 *   connection and gives it to the loop with the fewest open connections;
 *   it stays there until it closes.  Each loop has its own read buffer
 *   (64 KiB), timers and wake-ups; nothing is locked on the way of a
 *   message except the hand-off of a new connection.  Stopping (signal or
 *   milter_server_stop) stops accepting, then every loop drains and closes
 *   its connections as for one loop.  A server on the application's loop
 *   runs that loop only (opts.loops must be 0 or 1).
 *
 * LIFETIMES
 *   - Strings passed to callbacks point into the packet buffer and are valid
 *     only during the callback: copy what you keep.
 *   - A milter_ctx lives from the connect of the MTA to the close callback.
 *     While a reply is PENDING the ctx stays valid even if the MTA vanishes;
 *     milter_ctx_reply() then discards the reply and the ctx is freed after
 *     the close callback has run.
 *
 * SIGNALS (SIGPIPE)
 *   An MTA that hangs up while a reply is owed costs that connection only:
 *   the write fails with EPIPE or ECONNRESET, one line is logged with the
 *   peer ("closing: MTA left before the reply"), the connection is closed
 *   and the others are served.  No write of the library raises SIGPIPE,
 *   whatever the application's disposition for it (default, ignored, or a
 *   handler: the handler is not called for the library's writes).
 *   The library never changes a signal disposition (unlike libmilter's
 *   smfi_main, it does not ignore SIGPIPE for the process).  It works with
 *   the per-thread signal mask and MSG_NOSIGNAL only:
 *   - the server's writes to the MTA are its own send(..., MSG_NOSIGNAL)
 *     (a connection is a uv_poll_t; libuv writes nothing for it);
 *   - what libuv writes for the MTA-side clients (milter_aclient.h) runs
 *     with SIGPIPE blocked in the thread; a SIGPIPE that this made pending
 *     is consumed before the mask is restored, unless SIGPIPE was already
 *     blocked in that thread (then it is the application's to handle);
 *   - milter_server_run() blocks SIGPIPE in the calling thread and in the
 *     loop threads it starts, for the whole run, and restores the mask
 *     when it returns;
 *   - a server on the application's loop (milter_server_new with a loop)
 *     adds a prepare/check handle pair to that loop (unref'd: they do not
 *     keep it alive): SIGPIPE is blocked in the loop's thread from the
 *     prepare phase to the check phase, around the poll phase.  Callbacks
 *     of the application's own handles that run in that phase (I/O
 *     callbacks, and check callbacks run before the server's) see SIGPIPE
 *     blocked too: a write of theirs to a closed socket fails with EPIPE
 *     instead of raising the signal;
 *   - threads the library creates (the mailfilter layer's workers, which
 *     run decide()) start with SIGPIPE blocked: a write of decide() to a
 *     closed socket gets EPIPE, never the signal.
 *   The MTA-side clients follow the same rules (milter_aclient.h,
 *   milter_client.h).
 */
#ifndef MAILFILTER_MILTER_H
#define MAILFILTER_MILTER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <mailfilter/export.h>
#include <mailfilter/milter_codec.h>
#include <mailfilter/milter_proto.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct milter_server milter_server;
typedef struct milter_ctx milter_ctx;

/* ======================================================================== */
/* Logging                                                                  */
/* ======================================================================== */

typedef enum milter_log_level {
  MILTER_LOG_ERROR = 0,
  MILTER_LOG_WARNING = 1,
  MILTER_LOG_INFO = 2,
  MILTER_LOG_DEBUG = 3
} milter_log_level;

/* msg is one line without newline, valid during the call.  Called on the loop
 * thread (or the thread that called the failing function). */
typedef void (*milter_log_fn)(void *userdata, milter_log_level level,
                              const char *msg);

/* The default logger: "mailfilter[pid]: LEVEL: msg" on stderr, or "<N>msg"
 * (sd-daemon(3) priority prefix) when stderr is the systemd journal.  The
 * syslog logger and the details are in <mailfilter/milter_log.h>. */
MF_API void milter_log_stderr(void *userdata, milter_log_level level,
                              const char *msg);

/* The library's version, "MAJOR.MINOR.PATCH", as built (MF_VERSION_STRING
 * of <mailfilter/version.h> is the version compiled against). */
MF_API const char *milter_version(void);

/* ======================================================================== */
/* Replies                                                                  */
/* ======================================================================== */

typedef enum milter_status {
  MILTER_CONTINUE = 0, /* go on with the next step */
  MILTER_REJECT = 1,   /* 5xx; at RCPT rejects only that recipient */
  MILTER_DISCARD = 2,  /* accept and throw the message away */
  MILTER_ACCEPT = 3,   /* accept; no further events for this message */
  MILTER_TEMPFAIL = 4, /* 4xx; at RCPT only that recipient */
  MILTER_NOREPLY = 7,  /* send nothing where the NR_* bit of the event was
                          negotiated; CONTINUE where the MTA waits for a
                          reply (NR_* unknown to the MTA, "faked" as libmilter
                          does, or not asked for).  For a final status where
                          NR_* was negotiated see DEFERRED STATUS below. */
  MILTER_SKIP = 8,     /* body callback: send no more body chunks (needs
                          MILTER_P_SKIP from the MTA, which is asked for
                          whenever a body callback is set; elsewhere and
                          without it: CONTINUE) */
  MILTER_PENDING = 16, /* reply later with milter_ctx_reply() */
  MILTER_CLOSE = 32    /* send nothing and close this MTA connection (the
                          MTA then applies its default action, e.g.
                          Postfix's milter_default_action); the close
                          callback runs as for any end of connection */
} milter_status;

/* DEFERRED STATUS.  Where the NR_* bit of an event was negotiated the MTA
 * reads no reply to it.  A final status (REJECT, TEMPFAIL, DISCARD, ACCEPT)
 * returned there anyway -- directly, or with milter_ctx_reply() after
 * PENDING -- is not lost: it is kept, with the custom reply set by
 * milter_ctx_setreply(), and becomes the reply to the first later event the
 * MTA waits a reply for, end of message at the latest.  Every message thus
 * gets exactly one final answer and the MTA never waits for its timeout.
 *   - Once a status is deferred no callback runs for the rest of the
 *     message: events without a reply are swallowed; the next event with a
 *     reply is answered with the status without calling its callback.
 *   - At RCPT (and UNKNOWN) a REJECT/TEMPFAIL/DISCARD answers that
 *     recipient only, so it answers each such event and stays deferred; at
 *     DATA, end of headers, BODY and end of message (and ACCEPT anywhere) it
 *     ends the message.  When it answers end of message the eom callback is
 *     not called and the abort callback is: per-message state is freed
 *     exactly once, as for any message that ends without eom.
 *   - Deferred at connect or helo it concerns the connection: it answers
 *     every later event that gets a reply until the connection ends (or
 *     QUIT_NC); no message callback runs meanwhile.
 *   - A message's deferred status is dropped (with a log line) when the
 *     message ends before any reply is due: ABORT, a new MAIL, the
 *     connection closing.
 *   - At UNKNOWN with NR_UNKN the status concerns that command only, which
 *     the MTA has answered itself: it is dropped with a warning.
 * A line is logged when a status is deferred and when it is delivered.
 * A REJECT, TEMPFAIL or DISCARD answering end of message drops the actions
 * queued by the eom callback (see milter_ctx_clear_actions). */

/* ======================================================================== */
/* The filter                                                               */
/* ======================================================================== */

/* Callbacks.  Any may be NULL: a NULL callback's event is switched off with
 * the matching NO* step where the MTA supports that, and answered CONTINUE
 * otherwise. */
typedef struct milter_callbacks {
  milter_status (*connect)(milter_ctx *ctx, const milter_connect_info *ci);
  milter_status (*helo)(milter_ctx *ctx, const char *helo);
  /* argv[0] is the address as the MTA sent it (with angle brackets),
   * argv[1..argc-1] the ESMTP arguments.  argc >= 1. */
  milter_status (*envfrom)(milter_ctx *ctx, size_t argc,
                           const char *const *argv);
  milter_status (*envrcpt)(milter_ctx *ctx, size_t argc,
                           const char *const *argv);
  milter_status (*data)(milter_ctx *ctx);
  milter_status (*unknown)(milter_ctx *ctx, const char *line);
  /* value is exactly as received: with MILTER_P_HDR_LEADSPC negotiated it
   * keeps its leading space; folding uses "\n" or "\r\n" as the MTA sent. */
  milter_status (*header)(milter_ctx *ctx, const char *name,
                          const char *value);
  milter_status (*eoh)(milter_ctx *ctx);
  milter_status (*body)(milter_ctx *ctx, const uint8_t *chunk, size_t len);
  /* End of message: the only place where the milter_ctx_* actions work. */
  milter_status (*eom)(milter_ctx *ctx);
  /* A message in progress ended without end-of-message: ABORT; a new MAIL
   * or HELO while a message is in progress (Postfix sends MAIL after a
   * message rejected or accepted before EOM, without ABORT); an
   * out-of-order command inside a message (as libmilter); or the
   * connection ending mid-message.  Called at most once per message, never
   * after a message that reached the eom callback's reply (repeated ABORTs
   * are ignored).  The message's state must be reset; the connection goes
   * on. */
  void (*abort)(milter_ctx *ctx);
  /* Connection over (QUIT, QUIT_NC, EOF, error, timeout or server stop).
   * Called exactly once per MTA session that passed option negotiation
   * (never for a refused MTA).  For QUIT_NC the same ctx then sees a new
   * connect callback (and later a new close). */
  void (*close)(milter_ctx *ctx);
} milter_callbacks;

/* What the filter needs from the MTA.  Bits in *_required must be offered by
 * the MTA or the connection is refused (with a log line naming the missing
 * bits); bits in *_wanted are asked for when offered and silently dropped
 * when not. */
typedef struct milter_filter_desc {
  const char *name;             /* for log lines */
  milter_callbacks cb;
  uint32_t actions_required;    /* MILTER_ACT_* */
  uint32_t actions_wanted;
  uint32_t protocol_required;   /* MILTER_P_* (SKIP, HDR_LEADSPC, NR_*, ...) */
  uint32_t protocol_wanted;
  /* Largest data size the filter can take: MILTER_DATA_64K (default when 0),
   * MILTER_DATA_256K or MILTER_DATA_1M.  Negotiated down to what the MTA
   * offers. */
  uint32_t max_data_size;
  /* Macros to request per stage with SETSYMLIST, space-separated names
   * ("{auth_authen} i"); NULL = the MTA's default.  Needs the MTA to offer
   * MILTER_ACT_SETSYMLIST (v6); silently not requested otherwise. */
  const char *macros[MILTER_M_COUNT];
  void *userdata;               /* milter_ctx_filter_data() */
  unsigned flags;               /* MILTER_DESC_* */
} milter_filter_desc;

/* milter_filter_desc.flags: hand the body callback each BODY packet's bytes
 * as they arrive, instead of collecting the packet first.  The callback may
 * then see one packet in several pieces (boundaries are not packet
 * boundaries) and must not return MILTER_PENDING; the first status other
 * than CONTINUE/NOREPLY (or the last one) answers the packet.  Saves a
 * buffer of up to the data size per connection receiving a large body
 * (what a filter that only stores or scans the body wants). */
#define MILTER_DESC_STREAM_BODY 1u

/* ======================================================================== */
/* The per-connection context (loop thread only, see THREAD RULES)          */
/* ======================================================================== */

/* User slot, NULL initially, untouched by the library.  Free what it points
 * to in the close callback. */
MF_API void milter_ctx_set_data(milter_ctx *ctx, void *data);
MF_API void *milter_ctx_get_data(const milter_ctx *ctx);
MF_API void *milter_ctx_filter_data(const milter_ctx *ctx);
MF_API milter_server *milter_ctx_server(const milter_ctx *ctx);

/* The value of a macro, by name with or without braces ("i", "{i}",
 * "auth_authen", "{auth_authen}").  The most recent stage is searched first,
 * as libmilter does.  Returns NULL when unknown.  The string is valid until the
 * macro's lifetime ends: connect/helo macros until QUIT/QUIT_NC, the others
 * until ABORT or the end of the message. */
MF_API const char *milter_ctx_macro(const milter_ctx *ctx, const char *name);

/* Every macro the MTA has sent that is still in effect, in one pass: fn is
 * called with the name without braces (name_len bytes, not NUL-terminated:
 * "auth_authen" of "{auth_authen}") and its value, the most recent stage
 * first and, within a stage, in the order the MTA sent them.  A name sent at
 * several stages comes once per stage; its first call carries the value
 * milter_ctx_macro() returns.  fn returns 0 to go on, anything else to stop
 * (then returned).  Returns 0 when all were given.  Cheaper than one
 * milter_ctx_macro() per name when many names are wanted.  Same thread and
 * lifetimes as milter_ctx_macro(). */
typedef int (*milter_macro_fn)(void *ud, const char *name, size_t name_len,
                               const char *value);
MF_API int milter_ctx_macros(const milter_ctx *ctx, milter_macro_fn fn,
                             void *ud);

/* Negotiated values for this connection (valid after OPTNEG). */
MF_API uint32_t milter_ctx_version(const milter_ctx *ctx);
MF_API uint32_t milter_ctx_actions(const milter_ctx *ctx);
MF_API uint32_t milter_ctx_protocol(const milter_ctx *ctx);
MF_API uint32_t milter_ctx_data_size(const milter_ctx *ctx);
/* The peer, "127.0.0.1:43512" or "unix:/path", for log lines. */
MF_API const char *milter_ctx_peer(const milter_ctx *ctx);
/* 1 once the MTA's connection is gone (it closed, or gave up waiting for a
 * PENDING reply): a reply or action given now is dropped.  0 otherwise.
 * Loop thread. */
MF_API int milter_ctx_closed(const milter_ctx *ctx);

/* Log through the server's logger, prefixed with the peer. */
MF_API void milter_ctx_log(const milter_ctx *ctx, milter_log_level level,
                           const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A custom SMTP reply for the next REJECT or TEMPFAIL of this ctx (like
 * smfi_setreply/smfi_setmlreply): rcode "4xx"/"5xx", xcode "x.y.z" or NULL,
 * text may hold several lines separated by "\n".  As in libmilter's
 * sendreply(), it is used only when its class matches the status (5xx with
 * REJECT, 4xx with TEMPFAIL); otherwise the plain status is sent and the
 * reply kept.  It is dropped once used and when the message ends.  Returns
 * 0 or MILTER_E_INVAL (bad code, a line over 980 bytes, over 32 lines). */
MF_API int milter_ctx_setreply(milter_ctx *ctx, const char *rcode,
                               const char *xcode, const char *text);

/* Complete a PENDING reply.  status must not be MILTER_PENDING.  Where the
 * event's NR_* bit was negotiated a final status is kept for the next reply
 * (see DEFERRED STATUS).  Loop thread only; from another thread wrap it in
 * milter_ctx_post().  Returns
 * MILTER_E_STATE if no reply is pending, MILTER_E_CLOSED if the MTA has gone
 * (the reply is dropped; not an error to worry about). */
MF_API int milter_ctx_reply(milter_ctx *ctx, milter_status status);

/* Thread-safe hand-off: run fn(ctx, arg) on the loop thread, soon.  Allowed
 * only while a reply of ctx is PENDING (this is what keeps ctx alive); fn is
 * expected to end with milter_ctx_reply().  Calls are run in order, several
 * per wake-up of the loop.  Returns 0, MILTER_E_NOMEM, or MILTER_E_INVAL
 * (NULL ctx/fn, or a ctx not run by a server). */
typedef void (*milter_post_fn)(milter_ctx *ctx, void *arg);
MF_API int milter_ctx_post(milter_ctx *ctx, milter_post_fn fn, void *arg);

/* SMFIR_PROGRESS: tell the MTA to restart its timeout while a reply is
 * pending.  Loop thread.  Returns 0, MILTER_E_NOTSUP (MTA older than v6),
 * MILTER_E_STATE (before negotiation), MILTER_E_CLOSED (MTA gone). */
MF_API int milter_ctx_progress(milter_ctx *ctx);

/* ---- End-of-message actions --------------------------------------------
 * Allowed only from the eom callback or while its reply is pending.  They
 * return MILTER_E_STATE elsewhere, MILTER_E_NOTSUP when the action was not
 * negotiated, MILTER_E_INVAL on a NULL/invalid argument.  They are queued
 * and sent just before the final reply, in call order, except that all
 * replace-body chunks are sent together in one uninterrupted run after the
 * other actions (as Postfix requires).  MILTER_E_CLOSED: the MTA has gone
 * (nothing to send them to). */
MF_API int milter_ctx_addheader(milter_ctx *ctx, const char *name,
                                const char *value);
/* index: 0 = before the first header the MTA has. */
MF_API int milter_ctx_insheader(milter_ctx *ctx, uint32_t index,
                                const char *name, const char *value);
/* index: 1-based occurrence of name; value NULL or "" deletes. */
MF_API int milter_ctx_chgheader(milter_ctx *ctx, const char *name,
                                uint32_t index, const char *value);
/* args NULL: SMFIR_ADDRCPT; else SMFIR_ADDRCPT_PAR (needs ADDRCPT_PAR). */
MF_API int milter_ctx_addrcpt(milter_ctx *ctx, const char *rcpt,
                              const char *args);
MF_API int milter_ctx_delrcpt(milter_ctx *ctx, const char *rcpt);
MF_API int milter_ctx_chgfrom(milter_ctx *ctx, const char *from,
                              const char *args);
/* Appends to the replacement body (call repeatedly for a large body); sent
 * in chunks of the negotiated data size. */
MF_API int milter_ctx_replacebody(milter_ctx *ctx, const void *data,
                                  size_t len);
MF_API int milter_ctx_quarantine(milter_ctx *ctx, const char *reason);
/* Drop every action queued so far for this message (and the replacement
 * body): for an eom callback that fails half-way through its changes and
 * answers ACCEPT (or anything else) without them.  A REJECT, TEMPFAIL or
 * DISCARD at end of message drops them anyway.  Returns 0, MILTER_E_INVAL
 * (NULL ctx) or MILTER_E_STATE (not in the eom callback or its pending
 * reply). */
MF_API int milter_ctx_clear_actions(milter_ctx *ctx);

/* ======================================================================== */
/* The server                                                               */
/* ======================================================================== */

/* Options with documented defaults; fill with milter_server_opts_init(). */
typedef struct milter_server_opts {
  /* Most concurrent MTA connections; more are accepted and closed at once,
   * so that the MTA applies its default action now rather than after its
   * own timeout.  Refusals are logged at most once a second, with their
   * count ("max_connections (N) reached: K connections closed at once in
   * the last second (last from PEER)").  Default 10000. */
  unsigned max_connections;
  /* Time allowed to receive one packet once its first byte arrived
   * (slowloris guard).  Default 30000 ms. */
  uint64_t packet_timeout_ms;
  /* Time a connection may sit with no packet in flight and no reply pending
   * before it is closed.  Default 1800000 ms (30 min; Postfix's own command
   * timeout is 30 s, its content timeout 300 s). */
  uint64_t idle_timeout_ms;
  /* Largest packet length accepted whatever was negotiated.  Default
   * MILTER_DEFAULT_HARD_CAP (64 MiB). */
  uint32_t hard_cap;
  /* listen(2) backlog (the kernel caps it at net.core.somaxconn).  Default
   * 4096: a burst of MTA processes connecting at once must not meet EAGAIN
   * on a unix socket, where the kernel does not retry as it does for TCP
   * SYNs. */
  int backlog;
  /* Mode of unix sockets created by listen.  Default 0660. */
  int unix_mode;
  /* Nonzero: inet/inet6 listeners are opened with SO_REUSEPORT, so that
   * several processes serve one port (see MULTIPLE PROCESSES at
   * milter_server_listen()).  MAILFILTER_REUSEPORT=1 in the environment
   * turns it on as well, for any built filter.  Default 0. */
  int reuseport;
  /* On stop (SIGTERM/SIGINT or milter_server_stop()), time granted to
   * connections with a message in progress before they are closed.
   * Default 30000 ms. */
  uint64_t drain_timeout_ms;
  /* Install SIGTERM/SIGINT handlers on loop 0 that stop the server.
   * Default 1. */
  int handle_signals;
  /* Event loops (threads) for a server that owns its loop: see LOOPS.
   * 0 (default): MAILFILTER_LOOPS, else the number of CPUs.  A server on the
   * application's loop accepts only 0 or 1 (else MILTER_E_INVAL). */
  unsigned loops;
  /* While a reply is PENDING, send PROGRESS to the MTA every progress_ms
   * (protocol v6 MTAs; Postfix and Sendmail then restart their timeout for
   * the reply).  0 (default): never; the application may still call
   * milter_ctx_progress() itself. */
  uint64_t progress_ms;
  /* When NOTIFY_SOCKET is set, tell the service manager how the server
   * is doing (READY=1, STATUS=, STOPPING=1, WATCHDOG=1: see SYSTEMD
   * below).  Default 1; 0: never. */
  int notify;
  /* Logger and its userdata.  Default milter_log_stderr (stderr; "<N>"
   * priority prefixes under the systemd journal); milter_log_use_syslog()
   * of <mailfilter/milter_log.h> selects syslog(3). */
  milter_log_fn log;
  void *log_data;
  milter_log_level log_level;   /* default MILTER_LOG_INFO */
  /* Most connections of one loop whose reply is PENDING at once (a
   * decision handed to another thread, e.g. mailfilter's workers).  At the
   * bound the loop stops reading its other connections -- no message
   * starts or grows -- and their MTAs wait in the kernel's socket buffers
   * (libmilter's MTAs wait for a free thread the same way) until half of
   * those replies have been given.  This bounds the memory of messages
   * waiting for slow decisions by max_pending per loop, whatever the
   * number of connections.  Default 128; 0: no bound. */
  unsigned max_pending;
} milter_server_opts;

MF_API void milter_server_opts_init(milter_server_opts *opts);

/* Create a server for the filter.  loop NULL: the server makes and owns its
 * own loop (run with milter_server_run).  Otherwise it adds its handles to the
 * caller's loop, which the caller runs.  desc and opts are copied (the
 * strings in desc must outlive the server).  opts NULL = defaults.  Returns
 * 0 and *out, or a negative error. */
MF_API int milter_server_new(milter_server **out, uv_loop_t *loop,
                             const milter_filter_desc *desc,
                             const milter_server_opts *opts);

/* Listen on a socket spec as Postfix/libmilter write them:
 *   unix:/path  local:/path  /path  inet:PORT@HOST  inet:PORT
 *   inet:HOST:PORT  inet6:PORT@HOST  inet6:PORT
 * or on listening sockets made by someone else:
 *   systemd   the sockets of systemd socket activation (see SYSTEMD);
 *   fd:N      the listening socket open as descriptor N (inherited from
 *             the parent process).
 * A stale unix socket (nobody accepting on it) is removed first; a live one
 * or a non-socket file at the path is an error.  May be called several
 * times, before or while the server runs (loop thread).  Returns 0 or
 * MILTER_E_ADDR / MILTER_E_IO / MILTER_E_NOMEM (logged with the reason), or
 * MILTER_E_STATE once the server is stopping.
 *
 * Out of descriptors or memory (accept fails with EMFILE, ENFILE, ENOMEM or
 * ENOBUFS, or a new connection cannot be allocated: that one is closed):
 * accepting pauses on every listener for 20 ms, doubling while the
 * failures go on up to 1 s, back to 20 ms once an accept succeeds.
 * Meanwhile the connections wait in the listen backlog and are served when
 * resources come back; nothing spins.  Logged at most once a second with
 * the count ("accept: Too many open files: accepting paused 1000 ms (1 time
 * in the last second)"), and
 * once when a whole second went by without a failure ("accept: accepting
 * again (K failures over N ms)").  Counts not yet logged when the server
 * stops are logged then.
 *
 * MULTIPLE PROCESSES.  With opts.reuseport set, or MAILFILTER_REUSEPORT=1
 * in the environment (read at each listen; any other value or none: the
 * option decides; off by default), inet
 * and inet6 listeners are opened with SO_REUSEPORT: several filter
 * processes of the same user, each with it set, listen on one port and
 * the kernel spreads the MTA's connections over them (by a hash of the
 * connection's addresses, not by load).  Without it a second listen on a
 * port in use fails (MILTER_E_IO, "bind: Address already in use"), which
 * is what catches a filter started twice by mistake: with it, that start
 * succeeds silently.  Connections still waiting in the backlog of a
 * process that stops are reset (Linux), and the MTA applies its default
 * action to them; stop one process at a time.  No effect on unix sockets.
 * Across hosts, see examples/haproxy/. */
MF_API int milter_server_listen(milter_server *srv, const char *spec);

/* SYSTEMD
 *   Socket activation.  The spec "systemd" takes the sockets the service
 *   manager passed as sd_listen_fds(3) documents, without libsystemd:
 *   LISTEN_FDS sockets from descriptor 3 on, only if LISTEN_PID is this
 *   process; LISTEN_FDNAMES (the .socket unit's FileDescriptorName=) only
 *   names them in the log.  The three variables are unset once read, found
 *   usable or not (setenv/unsetenv: call it before starting threads that
 *   read the environment); a second "systemd" listen finds none.  Each
 *   descriptor must be a listening stream socket (SO_ACCEPTCONN, SO_TYPE)
 *   of family unix, inet or inet6; it gets FD_CLOEXEC and O_NONBLOCK.
 *   Every one is checked before any is served: one that is not usable
 *   fails the whole listen with MILTER_E_ADDR and a line naming the
 *   descriptor and what it is ("listen systemd (fd 3): a stream socket
 *   that is not listening ..."), and so do LISTEN_PID naming another
 *   process and LISTEN_FDS unset or 0.  "fd:N" checks its one descriptor
 *   the same way ("listen fd:N: no such file descriptor", "not a socket",
 *   ...).  A served socket is logged as "listening on systemd (fd 3)
 *   'name': unix:/run/mailfilter/x.sock" (or "... : 127.0.0.1:10025").
 *   Such sockets keep what their creator gave them: no backlog, unix_mode
 *   or SO_REUSEPORT is applied, and their unix socket files are not
 *   removed when the server stops (they belong to the .socket unit).
 *
 *   Notification.  When NOTIFY_SOCKET is set (Type=notify services) and
 *   opts.notify is 1 (the default), the server sends sd_notify(3)
 *   datagrams to that AF_UNIX socket (a path, or "@name" for an abstract
 *   one) itself, with MSG_NOSIGNAL and without blocking:
 *     READY=1 and STATUS=0 connections, 0 messages
 *        once the loop runs with a listener (the first iteration after the
 *        first successful listen);
 *     STATUS=N connections, M messages
 *        at most once a second, when a count changed: N open MTA
 *        connections, M end-of-message commands received since start;
 *     STOPPING=1 and STATUS=stopping: N connections, M messages
 *        when the server begins to stop (signal or milter_server_stop);
 *     WATCHDOG=1
 *        when WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is this
 *        process), every half of that interval (or every second if less).
 *   A failed send is logged once and is never fatal.  The variables are
 *   left set.  Each server of a process notifies on its own.
 *   examples/systemd/ has .socket and .service units for the examples. */

/* The bound port of the last inet listener (after "inet:0@127.0.0.1"). */
MF_API int milter_server_port(const milter_server *srv);

/* Run the server's own loop until it is stopped and drained.  Returns 0. */
MF_API int milter_server_run(milter_server *srv);

/* Stop accepting; connections with no message in progress are closed now,
 * others when their message ends or the drain timeout passes; then the
 * server's handles close and milter_server_run returns (a ctx whose reply
 * is still pending keeps the loop running until milter_ctx_reply).
 * Thread-safe; a no-op once the server has shut down. */
MF_API void milter_server_stop(milter_server *srv);

/* Free the server (after run returned, or, for an external loop, after stop
 * and the loop has run until the server's handles closed).  If the server
 * is still running, it is stopped at once (no drain; pending replies are
 * abandoned, their close callbacks run) and the loop is run until its
 * handles are closed: do not call it from a callback of that loop. */
MF_API void milter_server_free(milter_server *srv);

/* Loop 0: the loop milter_server_run() runs, or the application's. */
MF_API uv_loop_t *milter_server_loop(const milter_server *srv);
/* Open MTA connections, all loops (any thread; a snapshot). */
MF_API unsigned milter_server_connections(const milter_server *srv);
/* The number of event loops the server runs (see LOOPS). */
MF_API unsigned milter_server_loops(const milter_server *srv);

/* Parse a socket spec into a sockaddr (inet/inet6) or a path (unix).
 * Returns 0 or MILTER_E_ADDR.  For unix specs *is_unix = 1 and path is
 * copied into path (pathlen bytes). */
MF_API int milter_parse_spec(const char *spec, struct sockaddr_storage *sa,
                             int *is_unix, char *path, size_t pathlen);

#ifdef __cplusplus
}
#endif
#endif
