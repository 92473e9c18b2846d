/*
 * addr.h -- IDNA-aware mailbox addresses (RFC 5321 paths, RFC 6531 SMTPUTF8).
 *
 *   #include <mailfilter/addr.h>      link: mfaddr (pkg-config mfaddr)
 *
 * An mf_addr is one parsed address as an MTA hands it over in MAIL FROM or
 * RCPT TO: "<user@example.com>", "user@example.com", the null sender "<>",
 * a source route "<@a,@b:user@example.com>" (kept, otherwise ignored), a
 * quoted local part "\"john doe\"@example.com", an address literal
 * "user@[192.0.2.1]" / "user@[IPv6:2001:db8::1]", and UTF-8 local parts and
 * domains.  ESMTP parameters ("SIZE=123 BODY=8BITMIME") are a separate
 * object, mf_addr_params.
 *
 * This module knows nothing of sockets or of the milter protocol.
 *
 * FORMS OF THE DOMAIN
 *   original   exactly as written in the input (mf_addr_domain()).  Never
 *              rewritten: formatting without MF_ADDR_FMT_ALABEL/ULABEL gives
 *              back the user's spelling.
 *   A-label    "xn--zck5b2b.example.com": IDNA2008 with UTS #46
 *              non-transitional mapping (libidn2), NFC input, lower case
 *              (mf_addr_domain_alabel()).
 *   U-label    "スパム.example.com": the A-label decoded to Unicode, NFC,
 *              lower case (mf_addr_domain_ulabel()).
 *   NFC of a domain is libidn2's (IDN2_NFC_INPUT); ICU is not used for
 *   domains.  An ASCII domain without "xn--" labels needs no libidn2 (it is
 *   checked and lower-cased as libidn2 would); the shared library loads
 *   libidn2 when a domain first needs it, and when it cannot be loaded such
 *   a domain is refused with MF_ADDR_E_IDNA ("cannot load libidn2: ...").
 *   All three are computed when the address is parsed (eagerly); a parsed
 *   mf_addr is immutable.
 *
 * EQUALITY (mf_addr_equal())
 *   Two addresses are equal when their local parts are byte-equal after
 *   removing quoting ("\"john\"" == "john") and NFC normalisation (ICU, loaded
 *   when a non-ASCII local part first needs it), case
 *   KEPT (RFC 5321 2.4: the local part is case-sensitive), and their domains
 *   are equal case-insensitively in A-label form.  So
 *   spam-trap@スパム.example.com, spam-trap@XN--ZCK5B2B.example.com and an NFD
 *   spelling of the same domain are equal; Spam-trap@... is not.  Address
 *   literals compare in canonical form (inet_ntop): user@[IPv6:2001:DB8:0::1]
 *   equals user@[IPv6:2001:db8::1].  Two null senders are equal.  The source
 *   route is ignored.
 *
 * ERRORS
 *   Functions return 0 (or a non-negative count/length) on success and a
 *   negative MF_ADDR_E_* code on failure; mf_addr_strerror() names the code.
 *   Every function that judges input also takes `const char **why`: when not
 *   NULL it is set, on failure, to a static, more precise English message
 *   ("domain label longer than 63 octets in A-label form"), and left
 *   untouched on success.  *why is never NULL or empty after a failure.
 *   Bad input is never silently repaired: it is an error.
 *
 * THREAD RULES
 *   - Every function is reentrant: there is no global state in this module.
 *     libidn2 and ICU's NFC normaliser (unorm2_getNFCInstance) are
 *     thread-safe; ICU initialises its data once, internally locked; each
 *     is loaded once (pthread_once) by whichever thread needs it first.
 *   - A parsed mf_addr is immutable (everything is computed at parse time),
 *     so one mf_addr may be read by any number of threads at once (all the
 *     const accessors, mf_addr_equal, mf_addr_format...).  Only
 *     mf_addr_free() needs exclusive access.
 *   - An mf_addr_params is a plain mutable container: readers may share it
 *     when nobody modifies it; any mf_addr_params_set/remove/free needs
 *     exclusive access (no internal lock).
 *
 * MEMORY
 *   Objects are freed with mf_addr_free() / mf_addr_params_free().  Strings
 *   returned by accessors point into the object and live as long as it.
 *   Strings returned through `char **out` are malloc'd: free() them.
 *
 * LIMITS (RFC 5321 4.5.3.1, checked, never truncated)
 *   local part <= 64 octets (as written, UTF-8 octets, quotes included);
 *   domain label <= 63 octets and domain <= 253 octets, both in A-label form.
 */
#ifndef MAILFILTER_ADDR_H
#define MAILFILTER_ADDR_H

#include <stddef.h>

#include <mailfilter/export.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_addr mf_addr;
typedef struct mf_addr_params mf_addr_params;

/* ======================================================================== */
/* Error codes                                                              */
/* ======================================================================== */

enum {
  MF_ADDR_OK = 0,
  MF_ADDR_E_NOMEM = -1,            /* out of memory */
  MF_ADDR_E_INVAL = -2,            /* bad argument (NULL pointer, bad flag) */
  MF_ADDR_E_UTF8 = -3,             /* invalid UTF-8 */
  MF_ADDR_E_CTRL = -4,             /* control character (C0, DEL, C1, NUL) */
  MF_ADDR_E_SYNTAX = -5,           /* character not allowed here; empty */
  MF_ADDR_E_BRACKET = -6,          /* unbalanced < > or [ ] */
  MF_ADDR_E_QUOTE = -7,            /* unbalanced quote or bad \ escape */
  MF_ADDR_E_TRAILING = -8,         /* garbage after the address */
  MF_ADDR_E_LOCAL_EMPTY = -9,      /* "@example.com", "\"\"@example.com",
                                      "<@route:@example.com>" */
  MF_ADDR_E_LOCAL_TOO_LONG = -10,  /* local part over 64 octets */
  MF_ADDR_E_NO_DOMAIN = -11,       /* "user" where a domain is required */
  MF_ADDR_E_DOMAIN = -12,          /* domain syntax: empty label, bad char,
                                      leading/trailing hyphen */
  MF_ADDR_E_LABEL_TOO_LONG = -13,  /* label over 63 octets (A-label form) */
  MF_ADDR_E_DOMAIN_TOO_LONG = -14, /* domain over 253 octets (A-label form) */
  MF_ADDR_E_PUNYCODE = -15,        /* invalid A-label ("xn--abc-") */
  MF_ADDR_E_IDNA = -16,            /* IDNA2008/UTS #46 refuses the domain
                                      (disallowed code point, bidi, ...),
                                      or libidn2 cannot be loaded */
  MF_ADDR_E_LITERAL = -17,         /* bad address literal "[...]" */
  MF_ADDR_E_ROUTE = -18,           /* bad source route */
  MF_ADDR_E_NULL = -19,            /* "<>" where not allowed */
  MF_ADDR_E_NORMALIZE = -20,       /* ICU could not NFC-normalise (a local
                                      part), or cannot be loaded */
  MF_ADDR_E_ESMTP = -21,           /* bad ESMTP parameter */
  MF_ADDR_E_DUPLICATE = -22,       /* the same ESMTP keyword twice */
  MF_ADDR_E_NOTFOUND = -23,        /* no such ESMTP parameter */
  MF_ADDR_E_XTEXT = -24            /* bad xtext ("+4" , "+ZZ") */
};

/* Name of an error code ("invalid Punycode (A-label)"); never NULL, also for
 * unknown codes.  Static string; any thread. */
MF_API const char *mf_addr_strerror(int err);

/* ======================================================================== */
/* Parsing                                                                  */
/* ======================================================================== */

/* Flags for mf_addr_parse*() and mf_addr_new().  0 means: a plain mailbox
 * local@domain, with or without angle brackets, no null sender. */
enum {
  /* MAIL FROM context: the null sender "<>" is allowed (brackets
   * required for it; an empty string is always MF_ADDR_E_SYNTAX). */
  MF_ADDR_MAIL_FROM = 1u << 0,
  /* RCPT TO context: "<postmaster>" (any case, RFC 5321 4.5.1) without a
   * domain is allowed; other local parts still need a domain. */
  MF_ADDR_RCPT_TO = 1u << 1,
  /* Any local part without a domain is allowed ("user", as some MTAs pass
   * unqualified addresses). */
  MF_ADDR_ALLOW_NO_DOMAIN = 1u << 2,
  /* Require the angle brackets. */
  MF_ADDR_REQUIRE_BRACKETS = 1u << 3,
  /* Accept empty atoms in an unquoted local part ("john..doe", ".john",
   * "john.") as Postfix does with strict_rfc821_envelopes=no.  They are
   * kept as written. */
  MF_ADDR_LAX_DOTS = 1u << 4
};

/* Parse one address, NUL-terminated s (e.g. argv[0] of the milter MAIL/RCPT
 * event).  Nothing may precede or follow the address, not even spaces.
 * On success *out is a new mf_addr (free with mf_addr_free()) and 0 is
 * returned; on failure *out is set to NULL and a negative MF_ADDR_E_* code
 * is returned (and *why is set when why is not NULL).
 * Errors: INVAL (s or out NULL, unknown flag), NOMEM, and every input error
 * above.  Any thread. */
MF_API int mf_addr_parse(const char *s, unsigned flags, mf_addr **out,
                         const char **why);

/* The same for len bytes at s (s need not be NUL-terminated; an embedded NUL
 * is MF_ADDR_E_CTRL). */
MF_API int mf_addr_parse_n(const char *s, size_t len, unsigned flags,
                           mf_addr **out, const char **why);

/* Parse a whole command argument as in "MAIL FROM:<a@b> SIZE=1 BODY=8BITMIME":
 * the address (with or without brackets), then zero or more ESMTP
 * parameters separated by one or more spaces.  Give it the text after
 * "MAIL FROM:" / "RCPT TO:" (no space before the address: RFC 5321 has
 * none, and this parser does not skip any).  On success *addr and *params (may
 * be empty, never NULL) are new objects; on failure both are set to NULL.  Any
 * thread. */
MF_API int mf_addr_parse_cmd(const char *s, unsigned flags, mf_addr **addr,
                             mf_addr_params **params, const char **why);

/* Build an address from its parts.  local is the local part's VALUE, not
 * its wire form: it is quoted (with \ escapes for '"' and '\') when it is
 * not a dot-atom ("john doe" -> "\"john doe\""), kept as is otherwise.
 * domain is NULL (then flags must allow it, see MF_ADDR_RCPT_TO /
 * MF_ADDR_ALLOW_NO_DOMAIN), a domain in any form (kept as given), or an
 * address literal with its brackets ("[192.0.2.1]").  The result is checked
 * exactly like parsed input.  local NULL and domain NULL give the null
 * sender (whatever the flags); local NULL with a domain is MF_ADDR_E_INVAL.
 * MF_ADDR_REQUIRE_BRACKETS is ignored here.  Errors as mf_addr_parse().
 * Any thread. */
MF_API int mf_addr_new(const char *local, const char *domain, unsigned flags,
                       mf_addr **out, const char **why);

/* A deep copy; NULL on NOMEM or a NULL a. */
MF_API mf_addr *mf_addr_dup(const mf_addr *a);

/* Free; NULL is fine.  Needs exclusive access to a. */
MF_API void mf_addr_free(mf_addr *a);

/* ======================================================================== */
/* Accessors (any thread, a may be shared read-only)                        */
/* ======================================================================== */

/* 1 for the null sender "<>", else 0. */
MF_API int mf_addr_is_null(const mf_addr *a);

/* Local part as written, quotes and escapes included ("\"john doe\"").  ""
 * for the null sender.  Valid as long as a. */
MF_API const char *mf_addr_local(const mf_addr *a);

/* Local part's value: quotes removed and \ escapes resolved ("john doe").
 * Not NFC-normalised (that is only used for comparison). */
MF_API const char *mf_addr_local_value(const mf_addr *a);

/* 1 when the local part was written as a quoted string. */
MF_API int mf_addr_is_quoted(const mf_addr *a);

/* Domain as written ("スパム.Example.com", "[IPv6:2001:DB8::1]"), NULL when
 * there is none (null sender, "<postmaster>", MF_ADDR_ALLOW_NO_DOMAIN). */
MF_API const char *mf_addr_domain(const mf_addr *a);

/* Domain in A-label form, lower case ("xn--zck5b2b.example.com"); for a
 * literal the canonical literal ("[IPv6:2001:db8::1]").  NULL when there is
 * no domain. */
MF_API const char *mf_addr_domain_alabel(const mf_addr *a);

/* Domain in U-label form, NFC, lower case ("スパム.example.com"); for a
 * literal the same as mf_addr_domain_alabel().  NULL when no domain. */
MF_API const char *mf_addr_domain_ulabel(const mf_addr *a);

/* 1 when the domain is an address literal "[...]". */
MF_API int mf_addr_is_literal(const mf_addr *a);

/* 1 when the address as written has any non-ASCII octet (local part, domain
 * or route). */
MF_API int mf_addr_has_utf8(const mf_addr *a);

/* 1 when the address cannot be sent without the SMTPUTF8 extension: the local
 * part is non-ASCII (a U-label domain alone can be sent as an A-label). */
MF_API int mf_addr_needs_smtputf8(const mf_addr *a);

/* The source route as written without the ':' ("@a,@b"), NULL when none. */
MF_API const char *mf_addr_route(const mf_addr *a);

/* "local@domain" as written, without brackets and route ("" for the null
 * sender, "postmaster" without domain).  Handy for logs.  Valid as long as
 * a. */
MF_API const char *mf_addr_str(const mf_addr *a);

/* The comparison key: NFC local part value + "@" + A-label domain (lower
 * case, canonical literal); "" for the null sender, no "@" when there is no
 * domain.  mf_addr_equal(a, b) == !strcmp(mf_addr_key(a), mf_addr_key(b)),
 * so it can key a hash table.  Valid as long as a. */
MF_API const char *mf_addr_key(const mf_addr *a);

/* ======================================================================== */
/* Comparison and domain tests (any thread)                                 */
/* ======================================================================== */

/* 1 when equal as defined under EQUALITY above, else 0 (also when either is
 * NULL). */
MF_API int mf_addr_equal(const mf_addr *a, const mf_addr *b);

/* 1 when a's domain is `domain`, given in any form (A-label, U-label, any
 * case, NFD, or a literal "[192.0.2.1]"), compared in A-label form.
 * Returns 0 when not, when a has no domain, and when `domain` is not a valid
 * domain (so `if (mf_addr_domain_is(...))` is always safe). */
MF_API int mf_addr_domain_is(const mf_addr *a, const char *domain);

/* 1 when a's domain is `domain` or a subdomain of it, on label boundaries:
 * a.example.com and example.com are under example.com, badexample.com is
 * not.  IDNA-aware like mf_addr_domain_is().  A literal is only "under"
 * itself.  0 otherwise, including on invalid `domain`. */
MF_API int mf_addr_domain_under(const mf_addr *a, const char *domain);

/* ======================================================================== */
/* Formatting                                                               */
/* ======================================================================== */

enum {
  MF_ADDR_FMT_BRACKETS = 1u << 0, /* wrap in < > ("<>" for the null sender) */
  MF_ADDR_FMT_ALABEL = 1u << 1,   /* domain in A-label form */
  MF_ADDR_FMT_ULABEL = 1u << 2,   /* domain in U-label form */
  MF_ADDR_FMT_ROUTE = 1u << 3     /* keep the source route (dropped by
                                     default, RFC 5321 says to ignore it) */
};

/* Write a in wire form into buf (size bytes), snprintf style: returns the
 * length the full output needs (without the NUL); if that is >= size the
 * output is truncated but still NUL-terminated (when size > 0).  buf may be
 * NULL when size is 0.  Without FMT_ALABEL/ULABEL the domain and local part
 * are as written.  Returns MF_ADDR_E_INVAL for NULL a or both FMT_ALABEL and
 * FMT_ULABEL.  Any thread. */
MF_API int mf_addr_format(const mf_addr *a, unsigned fmt, char *buf,
                          size_t size);

/* The same into a new malloc'd string *out (free()).  Returns its length or
 * MF_ADDR_E_INVAL / MF_ADDR_E_NOMEM. */
MF_API int mf_addr_format_alloc(const mf_addr *a, unsigned fmt, char **out);

/* ======================================================================== */
/* Domains on their own                                                     */
/* ======================================================================== */

/* Convert one domain (no "@", no brackets; literals not accepted) to A-label
 * (to_ulabel = 0) or U-label (to_ulabel = 1) form, with all the checks of
 * mf_addr_parse().  *out is malloc'd (free()), NULL on failure.  Any
 * thread. */
MF_API int mf_addr_domain_convert(const char *domain, int to_ulabel, char **out,
                                  const char **why);

/* ======================================================================== */
/* ESMTP parameters (RFC 5321 4.1.2 esmtp-param, RFC 6531 UTF-8 values)      */
/* ======================================================================== */

/* An ordered list of keyword[=value] pairs.  Keywords (ALPHA/DIGIT then
 * ALPHA/DIGIT/"-") are matched case-insensitively but kept as written.  A
 * value is optional: "SMTPUTF8" has value NULL ("FOO=" with an empty value
 * is MF_ADDR_E_ESMTP, as the grammar wants 1*char).  Values are kept raw
 * (xtext is not decoded: see mf_addr_xtext_decode()).  A keyword given twice
 * is MF_ADDR_E_DUPLICATE. */

/* A new empty list; 0 or MF_ADDR_E_NOMEM/E_INVAL. */
MF_API int mf_addr_params_new(mf_addr_params **out);

/* Parse the milter form: argc strings, each one "KEYWORD[=value]" (argv[1..]
 * of the MAIL/RCPT event: pass argc - 1, argv + 1).  argc may be 0.
 * *out is a new list, NULL on failure. */
MF_API int mf_addr_params_parse_argv(size_t argc, const char *const *argv,
                                     mf_addr_params **out, const char **why);

/* Parse one string of parameters separated by one or more spaces
 * ("SIZE=123 BODY=8BITMIME"); "" gives an empty list. */
MF_API int mf_addr_params_parse(const char *s, mf_addr_params **out,
                                const char **why);

MF_API mf_addr_params *mf_addr_params_dup(const mf_addr_params *p);
MF_API void mf_addr_params_free(mf_addr_params *p);

/* Number of parameters; 0 for NULL. */
MF_API size_t mf_addr_params_count(const mf_addr_params *p);

/* Keyword / value of parameter i (0-based, in input order); NULL when i is
 * out of range; value NULL also when the parameter has none. */
MF_API const char *mf_addr_params_name(const mf_addr_params *p, size_t i);
MF_API const char *mf_addr_params_value(const mf_addr_params *p, size_t i);

/* Look a keyword up, case-insensitively.  Returns its index (>= 0) and sets
 * *value (if value is not NULL) to its value or NULL, or returns
 * MF_ADDR_E_NOTFOUND. */
MF_API int mf_addr_params_find(const mf_addr_params *p, const char *name,
                               const char **value);

/* Set keyword name to value (NULL = no value): replaces the value of an
 * existing keyword in place (keeping the old spelling of the keyword), else
 * appends.  Both are checked like parsed input (E_ESMTP, E_CTRL, E_UTF8). */
MF_API int mf_addr_params_set(mf_addr_params *p, const char *name,
                              const char *value, const char **why);

/* Remove a keyword; 0 or MF_ADDR_E_NOTFOUND. */
MF_API int mf_addr_params_remove(mf_addr_params *p, const char *name);

/* "SIZE=123 BODY=8BITMIME" (single spaces, input order), snprintf style as
 * mf_addr_format(); "" for an empty list. */
MF_API int mf_addr_params_format(const mf_addr_params *p, char *buf,
                                 size_t size);
MF_API int mf_addr_params_format_alloc(const mf_addr_params *p, char **out);

/* RFC 3461 xtext: decode "rfc822;a+40b.example" to "rfc822;a@b.example"
 * (hex digits upper case only, as the RFC says; characters outside 33..126
 * are errors; a decoded NUL is MF_ADDR_E_XTEXT), or encode: '+', '=' and
 * octets outside 33..126 become "+XX".  RFC 6533 "\x{...}" (utf-8-xtext) is
 * not decoded.  *out is malloc'd (free()), NULL on failure.  Any thread. */
MF_API int mf_addr_xtext_decode(const char *in, char **out, const char **why);
MF_API int mf_addr_xtext_encode(const char *in, char **out);

#ifdef __cplusplus
}
#endif

#endif
