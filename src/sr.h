/*
 * sr.h -- springrun's shared C definitions: the one error table (SR_E* codes,
 * sr_strerror, sr_err_name) and the Lua-free growable byte buffer used by every
 * codec. Module APIs live in their own headers (wire.h, json.h, ...).
 */
#ifndef SR_H
#define SR_H

#include <stddef.h>
#include <stdint.h>

#define SR_VERSION "0.1.0"

/* Default limits of decoding untrusted payloads (lsr_codec.h), here so that
 * the Lua-free daemon fills them into a listener's limits too. */
#define SR_DECODE_DEFAULT_DEPTH 200
#define SR_DECODE_DEFAULT_ELEMENTS 1000000

/* X(NAME, "message"): errors are negative ints, SR_E<NAME> = -(position).
 * Append new entries at the end; never renumber. */
#define SR_ERRNO_MAP(X)                                              \
  X(NOMEM, "out of memory")                                          \
  X(AGAIN, "more data needed")                                       \
  X(MAGIC, "invalid data or unsupported protocol (bad magic)")       \
  X(VERSION, "unsupported protocol version")                         \
  X(CHECKSUM, "header checksum mismatch")                            \
  X(TOOBIG, "message too large")                                     \
  X(TRUNCATED, "truncated message")                                  \
  X(ANNOTATION, "malformed annotation chunk")                        \
  X(MSGTYPE, "unexpected message type")                              \
  X(SERIALIZER, "unsupported serializer")                            \
  X(SYNTAX, "malformed payload")                                     \
  X(DEPTH, "nesting too deep")                                       \
  X(ELEMENTS, "too many elements")                                   \
  X(UTF8, "invalid UTF-8")                                           \
  X(TYPE, "value cannot be serialized")                              \
  X(CYCLE, "circular dependency")                                    \
  X(NOTFOUND, "not found")                                           \
  X(EXISTS, "already exists")                                        \
  X(INVAL, "invalid argument")                                       \
  X(IO, "input/output error")                                        \
  X(CLOSED, "connection closed")                                     \
  X(TIMEOUT, "timed out")                                            \
  X(LIMIT, "resource limit reached")                                 \
  X(TLS, "TLS failure")

enum sr_errno_e {
  SR_OK = 0,
  SR_E__BASE = 0,
#define SR_XX_ENUM(name, msg) SR_E##name##_,
  SR_ERRNO_MAP(SR_XX_ENUM)
#undef SR_XX_ENUM
  SR_E__COUNT
};
/* Public codes: SR_ENOMEM == -1, SR_EAGAIN == -2, ... */
enum sr_errcode_e {
#define SR_XX_DEFINE(name, msg) SR_E##name = -(int)SR_E##name##_,
  SR_ERRNO_MAP(SR_XX_DEFINE)
#undef SR_XX_DEFINE
  SR_E__LAST = 0
};

/* Human text for a code ("header checksum mismatch"); never NULL. */
const char *sr_strerror(int err);
/* Symbolic name for a code ("SR_ECHECKSUM"); never NULL. */
const char *sr_err_name(int err);

/* ---- byte buffer -------------------------------------------------------
 * Owns `data` (malloc'd, may be NULL while cap == 0). Not thread-safe.
 * All growing calls return 0 or SR_ENOMEM and leave the buffer unchanged
 * on failure. */
typedef struct sr_buf_s {
  uint8_t *data;
  size_t len;
  size_t cap;
} sr_buf_t;

void sr_buf_init(sr_buf_t *b);
void sr_buf_free(sr_buf_t *b);                    /* idempotent */
int sr_buf_reserve(sr_buf_t *b, size_t extra);    /* room for len+extra */
int sr_buf_append(sr_buf_t *b, const void *p, size_t n);
/* One byte: inline, as the parsers append digit by digit (a call per byte
 * was ~10 % of serpent's number decoding). */
static inline int sr_buf_putc(sr_buf_t *b, uint8_t c) {
  if (b->len == b->cap) {
    int rc = sr_buf_reserve(b, 1);
    if (rc) return rc;
  }
  b->data[b->len++] = c;
  return 0;
}
int sr_buf_puts(sr_buf_t *b, const char *s);
/* Remove the first n bytes (memmove); n <= len. */
void sr_buf_consume(sr_buf_t *b, size_t n);
/* Hand the storage to the caller (who must free() it) and reset b. */
uint8_t *sr_buf_steal(sr_buf_t *b, size_t *len);
/* Room for `extra` more bytes (0, or SR_ENOMEM with b unchanged): inline,
 * so that the codecs can check per value and then write at data + len. */
static inline int sr_buf_room(sr_buf_t *b, size_t extra) {
  return b->cap - b->len >= extra ? 0 : sr_buf_reserve(b, extra);
}

/* Writes a formatted message into err[errlen] when err != NULL; returns code. */
int sr_seterr(char *err, size_t errlen, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
