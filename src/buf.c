/*
 * buf.c -- the growable byte buffer (sr_buf_t) under every codec, and the
 * error table's text. Plain C: no Lua, no libuv. The buffer owns its storage;
 * growth doubles the capacity so appends are amortised O(1).
 */
#include "sr.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const sr_err_msgs[] = {
#define SR_XX_MSG(name, msg) msg,
    SR_ERRNO_MAP(SR_XX_MSG)
#undef SR_XX_MSG
};
static const char *const sr_err_names[] = {
#define SR_XX_NAME(name, msg) "SR_E" #name,
    SR_ERRNO_MAP(SR_XX_NAME)
#undef SR_XX_NAME
};

const char *sr_strerror(int err) {
  if (err == 0) return "success";
  if (err < 0 && -err < SR_E__COUNT) return sr_err_msgs[-err - 1];
  return "unknown error";
}

const char *sr_err_name(int err) {
  if (err == 0) return "SR_OK";
  if (err < 0 && -err < SR_E__COUNT) return sr_err_names[-err - 1];
  return "SR_EUNKNOWN";
}

int sr_seterr(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

void sr_buf_init(sr_buf_t *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void sr_buf_free(sr_buf_t *b) {
  free(b->data);
  sr_buf_init(b);
}

int sr_buf_reserve(sr_buf_t *b, size_t extra) {
  if (extra > SIZE_MAX - b->len) return SR_ENOMEM;
  size_t need = b->len + extra;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *p = realloc(b->data, cap);
  if (p == NULL) return SR_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int sr_buf_append(sr_buf_t *b, const void *p, size_t n) {
  if (n == 0) return 0;
  int rc = sr_buf_reserve(b, n);
  if (rc) return rc;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int sr_buf_puts(sr_buf_t *b, const char *s) { return sr_buf_append(b, s, strlen(s)); }

void sr_buf_consume(sr_buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

uint8_t *sr_buf_steal(sr_buf_t *b, size_t *len) {
  uint8_t *p = b->data;
  if (len) *len = b->len;
  sr_buf_init(b);
  return p;
}
