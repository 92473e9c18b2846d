/* log.h -- internals of core/log.c, for its tests. */
#ifndef MAILFILTER_CORE_LOG_H
#define MAILFILTER_CORE_LOG_H

#include <stddef.h>

#include <mailfilter/milter.h>

/* 1 when env ("DEVICE:INODE", as systemd sets JOURNAL_STREAM) names fd's
 * st_dev:st_ino; 0 when env is NULL, malformed or another file. */
int milter_log_journal_stream_matches(const char *env, int fd);

/* The stderr logger's line for msg, with its newline, into buf (truncated
 * to size, snprintf's return): "<N>msg" when journal, else
 * "mailfilter[PID]: LEVEL: msg". */
int milter_log_format_stderr(char *buf, size_t size, int journal,
                             milter_log_level level, const char *msg);

#endif
