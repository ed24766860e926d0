/*
 * fuzz_json.c -- libFuzzer target for the Lua-free JSON pieces (json.c):
 * the validating skipper, the CONNECT handshake scan, string and number
 * readers, UTF-8 validation, base64 and the shortest float text. Properties
 * checked (abort on violation): the skipper and the handshake scan agree on
 * what is well-formed; every decoded string is valid UTF-8 and re-escapes to
 * a literal that reads back to the same bytes; base64 round-trips; the float
 * text of any 8 input bytes reads back to the same double.
 * Built and run by `make fuzz`; seeds in spec/fixtures/fuzz/json/.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_json"
#include "fuzz.h"
#include "json.h"
#include "payload.h"

static void check_strings(const uint8_t *p, size_t n) {
  sr_buf_t scratch, lit, scratch2;
  sr_buf_init(&scratch);
  sr_buf_init(&lit);
  sr_buf_init(&scratch2);
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '"') continue;
    const char *s;
    size_t sl, end;
    char err[128];
    if (sr_json_read_string(p, n, i, &scratch, &s, &sl, &end, err, sizeof err) != 0) continue;
    CHECK(end > i && end <= n);
    CHECK(sr_utf8_check((const uint8_t *)s, sl) == sl);
    lit.len = 0;
    size_t bad;
    CHECK(sr_json_put_string(&lit, (const uint8_t *)s, sl, &bad) == 0);
    const char *s2;
    size_t sl2, end2;
    /* s may live in scratch: read the re-escaped literal with another one */
    CHECK(sr_json_read_string(lit.data, lit.len, 0, &scratch2, &s2, &sl2, &end2, err, sizeof err) == 0);
    CHECK(end2 == lit.len && sl2 == sl && memcmp(s, s2, sl) == 0);
    break; /* one per input keeps runs fast */
  }
  sr_buf_free(&scratch);
  sr_buf_free(&lit);
  sr_buf_free(&scratch2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  sr_buf_t scratch;
  sr_buf_init(&scratch);

  /* whole document */
  size_t end = 0;
  int rc = sr_json_skip_value(data, size, 0, 64, &scratch, &end, err, sizeof err);
  if (rc == 0) CHECK(end <= size);
  else CHECK(rc == SR_ESYNTAX || rc == SR_EUTF8 || rc == SR_EDEPTH);

  /* the handshake scan: a syntax error in a document the skipper accepts
   * whole (and that is a map) would be a disagreement */
  char id[64];
  int hr = sr_json_handshake_object(data, size, id, sizeof id, err, sizeof err);
  if (hr >= 0) {
    CHECK(rc == 0);
    CHECK((size_t)hr < sizeof id && id[hr] == '\0');
  } else if (rc == 0 && sr_json_skip_ws(data, size, end) == size) {
    size_t s0 = sr_json_skip_ws(data, size, 0);
    if (data[s0] == '{') CHECK(hr == SR_ENOTFOUND || hr == SR_ETYPE || hr == SR_ETOOBIG);
  }

  check_strings(data, size);

  /* numbers at every plausible start */
  for (size_t i = 0; i < size && i < 64; i++) {
    int is_int;
    int64_t iv;
    double dv;
    size_t e2;
    if (sr_json_read_number(data, size, i, &is_int, &iv, &dv, &e2, err, sizeof err) == 0)
      CHECK(e2 > i && e2 <= size);
  }

  /* base64 both ways */
  sr_buf_t b64, raw;
  sr_buf_init(&b64);
  sr_buf_init(&raw);
  CHECK(sr_base64_encode(&b64, data, size) == 0);
  CHECK(sr_base64_decode(&raw, b64.data, b64.len, err, sizeof err) == 0);
  CHECK(raw.len == size && (size == 0 || memcmp(raw.data, data, size) == 0));
  raw.len = 0;
  (void)sr_base64_decode(&raw, data, size, err, sizeof err);
  sr_buf_free(&b64);
  sr_buf_free(&raw);

  /* float text round trip */
  if (size >= 8) {
    double d;
    memcpy(&d, data, 8);
    char txt[SR_JSON_DOUBLE_BUFSZ];
    size_t tl = sr_json_fmt_double(d, txt);
    CHECK(tl > 0 && tl < SR_JSON_DOUBLE_BUFSZ);
    int is_int;
    int64_t iv;
    double back;
    size_t e3;
    CHECK(sr_json_read_number((const uint8_t *)txt, tl, 0, &is_int, &iv, &back, &e3, err, sizeof err) == 0);
    CHECK(e3 == tl && !is_int);
    CHECK((isnan(d) && isnan(back)) || (back == d && signbit(back) == signbit(d)));
  }

  sr_buf_free(&scratch);
  return 0;
}
