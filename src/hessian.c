/*
 * hessian.c -- Hessian 2 (and Hessian 1, read only) as Caucho Hessian 4.0.38
 * speaks it, without Lua: the pull reader (sr_hessian_next) and the message
 * envelopes it reads. The writers (sr_hessian_put_*) are hessian_write.c;
 * the two halves share nothing but hessian.h, which has the contracts.
 *
 * Reader: every length read from the input is checked against the bytes
 * that remain (each value takes at least one byte) and against the limits
 * before anything is allocated for it; the only allocations are the
 * per-message tables (class definitions, type names: copies of input
 * strings), the container stack (bounded by max_depth) and the scratch
 * buffer that joins chunked strings (bounded by max_string).
 *
 * Strings travel as CESU-8 with lengths in UTF-16 units: a character outside
 * the BMP is two 3-byte surrogate sequences. The reader joins such pairs
 * into 4-byte UTF-8 and keeps a lone surrogate as its 3-byte sequence; it
 * also accepts a 4-byte UTF-8 sequence (2 units), which non-Java writers
 * send (hessian_write.c does the reverse).
 */
#include "hessian.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reader: errors and bytes ------------------------------------------ */

int sr_hessian_err(sr_hessian_reader_t *r, int code, size_t off, const char *what) {
  return sr_seterr(r->err, r->errlen, code, "hessian: %s at offset %zu%s", what, off,
                   off >= r->n ? " (end of input)" : "");
}

static int err_code(sr_hessian_reader_t *r, size_t off, const char *what, uint8_t c) {
  char buf[160];
  snprintf(buf, sizeof buf, "%s 0x%02x", what, c);
  return sr_hessian_err(r, SR_ESYNTAX, off, buf);
}

/* need and count_elems: the check inline (it runs per token), the message
 * out of line. */
static int need_fail(sr_hessian_reader_t *r, size_t k) {
  char buf[96];
  snprintf(buf, sizeof buf, "truncated message: %zu more bytes expected", k - (r->n - r->pos));
  return sr_hessian_err(r, SR_ETRUNCATED, r->pos, buf);
}

static inline int need(sr_hessian_reader_t *r, size_t k) {
  return k <= r->n - r->pos ? 0 : need_fail(r, k);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static inline int rd_u8(sr_hessian_reader_t *r, uint8_t *v) {
  int rc = need(r, 1);
  if (rc) return rc;
  *v = r->p[r->pos++];
  return 0;
}

static int rd_u16(sr_hessian_reader_t *r, size_t *v) {
  int rc = need(r, 2);
  if (rc) return rc;
  *v = (size_t)r->p[r->pos] << 8 | r->p[r->pos + 1];
  r->pos += 2;
  return 0;
}

static int rd_b32(sr_hessian_reader_t *r, int32_t *v) {
  int rc = need(r, 4);
  if (rc) return rc;
  *v = (int32_t)be32(r->p + r->pos);
  r->pos += 4;
  return 0;
}

static int rd_b64(sr_hessian_reader_t *r, int64_t *v) {
  int rc = need(r, 8);
  if (rc) return rc;
  *v = (int64_t)be64(r->p + r->pos);
  r->pos += 8;
  return 0;
}

/* ---- reader: set-up ---------------------------------------------------- */

int sr_hessian_reader_init(sr_hessian_reader_t *r, const uint8_t *p, size_t n, int version,
                           const sr_hessian_limits_t *lim, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  r->p = p;
  r->n = n;
  r->version = version == 1 ? 1 : 2;
  r->err = err;
  r->errlen = errlen;
  sr_buf_init(&r->scratch);
  if (lim) r->lim = *lim;
  if (r->lim.max_depth <= 0) r->lim.max_depth = SR_HESSIAN_DEFAULT_DEPTH;
  if (r->lim.max_elements == 0) r->lim.max_elements = SR_HESSIAN_DEFAULT_ELEMENTS;
  if (r->lim.max_bytes == 0) r->lim.max_bytes = SR_HESSIAN_DEFAULT_MAX_BYTES;
  if (r->lim.max_string == 0) r->lim.max_string = SR_HESSIAN_DEFAULT_MAX_STRING;
  if (n > r->lim.max_bytes)
    return sr_seterr(err, errlen, SR_ETOOBIG, "hessian: message too large (%zu bytes, limit %zu)", n,
                     r->lim.max_bytes);
  return 0;
}

void sr_hessian_reader_free(sr_hessian_reader_t *r) {
  for (size_t i = 0; i < r->ntypes; i++) free(r->types[i].s);
  free(r->types);
  for (size_t i = 0; i < r->ndefs; i++) {
    free(r->defs[i].name.s);
    for (size_t j = 0; j < r->defs[i].nfields; j++) free(r->defs[i].fields[j].s);
    free(r->defs[i].fields);
  }
  free(r->defs);
  free(r->fr);
  sr_buf_free(&r->scratch);
  r->types = NULL;
  r->defs = NULL;
  r->fr = NULL;
  r->ntypes = r->ndefs = 0;
  r->typecap = r->defcap = 0;
  r->depth = r->frcap = 0;
}

static int count_fail(sr_hessian_reader_t *r, size_t off) {
  char buf[80];
  snprintf(buf, sizeof buf, "too many elements (more than %zu)", r->lim.max_elements);
  return sr_hessian_err(r, SR_EELEMENTS, off, buf);
}

static inline int count_elems(sr_hessian_reader_t *r, size_t k, size_t off) {
  if (k <= r->lim.max_elements - r->elems) {
    r->elems += k;
    return 0;
  }
  return count_fail(r, off);
}

static int str_dup(sr_hessian_str_t *d, const char *s, size_t n) {
  d->s = malloc(n + 1);
  if (d->s == NULL) return SR_ENOMEM;
  if (n) memcpy(d->s, s, n);
  d->s[n] = '\0';
  d->n = n;
  return 0;
}

/* ---- reader: strings ---------------------------------------------------- */

/* Walks `units` UTF-16 units of CESU-8 from p[pos], returning the bytes they
 * take in *bytes; *pairs is set when a surrogate pair or a 4-byte sequence
 * needs rewriting. */
static int scan_units(sr_hessian_reader_t *r, size_t units, size_t *bytes, int *pairs) {
  const uint8_t *p = r->p;
  size_t i = r->pos, n = r->n;
  if (units > n - i) return need(r, units);
  while (units > 0) {
    if (i >= n) {
      r->pos = i;
      return need(r, units);
    }
    uint8_t c = p[i];
    size_t k = 1, u = 1;
    if (c >= 0x80) {
      if (c >= 0xC2 && c < 0xE0) k = 2;
      else if (c >= 0xE0 && c < 0xF0) k = 3;
      else if (c >= 0xF0 && c < 0xF5) k = 4, u = 2;
      else k = 0;
      if (k && i + k > n) {
        r->pos = i;
        return need(r, k);
      }
      for (size_t j = 1; k && j < k; j++)
        if ((p[i + j] & 0xC0) != 0x80) k = 0;
      if (k == 3 && c == 0xE0 && p[i + 1] < 0xA0) k = 0;
      if (k == 4 && ((c == 0xF0 && p[i + 1] < 0x90) || (c == 0xF4 && p[i + 1] > 0x8F))) k = 0;
      if (k == 4 || (k == 3 && c == 0xED && p[i + 1] >= 0xA0)) *pairs = 1;
      if (k == 0 || u > units)
        return sr_hessian_err(r, SR_EUTF8, i, "invalid UTF-8 in a string");
    }
    i += k;
    units -= u;
  }
  *bytes = i - r->pos;
  return 0;
}

/* Rewrites CESU-8 in s[0..n) in place as UTF-8 (pairs joined); returns the new length. */
static size_t cesu_join(uint8_t *s, size_t n) {
  size_t i = 0, o = 0;
  while (i < n) {
    if (i + 6 <= n && s[i] == 0xED && (s[i + 1] & 0xF0) == 0xA0 && s[i + 3] == 0xED &&
        (s[i + 4] & 0xF0) == 0xB0) {
      uint32_t hi = 0xD000u | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
      uint32_t lo = 0xD000u | (uint32_t)(s[i + 4] & 0x3F) << 6 | (s[i + 5] & 0x3F);
      uint32_t cp = 0x10000u + ((hi - 0xD800u) << 10) + (lo - 0xDC00u);
      s[o++] = (uint8_t)(0xF0 | cp >> 18);
      s[o++] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
      s[o++] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
      s[o++] = (uint8_t)(0x80 | (cp & 0x3F));
      i += 6;
    } else {
      s[o++] = s[i++];
    }
  }
  return o;
}

static int is_str_code(int version, uint8_t c) {
  if (version == 1) return c == 's' || c == 'S' || c == 'x' || c == 'X';
  return c < 0x20 || (c >= 0x30 && c <= 0x33) || c == 'R' || c == 'S';
}

/* Reads a string whose first code is at p[pos] (all its chunks). Result in
 * s and sl: into the input when it is one chunk without pairs, else into the
 * scratch buffer. */
static int read_string(sr_hessian_reader_t *r, const char **s, size_t *sl) {
  size_t start = r->pos, total = 0;
  int chunked = 0, pairs = 0, rc;
  r->scratch.len = 0;
  for (;;) {
    size_t off = r->pos, units, bytes;
    uint8_t c;
    int final = 1;
    if ((rc = rd_u8(r, &c))) return rc;
    if (!is_str_code(r->version, c)) return err_code(r, off, "expected a string chunk, got code", c);
    if (r->version == 2 && c < 0x20) units = c;
    else if (r->version == 2 && c >= 0x30 && c <= 0x33) {
      uint8_t b1;
      if ((rc = rd_u8(r, &b1))) return rc;
      units = (size_t)(c - 0x30) << 8 | b1;
    } else {
      if ((rc = rd_u16(r, &units))) return rc;
      final = !(c == 'R' || c == 's' || c == 'x');
    }
    if ((rc = scan_units(r, units, &bytes, &pairs))) return rc;
    total += bytes;
    if (total > r->lim.max_string) {
      char buf[80];
      snprintf(buf, sizeof buf, "string longer than %zu bytes", r->lim.max_string);
      return sr_hessian_err(r, SR_ETOOBIG, start, buf);
    }
    const uint8_t *data = r->p + r->pos;
    r->pos += bytes;
    if (final && !chunked && !pairs) {
      *s = (const char *)data;
      *sl = bytes;
      return 0;
    }
    if (sr_buf_append(&r->scratch, data, bytes)) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
    chunked = 1;
    if (final) break;
  }
  r->scratch.len = cesu_join(r->scratch.data, r->scratch.len);
  *s = r->scratch.data ? (const char *)r->scratch.data : "";
  *sl = r->scratch.len;
  return 0;
}

static int read_binary(sr_hessian_reader_t *r, const char **s, size_t *sl) {
  size_t start = r->pos, total = 0;
  int chunked = 0, rc;
  r->scratch.len = 0;
  for (;;) {
    size_t off = r->pos, len;
    uint8_t c;
    int final = 1;
    if ((rc = rd_u8(r, &c))) return rc;
    if (r->version == 2 && c >= 0x20 && c <= 0x2f) len = c - 0x20u;
    else if (r->version == 2 && c >= 0x34 && c <= 0x37) {
      uint8_t b1;
      if ((rc = rd_u8(r, &b1))) return rc;
      len = (size_t)(c - 0x34) << 8 | b1;
    } else if (c == 'B' || c == (r->version == 2 ? 'A' : 'b')) {
      if ((rc = rd_u16(r, &len))) return rc;
      final = c == 'B';
    } else {
      return err_code(r, off, "expected a binary chunk, got code", c);
    }
    if ((rc = need(r, len))) return rc;
    total += len;
    if (total > r->lim.max_string) {
      char buf[80];
      snprintf(buf, sizeof buf, "binary longer than %zu bytes", r->lim.max_string);
      return sr_hessian_err(r, SR_ETOOBIG, start, buf);
    }
    const uint8_t *data = r->p + r->pos;
    r->pos += len;
    if (final && !chunked) {
      *s = (const char *)data;
      *sl = len;
      return 0;
    }
    if (sr_buf_append(&r->scratch, data, len)) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
    chunked = 1;
    if (final) break;
  }
  *s = r->scratch.data ? (const char *)r->scratch.data : "";
  *sl = r->scratch.len;
  return 0;
}

/* ---- reader: ints, types, class definitions ---------------------------- */

/* Decodes the Hessian 2 int starting with code c (already consumed). 1 when
 * c is not an int code. */
static inline int int_body(sr_hessian_reader_t *r, uint8_t c, int64_t *v, int *rc) {
  uint8_t b1, b2;
  *rc = 0;
  if (c >= 0x80 && c <= 0xbf) *v = (int64_t)c - 0x90;
  else if (c >= 0xc0 && c <= 0xcf) {
    if ((*rc = rd_u8(r, &b1)) == 0) *v = ((int64_t)c - 0xc8) * 256 + b1;
  } else if (c >= 0xd0 && c <= 0xd7) {
    if ((*rc = need(r, 2)) == 0) {
      b1 = r->p[r->pos];
      b2 = r->p[r->pos + 1];
      r->pos += 2;
      *v = ((int64_t)c - 0xd4) * 65536 + b1 * 256 + b2;
    }
  } else if (c == 'I') {
    int32_t x;
    if ((*rc = rd_b32(r, &x)) == 0) *v = x;
  } else {
    return 1;
  }
  return 0;
}

static int read_int(sr_hessian_reader_t *r, int64_t *v, const char *what) {
  size_t off = r->pos;
  uint8_t c;
  int rc = rd_u8(r, &c);
  if (rc) return rc;
  if (int_body(r, c, v, &rc)) {
    char buf[96];
    snprintf(buf, sizeof buf, "expected an int (%s), got code", what);
    return err_code(r, off, buf, c);
  }
  return rc;
}

static int add_type(sr_hessian_reader_t *r, const char *s, size_t n, size_t off) {
  if (r->ntypes == r->typecap) {
    size_t cap = r->typecap ? r->typecap * 2 : 8;
    sr_hessian_str_t *t = realloc(r->types, cap * sizeof *t);
    if (t == NULL) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
    r->types = t;
    r->typecap = cap;
  }
  if (str_dup(&r->types[r->ntypes], s, n)) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
  r->ntypes++;
  return 0;
}

/* Hessian 2 type: a string (entered in the type table) or an int index into it. */
static int read_type(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  size_t off = r->pos;
  int rc = need(r, 1);
  if (rc) return rc;
  uint8_t c = r->p[off];
  if (is_str_code(2, c)) {
    const char *s;
    size_t sl;
    if ((rc = read_string(r, &s, &sl))) return rc;
    if ((rc = add_type(r, s, sl, off))) return rc;
    t->s = r->types[r->ntypes - 1].s;
    t->slen = sl;
    return 0;
  }
  int64_t idx;
  r->pos++;
  if (int_body(r, c, &idx, &rc)) return err_code(r, off, "expected a type name or index, got code", c);
  if (rc) return rc;
  if (idx < 0 || (uint64_t)idx >= r->ntypes) {
    char buf[96];
    snprintf(buf, sizeof buf, "type index %lld out of range (%zu types)", (long long)idx, r->ntypes);
    return sr_hessian_err(r, SR_ESYNTAX, off, buf);
  }
  t->s = r->types[idx].s;
  t->slen = r->types[idx].n;
  return 0;
}

/* Hessian 1 type: optional 't' u16 name (empty: untyped). */
static int read_type_h1(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  t->s = "";
  t->slen = 0;
  if (r->pos >= r->n || r->p[r->pos] != 't') return 0;
  size_t off = r->pos, units, bytes;
  int pairs = 0, rc;
  r->pos++;
  if ((rc = rd_u16(r, &units))) return rc;
  if ((rc = scan_units(r, units, &bytes, &pairs))) return rc;
  if ((rc = add_type(r, (const char *)r->p + r->pos, bytes, off))) return rc;
  r->pos += bytes;
  t->s = r->types[r->ntypes - 1].s;
  t->slen = bytes;
  return 0;
}

/* 'C' (consumed): str(name) int(n) str(field) x n into the def table. */
static int read_def(sr_hessian_reader_t *r, size_t off) {
  const char *s;
  size_t sl;
  int64_t nf;
  int rc;
  if ((rc = read_string(r, &s, &sl))) return rc;
  if (r->ndefs == r->defcap) {
    size_t cap = r->defcap ? r->defcap * 2 : 8;
    sr_hessian_def_t *d = realloc(r->defs, cap * sizeof *d);
    if (d == NULL) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
    r->defs = d;
    r->defcap = cap;
  }
  sr_hessian_def_t *d = &r->defs[r->ndefs];
  memset(d, 0, sizeof *d);
  if (str_dup(&d->name, s, sl)) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
  r->ndefs++; /* owned by the table from here on */
  size_t noff = r->pos;
  if ((rc = read_int(r, &nf, "field count"))) return rc;
  if (nf < 0 || (uint64_t)nf > r->n - r->pos) {
    char buf[96];
    snprintf(buf, sizeof buf, "class definition with %lld fields in %zu remaining bytes",
             (long long)nf, r->n - r->pos);
    return sr_hessian_err(r, SR_ESYNTAX, noff, buf);
  }
  if ((rc = count_elems(r, (size_t)nf, noff))) return rc;
  if (nf > 0) {
    d->fields = calloc((size_t)nf, sizeof *d->fields);
    if (d->fields == NULL) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
  }
  for (int64_t i = 0; i < nf; i++) {
    size_t foff = r->pos;
    if ((rc = read_string(r, &s, &sl))) return rc;
    if (str_dup(&d->fields[i], s, sl)) return sr_hessian_err(r, SR_ENOMEM, foff, "out of memory");
    d->nfields++;
  }
  return 0;
}

/* ---- reader: values ----------------------------------------------------- */

/* A fixed length read at `off`: fits the remaining bytes and the element limit. */
static int check_len(sr_hessian_reader_t *r, int64_t len, size_t off) {
  if (len < 0 || (uint64_t)len > r->n - r->pos) {
    char buf[96];
    snprintf(buf, sizeof buf, "list length %lld with %zu bytes remaining", (long long)len,
             r->n - r->pos);
    return sr_hessian_err(r, len < 0 ? SR_ESYNTAX : SR_ETRUNCATED, off, buf);
  }
  if ((uint64_t)len > r->lim.max_elements - r->elems) {
    char buf[80];
    snprintf(buf, sizeof buf, "too many elements (more than %zu)", r->lim.max_elements);
    return sr_hessian_err(r, SR_EELEMENTS, off, buf);
  }
  return 0;
}

static int read_value_h2(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  int rc;
  uint8_t c;
  for (;;) {
    t->off = r->pos;
    if ((rc = rd_u8(r, &c))) return rc;
    if (c != 'C') break;
    if ((rc = read_def(r, t->off))) return rc;
  }
  int64_t v;
  if (!int_body(r, c, &v, &rc)) {
    t->kind = SR_HK_INT;
    t->i = v;
    return rc;
  }
  uint8_t b[2];
  if (c >= 0xd8 && c <= 0xef) {
    t->kind = SR_HK_LONG;
    t->i = (int64_t)c - 0xe0;
    return 0;
  }
  if (c >= 0xf0) {
    if ((rc = rd_u8(r, b))) return rc;
    t->kind = SR_HK_LONG;
    t->i = ((int64_t)c - 0xf8) * 256 + b[0];
    return 0;
  }
  switch (c) {
    case 'N': t->kind = SR_HK_NULL; return 0;
    case 'T': case 'F': t->kind = SR_HK_BOOL; t->i = c == 'T'; return 0;
    case 0x38: case 0x39: case 0x3a: case 0x3b: case 0x3c: case 0x3d: case 0x3e: case 0x3f:
      if ((rc = need(r, 2))) return rc;
      memcpy(b, r->p + r->pos, 2);
      r->pos += 2;
      t->kind = SR_HK_LONG;
      t->i = ((int64_t)c - 0x3c) * 65536 + b[0] * 256 + b[1];
      return 0;
    case 0x59: {
      int32_t x;
      if ((rc = rd_b32(r, &x))) return rc;
      t->kind = SR_HK_LONG;
      t->i = x;
      return 0;
    }
    case 'L': t->kind = SR_HK_LONG; return rd_b64(r, &t->i);
    case 'D': {
      int64_t bits;
      if ((rc = rd_b64(r, &bits))) return rc;
      t->kind = SR_HK_DOUBLE;
      memcpy(&t->d, &bits, 8);
      return 0;
    }
    case 0x5b: t->kind = SR_HK_DOUBLE; t->d = 0.0; return 0;
    case 0x5c: t->kind = SR_HK_DOUBLE; t->d = 1.0; return 0;
    case 0x5d:
      if ((rc = rd_u8(r, b))) return rc;
      t->kind = SR_HK_DOUBLE;
      t->d = (int8_t)b[0];
      return 0;
    case 0x5e: {
      size_t u;
      if ((rc = rd_u16(r, &u))) return rc;
      t->kind = SR_HK_DOUBLE;
      t->d = (int16_t)(uint16_t)u;
      return 0;
    }
    case 0x5f: {
      int32_t x;
      if ((rc = rd_b32(r, &x))) return rc;
      t->kind = SR_HK_DOUBLE;
      t->d = 0.001 * x;
      return 0;
    }
    case 0x4a: t->kind = SR_HK_DATE; return rd_b64(r, &t->i);
    case 0x4b: {
      int32_t x;
      if ((rc = rd_b32(r, &x))) return rc;
      t->kind = SR_HK_DATE;
      t->i = (int64_t)x * 60000;
      return 0;
    }
    case 'H': t->kind = SR_HK_MAP; t->s = ""; t->slen = 0; return 0;
    case 'M': t->kind = SR_HK_MAP; return read_type(r, t);
    case 'U': t->kind = SR_HK_LIST; t->i = -1; return read_type(r, t);
    case 'W': t->kind = SR_HK_LIST; t->i = -1; t->s = ""; t->slen = 0; return 0;
    case 'V': case 'X': {
      t->kind = SR_HK_LIST;
      t->s = "";
      t->slen = 0;
      if (c == 'V' && (rc = read_type(r, t))) return rc;
      size_t loff = r->pos;
      if ((rc = read_int(r, &t->i, "list length"))) return rc;
      return check_len(r, t->i, loff);
    }
    case 'O': case 0x60: case 0x61: case 0x62: case 0x63: case 0x64: case 0x65: case 0x66:
    case 0x67: case 0x68: case 0x69: case 0x6a: case 0x6b: case 0x6c: case 0x6d: case 0x6e:
    case 0x6f: {
      int64_t def = c - 0x60;
      if (c == 'O' && (rc = read_int(r, &def, "class definition index"))) return rc;
      if (def < 0 || (uint64_t)def >= r->ndefs) {
        char buf[96];
        snprintf(buf, sizeof buf, "object of undefined class #%lld (%zu defined)", (long long)def,
                 r->ndefs);
        return sr_hessian_err(r, SR_ESYNTAX, t->off, buf);
      }
      sr_hessian_object_tok(t, &r->defs[def]);
      return 0;
    }
    case 'Q': {
      if ((rc = read_int(r, &t->i, "reference"))) return rc;
      if (t->i < 0 || (uint64_t)t->i >= r->refs) {
        char buf[96];
        snprintf(buf, sizeof buf, "reference #%lld to no value (%zu so far)", (long long)t->i, r->refs);
        return sr_hessian_err(r, SR_ESYNTAX, t->off, buf);
      }
      t->kind = SR_HK_REF;
      return 0;
    }
    default: break;
  }
  if (c >= 0x70 && c <= 0x7f) {
    t->kind = SR_HK_LIST;
    t->i = c & 7;
    t->s = "";
    t->slen = 0;
    if (c < 0x78 && (rc = read_type(r, t))) return rc;
    return check_len(r, t->i, t->off);
  }
  r->pos = t->off;
  if (is_str_code(2, c)) {
    t->kind = SR_HK_STRING;
    return read_string(r, &t->s, &t->slen);
  }
  if ((c >= 0x20 && c <= 0x2f) || (c >= 0x34 && c <= 0x37) || c == 'A' || c == 'B') {
    t->kind = SR_HK_BINARY;
    return read_binary(r, &t->s, &t->slen);
  }
  r->pos = t->off + 1;
  return err_code(r, t->off, c == 'Z' ? "unexpected end of list or map, code" : "unknown Hessian 2 code", c);
}

static int read_value_h1(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  int rc;
  uint8_t c;
  t->off = r->pos;
  if ((rc = rd_u8(r, &c))) return rc;
  switch (c) {
    case 'N': t->kind = SR_HK_NULL; return 0;
    case 'T': case 'F': t->kind = SR_HK_BOOL; t->i = c == 'T'; return 0;
    case 'I': {
      int32_t x;
      if ((rc = rd_b32(r, &x))) return rc;
      t->kind = SR_HK_INT;
      t->i = x;
      return 0;
    }
    case 'L': t->kind = SR_HK_LONG; return rd_b64(r, &t->i);
    case 'd': t->kind = SR_HK_DATE; return rd_b64(r, &t->i);
    case 'D': {
      int64_t bits;
      if ((rc = rd_b64(r, &bits))) return rc;
      t->kind = SR_HK_DOUBLE;
      memcpy(&t->d, &bits, 8);
      return 0;
    }
    case 's': case 'S': case 'x': case 'X':
      r->pos = t->off;
      t->kind = SR_HK_STRING;
      return read_string(r, &t->s, &t->slen);
    case 'b': case 'B':
      r->pos = t->off;
      t->kind = SR_HK_BINARY;
      return read_binary(r, &t->s, &t->slen);
    case 'M': t->kind = SR_HK_MAP; return read_type_h1(r, t);
    case 'V': {
      t->kind = SR_HK_LIST;
      t->i = -1; /* the list runs to 'z' whatever its length hint says */
      if ((rc = read_type_h1(r, t))) return rc;
      if (r->pos < r->n && r->p[r->pos] == 'l') {
        int32_t len;
        size_t loff = r->pos++;
        if ((rc = rd_b32(r, &len))) return rc;
        if ((rc = check_len(r, len, loff))) return rc;
      }
      return 0;
    }
    case 'R': {
      int32_t x;
      if ((rc = rd_b32(r, &x))) return rc;
      if (x < 0 || (uint64_t)x >= r->refs) {
        char buf[96];
        snprintf(buf, sizeof buf, "reference #%ld to no value (%zu so far)", (long)x, r->refs);
        return sr_hessian_err(r, SR_ESYNTAX, t->off, buf);
      }
      t->kind = SR_HK_REF;
      t->i = x;
      return 0;
    }
    default:
      r->pos = t->off + 1;
      return err_code(r, t->off, c == 'z' ? "unexpected end of list or map, code" : "unknown Hessian 1 code", c);
  }
}

static int push_frame(sr_hessian_reader_t *r, uint8_t kind, int counted, size_t left, size_t off) {
  if (r->depth >= r->lim.max_depth) {
    char buf[80];
    snprintf(buf, sizeof buf, "nesting too deep (more than %d levels)", r->lim.max_depth);
    return sr_hessian_err(r, SR_EDEPTH, off, buf);
  }
  if (r->depth == r->frcap) {
    int cap = r->frcap ? r->frcap * 2 : 16;
    sr_hessian_frame_t *f = realloc(r->fr, (size_t)cap * sizeof *f);
    if (f == NULL) return sr_hessian_err(r, SR_ENOMEM, off, "out of memory");
    r->fr = f;
    r->frcap = cap;
  }
  sr_hessian_enter(r, kind, counted, left);
  return 0;
}

int sr_hessian_read_token(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  int rc;
  memset(t, 0, sizeof *t);
  if (r->depth > 0) {
    sr_hessian_frame_t *f = &r->fr[r->depth - 1];
    t->off = r->pos;
    if (f->counted && f->left == 0) {
      r->depth--;
      t->kind = SR_HK_END;
      return 0;
    }
    if (!f->counted) {
      if ((rc = need(r, 1))) return rc;
      if (r->p[r->pos] == (r->version == 2 ? 'Z' : 'z')) {
        if (f->kind == SR_HK_MAP && (f->nread & 1))
          return sr_hessian_err(r, SR_ESYNTAX, r->pos, "map key without a value");
        r->pos++;
        r->depth--;
        t->kind = SR_HK_END;
        return 0;
      }
    }
  }
  if (r->version == 2) {
    if (!sr_hessian_read_common(r, t) && (rc = read_value_h2(r, t))) return rc;
  } else if ((rc = read_value_h1(r, t))) {
    return rc;
  }
  if ((rc = count_elems(r, 1, t->off))) return rc;
  if (r->depth > 0) {
    sr_hessian_frame_t *f = &r->fr[r->depth - 1];
    if (f->counted) f->left--;
    f->nread++;
  }
  if (t->kind == SR_HK_LIST || t->kind == SR_HK_MAP || t->kind == SR_HK_OBJECT) {
    int counted = t->kind == SR_HK_OBJECT || (t->kind == SR_HK_LIST && t->i >= 0);
    if ((rc = push_frame(r, (uint8_t)t->kind, counted, counted ? (size_t)t->i : 0, t->off))) return rc;
    t->ref = r->refs++;
  }
  return 0;
}

int sr_hessian_skip(sr_hessian_reader_t *r) {
  int base = r->depth, rc;
  sr_hessian_tok_t t;
  do {
    if ((rc = sr_hessian_next(r, &t))) return rc;
  } while (r->depth > base);
  return 0;
}

/* ---- reader: envelopes -------------------------------------------------- */

/* Hessian 1 headers: any number of 'H' u16 name value, values skipped. */
static int skip_h1_headers(sr_hessian_reader_t *r) {
  int rc;
  while (r->pos < r->n && r->p[r->pos] == 'H') {
    size_t units, bytes;
    int pairs = 0;
    r->pos++;
    if ((rc = rd_u16(r, &units))) return rc;
    if ((rc = scan_units(r, units, &bytes, &pairs))) return rc;
    r->pos += bytes;
    if ((rc = sr_hessian_skip(r))) return rc;
  }
  return 0;
}

int sr_hessian_read_call(sr_hessian_reader_t *r, sr_buf_t *method, int64_t *argc) {
  int rc = need(r, 3);
  if (rc) return rc;
  const uint8_t *p = r->p;
  method->len = 0;
  if (p[0] == 'H') {
    r->version = 2;
    r->pos = 3;
    uint8_t c;
    if ((rc = rd_u8(r, &c))) return rc;
    if (c != 'C') return err_code(r, 3, "expected 'C' (call) after H 02 00, got code", c);
    const char *s;
    size_t sl;
    if ((rc = need(r, 1))) return rc;
    if (!is_str_code(2, p[r->pos])) return err_code(r, r->pos, "expected the method name, got code", p[r->pos]);
    if ((rc = read_string(r, &s, &sl))) return rc;
    if (sr_buf_append(method, s, sl)) return sr_hessian_err(r, SR_ENOMEM, 4, "out of memory");
    size_t aoff = r->pos;
    if ((rc = read_int(r, argc, "argument count"))) return rc;
    if (*argc < 0 || (uint64_t)*argc > r->n - r->pos)
      return sr_hessian_err(r, SR_ESYNTAX, aoff, "argument count out of range");
    return 0;
  }
  if (p[0] == 'c') {
    r->version = 1;
    r->pos = 3;
    if ((rc = skip_h1_headers(r))) return rc;
    uint8_t c;
    size_t moff = r->pos, units, bytes;
    int pairs = 0;
    if ((rc = rd_u8(r, &c))) return rc;
    if (c != 'm') return err_code(r, moff, "expected 'm' (method) in a Hessian 1 call, got code", c);
    if ((rc = rd_u16(r, &units))) return rc;
    if ((rc = scan_units(r, units, &bytes, &pairs))) return rc;
    if (sr_buf_append(method, r->p + r->pos, bytes)) return sr_hessian_err(r, SR_ENOMEM, moff, "out of memory");
    r->pos += bytes;
    *argc = -1;
    return 0;
  }
  return err_code(r, 0, "not a Hessian call: it starts with code", p[0]);
}

int sr_hessian_at_call_end(sr_hessian_reader_t *r) {
  if (r->depth == 0 && r->pos < r->n && r->p[r->pos] == 'z') {
    r->pos++;
    return 1;
  }
  return 0;
}

int sr_hessian_read_reply(sr_hessian_reader_t *r, int *fault) {
  int rc = need(r, 3);
  if (rc) return rc;
  uint8_t c0 = r->p[0], c;
  *fault = 0;
  if (c0 == 'H') {
    r->version = 2;
    r->pos = 3;
    if ((rc = rd_u8(r, &c))) return rc;
    if (c == 'R') return 0;
    if (c == 'F') {
      *fault = 1;
      if ((rc = need(r, 1))) return rc;
      if (r->p[r->pos] != 'H') return err_code(r, r->pos, "expected the fault's map, got code", r->p[r->pos]);
      return 0;
    }
    return err_code(r, 3, "expected 'R' (reply) or 'F' (fault) after H 02 00, got code", c);
  }
  if (c0 == 'r') {
    r->version = 1;
    r->pos = 3;
    if ((rc = skip_h1_headers(r))) return rc;
    if ((rc = need(r, 1))) return rc;
    if (r->p[r->pos] == 'f') {
      r->pos++;
      *fault = 1;
      /* the pairs are not a map on the wire: no ref slot */
      return push_frame(r, SR_HK_MAP, 0, 0, r->pos - 1);
    }
    return 0;
  }
  return err_code(r, 0, "not a Hessian reply: it starts with code", c0);
}

int sr_hessian_finish(sr_hessian_reader_t *r, int h1_tail) {
  if (h1_tail) {
    if (r->pos >= r->n || r->p[r->pos] != 'z')
      return sr_hessian_err(r, SR_ESYNTAX, r->pos, "expected 'z' (end of message)");
    r->pos++;
  }
  if (r->pos < r->n) return sr_hessian_err(r, SR_ESYNTAX, r->pos, "unexpected bytes after the message");
  return 0;
}
