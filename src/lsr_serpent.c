/*
 * lsr_serpent.c -- the serpent payload serializer (Pyro4 serializer id 1)
 * between the Lua stack and bytes, and its bindings in springrun.core:
 *   core.serpent_encode(v) -> bytes | nil, msg, errname
 *   core.serpent_decode(bytes [, max_depth [, max_elements]]) -> v | nil, msg, errname
 *   core.serpent_tuple(t) -> t marked as a tuple (new table when t is nil)
 *   core.serpent_is_tuple(t) -> bool;  core.serpent_tuple_mt (the marker)
 *   core.serpent_handshake_object(payload [, cap]) -> id | nil, msg, errname
 * The value mapping is the JSON codec's, from the walker both encoders share
 * (lsr_encode.c): same null, same array marker and `n` holes, same refusals
 * with the same path texts; this file gives serpent's texts. serpent adds
 * tuples (written for tables marked with serpent_tuple, read as marked
 * arrays), sets (read as marked arrays), non-string dict keys on decode and
 * NaN/inf in serpent's own forms. Parsing itself is serpent.c (Lua-free).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "lsr_codec.h"
#include "lsr_tbuild.h"
#include "payload.h"
#include "serpent.h"


/* Deepest nesting written: Python's parser refuses more than 200 nested
 * brackets ("too many nested parentheses"), so deeper data could not be read
 * by a Python peer anyway. */
#define ENC_MAX_DEPTH 200

/* ---- encoder: serpent's text for the shared walker (lsr_encode.c) ----- */

/* serpent's header line, then Python literals with its compact
 * separators: "[a,b]", "(a,b)", "(a,)", "()", "{'k':v}". */
static const lsr_emitter_t serpent_emitter = {
    .name = "serpent",
    .max_depth = ENC_MAX_DEPTH,
    .header = LSR_TEXT(SR_SERPENT_HEADER),
    .null_ = LSR_TEXT("None"),
    .true_ = LSR_TEXT("True"),
    .false_ = LSR_TEXT("False"),
    .list_open = LSR_TEXT("["),
    .list_close = LSR_TEXT("]"),
    .tuple_open = LSR_TEXT("("),
    .tuple_close = LSR_TEXT(")"),
    .tuple_close_one = LSR_TEXT(",)"),
    .item_sep = LSR_TEXT(","),
    .key_sep = LSR_TEXT(":"),
    .binary_hint = " (send raw bytes with serpent.binary(s))",
    .put_double = sr_serpent_put_float,
    .put_string = sr_serpent_put_str,
};

int lsr_serpent_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen) {
  return lsr_encode(L, idx, &serpent_emitter, out, err, errlen);
}

/* ---- decoder: a visitor of sr_serpent_parse that builds Lua values ----- */

/* Open containers kept in the struct before one more level needs the heap. */
#define DEC_FRAMES 16

typedef struct dec_s {
  lua_State *L;
  int mt; /* stack slot of the array marker */
  /* the tables being built, one per open container (lsr_tbuild.h):
   * frames[0..depth), in `inline_frames` or, deeper, on the heap */
  lsr_tbuild_t *frames;
  int depth, cap;
  lsr_tbuild_t inline_frames[DEC_FRAMES];
  sr_buf_t scratch;
  const uint8_t *p;
  size_t n;
  sr_decode_limits_t lim;
  int rc;
  char *err;
  size_t errlen;
} dec_t;

static int d_none(void *ud, size_t off) {
  (void)off;
  lua_pushlightuserdata(((dec_t *)ud)->L, NULL);
  return 0;
}
static int d_bool(void *ud, int v, size_t off) {
  (void)off;
  lua_pushboolean(((dec_t *)ud)->L, v);
  return 0;
}
static int d_int(void *ud, int64_t v, size_t off) {
  (void)off;
  lua_pushinteger(((dec_t *)ud)->L, (lua_Integer)v);
  return 0;
}
static int d_num(void *ud, double v, size_t off) {
  (void)off;
  lua_pushnumber(((dec_t *)ud)->L, (lua_Number)v);
  return 0;
}
static int d_str(void *ud, const char *s, size_t len, size_t off) {
  (void)off;
  lua_pushlstring(((dec_t *)ud)->L, s, len);
  return 0;
}
/* Opens a list (map 0) or dict (map 1): a frame and its placeholder. */
static int d_open(dec_t *d, int map, size_t off) {
  if (d->depth == d->cap) {
    int cap = d->cap * 2;
    lsr_tbuild_t *f = malloc((size_t)cap * sizeof *f);
    if (!f) return sr_seterr(d->err, d->errlen, SR_ENOMEM, "serpent: out of memory at offset %zu", off);
    memcpy(f, d->frames, (size_t)d->depth * sizeof *f);
    if (d->frames != d->inline_frames) free(d->frames);
    d->frames = f;
    d->cap = cap;
  }
  if (lsr_tb_begin(d->L, &d->frames[d->depth], map, map ? 0 : d->mt))
    return sr_seterr(d->err, d->errlen, SR_ENOMEM, "serpent: out of Lua stack space at offset %zu",
                     off);
  d->depth++;
  return 0;
}
static int d_seq_begin(void *ud, sr_serpent_seq_t kind, size_t off) {
  (void)kind;
  return d_open(ud, 0, off);
}
static int d_seq_item(void *ud, size_t index, size_t off) {
  dec_t *d = ud;
  (void)index; (void)off;
  lsr_tb_added(d->L, &d->frames[d->depth - 1]);
  return 0;
}
static int d_seq_end(void *ud, sr_serpent_seq_t kind, size_t count, size_t off) {
  dec_t *d = ud;
  lsr_tbuild_t *b = &d->frames[--d->depth];
  (void)count; (void)off;
  if (kind == SR_SERPENT_PAREN) /* "(x)" is x, still waiting above the placeholder */
    lua_remove(d->L, b->slot);
  else
    lsr_tb_end(d->L, b);
  return 0;
}
static int d_dict_begin(void *ud, size_t off) { return d_open(ud, 1, off); }
static int d_dict_pair(void *ud, size_t key_off) {
  dec_t *d = ud;
  lua_State *L = d->L;
  const char *why = NULL;
  switch (lua_type(L, -2)) {
    case LUA_TTABLE: why = "a tuple"; break;
    case LUA_TNUMBER:
      if (!lua_isinteger(L, -2) && isnan(lua_tonumber(L, -2))) why = "NaN";
      break;
    default: break;
  }
  if (why)
    return sr_seterr(d->err, d->errlen, SR_ETYPE,
                     "serpent: unsupported dict key (%s) at offset %zu", why, key_off);
  lsr_tb_added(L, &d->frames[d->depth - 1]);
  return 0;
}

/* Pyro4 rebuilds {'__class__':'float','value':'nan'} (and 'inf', '-inf')
 * as a float: do the same. */
static int d_dict_end(void *ud, size_t count, size_t off) {
  dec_t *d = ud;
  lua_State *L = d->L;
  (void)count;
  lsr_tb_end(L, &d->frames[--d->depth]);
  if (lua_getfield(L, -1, "__class__") != LUA_TSTRING || strcmp(lua_tostring(L, -1), "float") != 0) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 1);
  double v = 0;
  int ok = 0;
  if (lua_getfield(L, -1, "value") == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    const char *t = (*s == '-' || *s == '+') ? s + 1 : s;
    double sign = *s == '-' ? -1.0 : 1.0;
    if (strcasecmp(t, "nan") == 0) {
      v = NAN;
      ok = 1;
    } else if (strcasecmp(t, "inf") == 0 || strcasecmp(t, "infinity") == 0) {
      v = sign * INFINITY;
      ok = 1;
    }
  }
  lua_pop(L, 1);
  if (!ok)
    return sr_seterr(d->err, d->errlen, SR_ESYNTAX,
                     "serpent: float class dict without value 'nan', 'inf' or '-inf' at offset %zu",
                     off);
  lua_pop(L, 1);
  lua_pushnumber(L, (lua_Number)v);
  return 0;
}

static const sr_serpent_visitor_t dec_visitor = {
    d_none, d_bool, d_int, d_num, d_str, d_seq_begin, d_seq_item, d_seq_end,
    d_dict_begin, d_dict_pair, d_dict_end};

/* Runs the parse under lua_pcall so that a Lua memory error cannot skip
 * freeing the scratch buffer. Leaves the value on top when d->rc == 0. */
static int dec_protected(lua_State *L) {
  dec_t *d = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lsr_push_array_mt(L);
  d->mt = 1;
  d->rc = sr_serpent_parse(d->p, d->n, d->lim.max_depth, d->lim.max_elements, &dec_visitor, d,
                           &d->scratch, d->err, d->errlen);
  return d->rc ? 0 : 1;
}

int lsr_serpent_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                       char *err, size_t errlen) {
  dec_t d;
  d.L = L;
  d.p = p;
  d.n = n;
  d.lim.max_depth = lim && lim->max_depth > 0 ? lim->max_depth : SR_DECODE_DEFAULT_DEPTH;
  d.lim.max_elements = lim && lim->max_elements > 0 ? lim->max_elements : SR_DECODE_DEFAULT_ELEMENTS;
  d.rc = 0;
  d.err = err;
  d.errlen = errlen;
  d.frames = d.inline_frames;
  d.depth = 0;
  d.cap = DEC_FRAMES;
  sr_buf_init(&d.scratch);
  if (!lua_checkstack(L, 4)) return sr_seterr(err, errlen, SR_ENOMEM, "out of Lua stack space");
  lua_pushcfunction(L, dec_protected);
  lua_pushlightuserdata(L, &d);
  int st = lua_pcall(L, 1, 1, 0);
  sr_buf_free(&d.scratch);
  if (d.frames != d.inline_frames) free(d.frames);
  if (st != LUA_OK) {
    lua_pop(L, 1);
    return sr_seterr(err, errlen, SR_ENOMEM, "serpent: out of memory while decoding");
  }
  if (d.rc) {
    lua_pop(L, 1);
    return d.rc;
  }
  return 0;
}

/* ---- bindings --------------------------------------------------------- */

static int l_serpent_encode(lua_State *L) { return lsr_codec_l_encode(L, &serpent_emitter); }

static int l_serpent_decode(lua_State *L) { return lsr_codec_l_decode(L, lsr_serpent_decode); }

/* An array (json.array) may become a tuple. */
static int l_serpent_tuple(lua_State *L) {
  return lsr_codec_l_mark(L, lsr_push_tuple_mt, lsr_push_array_mt, "serpent.tuple");
}

static int l_serpent_is_tuple(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && lsr_is_tuple_marked(L, 1));
  return 1;
}

/* The Lua-free CONNECT scan the daemon thread uses, exposed for specs. */
static int l_serpent_handshake_object(lua_State *L) {
  return lsr_codec_l_handshake(L, sr_serpent_handshake_object);
}

void lsr_open_serpent(lua_State *L) {
  static const luaL_Reg fns[] = {{"serpent_encode", l_serpent_encode},
                                 {"serpent_decode", l_serpent_decode},
                                 {"serpent_tuple", l_serpent_tuple},
                                 {"serpent_is_tuple", l_serpent_is_tuple},
                                 {"serpent_handshake_object", l_serpent_handshake_object},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
  lsr_push_tuple_mt(L);
  lua_setfield(L, -2, "serpent_tuple_mt");
}
