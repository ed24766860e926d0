/*
 * auth.c -- handshake secrets (see auth.h): the "handshake" value of a JSON
 * or serpent CONNECT payload, read by the codecs' Lua-free top-level string
 * scans (json.h, serpent.h), and the constant-time comparison.
 */
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#include "json.h"
#include "serpent.h"
#include "wire.h"

void sr_secret_init(sr_secret_t *s, const void *p, size_t n) {
  SHA256((const unsigned char *)p, n, s->digest);
}

int sr_secret_check(const sr_secret_t *s, const void *p, size_t n) {
  uint8_t d[32];
  SHA256((const unsigned char *)p, n, d);
  return CRYPTO_memcmp(d, s->digest, sizeof d) == 0;
}

int sr_handshake_value(int ser, const uint8_t *p, size_t n, sr_buf_t *out, char *err,
                       size_t errlen) {
  size_t off;
  if (ser == SR_SER_JSON) return sr_json_top_string(p, n, "handshake", out, &off, err, errlen);
  if (ser == SR_SER_SERPENT)
    return sr_serpent_top_string(p, n, "handshake", out, &off, err, errlen);
  return sr_seterr(err, errlen, SR_ESERIALIZER, "cannot read the handshake of serializer %d", ser);
}
