/*
 * http_req.c -- the HTTP/1.1 request reader (http_req.h): http-parser's
 * callbacks keep the path and the body within the limits; a complete
 * request pauses the parser so the caller handles it before the bytes of
 * the next one (pipelining keeps request order).
 */
#include "http_req.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* A refusal, its text already in h->text: stops the parser. */
static int refuse(sr_hreq_t *h, int status) {
  h->status = status;
  return -1;
}

static int on_message_begin(http_parser *p) {
  sr_hreq_t *h = p->data;
  h->in_message = 1;
  h->head_bytes = 0;
  h->path_len = 0;
  if (h->body.cap > ((size_t)1 << 20)) sr_buf_free(&h->body); /* keep no huge buffer */
  h->body.len = 0;
  return 0;
}

static int count_head(sr_hreq_t *h, size_t n) {
  h->head_bytes += n;
  if (h->head_bytes <= h->max_head) return 0;
  snprintf(h->text, sizeof h->text, "request head longer than %zu bytes (max_header_size)",
           h->max_head);
  return refuse(h, 431);
}

static int on_url(http_parser *p, const char *at, size_t n) {
  sr_hreq_t *h = p->data;
  if (count_head(h, n)) return -1;
  if (n > h->max_path - h->path_len) {
    snprintf(h->text, sizeof h->text, "request path longer than %zu bytes", h->max_path);
    return refuse(h, 414);
  }
  memcpy(h->path + h->path_len, at, n);
  h->path_len += n;
  return 0;
}

static int on_header(http_parser *p, const char *at, size_t n) {
  (void)at;
  return count_head(p->data, n);
}

static int on_headers_complete(http_parser *p) {
  sr_hreq_t *h = p->data;
  /* ULLONG_MAX: no Content-Length (chunked, or no body) */
  if (p->content_length != ULLONG_MAX && p->content_length > h->max_body) {
    snprintf(h->text, sizeof h->text,
             "request body of %llu bytes is larger than %zu (max_message_size)",
             (unsigned long long)p->content_length, h->max_body);
    return refuse(h, 413);
  }
  if (p->content_length != ULLONG_MAX && p->content_length > 0 &&
      sr_buf_reserve(&h->body, (size_t)p->content_length + 1) < 0) {
    h->nomem = 1;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  sr_hreq_t *h = p->data;
  if (n > h->max_body - h->body.len) {
    snprintf(h->text, sizeof h->text, "request body larger than %zu bytes (max_message_size)",
             h->max_body);
    return refuse(h, 413);
  }
  if (sr_buf_append(&h->body, at, n) < 0) {
    h->nomem = 1;
    return -1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  sr_hreq_t *h = p->data;
  h->in_message = 0;
  h->post = p->method == HTTP_POST;
  h->keep_alive = http_should_keep_alive(p);
  h->path[h->path_len] = '\0';
  char *q = memchr(h->path, '?', h->path_len); /* the path without a query string */
  if (q) {
    *q = '\0';
    h->path_len = (size_t)(q - h->path);
  }
  http_parser_pause(p, 1); /* the caller handles this request first */
  return 0;
}

static const http_parser_settings settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_header_field = on_header,
  .on_header_value = on_header,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

void sr_hreq_init(sr_hreq_t *h, size_t max_head, size_t max_path, size_t max_body) {
  memset(h, 0, sizeof *h);
  http_parser_init(&h->p, HTTP_REQUEST);
  h->p.data = h;
  h->max_head = max_head;
  h->max_path = max_path < SR_HREQ_PATH_CAP ? max_path : SR_HREQ_PATH_CAP;
  h->max_body = max_body;
  sr_buf_init(&h->body);
}

void sr_hreq_free(sr_hreq_t *h) { sr_buf_free(&h->body); }

int sr_hreq_feed(sr_hreq_t *h, const uint8_t *p, size_t n, size_t *used) {
  *used = 0;
  if (h->status || h->nomem) return h->nomem ? SR_HREQ_NOMEM : SR_HREQ_REFUSED;
  if (HTTP_PARSER_ERRNO(&h->p) == HPE_PAUSED) http_parser_pause(&h->p, 0);
  if (n == 0) return SR_HREQ_MORE;
  *used = http_parser_execute(&h->p, &settings, (const char *)p, n);
  h->taken += *used;
  enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
  if (e == HPE_PAUSED) return SR_HREQ_DONE;
  if (e == HPE_OK) return SR_HREQ_MORE;
  if (h->nomem) return SR_HREQ_NOMEM;
  if (h->status == 0) { /* http-parser's own finding, not a limit of ours */
    h->status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
    snprintf(h->text, sizeof h->text, "malformed HTTP request: %s (%s) at byte %zu",
             http_errno_description(e), http_errno_name(e), h->taken);
  }
  return SR_HREQ_REFUSED;
}

const char *sr_hreq_method(const sr_hreq_t *h) {
  return http_method_str((enum http_method)h->p.method);
}

size_t sr_hreq_pending(const sr_hreq_t *h) {
  if (!h->in_message) return 0;
  return h->head_bytes + h->body.len + 1; /* at least 1: a request started */
}
