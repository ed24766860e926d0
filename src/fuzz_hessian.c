/*
 * fuzz_hessian.c -- libFuzzer target for the Lua-free Hessian reader and
 * writers (hessian.c, hessian_write.c). The input is read as a Hessian 2
 * value, a Hessian 1 value, a call and a reply, each with small limits and
 * the defaults.
 * Properties checked (abort on violation): every outcome is a token stream
 * or a known SR_E* code; the reader never reads past the input; each string
 * token re-encodes through sr_hessian_put_string and reads back to the same
 * bytes; each int/long/double token re-encodes and reads back equal.
 * Built and run by `make fuzz`; seeds in spec/fixtures/fuzz/hessian/.
 */
#include <math.h>
#include <string.h>

#define FUZZ_NAME "fuzz_hessian"
#include "fuzz.h"
#include "hessian.h"

static void roundtrip(const sr_hessian_tok_t *t) {
  sr_buf_t b;
  sr_buf_init(&b);
  size_t bad;
  if (t->kind == SR_HK_STRING) CHECK(sr_hessian_put_string(&b, t->s, t->slen, &bad) == 0);
  else if (t->kind == SR_HK_INT) CHECK(sr_hessian_put_int(&b, (int32_t)t->i) == 0);
  else if (t->kind == SR_HK_LONG) CHECK(sr_hessian_put_long(&b, t->i) == 0);
  else if (t->kind == SR_HK_DOUBLE) CHECK(sr_hessian_put_double(&b, t->d) == 0);
  else if (t->kind == SR_HK_BINARY) CHECK(sr_hessian_put_binary(&b, t->s, t->slen) == 0);
  else {
    sr_buf_free(&b);
    return;
  }
  char err[256];
  sr_hessian_reader_t r;
  CHECK(sr_hessian_reader_init(&r, b.data, b.len, 2, NULL, err, sizeof err) == 0);
  sr_hessian_tok_t u;
  CHECK(sr_hessian_next(&r, &u) == 0);
  CHECK(r.pos == b.len);
  if (t->kind == SR_HK_STRING || t->kind == SR_HK_BINARY) {
    CHECK(u.kind == t->kind && u.slen == t->slen && memcmp(u.s, t->s, t->slen) == 0);
  } else if (t->kind == SR_HK_DOUBLE) {
    /* the writer's forms keep the value, except the sign of -0.0 */
    CHECK(u.kind == SR_HK_DOUBLE && ((isnan(u.d) && isnan(t->d)) || u.d == t->d));
  } else {
    CHECK(u.i == t->i);
  }
  sr_hessian_reader_free(&r);
  sr_buf_free(&b);
}

static int known(int rc) {
  return rc == SR_ETRUNCATED || rc == SR_ESYNTAX || rc == SR_EUTF8 || rc == SR_EDEPTH ||
         rc == SR_EELEMENTS || rc == SR_ETOOBIG;
}

static void run(const uint8_t *data, size_t size, int mode, const sr_hessian_limits_t *lim) {
  char err[256];
  sr_hessian_reader_t r;
  int rc = sr_hessian_reader_init(&r, data, size, mode == 1 ? 1 : 2, lim, err, sizeof err);
  int fault = 0;
  int64_t argc = -1;
  sr_buf_t method;
  sr_buf_init(&method);
  if (rc == 0 && mode == 2) rc = sr_hessian_read_call(&r, &method, &argc);
  if (rc == 0 && mode == 3) rc = sr_hessian_read_reply(&r, &fault);
  for (int steps = 0; rc == 0 && steps < 100000; steps++) {
    sr_hessian_tok_t t;
    if (r.depth == 0 && steps > 0 && mode != 2) break;
    if (mode == 2 && r.depth == 0 && (argc >= 0 ? steps >= argc * 1000 : sr_hessian_at_call_end(&r))) break;
    if (r.depth == 0 && r.pos == size) break;
    rc = sr_hessian_next(&r, &t);
    if (rc == 0) {
      CHECK(r.pos <= size && t.off <= size);
      roundtrip(&t);
    }
  }
  if (rc == 0) rc = sr_hessian_finish(&r, mode == 3 && r.version == 1);
  CHECK(rc == 0 || known(rc));
  CHECK(rc == 0 || strncmp(err, "hessian: ", 9) == 0);
  sr_hessian_reader_free(&r);
  sr_buf_free(&method);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sr_hessian_limits_t small = {3, 10, 4096, 64};
  for (int mode = 0; mode < 4; mode++) {
    run(data, size, mode, NULL);
    run(data, size, mode, &small);
  }
  return 0;
}
