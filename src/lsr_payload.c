/*
 * lsr_payload.c -- picks the payload serializer for a Pyro4 serializer id.
 * Only JSON (2) and serpent (1) are spoken; every other id (marshal, pickle,
 * dill, msgpack, cloudpickle, unknown) is refused by name, so nothing from a
 * payload is ever evaluated as code.
 */
#include "lsr_codec.h"
#include "wire.h"

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
