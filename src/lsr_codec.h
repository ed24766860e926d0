/*
 * lsr_codec.h -- payload serializers between the Lua stack and bytes, for
 * the binding files. Each returns 0 or a negative SR_E* code with a message
 * in err (naming the byte offset for decode errors); on error nothing is
 * left pushed and `out` holds whatever was appended (the caller resets it).
 */
#ifndef SR_LSR_CODEC_H
#define SR_LSR_CODEC_H

#include "lsr.h"
#include "sr.h"

/* Limits applied while decoding untrusted payloads. */
typedef struct sr_decode_limits_s {
  int max_depth;       /* nesting of arrays/maps, default 200 */
  size_t max_elements; /* total values in one document, default 1,000,000 */
} sr_decode_limits_t;

#define SR_DECODE_DEFAULT_DEPTH 200
#define SR_DECODE_DEFAULT_ELEMENTS 1000000

/* JSON (Pyro4 serializer id 2): lsr_json.c */
int lsr_json_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen);
int lsr_json_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                    char *err, size_t errlen); /* pushes 1 value on success */

/* serpent (Pyro4 serializer id 1): lsr_serpent.c */
int lsr_serpent_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen);
int lsr_serpent_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                       char *err, size_t errlen);

/* Dispatch on the Pyro4 serializer id (lsr_payload.c); SR_ESERIALIZER for
 * ids springrun does not speak (pickle, marshal, ...), naming the id. */
int lsr_payload_encode(lua_State *L, int ser, int idx, sr_buf_t *out, char *err, size_t errlen);
int lsr_payload_decode(lua_State *L, int ser, const uint8_t *p, size_t n,
                       const sr_decode_limits_t *lim, char *err, size_t errlen);

/* Sequence markers shared by every codec (owned by lsr_payload.c, one per
 * Lua state): the array marker (springrun.json.array, decoded lists) and the
 * tuple marker (springrun.serpent.tuple). Both push the metatable. */
void lsr_push_array_mt(lua_State *L);
void lsr_push_tuple_mt(lua_State *L);
/* True when the table at idx carries either marker: encoders write it as a
 * list (a tuple is a list in JSON), so an empty marked table stays a list. */
int lsr_is_array_marked(lua_State *L, int idx);
/* True only for the tuple marker. */
int lsr_is_tuple_marked(lua_State *L, int idx);
/* Deepest nesting a caller may ask the decoders for: deeper input would
 * overflow the C stack of the recursive parsers. */
#define SR_DECODE_MAX_DEPTH 10000

#endif
