/* listen.h -- listening sockets and the accept loop (internal).
 *
 * An acceptor owns the listening sockets of one loop and hands each accepted
 * socket (non-blocking, close-on-exec) to a callback; what happens to the fd
 * then is the callback's business.  It accepts itself (accept4 on a uv_poll_t
 * per listener) rather than through uv_listen, because libuv hides accept
 * failures: on EMFILE/ENFILE libuv 1.44 closes a reserved fd, accepts every
 * pending connection and closes it at once, and reports nothing.
 *
 * Accept failures for lack of resources (EMFILE, ENFILE, ENOMEM, ENOBUFS, or
 * the callback failing to allocate) pause accepting on every listener for
 * ACCEPT_PAUSE_MIN_MS, doubling while it persists up to ACCEPT_PAUSE_MAX_MS,
 * back to the minimum after an accept succeeds.  Pending connections wait in
 * the kernel's backlog meanwhile and are served when resources come back.
 * Failures and refusals are logged at most once a second each, with the
 * count of what the line sums up; no count is lost (a close flushes them).
 *
 * Everything runs on the loop thread. */
#ifndef MF_CORE_LISTEN_H
#define MF_CORE_LISTEN_H

#include <stdint.h>

#include <uv.h>

#include "session.h"

enum { ACCEPT_PAUSE_MIN_MS = 20, ACCEPT_PAUSE_MAX_MS = 1000 };

/* What the accept callback did with the fd. */
enum {
  MILTER_ACCEPT_TAKEN = 0,   /* the fd is the callee's now */
  MILTER_ACCEPT_REFUSED = 1, /* the callee closed it: a limit was reached */
};

typedef struct milter_listener {
  uv_poll_t poll;
  struct milter_acceptor *acc;
  struct milter_listener *next;
  int fd;
  int is_unix;
  int inherited; /* systemd or fd:N: not ours to unlink */
  char path[108];
} milter_listener;

/* fd: the accepted socket; peer: its address as text ("1.2.3.4:5",
 * "[::1]:5" or "unix:/path").  Returns MILTER_ACCEPT_TAKEN or
 * MILTER_ACCEPT_REFUSED, or a negative errno (the callee closed the fd;
 * accepting pauses as for that errno, e.g. -ENOMEM). */
typedef int (*milter_accept_fn)(void *data, int fd, int is_unix,
                                const char *peer);

typedef struct milter_acceptor {
  uv_loop_t *loop;
  const milter_session_env *env; /* logging */
  milter_accept_fn on_accept;
  void *data;
  void (*on_closed)(void *data); /* every handle closed after close() */
  milter_listener *listeners;
  unsigned limit; /* max_connections, named in the refusal line */
  uv_timer_t pause_timer;
  uv_timer_t fail_timer;   /* failure lines, once a second at most */
  uv_timer_t refuse_timer; /* refusal lines, once a second at most */
  uint64_t pause_ms;       /* the pause in effect, 0 = accepting */
  uint64_t next_pause_ms;  /* the next one, 0 = the minimum */
  uint64_t last_pause_ms;  /* the latest one, for the log */
  unsigned fails;          /* failures not yet logged */
  unsigned episode_fails;  /* failures since accepting last went well */
  uint64_t episode_start;  /* uv_now() of the episode's first failure */
  uint64_t episode_end;    /* end of its last pause */
  int last_errno;
  unsigned refused; /* refusals not yet logged */
  char refused_peer[64];
  int handles; /* open libuv handles */
  unsigned inited : 1;
  unsigned closing : 1;
  unsigned episode : 1; /* failing since the last "accepting again" */
} milter_acceptor;

/* Initialise an acceptor on loop; no socket yet.  The log goes through
 * env (which must outlive a).  on_closed(data) runs once every handle of a
 * is closed after milter_acceptor_close(). */
void milter_acceptor_init(milter_acceptor *a, uv_loop_t *loop,
                          const milter_session_env *env, milter_accept_fn fn,
                          void *data, void (*on_closed)(void *data));

/* Listen on a socket spec (see milter_server_listen in milter.h): a stale
 * unix socket is removed first, the socket of a unix spec gets unix_mode.
 * "systemd" takes the sockets of socket activation, "fd:N" an inherited
 * listening socket (as they are: no backlog or mode applied; their unix
 * socket files are left in place at close).
 * *port gets the bound port of an inet listener (untouched otherwise).
 * Returns 0 or MILTER_E_ADDR / MILTER_E_IO / MILTER_E_NOMEM, logged. */
int milter_acceptor_listen(milter_acceptor *a, const char *spec, int backlog,
                           int unix_mode, int reuseport, int *port);

/* What a spec names (spec.c): an address for milter_parse_spec, or
 * sockets someone else made.  Returns MILTER_SPEC_ADDRESS, MILTER_SPEC_SYSTEMD
 * ("systemd"), MILTER_SPEC_FD ("fd:N", *fd = N) or MILTER_E_ADDR ("fd:"
 * without a decimal number up to INT_MAX). */
enum { MILTER_SPEC_ADDRESS = 0, MILTER_SPEC_SYSTEMD = 1, MILTER_SPEC_FD = 2 };
int milter_spec_inherited(const char *spec, int *fd);

/* Stop accepting for good: log the counts not yet logged, close every
 * listener (removing unix socket files) and timer; on_closed follows. */
void milter_acceptor_close(milter_acceptor *a);

#endif
