/*
 * lsr_wire.c -- the Lua face of the Pyro4 wire codec (wire.c) in
 * springrun.core: wire_encode, wire_decode, the incremental framer userdata
 * and the protocol constants (MSG_*, FLAG_*, SER_*, WIRE_*).
 *
 * Error split (as liolib): misuse (wrong argument types, out-of-range header
 * fields, a closed framer) raises; bad bytes from the wire return
 * nil, message, name where name is the SR_E* symbol ("SR_ECHECKSUM") and the
 * message names the byte offset inside the message.
 *
 * A decoded message is a table:
 *   {type=, flags=, seq=, serializer=, data_len=, ann_len=, checksum=, size=,
 *    annotations = { {key, value}, ... } (wire order), ann = {KEY = value},
 *    data = string}
 */
#include "lsr.h"
#include "wire.h"
#include "daemon.h" /* SR_DAEMON_SER_HESSIAN */

#include <string.h>

#define LSR_FRAMER_MT "springrun.framer"

typedef struct lsr_framer_s {
  sr_framer_t f;
  int closed;
} lsr_framer_t;

/* A uint16 header field from argument i, raising when out of range. */
static uint16_t check_u16(lua_State *L, int i, const char *what) {
  lua_Integer v = luaL_checkinteger(L, i);
  if (v < 0 || v > 0xFFFF)
    return (uint16_t)luaL_argerror(
        L, i, lua_pushfstring(L, "%s must be 0..65535, got %I", what, (LUAI_UACINT)v));
  return (uint16_t)v;
}

/* Optional max_message at argument i (default SR_WIRE_DEFAULT_MAX_MESSAGE). */
static size_t opt_max_message(lua_State *L, int i) {
  if (lua_isnoneornil(L, i)) return SR_WIRE_DEFAULT_MAX_MESSAGE;
  lua_Integer v = luaL_checkinteger(L, i);
  if (v < 0 || (lua_Unsigned)v > SR_WIRE_MAX_MESSAGE_CAP)
    return (size_t)luaL_argerror(
        L, i,
        lua_pushfstring(L, "max_message must be 0..%I, got %I",
                        (LUAI_UACINT)SR_WIRE_MAX_MESSAGE_CAP, (LUAI_UACINT)v));
  return (size_t)v;
}

static int push_fail(lua_State *L, int code, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, sr_err_name(code));
  return 3;
}

void lsr_set_msg_head(lua_State *L, const sr_wire_header_t *h) {
  lua_pushinteger(L, h->type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, h->flags);
  lua_setfield(L, -2, "flags");
  lua_pushinteger(L, h->seq);
  lua_setfield(L, -2, "seq");
  lua_pushinteger(L, h->serializer);
  lua_setfield(L, -2, "serializer");
}

/* Pushes the message table for a framed (already validated) message. */
static void push_msg(lua_State *L, const sr_wire_msg_t *m, size_t size) {
  lua_createtable(L, 0, 12);
  lsr_set_msg_head(L, &m->h);
  lua_pushinteger(L, (lua_Integer)m->h.data_len);
  lua_setfield(L, -2, "data_len");
  lua_pushinteger(L, m->h.ann_len);
  lua_setfield(L, -2, "ann_len");
  lua_pushinteger(L, m->h.checksum);
  lua_setfield(L, -2, "checksum");
  lua_pushinteger(L, (lua_Integer)size);
  lua_setfield(L, -2, "size");

  lua_newtable(L); /* annotations */
  lua_newtable(L); /* ann */
  size_t off = 0;
  sr_wire_ann_t a;
  lua_Integer n = 0;
  while (sr_wire_ann_next(m->ann, m->h.ann_len, &off, &a) == 1) {
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, a.key, 4);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, (const char *)a.value, a.len);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -3, ++n);
    lua_pushlstring(L, a.key, 4);
    lua_pushlstring(L, (const char *)a.value, a.len);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -3, "ann");
  lua_setfield(L, -2, "annotations");

  lua_pushlstring(L, (const char *)m->data, m->h.data_len);
  lua_setfield(L, -2, "data");
}

/* core.wire_encode(type, flags, seq, serializer, data [, anns]) -> string
 * anns: array of {key (4 bytes), value (<= 65535 bytes)}, encoded in order. */
static int lsr_wire_encode(lua_State *L) {
  uint16_t type = check_u16(L, 1, "type");
  uint16_t flags = check_u16(L, 2, "flags");
  uint16_t seq = check_u16(L, 3, "seq");
  uint16_t ser = check_u16(L, 4, "serializer");
  size_t dlen;
  const char *data = luaL_checklstring(L, 5, &dlen);
  if (dlen > 0x7FFFFFFFu)
    return luaL_argerror(L, 5, "data longer than 2147483647 bytes (the wire's int32 limit)");
  size_t nanns = 0;
  if (!lua_isnoneornil(L, 6)) {
    luaL_checktype(L, 6, LUA_TTABLE);
    nanns = (size_t)luaL_len(L, 6);
    /* Each chunk takes at least 6 bytes of the uint16 annotations length. */
    if (nanns > 0xFFFFu / 6)
      return luaL_argerror(L, 6, "too many annotations for the 65535-byte annotations field");
  }
  lua_settop(L, 6);
  sr_wire_ann_t *anns = NULL;
  size_t ann_len = 0;
  if (nanns > 0) {
    anns = lua_newuserdatauv(L, nanns * sizeof *anns, 0); /* stack 7: freed by the GC */
    for (size_t i = 0; i < nanns; i++) {
      lua_rawgeti(L, 6, (lua_Integer)i + 1); /* the pair stays referenced by anns */
      if (!lua_istable(L, -1))
        return luaL_error(L, "wire_encode: anns[%d] must be a {key, value} pair, got %s",
                          (int)i + 1, luaL_typename(L, -1));
      size_t klen, vlen;
      lua_rawgeti(L, -1, 1);
      const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &klen) : NULL;
      if (key == NULL || klen != 4)
        return luaL_error(L, "wire_encode: anns[%d] key must be a 4-byte string", (int)i + 1);
      lua_rawgeti(L, -2, 2);
      const char *val = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
      if (val == NULL)
        return luaL_error(L, "wire_encode: anns[%d] (%s) value must be a string, got %s",
                          (int)i + 1, key, luaL_typename(L, -1));
      if (vlen > 0xFFFFu)
        return luaL_error(L, "wire_encode: anns[%d] (%s) value is %d bytes, limit 65535",
                          (int)i + 1, key, (int)vlen);
      ann_len += 6 + vlen;
      if (ann_len > 0xFFFFu)
        return luaL_error(L, "wire_encode: annotations total %d bytes, limit 65535",
                          (int)ann_len);
      memcpy(anns[i].key, key, 4);
      anns[i].len = (uint16_t)vlen;
      anns[i].value = (const uint8_t *)val; /* kept alive by the pair in anns */
      lua_pop(L, 3);
    }
  }
  size_t total = SR_WIRE_HEADER_SIZE + ann_len + dlen;
  luaL_Buffer lb;
  char *p = luaL_buffinitsize(L, &lb, total);
  /* A view over the Lua buffer with exactly the room needed: sr_wire_encode
   * reserves `total`, which fits, so it never reallocates this storage. */
  sr_buf_t view = {.data = (uint8_t *)p, .len = 0, .cap = total};
  int rc = sr_wire_encode(&view, type, flags, seq, ser, anns, nanns, (const uint8_t *)data, dlen);
  if (rc < 0 || view.data != (uint8_t *)p || view.len != total)
    return luaL_error(L, "wire_encode: %s", sr_strerror(rc < 0 ? rc : SR_ENOMEM));
  luaL_pushresultsize(&lb, total);
  return 1;
}

/* core.wire_decode(bytes [, max_message]) -> msg | nil, errmsg, errname
 * bytes must hold exactly one complete message. */
static int lsr_wire_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  size_t max = opt_max_message(L, 2);
  sr_wire_msg_t m;
  char err[256];
  long n = sr_wire_decode((const uint8_t *)s, len, max, &m, err, sizeof err);
  if (n < 0) return push_fail(L, (int)n, err);
  push_msg(L, &m, (size_t)n);
  return 1;
}

/* ---- framer userdata ------------------------------------------------------ */

static lsr_framer_t *check_framer(lua_State *L) {
  lsr_framer_t *fr = luaL_checkudata(L, 1, LSR_FRAMER_MT);
  if (fr->closed) luaL_error(L, "attempt to use a closed framer");
  return fr;
}

/* core.framer([max_message]) -> framer */
static int lsr_framer_new(lua_State *L) {
  size_t max = opt_max_message(L, 1);
  lsr_framer_t *fr = lua_newuserdatauv(L, sizeof *fr, 0);
  sr_framer_init(&fr->f, max);
  fr->closed = 0;
  luaL_setmetatable(L, LSR_FRAMER_MT);
  return 1;
}

/* f:feed(bytes) -> true | nil, errmsg, errname (out of memory) */
static int lsr_framer_feed(lua_State *L) {
  lsr_framer_t *fr = check_framer(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int rc = sr_framer_feed(&fr->f, (const uint8_t *)s, len);
  if (rc < 0) return push_fail(L, rc, sr_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* f:next() -> msg | nil (more bytes needed) | nil, errmsg, errname (the
 * stream is broken; every later call returns the same error). */
static int lsr_framer_next(lua_State *L) {
  lsr_framer_t *fr = check_framer(L);
  sr_wire_msg_t m;
  char err[256];
  long n = sr_framer_next(&fr->f, &m, err, sizeof err);
  if (n < 0) return push_fail(L, (int)n, err);
  if (n == 0) {
    lua_pushnil(L);
    return 1;
  }
  push_msg(L, &m, (size_t)n);
  return 1;
}

/* f:pending() -> number of buffered bytes not yet returned as messages */
static int lsr_framer_pending(lua_State *L) {
  lsr_framer_t *fr = check_framer(L);
  lua_pushinteger(L, (lua_Integer)sr_framer_pending(&fr->f));
  return 1;
}

/* f:close(), __gc and __close: frees the buffer; idempotent. */
static int lsr_framer_close(lua_State *L) {
  lsr_framer_t *fr = luaL_checkudata(L, 1, LSR_FRAMER_MT);
  if (!fr->closed) {
    sr_framer_free(&fr->f);
    fr->closed = 1;
  }
  return 0;
}

static int lsr_framer_tostring(lua_State *L) {
  lsr_framer_t *fr = luaL_checkudata(L, 1, LSR_FRAMER_MT);
  if (fr->closed)
    lua_pushliteral(L, "springrun.framer (closed)");
  else
    lua_pushfstring(L, "springrun.framer (%p)", (void *)fr);
  return 1;
}

static const luaL_Reg framer_methods[] = {{"feed", lsr_framer_feed},
                                          {"next", lsr_framer_next},
                                          {"pending", lsr_framer_pending},
                                          {"close", lsr_framer_close},
                                          {NULL, NULL}};

static const luaL_Reg framer_meta[] = {{"__gc", lsr_framer_close},
                                       {"__close", lsr_framer_close},
                                       {"__tostring", lsr_framer_tostring},
                                       {"__index", NULL},
                                       {NULL, NULL}};

static const luaL_Reg wire_funcs[] = {{"wire_encode", lsr_wire_encode},
                                      {"wire_decode", lsr_wire_decode},
                                      {"framer", lsr_framer_new},
                                      {NULL, NULL}};

static const struct {
  const char *name;
  lua_Integer value;
} wire_consts[] = {
    {"MSG_CONNECT", SR_MSG_CONNECT},
    {"MSG_CONNECTOK", SR_MSG_CONNECTOK},
    {"MSG_CONNECTFAIL", SR_MSG_CONNECTFAIL},
    {"MSG_INVOKE", SR_MSG_INVOKE},
    {"MSG_RESULT", SR_MSG_RESULT},
    {"MSG_PING", SR_MSG_PING},
    {"FLAG_EXCEPTION", SR_FLAG_EXCEPTION},
    {"FLAG_COMPRESSED", SR_FLAG_COMPRESSED},
    {"FLAG_ONEWAY", SR_FLAG_ONEWAY},
    {"FLAG_BATCH", SR_FLAG_BATCH},
    {"FLAG_META_ON_CONNECT", SR_FLAG_META_ON_CONNECT},
    {"FLAG_ITEMSTREAMRESULT", SR_FLAG_ITEMSTREAMRESULT},
    {"FLAG_KEEPSERIALIZED", SR_FLAG_KEEPSERIALIZED},
    {"SER_SERPENT", SR_SER_SERPENT},
    {"SER_JSON", SR_SER_JSON},
    {"SER_HESSIAN", SR_DAEMON_SER_HESSIAN}, /* a request of an HTTP (Hessian) listener */
    {"SER_MARSHAL", SR_SER_MARSHAL},
    {"SER_PICKLE", SR_SER_PICKLE},
    {"SER_DILL", SR_SER_DILL},
    {"SER_MSGPACK", SR_SER_MSGPACK},
    {"SER_CLOUDPICKLE", SR_SER_CLOUDPICKLE},
    {"SER_PING", SR_SER_PING},
    {"WIRE_HEADER_SIZE", SR_WIRE_HEADER_SIZE},
    {"WIRE_PROTOCOL", SR_WIRE_PROTOCOL},
    {"WIRE_DEFAULT_MAX_MESSAGE", SR_WIRE_DEFAULT_MAX_MESSAGE},
    {"WIRE_MAX_MESSAGE_CAP", SR_WIRE_MAX_MESSAGE_CAP},
};

void lsr_open_wire(lua_State *L) {
  if (luaL_newmetatable(L, LSR_FRAMER_MT)) {
    luaL_setfuncs(L, framer_meta, 0);
    luaL_newlib(L, framer_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, wire_funcs, 0);
  for (size_t i = 0; i < sizeof wire_consts / sizeof wire_consts[0]; i++) {
    lua_pushinteger(L, wire_consts[i].value);
    lua_setfield(L, -2, wire_consts[i].name);
  }
}
