/*
 * fuzz_handshake.c -- libFuzzer target for the handshake-secret scan
 * (auth.c): the first byte picks the serializer (odd: JSON, even: serpent),
 * the rest is a CONNECT payload given to sr_handshake_value; a string found
 * must then pass sr_secret_check against a secret made from itself and fail
 * against itself plus one byte. Built and run by `make fuzz`; seeds in
 * spec/fixtures/fuzz/handshake/ (replayed by spec/auth_spec.lua through
 * core.handshake_value). Not linked into springrun.core.
 */
#define FUZZ_NAME "fuzz_handshake"
#include "fuzz.h"

#include "auth.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  int ser = (data[0] & 1) ? SR_SER_JSON : SR_SER_SERPENT;
  sr_buf_t out;
  sr_buf_init(&out);
  char err[256];
  err[0] = '\0';
  int r = sr_handshake_value(ser, data + 1, size - 1, &out, err, sizeof err);
  CHECK(r == 1 || r == 0 || r == SR_ENOTFOUND || r < 0);
  if (r < 0 && r != SR_ENOTFOUND && r != SR_ENOMEM) CHECK(err[0] != '\0');
  if (r == 1) {
    sr_secret_t s;
    const uint8_t *v = out.data ? out.data : (const uint8_t *)"";
    sr_secret_init(&s, v, out.len);
    CHECK(sr_secret_check(&s, v, out.len) == 1);
    CHECK(sr_buf_putc(&out, 'x') == 0);
    CHECK(sr_secret_check(&s, out.data, out.len) == 0);
  }
  sr_buf_free(&out);
  return 0;
}
