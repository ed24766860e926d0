/*
 * payload.h -- Lua-free helpers of the payload serializers that the daemon
 * thread needs (it never touches Lua): finding the object id in a CONNECT
 * handshake payload (json.c, serpent.c) and a string as a whole payload
 * (payload.c).
 */
#ifndef SR_PAYLOAD_H
#define SR_PAYLOAD_H

#include <stddef.h>

#include "sr.h"

/* Reads a CONNECT payload, a top-level map such as {"handshake": "hello",
 * "object": "example.test"} (JSON) or {'handshake':'hello','object':'x'}
 * (serpent, after its "# serpent ..." header line), and copies the string
 * value of key "object" into out[cap] NUL-terminated (escapes decoded).
 * Returns its length (>= 0); SR_ENOTFOUND when there is no "object" key
 * (a client with METADATA off); SR_ESYNTAX when the payload is malformed;
 * SR_ETOOBIG when the id does not fit in cap. err names the byte offset. */
int sr_json_handshake_object(const uint8_t *p, size_t n, char *out, size_t cap, char *err,
                             size_t errlen);
int sr_serpent_handshake_object(const uint8_t *p, size_t n, char *out, size_t cap,
                                char *err, size_t errlen);

/* Appends the string s[0..n) as a complete payload of serializer ser: 1
 * serpent (with its header line), 2 JSON (escaped by the codecs' own string
 * writers), 3 marshal. Bytes that are not UTF-8 become '?' (JSON, serpent).
 * Returns 0, SR_ENOMEM or SR_ESERIALIZER. */
int sr_payload_encode_string(sr_buf_t *out, int ser, const char *s, size_t n);

/* 1 when p[0..n) holds the bytes "__class__" (a payload that may carry a
 * class dict, {"__class__": ...}: see springrun.refs), else 0. The test the
 * client and the dispatch make on every payload before decoding it, so it
 * jumps from '_' to '_' with memchr instead of matching at every byte. */
int sr_payload_may_have_class(const uint8_t *p, size_t n);

#endif
