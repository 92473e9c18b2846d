/* gmime_lazy.c -- GMime loaded when first needed, in the shared library.
 *
 * GMime brings GObject, GIO, gpgme, libmount, libselinux... : about 2 MiB of
 * resident pages in every process that maps it (bench/MEMORY.md), while
 * most messages never need it (plain ASCII header values are decoded and
 * encoded by our own code; only RFC 2047 words, 8-bit text and address
 * lists go to GMime).  libmfheader.so is therefore linked with
 * -Wl,--wrap=<symbol> for each GMime and GObject function the header
 * sources call (header/CMakeLists.txt): those calls come here, and the
 * first one loads libgmime (dlopen, once: pthread_once, any thread; never
 * unloaded) and finds the real functions.  --as-needed then drops GMime,
 * GObject, GIO and GLib from the library's NEEDED list: header/ calls GLib
 * only to free what GMime returned (g_free, wrapped too), so GLib is loaded
 * with GMime, not at start-up.
 *
 * The static library is linked with GMime as usual; nothing here is used
 * there.
 *
 * If GMime cannot be loaded, every function answers as GMime does for a
 * failure (NULL, 0, nothing done): decoding fails with MF_HDR_E_NOMEM,
 * address lists with MF_HDR_E_ADDR.  No GMime object exists then, so
 * nothing can be handed to the functions that take one. */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include <gmime/gmime.h>

#include "internal.h"
#include "mf_dlsym.h"

#ifndef MFH_GMIME_SONAME
#define MFH_GMIME_SONAME "libgmime-3.0.so.0"
#endif

/* The real functions; all set, or ok stays 0. */
static struct {
  __typeof__(&g_mime_init) init;
  __typeof__(&g_mime_parser_options_new) popts_new;
  __typeof__(&g_mime_parser_options_set_rfc2047_compliance_mode) popts_2047;
  __typeof__(&g_mime_parser_options_set_address_compliance_mode) popts_addr;
  __typeof__(&g_mime_format_options_new) fopts_new;
  __typeof__(&g_mime_format_options_set_newline_format) fopts_newline;
  __typeof__(&g_mime_utils_header_decode_text) decode_text;
  __typeof__(&g_mime_utils_decode_8bit) decode_8bit;
  __typeof__(&internet_address_list_parse) list_parse;
  __typeof__(&internet_address_list_length) list_length;
  __typeof__(&internet_address_list_get_address) list_get;
  __typeof__(&internet_address_get_name) get_name;
  __typeof__(&internet_address_mailbox_get_addr) mailbox_addr;
  __typeof__(&internet_address_mailbox_get_type) mailbox_type;
  __typeof__(&internet_address_group_get_members) group_members;
  __typeof__(&internet_address_group_get_type) group_type;
  __typeof__(&g_object_unref) unref;
  __typeof__(&g_type_check_instance_cast) cast;
  __typeof__(&g_type_check_instance_is_a) is_a;
  __typeof__(&g_free) free;
  int ok;
} gm;
static pthread_once_t gm_once = PTHREAD_ONCE_INIT;

static void gm_load(void) {
  /* GObject and GLib are GMime's own dependencies: dlsym on GMime's handle
   * finds their functions too. */
  void *h = dlopen(MFH_GMIME_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return;
#define GM(field, name) mf_dlsym(h, #name, &gm.field, sizeof gm.field) == 0
  gm.ok = GM(init, g_mime_init) && GM(popts_new, g_mime_parser_options_new) &&
          GM(popts_2047, g_mime_parser_options_set_rfc2047_compliance_mode) &&
          GM(popts_addr, g_mime_parser_options_set_address_compliance_mode) &&
          GM(fopts_new, g_mime_format_options_new) &&
          GM(fopts_newline, g_mime_format_options_set_newline_format) &&
          GM(decode_text, g_mime_utils_header_decode_text) &&
          GM(decode_8bit, g_mime_utils_decode_8bit) &&
          GM(list_parse, internet_address_list_parse) &&
          GM(list_length, internet_address_list_length) &&
          GM(list_get, internet_address_list_get_address) &&
          GM(get_name, internet_address_get_name) &&
          GM(mailbox_addr, internet_address_mailbox_get_addr) &&
          GM(mailbox_type, internet_address_mailbox_get_type) &&
          GM(group_members, internet_address_group_get_members) &&
          GM(group_type, internet_address_group_get_type) &&
          GM(unref, g_object_unref) && GM(cast, g_type_check_instance_cast) &&
          GM(is_a, g_type_check_instance_is_a) && GM(free, g_free);
#undef GM
}

static int loaded(void) {
  pthread_once(&gm_once, gm_load);
  return gm.ok;
}

/* The wrappers: declared here (no header: only the linker refers to them),
 * defined with GMime's own signatures. */
#define W(ret, name, params) ret __wrap_##name params;
W(void, g_mime_init, (void))
W(GMimeParserOptions *, g_mime_parser_options_new, (void))
W(void, g_mime_parser_options_set_rfc2047_compliance_mode,
  (GMimeParserOptions *, GMimeRfcComplianceMode))
W(void, g_mime_parser_options_set_address_compliance_mode,
  (GMimeParserOptions *, GMimeRfcComplianceMode))
W(GMimeFormatOptions *, g_mime_format_options_new, (void))
W(void, g_mime_format_options_set_newline_format,
  (GMimeFormatOptions *, GMimeNewLineFormat))
W(char *, g_mime_utils_header_decode_text, (GMimeParserOptions *, const char *))
W(char *, g_mime_utils_decode_8bit,
  (GMimeParserOptions *, const char *, size_t))
W(InternetAddressList *, internet_address_list_parse,
  (GMimeParserOptions *, const char *))
W(int, internet_address_list_length, (InternetAddressList *))
W(InternetAddress *, internet_address_list_get_address,
  (InternetAddressList *, int))
W(const char *, internet_address_get_name, (InternetAddress *))
W(const char *, internet_address_mailbox_get_addr, (InternetAddressMailbox *))
W(GType, internet_address_mailbox_get_type, (void))
W(InternetAddressList *, internet_address_group_get_members,
  (InternetAddressGroup *))
W(GType, internet_address_group_get_type, (void))
W(void, g_object_unref, (gpointer))
W(GTypeInstance *, g_type_check_instance_cast, (GTypeInstance *, GType))
W(gboolean, g_type_check_instance_is_a, (GTypeInstance *, GType))
W(void, g_free, (gpointer))
#undef W

void __wrap_g_mime_init(void) {
  if (loaded())
    gm.init();
}

GMimeParserOptions *__wrap_g_mime_parser_options_new(void) {
  return loaded() ? gm.popts_new() : NULL;
}

void __wrap_g_mime_parser_options_set_rfc2047_compliance_mode(
    GMimeParserOptions *o, GMimeRfcComplianceMode m) {
  if (loaded())
    gm.popts_2047(o, m);
}

void __wrap_g_mime_parser_options_set_address_compliance_mode(
    GMimeParserOptions *o, GMimeRfcComplianceMode m) {
  if (loaded())
    gm.popts_addr(o, m);
}

GMimeFormatOptions *__wrap_g_mime_format_options_new(void) {
  return loaded() ? gm.fopts_new() : NULL;
}

void __wrap_g_mime_format_options_set_newline_format(GMimeFormatOptions *o,
                                                     GMimeNewLineFormat f) {
  if (loaded())
    gm.fopts_newline(o, f);
}

char *__wrap_g_mime_utils_header_decode_text(GMimeParserOptions *o,
                                             const char *text) {
  return loaded() ? gm.decode_text(o, text) : NULL;
}

char *__wrap_g_mime_utils_decode_8bit(GMimeParserOptions *o, const char *text,
                                      size_t len) {
  return loaded() ? gm.decode_8bit(o, text, len) : NULL;
}

InternetAddressList *__wrap_internet_address_list_parse(GMimeParserOptions *o,
                                                        const char *str) {
  return loaded() ? gm.list_parse(o, str) : NULL;
}

/* The functions below take GMime objects, which exist only once GMime is
 * loaded: gm is complete by then. */
int __wrap_internet_address_list_length(InternetAddressList *l) {
  return gm.list_length(l);
}

InternetAddress *
__wrap_internet_address_list_get_address(InternetAddressList *l, int i) {
  return gm.list_get(l, i);
}

const char *__wrap_internet_address_get_name(InternetAddress *ia) {
  return gm.get_name(ia);
}

const char *
__wrap_internet_address_mailbox_get_addr(InternetAddressMailbox *mb) {
  return gm.mailbox_addr(mb);
}

InternetAddressList *
__wrap_internet_address_group_get_members(InternetAddressGroup *g) {
  return gm.group_members(g);
}

void __wrap_g_object_unref(gpointer obj) {
  gm.unref(obj);
}

GTypeInstance *__wrap_g_type_check_instance_cast(GTypeInstance *inst,
                                                 GType type) {
  return gm.cast(inst, type);
}

gboolean __wrap_g_type_check_instance_is_a(GTypeInstance *inst, GType type) {
  return gm.is_a(inst, type);
}

/* Only GMime's results are freed with g_free: when GMime could not be
 * loaded, those are NULL and there is nothing to free. */
void __wrap_g_free(gpointer p) {
  if (p != NULL)
    gm.free(p);
}

/* Used by the type-check macros on an object: GMime is loaded. */
GType __wrap_internet_address_mailbox_get_type(void) {
  return gm.mailbox_type();
}

GType __wrap_internet_address_group_get_type(void) {
  return gm.group_type();
}
