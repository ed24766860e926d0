/*
 * hessian.h -- the Lua-free half of springrun's Hessian codec (Caucho
 * Hessian 2, and Hessian 1 for reading): a pull reader that turns bytes into
 * tokens (scalars, container starts and ends, back-references) while it
 * keeps the per-message tables (refs, class definitions, type names) and
 * enforces the limits, and the writers for every value form and for the
 * call / reply / fault envelopes. lsr_hessian.c drives both between the Lua
 * stack and bytes; fuzz_hessian.c drives the reader alone.
 * Wire notes: the README's "Hessian" section and spec/hessian_spec.lua.
 * Byte offsets in error messages are 0-based offsets into the message.
 */
#ifndef SR_HESSIAN_H
#define SR_HESSIAN_H

#include <string.h>

#include "sr.h"

#define SR_HESSIAN_DEFAULT_DEPTH 200
#define SR_HESSIAN_DEFAULT_ELEMENTS 1000000
#define SR_HESSIAN_DEFAULT_MAX_BYTES (64u * 1024u * 1024u)
#define SR_HESSIAN_DEFAULT_MAX_STRING (16u * 1024u * 1024u)
/* Units in a string chunk the writer emits (as Hessian2Output does). */
#define SR_HESSIAN_STRING_CHUNK 32768
/* Bytes in a binary chunk the writer emits (the u16 maximum). */
#define SR_HESSIAN_BINARY_CHUNK 65535

/* Limits on one message; 0 in a field means its default. */
typedef struct sr_hessian_limits_s {
  int max_depth;        /* nesting of lists/maps/objects */
  size_t max_elements;  /* values in the message (class-def fields count too) */
  size_t max_bytes;     /* the message itself */
  size_t max_string;    /* one string or binary after its chunks are joined */
} sr_hessian_limits_t;

typedef enum sr_hessian_kind_e {
  SR_HK_NULL = 1,
  SR_HK_BOOL,   /* i: 0 / 1 */
  SR_HK_INT,    /* i: int32 */
  SR_HK_LONG,   /* i */
  SR_HK_DOUBLE, /* d */
  SR_HK_DATE,   /* i: ms since the epoch, UTC */
  SR_HK_STRING, /* s/slen: UTF-8 (surrogate pairs joined; a lone surrogate stays 3 bytes) */
  SR_HK_BINARY, /* s/slen */
  SR_HK_LIST,   /* start: s/slen the type ("" untyped), i the length or -1, ref its slot */
  SR_HK_MAP,    /* start: s/slen the type ("" untyped), ref its slot */
  SR_HK_OBJECT, /* start: def (class and fields), ref its slot; the field values follow */
  SR_HK_END,    /* end of the innermost list, map or object */
  SR_HK_REF     /* i: the ref slot (already checked to exist) */
} sr_hessian_kind_t;

typedef struct sr_hessian_str_s {
  char *s; /* malloc'd, NUL-terminated */
  size_t n;
} sr_hessian_str_t;

typedef struct sr_hessian_def_s {
  sr_hessian_str_t name;
  size_t nfields;
  sr_hessian_str_t *fields;
} sr_hessian_def_t;

typedef struct sr_hessian_tok_s {
  sr_hessian_kind_t kind;
  size_t off; /* offset of the token's first byte */
  int64_t i;
  double d;
  const char *s; /* into the input, the reader's scratch or its tables: valid until the next read */
  size_t slen;
  size_t ref;
  const sr_hessian_def_t *def;
} sr_hessian_tok_t;

typedef struct sr_hessian_frame_s {
  uint8_t kind;    /* SR_HK_LIST / MAP / OBJECT */
  uint8_t counted; /* fixed length: `left` counts down */
  size_t left;     /* values still to come (fixed lists, objects) */
  size_t nread;    /* values read so far (maps: keys and values) */
} sr_hessian_frame_t;

/* The reader. Owns its tables and scratch (sr_hessian_reader_free). */
typedef struct sr_hessian_reader_s {
  const uint8_t *p;
  size_t n, pos;
  int version; /* 2 or 1: which value forms the bytes use */
  sr_hessian_limits_t lim;
  size_t elems, refs;
  sr_hessian_frame_t *fr;
  int depth, frcap;
  sr_hessian_str_t *types;
  size_t ntypes, typecap;
  sr_hessian_def_t *defs;
  size_t ndefs, defcap;
  sr_buf_t scratch;
  char *err;
  size_t errlen;
} sr_hessian_reader_t;

/* Sets r up over p[0..n) in `version` (2 or 1) with lim (NULL: defaults);
 * err[errlen] receives messages. SR_ETOOBIG when n exceeds max_bytes. Call
 * sr_hessian_reader_free afterwards in every case. */
int sr_hessian_reader_init(sr_hessian_reader_t *r, const uint8_t *p, size_t n, int version,
                           const sr_hessian_limits_t *lim, char *err, size_t errlen);
void sr_hessian_reader_free(sr_hessian_reader_t *r); /* idempotent */

/* The reader's general step (hessian.c): what sr_hessian_next does, for
 * any token. */
int sr_hessian_read_token(sr_hessian_reader_t *r, sr_hessian_tok_t *t);

/* The commonest Hessian 2 values (a bean's fields): a one- or two-byte int,
 * null, and a short string of ASCII bytes, which lies in the input as it is
 * (what the general reader finds for it). 1 when the value at pos is one of
 * them (read into t, pos moved past it), else 0 with pos unchanged, for the
 * general reader, which reads these the same way. The caller counts the
 * element. */
static inline int sr_hessian_read_common(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  size_t pos = r->pos, left = r->n - pos;
  if (left == 0) return 0;
  const uint8_t *q = r->p + pos;
  uint8_t c = q[0];
  t->off = pos;
  if (c >= 0x80 && c <= 0xbf) {
    t->kind = SR_HK_INT;
    t->i = (int64_t)c - 0x90;
    r->pos = pos + 1;
    return 1;
  }
  if (c >= 0xc0 && c <= 0xcf && left >= 2) {
    t->kind = SR_HK_INT;
    t->i = ((int64_t)c - 0xc8) * 256 + q[1];
    r->pos = pos + 2;
    return 1;
  }
  if (c == 'N') {
    t->kind = SR_HK_NULL;
    r->pos = pos + 1;
    return 1;
  }
  if (c < 0x20 && c < left && c <= r->lim.max_string) {
    size_t k = 0;
    while (k < c && q[1 + k] < 0x80) k++;
    if (k < c) return 0;
    t->kind = SR_HK_STRING;
    t->s = (const char *)q + 1;
    t->slen = c;
    r->pos = pos + 1 + c;
    return 1;
  }
  return 0;
}

/* What the token of an object of definition d (its start read) says. */
static inline void sr_hessian_object_tok(sr_hessian_tok_t *t, const sr_hessian_def_t *d) {
  t->kind = SR_HK_OBJECT;
  t->def = d;
  t->s = d->name.s;
  t->slen = d->name.n;
  t->i = (int64_t)d->nfields;
}

/* Enters a container: its frame, the depth limit and the room checked. */
static inline void sr_hessian_enter(sr_hessian_reader_t *r, uint8_t kind, int counted, size_t left) {
  sr_hessian_frame_t *f = &r->fr[r->depth++];
  f->kind = kind;
  f->counted = (uint8_t)counted;
  f->left = left;
  f->nread = 0;
}

/* Reads the next token into t. Inside a container it is one of its values or
 * its END; at depth 0 it starts the next top-level value. Returns 0 or a
 * negative SR_E* code (SR_ETRUNCATED, SR_ESYNTAX, SR_EUTF8, SR_EDEPTH,
 * SR_EELEMENTS, SR_ETOOBIG, SR_ENOMEM) with a message naming the offset.
 * Inline for the tokens that make up most of a large message -- inside a
 * Hessian 2 container, its end when it is counted (an object's fields, a
 * fixed list), a value sr_hessian_read_common reads, and the start of an
 * object in the compact form of a known class when the depth limit and the
 * frames' room allow -- and the same as sr_hessian_read_token for them; the
 * rest (and every error) is sr_hessian_read_token. */
static inline int sr_hessian_next(sr_hessian_reader_t *r, sr_hessian_tok_t *t) {
  if (r->depth > 0 && r->version == 2) {
    sr_hessian_frame_t *f = &r->fr[r->depth - 1];
    memset(t, 0, sizeof *t);
    if (f->counted && f->left == 0) {
      t->off = r->pos;
      r->depth--;
      t->kind = SR_HK_END;
      return 0;
    }
    if (r->elems < r->lim.max_elements) {
      if (sr_hessian_read_common(r, t)) {
        r->elems++;
        f->left -= f->counted;
        f->nread++;
        return 0;
      }
      size_t pos = r->pos;
      uint8_t c = pos < r->n ? r->p[pos] : 0;
      if (c >= 0x60 && c <= 0x6f && (size_t)(c - 0x60) < r->ndefs && r->depth < r->lim.max_depth &&
          r->depth < r->frcap) {
        const sr_hessian_def_t *d = &r->defs[c - 0x60];
        t->off = pos;
        r->pos = pos + 1;
        sr_hessian_object_tok(t, d);
        r->elems++;
        f->left -= f->counted;
        f->nread++;
        sr_hessian_enter(r, SR_HK_OBJECT, 1, d->nfields);
        t->ref = r->refs++;
        return 0;
      }
    }
  }
  return sr_hessian_read_token(r, t);
}
/* Reads one whole value, discarding it (envelope headers). */
int sr_hessian_skip(sr_hessian_reader_t *r);
/* Current nesting (0: between top-level values). */
static inline int sr_hessian_depth(const sr_hessian_reader_t *r) { return r->depth; }
/* "<what> at offset N" into r's err; returns code. */
int sr_hessian_err(sr_hessian_reader_t *r, int code, size_t off, const char *what);

/* Envelopes. sr_hessian_read_call reads the head of a call -- Hessian 2
 * `H 02 00 C` str(method) int(argc), or Hessian 1 `c maj min` [headers]
 * `m` u16 method -- and sets r->version to match; the method name is copied
 * into method (reset first). *argc is the argument count, or -1 for a
 * Hessian 1 call (arguments run until sr_hessian_at_call_end). */
int sr_hessian_read_call(sr_hessian_reader_t *r, sr_buf_t *method, int64_t *argc);
/* Hessian 1 call: 1 when the next byte is its final 'z' (consumed). */
int sr_hessian_at_call_end(sr_hessian_reader_t *r);
/* Reads the head of a reply: Hessian 2 `H 02 00` then 'R' (*fault = 0) or
 * 'F' (*fault = 1, an untyped map follows), or Hessian 1 `r maj min`
 * [headers] then a value (*fault = 0) or 'f' (*fault = 1: key/value pairs
 * until 'z'; read them with sr_hessian_next as if inside a map, the reader
 * reports END for that 'z'). */
int sr_hessian_read_reply(sr_hessian_reader_t *r, int *fault);
/* After the last value: Hessian 1 replies and calls end with 'z'; then no
 * byte may follow. */
int sr_hessian_finish(sr_hessian_reader_t *r, int h1_tail);

/* ---- writers (Hessian 2; each returns 0 or SR_ENOMEM) ---------------- */
int sr_hessian_put_null(sr_buf_t *b);
int sr_hessian_put_bool(sr_buf_t *b, int v);
int sr_hessian_put_int(sr_buf_t *b, int32_t v);   /* shortest int form */
int sr_hessian_put_long(sr_buf_t *b, int64_t v);  /* shortest long form */
int sr_hessian_put_double(sr_buf_t *b, double v); /* Hessian2Output's choice of form */
int sr_hessian_put_date(sr_buf_t *b, int64_t ms); /* 4b minutes when exact, else 4a */
/* s[0..n) is UTF-8, where a surrogate may also appear as its own 3-byte
 * sequence (as decoded lone surrogates are): written as CESU-8 with the
 * length in UTF-16 units, in chunks of 32768 units. SR_EUTF8 with *bad the
 * offset of the first byte that is not such a sequence. */
int sr_hessian_put_string(sr_buf_t *b, const char *s, size_t n, size_t *bad);
int sr_hessian_put_binary(sr_buf_t *b, const void *s, size_t n);
/* Length in UTF-16 units of valid input, or (size_t)-1 (with *bad). */
size_t sr_hessian_utf16_len(const char *s, size_t n, size_t *bad);
/* List start: typed when type != NULL (then by name, or by its index in the
 * type table when tidx >= 0); len >= 0 fixed (compact form up to 7), else
 * variable (close it with sr_hessian_put_end). */
int sr_hessian_put_list(sr_buf_t *b, const char *type, size_t tlen, int64_t tidx, int64_t len);
/* Map start: 'M' type when type != NULL (name or index as above), else 'H'. */
int sr_hessian_put_map(sr_buf_t *b, const char *type, size_t tlen, int64_t tidx);
int sr_hessian_put_end(sr_buf_t *b); /* 'Z' */
/* Class definition 'C' name nfields fields (strings must be valid). */
int sr_hessian_put_def(sr_buf_t *b, const char *name, size_t nlen, size_t nfields,
                       const char *const *fields, const size_t *flens, size_t *bad);
int sr_hessian_put_object(sr_buf_t *b, size_t def); /* instance head */
int sr_hessian_put_ref(sr_buf_t *b, size_t ref);   /* 'Q' */
/* Envelope heads: `H 02 00 C` str(method) int(argc); `H 02 00 R`; `H 02 00 F`. */
int sr_hessian_put_call(sr_buf_t *b, const char *method, size_t mlen, int32_t argc, size_t *bad);
int sr_hessian_put_reply(sr_buf_t *b);
int sr_hessian_put_fault(sr_buf_t *b);

#endif
