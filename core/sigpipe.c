/* sigpipe.c -- keeping SIGPIPE away from the process (sigpipe.h). */
#include "sigpipe.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

typedef struct guard {
  unsigned depth;
  int was_blocked; /* SIGPIPE was blocked before the outermost enter */
} guard;

static _Thread_local guard g;

static void pipe_set(sigset_t *s) {
  sigemptyset(s);
  sigaddset(s, SIGPIPE);
}

void mf_sigpipe_enter(void) {
  if (g.depth++ > 0)
    return;
  sigset_t only, old;
  pipe_set(&only);
  pthread_sigmask(SIG_BLOCK, &only, &old);
  g.was_blocked = sigismember(&old, SIGPIPE) == 1;
}

void mf_sigpipe_leave(void) {
  if (g.depth == 0 || --g.depth > 0)
    return;
  if (g.was_blocked)
    return; /* the application's mask: a pending SIGPIPE is its own */
  /* SIGPIPE was not blocked before, so it was not pending either (it would
   * have been delivered): one pending now came from a write in between.
   * Take it, then unblock SIGPIPE alone (a change a callback made to the
   * rest of the mask in between stays). */
  sigset_t only;
  pipe_set(&only);
  struct timespec zero = {0, 0};
  while (sigtimedwait(&only, NULL, &zero) < 0 && errno == EINTR)
    ;
  pthread_sigmask(SIG_UNBLOCK, &only, NULL);
}

/* ---- the poll-phase pair ------------------------------------------------ */

static void on_prepare(uv_prepare_t *h) {
  mf_sigpipe_pair *p =
      (mf_sigpipe_pair *)(void *)((char *)h - offsetof(mf_sigpipe_pair, prep));
  if (!p->inside) {
    p->inside = 1;
    mf_sigpipe_enter();
  }
}

static void on_check(uv_check_t *h) {
  mf_sigpipe_pair *p =
      (mf_sigpipe_pair *)(void *)((char *)h - offsetof(mf_sigpipe_pair, check));
  if (p->inside) {
    p->inside = 0;
    mf_sigpipe_leave();
  }
}

int mf_sigpipe_pair_init(mf_sigpipe_pair *p, uv_loop_t *loop, void *h_data) {
  p->inside = 0;
  uv_prepare_init(loop, &p->prep);
  uv_check_init(loop, &p->check);
  p->prep.data = h_data;
  p->check.data = h_data;
  uv_prepare_start(&p->prep, on_prepare);
  uv_check_start(&p->check, on_check);
  uv_unref((uv_handle_t *)&p->prep);
  uv_unref((uv_handle_t *)&p->check);
  return 0;
}

void mf_sigpipe_pair_close(mf_sigpipe_pair *p, uv_close_cb close_cb) {
  /* Closed in the poll phase (from an I/O callback): the check callback
   * will not run, so leave here.  The owner's streams are closed by now. */
  if (p->inside) {
    p->inside = 0;
    mf_sigpipe_leave();
  }
  uv_close((uv_handle_t *)&p->prep, close_cb);
  uv_close((uv_handle_t *)&p->check, close_cb);
}

/* ---- writes ------------------------------------------------------------- */

int mf_send_nosig(uv_stream_t *s, const void *p, size_t n) {
  if (s->write_queue_size != 0)
    return 0; /* keep the order: behind what libuv has queued */
  if (n > INT_MAX)
    n = INT_MAX;
  uv_os_fd_t fd;
  int rc = uv_fileno((const uv_handle_t *)s, &fd);
  if (rc < 0)
    return rc;
  ssize_t w;
  do
    w = send(fd, p, n, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w >= 0)
    return (int)w;
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return 0;
  return uv_translate_sys_error(errno);
}

int mf_uv_write(uv_write_t *req, uv_stream_t *s, const uv_buf_t *bufs,
                unsigned nbufs, uv_write_cb cb) {
  mf_sigpipe_enter();
  int rc = uv_write(req, s, bufs, nbufs, cb);
  mf_sigpipe_leave();
  return rc;
}
