/*
 * lsr_json.c -- the JSON payload serializer between the Lua stack and bytes
 * (no intermediate tree), and its bindings in springrun.core:
 *   core.json_encode(v) -> text | nil, msg, errname
 *   core.json_decode(text [, max_depth [, max_elements]]) -> v | nil, msg, errname
 *   core.json_array(t) -> t (marked as a JSON array; new table when t is nil)
 *   core.json_is_array(t) -> bool;  core.json_array_mt (the marker metatable)
 *   core.null (NULL lightuserdata, == cjson.null)
 *   core.base64_encode(s) -> text;  core.base64_decode(text) -> s | nil, msg, errname
 * Value mapping (see lua/springrun/json.lua for the user-facing rules):
 * integers <-> JSON integers (64-bit), floats <-> shortest repr text, nil and
 * null <-> null, tables with keys exactly 1..n or marked <-> arrays, tables
 * with string keys <-> objects; anything else is refused naming the path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lsr_codec.h"
#include "payload.h"

#define ENC_MAX_DEPTH 1000

/* ---- encoder ---------------------------------------------------------- */

typedef struct enc_frame_s {
  const void *tbl;
  int by_key;       /* 1: inside a map at the string key on stack slot keyidx */
  int keyidx;
  lua_Integer index; /* 0: inside an array at this (1-based) index */
} enc_frame_t;

typedef struct enc_s {
  lua_State *L;
  sr_buf_t *out;
  char *err;
  size_t errlen;
  int depth;
  int cap;          /* frames available in fr */
  enc_frame_t *fr;  /* inline[] until nesting needs more, then malloc'd */
  enc_frame_t inline_fr[32];
} enc_t;

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

static int enc_array(enc_t *e, int idx, lua_Integer len) {
  lua_State *L = e->L;
  int rc;
  if (sr_buf_putc(e->out, '[')) return SR_ENOMEM;
  enc_frame_t *f = &e->fr[e->depth++];
  f->by_key = 0;
  for (lua_Integer i = 1; i <= len; i++) {
    if (i > 1 && sr_buf_append(e->out, ", ", 2)) return SR_ENOMEM;
    f->index = i;
    lua_rawgeti(L, idx, i);
    rc = enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
    if (rc) return rc;
  }
  e->depth--;
  return sr_buf_putc(e->out, ']');
}

/* Encodes the map whose first key/value pair is on the stack top (key at
 * -2, value at -1, from lua_next); consumes the iteration. */
static int enc_map(enc_t *e, int idx) {
  lua_State *L = e->L;
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
    if (!first && sr_buf_append(e->out, ", ", 2)) return lua_pop(L, 2), SR_ENOMEM;
    first = 0;
    size_t kl, bad;
    const char *k = lua_tolstring(L, kidx, &kl);
    rc = sr_json_put_string(e->out, (const uint8_t *)k, kl, &bad);
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
    if (sr_buf_append(e->out, ": ", 2)) return lua_pop(L, 2), SR_ENOMEM;
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

static int enc_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  const void *ptr = lua_topointer(L, idx);
  if (e->depth >= ENC_MAX_DEPTH) {
    char what[64];
    snprintf(what, sizeof what, "nesting too deep (more than %d levels)", ENC_MAX_DEPTH);
    return enc_fail(e, SR_EDEPTH, what);
  }
  for (int i = 0; i < e->depth; i++)
    if (e->fr[i].tbl == ptr) return enc_fail(e, SR_ECYCLE, "cannot encode a circular reference");
  if (!lua_checkstack(L, 6)) return enc_fail(e, SR_ENOMEM, "out of Lua stack space");
  if (e->depth >= e->cap) { /* deep document: room for every level at once */
    enc_frame_t *fr = malloc(sizeof(enc_frame_t) * ENC_MAX_DEPTH);
    if (fr == NULL) return SR_ENOMEM;
    memcpy(fr, e->fr, sizeof(enc_frame_t) * (size_t)e->depth);
    e->fr = fr;
    e->cap = ENC_MAX_DEPTH;
  }
  e->fr[e->depth].tbl = ptr;

  if (lsr_is_array_marked(L, idx)) {
    lua_Integer len = 0, max = 0;
    int has_n = 0;
    lua_pushliteral(L, "n");
    if (lua_rawget(L, idx) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0) {
      len = lua_tointeger(L, -1);
      has_n = 1;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (lua_isinteger(L, -1)) {
        lua_Integer k = lua_tointeger(L, -1);
        if (k >= 1 && (!has_n || k <= len)) {
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
    return enc_array(e, idx, has_n ? len : max);
  }

  lua_pushnil(L);
  if (!lua_next(L, idx)) return sr_buf_append(e->out, "{}", 2); /* empty, unmarked */
  if (lua_type(L, -2) == LUA_TSTRING) return enc_map(e, idx);
  if (!lua_isinteger(L, -2)) {
    int rc = enc_bad_key(e, -2, "cannot encode a table key that is not a string");
    lua_pop(L, 2);
    return rc;
  }
  /* array candidate: keys must be exactly 1..n */
  lua_Integer count = 0, max = 0;
  lua_pop(L, 1); /* the value: the key stays for lua_next */
  for (;;) {
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
    if (!lua_next(L, idx)) break;
    lua_pop(L, 1);
  }
  if (max != count) {
    char what[160];
    snprintf(what, sizeof what,
             "cannot encode a sparse array (%lld items, highest index %lld; "
             "mark it with json.array(t) and set t.n to send nils)",
             (long long)count, (long long)max);
    return enc_fail(e, SR_ETYPE, what);
  }
  return enc_array(e, idx, count);
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  char what[96];
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return sr_buf_append(e->out, "null", 4);
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) ? sr_buf_append(e->out, "true", 4)
                                   : sr_buf_append(e->out, "false", 5);
    case LUA_TNUMBER: {
      char num[SR_JSON_DOUBLE_BUFSZ];
      size_t nl;
      if (lua_isinteger(L, idx)) nl = sr_json_fmt_int((int64_t)lua_tointeger(L, idx), num);
      else nl = sr_json_fmt_double((double)lua_tonumber(L, idx), num);
      return sr_buf_append(e->out, num, nl);
    }
    case LUA_TSTRING: {
      size_t sl, bad;
      const char *s = lua_tolstring(L, idx, &sl);
      int rc = sr_json_put_string(e->out, (const uint8_t *)s, sl, &bad);
      if (rc == SR_EUTF8) {
        snprintf(what, sizeof what, "invalid UTF-8 at byte %zu of the string", bad + 1);
        return enc_fail_hint(e, SR_EUTF8, what, " (send raw bytes with json.binary(s))");
      }
      return rc;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return sr_buf_append(e->out, "null", 4);
      break;
    case LUA_TTABLE: {
      int rc = enc_table(e, idx);
      return rc;
    }
    default:
      break;
  }
  snprintf(what, sizeof what, "cannot encode a %s value", luaL_typename(L, idx));
  return enc_fail(e, SR_ETYPE, what);
}

int lsr_json_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  enc_t enc, *e = &enc;
  e->L = L;
  e->out = out;
  e->err = err;
  e->errlen = errlen;
  e->depth = 0;
  e->cap = (int)(sizeof e->inline_fr / sizeof e->inline_fr[0]);
  e->fr = e->inline_fr;
  int rc = enc_value(e, idx);
  if (rc == SR_ENOMEM) sr_seterr(err, errlen, rc, "out of memory while encoding JSON");
  if (e->fr != e->inline_fr) free(e->fr);
  lua_settop(L, top);
  return rc;
}

/* ---- decoder ---------------------------------------------------------- */

typedef struct dec_s {
  lua_State *L;
  const uint8_t *p;
  size_t n;
  int depth, max_depth;
  size_t elems, max_elems;
  int mt; /* stack slot of the array marker */
  sr_buf_t scratch;
  char *err;
  size_t errlen;
} dec_t;

static int dec_value(dec_t *d, size_t pos, size_t *end);

static int dec_enter(dec_t *d, size_t pos) {
  if (d->depth >= d->max_depth) {
    char what[64];
    snprintf(what, sizeof what, "nesting too deep (more than %d levels)", d->max_depth);
    return sr_json_err_at(d->err, d->errlen, SR_EDEPTH, pos, d->n, what);
  }
  if (!lua_checkstack(d->L, 4))
    return sr_json_err_at(d->err, d->errlen, SR_ENOMEM, pos, d->n, "out of Lua stack space");
  d->depth++;
  return 0;
}

static int dec_array(dec_t *d, size_t pos, size_t *end) {
  lua_State *L = d->L;
  const uint8_t *p = d->p;
  int rc;
  if ((rc = dec_enter(d, pos))) return rc;
  lua_newtable(L);
  lua_pushvalue(L, d->mt);
  lua_setmetatable(L, -2);
  pos = sr_json_skip_ws(p, d->n, pos + 1);
  if (pos < d->n && p[pos] == ']') {
    *end = pos + 1;
    d->depth--;
    return 0;
  }
  lua_Integer i = 0;
  for (;;) {
    if ((rc = dec_value(d, pos, &pos))) return rc;
    lua_rawseti(L, -2, ++i);
    pos = sr_json_skip_ws(p, d->n, pos);
    if (pos < d->n && p[pos] == ',') {
      pos++;
      continue;
    }
    if (pos < d->n && p[pos] == ']') break;
    return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n, "expected ',' or ']'");
  }
  *end = pos + 1;
  d->depth--;
  return 0;
}

static int dec_object(dec_t *d, size_t pos, size_t *end) {
  lua_State *L = d->L;
  const uint8_t *p = d->p;
  int rc;
  if ((rc = dec_enter(d, pos))) return rc;
  lua_newtable(L);
  pos = sr_json_skip_ws(p, d->n, pos + 1);
  if (pos < d->n && p[pos] == '}') {
    *end = pos + 1;
    d->depth--;
    return 0;
  }
  for (;;) {
    if (pos >= d->n || p[pos] != '"')
      return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n,
                            "expected a string key in double quotes");
    const char *k;
    size_t kl;
    if ((rc = sr_json_read_string(p, d->n, pos, &d->scratch, &k, &kl, &pos, d->err, d->errlen)))
      return rc;
    lua_pushlstring(L, k, kl);
    pos = sr_json_skip_ws(p, d->n, pos);
    if (pos >= d->n || p[pos] != ':')
      return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n, "expected ':'");
    if ((rc = dec_value(d, pos + 1, &pos))) return rc;
    lua_rawset(L, -3);
    pos = sr_json_skip_ws(p, d->n, pos);
    if (pos < d->n && p[pos] == ',') {
      pos = sr_json_skip_ws(p, d->n, pos + 1);
      continue;
    }
    if (pos < d->n && p[pos] == '}') break;
    return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n, "expected ',' or '}'");
  }
  *end = pos + 1;
  d->depth--;
  return 0;
}

static int match(const uint8_t *p, size_t n, size_t pos, const char *w, size_t wl) {
  return pos + wl <= n && memcmp(p + pos, w, wl) == 0;
}

/* Decodes the value at pos (whitespace first), pushes it, *end after it. */
static int dec_value(dec_t *d, size_t pos, size_t *end) {
  lua_State *L = d->L;
  const uint8_t *p = d->p;
  size_t n = d->n;
  pos = sr_json_skip_ws(p, n, pos);
  if (pos >= n) return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, n, "expected a value");
  if (++d->elems > d->max_elems) {
    char what[80];
    snprintf(what, sizeof what, "too many elements (more than %zu)", d->max_elems);
    return sr_json_err_at(d->err, d->errlen, SR_EELEMENTS, pos, n, what);
  }
  uint8_t c = p[pos];
  switch (c) {
    case '"': {
      const char *s;
      size_t sl;
      int rc = sr_json_read_string(p, n, pos, &d->scratch, &s, &sl, end, d->err, d->errlen);
      if (rc) return rc;
      lua_pushlstring(L, s, sl);
      return 0;
    }
    case '{':
      return dec_object(d, pos, end);
    case '[':
      return dec_array(d, pos, end);
    case 't':
      if (!match(p, n, pos, "true", 4)) break;
      lua_pushboolean(L, 1);
      *end = pos + 4;
      return 0;
    case 'f':
      if (!match(p, n, pos, "false", 5)) break;
      lua_pushboolean(L, 0);
      *end = pos + 5;
      return 0;
    case 'n':
      if (!match(p, n, pos, "null", 4)) break;
      lua_pushlightuserdata(L, NULL);
      *end = pos + 4;
      return 0;
    case 'N':
      if (!match(p, n, pos, "NaN", 3)) break;
      /* fallthrough */
    case 'I':
      if (c == 'I' && !match(p, n, pos, "Infinity", 8)) break;
      /* fallthrough */
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9': {
      int is_int;
      int64_t iv;
      double dv;
      int rc = sr_json_read_number(p, n, pos, &is_int, &iv, &dv, end, d->err, d->errlen);
      if (rc) return rc;
      if (is_int) lua_pushinteger(L, (lua_Integer)iv);
      else lua_pushnumber(L, (lua_Number)dv);
      return 0;
    }
    default:
      break;
  }
  return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, n, "expected a value");
}

int lsr_json_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                    char *err, size_t errlen) {
  int top = lua_gettop(L);
  dec_t d;
  d.L = L;
  d.p = p;
  d.n = n;
  d.depth = 0;
  d.max_depth = lim && lim->max_depth > 0 ? lim->max_depth : SR_DECODE_DEFAULT_DEPTH;
  if (d.max_depth > SR_DECODE_MAX_DEPTH) d.max_depth = SR_DECODE_MAX_DEPTH;
  d.elems = 0;
  d.max_elems = lim && lim->max_elements > 0 ? lim->max_elements : SR_DECODE_DEFAULT_ELEMENTS;
  d.err = err;
  d.errlen = errlen;
  sr_buf_init(&d.scratch);
  if (!lua_checkstack(L, 8)) return sr_seterr(err, errlen, SR_ENOMEM, "out of Lua stack space");
  lsr_push_array_mt(L);
  d.mt = lua_gettop(L);
  size_t end;
  int rc = dec_value(&d, 0, &end);
  if (rc == 0) {
    end = sr_json_skip_ws(p, n, end);
    if (end < n) rc = sr_json_err_at(err, errlen, SR_ESYNTAX, end, n, "expected end of input");
  }
  if (rc == SR_ENOMEM && d.scratch.cap == 0) sr_seterr(err, errlen, rc, "out of memory");
  sr_buf_free(&d.scratch);
  if (rc) {
    lua_settop(L, top);
    return rc;
  }
  lua_replace(L, d.mt); /* value where the marker was */
  lua_settop(L, top + 1);
  return 0;
}

/* ---- bindings --------------------------------------------------------- */

static int fail3(lua_State *L, int rc, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushstring(L, sr_err_name(rc));
  return 3;
}

static int l_json_encode(lua_State *L) {
  char err[512];
  sr_buf_t b;
  luaL_checkany(L, 1);
  sr_buf_init(&b);
  int rc = lsr_json_encode(L, 1, &b, err, sizeof err);
  if (rc) {
    sr_buf_free(&b);
    return fail3(L, rc, err);
  }
  lua_pushlstring(L, (const char *)b.data, b.len); /* may raise on OOM: b leaks then */
  sr_buf_free(&b);
  return 1;
}

static int l_json_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_decode_limits_t lim = {0, 0};
  lim.max_depth = (int)luaL_optinteger(L, 2, SR_DECODE_DEFAULT_DEPTH);
  lim.max_elements = (size_t)luaL_optinteger(L, 3, SR_DECODE_DEFAULT_ELEMENTS);
  luaL_argcheck(L, lim.max_depth > 0, 2, "max_depth must be positive");
  luaL_argcheck(L, lim.max_elements > 0, 3, "max_elements must be positive");
  char err[256];
  int rc = lsr_json_decode(L, (const uint8_t *)s, n, &lim, err, sizeof err);
  if (rc) return fail3(L, rc, err);
  return 1;
}

static int l_json_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {
    lsr_push_array_mt(L);
    if (!lua_rawequal(L, -1, -2))
      return luaL_error(L, "json.array: the table already has a metatable");
    lua_settop(L, 1);
    return 1;
  }
  lsr_push_array_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_json_is_array(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && lsr_is_array_marked(L, 1));
  return 1;
}

static int l_base64_encode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_buf_t b;
  sr_buf_init(&b);
  if (sr_base64_encode(&b, (const uint8_t *)s, n)) return luaL_error(L, "out of memory");
  lua_pushlstring(L, b.data ? (const char *)b.data : "", b.len);
  sr_buf_free(&b);
  return 1;
}

static int l_base64_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_buf_t b;
  char err[128];
  sr_buf_init(&b);
  int rc = sr_base64_decode(&b, (const uint8_t *)s, n, err, sizeof err);
  if (rc) {
    sr_buf_free(&b);
    return fail3(L, rc, err);
  }
  lua_pushlstring(L, b.data ? (const char *)b.data : "", b.len);
  sr_buf_free(&b);
  return 1;
}

/* core.json_handshake_object(payload [, cap]) -> id | nil, msg, errname:
 * the Lua-free CONNECT scan the daemon thread uses, exposed for specs. */
static int l_json_handshake_object(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer cap = luaL_optinteger(L, 2, 1024);
  luaL_argcheck(L, cap > 0 && cap <= 65536, 2, "cap must be in 1..65536");
  char out[65536];
  char err[256];
  int rc = sr_json_handshake_object((const uint8_t *)s, n, out, (size_t)cap, err, sizeof err);
  if (rc < 0) return fail3(L, rc, err);
  lua_pushlstring(L, out, (size_t)rc);
  return 1;
}

void lsr_open_json(lua_State *L) {
  static const luaL_Reg fns[] = {{"json_encode", l_json_encode},
                                 {"json_decode", l_json_decode},
                                 {"json_array", l_json_array},
                                 {"json_is_array", l_json_is_array},
                                 {"base64_encode", l_base64_encode},
                                 {"base64_decode", l_base64_decode},
                                 {"json_handshake_object", l_json_handshake_object},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
  lsr_push_array_mt(L);
  lua_setfield(L, -2, "json_array_mt");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}
