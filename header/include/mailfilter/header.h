/*
 * header.h -- message header fields with change tracking, RFC 2047 and
 * address lists (GMime 3 inside; no GMime type leaks into this header).
 *
 *   #include <mailfilter/header.h>
 *
 * An mf_hdrs is an ordered collection of header fields exactly as the MTA
 * sent them: for every field the name, the RAW value bytes (everything after
 * the colon, including folding "\n" or "\r\n" and odd whitespace) and a
 * leading-space flag.  Fields are addressed by their current position
 * 0..mf_hdr_count()-1; positions shift on insert and delete.
 *
 * LEADING SPACE
 *   Per field, leadspc != 0 means "the raw value is every byte after the
 *   colon" (milter SMFIP_HDR_LEADSPC negotiated, or parsed from a message).
 *   leadspc == 0 means "the MTA ate one space after the colon" (Sendmail
 *   without SMFIP_HDR_LEADSPC); the field's line is then name ": " value.
 *   The collection has a mode (MF_HDR_LEADSPC flag of mf_hdr_new()):
 *   values set through this API are stored in that convention -- with their
 *   leading " " in LEADSPC mode, without it otherwise.
 *
 * ORIGINALS AND CHANGES
 *   Fields added with mf_hdr_append_raw() or mf_hdr_parse() are ORIGINAL
 *   fields: each remembers its original position and raw value.  Every other
 *   function edits the CURRENT list.  mf_hdr_diff() computes the minimal list
 *   of changes from the original list to the current one, with indexes in
 *   terms of the ORIGINAL list (see mf_hdr_change below).
 *
 * THREAD RULES
 *   A collection (and an mf_hdr_addrlist) is owned by one thread at a time:
 *   no two threads may call functions on the same object concurrently, even
 *   the read-only looking ones (mf_hdr_value() fills a cache).  Handing an
 *   object to another thread with proper synchronisation (a queue, a mutex)
 *   is fine.  Different objects may be used on different threads at once.
 *   GMime is initialised by this library exactly once (pthread_once calling
 *   g_mime_init) the first time a function needing it runs; every function
 *   here may run on any thread.  The library never calls g_mime_shutdown().
 *
 * ERRORS
 *   Functions returning int return 0 (MF_HDR_OK) or a negative MF_HDR_E_*
 *   code; mf_hdr_strerror() names it, mf_hdr_errmsg() gives details about
 *   the last failure on a collection.  Nothing here prints or aborts.
 */
#ifndef MAILFILTER_HEADER_H
#define MAILFILTER_HEADER_H

#include <stddef.h>

#include <mailfilter/addr.h>
#include <mailfilter/export.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_hdrs mf_hdrs;

enum {
  MF_HDR_OK = 0,
  MF_HDR_E_NOMEM = -1,    /* out of memory */
  MF_HDR_E_INVAL = -2,    /* bad argument (NULL, position out of range) */
  MF_HDR_E_NAME = -3,     /* invalid field name */
  MF_HDR_E_UTF8 = -4,     /* text is not valid UTF-8 */
  MF_HDR_E_VALUE = -5,    /* raw value not representable (NUL, bare CR/LF) */
  MF_HDR_E_NOTFOUND = -6, /* no such field / occurrence */
  MF_HDR_E_PARSE = -7,    /* malformed header block */
  MF_HDR_E_ADDR = -8      /* address list could not be parsed or built */
};

/* Static English text for an MF_HDR_E_* code (never NULL). */
MF_API const char *mf_hdr_strerror(int err);

/* ======================================================================== */
/* Collection                                                               */
/* ======================================================================== */

#define MF_HDR_LEADSPC 0x1u /* values keep their leading space (see top) */

/* Create an empty collection.  flags: 0 or MF_HDR_LEADSPC.
 * *out is owned by the caller; free it with mf_hdr_free().
 * Errors: MF_HDR_E_INVAL (out NULL, unknown flag), MF_HDR_E_NOMEM. */
MF_API int mf_hdr_new(mf_hdrs **out, unsigned flags);

/* Free a collection and everything it owns (all strings returned by it).
 * NULL is a no-op. */
MF_API void mf_hdr_free(mf_hdrs *h);

/* The flags given to mf_hdr_new(). */
MF_API unsigned mf_hdr_flags(const mf_hdrs *h);

/* Details of the last failure on h ("" if none); valid until the next call
 * on h. */
MF_API const char *mf_hdr_errmsg(const mf_hdrs *h);

/* Append one ORIGINAL field as received from the MTA (the milter path).
 * name: NUL-terminated, printable ASCII without ':' or space.  value/len:
 * raw bytes after the colon as the MTA sent them (may contain "\n"/"\r\n"
 * folding; must not contain NUL), copied.  leadspc: see top of file.
 * Must be called before any edit of the collection (else MF_HDR_E_INVAL).
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_NAME, MF_HDR_E_VALUE, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_append_raw(mf_hdrs *h, const char *name, const char *value,
                             size_t len, int leadspc);

/* Parse the header block of an RFC 5322 message (or a bare header block)
 * and append its fields as ORIGINAL fields.  Lines may end in LF or CRLF;
 * a field's value is every byte after its colon up to, not including, the
 * line end of its last line (folding kept byte for byte).  In LEADSPC mode
 * every field gets leadspc=1; otherwise one leading SP (if any) is removed
 * and leadspc=0 (a value without leading SP keeps leadspc=1).  Parsing stops
 * after the empty line that ends the header; *body_offset (may be NULL)
 * receives the offset of the first body byte (len if there is no body).
 * A leading mbox "From " line is skipped.  On error the collection is left
 * with the fields parsed so far and mf_hdr_errmsg() says where.
 * Errors: MF_HDR_E_PARSE (line without colon, bad name), MF_HDR_E_INVAL,
 * MF_HDR_E_NOMEM. */
MF_API int mf_hdr_parse(mf_hdrs *h, const char *data, size_t len,
                        size_t *body_offset);

/* Make the current list the new original list (after the changes have been
 * applied, e.g. to track a second round of edits).  Errors: MF_HDR_E_NOMEM.
 */
MF_API int mf_hdr_commit(mf_hdrs *h);

/* ======================================================================== */
/* Reading                                                                  */
/* ======================================================================== */

/* Number of current fields. */
MF_API size_t mf_hdr_count(const mf_hdrs *h);

/* Name of field i as stored (original case), or NULL if i is out of range.
 * Valid until field i is renamed or deleted, or h is freed. */
MF_API const char *mf_hdr_name(const mf_hdrs *h, size_t i);

/* Raw value of field i (NUL-terminated; *len, if not NULL, gets its length),
 * or NULL if out of range.  Valid until field i is changed or deleted. */
MF_API const char *mf_hdr_raw(const mf_hdrs *h, size_t i, size_t *len);

/* Leading-space flag of field i (0/1), MF_HDR_E_INVAL if out of range. */
MF_API int mf_hdr_leadspc(const mf_hdrs *h, size_t i);

/* Position of the nth (1-based) field called name (ASCII case-insensitive)
 * in *idx.  Errors: MF_HDR_E_NOTFOUND, MF_HDR_E_INVAL (nth 0, NULL). */
MF_API int mf_hdr_find(const mf_hdrs *h, const char *name, size_t nth,
                       size_t *idx);

/* Number of fields called name (case-insensitive). */
MF_API size_t mf_hdr_count_name(const mf_hdrs *h, const char *name);

/* Decoded value of field i as UTF-8: unfolded (CR/LF removed), leading and
 * trailing whitespace trimmed, RFC 2047 encoded words decoded from any
 * charset GMime knows, raw UTF-8 passed through, other 8-bit bytes
 * converted by GMime's charset fallback (UTF-8, then ISO-8859-1), malformed
 * encoded words left as text.  Computed on first use and cached.  Returns
 * NULL if i is out of range or memory ran out.  Valid until field i is
 * changed or deleted. */
MF_API const char *mf_hdr_value(mf_hdrs *h, size_t i);

/* mf_hdr_value() of the nth (1-based) field called name, NULL if none. */
MF_API const char *mf_hdr_get(mf_hdrs *h, const char *name, size_t nth);

/* The whole line of field i without line end: name ":" [" "] raw, the space
 * only when leadspc is 0.  For an untouched field this is byte-identical to
 * what was received/parsed.  *out is malloc'd (free()), *len its length.
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_line(const mf_hdrs *h, size_t i, char **out, size_t *len);

/* The whole header block: every line as mf_hdr_line() followed by eol
 * (e.g. "\r\n" or "\n"), with no empty line at the end.  *out malloc'd.
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_write(const mf_hdrs *h, const char *eol, char **out,
                        size_t *len);

/* ======================================================================== */
/* Editing                                                                  */
/* ======================================================================== */

/* Set the value of field i from UTF-8 text.  CR/LF in text are unfolded
 * away (a line break not followed by SP/HTAB is MF_HDR_E_VALUE).  Words
 * (runs between SP/HTAB) that are plain printable ASCII stay as they are;
 * runs of words with non-ASCII bytes, control characters or "=?" (which a
 * reader would take for an encoded word) become RFC 2047 encoded words in
 * UTF-8 (Q or B, whichever is shorter-ish, each at most 75 characters).
 * The value is then folded at existing whitespace so that lines stay
 * within 78 columns (counting "Name: " on the first line; a single word
 * longer than that is not cut), with "\n" line breaks, and stored in the
 * collection's leading-space convention; the field's leadspc becomes the
 * collection's.  mf_hdr_value() gives the text back (trimmed).
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_UTF8, MF_HDR_E_VALUE, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_set(mf_hdrs *h, size_t i, const char *text);

/* Set the raw value of field i (copied as is; the caller is responsible for
 * folding and encoding; must not contain NUL).  The field's leadspc becomes
 * the collection's mode.  Errors: MF_HDR_E_INVAL, MF_HDR_E_VALUE, NOMEM. */
MF_API int mf_hdr_set_raw(mf_hdrs *h, size_t i, const char *raw, size_t len);

/* Rename field i (value kept).  Errors: MF_HDR_E_INVAL, MF_HDR_E_NAME,
 * MF_HDR_E_NOMEM. */
MF_API int mf_hdr_rename(mf_hdrs *h, size_t i, const char *name);

/* Append a new field (text encoded as for mf_hdr_set()). */
MF_API int mf_hdr_add(mf_hdrs *h, const char *name, const char *text);
MF_API int mf_hdr_add_raw(mf_hdrs *h, const char *name, const char *raw,
                          size_t len);

/* Insert a new field at position pos (0 = first, mf_hdr_count() = append).
 * Errors: as mf_hdr_set() plus MF_HDR_E_NAME. */
MF_API int mf_hdr_insert(mf_hdrs *h, size_t pos, const char *name,
                         const char *text);
MF_API int mf_hdr_insert_raw(mf_hdrs *h, size_t pos, const char *name,
                             const char *raw, size_t len);

/* Delete field i.  Errors: MF_HDR_E_INVAL. */
MF_API int mf_hdr_delete(mf_hdrs *h, size_t i);

/* Set / delete the nth (1-based) field called name.
 * Errors: MF_HDR_E_NOTFOUND, and those of mf_hdr_set(). */
MF_API int mf_hdr_set_nth(mf_hdrs *h, const char *name, size_t nth,
                          const char *text);
MF_API int mf_hdr_delete_nth(mf_hdrs *h, const char *name, size_t nth);

/* ======================================================================== */
/* Stand-alone codecs                                                       */
/* ======================================================================== */

/* Decode a raw value as mf_hdr_value() does.  *out malloc'd (free()).
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_decode(const char *raw, size_t len, char **out);

/* Encode UTF-8 text as mf_hdr_set() does, for a field called name (used for
 * the first-line width), with a leading " " if leadspc.  *out malloc'd.
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_UTF8, MF_HDR_E_VALUE, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_encode(const char *name, const char *text, int leadspc,
                         char **out, size_t *len);

/* Non-zero if name is a valid field name (printable ASCII, no ':' or SP,
 * not empty). */
MF_API int mf_hdr_name_valid(const char *name);

/* ======================================================================== */
/* Change tracking                                                          */
/* ======================================================================== */

typedef enum mf_hdr_change_kind {
  MF_HDR_CHANGE = 1, /* original field `index` gets a new value */
  MF_HDR_DELETE = 2, /* original field `index` is removed */
  MF_HDR_INSERT = 3  /* new field before original field `index` */
} mf_hdr_change_kind;

/* One change, in terms of the ORIGINAL list o[0..n-1]:
 *   CHANGE  index = i of o[i]; name = o[i]'s name (a change never renames:
 *           a different name, even only in case, is DELETE + INSERT);
 *           value = the new raw value.
 *   DELETE  index = i of o[i]; name = o[i]'s name; value = NULL.
 *   INSERT  index = i: the new field goes immediately before o[i] (and after
 *           any field inserted before o[i] earlier in the list); i = n means
 *           after the last original field (append).  When o[i-1] is deleted
 *           the field still goes where o[i-1] was.
 *   occurrence: for CHANGE/DELETE the 1-based number of o[i] among the
 *           ORIGINAL fields with the same name (ASCII case-insensitive), i.e.
 *           what the milter change-header index means when no change has been
 *           applied yet; 0 for INSERT.
 *   leadspc: the field's leading-space flag (value's convention).
 * The list is sorted by index; for one index the INSERTs come first (in
 * their final order), then the CHANGE or DELETE of that index.
 * A CHANGE or INSERT value can be empty ("" in a non-LEADSPC collection
 * after mf_hdr_set(h, i, "")): the milter protocol reads an empty
 * change-header value as "delete", so the caller must map it (e.g. send
 * " " or recreate the field).  Indexes
 * never account for earlier changes in the list: applying the changes from
 * the LAST to the FIRST keeps every index valid whatever the MTA does with
 * deleted slots.  How these map to an MTA's own index rules (hidden
 * Received: headers, Postfix vs Sendmail) is the caller's business. */
typedef struct mf_hdr_change {
  mf_hdr_change_kind kind;
  size_t index;
  size_t occurrence;
  const char *name;
  const char *value; /* NULL for DELETE */
  size_t value_len;
  int leadspc;
} mf_hdr_change;

#define MF_HDR_DIFF_RECREATE 0x1u

/* Compute the changes from the original list to the current one.
 * Default: a minimal list -- an untouched collection gives 0 changes, one
 * edited field 1, an edit undone (value set back, or a field deleted and
 * the same name+raw value re-added at the same place) 0.  "Minimal" is the
 * smallest number of CHANGE+DELETE+INSERT entries whose result is the
 * current list, where a CHANGE is only allowed between fields of the same
 * name (byte-equal) -- computed by an edit-distance over the region between
 * the unchanged common prefix and suffix; for a region larger than 1M cells
 * (about a thousand edited fields) a field-identity diff is used instead, which
 * is correct but may not be minimal.
 * MF_HDR_DIFF_RECREATE: DELETE every original field (index 0..n-1), then
 * INSERT every current field at index n, in order.
 * *out is one malloc'd block (strings included): free it with
 * mf_hdr_changes_free() (or free()); *count entries.  With 0 changes *out
 * may be NULL.  Does not modify h.  Errors: MF_HDR_E_INVAL, NOMEM. */
MF_API int mf_hdr_diff(const mf_hdrs *h, unsigned flags, mf_hdr_change **out,
                       size_t *count);
MF_API void mf_hdr_changes_free(mf_hdr_change *changes);

/* ======================================================================== */
/* Address lists                                                            */
/* ======================================================================== */

/* A parsed address-list header value (From, To, Cc, Reply-To, Sender, Bcc,
 * Resent-*...): an ordered list of entries, each either a mailbox (display
 * name + mf_addr) or a group (name + mailboxes, possibly none).  Owned by one
 * thread at a time. */
typedef struct mf_hdr_addrlist mf_hdr_addrlist;

/* Empty list.  Errors: MF_HDR_E_INVAL, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_addrlist_new(mf_hdr_addrlist **out);
MF_API void mf_hdr_addrlist_free(mf_hdr_addrlist *l);

/* Parse a raw header value (folded, RFC 2047 display names, comments,
 * groups, IDN domains in UTF-8 or xn-- form) with GMime.  Entries whose
 * address mf_addr refuses are skipped (the count of skipped ones goes to
 * *skipped if not NULL).  Errors: MF_HDR_E_ADDR (nothing parsable in a
 * non-empty value), MF_HDR_E_INVAL, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_addrlist_parse(const char *raw, size_t len,
                                 mf_hdr_addrlist **out, size_t *skipped);

/* mf_hdr_addrlist_parse() of field i of h. */
MF_API int mf_hdr_get_addrlist(const mf_hdrs *h, size_t i,
                               mf_hdr_addrlist **out, size_t *skipped);

/* Number of top-level entries. */
MF_API size_t mf_hdr_addrlist_count(const mf_hdr_addrlist *l);
/* 1 if entry k is a group, 0 if a mailbox, MF_HDR_E_INVAL if out of range. */
MF_API int mf_hdr_addrlist_is_group(const mf_hdr_addrlist *l, size_t k);
/* Display name (mailbox) or group name of entry k, decoded UTF-8; NULL if
 * none or out of range.  Valid while l lives. */
MF_API const char *mf_hdr_addrlist_name(const mf_hdr_addrlist *l, size_t k);
/* Address of mailbox entry k; NULL for a group.  Owned by l. */
MF_API const mf_addr *mf_hdr_addrlist_addr(const mf_hdr_addrlist *l, size_t k);
/* Members of group entry k (0 for a mailbox). */
MF_API size_t mf_hdr_addrlist_member_count(const mf_hdr_addrlist *l, size_t k);
MF_API const char *mf_hdr_addrlist_member_name(const mf_hdr_addrlist *l,
                                               size_t k, size_t m);
MF_API const mf_addr *mf_hdr_addrlist_member_addr(const mf_hdr_addrlist *l,
                                                  size_t k, size_t m);

/* Append a mailbox (display name may be NULL; addr is copied).
 * Errors: MF_HDR_E_INVAL, MF_HDR_E_UTF8, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_addrlist_add(mf_hdr_addrlist *l, const char *name,
                               const mf_addr *addr);
/* Append an empty group; its entry number goes to *k (may be NULL). */
MF_API int mf_hdr_addrlist_add_group(mf_hdr_addrlist *l, const char *name,
                                     size_t *k);
/* Add a mailbox to group entry k. */
MF_API int mf_hdr_addrlist_group_add(mf_hdr_addrlist *l, size_t k,
                                     const char *name, const mf_addr *addr);

/* Format l as a raw header value: names RFC 2047 encoded when not ASCII
 * (quoted when needed), domains in ASCII (A-label) form, entries joined by
 * ", ", folded at 78 columns (first line counts "Name: ") with "\n",
 * leading " " if leadspc.  *out malloc'd.  Errors: MF_HDR_E_INVAL,
 * MF_HDR_E_ADDR, MF_HDR_E_NOMEM. */
MF_API int mf_hdr_addrlist_format(const mf_hdr_addrlist *l, const char *name,
                                  int leadspc, char **out, size_t *len);

/* Set field i of h to the formatted list (in h's leading-space convention).
 */
MF_API int mf_hdr_set_addrlist(mf_hdrs *h, size_t i, const mf_hdr_addrlist *l);

#ifdef __cplusplus
}
#endif

#endif
