/*
 * milter_log.h -- loggers for the way mail daemons run: syslog(3), and
 * stderr read by the systemd journal.
 *
 * A server logs through milter_server_opts.log (milter.h).  The choices:
 *
 *   milter_log_stderr (the default)
 *       One line per message on stderr:
 *           mailfilter[PID]: LEVEL: MESSAGE
 *       When the process runs under systemd with stderr connected to the
 *       journal (JOURNAL_STREAM names stderr's device and inode, see
 *       milter_log_stderr_is_journal), the line is instead
 *           <N>MESSAGE
 *       with the sd-daemon(3) priority prefix N (3 error, 4 warning,
 *       6 info, 7 debug) and without the name, pid and level, which the
 *       journal records itself.  Nothing to configure.
 *
 *   milter_log_syslog, set up with milter_log_use_syslog()
 *       syslog(3) with the given identity and facility (LOG_MAIL, LOG_DAEMON,
 *       LOG_LOCAL0 ...), options LOG_PID | LOG_NDELAY; the priority of each
 *       message is milter_log_priority(level).
 *
 * The level filter (milter_server_opts.log_level) applies before either.
 */
#ifndef MAILFILTER_MILTER_LOG_H
#define MAILFILTER_MILTER_LOG_H

#include <mailfilter/milter.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The syslog(3) priority of a level, which is also the sd-daemon(3) prefix
 * number: ERROR 3 (LOG_ERR), WARNING 4 (LOG_WARNING), INFO 6 (LOG_INFO),
 * DEBUG 7 (LOG_DEBUG); an out-of-range level counts as DEBUG. */
MF_API int milter_log_priority(milter_log_level level);

/* The level named "error", "warning", "info" or "debug" (any case; "err"
 * and "warn" too), or -1. */
MF_API int milter_log_level_parse(const char *name);

/* The syslog facility named "mail", "daemon", "user", "local0" .. "local7"
 * (any case, with or without a "log_" prefix), as LOG_MAIL etc., or -1. */
MF_API int milter_log_facility_parse(const char *name);

/* 1 when stderr is the systemd journal's stream: JOURNAL_STREAM is set and
 * its "DEVICE:INODE" equals stderr's st_dev:st_ino (the check systemd.exec(5)
 * recommends, since the variable is inherited by children whose stderr was
 * redirected).  Decided once, at the first call, for the whole process. */
MF_API int milter_log_stderr_is_journal(void);

/* Logger for milter_server_opts.log: syslog(3) at milter_log_priority(level).
 * userdata is unused.  Without milter_log_use_syslog() (or the
 * application's own openlog()), syslog's defaults apply (identity: the
 * program name, facility LOG_USER). */
MF_API void milter_log_syslog(void *userdata, milter_log_level level,
                              const char *msg);

/* Log to syslog: openlog(ident, LOG_PID | LOG_NDELAY, facility), then
 * opts->log = milter_log_syslog.  ident NULL: the program name; otherwise
 * it must stay valid as long as syslog is used (openlog keeps the
 * pointer).  facility: LOG_MAIL, LOG_DAEMON, LOG_LOCAL0 ... (<syslog.h>),
 * or milter_log_facility_parse()'s result. */
MF_API void milter_log_use_syslog(milter_server_opts *opts, const char *ident,
                                  int facility);

#ifdef __cplusplus
}
#endif

#endif
