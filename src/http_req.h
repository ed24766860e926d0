/*
 * http_req.h -- the HTTP/1.1 request reader of the Hessian exporter's
 * listeners: http-parser (libhttp-parser) plus springrun's limits, Lua-free
 * and socket-free. daemon_http.c feeds it a connection's bytes as they
 * arrive and acts on what it returns; src/fuzz_http.c and the springrun.core
 * binding http_scan (fuzz corpus replay) drive the same code.
 *
 * It keeps only what a request needs: its path (the query string cut off)
 * and its body once the head said how long it is. Limits are checked before
 * anything is allocated: a head (request line and headers) longer than
 * max_head is refused with 431, a path longer than max_path 414, a body
 * (Content-Length, or chunks as they add up) past max_body 413; bytes that
 * are not HTTP 400. After a refusal the reader takes nothing more.
 */
#ifndef SR_HTTP_REQ_H
#define SR_HTTP_REQ_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#include "sr.h"

/* Longest path max_path may allow. */
#define SR_HREQ_PATH_CAP 1024

typedef struct sr_hreq_s {
  http_parser p;
  size_t max_head, max_path, max_body;
  size_t head_bytes; /* request line and headers of the current request */
  size_t path_len;
  int in_message;    /* between message begin and complete */
  int status;        /* a refusal (400, 413, 414, 431), with text; 0: none */
  int nomem;         /* a buffer could not grow */
  size_t taken;      /* bytes taken so far (the offset a refusal names) */
  char text[200];
  /* a request read whole (SR_HREQ_DONE), valid until the next feed: */
  int post;          /* its method is POST */
  int keep_alive;    /* the connection stays after it (HTTP/1.1 rules) */
  sr_buf_t body;
  char path[SR_HREQ_PATH_CAP + 1]; /* NUL-terminated */
} sr_hreq_t;

enum {
  SR_HREQ_MORE = 0,     /* every byte was taken, no request complete */
  SR_HREQ_DONE = 1,     /* a request is complete (feed the rest after it) */
  SR_HREQ_REFUSED = -1, /* status and text say why; take nothing more */
  SR_HREQ_NOMEM = -2
};

/* max_path is at most SR_HREQ_PATH_CAP. */
void sr_hreq_init(sr_hreq_t *h, size_t max_head, size_t max_path, size_t max_body);
void sr_hreq_free(sr_hreq_t *h); /* idempotent */

/* Reads p[0..n) on from where the last call stopped; *used: the bytes it
 * took (all of them unless a request completed or it was refused). */
int sr_hreq_feed(sr_hreq_t *h, const uint8_t *p, size_t n, size_t *used);

/* The completed request's method ("POST", "GET", ...). */
const char *sr_hreq_method(const sr_hreq_t *h);

/* Bytes of a request started and not complete (0: none started). */
size_t sr_hreq_pending(const sr_hreq_t *h);

#endif
