/* lazy_shared_maps.h -- for the tests of libraries loaded on first use
 * (lazy_shared.c, test_addr_idna.c): include after <cmocka.h>. */
#ifndef LAZY_SHARED_MAPS_H
#define LAZY_SHARED_MAPS_H

#include <stdio.h>
#include <string.h>

/* 1 when a file whose name contains `lib` is mapped into this process. */
static inline int mapped(const char *lib) {
  FILE *f = fopen("/proc/self/maps", "r");
  assert_non_null(f);
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL)
    found = strstr(line, lib) != NULL;
  fclose(f);
  return found;
}

#endif
