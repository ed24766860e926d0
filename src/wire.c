/*
 * wire.c -- the Pyro4 message codec (protocol 48): the 24-byte header with
 * its checksum, annotation chunks, whole-message framing over a buffer, and
 * the incremental framer that cuts messages out of a byte stream. Plain C: no
 * Lua, no libuv. Everything here treats its input as untrusted: the header is
 * checked (magic, version, checksum, sign, limit) before any length it claims
 * is trusted, and framing never allocates; the framer's buffer only grows by
 * the bytes its caller actually feeds. Error texts name the byte offset
 * within the message (0 = first byte of the magic).
 */
#include "wire.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t rd32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* The caller's limit, clamped to what the wire can express at all. */
static size_t effective_max(size_t max_message) {
  return max_message > SR_WIRE_MAX_MESSAGE_CAP ? SR_WIRE_MAX_MESSAGE_CAP : max_message;
}

uint16_t sr_wire_checksum(const sr_wire_header_t *h) {
  uint32_t sum = (uint32_t)h->type + SR_WIRE_PROTOCOL + h->data_len + h->ann_len +
                 h->serializer + h->flags + h->seq + SR_WIRE_CHECKSUM_MAGIC;
  return (uint16_t)(sum & 0xFFFFu);
}

void sr_wire_header_encode(uint8_t out[SR_WIRE_HEADER_SIZE], const sr_wire_header_t *h) {
  memcpy(out, "PYRO", 4);
  wr16(out + 4, SR_WIRE_PROTOCOL);
  wr16(out + 6, h->type);
  wr16(out + 8, h->flags);
  wr16(out + 10, h->seq);
  wr32(out + 12, h->data_len);
  wr16(out + 16, h->serializer);
  wr16(out + 18, h->ann_len);
  wr16(out + 20, 0);
  wr16(out + 22, sr_wire_checksum(h));
}

/* Validation ladder in Pyro4's order: magic, version, checksum, then the
 * lengths. h is filled even on a length error (callers may log it). */
int sr_wire_header_decode(const uint8_t *p, sr_wire_header_t *h, size_t max_message,
                          char *err, size_t errlen) {
  if (memcmp(p, "PYRO", 4) != 0)
    return sr_seterr(err, errlen, SR_EMAGIC,
                     "bad magic at offset 0: got 0x%08x, expected 0x5059524f (\"PYRO\")",
                     (unsigned)rd32(p));
  uint16_t version = rd16(p + 4);
  if (version != SR_WIRE_PROTOCOL)
    return sr_seterr(err, errlen, SR_EVERSION,
                     "unsupported protocol version at offset 4: got %u, expected %u",
                     (unsigned)version, (unsigned)SR_WIRE_PROTOCOL);
  h->type = rd16(p + 6);
  h->flags = rd16(p + 8);
  h->seq = rd16(p + 10);
  h->data_len = rd32(p + 12);
  h->serializer = rd16(p + 16);
  h->ann_len = rd16(p + 18);
  h->checksum = rd16(p + 22);
  uint16_t expected = sr_wire_checksum(h);
  if (h->checksum != expected)
    return sr_seterr(err, errlen, SR_ECHECKSUM,
                     "header checksum mismatch at offset 22: got 0x%04x, expected 0x%04x",
                     (unsigned)h->checksum, (unsigned)expected);
  if (h->data_len & 0x80000000u)
    return sr_seterr(err, errlen, SR_ETOOBIG,
                     "negative data length at offset 12: 0x%08x has bit 31 set",
                     (unsigned)h->data_len);
  size_t max = effective_max(max_message);
  size_t total = (size_t)h->data_len + h->ann_len;
  if (total > max)
    return sr_seterr(err, errlen, SR_ETOOBIG,
                     "message too large at offset 12: data length %lu + annotations length "
                     "%u = %lu bytes, limit %lu",
                     (unsigned long)h->data_len, (unsigned)h->ann_len, (unsigned long)total,
                     (unsigned long)max);
  return 0;
}

int sr_wire_ann_next(const uint8_t *ann, size_t ann_len, size_t *off, sr_wire_ann_t *out) {
  size_t o = *off;
  if (o >= ann_len) return 0;
  if (ann_len - o < 6) return SR_EANNOTATION;
  uint16_t len = rd16(ann + o + 4);
  if ((size_t)len > ann_len - o - 6) return SR_EANNOTATION;
  memcpy(out->key, ann + o, 4);
  out->len = len;
  out->value = ann + o + 6;
  *off = o + 6 + len;
  return 1;
}

/* Walks every chunk; on a malformed one writes an error naming its offset in
 * the message (annotations start at offset 24). */
static int ann_validate(const uint8_t *ann, size_t ann_len, char *err, size_t errlen) {
  size_t off = 0;
  sr_wire_ann_t a;
  for (;;) {
    size_t at = off;
    int rc = sr_wire_ann_next(ann, ann_len, &off, &a);
    if (rc == 1) continue;
    if (rc == 0) return 0;
    size_t left = ann_len - at;
    if (left < 6)
      return sr_seterr(err, errlen, SR_EANNOTATION,
                       "malformed annotation chunk at offset %lu: %lu byte%s left, a chunk "
                       "header needs 6",
                       (unsigned long)(SR_WIRE_HEADER_SIZE + at), (unsigned long)left,
                       left == 1 ? "" : "s");
    size_t over = rd16(ann + at + 4) - (left - 6);
    return sr_seterr(err, errlen, SR_EANNOTATION,
                     "malformed annotation chunk at offset %lu: value length %u overruns the "
                     "annotations by %lu byte%s",
                     (unsigned long)(SR_WIRE_HEADER_SIZE + at), (unsigned)rd16(ann + at + 4),
                     (unsigned long)over, over == 1 ? "" : "s");
  }
}

long sr_wire_frame(const uint8_t *buf, size_t len, size_t max_message, sr_wire_msg_t *msg,
                   size_t *need, char *err, size_t errlen) {
  if (len < SR_WIRE_HEADER_SIZE) {
    if (need) *need = SR_WIRE_HEADER_SIZE;
    return 0;
  }
  sr_wire_header_t h;
  int rc = sr_wire_header_decode(buf, &h, max_message, err, errlen);
  if (rc < 0) return rc;
  size_t total = SR_WIRE_HEADER_SIZE + (size_t)h.ann_len + h.data_len;
  if (need) *need = total;
  if (len < total) return 0;
  const uint8_t *ann = buf + SR_WIRE_HEADER_SIZE;
  rc = ann_validate(ann, h.ann_len, err, errlen);
  if (rc < 0) return rc;
  msg->h = h;
  msg->ann = ann;
  msg->data = ann + h.ann_len;
  return (long)total;
}

long sr_wire_decode(const uint8_t *buf, size_t len, size_t max_message, sr_wire_msg_t *msg,
                    char *err, size_t errlen) {
  size_t need = 0;
  long n = sr_wire_frame(buf, len, max_message, msg, &need, err, errlen);
  if (n < 0) return n;
  if (n == 0)
    return sr_seterr(err, errlen, SR_ETRUNCATED,
                     "truncated message at offset %lu: %s needs %lu bytes, got %lu",
                     (unsigned long)len, need == SR_WIRE_HEADER_SIZE ? "header" : "message",
                     (unsigned long)need, (unsigned long)len);
  if ((size_t)n != len)
    return sr_seterr(err, errlen, SR_EINVAL,
                     "trailing bytes at offset %ld: %lu byte%s after a complete message", n,
                     (unsigned long)(len - (size_t)n), len - (size_t)n == 1 ? "" : "s");
  return n;
}

void sr_wire_put_header(uint8_t out[SR_WIRE_HEADER_SIZE], uint16_t type, uint16_t flags,
                        uint16_t seq, uint16_t serializer, uint32_t data_len) {
  sr_wire_header_t h = {.type = type, .flags = flags, .seq = seq, .serializer = serializer,
                        .data_len = data_len};
  sr_wire_header_encode(out, &h);
}

int sr_wire_encode(sr_buf_t *out, uint16_t type, uint16_t flags, uint16_t seq,
                   uint16_t serializer, const sr_wire_ann_t *anns, size_t nanns,
                   const uint8_t *data, size_t len) {
  size_t ann_len = 0;
  for (size_t i = 0; i < nanns; i++) {
    ann_len += 6 + (size_t)anns[i].len;
    if (ann_len > 0xFFFFu) return SR_ETOOBIG;
  }
  if (len > 0x7FFFFFFFu) return SR_ETOOBIG;
  int rc = sr_buf_reserve(out, SR_WIRE_HEADER_SIZE + ann_len + len);
  if (rc) return rc;
  sr_wire_header_t h = {.type = type,
                        .flags = flags,
                        .seq = seq,
                        .serializer = serializer,
                        .ann_len = (uint16_t)ann_len,
                        .checksum = 0,
                        .data_len = (uint32_t)len};
  uint8_t *p = out->data + out->len;
  sr_wire_header_encode(p, &h);
  p += SR_WIRE_HEADER_SIZE;
  for (size_t i = 0; i < nanns; i++) {
    memcpy(p, anns[i].key, 4);
    wr16(p + 4, anns[i].len);
    if (anns[i].len) memcpy(p + 6, anns[i].value, anns[i].len);
    p += 6 + anns[i].len;
  }
  if (len) memcpy(p, data, len);
  out->len += SR_WIRE_HEADER_SIZE + ann_len + len;
  return 0;
}

/* ---- incremental framer ------------------------------------------------- */

void sr_framer_init(sr_framer_t *f, size_t max_message) {
  sr_buf_init(&f->buf);
  f->start = 0;
  f->max_message = max_message;
}

void sr_framer_free(sr_framer_t *f) {
  sr_buf_free(&f->buf);
  f->start = 0;
}

/* Drops the bytes already returned as messages (invalidates their views). */
static void framer_compact(sr_framer_t *f) {
  if (f->start == 0) return;
  sr_buf_consume(&f->buf, f->start);
  f->start = 0;
}

uint8_t *sr_framer_space(sr_framer_t *f, size_t want, size_t *got) {
  if (want == 0) want = 1;
  if (f->buf.cap - f->buf.len < want) framer_compact(f);
  if (sr_buf_reserve(&f->buf, want) != 0) return NULL;
  if (got) *got = f->buf.cap - f->buf.len;
  return f->buf.data + f->buf.len;
}

void sr_framer_commit(sr_framer_t *f, size_t n) {
  if (n > f->buf.cap - f->buf.len) n = f->buf.cap - f->buf.len; /* caller bug: clamp */
  f->buf.len += n;
}

int sr_framer_feed(sr_framer_t *f, const uint8_t *p, size_t n) {
  if (n == 0) return 0;
  uint8_t *dst = sr_framer_space(f, n, NULL);
  if (dst == NULL) return SR_ENOMEM;
  memcpy(dst, p, n);
  f->buf.len += n;
  return 0;
}

/* Frames the next message from the unconsumed bytes. On success the message
 * is consumed (start advances) and its views point into the buffer; on 0
 * nothing changes; on error nothing is consumed, so every later call returns
 * the same error (the stream is broken). */
long sr_framer_next(sr_framer_t *f, sr_wire_msg_t *msg, char *err, size_t errlen) {
  if (f->start == f->buf.len) {
    f->start = 0;
    f->buf.len = 0;
    return 0;
  }
  long n = sr_wire_frame(f->buf.data + f->start, f->buf.len - f->start, f->max_message, msg,
                         NULL, err, errlen);
  if (n > 0) f->start += (size_t)n;
  return n;
}

size_t sr_framer_pending(const sr_framer_t *f) { return f->buf.len - f->start; }

int sr_wire_inflate(sr_buf_t *out, const uint8_t *p, size_t n, size_t limit, char *err,
                    size_t errlen) {
  z_stream zs;
  memset(&zs, 0, sizeof(zs));
  if (inflateInit(&zs) != Z_OK) return sr_seterr(err, errlen, SR_ENOMEM, "inflate: init failed");
  out->len = 0;
  zs.next_in = (Bytef *)p;
  zs.avail_in = (uInt)n;
  int rc = SR_OK;
  for (;;) {
    if (sr_buf_reserve(out, n * 2 + 1024) != 0) {
      rc = sr_seterr(err, errlen, SR_ENOMEM, "inflate: out of memory");
      break;
    }
    zs.next_out = out->data + out->len;
    zs.avail_out = (uInt)(out->cap - out->len);
    size_t before = zs.avail_out;
    int z = inflate(&zs, Z_NO_FLUSH);
    out->len += before - zs.avail_out;
    if (out->len > limit) {
      rc = sr_seterr(err, errlen, SR_ETOOBIG, "inflate: payload larger than %zu bytes", limit);
      break;
    }
    if (z == Z_STREAM_END) break;
    if (z != Z_OK && !(z == Z_BUF_ERROR && zs.avail_out == 0)) {
      rc = sr_seterr(err, errlen, SR_ESYNTAX, "inflate: invalid compressed payload at byte %lu",
                     (unsigned long)zs.total_in);
      break;
    }
    if (zs.avail_in == 0 && zs.avail_out != 0) {
      rc = sr_seterr(err, errlen, SR_ESYNTAX, "inflate: truncated compressed payload");
      break;
    }
  }
  inflateEnd(&zs);
  return rc;
}
