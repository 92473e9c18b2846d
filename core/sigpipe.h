/* sigpipe.h -- keeping SIGPIPE away from the process (internal).
 *
 * The library never changes signal dispositions.  Its own socket writes use
 * send(MSG_NOSIGNAL); libuv's writes (uv_write's first attempt, the rest of
 * a queued write in the poll phase) run with SIGPIPE blocked in the calling
 * thread, and a SIGPIPE they made pending is consumed before the mask is
 * restored.  Guards nest per thread: only the outermost one makes system
 * calls.
 *
 * Where libuv writes: in uv_write() (its first attempt, when nothing is
 * queued), in the poll phase (POLLOUT), and in the pending phase of the
 * next iteration for the request queued behind one that completed.  The
 * first two are covered (mf_uv_write, the prepare/check pair); the third
 * is avoided: a stream has at most one uv_write in flight, the next bytes
 * wait in our buffer until its callback. */
#ifndef MF_SIGPIPE_H
#define MF_SIGPIPE_H

#include <stddef.h>

#include <uv.h>

/* Block SIGPIPE in this thread until the matching mf_sigpipe_leave(). */
void mf_sigpipe_enter(void);
/* Undo mf_sigpipe_enter(); the outermost call consumes a SIGPIPE raised in
 * between (when SIGPIPE was not blocked before) and restores the mask. */
void mf_sigpipe_leave(void);

/* A prepare/check pair on a loop the application runs: SIGPIPE is blocked
 * from the prepare phase to the check phase (the poll phase, where libuv
 * writes queued data).  Both handles are unref'd.  h_data is stored in
 * both handles' data (for the owner's close callback). */
typedef struct mf_sigpipe_pair {
  uv_prepare_t prep;
  uv_check_t check;
  int inside; /* prepare ran, check not yet */
} mf_sigpipe_pair;

int mf_sigpipe_pair_init(mf_sigpipe_pair *p, uv_loop_t *loop, void *h_data);
/* Close both handles (close_cb runs once for each). */
void mf_sigpipe_pair_close(mf_sigpipe_pair *p, uv_close_cb close_cb);

/* Write what the socket takes now without SIGPIPE: the byte count (0 when
 * it would block or libuv has writes queued on s), or a libuv error
 * (UV_EPIPE, UV_ECONNRESET, ...). */
int mf_send_nosig(uv_stream_t *s, const void *p, size_t n);

/* uv_write() with SIGPIPE blocked for its immediate attempt. */
int mf_uv_write(uv_write_t *req, uv_stream_t *s, const uv_buf_t *bufs,
                unsigned nbufs, uv_write_cb cb);

#endif
