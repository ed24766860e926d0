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

/* defaults: SR_DECODE_DEFAULT_DEPTH, SR_DECODE_DEFAULT_ELEMENTS (sr.h) */

/* JSON (Pyro4 serializer id 2): lsr_json.c */
int lsr_json_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen);
int lsr_json_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                    char *err, size_t errlen); /* pushes 1 value on success */
/* An INVOKE payload that is a JSON object: pushes its "object", "method",
 * "params" and "kwargs" values (nil where absent) without building the map;
 * 0, or 1 with nothing pushed when the text is not an object (use
 * lsr_json_decode then), or the code and error lsr_json_decode would give. */
int lsr_json_decode_invoke(lua_State *L, const uint8_t *p, size_t n,
                           const sr_decode_limits_t *lim, char *err, size_t errlen);

/* serpent (Pyro4 serializer id 1): lsr_serpent.c */
int lsr_serpent_encode(lua_State *L, int idx, sr_buf_t *out, char *err, size_t errlen);
int lsr_serpent_decode(lua_State *L, const uint8_t *p, size_t n, const sr_decode_limits_t *lim,
                       char *err, size_t errlen);

/* The Lua-value walker under both encoders (lsr_encode.c). It owns what
 * the formats share: which Lua values and tables encode and as what (null,
 * list, tuple, map; the array marker and its `n`), the refusals and their
 * texts with the path of the offending value (" at [2].cb"), the cycle and
 * depth checks, integers (the same digits in JSON and Python) and the map
 * braces. An emitter supplies only the format's own text: fixed texts as
 * data, floats and strings through its two writers. */
typedef struct lsr_text_s {
  const char *s;
  size_t n;
} lsr_text_t;
#define LSR_TEXT(lit) {lit, sizeof lit - 1}

typedef struct lsr_emitter_s {
  const char *name;       /* in "out of memory while encoding <name>" */
  int max_depth;          /* deepest nesting written (SR_EDEPTH beyond) */
  lsr_text_t header;      /* written before the value (may be empty) */
  lsr_text_t null_, true_, false_;
  lsr_text_t list_open, list_close;
  /* tuple_open.s NULL: the format has no tuples, tuple-marked tables are
   * lists; tuple_close_one closes a tuple of one item ("(1,)") */
  lsr_text_t tuple_open, tuple_close, tuple_close_one;
  lsr_text_t item_sep;    /* between list items and between map pairs */
  lsr_text_t key_sep;     /* between a map key and its value */
  const char *binary_hint; /* appended to the invalid UTF-8 string error */
  int (*put_double)(sr_buf_t *out, double v);
  /* SR_EUTF8 with *bad = 0-based offset of the first invalid byte */
  int (*put_string)(sr_buf_t *out, const char *s, size_t n, size_t *bad);
} lsr_emitter_t;

/* The JSON payload format (lsr_json.c): Python's separators, depth 1000. */
extern const lsr_emitter_t lsr_json_emitter;

/* Appends the value at idx to out in em's format. Returns 0 or a negative
 * SR_E* code with the message in err; leaves the Lua stack as it found it;
 * allocates nothing unless nesting exceeds 32 levels (frames, freed). */
/* core.encode_set_refs(t) (lsr_encode.c): tables that encode as another */
int lsr_l_encode_set_refs(lua_State *L);

int lsr_encode(lua_State *L, int idx, const lsr_emitter_t *em, sr_buf_t *out, char *err,
               size_t errlen);

/* lsr_encode for a part of a larger value written piecewise: the value at
 * idx as if it stood at the key held by stack slot keyidx of an enclosing
 * map and, with index > 0, at that index of the list there ("params",
 * 2: depth counts two levels more, errors say " at params[2]..."). No
 * header is written. */
int lsr_encode_in(lua_State *L, int idx, const lsr_emitter_t *em, sr_buf_t *out, char *err,
                  size_t errlen, int keyidx, lua_Integer index);

/* Shared binding bodies (lsr_encode.c). lsr_codec_fail pushes nil, err and
 * the SR_E* name (the fail tuple) and returns 3. lsr_codec_l_encode is
 * core.<fmt>_encode(v) -> bytes | fail; lsr_codec_l_decode is
 * core.<fmt>_decode(bytes [, max_depth [, max_elements]]) -> v | fail;
 * lsr_codec_l_handshake is core.<fmt>_handshake_object(payload [, cap]). */
typedef int (*lsr_decode_fn)(lua_State *L, const uint8_t *p, size_t n,
                             const sr_decode_limits_t *lim, char *err, size_t errlen);
typedef int (*lsr_handshake_fn)(const uint8_t *p, size_t n, char *out, size_t cap, char *err,
                                size_t errlen);
int lsr_codec_fail(lua_State *L, int rc, const char *err);
int lsr_codec_l_encode(lua_State *L, const lsr_emitter_t *em);
int lsr_codec_l_decode(lua_State *L, lsr_decode_fn decode);
int lsr_codec_l_handshake(lua_State *L, lsr_handshake_fn scan);
/* core.json_array(t) / core.serpent_tuple(t): puts the marker push_mt
 * pushes on t (a new table when t is nil) and returns t. A t that already
 * has it is returned as is, one marked by `convert` (NULL: none) is
 * re-marked; any other metatable raises "<who>: the table already has a
 * metatable". */
int lsr_codec_l_mark(lua_State *L, void (*push_mt)(lua_State *L), void (*convert)(lua_State *L),
                     const char *who);

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

/* lsr_hessian.c: the exporter's halves of the codec. decode_call pushes
 * the method name and the argument list of the call in p[0..n) (0, or an
 * SR_E* code with err set and nothing pushed); put_reply appends to out a
 * Hessian 2 reply carrying the value at idx, or with fault a fault built
 * from the exception dict at idx (code, message, Java exception). */
int lsr_hessian_decode_call(lua_State *L, const uint8_t *p, size_t n,
                            const sr_decode_limits_t *lim, char *err, size_t errlen);
int lsr_hessian_put_reply(lua_State *L, int idx, int fault, sr_buf_t *out, char *err,
                          size_t errlen);

#endif
