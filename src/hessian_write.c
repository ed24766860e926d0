/*
 * hessian_write.c -- the Hessian 2 writers (sr_hessian_put_*, see
 * hessian.h): every value form in its most compact encoding, as Caucho's
 * Hessian2Output picks it, and the call / reply / fault envelopes. The
 * reader is hessian.c.
 *
 * Strings go out as CESU-8 with lengths in UTF-16 units: a 4-byte UTF-8
 * sequence (outside the BMP) becomes a surrogate pair of two 3-byte
 * sequences, as Java writes it; chunks hold at most SR_HESSIAN_STRING_CHUNK
 * units and never split a pair.
 */
#include "hessian.h"
#include "json.h"

#include <math.h>
#include <string.h>

/* ---- writers ------------------------------------------------------------ */

/* Two bytes, written in place (a bean's int field: no call, no memcpy). */
static int put2(sr_buf_t *b, uint8_t a, uint8_t c) {
  if (sr_buf_room(b, 2)) return SR_ENOMEM;
  b->data[b->len] = a;
  b->data[b->len + 1] = c;
  b->len += 2;
  return 0;
}

static int put_b32(sr_buf_t *b, uint8_t code, uint32_t v) {
  uint8_t x[5] = {code, (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  return sr_buf_append(b, x, 5);
}

static int put_b64(sr_buf_t *b, uint8_t code, uint64_t v) {
  uint8_t x[9] = {code};
  for (int i = 0; i < 8; i++) x[1 + i] = (uint8_t)(v >> (56 - 8 * i));
  return sr_buf_append(b, x, 9);
}

int sr_hessian_put_null(sr_buf_t *b) { return sr_buf_putc(b, 'N'); }
int sr_hessian_put_bool(sr_buf_t *b, int v) { return sr_buf_putc(b, v ? 'T' : 'F'); }

int sr_hessian_put_int(sr_buf_t *b, int32_t v) {
  if (v >= -16 && v <= 47) return sr_buf_putc(b, (uint8_t)(0x90 + v));
  if (v >= -2048 && v <= 2047) return put2(b, (uint8_t)(0xc8 + (v >> 8)), (uint8_t)v);
  if (v >= -262144 && v <= 262143) {
    uint8_t x[3] = {(uint8_t)(0xd4 + (v >> 16)), (uint8_t)(v >> 8), (uint8_t)v};
    return sr_buf_append(b, x, 3);
  }
  return put_b32(b, 'I', (uint32_t)v);
}

int sr_hessian_put_long(sr_buf_t *b, int64_t v) {
  if (v >= -8 && v <= 15) return sr_buf_putc(b, (uint8_t)(0xe0 + v));
  if (v >= -2048 && v <= 2047) return put2(b, (uint8_t)(0xf8 + (v >> 8)), (uint8_t)v);
  if (v >= -262144 && v <= 262143) {
    uint8_t x[3] = {(uint8_t)(0x3c + (v >> 16)), (uint8_t)(v >> 8), (uint8_t)v};
    return sr_buf_append(b, x, 3);
  }
  if (v >= INT32_MIN && v <= INT32_MAX) return put_b32(b, 0x59, (uint32_t)v);
  return put_b64(b, 'L', (uint64_t)v);
}

/* Java's (int) cast: saturating, NaN -> 0 (the C cast would be undefined). */
static int32_t java_int(double v) {
  if (isnan(v)) return 0;
  if (v >= 2147483647.0) return INT32_MAX;
  if (v <= -2147483648.0) return INT32_MIN;
  return (int32_t)v;
}

int sr_hessian_put_double(sr_buf_t *b, double v) {
  int32_t i = java_int(v);
  if ((double)i == v) {
    if (i == 0) return sr_buf_putc(b, 0x5b);
    if (i == 1) return sr_buf_putc(b, 0x5c);
    if (i >= -128 && i <= 127) return put2(b, 0x5d, (uint8_t)i);
    if (i >= -32768 && i <= 32767) {
      uint8_t x[3] = {0x5e, (uint8_t)(i >> 8), (uint8_t)i};
      return sr_buf_append(b, x, 3);
    }
  }
  int32_t mills = java_int(v * 1000);
  if (0.001 * mills == v) return put_b32(b, 0x5f, (uint32_t)mills);
  uint64_t bits;
  memcpy(&bits, &v, 8);
  return put_b64(b, 'D', bits);
}

int sr_hessian_put_date(sr_buf_t *b, int64_t ms) {
  if (ms % 60000 == 0) {
    int64_t min = ms / 60000;
    if (min >= INT32_MIN && min <= INT32_MAX) return put_b32(b, 0x4b, (uint32_t)(int32_t)min);
  }
  return put_b64(b, 0x4a, (uint64_t)ms);
}

/* Length of the (generalised: surrogates allowed) UTF-8 sequence at s, and
 * its UTF-16 units in *u; 0 when invalid. */
static size_t wtf8_seq(const uint8_t *s, size_t avail, size_t *u) {
  *u = 1;
  if (s[0] == 0xED && avail >= 3 && s[1] >= 0xA0 && s[1] <= 0xBF && (s[2] & 0xC0) == 0x80) return 3;
  size_t k = sr_utf8_seqlen(s, avail);
  if (k == 4) *u = 2;
  return k;
}

size_t sr_hessian_utf16_len(const char *s, size_t n, size_t *bad) {
  const uint8_t *p = (const uint8_t *)s;
  size_t i = 0, units = 0, u;
  while (i < n) {
    if (p[i] < 0x80) {
      i++;
      units++;
      continue;
    }
    size_t k = wtf8_seq(p + i, n - i, &u);
    if (k == 0) {
      *bad = i;
      return (size_t)-1;
    }
    i += k;
    units += u;
  }
  return units;
}

/* Appends p[0..n) (valid) as CESU-8. */
static int put_cesu(sr_buf_t *b, const uint8_t *p, size_t n) {
  if (sr_buf_reserve(b, n + n / 2)) return SR_ENOMEM;
  uint8_t *o = b->data + b->len;
  for (size_t i = 0; i < n;) {
    /* up to the next 4-byte sequence (n is valid: no other byte is >= 0xF0)
     * the bytes go as they are */
    size_t j = i;
    while (j < n && p[j] < 0xF0) j++;
    memcpy(o, p + i, j - i);
    o += j - i;
    i = j;
    if (i == n) break;
    uint8_t c = p[i];
    uint32_t cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(p[i + 1] & 0x3F) << 12 |
                  (uint32_t)(p[i + 2] & 0x3F) << 6 | (p[i + 3] & 0x3F);
    uint32_t hi = 0xD800 + ((cp - 0x10000) >> 10), lo = 0xDC00 + ((cp - 0x10000) & 0x3FF);
    uint32_t sur[2] = {hi, lo};
    for (int j = 0; j < 2; j++) {
      *o++ = (uint8_t)(0xE0 | sur[j] >> 12);
      *o++ = (uint8_t)(0x80 | (sur[j] >> 6 & 0x3F));
      *o++ = (uint8_t)(0x80 | (sur[j] & 0x3F));
    }
    i += 4;
  }
  b->len = (size_t)(o - b->data);
  return 0;
}

int sr_hessian_put_string(sr_buf_t *b, const char *s, size_t n, size_t *bad) {
  const uint8_t *p = (const uint8_t *)s;
  if (n <= 31) {
    /* the common short ASCII string: its units are its bytes, one length
     * byte then the bytes (what the general path below writes for it) */
    size_t i = 0;
    while (i < n && p[i] < 0x80) i++;
    if (i == n) {
      if (sr_buf_room(b, n + 1)) return SR_ENOMEM;
      uint8_t *o = b->data + b->len;
      o[0] = (uint8_t)n;
      if (n) memcpy(o + 1, p, n);
      b->len += n + 1;
      return 0;
    }
  }
  size_t units = sr_hessian_utf16_len(s, n, bad);
  if (units == (size_t)-1) return SR_EUTF8;
  int rc;
  while (units > SR_HESSIAN_STRING_CHUNK) {
    /* a chunk of 32768 units, 32767 when a pair would straddle its end */
    size_t i = 0, cu = 0, u;
    while (i < n) {
      size_t k = p[i] < 0x80 ? (u = 1, 1) : wtf8_seq(p + i, n - i, &u);
      if (cu + u > SR_HESSIAN_STRING_CHUNK) break;
      i += k;
      cu += u;
    }
    uint8_t h[3] = {'R', (uint8_t)(cu >> 8), (uint8_t)cu};
    if ((rc = sr_buf_append(b, h, 3)) || (rc = put_cesu(b, p, i))) return rc;
    p += i;
    n -= i;
    units -= cu;
  }
  if (units <= 31) rc = sr_buf_putc(b, (uint8_t)units);
  else if (units <= 1023) rc = put2(b, (uint8_t)(0x30 + (units >> 8)), (uint8_t)units);
  else {
    uint8_t h[3] = {'S', (uint8_t)(units >> 8), (uint8_t)units};
    rc = sr_buf_append(b, h, 3);
  }
  return rc ? rc : put_cesu(b, p, n);
}

int sr_hessian_put_binary(sr_buf_t *b, const void *s, size_t n) {
  const uint8_t *p = s;
  int rc;
  while (n > SR_HESSIAN_BINARY_CHUNK) {
    uint8_t h[3] = {'A', 0xff, 0xff};
    if ((rc = sr_buf_append(b, h, 3)) || (rc = sr_buf_append(b, p, SR_HESSIAN_BINARY_CHUNK))) return rc;
    p += SR_HESSIAN_BINARY_CHUNK;
    n -= SR_HESSIAN_BINARY_CHUNK;
  }
  if (n <= 15) rc = sr_buf_putc(b, (uint8_t)(0x20 + n));
  else if (n <= 1023) rc = put2(b, (uint8_t)(0x34 + (n >> 8)), (uint8_t)n);
  else {
    uint8_t h[3] = {'B', (uint8_t)(n >> 8), (uint8_t)n};
    rc = sr_buf_append(b, h, 3);
  }
  return rc ? rc : sr_buf_append(b, p, n);
}

static int put_type(sr_buf_t *b, const char *type, size_t tlen, int64_t tidx) {
  size_t bad;
  if (tidx >= 0) return sr_hessian_put_int(b, (int32_t)tidx);
  return sr_hessian_put_string(b, type, tlen, &bad);
}

int sr_hessian_put_list(sr_buf_t *b, const char *type, size_t tlen, int64_t tidx, int64_t len) {
  int rc;
  if (type == NULL) {
    if (len < 0) return sr_buf_putc(b, 'W');
    if (len <= 7) return sr_buf_putc(b, (uint8_t)(0x78 + len));
    return (rc = sr_buf_putc(b, 'X')) ? rc : sr_hessian_put_int(b, (int32_t)len);
  }
  if (len < 0) return (rc = sr_buf_putc(b, 'U')) ? rc : put_type(b, type, tlen, tidx);
  if (len <= 7)
    return (rc = sr_buf_putc(b, (uint8_t)(0x70 + len))) ? rc : put_type(b, type, tlen, tidx);
  if ((rc = sr_buf_putc(b, 'V')) || (rc = put_type(b, type, tlen, tidx))) return rc;
  return sr_hessian_put_int(b, (int32_t)len);
}

int sr_hessian_put_map(sr_buf_t *b, const char *type, size_t tlen, int64_t tidx) {
  if (type == NULL) return sr_buf_putc(b, 'H');
  int rc = sr_buf_putc(b, 'M');
  return rc ? rc : put_type(b, type, tlen, tidx);
}

int sr_hessian_put_end(sr_buf_t *b) { return sr_buf_putc(b, 'Z'); }

int sr_hessian_put_def(sr_buf_t *b, const char *name, size_t nlen, size_t nfields,
                       const char *const *fields, const size_t *flens, size_t *bad) {
  int rc;
  if ((rc = sr_buf_putc(b, 'C')) || (rc = sr_hessian_put_string(b, name, nlen, bad)) ||
      (rc = sr_hessian_put_int(b, (int32_t)nfields)))
    return rc;
  for (size_t i = 0; i < nfields; i++)
    if ((rc = sr_hessian_put_string(b, fields[i], flens[i], bad))) return rc;
  return 0;
}

int sr_hessian_put_object(sr_buf_t *b, size_t def) {
  if (def < 16) return sr_buf_putc(b, (uint8_t)(0x60 + def));
  int rc = sr_buf_putc(b, 'O');
  return rc ? rc : sr_hessian_put_int(b, (int32_t)def);
}

int sr_hessian_put_ref(sr_buf_t *b, size_t ref) {
  int rc = sr_buf_putc(b, 'Q');
  return rc ? rc : sr_hessian_put_int(b, (int32_t)ref);
}

int sr_hessian_put_call(sr_buf_t *b, const char *method, size_t mlen, int32_t argc, size_t *bad) {
  int rc;
  if ((rc = sr_buf_append(b, "H\x02\x00" "C", 4)) || (rc = sr_hessian_put_string(b, method, mlen, bad)))
    return rc;
  return sr_hessian_put_int(b, argc);
}

int sr_hessian_put_reply(sr_buf_t *b) { return sr_buf_append(b, "H\x02\x00" "R", 4); }
int sr_hessian_put_fault(sr_buf_t *b) { return sr_buf_append(b, "H\x02\x00" "F", 4); }
