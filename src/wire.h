/*
 * wire.h -- the Pyro4 message codec (protocol 48), plain C: no Lua, no libuv.
 *
 *  off size field                      off size field
 *   0   4   magic "PYRO"                16   2   serializer id
 *   4   2   protocol version (48)       18   2   annotations length
 *   6   2   message type                20   2   reserved (0, ignored)
 *   8   2   flags                       22   2   checksum
 *  10   2   sequence number
 *  12   4   data length (int32 >= 0)    then annotations, then payload
 *
 * All integers big-endian. checksum = (type + 48 + data_len + ann_len +
 * serializer + flags + seq + 0x34E9) & 0xFFFF. Annotation chunk: 4-byte key,
 * uint16 length, value. See shared spec pyro4-wire.md (copied facts only).
 */
#ifndef SR_WIRE_H
#define SR_WIRE_H

#include "sr.h"

#define SR_WIRE_HEADER_SIZE 24
#define SR_WIRE_PROTOCOL 48
#define SR_WIRE_CHECKSUM_MAGIC 0x34E9
/* Default limit on data_len + ann_len (the caller may set any value up to
 * SR_WIRE_MAX_MESSAGE_CAP). */
#define SR_WIRE_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)
#define SR_WIRE_MAX_MESSAGE_CAP 0x7fffffffu

enum sr_msg_type_e {
  SR_MSG_CONNECT = 1,
  SR_MSG_CONNECTOK = 2,
  SR_MSG_CONNECTFAIL = 3,
  SR_MSG_INVOKE = 4,
  SR_MSG_RESULT = 5,
  SR_MSG_PING = 6
};

enum sr_msg_flag_e {
  SR_FLAG_EXCEPTION = 0x01,
  SR_FLAG_COMPRESSED = 0x02,
  SR_FLAG_ONEWAY = 0x04,
  SR_FLAG_BATCH = 0x08,
  SR_FLAG_META_ON_CONNECT = 0x10,
  SR_FLAG_ITEMSTREAMRESULT = 0x20,
  SR_FLAG_KEEPSERIALIZED = 0x40
};

enum sr_serializer_e {
  SR_SER_SERPENT = 1,
  SR_SER_JSON = 2,
  SR_SER_MARSHAL = 3,
  SR_SER_PICKLE = 4,
  SR_SER_DILL = 5,
  SR_SER_MSGPACK = 6,
  SR_SER_CLOUDPICKLE = 7,
  SR_SER_PING = 42
};

typedef struct sr_wire_header_s {
  uint16_t type;
  uint16_t flags;
  uint16_t seq;
  uint16_t serializer;
  uint16_t ann_len;
  uint16_t checksum; /* as read; encode computes it */
  uint32_t data_len;
} sr_wire_header_t;

/* One annotation: a view, value points into someone else's bytes. */
typedef struct sr_wire_ann_s {
  char key[4];
  uint16_t len;
  const uint8_t *value;
} sr_wire_ann_t;

/* A framed message: views into the buffer it was framed from. */
typedef struct sr_wire_msg_s {
  sr_wire_header_t h;
  const uint8_t *ann;  /* h.ann_len bytes */
  const uint8_t *data; /* h.data_len bytes */
} sr_wire_msg_t;

/* Checksum of the header fields (ignores h->checksum). */
uint16_t sr_wire_checksum(const sr_wire_header_t *h);

/* Writes 24 header bytes for h, computing the checksum. */
void sr_wire_header_encode(uint8_t out[SR_WIRE_HEADER_SIZE], const sr_wire_header_t *h);

/* The header of a message without annotations (what replies and requests
 * built in place behind their header need): sr_wire_header_encode of those
 * fields. data_len must be <= 0x7fffffff (the caller checks). */
void sr_wire_put_header(uint8_t out[SR_WIRE_HEADER_SIZE], uint16_t type, uint16_t flags,
                        uint16_t seq, uint16_t serializer, uint32_t data_len);

/* Decodes and validates 24 bytes at p: magic, version, checksum, data_len
 * sign, and data_len + ann_len <= max_message. Returns 0 or SR_EMAGIC,
 * SR_EVERSION, SR_ECHECKSUM, SR_ETOOBIG; err names the field and offset. */
int sr_wire_header_decode(const uint8_t *p, sr_wire_header_t *h, size_t max_message,
                          char *err, size_t errlen);

/* Frames one message at the start of buf[0..len). Returns the whole message
 * size (> 0) and fills msg (views into buf) when complete and valid; 0 when
 * more bytes are needed (*need, if not NULL, gets the total size known so far:
 * 24 before the header is complete); a negative SR_E* code on invalid input
 * (header errors above, SR_EANNOTATION for a malformed annotation chunk).
 * Never allocates. */
long sr_wire_frame(const uint8_t *buf, size_t len, size_t max_message, sr_wire_msg_t *msg,
                   size_t *need, char *err, size_t errlen);

/* Decodes exactly one complete message filling buf[0..len): as
 * sr_wire_frame, but an incomplete buffer is SR_ETRUNCATED ("truncated
 * message at offset <len>: ...") and bytes after the message are SR_EINVAL.
 * Returns len on success. Never allocates. */
long sr_wire_decode(const uint8_t *buf, size_t len, size_t max_message, sr_wire_msg_t *msg,
                    char *err, size_t errlen);

/* Iterates annotation chunks of ann[0..ann_len). *off starts at 0. Returns 1
 * and fills out, 0 at the end, SR_EANNOTATION when a chunk overruns. */
int sr_wire_ann_next(const uint8_t *ann, size_t ann_len, size_t *off, sr_wire_ann_t *out);

/* Appends a complete message (header, annotations, payload) to out. Returns
 * 0, SR_ENOMEM, or SR_ETOOBIG when data/annotations exceed the wire's fields. */
int sr_wire_encode(sr_buf_t *out, uint16_t type, uint16_t flags, uint16_t seq,
                   uint16_t serializer, const sr_wire_ann_t *anns, size_t nanns,
                   const uint8_t *data, size_t len);

/* ---- incremental framer over a byte stream -------------------------------
 * Owns one sr_buf_t. Usage: space()/commit() (or feed()) bytes in, next()
 * messages out. Bytes of a message returned by next() stay valid until the
 * following call to space()/feed()/next(). Buffer growth is bounded by the
 * validated header: nothing proportional to a claimed length is allocated
 * before the header passed the limit check. */
typedef struct sr_framer_s {
  sr_buf_t buf;
  size_t start;       /* first unconsumed byte in buf */
  size_t max_message; /* limit on data_len + ann_len */
} sr_framer_t;

void sr_framer_init(sr_framer_t *f, size_t max_message);
void sr_framer_free(sr_framer_t *f); /* idempotent */
/* Returns a pointer to at least `want` writable bytes (*got gets the actual
 * room), or NULL on SR_ENOMEM. */
uint8_t *sr_framer_space(sr_framer_t *f, size_t want, size_t *got);
void sr_framer_commit(sr_framer_t *f, size_t n);
int sr_framer_feed(sr_framer_t *f, const uint8_t *p, size_t n);
/* > 0: a message (size in bytes) in *msg; 0: need more; < 0: SR_E* error
 * (the stream is then unusable: close the connection). */
long sr_framer_next(sr_framer_t *f, sr_wire_msg_t *msg, char *err, size_t errlen);
/* Bytes buffered but not yet returned as messages. */
size_t sr_framer_pending(const sr_framer_t *f);

/* Inflates a COMPRESSED payload (zlib, RFC 1950) p[0..n) into out (reset
 * first), refusing more than `limit` bytes of output (a zlib bomb stops one
 * chunk past the limit). Returns 0, SR_ENOMEM, SR_ETOOBIG or SR_ESYNTAX
 * (invalid or truncated stream) with err set. */
int sr_wire_inflate(sr_buf_t *out, const uint8_t *p, size_t n, size_t limit, char *err,
                    size_t errlen);

#endif
