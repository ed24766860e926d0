/*
 * auth.h -- connection authentication with Pyro4's handshake (Lua-free; the
 * daemon thread uses it). A Pyro4 client sends a handshake value in
 * its CONNECT ({"handshake": <value>, "object": ...}; Proxy._pyroHandshake,
 * "hello" by default) and the daemon's validateHandshake accepts or refuses
 * it. springrun checks a fixed shared secret here, in C, on the daemon
 * thread: the handshake must be a string equal to the secret, compared in
 * constant time (SHA-256 digests compared with CRYPTO_memcmp).
 */
#ifndef SR_AUTH_H
#define SR_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "sr.h"

/* A secret, kept only as its SHA-256 digest. */
typedef struct sr_secret_s {
  uint8_t digest[32];
} sr_secret_t;

/* Sets s from the bytes p[0..n). */
void sr_secret_init(sr_secret_t *s, const void *p, size_t n);

/* 1 when p[0..n) is the secret, else 0; time independent of where they differ. */
int sr_secret_check(const sr_secret_t *s, const void *p, size_t n);

/* Finds the "handshake" value in a CONNECT payload of serializer ser (2 JSON,
 * 1 serpent). Returns 1 with the decoded string appended to out when it is a
 * string, 0 when it is present but not a string, SR_ENOTFOUND when the map
 * has no "handshake" key, SR_ESYNTAX/SR_EUTF8/SR_ESERIALIZER (err set) when
 * the payload cannot be read, SR_ENOMEM. */
int sr_handshake_value(int ser, const uint8_t *p, size_t n, sr_buf_t *out, char *err,
                       size_t errlen);

#endif
