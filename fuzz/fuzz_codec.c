/* fuzz_codec.c -- fuzz input -> incremental decoder (fed in slices whose size
 * the first byte picks) -> every packet parsed as a command and as a reply,
 * and re-encoded where the parse succeeded. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mailfilter/milter_codec.h>

static void reencode(const milter_cmd *c) {
  milter_buf b;
  milter_buf_init(&b);
  switch (c->code) {
  case MILTER_CMD_CONNECT:
    milter_enc_connect(&b, c->u.connect.hostname, c->u.connect.family,
                       c->u.connect.port, c->u.connect.address);
    break;
  case MILTER_CMD_HEADER:
    milter_enc_header(&b, c->u.header.name, c->u.header.value);
    break;
  case MILTER_CMD_HELO:
    milter_enc_helo(&b, c->u.helo);
    break;
  case MILTER_CMD_MAIL:
  case MILTER_CMD_RCPT: {
    const char *cur = NULL, *s;
    while ((s = milter_strlist_next(&c->u.args, &cur)) != NULL)
      (void)strlen(s);
    break;
  }
  default:
    break;
  }
  milter_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t step = data[0] % 17; /* 0: all at once */
  data++;
  size--;
  milter_decoder d;
  milter_decoder_init(&d, 4096);
  size_t off = 0;
  while (off < size) {
    size_t n = step ? (size - off < step ? size - off : step) : size - off;
    size_t used = 0, pos = 0;
    milter_packet pkt;
    int r;
    while ((r = milter_decoder_feed(&d, data + off + pos, n - pos, &used,
                                    &pkt)) == 1) {
      pos += used;
      milter_cmd c;
      milter_reply rep;
      const char *why = NULL;
      if (milter_parse_cmd(&pkt, &c, &why) == 0)
        reencode(&c);
      (void)milter_parse_reply(&pkt, &rep, &why);
    }
    if (r < 0)
      break;
    off += n;
  }
  milter_decoder_free(&d);
  return 0;
}
