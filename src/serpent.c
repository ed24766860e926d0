/*
 * serpent.c -- the Lua-free half of the serpent serializer (see serpent.h):
 * a recursive-descent parser of the Python literals serpent writes, which
 * validates everything (UTF-8, escapes, number syntax, nesting and element
 * limits) and reports values to a visitor; the CONNECT handshake scan the
 * daemon thread uses (sr_serpent_handshake_object, payload.h); and the
 * writers of Python's repr for str and float. Nothing here evaluates input.
 */
#include "serpent.h"

#include "json.h"
#include "dconv.h"
#include "payload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Decodes one UTF-8 sequence at p[0..n) (n >= 1), validated by json.c's
 * sr_utf8_seqlen. Returns its length and the code point in *cp, or 0 when
 * the bytes are not valid UTF-8. */
static size_t utf8_decode1(const uint8_t *p, size_t n, uint32_t *cp) {
  size_t len = sr_utf8_seqlen(p, n);
  if (len == 0) return 0;
  static const uint8_t lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t v = p[0] & lead_mask[len];
  for (size_t k = 1; k < len; k++) v = (v << 6) | (p[k] & 0x3F);
  *cp = v;
  return len;
}

static int put_utf8(sr_buf_t *b, uint32_t cp) {
  uint8_t u[4];
  size_t l;
  if (cp < 0x80) {
    u[0] = (uint8_t)cp; l = 1;
  } else if (cp < 0x800) {
    u[0] = (uint8_t)(0xC0 | (cp >> 6)); u[1] = (uint8_t)(0x80 | (cp & 0x3F)); l = 2;
  } else if (cp < 0x10000) {
    u[0] = (uint8_t)(0xE0 | (cp >> 12)); u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (uint8_t)(0x80 | (cp & 0x3F)); l = 3;
  } else {
    u[0] = (uint8_t)(0xF0 | (cp >> 18)); u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (uint8_t)(0x80 | (cp & 0x3F)); l = 4;
  }
  return sr_buf_append(b, u, l);
}

/* ---- parser ---------------------------------------------------------------- */

typedef struct parser_s {
  const uint8_t *p;
  size_t n;
  size_t i;
  int max_depth;
  size_t max_elements;
  size_t elements;
  int quiet; /* > 0: look-ahead pass, no visitor calls */
  const sr_serpent_visitor_t *v;
  void *ud;
  char *err;
  size_t errlen;
  sr_buf_t *sb; /* decoded string / cleaned number scratch */
} parser_t;

#define VISIT(P, cb, ...) ((P)->quiet ? 0 : (P)->v->cb((P)->ud, __VA_ARGS__))

static int perr(parser_t *P, int code, size_t off, const char *what) {
  return sr_seterr(P->err, P->errlen, code, "serpent: %s at offset %zu", what, off);
}

/* Describes the byte at off for messages: 'x' or 0xNN or "end of data". */
static void describe(parser_t *P, size_t off, char *d, size_t dl) {
  if (off >= P->n) snprintf(d, dl, "end of data");
  else if (P->p[off] >= 0x21 && P->p[off] < 0x7f) snprintf(d, dl, "character '%c'", P->p[off]);
  else snprintf(d, dl, "byte 0x%02x", P->p[off]);
}

static int unexpected(parser_t *P, const char *expected) {
  char d[32], msg[96];
  describe(P, P->i, d, sizeof d);
  snprintf(msg, sizeof msg, "unexpected %s (expected %s)", d, expected);
  return perr(P, SR_ESYNTAX, P->i, msg);
}

static int is_ident(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Skips whitespace and "#" comments (checked to be UTF-8). Line
 * continuations outside strings are not accepted (serpent never writes
 * them). */
static int skip_ws_slow(parser_t *P);
static inline int skip_ws(parser_t *P) {
  if (P->i < P->n) {
    uint8_t c = P->p[P->i];
    if (c > ' ' && c != '#') return 0;
  }
  return skip_ws_slow(P);
}

static int skip_ws_slow(parser_t *P) {
  while (P->i < P->n) {
    uint8_t c = P->p[P->i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
      P->i++;
    } else if (c == '#') {
      const uint8_t *nl = memchr(P->p + P->i, '\n', P->n - P->i);
      size_t end = nl ? (size_t)(nl - P->p) : P->n;
      size_t bad = sr_utf8_check(P->p + P->i, end - P->i);
      if (bad != end - P->i) return perr(P, SR_EUTF8, P->i + bad, "invalid UTF-8 in a comment");
      P->i = end;
    } else {
      break;
    }
  }
  return 0;
}

/* parse_value flags: a dict key (not counted as an element); a value that
 * must be hashable in Python (dict key, set element, and tuples within), so
 * no list, dict or set. The second also bounds the dict/set look-ahead. */
#define PV_KEY 1
#define PV_HASHABLE 2

static int parse_value(parser_t *P, int depth, int flags);

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* One quoted literal at P->i (after any prefix) appended to the scratch buffer. */
static int scan_quoted(parser_t *P, int raw, size_t start) {
  const uint8_t *p = P->p;
  size_t n = P->n;
  uint8_t q = p[P->i];
  if (P->i + 2 < n && p[P->i + 1] == q && p[P->i + 2] == q)
    return perr(P, SR_ESYNTAX, start, "triple-quoted strings are not supported");
  size_t j = P->i + 1;
  int rc;
  for (;;) {
    if (j >= n || p[j] == '\n' || p[j] == '\r')
      return perr(P, SR_ESYNTAX, start, "unterminated string starting");
    uint8_t c = p[j];
    if (c == q) break;
    if (c != '\\') {
      size_t k = j;
      while (k < n && p[k] != q && p[k] != '\\' && p[k] != '\n' && p[k] != '\r') k++;
      size_t bad = sr_utf8_check(p + j, k - j);
      if (bad != k - j) return perr(P, SR_EUTF8, j + bad, "invalid UTF-8 in a string");
      if ((rc = sr_buf_append(P->sb, p + j, k - j))) return perr(P, rc, j, "out of memory");
      j = k;
      continue;
    }
    /* backslash */
    if (j + 1 >= n) return perr(P, SR_ESYNTAX, start, "unterminated string starting");
    uint8_t e = p[j + 1];
    if (raw) {
      if ((rc = sr_buf_putc(P->sb, '\\'))) return perr(P, rc, j, "out of memory");
      if (e == q || e == '\\' || e == '\n' || e == '\r') {
        if ((rc = sr_buf_putc(P->sb, e))) return perr(P, rc, j, "out of memory");
        j += 2;
        if (e == '\r' && j < n && p[j] == '\n') {
          if ((rc = sr_buf_putc(P->sb, '\n'))) return perr(P, rc, j, "out of memory");
          j++;
        }
      } else {
        j++;
      }
      continue;
    }
    uint32_t cp;
    size_t esc = j;
    j += 2;
    switch (e) {
      case '\n': continue;
      case '\r': if (j < n && p[j] == '\n') j++; continue;
      case '\\': cp = '\\'; break;
      case '\'': cp = '\''; break;
      case '"': cp = '"'; break;
      case 'a': cp = 7; break;
      case 'b': cp = 8; break;
      case 'f': cp = 12; break;
      case 'n': cp = 10; break;
      case 'r': cp = 13; break;
      case 't': cp = 9; break;
      case 'v': cp = 11; break;
      case 'x': case 'u': case 'U': {
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        cp = 0;
        for (int k = 0; k < digits; k++) {
          int h = j + (size_t)k < n ? hexval(p[j + k]) : -1;
          if (h < 0) {
            const char *m = e == 'x' ? "truncated \\xXX escape"
                            : e == 'u' ? "truncated \\uXXXX escape"
                                       : "truncated \\UXXXXXXXX escape";
            return perr(P, SR_ESYNTAX, esc, m);
          }
          cp = (cp << 4) | (uint32_t)h;
        }
        j += (size_t)digits;
        if (cp > 0x10FFFF) return perr(P, SR_ESYNTAX, esc, "illegal Unicode character in \\U escape");
        if (cp >= 0xD800 && cp <= 0xDFFF)
          return perr(P, SR_EUTF8, esc, "surrogate code point escape (not representable in UTF-8)");
        break;
      }
      case 'N':
        return perr(P, SR_ESYNTAX, esc, "\\N{...} escapes are not supported");
      default:
        if (e >= '0' && e <= '7') {
          cp = (uint32_t)(e - '0');
          for (int k = 0; k < 2 && j < n && p[j] >= '0' && p[j] <= '7'; k++, j++)
            cp = cp * 8 + (uint32_t)(p[j] - '0');
        } else {
          /* Python keeps unknown escapes as written (backslash included). */
          if ((rc = sr_buf_putc(P->sb, '\\'))) return perr(P, rc, esc, "out of memory");
          j = esc + 1;
          continue;
        }
    }
    if ((rc = put_utf8(P->sb, cp))) return perr(P, rc, esc, "out of memory");
  }
  P->i = j + 1;
  return 0;
}

/* At P->i: an identifier that may be a string prefix. Returns 1 and sets
 * *raw when it is a u/r prefix directly followed by a quote; 0 when it is not
 * a prefix; a negative code for bytes and f-strings. */
static int string_prefix(parser_t *P, size_t *plen, int *raw) {
  size_t k = P->i;
  int u = 0, r = 0, b = 0, f = 0;
  while (k < P->n && k - P->i < 3 && is_ident(P->p[k])) {
    uint8_t c = P->p[k] | 0x20;
    if (c == 'u') u++;
    else if (c == 'r') r++;
    else if (c == 'b') b++;
    else if (c == 'f') f++;
    else return 0;
    k++;
  }
  size_t len = k - P->i;
  if (len == 0 || len > 2 || k >= P->n || (P->p[k] != '\'' && P->p[k] != '"')) return 0;
  if (u > 1 || r > 1 || b > 1 || f > 1 || (u && len > 1)) return 0;
  if (b) return perr(P, SR_ESYNTAX, P->i, "bytes literals are not supported");
  if (f) return perr(P, SR_ESYNTAX, P->i, "f-strings are not supported");
  *plen = len;
  *raw = r;
  return 1;
}

/* True when a string literal with a prefix starts at P->i (bytes and
 * f-strings included: the caller then takes the slow path, which refuses
 * them). */
static int string_prefix_ahead(parser_t *P) {
  size_t plen;
  int raw;
  return string_prefix(P, &plen, &raw) != 0;
}

/* A string value: one or more adjacent literals, concatenated. */
static int parse_string(parser_t *P) {
  size_t start = P->i;
  int rc;
  /* Fast path, what serpent writes nearly always: one plain literal without
   * escapes, reported straight from the input (no copy). */
  uint8_t q = P->p[start];
  if ((q == '\'' || q == '"') && !(start + 2 < P->n && P->p[start + 1] == q && P->p[start + 2] == q)) {
    size_t k = start + 1;
    while (k < P->n && P->p[k] != q && P->p[k] != '\\' && P->p[k] != '\n' && P->p[k] != '\r') k++;
    if (k < P->n && P->p[k] == q) {
      size_t bad = sr_utf8_check(P->p + start + 1, k - start - 1);
      if (bad != k - start - 1) return perr(P, SR_EUTF8, start + 1 + bad, "invalid UTF-8 in a string");
      size_t after = k + 1;
      P->i = after;
      if ((rc = skip_ws(P))) return rc;
      int adjacent = P->i < P->n && (P->p[P->i] == '\'' || P->p[P->i] == '"' ||
                                     (is_ident(P->p[P->i]) && string_prefix_ahead(P)));
      if (!adjacent) {
        P->i = after;
        return VISIT(P, string, (const char *)P->p + start + 1, k - start - 1, start);
      }
      P->i = start;
    }
  }
  P->sb->len = 0;
  for (;;) {
    int raw = 0;
    if (P->p[P->i] != '\'' && P->p[P->i] != '"') {
      size_t plen;
      rc = string_prefix(P, &plen, &raw);
      if (rc < 0) return rc;
      P->i += plen;
    }
    if ((rc = scan_quoted(P, raw, P->i))) return rc;
    size_t save = P->i;
    if ((rc = skip_ws(P))) return rc;
    size_t plen;
    int r2;
    if (P->i < P->n && (P->p[P->i] == '\'' || P->p[P->i] == '"')) continue;
    if (P->i < P->n && is_ident(P->p[P->i])) {
      rc = string_prefix(P, &plen, &r2);
      if (rc < 0) return rc;
      if (rc == 1) continue;
    }
    P->i = save;
    break;
  }
  return VISIT(P, string, (const char *)P->sb->data ? (const char *)P->sb->data : "",
               P->sb->len, start);
}

/* After a number: "1+2j" (serpent's complex form) or any other arithmetic
 * gets a clear refusal rather than "unexpected '+'". */
static int no_arith(parser_t *P) {
  size_t k = P->i;
  while (k < P->n && (P->p[k] == ' ' || P->p[k] == '\t')) k++;
  if (k < P->n && (P->p[k] == '+' || P->p[k] == '-' || P->p[k] == '*' || P->p[k] == '/'))
    return perr(P, SR_ESYNTAX, k, "complex numbers and arithmetic are not supported");
  return 0;
}

/* A number at P->i (after any sign, given in neg; start is the sign's
 * offset). */
static int parse_number(parser_t *P, int neg, size_t start) {
  const uint8_t *p = P->p;
  size_t n = P->n, j = P->i;
  int rc;
  if (p[j] == '0' && j + 1 < n &&
      ((p[j + 1] | 0x20) == 'x' || (p[j + 1] | 0x20) == 'o' || (p[j + 1] | 0x20) == 'b')) {
    uint8_t kind = p[j + 1] | 0x20;
    int radix = kind == 'x' ? 16 : kind == 'o' ? 8 : 2;
    j += 2;
    uint64_t mag = 0;
    double dmag = 0;
    int over = 0, ndig = 0;
    for (; j < n; j++) {
      if (p[j] == '_' && j + 1 < n && hexval(p[j + 1]) >= 0 && hexval(p[j + 1]) < radix) continue;
      int h = hexval(p[j]);
      if (h < 0 || h >= radix) break;
      ndig++;
      if (mag > (UINT64_MAX - (uint64_t)h) / (uint64_t)radix) over = 1;
      mag = mag * (uint64_t)radix + (uint64_t)h;
      dmag = dmag * radix + h;
    }
    if (ndig == 0 || (j < n && is_ident(p[j]))) return perr(P, SR_ESYNTAX, start, "invalid number");
    P->i = j;
    if ((rc = no_arith(P))) return rc;
    if (!over && !neg && mag <= (uint64_t)INT64_MAX) return VISIT(P, integer, (int64_t)mag, start);
    if (!over && neg && mag <= (uint64_t)INT64_MAX + 1)
      return VISIT(P, integer, mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag, start);
    return VISIT(P, number, neg ? -dmag : dmag, start);
  }
  /* fast path: a plain decimal int of up to 18 digits */
  {
    size_t k = j;
    uint64_t mag = 0;
    while (k < n && k - j < 19 && is_digit(p[k])) mag = mag * 10 + (uint64_t)(p[k++] - '0');
    if (k - j < 19 && (k == n || (!is_ident(p[k]) && p[k] != '.')) && (p[j] != '0' || k - j == 1)) {
      P->i = k;
      if ((rc = no_arith(P))) return rc;
      return VISIT(P, integer, neg ? -(int64_t)mag : (int64_t)mag, start);
    }
  }
  /* decimal: digits [. digits] [e [+-] digits], "_" between digits */
  sr_buf_t *s = P->sb;
  s->len = 0;
  if ((rc = sr_buf_putc(s, neg ? '-' : '+'))) return perr(P, rc, start, "out of memory");
  int is_float = 0, lead_zero = 0, nonzero_after = 0;
  size_t int_digits = 0;
#define DIGITS(count)                                                              \
  for (; j < n; j++) {                                                             \
    if (p[j] == '_' && j > P->i && is_digit(p[j - 1]) && j + 1 < n && is_digit(p[j + 1])) \
      continue;                                                                    \
    if (!is_digit(p[j])) break;                                                    \
    if ((rc = sr_buf_putc(s, p[j]))) return perr(P, rc, start, "out of memory");   \
    count++;                                                                       \
  }
  if (p[j] == '0') lead_zero = 1;
  DIGITS(int_digits);
  if (lead_zero) {
    for (size_t k = 2; k < s->len; k++)
      if (s->data[k] != '0') nonzero_after = 1;
  }
  size_t frac_digits = 0;
  if (j < n && p[j] == '.') {
    is_float = 1;
    if ((rc = sr_buf_putc(s, '.'))) return perr(P, rc, start, "out of memory");
    j++;
    if (j < n && p[j] == '_') return perr(P, SR_ESYNTAX, start, "invalid number");
    DIGITS(frac_digits);
  }
  if (int_digits == 0 && frac_digits == 0) return perr(P, SR_ESYNTAX, start, "invalid number");
  if (j < n && (p[j] | 0x20) == 'e') {
    size_t k = j + 1;
    if (k < n && (p[k] == '+' || p[k] == '-')) k++;
    if (k < n && is_digit(p[k])) {
      is_float = 1;
      if ((rc = sr_buf_putc(s, 'e'))) return perr(P, rc, start, "out of memory");
      if (p[j + 1] == '-' && (rc = sr_buf_putc(s, '-'))) return perr(P, rc, start, "out of memory");
      j = k;
      size_t exp_digits = 0;
      DIGITS(exp_digits);
      (void)exp_digits;
    }
  }
#undef DIGITS
  if (j < n && (p[j] | 0x20) == 'j')
    return perr(P, SR_ESYNTAX, start, "complex numbers are not supported");
  if (j < n && (is_ident(p[j]) || p[j] == '.')) return perr(P, SR_ESYNTAX, start, "invalid number");
  if (!is_float && lead_zero && nonzero_after)
    return perr(P, SR_ESYNTAX, start, "leading zeros in a decimal integer are not permitted");
  P->i = j;
  if ((rc = no_arith(P))) return rc;
  if ((rc = sr_buf_putc(s, 0))) return perr(P, rc, start, "out of memory");
  const char *text = (const char *)s->data;
  if (!is_float) {
    uint64_t mag = 0;
    int over = 0;
    for (const char *c = text + 1; *c; c++) {
      uint64_t d = (uint64_t)(*c - '0');
      if (mag > (UINT64_MAX - d) / 10) {
        over = 1;
        break;
      }
      mag = mag * 10 + d;
    }
    if (!over && !neg && mag <= (uint64_t)INT64_MAX) return VISIT(P, integer, (int64_t)mag, start);
    if (!over && neg && mag <= (uint64_t)INT64_MAX + 1)
      return VISIT(P, integer, mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag, start);
    /* beyond 64 bits: a float, as the JSON codec does */
  }
  double d = sr_dconv_strtod(text, s->len - 1);
  return VISIT(P, number, d, start);
}

static int parse_seq_tail(parser_t *P, int depth, sr_serpent_seq_t kind, uint8_t close,
                          size_t count, size_t off, int flags) {
  int rc;
  for (;;) {
    if ((rc = skip_ws(P))) return rc;
    if (P->i < P->n && P->p[P->i] == close) {
      P->i++;
      break;
    }
    size_t eoff = P->i;
    if ((rc = parse_value(P, depth, flags))) return rc;
    count++;
    if ((rc = VISIT(P, seq_item, count, eoff))) return rc;
    if ((rc = skip_ws(P))) return rc;
    if (P->i < P->n && P->p[P->i] == ',') {
      P->i++;
      continue;
    }
    if (P->i < P->n && P->p[P->i] == close) {
      P->i++;
      break;
    }
    return unexpected(P, close == ']' ? "',' or ']'" : close == ')' ? "',' or ')'" : "',' or '}'");
  }
  return VISIT(P, seq_end, kind, count, off);
}

static int parse_dict_tail(parser_t *P, int depth, size_t off) {
  int rc;
  size_t count = 0;
  for (;;) {
    if ((rc = skip_ws(P))) return rc;
    if (P->i < P->n && P->p[P->i] == '}') {
      P->i++;
      break;
    }
    size_t koff = P->i;
    if ((rc = parse_value(P, depth, PV_KEY | PV_HASHABLE))) return rc;
    if ((rc = skip_ws(P))) return rc;
    if (P->i >= P->n || P->p[P->i] != ':') return unexpected(P, "':'");
    P->i++;
    if ((rc = parse_value(P, depth, 0))) return rc;
    count++;
    if ((rc = VISIT(P, dict_pair, koff))) return rc;
    if ((rc = skip_ws(P))) return rc;
    if (P->i < P->n && P->p[P->i] == ',') {
      P->i++;
      continue;
    }
    if (P->i < P->n && P->p[P->i] == '}') {
      P->i++;
      break;
    }
    return unexpected(P, "',' or '}'");
  }
  return VISIT(P, dict_end, count, off);
}

static int parse_value(parser_t *P, int depth, int flags) {
  int rc;
  if ((rc = skip_ws(P))) return rc;
  if (P->i >= P->n) return unexpected(P, "a value");
  size_t off = P->i;
  if (!(flags & PV_KEY) && ++P->elements > P->max_elements) {
    char msg[64];
    snprintf(msg, sizeof msg, "too many elements (more than %zu)", P->max_elements);
    return perr(P, SR_EELEMENTS, off, msg);
  }
  uint8_t c = P->p[off];
  if ((flags & PV_HASHABLE) && (c == '[' || c == '{'))
    return perr(P, SR_ESYNTAX, off,
                c == '[' ? "unhashable list as a dict key or set element"
                         : "unhashable dict or set as a dict key or set element");
  int inner = flags & PV_HASHABLE;
  if (c == '[' || c == '(' || c == '{') {
    if (depth + 1 > P->max_depth) {
      char msg[64];
      snprintf(msg, sizeof msg, "nesting too deep (more than %d levels)", P->max_depth);
      return perr(P, SR_EDEPTH, off, msg);
    }
    P->i++;
    if (c == '[') {
      if ((rc = VISIT(P, seq_begin, SR_SERPENT_LIST, off))) return rc;
      return parse_seq_tail(P, depth + 1, SR_SERPENT_LIST, ']', 0, off, 0);
    }
    if (c == '(') {
      if ((rc = skip_ws(P))) return rc;
      if ((rc = VISIT(P, seq_begin, SR_SERPENT_TUPLE, off))) return rc;
      if (P->i < P->n && P->p[P->i] == ')') {
        P->i++;
        return VISIT(P, seq_end, SR_SERPENT_TUPLE, 0, off);
      }
      size_t eoff = P->i;
      if ((rc = parse_value(P, depth + 1, inner))) return rc;
      if ((rc = VISIT(P, seq_item, 1, eoff))) return rc;
      if ((rc = skip_ws(P))) return rc;
      if (P->i < P->n && P->p[P->i] == ')') {
        P->i++;
        return VISIT(P, seq_end, SR_SERPENT_PAREN, 1, off);
      }
      if (P->i >= P->n || P->p[P->i] != ',') return unexpected(P, "',' or ')'");
      P->i++;
      return parse_seq_tail(P, depth + 1, SR_SERPENT_TUPLE, ')', 1, off, inner);
    }
    /* '{': a dict or a set, told apart by a quiet look-ahead over the first
     * element for ':'. That element must be hashable (no '[' or '{'), so
     * look-aheads never nest and parsing stays linear. */
    if ((rc = skip_ws(P))) return rc;
    if (P->i < P->n && P->p[P->i] == '}') {
      P->i++;
      if ((rc = VISIT(P, dict_begin, off))) return rc;
      return VISIT(P, dict_end, 0, off);
    }
    size_t save = P->i, save_el = P->elements;
    P->quiet++;
    rc = parse_value(P, depth + 1, PV_KEY | PV_HASHABLE);
    P->quiet--;
    if (rc) return rc;
    if ((rc = skip_ws(P))) return rc;
    int is_dict = P->i < P->n && P->p[P->i] == ':';
    P->i = save;
    P->elements = save_el;
    if (is_dict) {
      if ((rc = VISIT(P, dict_begin, off))) return rc;
      return parse_dict_tail(P, depth + 1, off);
    }
    if ((rc = VISIT(P, seq_begin, SR_SERPENT_SET, off))) return rc;
    return parse_seq_tail(P, depth + 1, SR_SERPENT_SET, '}', 0, off, PV_HASHABLE);
  }
  if (c == '\'' || c == '"') return parse_string(P);
  if (c == '-' || c == '+') {
    P->i++;
    if ((rc = skip_ws(P))) return rc;
    if (P->i < P->n && (is_digit(P->p[P->i]) ||
                        (P->p[P->i] == '.' && P->i + 1 < P->n && is_digit(P->p[P->i + 1]))))
      return parse_number(P, c == '-', off);
    return unexpected(P, "a number after the sign");
  }
  if (is_digit(c) || (c == '.' && off + 1 < P->n && is_digit(P->p[off + 1])))
    return parse_number(P, 0, off);
  if (is_ident(c)) {
    size_t plen;
    int raw;
    rc = string_prefix(P, &plen, &raw);
    if (rc < 0) return rc;
    if (rc == 1) return parse_string(P);
    size_t k = off;
    while (k < P->n && is_ident(P->p[k])) k++;
    size_t len = k - off;
    P->i = k;
    if (len == 4 && memcmp(P->p + off, "None", 4) == 0) return VISIT(P, none, off);
    if (len == 4 && memcmp(P->p + off, "True", 4) == 0) return VISIT(P, boolean, 1, off);
    if (len == 5 && memcmp(P->p + off, "False", 5) == 0) return VISIT(P, boolean, 0, off);
    char msg[96];
    snprintf(msg, sizeof msg, "unsupported name '%.*s%s' (only None, True and False)",
             (int)(len > 32 ? 32 : len), (const char *)P->p + off, len > 32 ? "..." : "");
    return perr(P, SR_ESYNTAX, off, msg);
  }
  return unexpected(P, "a value");
}

int sr_serpent_parse(const uint8_t *p, size_t n, int max_depth, size_t max_elements,
                     const sr_serpent_visitor_t *v, void *ud, sr_buf_t *scratch, char *err,
                     size_t errlen) {
  parser_t P;
  memset(&P, 0, sizeof P);
  P.p = p;
  P.n = n;
  P.max_depth = max_depth > SR_SERPENT_MAX_DEPTH ? SR_SERPENT_MAX_DEPTH : max_depth;
  P.max_elements = max_elements;
  P.v = v;
  P.ud = ud;
  P.err = err;
  P.errlen = errlen;
  sr_buf_t own;
  sr_buf_init(&own);
  P.sb = scratch ? scratch : &own;
  const uint8_t *nul = n ? memchr(p, 0, n) : NULL;
  if (nul) return perr(&P, SR_ESYNTAX, (size_t)(nul - p), "NUL byte (serpent data never has one)");
  int rc = parse_value(&P, 0, 0);
  if (rc == 0) rc = skip_ws(&P);
  if (rc == 0 && P.i < P.n) rc = unexpected(&P, "end of data after the value");
  sr_buf_free(&own);
  return rc;
}

/* ---- top-level string scan (daemon thread, no Lua) ------------------------- */

typedef struct hs_s {
  int depth;      /* containers open */
  int top_dict;   /* the document is a dict */
  size_t pos;     /* values seen directly in the top dict (keys and values) */
  const char *key;
  size_t keylen;
  int at_key;     /* the last top-level key was `key` */
  int result;     /* SR_ENOTFOUND, 0 (not a string) or 1 */
  size_t val_off;
  sr_buf_t *out;
} hs_t;

/* Called for every value (scalar or container start) at the current depth. */
static int hs_value(hs_t *h, int is_str, const char *s, size_t len, size_t off) {
  if (h->depth != 1 || !h->top_dict) return 0;
  if (h->pos++ % 2 == 0) {
    h->at_key = is_str && len == h->keylen && memcmp(s, h->key, len) == 0;
    return 0;
  }
  if (!h->at_key) return 0;
  h->val_off = off; /* a later duplicate key wins, as in Python */
  h->result = is_str;
  h->out->len = 0;
  if (is_str && sr_buf_append(h->out, s, len) < 0) return SR_ENOMEM;
  return 0;
}

static int hs_none(void *ud, size_t off) { return hs_value(ud, 0, NULL, 0, off); }
static int hs_bool(void *ud, int v, size_t off) { (void)v; return hs_value(ud, 0, NULL, 0, off); }
static int hs_int(void *ud, int64_t v, size_t off) { (void)v; return hs_value(ud, 0, NULL, 0, off); }
static int hs_num(void *ud, double v, size_t off) { (void)v; return hs_value(ud, 0, NULL, 0, off); }
static int hs_str(void *ud, const char *s, size_t len, size_t off) {
  return hs_value(ud, 1, s, len, off);
}
static int hs_seq_begin(void *ud, sr_serpent_seq_t kind, size_t off) {
  hs_t *h = ud;
  (void)kind;
  int rc = hs_value(h, 0, NULL, 0, off);
  h->depth++;
  return rc;
}
static int hs_seq_item(void *ud, size_t index, size_t off) { (void)ud; (void)index; (void)off; return 0; }
static int hs_seq_end(void *ud, sr_serpent_seq_t kind, size_t count, size_t off) {
  (void)kind; (void)count; (void)off;
  ((hs_t *)ud)->depth--;
  return 0;
}
static int hs_dict_begin(void *ud, size_t off) {
  hs_t *h = ud;
  if (h->depth == 0) h->top_dict = 1;
  int rc = hs_value(h, 0, NULL, 0, off);
  h->depth++;
  return rc;
}
static int hs_dict_pair(void *ud, size_t off) { (void)ud; (void)off; return 0; }
static int hs_dict_end(void *ud, size_t count, size_t off) {
  (void)count; (void)off;
  ((hs_t *)ud)->depth--;
  return 0;
}

static const sr_serpent_visitor_t hs_visitor = {
    hs_none, hs_bool, hs_int, hs_num, hs_str, hs_seq_begin, hs_seq_item, hs_seq_end,
    hs_dict_begin, hs_dict_pair, hs_dict_end};

int sr_serpent_top_string(const uint8_t *p, size_t n, const char *key, sr_buf_t *out,
                          size_t *val_off, char *err, size_t errlen) {
  hs_t h;
  memset(&h, 0, sizeof h);
  h.key = key;
  h.keylen = strlen(key);
  h.result = SR_ENOTFOUND;
  h.out = out;
  int rc = sr_serpent_parse(p, n, 200, 1000000, &hs_visitor, &h, NULL, err, errlen);
  if (rc) return rc;
  if (!h.top_dict)
    return sr_seterr(err, errlen, SR_ESYNTAX, "serpent: handshake payload is not a dict at offset 0");
  *val_off = h.val_off;
  return h.result;
}

int sr_serpent_handshake_object(const uint8_t *p, size_t n, char *out, size_t cap, char *err,
                                size_t errlen) {
  sr_buf_t id;
  sr_buf_init(&id);
  size_t off = 0;
  int rc = sr_serpent_top_string(p, n, "object", &id, &off, err, errlen);
  if (rc == SR_ENOTFOUND) {
    rc = sr_seterr(err, errlen, SR_ENOTFOUND, "serpent: handshake has no 'object' key");
  } else if (rc == 0) {
    rc = sr_seterr(err, errlen, SR_ESYNTAX,
                   "serpent: handshake 'object' is not a string at offset %zu", off);
  } else if (rc == 1) {
    if (id.len + 1 > cap) {
      rc = sr_seterr(err, errlen, SR_ETOOBIG,
                     "serpent: handshake object id of %zu bytes is too long at offset %zu", id.len,
                     off);
    } else if (id.len > 0 && memchr(id.data, '\0', id.len) != NULL) {
      /* 'X\x00junk' must not match object X */
      rc = sr_seterr(err, errlen, SR_ESYNTAX,
                     "serpent: handshake object id contains a NUL at offset %zu", off);
    } else {
      if (id.len > 0) memcpy(out, id.data, id.len);
      out[id.len] = 0;
      rc = (int)id.len;
    }
  }
  sr_buf_free(&id);
  return rc;
}

/* ---- writers --------------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

/* Non-ASCII code points Python's repr escapes (str.isprintable() false):
 * Latin-1 controls, NBSP and soft hyphen exactly; beyond Latin-1 the common
 * separators and format characters. Others are written as UTF-8, which a
 * Python reader decodes to the same str. */
static int py_nonprintable(uint32_t cp) {
  if (cp <= 0xA0 || cp == 0xAD) return 1;
  if (cp < 0x300) return 0;
  if (cp == 0x034F) return 0;
  if (cp == 0x061C || cp == 0x1680 || cp == 0x180E) return 1;
  if (cp >= 0x2000 && cp <= 0x200F) return 1;
  if (cp >= 0x2028 && cp <= 0x202F) return 1;
  if (cp >= 0x205F && cp <= 0x206F) return 1;
  if (cp == 0x3000 || cp == 0xFEFF) return 1;
  if (cp >= 0xD800 && cp <= 0xF8FF) return 1; /* surrogates, private use */
  if (cp >= 0xFFF0 && cp <= 0xFFFB) return 1;
  if (cp == 0xFFFE || cp == 0xFFFF) return 1;
  if (cp >= 0xE0000 && cp <= 0xE007F) return 1;
  if (cp >= 0xF0000) return 1; /* private use planes */
  return 0;
}

/* Bytes of a str that repr does not copy as they are: controls, DEL and
 * non-ASCII (copied when printable), the backslash and both quotes (one of
 * them is the delimiter, the other is copied). */
static const uint8_t py_special[256] = {
    [0x00 ... 0x1F] = 1, ['\''] = 1, ['"'] = 1, ['\\'] = 1, [0x7F ... 0xFF] = 1,
};

/* As repr: delimited by ' unless the text has a ' and no ", written in
 * place after one check for room (the text and its quotes), with more room
 * taken only at an escape. The text is written with ' first; at its first
 * ' the text is searched for a ", and without one it is written again with
 * ". Plain bytes are copied as scanned, sixteen at a time with SSE2 (see
 * sr_json_put_string). */
int sr_serpent_put_str(sr_buf_t *out, const char *str, size_t n, size_t *bad) {
  const uint8_t *s = (const uint8_t *)str;
  if (n > SIZE_MAX / 2 - 16 || sr_buf_room(out, n + 2)) return SR_ENOMEM;
  size_t start = out->len;
  uint8_t q = '\'';
  int rc, searched = 0;
again:;
  /* invariant: room for the rest of s and the closing quote */
  uint8_t *o = out->data + start;
  *o++ = q;
  size_t i = 0;
  for (;;) {
#if defined(__SSE2__)
    const __m128i sq = _mm_set1_epi8('\''), dq = _mm_set1_epi8('"'),
                  bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20),
                  del = _mm_set1_epi8(0x7F);
    while (n - i >= 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
      /* as signed bytes, non-ASCII ones are below 0x20 too */
      __m128i h = _mm_or_si128(
          _mm_or_si128(_mm_cmpeq_epi8(v, sq), _mm_cmpeq_epi8(v, dq)),
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, bslash), _mm_cmpeq_epi8(v, del)),
                       _mm_cmplt_epi8(v, space)));
      unsigned m = (unsigned)_mm_movemask_epi8(h);
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
#endif
    while (i < n && !py_special[s[i]]) *o++ = s[i++];
    if (i >= n) break;
#if defined(__SSE2__)
  special:;
#endif
    uint8_t c = s[i];
    if ((c == '\'' || c == '"') && c != q) { /* the other quote */
      *o++ = c;
      i++;
      continue;
    }
    if (c == '\'' && q == '\'' && !searched) {
      searched = 1;
      if (memchr(s, '"', n) == NULL) {
        q = '"';
        goto again;
      }
    }
    size_t l = 1;
    uint32_t cp = c;
    if (c >= 0x80) {
      l = utf8_decode1(s + i, n - i, &cp);
      if (l == 0) {
        out->len = (size_t)(o - out->data);
        if (bad) *bad = i;
        return SR_EUTF8;
      }
      if (!py_nonprintable(cp)) {
        for (size_t j = 0; j < l; j++) *o++ = s[i + j];
        i += l;
        continue;
      }
    }
    /* an escape: up to ten bytes ("\U0001xxxx") for l */
    out->len = (size_t)(o - out->data);
    if ((rc = sr_buf_room(out, n - i + 10))) return rc;
    o = out->data + out->len;
    *o++ = '\\';
    if (c == q || c == '\\') {
      *o++ = c;
    } else if (c == '\t') {
      *o++ = 't';
    } else if (c == '\n') {
      *o++ = 'n';
    } else if (c == '\r') {
      *o++ = 'r';
    } else if (cp <= 0xFF) {
      *o++ = 'x';
      *o++ = (uint8_t)hexdig[cp >> 4];
      *o++ = (uint8_t)hexdig[cp & 15];
    } else {
      int digits = cp <= 0xFFFF ? 4 : 8;
      *o++ = cp <= 0xFFFF ? 'u' : 'U';
      for (int k = digits - 1; k >= 0; k--) *o++ = (uint8_t)hexdig[(cp >> (4 * k)) & 15];
    }
    i += l;
  }
  *o++ = q;
  out->len = (size_t)(o - out->data);
  return 0;
}

int sr_serpent_put_float(sr_buf_t *out, double d) {
  if (isnan(d)) return sr_buf_puts(out, "{'__class__':'float','value':'nan'}");
  if (isinf(d)) return sr_buf_puts(out, d > 0 ? "1e30000" : "-1e30000");
  if (sr_buf_room(out, SR_JSON_DOUBLE_BUFSZ)) return SR_ENOMEM;
  out->len += sr_json_fmt_double(d, (char *)out->data + out->len);
  return 0;
}
