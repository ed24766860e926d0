/*
 * payload.h -- Lua-free helpers of the payload serializers that the daemon
 * daemon thread needs (it never touches Lua): finding the object id in a
 * CONNECT handshake payload. Implemented in json.c and serpent.c.
 */
#ifndef SR_PAYLOAD_H
#define SR_PAYLOAD_H

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

#endif
