/* lsr_json.c -- placeholder until the JSON serializer lands. */
#include "lsr_codec.h"

int lsr_json_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen) {
  (void)L; (void)idx; (void)out;
  return sr_seterr(err, errlen, SR_ESERIALIZER, "json serializer is not implemented yet");
}

int lsr_json_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                    char *err, size_t errlen) {
  (void)L; (void)p; (void)n; (void)lim;
  return sr_seterr(err, errlen, SR_ESERIALIZER, "json serializer is not implemented yet");
}

int lsr_is_array_marked(lua_State *L, int idx) { (void)L; (void)idx; return 0; }

void lsr_open_json(lua_State *L) { (void)L; }
