/*
 * fuzz_wire.c -- libFuzzer target for the Pyro4 wire codec (wire.c): feeds
 * arbitrary bytes to sr_wire_frame / sr_wire_decode, walks the annotations,
 * re-encodes every framed message, and runs the incremental framer over the
 * same bytes cut three ways (whole, byte by byte, irregular chunks through
 * space/commit). Any disagreement between them, or with the bytes, aborts.
 * Built and run by `make fuzz` (clang -fsanitize=fuzzer,address,undefined);
 * seeds in spec/fixtures/fuzz/wire/. Not linked into springrun.core.
 */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small enough to reach the limit checks, large enough for every vector. */
#define FUZZ_MAX_MESSAGE 4096u
#define FUZZ_MAX_EVENTS 4096

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "fuzz_wire: check failed at line %d: %s\n", __LINE__, \
              #cond);                                                       \
      abort();                                                              \
    }                                                                       \
  } while (0)

/* One outcome of framing: a message (offset, size) or an error code. */
typedef struct fuzz_event_s {
  long rc; /* > 0 message size, < 0 error */
  size_t off;
} fuzz_event_t;

typedef struct fuzz_run_s {
  fuzz_event_t ev[FUZZ_MAX_EVENTS];
  size_t n;
  size_t pending;
} fuzz_run_t;

/* Checks one framed message against the bytes it came from: views inside
 * the buffer, annotations that add up, and a re-encode identical to the
 * input except for the reserved field. */
static void check_msg(const uint8_t *buf, size_t len, const sr_wire_msg_t *m, long n) {
  CHECK(n >= SR_WIRE_HEADER_SIZE && (size_t)n <= len);
  CHECK((size_t)n == SR_WIRE_HEADER_SIZE + (size_t)m->h.ann_len + m->h.data_len);
  CHECK(m->h.data_len + (size_t)m->h.ann_len <= FUZZ_MAX_MESSAGE);
  CHECK(m->ann == buf + SR_WIRE_HEADER_SIZE);
  CHECK(m->data == m->ann + m->h.ann_len);
  CHECK(sr_wire_checksum(&m->h) == m->h.checksum);

  sr_wire_ann_t anns[FUZZ_MAX_MESSAGE / 6 + 1];
  size_t nanns = 0, off = 0, total = 0;
  int rc;
  while ((rc = sr_wire_ann_next(m->ann, m->h.ann_len, &off, &anns[nanns])) == 1) {
    CHECK(anns[nanns].value >= m->ann && anns[nanns].value + anns[nanns].len <= m->data);
    total += 6 + anns[nanns].len;
    nanns++;
    CHECK(nanns <= sizeof anns / sizeof anns[0]);
  }
  CHECK(rc == 0); /* framing already validated the chunks */
  CHECK(total == m->h.ann_len && off == m->h.ann_len);

  sr_buf_t out;
  sr_buf_init(&out);
  rc = sr_wire_encode(&out, m->h.type, m->h.flags, m->h.seq, m->h.serializer, anns, nanns,
                      m->data, m->h.data_len);
  CHECK(rc == 0);
  CHECK(out.len == (size_t)n);
  CHECK(memcmp(out.data, buf, 20) == 0);                     /* reserved field (20..21) */
  CHECK(memcmp(out.data + 22, buf + 22, (size_t)n - 22) == 0); /* is written as 0 */
  sr_buf_free(&out);
}

/* Reference: sr_wire_frame over the whole buffer, message after message. */
static void run_reference(const uint8_t *data, size_t size, fuzz_run_t *r) {
  size_t off = 0;
  r->n = 0;
  for (;;) {
    sr_wire_msg_t m;
    size_t need = 0;
    char err[256];
    err[0] = '\0';
    long n = sr_wire_frame(data + off, size - off, FUZZ_MAX_MESSAGE, &m, &need, err, sizeof err);
    if (n == 0) {
      CHECK(need > size - off);
      break;
    }
    CHECK(r->n < FUZZ_MAX_EVENTS);
    r->ev[r->n].rc = n;
    r->ev[r->n].off = off;
    r->n++;
    if (n < 0) {
      CHECK(err[0] != '\0' && strstr(err, "at offset ") != NULL);
      break;
    }
    check_msg(data + off, size - off, &m, n);
    off += (size_t)n;
  }
  r->pending = size - off; /* an error consumes nothing */
}

/* Drains the framer; returns 1 once the stream is broken. */
static int drain(sr_framer_t *f, fuzz_run_t *r, size_t *consumed) {
  for (;;) {
    sr_wire_msg_t m;
    char err[256];
    long n = sr_framer_next(f, &m, err, sizeof err);
    if (n == 0) return 0;
    CHECK(r->n < FUZZ_MAX_EVENTS);
    r->ev[r->n].rc = n;
    r->ev[r->n].off = *consumed;
    r->n++;
    if (n < 0) return 1;
    CHECK(m.ann == m.data - m.h.ann_len);
    *consumed += (size_t)n;
  }
}

/* The framer over data cut into chunks of `step` bytes (0 = all at once);
 * use_space selects space()/commit() instead of feed(). */
static void run_framer(const uint8_t *data, size_t size, size_t step, int use_space,
                       fuzz_run_t *r) {
  sr_framer_t f;
  sr_framer_init(&f, FUZZ_MAX_MESSAGE);
  size_t consumed = 0, pos = 0;
  int broken = 0;
  r->n = 0;
  while (pos < size) {
    size_t k = step == 0 ? size - pos : step;
    if (k > size - pos) k = size - pos;
    if (use_space) {
      size_t got = 0;
      uint8_t *p = sr_framer_space(&f, k, &got);
      CHECK(p != NULL && got >= k);
      memcpy(p, data + pos, k);
      sr_framer_commit(&f, k);
    } else {
      CHECK(sr_framer_feed(&f, data + pos, k) == 0);
    }
    pos += k;
    if (!broken) broken = drain(&f, r, &consumed);
    /* vary the step so chunk edges fall everywhere */
    if (step > 1) step = step % 29 + 2;
  }
  if (!broken) drain(&f, r, &consumed);
  r->pending = sr_framer_pending(&f);
  sr_framer_free(&f);
  sr_framer_free(&f); /* idempotent */
}

static void same_run(const fuzz_run_t *a, const fuzz_run_t *b) {
  CHECK(a->n == b->n);
  for (size_t i = 0; i < a->n; i++) {
    CHECK(a->ev[i].rc == b->ev[i].rc);
    CHECK(a->ev[i].off == b->ev[i].off);
  }
  CHECK(a->pending == b->pending);
}

/* Random bytes almost never carry a valid checksum, so each input is also
 * tried "repaired": every header in a chain gets the right magic, version
 * and checksum, letting the fuzzer reach lengths, annotations and framing. */
static void repair(uint8_t *p, size_t size) {
  size_t off = 0;
  while (size - off >= SR_WIRE_HEADER_SIZE) {
    uint8_t *h = p + off;
    memcpy(h, "PYRO", 4);
    h[4] = 0;
    h[5] = SR_WIRE_PROTOCOL;
    sr_wire_header_t hd = {
        .type = (uint16_t)((h[6] << 8) | h[7]),
        .flags = (uint16_t)((h[8] << 8) | h[9]),
        .seq = (uint16_t)((h[10] << 8) | h[11]),
        .serializer = (uint16_t)((h[16] << 8) | h[17]),
        .ann_len = (uint16_t)((h[18] << 8) | h[19]),
        .checksum = 0,
        .data_len = ((uint32_t)h[12] << 24) | ((uint32_t)h[13] << 16) | ((uint32_t)h[14] << 8) | h[15]};
    uint16_t ck = sr_wire_checksum(&hd);
    h[22] = (uint8_t)(ck >> 8);
    h[23] = (uint8_t)ck;
    size_t total = SR_WIRE_HEADER_SIZE + (size_t)hd.ann_len + hd.data_len;
    if (total > size - off) break;
    off += total;
  }
}

static void battery(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  battery(data, size);
  uint8_t *copy = malloc(size ? size : 1);
  if (copy == NULL) return 0;
  if (size) memcpy(copy, data, size);
  repair(copy, size);
  battery(copy, size);
  free(copy);
  return 0;
}

static void battery(const uint8_t *data, size_t size) {
  static fuzz_run_t ref, got;

  /* Header decoding alone, with the default and the largest limit. */
  if (size >= SR_WIRE_HEADER_SIZE) {
    sr_wire_header_t h;
    char err[256];
    int rc = sr_wire_header_decode(data, &h, SR_WIRE_DEFAULT_MAX_MESSAGE, err, sizeof err);
    CHECK(rc == 0 || rc == SR_EMAGIC || rc == SR_EVERSION || rc == SR_ECHECKSUM ||
          rc == SR_ETOOBIG);
    rc = sr_wire_header_decode(data, &h, (size_t)-1, err, sizeof err);
    if (rc == 0) {
      uint8_t again[SR_WIRE_HEADER_SIZE];
      sr_wire_header_encode(again, &h);
      CHECK(memcmp(again, data, 20) == 0 && memcmp(again + 22, data + 22, 2) == 0);
      CHECK((h.data_len & 0x80000000u) == 0);
    }
  }

  /* Whole-buffer decode agrees with framing. */
  {
    sr_wire_msg_t m;
    char err[256];
    long n = sr_wire_decode(data, size, FUZZ_MAX_MESSAGE, &m, err, sizeof err);
    sr_wire_msg_t m2;
    long f = sr_wire_frame(data, size, FUZZ_MAX_MESSAGE, &m2, NULL, NULL, 0);
    if (n > 0) {
      CHECK((size_t)n == size && f == n);
      check_msg(data, size, &m, n);
    } else if (f == 0) {
      CHECK(n == SR_ETRUNCATED);
    } else if (f > 0) {
      CHECK(n == SR_EINVAL && (size_t)f < size);
    } else {
      CHECK(n == f);
    }
  }

  /* Annotation iteration directly on arbitrary bytes never overruns. */
  {
    size_t alen = size > 0xFFFF ? 0xFFFF : size, off = 0;
    sr_wire_ann_t a;
    int rc;
    while ((rc = sr_wire_ann_next(data, alen, &off, &a)) == 1)
      CHECK(off <= alen && a.value + a.len == data + off);
    CHECK(rc == 0 || rc == SR_EANNOTATION);
  }

  run_reference(data, size, &ref);
  run_framer(data, size, 0, 0, &got);
  same_run(&ref, &got);
  if (size <= 2048) {
    run_framer(data, size, 1, 0, &got);
    same_run(&ref, &got);
  }
  run_framer(data, size, size % 23 + 2, 1, &got);
  same_run(&ref, &got);
}
