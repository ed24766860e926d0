/*
 * lsr_payload.c -- picks the payload serializer for a Pyro4 serializer id.
 * Only JSON (2) and serpent (1) are spoken; every other id (marshal, pickle,
 * dill, msgpack, cloudpickle, unknown) is refused by name, so nothing from a
 * payload is ever evaluated as code.
 */
#include "lsr_codec.h"
#include "wire.h"

/* Registry keys of the sequence markers. */
static const char array_mt_key = 'A';
static const char tuple_mt_key = 'T';

static void push_marker(lua_State *L, const void *key, const char *name) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void lsr_push_array_mt(lua_State *L) { push_marker(L, &array_mt_key, "springrun.json.array"); }
void lsr_push_tuple_mt(lua_State *L) { push_marker(L, &tuple_mt_key, "springrun.serpent.tuple"); }

/* 1 array marker, 2 tuple marker, 0 neither. */
static int marker_of(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  int r = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
  if (lua_rawequal(L, -1, -2)) r = 1;
  lua_pop(L, 1);
  if (r == 0) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &tuple_mt_key);
    if (lua_rawequal(L, -1, -2)) r = 2;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return r;
}

int lsr_is_array_marked(lua_State *L, int idx) { return marker_of(L, idx) != 0; }
int lsr_is_tuple_marked(lua_State *L, int idx) { return marker_of(L, idx) == 2; }

static const char *ser_name(int ser) {
  switch (ser) {
    case SR_SER_SERPENT: return "serpent";
    case SR_SER_JSON: return "json";
    case SR_SER_MARSHAL: return "marshal";
    case SR_SER_PICKLE: return "pickle";
    case SR_SER_DILL: return "dill";
    case SR_SER_MSGPACK: return "msgpack";
    case SR_SER_CLOUDPICKLE: return "cloudpickle";
    default: return "unknown";
  }
}

static int refuse(int ser, char *err, size_t errlen) {
  return sr_seterr(err, errlen, SR_ESERIALIZER,
                   "message used serializer that is not accepted: %d (%s)", ser, ser_name(ser));
}

int lsr_payload_encode(lua_State *L, int ser, int idx, sr_buf_t *out, char *err, size_t errlen) {
  if (ser == SR_SER_JSON) return lsr_json_encode(L, idx, out, err, errlen);
  if (ser == SR_SER_SERPENT) return lsr_serpent_encode(L, idx, out, err, errlen);
  return refuse(ser, err, errlen);
}

int lsr_payload_decode(lua_State *L, int ser, const uint8_t *p, size_t n,
                       const sr_decode_limits_t *lim, char *err, size_t errlen) {
  if (ser == SR_SER_JSON) return lsr_json_decode(L, p, n, lim, err, errlen);
  if (ser == SR_SER_SERPENT) return lsr_serpent_decode(L, p, n, lim, err, errlen);
  return refuse(ser, err, errlen);
}
