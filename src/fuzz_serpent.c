/*
 * fuzz_serpent.c -- libFuzzer target for the Lua-free serpent code
 * (serpent.c): parses arbitrary bytes with a visitor that checks the event
 * order (balanced containers, item indexes, dict pairs), runs the handshake
 * scan over the same bytes, and checks the writers against the parser: any
 * valid UTF-8 input written with sr_serpent_put_str must parse back to the
 * same string, and the first 8 bytes read as a double must come back with
 * the same bits from sr_serpent_put_float. Built and run by `make fuzz`;
 * seeds in spec/fixtures/fuzz/serpent/. Not linked into springrun.core.
 */
#define FUZZ_NAME "fuzz_serpent"
#include "fuzz.h"
#include "json.h"
#include "payload.h"
#include "serpent.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXD 64

/* Visitor state: a stack of open containers and what each has seen. */
typedef struct fz_s {
  int depth;
  int kind[MAXD + 2];      /* 1 sequence, 2 dict */
  size_t values[MAXD + 2]; /* values reported directly inside */
  size_t items[MAXD + 2];  /* seq_item / dict_pair calls */
  int top_values;
  /* last scalar seen, for the writer round trips */
  int last_is_str;
  sr_buf_t last;
  double last_num;
  int last_is_num;
} fz_t;

static int fz_value(fz_t *z) {
  if (z->depth == 0) z->top_values++;
  else z->values[z->depth]++;
  z->last_is_str = 0;
  z->last_is_num = 0;
  return 0;
}
static int fz_none(void *ud, size_t off) { (void)off; return fz_value(ud); }
static int fz_bool(void *ud, int v, size_t off) { (void)off; CHECK(v == 0 || v == 1); return fz_value(ud); }
static int fz_int(void *ud, int64_t v, size_t off) {
  fz_t *z = ud;
  (void)off;
  fz_value(z);
  z->last_is_num = 1;
  z->last_num = (double)v;
  return 0;
}
static int fz_num(void *ud, double v, size_t off) {
  fz_t *z = ud;
  (void)off;
  fz_value(z);
  z->last_is_num = 1;
  z->last_num = v;
  return 0;
}
static int fz_str(void *ud, const char *s, size_t len, size_t off) {
  fz_t *z = ud;
  (void)off;
  CHECK(sr_utf8_check((const uint8_t *)s, len) == len);
  fz_value(z);
  z->last.len = 0;
  CHECK(sr_buf_append(&z->last, s, len) == 0);
  z->last_is_str = 1;
  return 0;
}
static int fz_open(fz_t *z, int kind) {
  fz_value(z);
  CHECK(z->depth < MAXD + 1);
  z->depth++;
  z->kind[z->depth] = kind;
  z->values[z->depth] = 0;
  z->items[z->depth] = 0;
  return 0;
}
static int fz_seq_begin(void *ud, sr_serpent_seq_t kind, size_t off) {
  (void)off;
  CHECK(kind == SR_SERPENT_LIST || kind == SR_SERPENT_TUPLE || kind == SR_SERPENT_SET);
  return fz_open(ud, 1);
}
static int fz_seq_item(void *ud, size_t index, size_t off) {
  fz_t *z = ud;
  (void)off;
  CHECK(z->depth > 0 && z->kind[z->depth] == 1);
  CHECK(index == ++z->items[z->depth]);
  CHECK(z->values[z->depth] == index);
  return 0;
}
static int fz_seq_end(void *ud, sr_serpent_seq_t kind, size_t count, size_t off) {
  fz_t *z = ud;
  (void)off;
  CHECK(z->depth > 0 && z->kind[z->depth] == 1);
  CHECK(count == z->items[z->depth]);
  if (kind == SR_SERPENT_PAREN) CHECK(count == 1);
  z->depth--;
  return 0;
}
static int fz_dict_begin(void *ud, size_t off) { (void)off; return fz_open(ud, 2); }
static int fz_dict_pair(void *ud, size_t off) {
  fz_t *z = ud;
  (void)off;
  CHECK(z->depth > 0 && z->kind[z->depth] == 2);
  z->items[z->depth]++;
  CHECK(z->values[z->depth] == 2 * z->items[z->depth]);
  return 0;
}
static int fz_dict_end(void *ud, size_t count, size_t off) {
  fz_t *z = ud;
  (void)off;
  CHECK(z->depth > 0 && z->kind[z->depth] == 2);
  CHECK(count == z->items[z->depth]);
  z->depth--;
  return 0;
}

static const sr_serpent_visitor_t fz_visitor = {
    fz_none, fz_bool, fz_int, fz_num, fz_str, fz_seq_begin, fz_seq_item, fz_seq_end,
    fz_dict_begin, fz_dict_pair, fz_dict_end};

static int parse(const uint8_t *p, size_t n, fz_t *z) {
  char err[256];
  z->depth = 0;
  z->top_values = 0;
  err[0] = 0;
  int rc = sr_serpent_parse(p, n, MAXD, 10000, &fz_visitor, z, NULL, err, sizeof err);
  if (rc == 0) {
    CHECK(z->depth == 0);
    CHECK(z->top_values == 1);
  } else {
    CHECK(rc == SR_ESYNTAX || rc == SR_EUTF8 || rc == SR_EDEPTH || rc == SR_EELEMENTS);
    CHECK(strstr(err, "serpent: ") == err);
    CHECK(strstr(err, " at offset ") != NULL);
  }
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_t z;
  memset(&z, 0, sizeof z);
  sr_buf_init(&z.last);
  parse(data, size, &z);

  char id[64], err[256];
  int hs = sr_serpent_handshake_object(data, size, id, sizeof id, err, sizeof err);
  if (hs >= 0) CHECK((size_t)hs < sizeof id && id[hs] == 0);
  else CHECK(hs == SR_ESYNTAX || hs == SR_EUTF8 || hs == SR_EDEPTH || hs == SR_EELEMENTS ||
             hs == SR_ENOTFOUND || hs == SR_ETOOBIG);

  /* writer -> parser: a str literal */
  sr_buf_t out;
  sr_buf_init(&out);
  size_t bad = 0;
  int rc = sr_serpent_put_str(&out, (const char *)data, size, &bad);
  if (sr_utf8_check(data, size) == size) {
    CHECK(rc == 0);
    CHECK(parse(out.data, out.len, &z) == 0);
    CHECK(z.last_is_str && z.last.len == size && (size == 0 || memcmp(z.last.data, data, size) == 0));
  } else {
    CHECK(rc == SR_EUTF8 && bad < size);
  }

  /* writer -> parser: a float */
  if (size >= 8) {
    double d;
    memcpy(&d, data, 8);
    out.len = 0;
    CHECK(sr_serpent_put_float(&out, d) == 0);
    if (!isnan(d)) {
      CHECK(parse(out.data, out.len, &z) == 0);
      CHECK(z.last_is_num && memcmp(&z.last_num, &d, 8) == 0);
    }
  }
  sr_buf_free(&out);
  sr_buf_free(&z.last);
  return 0;
}
