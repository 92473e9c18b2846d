/* notify.h -- the service manager's notification protocol (internal).
 *
 * What sd_notify(3) documents, done here without libsystemd (core links
 * libuv only): when NOTIFY_SOCKET names an AF_UNIX socket (a path, or an
 * abstract name written "@name"), each notification is one datagram of
 * newline-separated KEY=VALUE lines ("READY=1", "STOPPING=1",
 * "STATUS=text", "WATCHDOG=1") sent with sendto(2), MSG_NOSIGNAL and
 * MSG_DONTWAIT: the loop thread never blocks on it.  A failed send is
 * logged the first time only and is never fatal: the service manager is a
 * spectator of the filter, not a part of it.
 *
 * WATCHDOG_USEC (with WATCHDOG_PID, when set, naming this process) gives
 * the interval within which "WATCHDOG=1" must come. */
#ifndef MF_CORE_NOTIFY_H
#define MF_CORE_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "session.h"

typedef struct mf_notify {
  int fd; /* -1: off (NOTIFY_SOCKET unset or unusable) */
  struct sockaddr_un addr;
  socklen_t addrlen;
  char name[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* for the log */
  uint64_t watchdog_usec; /* 0: no watchdog for this process */
  const milter_session_env *env;
  unsigned failed : 1; /* a send failed and was logged */
} mf_notify;

/* Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the environment
 * (the variables are left set) and open the datagram socket.  Returns 1
 * when notifications are on, 0 when off (unset, or unusable: logged).  The
 * log goes through env (which must outlive n). */
int mf_notify_open(mf_notify *n, const milter_session_env *env);

/* Send msg (one or more "KEY=VALUE" lines) as one datagram.  Returns 0, or
 * a negative errno (the first failure is logged with NOTIFY_SOCKET's
 * value; later ones are not).  A no-op returning 0 when off. */
int mf_notify_send(mf_notify *n, const char *msg);

/* Close the socket; n is off afterwards.  Safe on an off notifier. */
void mf_notify_close(mf_notify *n);

#endif
