/* Symbol visibility for every mailfilter module.  The libraries are built with
 * -fvisibility=hidden; only declarations marked MF_API are exported. */
#ifndef MAILFILTER_EXPORT_H
#define MAILFILTER_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define MF_API __attribute__((visibility("default")))
#else
#define MF_API
#endif

#endif
