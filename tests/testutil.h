/* Small helpers shared by the cmocka tests. */
#ifndef MF_TESTUTIL_H
#define MF_TESTUTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <mailfilter/milter.h>

/* Path of a file under tests/data ($MF_TEST_DATA); static buffer. */
const char *tu_data_path(const char *name);
/* Read a whole file (under tests/data when name is relative).  Returns a
 * malloc'd, NUL-terminated buffer and its length, or NULL. */
char *tu_read_file(const char *name, size_t *len);
/* Number of entries of a directory (dot files not counted), or -1. */
int tu_count_entries(const char *dir);
/* Number of open file descriptors of this process. */
int tu_count_fds(void);
/* A TCP socket listening on 127.0.0.1 on a free port (stored in *port), or
 * -1. */
int tu_listen_loopback(int *port);

/* A connected stream socket to 127.0.0.1:port / to a unix socket path, or
 * -1 (errno set). */
int tu_connect_loopback(int port);
int tu_connect_unix(const char *path);

/* Our server for filter d on a free loopback port, on its own thread and
 * loop, logging nothing (no signal handlers; 1 s drain on stop).  spec is
 * the socket spec to connect to.  Returns 0 or the failing step's error. */
typedef struct tu_server {
  milter_server *srv;
  pthread_t thread;
  char spec[64];
} tu_server;
int tu_server_start(tu_server *t, const milter_filter_desc *d);
void tu_server_stop(tu_server *t);

/* Run a milter_client call on the client `c` in scope; fail the cmocka test
 * with the client's error text when it does not return 0.  Include after
 * <cmocka.h> and <mailfilter/milter_client.h>. */
#define OK(call)                                                               \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != 0)                                                              \
      fail_msg("%s -> %s: %s", #call, milter_err_name(rc_),                    \
               milter_client_errmsg(c));                                       \
  } while (0)

#endif
