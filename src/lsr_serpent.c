/* lsr_serpent.c -- placeholder: serpent is not written yet; refuses by name. */
#include "lsr_codec.h"

int lsr_serpent_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen) {
  (void)L; (void)idx; (void)out;
  return sr_seterr(err, errlen, SR_ESERIALIZER, "serpent serializer is not implemented yet");
}

int lsr_serpent_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                       char *err, size_t errlen) {
  (void)L; (void)p; (void)n; (void)lim;
  return sr_seterr(err, errlen, SR_ESERIALIZER, "serpent serializer is not implemented yet");
}

void lsr_open_serpent(lua_State *L) { (void)L; }
