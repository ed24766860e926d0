/*
 * fuzz_http.c -- libFuzzer target for the HTTP/1.1 request reader of the
 * Hessian exporter's listeners (http_req.c, what daemon_http.c feeds a
 * connection's bytes to). The input is read as a connection's bytes with
 * the daemon's limits and with small ones, fed whole and in pieces of
 * every size from 1 to 7 (as TCP may split it).
 * Properties checked (abort on violation): every outcome is a request, a
 * refusal with a known status and a text, or "need more"; a request's path
 * and body are within the limits and its path has no query; the reader
 * takes no byte it was not given; the requests read and whether the bytes
 * end in a refusal do not depend on how they were split.
 * Built and run by `make fuzz`; seeds in spec/fixtures/fuzz/http/.
 */
#include <string.h>

#define FUZZ_NAME "fuzz_http"
#include "fuzz.h"
#include "http_req.h"

/* A digest of the requests read: FNV-1a over method, keep-alive, path,
 * body of each. */
typedef struct {
  uint64_t h;
  int requests;
  int refused;
} outcome_t;

static void mix(outcome_t *o, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) o->h = (o->h ^ b[i]) * 1099511628211ull;
}

static void check_request(const sr_hreq_t *h, outcome_t *o) {
  CHECK(h->path_len <= h->max_path && strlen(h->path) == h->path_len);
  CHECK(memchr(h->path, '?', h->path_len) == NULL);
  CHECK(h->body.len <= h->max_body);
  CHECK(sr_hreq_method(h) != NULL);
  o->requests++;
  mix(o, &h->post, sizeof h->post);
  mix(o, &h->keep_alive, sizeof h->keep_alive);
  mix(o, h->path, h->path_len + 1);
  mix(o, &h->body.len, sizeof h->body.len);
  if (h->body.len) mix(o, h->body.data, h->body.len);
}

/* Feeds data in pieces of at most step bytes (0: whole). */
static outcome_t run(const uint8_t *data, size_t size, size_t step, size_t max_head,
                     size_t max_path, size_t max_body) {
  sr_hreq_t h;
  sr_hreq_init(&h, max_head, max_path, max_body);
  outcome_t o = { 1469598103934665603ull, 0, 0 };
  size_t off = 0;
  while (off < size && !o.refused) {
    size_t n = step == 0 || size - off < step ? size - off : step;
    const uint8_t *p = data + off;
    off += n;
    while (n > 0) {
      size_t used = 0;
      int rc = sr_hreq_feed(&h, p, n, &used);
      CHECK(used <= n);
      p += used;
      n -= used;
      if (rc == SR_HREQ_DONE) {
        check_request(&h, &o);
      } else if (rc == SR_HREQ_REFUSED) {
        CHECK(h.status == 400 || h.status == 413 || h.status == 414 || h.status == 431);
        CHECK(h.text[0] != '\0');
        CHECK(sr_hreq_feed(&h, p, n, &used) == SR_HREQ_REFUSED && used == 0);
        o.refused = 1;
        break;
      } else {
        CHECK(rc == SR_HREQ_MORE && n == 0);
      }
    }
  }
  sr_hreq_free(&h);
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t limits[2][3] = { { 16384, 1024, 1 << 20 }, { 64, 8, 16 } };
  for (int l = 0; l < 2; l++) {
    outcome_t whole = run(data, size, 0, limits[l][0], limits[l][1], limits[l][2]);
    for (size_t step = 1; step <= 7; step++) {
      outcome_t part = run(data, size, step, limits[l][0], limits[l][1], limits[l][2]);
      CHECK(part.requests == whole.requests && part.h == whole.h);
      CHECK(part.refused == whole.refused);
    }
  }
  return 0;
}
