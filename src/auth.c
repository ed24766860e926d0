/*
 * auth.c -- handshake secrets (see auth.h): the value scan over the JSON
 * and serpent CONNECT payloads, reusing the codecs' Lua-free readers
 * (json.h, serpent.h), and the constant-time comparison.
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

static int json_value(const uint8_t *p, size_t n, sr_buf_t *out, char *err, size_t errlen) {
  sr_buf_t scratch;
  sr_buf_init(&scratch);
  int rc = SR_ENOTFOUND;
  size_t pos = sr_json_skip_ws(p, n, 0);
  if (pos >= n || p[pos] != '{') {
    rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected '{' (a handshake map)");
    goto done;
  }
  pos = sr_json_skip_ws(p, n, pos + 1);
  if (pos < n && p[pos] == '}') goto done;
  for (;;) {
    const char *k;
    size_t kl;
    if (pos >= n || p[pos] != '"') {
      rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected a string key");
      goto done;
    }
    int r = sr_json_read_string(p, n, pos, &scratch, &k, &kl, &pos, err, errlen);
    if (r < 0) {
      rc = r;
      goto done;
    }
    int is_hs = kl == 9 && memcmp(k, "handshake", 9) == 0;
    pos = sr_json_skip_ws(p, n, pos);
    if (pos >= n || p[pos] != ':') {
      rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected ':'");
      goto done;
    }
    pos = sr_json_skip_ws(p, n, pos + 1);
    if (is_hs) {
      if (pos >= n || p[pos] != '"') {
        rc = 0;
        goto done;
      }
      const char *v;
      size_t vl;
      r = sr_json_read_string(p, n, pos, &scratch, &v, &vl, &pos, err, errlen);
      if (r < 0) {
        rc = r;
        goto done;
      }
      rc = sr_buf_append(out, v, vl) < 0 ? SR_ENOMEM : 1;
      goto done;
    }
    r = sr_json_skip_value(p, n, pos, SR_JSON_HANDSHAKE_DEPTH, &scratch, &pos, err, errlen);
    if (r < 0) {
      rc = r;
      goto done;
    }
    pos = sr_json_skip_ws(p, n, pos);
    if (pos < n && p[pos] == ',') {
      pos = sr_json_skip_ws(p, n, pos + 1);
      continue;
    }
    if (pos < n && p[pos] == '}') goto done;
    rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected ',' or '}'");
    goto done;
  }
done:
  sr_buf_free(&scratch);
  return rc;
}

/* serpent: a visitor that watches the values of the top-level dict */
typedef struct hv_s {
  int depth;
  int top_dict;
  size_t pos; /* values seen directly in the top dict (keys and values) */
  int key_hs;
  int result; /* SR_ENOTFOUND, 0 (not a string) or 1 */
  sr_buf_t *out;
} hv_t;

static int hv_value(hv_t *h, int is_str, const char *s, size_t len) {
  if (h->depth != 1 || !h->top_dict) return 0;
  if (h->pos++ % 2 == 0) {
    h->key_hs = is_str && len == 9 && memcmp(s, "handshake", 9) == 0;
    return 0;
  }
  if (!h->key_hs || h->result != SR_ENOTFOUND) return 0;
  if (!is_str) {
    h->result = 0;
    return 0;
  }
  if (sr_buf_append(h->out, s, len) < 0) return SR_ENOMEM;
  h->result = 1;
  return 0;
}

static int hv_none(void *ud, size_t off) { (void)off; return hv_value(ud, 0, NULL, 0); }
static int hv_bool(void *ud, int v, size_t off) { (void)v; (void)off; return hv_value(ud, 0, NULL, 0); }
static int hv_int(void *ud, int64_t v, size_t off) { (void)v; (void)off; return hv_value(ud, 0, NULL, 0); }
static int hv_num(void *ud, double v, size_t off) { (void)v; (void)off; return hv_value(ud, 0, NULL, 0); }
static int hv_str(void *ud, const char *s, size_t len, size_t off) {
  (void)off;
  return hv_value(ud, 1, s, len);
}
static int hv_seq_begin(void *ud, sr_serpent_seq_t kind, size_t off) {
  hv_t *h = ud;
  (void)kind;
  (void)off;
  int rc = hv_value(h, 0, NULL, 0);
  h->depth++;
  return rc;
}
static int hv_seq_item(void *ud, size_t index, size_t off) {
  (void)ud; (void)index; (void)off;
  return 0;
}
static int hv_seq_end(void *ud, sr_serpent_seq_t kind, size_t count, size_t off) {
  (void)kind; (void)count; (void)off;
  ((hv_t *)ud)->depth--;
  return 0;
}
static int hv_dict_begin(void *ud, size_t off) {
  hv_t *h = ud;
  (void)off;
  if (h->depth == 0) h->top_dict = 1;
  int rc = hv_value(h, 0, NULL, 0);
  h->depth++;
  return rc;
}
static int hv_dict_pair(void *ud, size_t off) {
  (void)ud; (void)off;
  return 0;
}
static int hv_dict_end(void *ud, size_t count, size_t off) {
  (void)count; (void)off;
  ((hv_t *)ud)->depth--;
  return 0;
}

static const sr_serpent_visitor_t hv_visitor = {
    hv_none, hv_bool, hv_int, hv_num, hv_str, hv_seq_begin, hv_seq_item, hv_seq_end,
    hv_dict_begin, hv_dict_pair, hv_dict_end};

int sr_handshake_value(int ser, const uint8_t *p, size_t n, sr_buf_t *out, char *err,
                       size_t errlen) {
  if (ser == SR_SER_JSON) return json_value(p, n, out, err, errlen);
  if (ser != SR_SER_SERPENT)
    return sr_seterr(err, errlen, SR_ESERIALIZER, "cannot read the handshake of serializer %d",
                     ser);
  hv_t h;
  memset(&h, 0, sizeof h);
  h.result = SR_ENOTFOUND;
  h.out = out;
  int rc = sr_serpent_parse(p, n, 200, 1000000, &hv_visitor, &h, NULL, err, errlen);
  if (rc < 0) return rc;
  if (!h.top_dict)
    return sr_seterr(err, errlen, SR_ESYNTAX, "serpent: handshake payload is not a dict at offset 0");
  return h.result;
}
