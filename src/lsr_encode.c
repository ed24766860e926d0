/*
 * lsr_encode.c -- the walk over Lua values that both payload encoders share
 * (JSON in lsr_json.c, serpent in lsr_serpent.c), and the binding bodies
 * their core.<fmt>_encode/_decode/_handshake_object functions share.
 *
 * The walker decides what a Lua value encodes as -- null (nil, core.null),
 * boolean, integer, float, string, list or tuple (tables with keys exactly
 * 1..n, or carrying the array/tuple marker, with an integer `n` fixing the
 * length), map (string keys), `{}` for an empty unmarked table -- and
 * refuses everything else with one set of error texts naming the path of
 * the offending value (" at [2].cb", " at [\"a b\"]"). It writes integers
 * and map braces itself (both formats spell them alike) and asks the
 * format's emitter (lsr_emitter_t, lsr_codec.h) for the rest. Values go
 * straight from the Lua stack to the caller's buffer: no tree, and no
 * allocation unless the nesting is deeper than the inline frame stack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lsr_codec.h"

#define ENC_INLINE_FRAMES 32

typedef struct enc_frame_s {
  const void *tbl;   /* the table open at this level (cycle check) */
  int by_key;        /* 1: inside a map at the string key on stack slot keyidx */
  int keyidx;
  lua_Integer index; /* 0: inside a sequence at this (1-based) index */
} enc_frame_t;

typedef struct enc_s {
  lua_State *L;
  const lsr_emitter_t *em;
  sr_buf_t *out;
  char *err;
  size_t errlen;
  int depth;
  int cap;         /* frames available in fr */
  int mt_array;    /* stack slots of the array marker, */
  int mt_tuple;    /* the tuple marker */
  int key_n;       /* and the string "n", pushed once per encode */
  enc_frame_t *fr; /* inline_fr until nesting needs more, then malloc'd */
  int refs;        /* stack slot of the refs table (see encode_set_refs), or 0 */
  enc_frame_t inline_fr[ENC_INLINE_FRAMES];
} enc_t;

/* registry[&refs_key]: a table with weak keys, object -> the value it
 * encodes as (springrun.refs: an exported object travels as its Pyro4
 * Proxy class dict, wherever it appears in a payload) */
static char refs_key;

/* core.encode_set_refs(t): every table found as a key of t is encoded as
 * t's value for it instead (a table); nil: none. */
int lsr_l_encode_set_refs(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &refs_key);
  return 0;
}

static int is_ident(const char *s, size_t n) {
  if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

/* Writes " at <path>" (e.g. " at [2].cb") for the current position. */
static void enc_path(enc_t *e, char *buf, size_t cap) {
  size_t o = 0;
  buf[0] = '\0';
  if (e->depth == 0) return;
  o += (size_t)snprintf(buf, cap, " at ");
  for (int i = 0; i < e->depth && o < cap; i++) {
    enc_frame_t *f = &e->fr[i];
    if (f->by_key) {
      size_t kl;
      const char *k = lua_tolstring(e->L, f->keyidx, &kl);
      if (is_ident(k, kl))
        o += (size_t)snprintf(buf + o, cap - o, "%s%.*s", o > 4 ? "." : "", (int)kl, k);
      else
        o += (size_t)snprintf(buf + o, cap - o, "[\"%.*s\"]", (int)(kl > 60 ? 60 : kl), k);
    } else {
      o += (size_t)snprintf(buf + o, cap - o, "[%lld]", (long long)f->index);
    }
  }
}

static int enc_fail_hint(enc_t *e, int code, const char *what, const char *hint) {
  char path[256];
  enc_path(e, path, sizeof path);
  return sr_seterr(e->err, e->errlen, code, "%s%s%s", what, path, hint);
}

static int enc_fail(enc_t *e, int code, const char *what) { return enc_fail_hint(e, code, what, ""); }

static int enc_value(enc_t *e, int idx);

/* A fixed text (brackets and separators are one or two bytes). */
static inline int put(sr_buf_t *out, lsr_text_t t) {
  if (sr_buf_room(out, t.n)) return SR_ENOMEM;
  uint8_t *o = out->data + out->len;
  if (t.n == 1) {
    o[0] = (uint8_t)t.s[0];
  } else if (t.n == 2) {
    o[0] = (uint8_t)t.s[0];
    o[1] = (uint8_t)t.s[1];
  } else {
    memcpy(o, t.s, t.n);
  }
  out->len += t.n;
  return 0;
}

static int enc_bad_key(enc_t *e, int keyidx, const char *why) {
  lua_State *L = e->L;
  char what[160];
  if (lua_type(L, keyidx) == LUA_TNUMBER) {
    if (lua_isinteger(L, keyidx))
      snprintf(what, sizeof what, "%s (key %lld)", why, (long long)lua_tointeger(L, keyidx));
    else
      snprintf(what, sizeof what, "%s (key %.17g)", why, (double)lua_tonumber(L, keyidx));
  } else if (lua_type(L, keyidx) == LUA_TSTRING) {
    snprintf(what, sizeof what, "%s (key \"%.40s\")", why, lua_tostring(L, keyidx));
  } else {
    snprintf(what, sizeof what, "%s (key of type %s)", why, luaL_typename(L, keyidx));
  }
  return enc_fail(e, SR_ETYPE, what);
}

/* Items 1..len of the table at idx as a list (or tuple), looked up one by
 * one: the general path, for tables whose keys the one pass (enc_seq_pass)
 * did not meet in index order. */
static int enc_seq(enc_t *e, int idx, lua_Integer len, int tuple) {
  lua_State *L = e->L;
  const lsr_emitter_t *em = e->em;
  int rc;
  if (put(e->out, tuple ? em->tuple_open : em->list_open)) return SR_ENOMEM;
  enc_frame_t *f = &e->fr[e->depth++];
  f->by_key = 0;
  for (lua_Integer i = 1; i <= len; i++) {
    if (i > 1 && put(e->out, em->item_sep)) return SR_ENOMEM;
    f->index = i;
    lua_rawgeti(L, idx, i);
    rc = enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
    if (rc) return rc;
  }
  e->depth--;
  if (!tuple) return put(e->out, em->list_close);
  return put(e->out, len == 1 ? em->tuple_close_one : em->tuple_close);
}

/* enc_seq_pass: a key out of index order (not an error: take the general path) */
#define ENC_AGAIN 1

/* Writes the table at idx as a list (or tuple) in one lua_next traversal,
 * which gives the keys of a table's array part in index order: the values
 * are written as met, while the keys keep that order -- for an unmarked
 * table exactly 1, 2, 3...; for a marked one rising integers from 1 (holes
 * written as null), at most n when has_n (the key "n" passed over), then
 * nulls up to n. Returns 0 when written; ENC_AGAIN, with out and the stack
 * as they were, at a key out of that order (a table with integer keys in
 * its hash part, or keys that are not a sequence: the caller's key check
 * tells); or the first failing value's error (the values before it are in
 * index order, as enc_seq would write them). */
static int enc_seq_pass(enc_t *e, int idx, int marked, int has_n, lua_Integer n, int tuple) {
  lua_State *L = e->L;
  const lsr_emitter_t *em = e->em;
  sr_buf_t *out = e->out;
  size_t start = out->len;
  int d0 = e->depth, rc;
  if (put(out, tuple ? em->tuple_open : em->list_open)) return SR_ENOMEM;
  enc_frame_t *f = &e->fr[e->depth++];
  f->by_key = 0;
  int kslot = lua_gettop(L) + 1, vslot = kslot + 1;
  lua_Integer last = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!lua_isinteger(L, kslot)) {
      if (has_n && lua_rawequal(L, kslot, e->key_n)) {
        lua_settop(L, kslot);
        continue;
      }
      goto again;
    }
    lua_Integer k = lua_tointeger(L, kslot);
    if (k <= last || (marked ? has_n && k > n : k != last + 1)) goto again;
    for (lua_Integer i = last + 1; i < k; i++) /* holes of a marked table */
      if ((i > 1 && put(out, em->item_sep)) || put(out, em->null_)) return SR_ENOMEM;
    if (k > 1 && put(out, em->item_sep)) return SR_ENOMEM;
    f->index = k;
    if ((rc = enc_value(e, vslot))) {
      e->depth = d0;
      return rc;
    }
    lua_settop(L, kslot);
    last = k;
  }
  if (has_n)
    for (lua_Integer i = last + 1; i <= n; i++)
      if ((i > 1 && put(out, em->item_sep)) || put(out, em->null_)) return SR_ENOMEM;
  e->depth = d0;
  if (!tuple) return put(out, em->list_close);
  return put(out, (has_n ? n : last) == 1 ? em->tuple_close_one : em->tuple_close);
again:
  lua_settop(L, kslot - 1);
  e->depth = d0;
  out->len = start;
  return ENC_AGAIN;
}

/* Encodes the map whose first key/value pair is on the stack top (key at
 * -2, value at -1, from lua_next); consumes the iteration. */
static int enc_map(enc_t *e, int idx) {
  lua_State *L = e->L;
  const lsr_emitter_t *em = e->em;
  int rc;
  if (sr_buf_putc(e->out, '{')) return SR_ENOMEM;
  enc_frame_t *f = &e->fr[e->depth++];
  f->by_key = 1;
  int first = 1;
  do {
    int kidx = lua_gettop(L) - 1;
    if (lua_type(L, kidx) != LUA_TSTRING) {
      e->depth--;
      rc = enc_bad_key(e, kidx,
                       lua_isinteger(L, kidx) ? "cannot encode a table mixing array and map keys"
                                              : "cannot encode a table key that is not a string");
      lua_pop(L, 2);
      return rc;
    }
    if (!first && put(e->out, em->item_sep)) return lua_pop(L, 2), SR_ENOMEM;
    first = 0;
    size_t kl, bad;
    const char *k = lua_tolstring(L, kidx, &kl);
    rc = em->put_string(e->out, k, kl, &bad);
    if (rc) {
      e->depth--;
      if (rc == SR_EUTF8) {
        char what[96];
        snprintf(what, sizeof what, "invalid UTF-8 at byte %zu of a table key", bad + 1);
        rc = enc_fail(e, SR_EUTF8, what);
      }
      lua_pop(L, 2);
      return rc;
    }
    if (put(e->out, em->key_sep)) return lua_pop(L, 2), SR_ENOMEM;
    f->keyidx = kidx;
    rc = enc_value(e, kidx + 1);
    lua_pop(L, 1);
    if (rc) {
      lua_pop(L, 1);
      return rc;
    }
  } while (lua_next(L, idx));
  e->depth--;
  return sr_buf_putc(e->out, '}');
}

/* The key check of a marked table (array or tuple): integer keys from 1,
 * up to n when has_n (and the key "n"). *len: n, or the highest key. */
static int marked_keys(enc_t *e, int idx, int has_n, lua_Integer n, lua_Integer *len) {
  lua_State *L = e->L;
  lua_Integer max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k >= 1 && (!has_n || k <= n)) {
        if (k > max) max = k;
        continue;
      }
      int rc = enc_bad_key(e, -1, has_n ? "cannot encode an array item beyond its n"
                                        : "cannot encode an array index below 1");
      lua_pop(L, 1);
      return rc;
    }
    if (has_n && lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "n") == 0)
      continue;
    int rc = enc_bad_key(e, -1, "cannot encode a non-index key in an array");
    lua_pop(L, 1);
    return rc;
  }
  *len = has_n ? n : max;
  return 0;
}

/* The key check of an unmarked table whose first key is an integer: keys
 * exactly 1..*len. */
static int list_keys(enc_t *e, int idx, lua_Integer *len) {
  lua_State *L = e->L;
  lua_Integer count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1)) {
      int rc = enc_bad_key(e, -1, "cannot encode a table mixing array and map keys");
      lua_pop(L, 1);
      return rc;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k < 1) {
      int rc = enc_bad_key(e, -1, "cannot encode an array index below 1");
      lua_pop(L, 1);
      return rc;
    }
    count++;
    if (k > max) max = k;
  }
  if (max != count) {
    char what[160];
    snprintf(what, sizeof what,
             "cannot encode a sparse array (%lld items, highest index %lld; "
             "mark it with json.array(t) and set t.n to send nils)",
             (long long)count, (long long)max);
    return enc_fail(e, SR_ETYPE, what);
  }
  *len = count;
  return 0;
}

/* 0: no marker; 1: the array marker; 2: the tuple marker. */
static int enc_marker(enc_t *e, int idx) {
  lua_State *L = e->L;
  if (!lua_getmetatable(L, idx)) return 0;
  int r = lua_rawequal(L, -1, e->mt_array) ? 1 : lua_rawequal(L, -1, e->mt_tuple) ? 2 : 0;
  lua_pop(L, 1);
  return r;
}

/* A sequence: the one pass, and where it stops short the key check, whose
 * errors come first (as if the keys were checked before any value), then
 * the general path. marked: has_n and n as for enc_seq_pass. */
static int enc_sequence(enc_t *e, int idx, int marked, int has_n, lua_Integer n, int tuple) {
  int rc = enc_seq_pass(e, idx, marked, has_n, n, tuple);
  if (rc == 0 || rc == SR_ENOMEM) return rc;
  lua_Integer len = 0;
  int krc = marked ? marked_keys(e, idx, has_n, n, &len) : list_keys(e, idx, &len);
  if (krc) return krc;
  if (rc != ENC_AGAIN) return rc; /* the keys are right: the value's error stands */
  return enc_seq(e, idx, len, tuple);
}

static int enc_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  const void *ptr = lua_topointer(L, idx);
  int max_depth = e->em->max_depth;
  if (e->depth >= max_depth) {
    char what[64];
    snprintf(what, sizeof what, "nesting too deep (more than %d levels)", max_depth);
    return enc_fail(e, SR_EDEPTH, what);
  }
  for (int i = 0; i < e->depth; i++)
    if (e->fr[i].tbl == ptr) return enc_fail(e, SR_ECYCLE, "cannot encode a circular reference");
  if (!lua_checkstack(L, 6)) return enc_fail(e, SR_ENOMEM, "out of Lua stack space");
  if (e->depth >= e->cap) { /* deep document: room for every level at once */
    enc_frame_t *fr = malloc(sizeof(enc_frame_t) * (size_t)max_depth);
    if (fr == NULL) return SR_ENOMEM;
    memcpy(fr, e->fr, sizeof(enc_frame_t) * (size_t)e->depth);
    e->fr = fr;
    e->cap = max_depth;
  }
  e->fr[e->depth].tbl = ptr;

  int mark = enc_marker(e, idx);
  if (mark) { /* a marked table is a list (a tuple where the format has them) */
    lua_Integer n = 0;
    int has_n = 0;
    lua_pushvalue(L, e->key_n);
    if (lua_rawget(L, idx) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0) {
      n = lua_tointeger(L, -1);
      has_n = 1;
    }
    lua_pop(L, 1);
    return enc_sequence(e, idx, 1, has_n, n, mark == 2 && e->em->tuple_open.s != NULL);
  }

  lua_pushnil(L);
  if (!lua_next(L, idx)) return put(e->out, (lsr_text_t)LSR_TEXT("{}")); /* empty, unmarked */
  if (lua_type(L, -2) == LUA_TSTRING) return enc_map(e, idx);
  if (!lua_isinteger(L, -2)) {
    int rc = enc_bad_key(e, -2, "cannot encode a table key that is not a string");
    lua_pop(L, 2);
    return rc;
  }
  lua_pop(L, 2);
  return enc_sequence(e, idx, 0, 0, 0, 0);
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  const lsr_emitter_t *em = e->em;
  char what[96];
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return put(e->out, em->null_);
    case LUA_TBOOLEAN:
      return put(e->out, lua_toboolean(L, idx) ? em->true_ : em->false_);
    case LUA_TNUMBER: {
      if (lua_isinteger(L, idx)) { /* JSON and Python write integers alike */
        sr_buf_t *out = e->out;
        if (sr_buf_room(out, 24)) return SR_ENOMEM;
        out->len += sr_json_fmt_int((int64_t)lua_tointeger(L, idx), (char *)out->data + out->len);
        return 0;
      }
      return em->put_double(e->out, (double)lua_tonumber(L, idx));
    }
    case LUA_TSTRING: {
      size_t sl, bad;
      const char *s = lua_tolstring(L, idx, &sl);
      int rc = em->put_string(e->out, s, sl, &bad);
      if (rc == SR_EUTF8) {
        snprintf(what, sizeof what, "invalid UTF-8 at byte %zu of the string", bad + 1);
        return enc_fail_hint(e, SR_EUTF8, what, em->binary_hint);
      }
      return rc;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return put(e->out, em->null_);
      break;
    case LUA_TTABLE:
      if (e->refs) {
        if (!lua_checkstack(L, 2)) return enc_fail(e, SR_ENOMEM, "out of Lua stack space");
        lua_pushvalue(L, idx);
        if (lua_rawget(L, e->refs) == LUA_TTABLE) { /* a referenced object: its stand-in */
          int rc = enc_table(e, lua_gettop(L));
          lua_pop(L, 1);
          return rc;
        }
        lua_pop(L, 1);
      }
      return enc_table(e, idx);
    default:
      break;
  }
  snprintf(what, sizeof what, "cannot encode a %s value", luaL_typename(L, idx));
  return enc_fail(e, SR_ETYPE, what);
}

/* lsr_encode, or with keyidx (a stack slot holding a string) the value as
 * if it stood at that key of an enclosing map, and with index > 0 at that
 * index of the list there: depth and error paths count those levels. */
static int encode_in(lua_State *L, int idx, const lsr_emitter_t *em, sr_buf_t *out, char *err,
                     size_t errlen, int keyidx, lua_Integer index) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  if (keyidx != 0) keyidx = lua_absindex(L, keyidx);
  enc_t enc, *e = &enc;
  e->L = L;
  e->em = em;
  e->out = out;
  e->err = err;
  e->errlen = errlen;
  e->depth = 0;
  e->cap = ENC_INLINE_FRAMES;
  e->fr = e->inline_fr;
  if (!lua_checkstack(L, 5)) return sr_seterr(err, errlen, SR_ENOMEM, "out of Lua stack space");
  lsr_push_array_mt(L);
  e->mt_array = lua_gettop(L);
  lsr_push_tuple_mt(L);
  e->mt_tuple = e->mt_array + 1;
  lua_pushliteral(L, "n");
  e->key_n = e->mt_array + 2;
  e->refs = 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &refs_key) == LUA_TTABLE)
    e->refs = lua_gettop(L);
  else
    lua_pop(L, 1);
  int rc = 0;
  if (keyidx != 0) {
    e->fr[e->depth++] = (enc_frame_t){.tbl = NULL, .by_key = 1, .keyidx = keyidx};
    if (index > 0) e->fr[e->depth++] = (enc_frame_t){.tbl = NULL, .by_key = 0, .index = index};
  } else if (em->header.n) {
    rc = put(out, em->header);
  }
  if (rc == 0) rc = enc_value(e, idx);
  if (rc == SR_ENOMEM) sr_seterr(err, errlen, rc, "out of memory while encoding %s", em->name);
  if (e->fr != e->inline_fr) free(e->fr);
  lua_settop(L, top);
  return rc;
}

int lsr_encode(lua_State *L, int idx, const lsr_emitter_t *em, sr_buf_t *out, char *err,
               size_t errlen) {
  return encode_in(L, idx, em, out, err, errlen, 0, 0);
}

int lsr_encode_in(lua_State *L, int idx, const lsr_emitter_t *em, sr_buf_t *out, char *err,
                  size_t errlen, int keyidx, lua_Integer index) {
  return encode_in(L, idx, em, out, err, errlen, keyidx, index);
}

/* ---- shared binding bodies -------------------------------------------- */

int lsr_codec_fail(lua_State *L, int rc, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushstring(L, sr_err_name(rc));
  return 3;
}

int lsr_codec_l_encode(lua_State *L, const lsr_emitter_t *em) {
  char err[512];
  luaL_checkany(L, 1);
  sr_buf_t *b = lsr_push_buf(L);
  int rc = lsr_encode(L, 1, em, b, err, sizeof err);
  if (rc) {
    sr_buf_free(b);
    return lsr_codec_fail(L, rc, err);
  }
  lua_pushlstring(L, b->data ? (const char *)b->data : "", b->len);
  sr_buf_free(b);
  return 1;
}

int lsr_codec_l_decode(lua_State *L, lsr_decode_fn decode) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_decode_limits_t lim = {0, 0};
  lim.max_depth = (int)luaL_optinteger(L, 2, SR_DECODE_DEFAULT_DEPTH);
  lim.max_elements = (size_t)luaL_optinteger(L, 3, SR_DECODE_DEFAULT_ELEMENTS);
  luaL_argcheck(L, lim.max_depth > 0, 2, "max_depth must be positive");
  luaL_argcheck(L, lim.max_elements > 0, 3, "max_elements must be positive");
  char err[256];
  int rc = decode(L, (const uint8_t *)s, n, &lim, err, sizeof err);
  if (rc) return lsr_codec_fail(L, rc, err);
  return 1;
}

int lsr_codec_l_handshake(lua_State *L, lsr_handshake_fn scan) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer cap = luaL_optinteger(L, 2, 1024);
  luaL_argcheck(L, cap > 0 && cap <= 65536, 2, "cap must be in 1..65536");
  char *out = lua_newuserdatauv(L, (size_t)cap, 0); /* owned by Lua: no leak on a raise */
  char err[256];
  int rc = scan((const uint8_t *)s, n, out, (size_t)cap, err, sizeof err);
  if (rc < 0) return lsr_codec_fail(L, rc, err);
  lua_pushlstring(L, out, (size_t)rc);
  return 1;
}

int lsr_codec_l_mark(lua_State *L, void (*push_mt)(lua_State *L), void (*convert)(lua_State *L),
                     const char *who) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {
    push_mt(L);
    if (lua_rawequal(L, -1, -2)) {
      lua_settop(L, 1);
      return 1;
    }
    if (convert == NULL) return luaL_error(L, "%s: the table already has a metatable", who);
    convert(L);
    if (!lua_rawequal(L, -1, -3)) return luaL_error(L, "%s: the table already has a metatable", who);
    lua_settop(L, 1);
  }
  push_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}
