/* spool.h -- a byte store that lives in memory up to a threshold and in an
 * unlinked temp file beyond it (internal to mailfilter). */
#ifndef MAILFILTER_SPOOL_H
#define MAILFILTER_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct mf_spool {
  uint8_t *mem;    /* in-memory bytes while fd < 0 */
  size_t len, cap; /* used / allocated bytes of mem */
  uint64_t size;   /* total bytes written */
  size_t mem_max;  /* threshold */
  size_t budget;   /* memory of every spool of the process together, at
                      most (mf_opts.body_mem_total); 0 = no bound */
  const char *dir; /* temp directory (not owned) */
  int fd;          /* unlinked temp file once spooled, else -1 */
  int err;         /* errno of the last failure, 0 if none */
  int err_op;      /* MF_SPOOL_OP_* of the last failed write */
} mf_spool;

/* The spool's system calls, for mf_fault_spool_io() and err_op. */
enum {
  MF_SPOOL_OP_OPEN = 1,  /* creating the temp file */
  MF_SPOOL_OP_WRITE = 2, /* write(2) to it */
  MF_SPOOL_OP_PREAD = 3, /* pread(2) from it */
  MF_SPOOL_OP_ALLOC = 4  /* growing the in-memory buffer (err_op only) */
};

/* I/O fault seam (as core/seam/mf_alloc.h for allocations): defined only by
 * a test (tests/test_spool_faults.c); a weak reference, NULL in every other
 * program.  Called before each system call of a spool: op, the fd (-1 for
 * OPEN) and *len, the byte count about to be written or read (0 for OPEN).
 * Return 0 to let the call run -- with *len lowered, a short write or read
 * (at least 1 byte is asked for) -- or -1 with errno set to make it fail as
 * the kernel would. */
extern int mf_fault_spool_io(int op, int fd, size_t *len)
    __attribute__((weak, visibility("default")));

/* Empty spool; nothing allocated until the first write.  No budget (set
 * s->budget after this for one). */
void mf_spool_init(mf_spool *s, size_t mem_max, const char *dir);
/* Append.  Moves to a temp file when size would pass mem_max, or when
 * growing the memory would take the process's spool memory (all spools
 * together, mf_spool_mem_total()) past s->budget.  Returns 0, MF_E_NOMEM or
 * MF_E_IO (errno kept). */
int mf_spool_write(mf_spool *s, const void *data, size_t len);
/* pread-like: up to len bytes at off.  Returns the count (0 at the end) or
 * MF_E_IO (errno set; EIO when the file ends early) / MF_E_INVAL. */
ssize_t mf_spool_read(const mf_spool *s, uint64_t off, void *buf, size_t len);
/* The last failed write as text ("cannot create a temp file in /x: No such file
 * or directory"), into buf. */
const char *mf_spool_strerror(const mf_spool *s, char *buf, size_t n);
/* Bytes of memory every spool of the process holds now (their capacities;
 * any thread). */
size_t mf_spool_mem_total(void);
/* Free memory and close the file: nothing is left behind.  The spool is
 * empty and usable again (the last failure is forgotten). */
void mf_spool_reset(mf_spool *s);
/* Open an unlinked temp file in dir (O_TMPFILE where the file system has
 * it, mkstemp + unlink otherwise).  Returns the fd or -1 (errno set). */
int mf_spool_tmpfile(const char *dir);

#endif
