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
 * The walk over Lua values is lsr_encode.c's (shared with serpent); this file
 * gives JSON's texts, and decodes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lsr_codec.h"
#include "lsr_tbuild.h"
#include "payload.h"

/* Deepest nesting written. */
#define ENC_MAX_DEPTH 1000

/* ---- encoder: JSON's text for the shared walker (lsr_encode.c) -------- */

static int put_double(sr_buf_t *out, double v) {
  if (sr_buf_room(out, SR_JSON_DOUBLE_BUFSZ)) return SR_ENOMEM;
  out->len += sr_json_fmt_double(v, (char *)out->data + out->len);
  return 0;
}

static int put_string(sr_buf_t *out, const char *s, size_t n, size_t *bad) {
  return sr_json_put_string(out, (const uint8_t *)s, n, bad);
}

/* Pyro4's layout: Python's json.dumps separators ", " and ": ". No tuples:
 * tuple-marked tables are lists. */
const lsr_emitter_t lsr_json_emitter = {
    .name = "JSON",
    .max_depth = ENC_MAX_DEPTH,
    .null_ = LSR_TEXT("null"),
    .true_ = LSR_TEXT("true"),
    .false_ = LSR_TEXT("false"),
    .list_open = LSR_TEXT("["),
    .list_close = LSR_TEXT("]"),
    .item_sep = LSR_TEXT(", "),
    .key_sep = LSR_TEXT(": "),
    .binary_hint = " (send raw bytes with json.binary(s))",
    .put_double = put_double,
    .put_string = put_string,
};

int lsr_json_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen) {
  return lsr_encode(L, idx, &lsr_json_emitter, out, err, errlen);
}

/* ---- decoder ---------------------------------------------------------- */

typedef struct dec_s {
  lua_State *L;
  const uint8_t *p;
  size_t n;
  int depth, max_depth;
  size_t elems, max_elems;
  int mt;     /* stack slot of the array marker */
  int fields; /* lsr_json_decode_invoke: the slot of the first of its four values */
  int boxed;  /* the scratch buffer is a userdata's, at slot mt + 1 (dec_begin) */
  sr_buf_t *scratch;
  sr_buf_t local;
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
  d->depth++;
  return 0;
}

static int dec_no_stack(dec_t *d, size_t pos) {
  return sr_json_err_at(d->err, d->errlen, SR_ENOMEM, pos, d->n, "out of Lua stack space");
}

/* The items wait on the stack and the table is made at their count
 * (lsr_tbuild.h). */
static int dec_array(dec_t *d, size_t pos, size_t *end) {
  lua_State *L = d->L;
  const uint8_t *p = d->p;
  lsr_tbuild_t b;
  int rc;
  if ((rc = dec_enter(d, pos))) return rc;
  if (lsr_tb_begin(L, &b, 0, d->mt)) return dec_no_stack(d, pos);
  pos = sr_json_skip_ws(p, d->n, pos + 1);
  if (pos < d->n && p[pos] == ']') {
    lsr_tb_end(L, &b);
    *end = pos + 1;
    d->depth--;
    return 0;
  }
  for (;;) {
    if ((rc = dec_value(d, pos, &pos))) return rc;
    lsr_tb_added(L, &b);
    pos = sr_json_skip_ws(p, d->n, pos);
    if (pos < d->n && p[pos] == ',') {
      pos++;
      continue;
    }
    if (pos < d->n && p[pos] == ']') break;
    return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n, "expected ',' or ']'");
  }
  lsr_tb_end(L, &b);
  *end = pos + 1;
  d->depth--;
  return 0;
}

/* Decodes the map at pos. invoke == 0: pushes it as a table. invoke == 1
 * (the top-level map of an INVOKE, see lsr_json_decode_invoke): the values of
 * the four fields go to the stack slots d->fields + 0..3 (a repeated key: the
 * last one wins) and the others are decoded (checked, counted) and dropped. */
static int dec_map(dec_t *d, size_t pos, size_t *end, int invoke) {
  static const char *const keys[4] = { "object", "method", "params", "kwargs" };
  lua_State *L = d->L;
  const uint8_t *p = d->p;
  int rc;
  lsr_tbuild_t b;
  if ((rc = dec_enter(d, pos))) return rc;
  if (!invoke && lsr_tb_begin(L, &b, 1, 0)) return dec_no_stack(d, pos);
  pos = sr_json_skip_ws(p, d->n, pos + 1);
  if (pos < d->n && p[pos] == '}') {
    if (!invoke) lsr_tb_end(L, &b);
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
    if ((rc = sr_json_read_string(p, d->n, pos, d->scratch, &k, &kl, &pos, d->err, d->errlen)))
      return rc;
    int slot = -1;
    if (!invoke)
      lua_pushlstring(L, k, kl);
    else
      for (int i = 0; i < 4; i++)
        if (kl == 6 && memcmp(k, keys[i], 6) == 0) slot = i;
    pos = sr_json_skip_ws(p, d->n, pos);
    if (pos >= d->n || p[pos] != ':')
      return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n, "expected ':'");
    if ((rc = dec_value(d, pos + 1, &pos))) return rc;
    if (!invoke)
      lsr_tb_added(L, &b);
    else if (slot >= 0)
      lua_replace(L, d->fields + slot);
    else
      lua_pop(L, 1);
    pos = sr_json_skip_ws(p, d->n, pos);
    if (pos < d->n && p[pos] == ',') {
      pos = sr_json_skip_ws(p, d->n, pos + 1);
      continue;
    }
    if (pos < d->n && p[pos] == '}') break;
    return sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, pos, d->n, "expected ',' or '}'");
  }
  if (!invoke) lsr_tb_end(L, &b);
  *end = pos + 1;
  d->depth--;
  return 0;
}

/* Counts one more value against max_elements. */
static int dec_count(dec_t *d, size_t pos) {
  if (++d->elems <= d->max_elems) return 0;
  char what[80];
  snprintf(what, sizeof what, "too many elements (more than %zu)", d->max_elems);
  return sr_json_err_at(d->err, d->errlen, SR_EELEMENTS, pos, d->n, what);
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
  int rc = dec_count(d, pos);
  if (rc) return rc;
  uint8_t c = p[pos];
  switch (c) {
    case '"': {
      const char *s;
      size_t sl;
      rc = sr_json_read_string(p, n, pos, d->scratch, &s, &sl, end, d->err, d->errlen);
      if (rc) return rc;
      lua_pushlstring(L, s, sl);
      return 0;
    }
    case '{':
      return dec_map(d, pos, end, 0);
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

/* Sets up a decoder over p[0..n) and pushes the array marker (d->mt).
 * Returns 0, or SR_ENOMEM when the Lua stack cannot grow by `slots`. */
static int dec_begin(dec_t *d, lua_State *L, const uint8_t *p, size_t n,
                     const sr_decode_limits_t *lim, int slots, char *err, size_t errlen) {
  d->L = L;
  d->p = p;
  d->n = n;
  d->depth = 0;
  d->max_depth = lim && lim->max_depth > 0 ? lim->max_depth : SR_DECODE_DEFAULT_DEPTH;
  if (d->max_depth > SR_DECODE_MAX_DEPTH) d->max_depth = SR_DECODE_MAX_DEPTH;
  d->elems = 0;
  d->max_elems = lim && lim->max_elements > 0 ? lim->max_elements : SR_DECODE_DEFAULT_ELEMENTS;
  d->err = err;
  d->errlen = errlen;
  sr_buf_init(&d->local);
  d->scratch = &d->local;
  d->boxed = 0;
  if (!lua_checkstack(L, slots + 1)) return sr_seterr(err, errlen, SR_ENOMEM, "out of Lua stack space");
  lsr_push_array_mt(L);
  d->mt = lua_gettop(L);
  /* A string with escapes is copied into the scratch buffer: with a
   * backslash anywhere, the buffer is a userdata's on the stack, so a Lua
   * error (out of memory) raised while values are pushed cannot leak it.
   * Without one, as in most payloads, nothing is allocated for it. */
  if (memchr(p, '\\', n) != NULL) {
    d->scratch = lsr_push_buf(L);
    d->boxed = 1;
  }
  d->fields = lua_gettop(L) + 1;
  return 0;
}

/* Finishes a parse that stopped at `end` with rc: checks that only white
 * space follows, frees the scratch buffer, and on error restores the stack
 * to `top`. Returns the final code. */
static int dec_end(dec_t *d, int rc, size_t end, int top) {
  if (rc == 0) {
    end = sr_json_skip_ws(d->p, d->n, end);
    if (end < d->n)
      rc = sr_json_err_at(d->err, d->errlen, SR_ESYNTAX, end, d->n, "expected end of input");
  }
  if (rc == SR_ENOMEM && d->scratch->cap == 0) sr_seterr(d->err, d->errlen, rc, "out of memory");
  sr_buf_free(d->scratch);
  if (rc) lua_settop(d->L, top);
  return rc;
}

int lsr_json_decode_invoke(lua_State *L, const uint8_t *p, size_t n,
                           const sr_decode_limits_t *lim, char *err, size_t errlen) {
  size_t start = sr_json_skip_ws(p, n, 0);
  if (start >= n || p[start] != '{') return 1;
  int top = lua_gettop(L);
  dec_t d;
  int rc = dec_begin(&d, L, p, n, lim, 12, err, errlen);
  if (rc) return rc;
  for (int i = 0; i < 4; i++) lua_pushnil(L);
  size_t end = n;
  rc = dec_count(&d, start); /* the map itself, as dec_value counts it */
  if (rc == 0) rc = dec_map(&d, start, &end, 1);
  rc = dec_end(&d, rc, end, top);
  if (rc) return rc;
  lua_remove(L, d.mt); /* the four values from top + 1 */
  if (d.boxed) lua_remove(L, d.mt); /* the scratch buffer's userdata */
  return 0;
}

int lsr_json_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                    char *err, size_t errlen) {
  int top = lua_gettop(L);
  dec_t d;
  int rc = dec_begin(&d, L, p, n, lim, 8, err, errlen);
  if (rc) return rc;
  size_t end = 0;
  rc = dec_value(&d, 0, &end);
  rc = dec_end(&d, rc, end, top);
  if (rc) return rc;
  lua_replace(L, d.mt); /* value where the marker was */
  lua_settop(L, top + 1);
  return 0;
}

/* ---- bindings --------------------------------------------------------- */

static int l_json_encode(lua_State *L) { return lsr_codec_l_encode(L, &lsr_json_emitter); }

static int l_json_decode(lua_State *L) { return lsr_codec_l_decode(L, lsr_json_decode); }

static int l_json_array(lua_State *L) {
  return lsr_codec_l_mark(L, lsr_push_array_mt, NULL, "json.array");
}

static int l_json_is_array(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && lsr_is_array_marked(L, 1));
  return 1;
}

static int l_base64_encode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sr_buf_t *b = lsr_push_buf(L);
  if (sr_base64_encode(b, (const uint8_t *)s, n)) return luaL_error(L, "out of memory");
  lua_pushlstring(L, b->data ? (const char *)b->data : "", b->len);
  sr_buf_free(b);
  return 1;
}

static int l_base64_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char err[128];
  sr_buf_t *b = lsr_push_buf(L);
  int rc = sr_base64_decode(b, (const uint8_t *)s, n, err, sizeof err);
  if (rc) {
    sr_buf_free(b);
    return lsr_codec_fail(L, rc, err);
  }
  lua_pushlstring(L, b->data ? (const char *)b->data : "", b->len);
  sr_buf_free(b);
  return 1;
}

/* core.json_handshake_object(payload [, cap]) -> id | nil, msg, errname:
 * the Lua-free CONNECT scan the daemon thread uses, exposed for specs. */
static int l_json_handshake_object(lua_State *L) {
  return lsr_codec_l_handshake(L, sr_json_handshake_object);
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
