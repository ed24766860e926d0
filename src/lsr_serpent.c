/*
 * lsr_serpent.c -- the serpent payload serializer (Pyro4 serializer id 1)
 * between the Lua stack and bytes, and its bindings in springrun.core:
 *   core.serpent_encode(v) -> bytes | nil, msg, errname
 *   core.serpent_decode(bytes [, max_depth [, max_elements]]) -> v | nil, msg, errname
 *   core.serpent_tuple(t) -> t marked as a tuple (new table when t is nil)
 *   core.serpent_is_tuple(t) -> bool;  core.serpent_tuple_mt (the marker)
 *   core.serpent_handshake_object(payload [, cap]) -> id | nil, msg, errname
 * The value mapping is the JSON codec's (lsr_json.c): same null, same array
 * marker and `n` holes, same refusals with the same path texts; serpent adds
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
#include "payload.h"
#include "serpent.h"


/* Deepest nesting written: Python's parser refuses more than 200 nested
 * brackets ("too many nested parentheses"), so deeper data could not be read
 * by a Python peer anyway. */
#define ENC_MAX_DEPTH 200

/* ---- encoder ---------------------------------------------------------- */

typedef struct enc_frame_s {
  const void *tbl;
  int by_key;        /* 1: inside a map at the string key on stack slot keyidx */
  int keyidx;
  lua_Integer index; /* inside a sequence at this (1-based) index */
} enc_frame_t;

typedef struct enc_s {
  lua_State *L;
  sr_buf_t *out;
  char *err;
  size_t errlen;
  int depth;
  enc_frame_t fr[ENC_MAX_DEPTH + 1];
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

/* Writes " at <path>" (e.g. " at [2].cb") for the current position, in the
 * JSON codec's form. */
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

/* A list "[a,b]" or, for a tuple, "(a,b)" / "(a,)" / "()". */
static int enc_seq(enc_t *e, int idx, lua_Integer len, int tuple) {
  lua_State *L = e->L;
  int rc;
  if (sr_buf_putc(e->out, tuple ? '(' : '[')) return SR_ENOMEM;
  enc_frame_t *f = &e->fr[e->depth++];
  f->by_key = 0;
  for (lua_Integer i = 1; i <= len; i++) {
    if (i > 1 && sr_buf_putc(e->out, ',')) return SR_ENOMEM;
    f->index = i;
    lua_rawgeti(L, idx, i);
    rc = enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
    if (rc) return rc;
  }
  e->depth--;
  if (tuple && len == 1 && sr_buf_putc(e->out, ',')) return SR_ENOMEM;
  return sr_buf_putc(e->out, tuple ? ')' : ']');
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
    if (!first && sr_buf_putc(e->out, ',')) return lua_pop(L, 2), SR_ENOMEM;
    first = 0;
    size_t kl, bad;
    const char *k = lua_tolstring(L, kidx, &kl);
    rc = sr_serpent_put_str(e->out, k, kl, &bad);
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
    if (sr_buf_putc(e->out, ':')) return lua_pop(L, 2), SR_ENOMEM;
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
  e->fr[e->depth].tbl = ptr;

  int tuple = lsr_is_tuple_marked(L, idx);
  if (tuple || lsr_is_array_marked(L, idx)) {
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
    return enc_seq(e, idx, has_n ? len : max, tuple);
  }

  lua_pushnil(L);
  if (!lua_next(L, idx)) return sr_buf_append(e->out, "{}", 2); /* empty, unmarked */
  if (lua_type(L, -2) == LUA_TSTRING) return enc_map(e, idx);
  if (!lua_isinteger(L, -2)) {
    int rc = enc_bad_key(e, -2, "cannot encode a table key that is not a string");
    lua_pop(L, 2);
    return rc;
  }
  /* list candidate: keys must be exactly 1..n */
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
  return enc_seq(e, idx, count, 0);
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  char what[96];
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return sr_buf_append(e->out, "None", 4);
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) ? sr_buf_append(e->out, "True", 4)
                                   : sr_buf_append(e->out, "False", 5);
    case LUA_TNUMBER: {
      if (lua_isinteger(L, idx)) {
        char num[24];
        size_t nl = sr_json_fmt_int((int64_t)lua_tointeger(L, idx), num);
        return sr_buf_append(e->out, num, nl);
      }
      return sr_serpent_put_float(e->out, (double)lua_tonumber(L, idx));
    }
    case LUA_TSTRING: {
      size_t sl, bad;
      const char *s = lua_tolstring(L, idx, &sl);
      int rc = sr_serpent_put_str(e->out, s, sl, &bad);
      if (rc == SR_EUTF8) {
        snprintf(what, sizeof what, "invalid UTF-8 at byte %zu of the string", bad + 1);
        return enc_fail_hint(e, SR_EUTF8, what, " (send raw bytes with serpent.binary(s))");
      }
      return rc;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return sr_buf_append(e->out, "None", 4);
      break;
    case LUA_TTABLE:
      return enc_table(e, idx);
    default:
      break;
  }
  snprintf(what, sizeof what, "cannot encode a %s value", luaL_typename(L, idx));
  return enc_fail(e, SR_ETYPE, what);
}

int lsr_serpent_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  enc_t *e = malloc(sizeof *e);
  if (e == NULL) return sr_seterr(err, errlen, SR_ENOMEM, "out of memory");
  e->L = L;
  e->out = out;
  e->err = err;
  e->errlen = errlen;
  e->depth = 0;
  int rc = sr_buf_append(out, SR_SERPENT_HEADER, sizeof SR_SERPENT_HEADER - 1);
  if (rc == 0) rc = enc_value(e, idx);
  if (rc == SR_ENOMEM) sr_seterr(err, errlen, rc, "out of memory while encoding serpent");
  free(e);
  lua_settop(L, top);
  return rc;
}

/* ---- decoder: a visitor of sr_serpent_parse that builds Lua values ----- */

typedef struct dec_s {
  lua_State *L;
  int mt; /* stack slot of the array marker */
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
static int d_room(dec_t *d, size_t off) {
  if (!lua_checkstack(d->L, 4))
    return sr_seterr(d->err, d->errlen, SR_ENOMEM, "serpent: out of Lua stack space at offset %zu",
                     off);
  return 0;
}
static int d_seq_begin(void *ud, sr_serpent_seq_t kind, size_t off) {
  dec_t *d = ud;
  (void)kind;
  int rc = d_room(d, off);
  if (rc) return rc;
  lua_newtable(d->L);
  lua_pushvalue(d->L, d->mt);
  lua_setmetatable(d->L, -2);
  return 0;
}
static int d_seq_item(void *ud, size_t index, size_t off) {
  (void)off;
  lua_rawseti(((dec_t *)ud)->L, -2, (lua_Integer)index);
  return 0;
}
static int d_seq_end(void *ud, sr_serpent_seq_t kind, size_t count, size_t off) {
  (void)count; (void)off;
  if (kind == SR_SERPENT_PAREN) { /* "(x)" is x */
    lua_State *L = ((dec_t *)ud)->L;
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
  }
  return 0;
}
static int d_dict_begin(void *ud, size_t off) {
  dec_t *d = ud;
  int rc = d_room(d, off);
  if (rc) return rc;
  lua_newtable(d->L);
  return 0;
}
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
  lua_rawset(L, -3);
  return 0;
}

/* Pyro4 rebuilds {'__class__':'float','value':'nan'} (and 'inf', '-inf')
 * as a float: do the same. */
static int d_dict_end(void *ud, size_t count, size_t off) {
  dec_t *d = ud;
  lua_State *L = d->L;
  (void)count;
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
  sr_buf_init(&d.scratch);
  if (!lua_checkstack(L, 4)) return sr_seterr(err, errlen, SR_ENOMEM, "out of Lua stack space");
  lua_pushcfunction(L, dec_protected);
  lua_pushlightuserdata(L, &d);
  int st = lua_pcall(L, 1, 1, 0);
  sr_buf_free(&d.scratch);
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

static int fail3(lua_State *L, int rc, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushstring(L, sr_err_name(rc));
  return 3;
}

static int l_serpent_encode(lua_State *L) {
  char err[512];
  sr_buf_t b;
  luaL_checkany(L, 1);
  sr_buf_init(&b);
  int rc = lsr_serpent_encode(L, 1, &b, err, sizeof err);
  if (rc) {
    sr_buf_free(&b);
    return fail3(L, rc, err);
  }
  lua_pushlstring(L, (const char *)b.data, b.len); /* may raise on OOM: b leaks then */
  sr_buf_free(&b);
  return 1;
}

static int l_serpent_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_decode_limits_t lim = {0, 0};
  lim.max_depth = (int)luaL_optinteger(L, 2, SR_DECODE_DEFAULT_DEPTH);
  lim.max_elements = (size_t)luaL_optinteger(L, 3, SR_DECODE_DEFAULT_ELEMENTS);
  luaL_argcheck(L, lim.max_depth > 0, 2, "max_depth must be positive");
  luaL_argcheck(L, lim.max_elements > 0, 3, "max_elements must be positive");
  char err[256];
  int rc = lsr_serpent_decode(L, (const uint8_t *)s, n, &lim, err, sizeof err);
  if (rc) return fail3(L, rc, err);
  return 1;
}

static int l_serpent_tuple(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {
    lsr_push_tuple_mt(L);
    if (lua_rawequal(L, -1, -2)) {
      lua_settop(L, 1);
      return 1;
    }
    lsr_push_array_mt(L); /* an array may become a tuple */
    if (!lua_rawequal(L, -1, -3))
      return luaL_error(L, "serpent.tuple: the table already has a metatable");
    lua_settop(L, 1);
  }
  lsr_push_tuple_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_serpent_is_tuple(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && lsr_is_tuple_marked(L, 1));
  return 1;
}

/* The Lua-free CONNECT scan the daemon thread uses, exposed for specs. */
static int l_serpent_handshake_object(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer cap = luaL_optinteger(L, 2, 1024);
  luaL_argcheck(L, cap > 0 && cap <= 65536, 2, "cap must be in 1..65536");
  char *out = malloc((size_t)cap);
  if (out == NULL) return luaL_error(L, "out of memory");
  char err[256];
  int rc = sr_serpent_handshake_object((const uint8_t *)s, n, out, (size_t)cap, err, sizeof err);
  if (rc < 0) {
    free(out);
    return fail3(L, rc, err);
  }
  lua_pushlstring(L, out, (size_t)rc); /* may raise on OOM: out leaks then */
  free(out);
  return 1;
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
