/* spool.c -- body spool: memory up to a threshold, then an unlinked temp
 * file, so that a crash leaves nothing on disk.
 *
 * The memory of all spools of the process is counted together (their
 * capacities, one atomic counter: the event-loop threads share it), and a
 * spool with a budget goes to its temp file as soon as growing in memory
 * would take that total past the budget: with many messages in flight at
 * once their bodies wait in files (the page cache, not the process's
 * memory) instead of each holding up to mem_max (bench/MEMORY.md). */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stdatomic.h>

#include <mailfilter/mailfilter.h>
#include "mf_alloc.h"

static atomic_size_t mem_total;

size_t mf_spool_mem_total(void) {
  return atomic_load_explicit(&mem_total, memory_order_relaxed);
}

/* Take n more bytes of the process's spool memory; 0, or -1 when that would
 * pass budget (nothing taken then). */
static int mem_take(size_t n, size_t budget) {
  size_t before = atomic_fetch_add_explicit(&mem_total, n, memory_order_relaxed);
  if (budget != 0 && (before + n > budget || before + n < before)) {
    atomic_fetch_sub_explicit(&mem_total, n, memory_order_relaxed);
    return -1;
  }
  return 0;
}

static void mem_give(size_t n) {
  atomic_fetch_sub_explicit(&mem_total, n, memory_order_relaxed);
}

/* Drop the memory (moved to the file, or reset). */
static void mem_free(mf_spool *s) {
  free(s->mem);
  mem_give(s->cap);
  s->mem = NULL;
  s->len = s->cap = 0;
}

void mf_spool_init(mf_spool *s, size_t mem_max, const char *dir) {
  memset(s, 0, sizeof(*s));
  s->fd = -1;
  s->mem_max = mem_max;
  s->dir = dir;
}

/* The seam: 0 = go on (with *len maybe lowered), -1 = fail (errno set). */
static int fault(int op, int fd, size_t *len) {
  if (mf_fault_spool_io == NULL)
    return 0;
  size_t want = *len;
  if (mf_fault_spool_io(op, fd, len) != 0)
    return -1;
  if (*len == 0 || *len > want)
    *len = want; /* a short call moves at least one byte */
  return 0;
}

static const char *spool_dir(const char *dir) {
  if (dir == NULL || dir[0] == '\0') {
    dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0')
      dir = "/tmp";
  }
  return dir;
}

int mf_spool_tmpfile(const char *dir) {
  dir = spool_dir(dir);
  size_t zero = 0;
  if (fault(MF_SPOOL_OP_OPEN, -1, &zero) != 0)
    return -1;
#ifdef O_TMPFILE
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0)
    return fd;
  /* EISDIR / EOPNOTSUPP / EINVAL: the file system (or kernel) has no
   * O_TMPFILE; anything else (ENOENT, EACCES) fails below as well. */
#endif
  char path[PATH_MAX];
  int n = snprintf(path, sizeof(path), "%s/mailfilter-XXXXXX", dir);
  if (n < 0 || (size_t)n >= sizeof(path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  fd = mkostemp(path, O_CLOEXEC);
  if (fd < 0)
    return -1;
  unlink(path);
  return fd;
}

static int failed(mf_spool *s, int op, int err) {
  s->err = err;
  s->err_op = op;
  return op == MF_SPOOL_OP_ALLOC ? MF_E_NOMEM : MF_E_IO;
}

/* Write everything, retrying short writes and EINTR. */
static int write_all(mf_spool *s, int fd, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len > 0) {
    size_t want = len;
    ssize_t n = fault(MF_SPOOL_OP_WRITE, fd, &want) != 0
                    ? -1
                    : write(fd, p, want);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return failed(s, MF_SPOOL_OP_WRITE, errno);
    }
    if (n == 0) /* no room and no error: as the kernel says for a full disk */
      return failed(s, MF_SPOOL_OP_WRITE, ENOSPC);
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

const char *mf_spool_strerror(const mf_spool *s, char *buf, size_t n) {
  const char *what;
  switch (s->err_op) {
  case MF_SPOOL_OP_OPEN: what = "cannot create a temp file in"; break;
  case MF_SPOOL_OP_WRITE: what = "cannot write to a temp file in"; break;
  case MF_SPOOL_OP_ALLOC: what = "out of memory for"; break;
  default: what = "no error in"; break;
  }
  snprintf(buf, n, "%s %s: %s", what,
           s->err_op == MF_SPOOL_OP_ALLOC ? "the in-memory spool"
                                          : spool_dir(s->dir),
           strerror(s->err));
  return buf;
}

/* Move what is in memory to a new temp file. */
static int to_file(mf_spool *s) {
  int fd = mf_spool_tmpfile(s->dir);
  if (fd < 0)
    return failed(s, MF_SPOOL_OP_OPEN, errno);
  if (s->len > 0 && write_all(s, fd, s->mem, s->len) != 0) {
    close(fd);
    return MF_E_IO;
  }
  mem_free(s);
  s->fd = fd;
  return 0;
}

/* Room for len more bytes in memory: 0, 1 when that would pass budget
 * (0: none), or MF_E_NOMEM.  The new capacity is what is needed, at least
 * twice the old one (4 KiB the first time), never above mem_max when the
 * bytes fit in it: a 10 KiB body in one piece takes 10 KiB, not 16. */
static int grow(mf_spool *s, size_t len, size_t budget) {
  size_t need = s->len + len;
  if (need <= s->cap)
    return 0;
  size_t cap = s->cap ? 2 * s->cap : 4096;
  if (cap < need)
    cap = need;
  if (cap > s->mem_max && need <= s->mem_max)
    cap = s->mem_max;
  if (mem_take(cap - s->cap, budget) != 0)
    return 1;
  uint8_t *m = xrealloc(s->mem, cap);
  if (m == NULL) {
    mem_give(cap - s->cap);
    return failed(s, MF_SPOOL_OP_ALLOC, ENOMEM);
  }
  s->mem = m;
  s->cap = cap;
  return 0;
}

int mf_spool_write(mf_spool *s, const void *data, size_t len) {
  if (len == 0)
    return 0;
  if (s->fd < 0) {
    int rc;
    if (s->size + len > s->mem_max) {
      if ((rc = to_file(s)) != 0)
        return rc;
    } else if ((rc = grow(s, len, s->budget)) == 1 && to_file(s) != 0) {
      /* Over the budget, and no temp file: in memory after all (the
       * budget is about memory, not a reason to fail a message). */
      s->err = s->err_op = 0;
      rc = grow(s, len, 0);
    }
    if (rc < 0)
      return rc;
    if (s->fd < 0) {
      memcpy(s->mem + s->len, data, len);
      s->len += len;
      s->size += len;
      return 0;
    }
  }
  int rc = write_all(s, s->fd, data, len);
  if (rc != 0)
    return rc;
  s->size += len;
  return 0;
}

ssize_t mf_spool_read(const mf_spool *s, uint64_t off, void *buf, size_t len) {
  if (buf == NULL && len > 0)
    return MF_E_INVAL;
  if (off >= s->size)
    return 0;
  if (len > s->size - off)
    len = (size_t)(s->size - off);
  if (len > SSIZE_MAX)
    len = SSIZE_MAX;
  if (len == 0)
    return 0;
  if (s->fd < 0) {
    memcpy(buf, s->mem + off, len);
    return (ssize_t)len;
  }
  for (;;) {
    size_t want = len;
    ssize_t n = fault(MF_SPOOL_OP_PREAD, s->fd, &want) != 0
                    ? -1
                    : pread(s->fd, buf, want, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0) /* the file is shorter than what was written */
      errno = EIO;
    return n <= 0 ? MF_E_IO : n;
  }
}

void mf_spool_reset(mf_spool *s) {
  mem_free(s);
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  s->size = 0;
  s->err = s->err_op = 0;
}
