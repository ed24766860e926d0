/*
 * payload.c -- a string as a complete payload of a serializer (payload.h),
 * for the texts the C side sends without Lua: CONNECTOK "hello", CONNECTFAIL
 * reasons, the last-resort exception text. The escaping is the codecs' own
 * (sr_json_put_string, sr_serpent_put_str), so these payloads read back
 * exactly as the encoders' would.
 */
#include "payload.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "serpent.h"
#include "wire.h"

/* The codec's literal of s[0..n) (json or serpent's repr). */
static int put_literal(sr_buf_t *out, int json, const char *s, size_t n, size_t *bad) {
  if (json) return sr_json_put_string(out, (const uint8_t *)s, n, bad);
  return sr_serpent_put_str(out, s, n, bad);
}

int sr_payload_may_have_class(const uint8_t *p, size_t n) {
  static const char word[] = "__class__";
  const size_t wl = sizeof word - 1;
  const uint8_t *end = p + n;
  /* glibc's memmem walks a short needle's shift table at every byte (1.5
   * instructions a byte: 1.5 M for a 1 MB string); the vectorised memchr
   * skips everything but underscores */
  while ((size_t)(end - p) >= wl) {
    const uint8_t *u = memchr(p, '_', (size_t)(end - p) - (wl - 1));
    if (u == NULL) return 0;
    if (memcmp(u, word, wl) == 0) return 1;
    p = u + 1;
  }
  return 0;
}

int sr_payload_encode_string(sr_buf_t *out, int ser, const char *s, size_t n) {
  int rc;
  if (ser == SR_SER_MARSHAL) {
    uint8_t hdr[5] = { 'u', (uint8_t)(n & 0xff), (uint8_t)((n >> 8) & 0xff),
                       (uint8_t)((n >> 16) & 0xff), (uint8_t)((n >> 24) & 0xff) };
    if ((rc = sr_buf_append(out, hdr, 5)) < 0) return rc;
    return sr_buf_append(out, s, n);
  }
  if (ser != SR_SER_JSON && ser != SR_SER_SERPENT) return SR_ESERIALIZER;
  int json = ser == SR_SER_JSON;
  if (!json && (rc = sr_buf_puts(out, SR_SERPENT_HEADER)) < 0) return rc;
  size_t mark = out->len, bad = 0;
  rc = put_literal(out, json, s, n, &bad);
  if (rc != SR_EUTF8) return rc;
  /* a reason quoting bytes that are not UTF-8 (from the peer): each byte of
   * an invalid sequence becomes '?', so the client still reads the text */
  out->len = mark;
  char *clean = malloc(n ? n : 1);
  if (clean == NULL) return SR_ENOMEM;
  for (size_t i = 0; i < n;) {
    size_t k = sr_utf8_seqlen((const uint8_t *)s + i, n - i);
    if (k == 0) {
      clean[i++] = '?';
    } else {
      memcpy(clean + i, s + i, k);
      i += k;
    }
  }
  rc = put_literal(out, json, clean, n, &bad);
  free(clean);
  return rc;
}
