/*
 * tls.h -- springrun's one TLS engine (OpenSSL), Lua-free and socket-free:
 * an SSL object over two memory BIOs. The caller moves bytes: ciphertext read
 * from the peer goes in with sr_tls_feed, plaintext comes out of sr_tls_read,
 * plaintext to send goes in with sr_tls_write and the ciphertext to put on
 * the wire comes out of sr_tls_take. The daemon thread (libuv), the
 * blocking C client (poll + send/recv) and the luv task path (through the
 * springrun.core binding in lsr_tls.c) all drive this same engine.
 *
 * Threads: a context (sr_tls_ctx_t) is immutable once made and may be shared
 * by threads (reference counted). A session (sr_tls_t) belongs to one thread
 * at a time: never call two functions on one session concurrently. OpenSSL's
 * error queue is per thread; every function here clears it first and turns
 * what it finds into the caller's err text.
 */
#ifndef SR_TLS_H
#define SR_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "sr.h"

typedef struct sr_tls_ctx_s sr_tls_ctx_t;
typedef struct sr_tls_s sr_tls_t;

typedef struct sr_tls_config_s {
  int server;           /* 1: accepts connections (needs certfile) */
  const char *certfile; /* PEM certificate (chain); server: required; client: for mutual TLS */
  const char *keyfile;  /* PEM private key; NULL: in certfile */
  const char *cafile;   /* PEM CA bundle (or a directory) to verify the peer; NULL: the
                           system's default store (client only) */
  int verify_peer;      /* server: require a client certificate and verify it against
                           cafile (mutual TLS); client: verify the server's certificate
                           chain and its name (default on; 0 only for tests) */
} sr_tls_config_t;

/* Makes a context from cfg (files are read now, so a missing or bad file is
 * reported here, naming it). TLS 1.2 minimum. Returns 0 with *out owning one
 * reference, or SR_EINVAL/SR_ETLS/SR_ENOMEM with err set. */
int sr_tls_ctx_new(sr_tls_ctx_t **out, const sr_tls_config_t *cfg, char *err, size_t errlen);

/* Reference counting (thread-safe): ref returns ctx; unref frees the last. */
sr_tls_ctx_t *sr_tls_ctx_ref(sr_tls_ctx_t *ctx);
void sr_tls_ctx_unref(sr_tls_ctx_t *ctx);
int sr_tls_ctx_is_server(const sr_tls_ctx_t *ctx);

/* A new session on ctx (it keeps a reference). servername (client only,
 * may be NULL): sent as SNI when it is a name, and checked against the
 * server certificate (DNS name or IP address SAN) when ctx verifies. A
 * client starts its handshake at the first sr_tls_handshake/read/write.
 * Returns 0, SR_ENOMEM or SR_ETLS (err set). */
int sr_tls_new(sr_tls_t **out, sr_tls_ctx_t *ctx, const char *servername, char *err,
               size_t errlen);
void sr_tls_free(sr_tls_t *t); /* NULL is fine */

/* Ciphertext received from the peer (copied in). Returns 0 or SR_ENOMEM. */
int sr_tls_feed(sr_tls_t *t, const uint8_t *p, size_t n);

/* Advances the handshake with what was fed. Returns 1 once it is complete,
 * 0 when more peer bytes are needed (send sr_tls_take's bytes first), or
 * SR_ETLS with err set ("TLS handshake failed: certificate verify failed
 * (...)"); the session is unusable then, but sr_tls_take may still hold an
 * alert worth sending. */
int sr_tls_handshake(sr_tls_t *t, char *err, size_t errlen);
int sr_tls_established(const sr_tls_t *t);

/* Plaintext out: copies at most cap bytes of decrypted data to dst and sets
 * *got (0: nothing more until more is fed). Drives the handshake too.
 * Returns 0, SR_ECLOSED when the peer closed the TLS session (close_notify),
 * or SR_ETLS with err set. Call it until *got == 0 to drain. */
int sr_tls_read(sr_tls_t *t, uint8_t *dst, size_t cap, size_t *got, char *err, size_t errlen);

/* Plaintext in: encrypts p[0..n) (the handshake must be complete); the
 * records wait for sr_tls_take. Returns 0, SR_ENOMEM or SR_ETLS. */
int sr_tls_write(sr_tls_t *t, const uint8_t *p, size_t n, char *err, size_t errlen);

/* Queues a close_notify alert (idempotent; nothing once failed). */
void sr_tls_close(sr_tls_t *t);

/* Bytes of ciphertext waiting to be sent. */
size_t sr_tls_pending(const sr_tls_t *t);

/* Moves all waiting ciphertext to the end of out. Returns 0 or SR_ENOMEM. */
int sr_tls_take(sr_tls_t *t, sr_buf_t *out);

/* Moves at most cap bytes of waiting ciphertext to dst; returns how many. */
size_t sr_tls_take_raw(sr_tls_t *t, uint8_t *dst, size_t cap);

/* The verified peer certificate's subject as text into out (empty when
 * there is none). */
void sr_tls_peer_subject(const sr_tls_t *t, char *out, size_t cap);

#endif
