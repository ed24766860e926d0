/*
 * daemon_http.c -- HTTP/1.1 on the daemon thread, for listeners opened with
 * SR_DAEMON_PROTO_HTTP (the Hessian exporter): what a connection's bytes
 * mean and what the daemon answers itself.
 *
 * Bytes read go through http-parser (libhttp-parser) as they arrive; the
 * connection keeps only what a request needs: its path, and its body once
 * the head said how long it is. Limits are checked before anything is
 * allocated: a head (request line and headers) longer than
 * SR_DAEMON_HTTP_MAX_HEAD gets 431, a path longer than SR_DAEMON_MAX_NAME
 * 414, a body (Content-Length, or chunks as they add up) past the
 * listener's max_message 413; bytes that are not HTTP get 400. Those
 * answers close the connection once what it is owed has been written. A
 * request for a path no service is registered at gets 404, a method other
 * than POST 405; the connection stays. A complete POST to a registered
 * path becomes an INVOKE event for the owner (serializer
 * SR_DAEMON_SER_HESSIAN, data = path then body, see daemon.h), in the
 * connection's next reply slot, so responses keep request order
 * (pipelining) whoever writes them. Keep-alive is HTTP/1.1's: a request
 * that asks for close (or an HTTP/1.0 one without keep-alive) is the
 * connection's last. The deadlines are the Pyro connections': the first
 * request must be complete within handshake_timeout, a started one within
 * send_deadline (daemon_conn.c's sweep).
 */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_int.h"

struct sr_http_s {
  http_parser p;
  sr_conn_t *c;
  size_t head_bytes;   /* request line and headers of the current request */
  size_t path_len;
  int in_message;      /* between message begin and complete */
  int refused;         /* an answer that closes was given: parse no more */
  sr_buf_t body;
  char path[SR_DAEMON_MAX_NAME + 1];
};

static const char *reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

/* Answers the current request with status and a text body in the next
 * reply slot; with close, the connection reads no more and is closed once
 * everything owed is written (the sweep, as after a half-close). */
static void answer(sr_http_t *h, int status, const char *text, int close) {
  sr_conn_t *c = h->c;
  char head[256];
  size_t tl = strlen(text);
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: %zu\r\n%s\r\n",
                    status, reason(status), tl + 1, close ? "Connection: close\r\n" : "");
  sr_reply_t *r = malloc(sizeof *r + (size_t)hl + tl + 1);
  if (r == NULL) {
    sr_dlog(c->d, LOG_ERROR, "out of memory answering %s; closing", c->peer);
    sr_conn_close_now(c);
    return;
  }
  memset(r, 0, sizeof *r);
  memcpy(r->data, head, (size_t)hl);
  memcpy(r->data + hl, text, tl);
  r->data[(size_t)hl + tl] = '\n';
  r->len = (size_t)hl + tl + 1;
  r->slot = c->next_slot++;
  if (close) {
    h->refused = 1;
    sr_http_last_request(c);
  }
  sr_conn_submit(c, r);
}

/* Refuses the request: logged with the peer and the limit, answered,
 * closed after. Returns -1 (stops the parser). */
static int refuse(sr_http_t *h, int status, const char *text) {
  sr_conn_t *c = h->c;
  sr_dlog(c->d, LOG_WARNING, "HTTP request from %s on %s refused (%d): %s", c->peer,
          c->lis ? c->lis->where : "?", status, text);
  answer(h, status, text, 1);
  return -1;
}

static int on_message_begin(http_parser *p) {
  sr_http_t *h = p->data;
  h->in_message = 1;
  h->head_bytes = 0;
  h->path_len = 0;
  h->body.len = 0;
  return 0;
}

static int count_head(sr_http_t *h, size_t n) {
  h->head_bytes += n;
  if (h->head_bytes <= SR_DAEMON_HTTP_MAX_HEAD) return 0;
  char text[160];
  snprintf(text, sizeof text, "request head longer than %u bytes (max_header_size)",
           (unsigned)SR_DAEMON_HTTP_MAX_HEAD);
  return refuse(h, 431, text);
}

static int on_url(http_parser *p, const char *at, size_t n) {
  sr_http_t *h = p->data;
  if (count_head(h, n)) return -1;
  if (h->path_len + n > SR_DAEMON_MAX_NAME) {
    char text[160];
    snprintf(text, sizeof text, "request path longer than %u bytes", (unsigned)SR_DAEMON_MAX_NAME);
    return refuse(h, 414, text);
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
  sr_http_t *h = p->data;
  size_t max = h->c->lis ? h->c->lis->lim.max_message : 0;
  char text[200];
  /* ULLONG_MAX: no Content-Length (chunked, or no body) */
  if (p->content_length != ULLONG_MAX && p->content_length > max) {
    snprintf(text, sizeof text, "request body of %llu bytes is larger than %zu (max_message_size)",
             (unsigned long long)p->content_length, max);
    return refuse(h, 413, text);
  }
  if (p->content_length != ULLONG_MAX && p->content_length > 0 &&
      sr_buf_reserve(&h->body, (size_t)p->content_length + 1) < 0) {
    sr_dlog(h->c->d, LOG_ERROR, "out of memory reading from %s; closing", h->c->peer);
    sr_conn_close_now(h->c);
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  sr_http_t *h = p->data;
  size_t max = h->c->lis ? h->c->lis->lim.max_message : 0;
  if (n > max - h->body.len || h->body.len > max) {
    char text[200];
    snprintf(text, sizeof text, "request body larger than %zu bytes (max_message_size)", max);
    return refuse(h, 413, text);
  }
  if (sr_buf_append(&h->body, at, n) < 0) {
    sr_dlog(h->c->d, LOG_ERROR, "out of memory reading from %s; closing", h->c->peer);
    sr_conn_close_now(h->c);
    return -1;
  }
  return 0;
}

static sr_obj_t *find_path(sr_listener_t *lis, const char *path) {
  for (sr_obj_t *o = lis ? lis->objs : NULL; o; o = o->next)
    if (strcmp(o->name, path) == 0) return o;
  return NULL;
}

static int on_message_complete(http_parser *p) {
  sr_http_t *h = p->data;
  sr_conn_t *c = h->c;
  h->in_message = 0;
  c->handshaken = 1; /* a complete request: handshake_timeout is met */
  int keep = http_should_keep_alive(p);
  /* the path without a query string */
  h->path[h->path_len] = '\0';
  char *q = memchr(h->path, '?', h->path_len);
  if (q) {
    *q = '\0';
    h->path_len = (size_t)(q - h->path);
  }
  char text[SR_DAEMON_MAX_NAME + 100];
  if (find_path(c->lis, h->path) == NULL) {
    snprintf(text, sizeof text, "no service at %s", h->path);
    answer(h, 404, text, !keep);
  } else if (p->method != HTTP_POST) {
    snprintf(text, sizeof text, "Hessian requires POST, got %s", http_method_str(p->method));
    answer(h, 405, text, !keep);
  } else {
    sr_proto_queue_invoke(c, 0, 0, SR_DAEMON_SER_HESSIAN, NULL, (const uint8_t *)h->path, h->path_len,
                          h->body.data, h->body.len);
    if (c->state == C_OPEN && !keep) sr_http_last_request(c);
  }
  if (h->body.cap > ((size_t)1 << 20)) sr_buf_free(&h->body); /* keep no huge buffer */
  h->body.len = 0;
  /* pause the parser: sr_http_conn_input checks back-pressure and closing
   * between requests */
  http_parser_pause(p, 1);
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

int sr_http_conn_init(sr_conn_t *c) {
  sr_http_t *h = calloc(1, sizeof *h);
  if (h == NULL) return SR_ENOMEM;
  http_parser_init(&h->p, HTTP_REQUEST);
  h->p.data = h;
  h->c = c;
  sr_buf_init(&h->body);
  c->http = h;
  return 0;
}

void sr_http_conn_free(sr_conn_t *c) {
  if (c->http == NULL) return;
  sr_buf_free(&c->http->body);
  free(c->http);
  c->http = NULL;
}

size_t sr_http_pending(const sr_conn_t *c) {
  const sr_http_t *h = c->http;
  if (h == NULL || !h->in_message) return 0;
  return h->head_bytes + h->body.len + 1; /* at least 1: a request started */
}

void sr_http_last_request(sr_conn_t *c) {
  c->peer_eof = 1; /* closed by the sweep once nothing is owed */
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  sr_sweep_soon(c->d);
}

/* Feeds p[0..n) to c's parser; returns how many requests completed. Stops
 * at a refusal (answered) or the connection's last request; bytes after
 * it are dropped. */
int sr_http_conn_input(sr_conn_t *c, const uint8_t *p, size_t n) {
  sr_http_t *h = c->http;
  int done = 0;
  if (c->refused && !h->refused) { /* over max_connections */
    char text[400];
    snprintf(text, sizeof text, "too many connections to %s (max_connections %u)",
             c->lis ? c->lis->where : "?", c->lis ? (unsigned)c->lis->lim.max_connections : 0u);
    refuse(h, 503, text);
    return 0;
  }
  while (n > 0 && c->state == C_OPEN && !h->refused && !c->peer_eof) {
    size_t used = http_parser_execute(&h->p, &settings, (const char *)p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
    if (e == HPE_PAUSED) {
      http_parser_pause(&h->p, 0);
      done++;
    } else if (e != HPE_OK) {
      if (c->state == C_OPEN && !h->refused) {
        char text[200];
        int status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
        snprintf(text, sizeof text, "malformed HTTP request: %s (%s) at byte %zu",
                 http_errno_description(e), http_errno_name(e), used);
        refuse(h, status, text);
      }
      return done;
    }
    p += used;
    n -= used;
    if (used == 0 && e == HPE_OK) break;
  }
  return done;
}
