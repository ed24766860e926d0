/*
 * json.c -- the Lua-free half of the JSON payload serializer: what the Lua
 * binding (lsr_json.c) and the daemon thread share. Text rules follow what a
 * Pyro4 peer does with Python's json module: floats as repr (shortest
 * round-trip), NaN/Infinity/-Infinity bare, ensure_ascii=False output with
 * control characters escaped, strict UTF-8, integers kept exact within 64
 * bits. Nothing here allocates except through a caller's sr_buf_t.
 */
#include "json.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dconv.h"
#include "payload.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

int sr_json_err_at(char *err, size_t errlen, int code, size_t pos, size_t n, const char *what) {
  return sr_seterr(err, errlen, code, "%s at offset %zu%s", what, pos,
                   pos >= n ? " (end of input)" : "");
}

/* ---- UTF-8 ------------------------------------------------------------ */

size_t sr_utf8_seqlen(const uint8_t *s, size_t avail) {
  uint8_t c = s[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0; /* continuation byte or overlong 2-byte lead */
  if (c < 0xE0) return (avail >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (avail < 3 || (s[2] & 0xC0) != 0x80) return 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;      /* overlong */
    else if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
    return (s[1] >= lo && s[1] <= hi) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (avail < 4 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c == 0xF0) lo = 0x90;      /* overlong */
    else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    return (s[1] >= lo && s[1] <= hi) ? 4 : 0;
  }
  return 0;
}

size_t sr_utf8_check(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    if (s[i] < 0x80) {
      /* ASCII: eight bytes at a time while no byte has its high bit set */
      while (i + 8 <= len) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080u) break;
        i += 8;
      }
      if (i >= len || s[i] >= 0x80) continue;
      i++;
      continue;
    }
    size_t k = sr_utf8_seqlen(s + i, len - i);
    if (k == 0) return i;
    i += k;
  }
  return len;
}

/* ---- numbers out ------------------------------------------------------ */

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

size_t sr_json_fmt_int(int64_t v, char *out) {
  char tmp[24];
  char *t = tmp + sizeof tmp;
  size_t n = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  while (u >= 100) { /* two digits per division */
    unsigned r = (unsigned)(u % 100);
    u /= 100;
    t -= 2;
    t[0] = digit_pairs[2 * r];
    t[1] = digit_pairs[2 * r + 1];
  }
  if (u >= 10) {
    t -= 2;
    t[0] = digit_pairs[2 * u];
    t[1] = digit_pairs[2 * u + 1];
  } else {
    *--t = (char)('0' + u);
  }
  if (v < 0) out[n++] = '-';
  size_t k = (size_t)(tmp + sizeof tmp - t);
  memcpy(out + n, t, k);
  return n + k;
}

size_t sr_json_fmt_double(double d, char *out) {
  const char *word = NULL;
  if (isnan(d)) word = "NaN";
  else if (isinf(d)) word = d < 0 ? "-Infinity" : "Infinity";
  else if (d == 0) word = signbit(d) ? "-0.0" : "0.0";
  if (word) {
    size_t wl = strlen(word);
    memcpy(out, word, wl + 1);
    return wl;
  }

  size_t o = 0;
  if (d < 0) out[o++] = '-';
  char dig[SR_DCONV_DIGITS_BUFSZ];
  int e;
  int nd = sr_dconv_shortest(fabs(d), dig, &e);

  if (e < -4 || e >= 16) { /* Python repr switches to exponent form here */
    out[o++] = dig[0];
    if (nd > 1) {
      out[o++] = '.';
      memcpy(out + o, dig + 1, (size_t)nd - 1);
      o += (size_t)nd - 1;
    }
    int x = e < 0 ? -e : e; /* at most 324 */
    out[o++] = 'e';
    out[o++] = e < 0 ? '-' : '+';
    if (x >= 100) out[o++] = (char)('0' + x / 100);
    out[o++] = (char)('0' + x / 10 % 10);
    out[o++] = (char)('0' + x % 10);
    out[o] = '\0';
    return o;
  }
  if (e >= 0) {
    int ip = e + 1; /* digits before the point */
    for (int i = 0; i < ip; i++) out[o++] = i < nd ? dig[i] : '0';
    out[o++] = '.';
    if (nd > ip) {
      memcpy(out + o, dig + ip, (size_t)(nd - ip));
      o += (size_t)(nd - ip);
    } else {
      out[o++] = '0';
    }
  } else {
    out[o++] = '0';
    out[o++] = '.';
    for (int i = 0; i < -e - 1; i++) out[o++] = '0';
    memcpy(out + o, dig, (size_t)nd);
    o += (size_t)nd;
  }
  out[o] = '\0';
  return o;
}

/* ---- plain runs ------------------------------------------------------- */

/* The index of the first byte at or after i (below n) that a JSON string
 * cannot carry as is: '"', '\\', a control character (< 0x20) or a
 * non-ASCII byte (>= 0x80, checked as UTF-8 by the caller); n if none.
 * Sixteen bytes at a time with SSE2 (every x86-64), then (or elsewhere)
 * eight bytes at a time: for a word w, (w - 0x01..01 * k) & ~w & 0x80..80
 * is non-zero when some byte of w is below k (k <= 0x80), the XOR with a
 * repeated byte turns that byte into zero (then below 1), and w & 0x80..80
 * flags non-ASCII bytes; a flagged word is finished
 * byte by byte, so the carries of the subtraction cannot mislead. */
static size_t plain_run(const uint8_t *p, size_t i, size_t n) {
#if defined(__SSE2__)
  /* sixteen bytes at a time: as signed bytes, both the control characters
   * and the non-ASCII bytes (negative) are below 0x20 */
  const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                space = _mm_set1_epi8(0x20);
#define SR_PLAIN_HIT(v) \
  _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8((v), quote), _mm_cmpeq_epi8((v), bslash)), \
               _mm_cmplt_epi8((v), space))
  while (i + 64 <= n) { /* long runs: 64 bytes per test */
    const __m128i *q = (const __m128i *)(const void *)(p + i);
    __m128i h = _mm_or_si128(_mm_or_si128(SR_PLAIN_HIT(_mm_loadu_si128(q)),
                                          SR_PLAIN_HIT(_mm_loadu_si128(q + 1))),
                             _mm_or_si128(SR_PLAIN_HIT(_mm_loadu_si128(q + 2)),
                                          SR_PLAIN_HIT(_mm_loadu_si128(q + 3))));
    if (_mm_movemask_epi8(h)) break;
    i += 64;
  }
  while (i + 16 <= n) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
    unsigned m = (unsigned)_mm_movemask_epi8(SR_PLAIN_HIT(v));
    if (m) return i + (size_t)__builtin_ctz(m);
    i += 16;
  }
#undef SR_PLAIN_HIT
#endif
  const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
  while (i + 8 <= n) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    uint64_t m = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b) | w;
    if (m & high) break;
    i += 8;
  }
  while (i < n) {
    uint8_t c = p[i];
    if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
    i++;
  }
  return i;
}

/* ---- strings out ------------------------------------------------------ */

/* Bytes a JSON string cannot carry as is (see plain_run): 1 for '"', '\\',
 * control characters and non-ASCII bytes (copied once checked as UTF-8). */
static const uint8_t json_special[256] = {
    [0x00 ... 0x1F] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xFF] = 1,
};

/* 0: \u00XX; otherwise the letter of the two-character escape */
static const char esc2[32] = {0, 0, 0, 0, 0, 0, 0, 0, 'b', 't', 'n', 0, 'f', 'r'};

/* The literal is written in place: one check for room up front (the text,
 * its quotes), and more only at an escape, which is longer than its byte.
 * Plain bytes are copied as they are scanned, sixteen at a time with SSE2
 * (a chunk is stored whole, and the bytes from its first special one on
 * are written again), the rest one at a time against json_special. */
int sr_json_put_string(sr_buf_t *b, const uint8_t *s, size_t len, size_t *bad) {
  if (len > SIZE_MAX / 2 - 8 || sr_buf_room(b, len + 2)) return SR_ENOMEM;
  /* invariant: room for the rest of s and the closing quote */
  uint8_t *o = b->data + b->len;
  *o++ = '"';
  size_t i = 0;
  for (;;) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(0x20);
#define SR_PLAIN_HIT(v) \
  _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8((v), quote), _mm_cmpeq_epi8((v), bslash)), \
               _mm_cmplt_epi8((v), space))
    while (len - i >= 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
      unsigned m = (unsigned)_mm_movemask_epi8(SR_PLAIN_HIT(v));
      _mm_storeu_si128((__m128i *)(void *)o, v);
      if (m) {
        unsigned k = (unsigned)__builtin_ctz(m);
        i += k;
        o += k;
        goto special;
      }
      i += 16;
      o += 16;
    }
#undef SR_PLAIN_HIT
#endif
    while (i < len && !json_special[s[i]]) *o++ = s[i++];
    if (i >= len) break;
#if defined(__SSE2__)
  special:;
#endif
    uint8_t c = s[i];
    if (c >= 0x80) {
      size_t k = sr_utf8_seqlen(s + i, len - i);
      if (k == 0) {
        b->len = (size_t)(o - b->data);
        if (bad) *bad = i;
        return SR_EUTF8;
      }
      for (size_t j = 0; j < k; j++) *o++ = s[i + j];
      i += k;
      continue;
    }
    /* an escape: up to six bytes for one */
    b->len = (size_t)(o - b->data);
    if (sr_buf_room(b, len - i + 6)) return SR_ENOMEM;
    o = b->data + b->len;
    *o++ = '\\';
    if (c == '"' || c == '\\') {
      *o++ = c;
    } else if (esc2[c]) {
      *o++ = (uint8_t)esc2[c];
    } else {
      static const char hex[] = "0123456789abcdef";
      *o++ = 'u';
      *o++ = '0';
      *o++ = '0';
      *o++ = (uint8_t)hex[c >> 4];
      *o++ = (uint8_t)hex[c & 15];
    }
    i++;
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  return 0;
}

/* ---- strings in ------------------------------------------------------- */

static int hex4(const uint8_t *p, size_t n, size_t pos, unsigned *v) {
  if (pos + 4 > n) return -1;
  unsigned x = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t c = p[pos + (size_t)i];
    x <<= 4;
    if (c >= '0' && c <= '9') x |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') x |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') x |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *v = x;
  return 0;
}

static int put_utf8(sr_buf_t *b, unsigned cp) {
  uint8_t u[4];
  size_t k;
  if (cp < 0x80) {
    u[0] = (uint8_t)cp;
    k = 1;
  } else if (cp < 0x800) {
    u[0] = (uint8_t)(0xC0 | (cp >> 6));
    u[1] = (uint8_t)(0x80 | (cp & 0x3F));
    k = 2;
  } else if (cp < 0x10000) {
    u[0] = (uint8_t)(0xE0 | (cp >> 12));
    u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (uint8_t)(0x80 | (cp & 0x3F));
    k = 3;
  } else {
    u[0] = (uint8_t)(0xF0 | (cp >> 18));
    u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (uint8_t)(0x80 | (cp & 0x3F));
    k = 4;
  }
  return sr_buf_append(b, u, k);
}

int sr_json_read_string(const uint8_t *p, size_t n, size_t pos, sr_buf_t *scratch,
                        const char **s, size_t *slen, size_t *end, char *err, size_t errlen) {
  size_t i = pos + 1, start = i;
  int copying = 0;
  char what[64];
  for (;;) {
    size_t j = plain_run(p, i, n);
    if (copying && j > i && sr_buf_append(scratch, p + i, j - i)) return SR_ENOMEM;
    i = j;
    if (i >= n) return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "unterminated string starting");
    uint8_t c = p[i];
    if (c == '"') break;
    if (c >= 0x80) {
      size_t k = sr_utf8_seqlen(p + i, n - i);
      if (k == 0) return sr_json_err_at(err, errlen, SR_EUTF8, i, n, "invalid UTF-8 in string");
      if (copying && sr_buf_append(scratch, p + i, k)) return SR_ENOMEM;
      i += k;
      continue;
    }
    if (c < 0x20) {
      snprintf(what, sizeof what, "invalid control character 0x%02x in string", c);
      return sr_json_err_at(err, errlen, SR_ESYNTAX, i, n, what);
    }
    if (c != '\\') {
      if (copying && sr_buf_putc(scratch, c)) return SR_ENOMEM;
      i++;
      continue;
    }
    if (!copying) {
      copying = 1;
      scratch->len = 0;
      if (sr_buf_append(scratch, p + start, i - start)) return SR_ENOMEM;
    }
    if (i + 1 >= n) return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "unterminated string starting");
    uint8_t e = p[i + 1];
    char r = 0;
    switch (e) {
      case '"': r = '"'; break;
      case '\\': r = '\\'; break;
      case '/': r = '/'; break;
      case 'b': r = '\b'; break;
      case 'f': r = '\f'; break;
      case 'n': r = '\n'; break;
      case 'r': r = '\r'; break;
      case 't': r = '\t'; break;
      case 'u': break;
      default:
        if (e >= 0x20 && e < 0x7f) snprintf(what, sizeof what, "invalid escape '\\%c' in string", e);
        else snprintf(what, sizeof what, "invalid escape in string");
        return sr_json_err_at(err, errlen, SR_ESYNTAX, i, n, what);
    }
    if (r) {
      if (sr_buf_putc(scratch, (uint8_t)r)) return SR_ENOMEM;
      i += 2;
      continue;
    }
    unsigned cp;
    if (hex4(p, n, i + 2, &cp))
      return sr_json_err_at(err, errlen, SR_ESYNTAX, i, n, "invalid \\u escape (expected 4 hex digits)");
    size_t esc_at = i;
    i += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      unsigned lo;
      if (i + 1 < n && p[i] == '\\' && p[i + 1] == 'u' && hex4(p, n, i + 2, &lo) == 0 &&
          lo >= 0xDC00 && lo <= 0xDFFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        i += 6;
      } else {
        snprintf(what, sizeof what, "lone surrogate \\u%04x in string (not valid UTF-8)", cp);
        return sr_json_err_at(err, errlen, SR_EUTF8, esc_at, n, what);
      }
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      snprintf(what, sizeof what, "lone surrogate \\u%04x in string (not valid UTF-8)", cp);
      return sr_json_err_at(err, errlen, SR_EUTF8, esc_at, n, what);
    }
    if (put_utf8(scratch, cp)) return SR_ENOMEM;
  }
  if (copying) {
    *s = (const char *)scratch->data;
    *slen = scratch->len;
  } else {
    *s = (const char *)(p + start);
    *slen = i - start;
  }
  *end = i + 1;
  return 0;
}

/* ---- numbers in ------------------------------------------------------- */

static int match_word(const uint8_t *p, size_t n, size_t pos, const char *w) {
  size_t k = strlen(w);
  return pos + k <= n && memcmp(p + pos, w, k) == 0;
}

#define ISDIGIT(c) ((c) >= '0' && (c) <= '9')

int sr_json_read_number(const uint8_t *p, size_t n, size_t pos, int *is_int, int64_t *iv,
                        double *dv, size_t *end, char *err, size_t errlen) {
  size_t i = pos;
  int neg = 0;
  if (match_word(p, n, i, "NaN")) {
    *is_int = 0;
    *dv = NAN;
    *end = i + 3;
    return 0;
  }
  if (i < n && p[i] == '-') {
    neg = 1;
    i++;
  }
  if (match_word(p, n, i, "Infinity")) {
    *is_int = 0;
    *dv = neg ? -INFINITY : INFINITY;
    *end = i + 8;
    return 0;
  }
  if (i >= n || !ISDIGIT(p[i]))
    return sr_json_err_at(err, errlen, SR_ESYNTAX, i, n, "invalid number (expected a digit)");
  size_t ds = i;
  if (p[i] == '0') {
    i++;
    if (i < n && ISDIGIT(p[i]))
      return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "invalid number (leading zero)");
  } else {
    while (i < n && ISDIGIT(p[i])) i++;
  }
  size_t de = i;
  int isf = 0;
  if (i < n && p[i] == '.') {
    isf = 1;
    i++;
    if (i >= n || !ISDIGIT(p[i]))
      return sr_json_err_at(err, errlen, SR_ESYNTAX, i, n, "invalid number (expected a digit after '.')");
    while (i < n && ISDIGIT(p[i])) i++;
  }
  if (i < n && (p[i] == 'e' || p[i] == 'E')) {
    isf = 1;
    i++;
    if (i < n && (p[i] == '+' || p[i] == '-')) i++;
    if (i >= n || !ISDIGIT(p[i]))
      return sr_json_err_at(err, errlen, SR_ESYNTAX, i, n, "invalid number (expected a digit in the exponent)");
    while (i < n && ISDIGIT(p[i])) i++;
  }
  *end = i;
  if (!isf && de - ds <= 19) {
    uint64_t u = 0;
    for (size_t k = ds; k < de; k++) u = u * 10 + (uint64_t)(p[k] - '0');
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (u <= lim) {
      *is_int = 1;
      *iv = neg ? (int64_t)(0 - u) : (int64_t)u;
      return 0;
    }
  }
  /* A float, or an integer beyond 64 bits: the nearest double. */
  *dv = sr_dconv_strtod((const char *)p + pos, i - pos);
  *is_int = 0;
  return 0;
}

size_t sr_json_skip_ws(const uint8_t *p, size_t n, size_t pos) {
  while (pos < n && (p[pos] == ' ' || p[pos] == '\n' || p[pos] == '\r' || p[pos] == '\t')) pos++;
  return pos;
}

/* ---- validating skipper (Lua-free consumers) ------------------------- */

int sr_json_skip_value(const uint8_t *p, size_t n, size_t pos, int depth_left,
                       sr_buf_t *scratch, size_t *end, char *err, size_t errlen) {
  pos = sr_json_skip_ws(p, n, pos);
  if (pos >= n) return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected a value");
  uint8_t c = p[pos];
  int rc;
  if (c == '"') {
    const char *s;
    size_t sl;
    return sr_json_read_string(p, n, pos, scratch, &s, &sl, end, err, errlen);
  }
  if (c == '{' || c == '[') {
    uint8_t close = c == '{' ? '}' : ']';
    if (depth_left <= 0)
      return sr_json_err_at(err, errlen, SR_EDEPTH, pos, n, "nesting too deep");
    pos = sr_json_skip_ws(p, n, pos + 1);
    if (pos < n && p[pos] == close) {
      *end = pos + 1;
      return 0;
    }
    for (;;) {
      if (c == '{') {
        if (pos >= n || p[pos] != '"')
          return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected a string key");
        const char *s;
        size_t sl;
        if ((rc = sr_json_read_string(p, n, pos, scratch, &s, &sl, &pos, err, errlen))) return rc;
        pos = sr_json_skip_ws(p, n, pos);
        if (pos >= n || p[pos] != ':') return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected ':'");
        pos++;
      }
      if ((rc = sr_json_skip_value(p, n, pos, depth_left - 1, scratch, &pos, err, errlen))) return rc;
      pos = sr_json_skip_ws(p, n, pos);
      if (pos < n && p[pos] == ',') {
        pos = sr_json_skip_ws(p, n, pos + 1);
        continue;
      }
      if (pos < n && p[pos] == close) {
        *end = pos + 1;
        return 0;
      }
      return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n,
                            c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
  if (match_word(p, n, pos, "true")) {
    *end = pos + 4;
    return 0;
  }
  if (match_word(p, n, pos, "false")) {
    *end = pos + 5;
    return 0;
  }
  if (match_word(p, n, pos, "null")) {
    *end = pos + 4;
    return 0;
  }
  if (c == '-' || ISDIGIT(c) || c == 'N' || c == 'I') {
    int isi;
    int64_t iv;
    double dv;
    if (c == 'N' && !match_word(p, n, pos, "NaN")) goto bad;
    if (c == 'I' && !match_word(p, n, pos, "Infinity")) goto bad;
    return sr_json_read_number(p, n, pos, &isi, &iv, &dv, end, err, errlen);
  }
bad:
  return sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected a value");
}

/* ---- CONNECT handshake (payload.h) ----------------------------------- */

int sr_json_top_string(const uint8_t *p, size_t n, const char *key, sr_buf_t *out,
                       size_t *val_off, char *err, size_t errlen) {
  sr_buf_t scratch;
  sr_buf_init(&scratch);
  size_t keylen = strlen(key);
  int rc = 0, result = SR_ENOTFOUND;
  size_t pos = sr_json_skip_ws(p, n, 0);
  if (pos >= n || p[pos] != '{') {
    rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected '{' (a handshake map)");
    goto done;
  }
  pos = sr_json_skip_ws(p, n, pos + 1);
  if (pos < n && p[pos] == '}') {
    pos++;
    goto tail;
  }
  for (;;) {
    const char *k;
    size_t kl;
    if (pos >= n || p[pos] != '"') {
      rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected a string key");
      goto done;
    }
    if ((rc = sr_json_read_string(p, n, pos, &scratch, &k, &kl, &pos, err, errlen))) goto done;
    int is_key = kl == keylen && memcmp(k, key, keylen) == 0;
    pos = sr_json_skip_ws(p, n, pos);
    if (pos >= n || p[pos] != ':') {
      rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected ':'");
      goto done;
    }
    pos = sr_json_skip_ws(p, n, pos + 1);
    if (is_key) *val_off = pos;
    if (is_key && pos < n && p[pos] == '"') {
      const char *v;
      size_t vl;
      if ((rc = sr_json_read_string(p, n, pos, &scratch, &v, &vl, &pos, err, errlen))) goto done;
      out->len = 0; /* a later duplicate key wins, as in Python */
      if (sr_buf_append(out, v, vl) < 0) {
        rc = SR_ENOMEM;
        goto done;
      }
      result = 1;
    } else {
      if (is_key) result = 0;
      if ((rc = sr_json_skip_value(p, n, pos, SR_JSON_HANDSHAKE_DEPTH, &scratch, &pos, err,
                                   errlen)))
        goto done;
    }
    pos = sr_json_skip_ws(p, n, pos);
    if (pos < n && p[pos] == ',') {
      pos = sr_json_skip_ws(p, n, pos + 1);
      continue;
    }
    if (pos < n && p[pos] == '}') {
      pos++;
      break;
    }
    rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected ',' or '}'");
    goto done;
  }
tail:
  pos = sr_json_skip_ws(p, n, pos);
  if (pos < n) {
    rc = sr_json_err_at(err, errlen, SR_ESYNTAX, pos, n, "expected end of input");
    goto done;
  }
  rc = result;
done:
  sr_buf_free(&scratch);
  return rc;
}

int sr_json_handshake_object(const uint8_t *p, size_t n, char *out, size_t cap, char *err,
                             size_t errlen) {
  sr_buf_t id;
  sr_buf_init(&id);
  size_t vpos = 0;
  int rc = sr_json_top_string(p, n, "object", &id, &vpos, err, errlen);
  if (rc == SR_ENOTFOUND) {
    rc = sr_seterr(err, errlen, SR_ENOTFOUND, "handshake has no \"object\" key");
  } else if (rc == 0) {
    rc = sr_json_err_at(err, errlen, SR_ETYPE, vpos, n, "handshake \"object\" is not a string");
  } else if (rc == 1) {
    if (id.len + 1 > cap) {
      char what[96];
      snprintf(what, sizeof what, "handshake object id too long (%zu bytes, at most %zu)", id.len,
               cap ? cap - 1 : 0);
      rc = sr_json_err_at(err, errlen, SR_ETOOBIG, vpos, n, what);
    } else if (id.len > 0 && memchr(id.data, '\0', id.len) != NULL) {
      /* "X\u0000junk" must not match object X */
      rc = sr_json_err_at(err, errlen, SR_ETYPE, vpos, n, "handshake object id contains a NUL");
    } else {
      if (id.len > 0) memcpy(out, id.data, id.len);
      out[id.len] = '\0';
      rc = (int)id.len;
    }
  }
  sr_buf_free(&id);
  return rc;
}

/* ---- base64 ----------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int sr_base64_encode(sr_buf_t *b, const uint8_t *s, size_t len) {
  if (len == 0) return 0;
  if (len > (SIZE_MAX / 4) * 3 - 3 || sr_buf_reserve(b, (len + 2) / 3 * 4)) return SR_ENOMEM;
  uint8_t *o = b->data + b->len;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    *o++ = (uint8_t)b64chars[v >> 18];
    *o++ = (uint8_t)b64chars[(v >> 12) & 63];
    *o++ = (uint8_t)b64chars[(v >> 6) & 63];
    *o++ = (uint8_t)b64chars[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
    *o++ = (uint8_t)b64chars[v >> 18];
    *o++ = (uint8_t)b64chars[(v >> 12) & 63];
    *o++ = i + 1 < len ? (uint8_t)b64chars[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
  b->len = (size_t)(o - b->data);
  return 0;
}

static int b64val(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int sr_base64_decode(sr_buf_t *b, const uint8_t *s, size_t len, char *err, size_t errlen) {
  if (len % 4 != 0)
    return sr_seterr(err, errlen, SR_ESYNTAX, "invalid base64: length %zu is not a multiple of 4", len);
  if (len == 0) return 0;
  if (sr_buf_reserve(b, len / 4 * 3)) return SR_ENOMEM;
  for (size_t i = 0; i < len; i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      uint8_t c = s[i + (size_t)k];
      if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || s[i + 3] == '=')) {
        v[k] = 0;
        pad++;
        continue;
      }
      v[k] = b64val(c);
      if (v[k] < 0)
        return sr_seterr(err, errlen, SR_ESYNTAX, "invalid base64 character at offset %zu", i + (size_t)k);
    }
    uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    b->data[b->len++] = (uint8_t)(x >> 16);
    if (pad < 2) b->data[b->len++] = (uint8_t)(x >> 8);
    if (pad < 1) b->data[b->len++] = (uint8_t)x;
  }
  return 0;
}
