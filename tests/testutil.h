/* Small helpers shared by the cmocka tests. */
#ifndef MF_TESTUTIL_H
#define MF_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Path of a file under tests/data ($MF_TEST_DATA); static buffer. */
const char *tu_data_path(const char *name);
/* Read a whole file (under tests/data when name is relative).  Returns a
 * malloc'd, NUL-terminated buffer and its length, or NULL. */
char *tu_read_file(const char *name, size_t *len);
/* Number of open file descriptors of this process. */
int tu_count_fds(void);

#endif
