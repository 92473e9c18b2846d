/* spool.h -- a byte store that lives in memory up to a threshold and in an
 * unlinked temp file beyond it (internal to mailfilter). */
#ifndef MAILFILTER_SPOOL_H
#define MAILFILTER_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct mf_spool {
  uint8_t *mem;     /* in-memory bytes while fd < 0 */
  size_t len, cap;  /* used / allocated bytes of mem */
  int fd;           /* unlinked temp file once spooled, else -1 */
  uint64_t size;    /* total bytes written */
  size_t mem_max;   /* threshold */
  const char *dir;  /* temp directory (not owned) */
} mf_spool;

/* Empty spool; nothing allocated until the first write. */
void mf_spool_init(mf_spool *s, size_t mem_max, const char *dir);
/* Append.  Moves to a temp file when size would pass mem_max.  Returns 0,
 * MF_E_NOMEM or MF_E_IO (errno kept). */
int mf_spool_write(mf_spool *s, const void *data, size_t len);
/* pread-like: up to len bytes at off.  Returns the count (0 at the end) or
 * MF_E_IO / MF_E_INVAL. */
ssize_t mf_spool_read(const mf_spool *s, uint64_t off, void *buf, size_t len);
/* Free memory and close the file: nothing is left behind.  The spool is
 * empty and usable again. */
void mf_spool_reset(mf_spool *s);
/* Open an unlinked temp file in dir (O_TMPFILE where the file system has
 * it, mkstemp + unlink otherwise).  Returns the fd or -1 (errno set). */
int mf_spool_tmpfile(const char *dir);

#endif
