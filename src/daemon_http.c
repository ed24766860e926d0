/*
 * daemon_http.c -- HTTP/1.1 on the daemon thread, for listeners opened with
 * SR_DAEMON_PROTO_HTTP (the Hessian exporter): what a connection's bytes
 * mean and what the daemon answers itself.
 *
 * Bytes read (decrypted first when the listener has TLS: daemon_conn.c) go
 * through the connection's request reader (http_req.h: http-parser and the
 * limits) as they arrive: a head longer than SR_DAEMON_HTTP_MAX_HEAD gets
 * 431, a path longer than SR_DAEMON_MAX_NAME 414, a body past the
 * listener's max_message 413, bytes that are not HTTP 400. Those answers
 * close the connection once what it is owed has been written. A request
 * for a path no service is registered at gets 404, a method other than
 * POST 405; the connection stays. A complete POST to a registered path
 * becomes an INVOKE event for the owner (serializer SR_DAEMON_SER_HESSIAN,
 * data = path then body, see daemon.h), in the connection's next reply
 * slot, so responses keep request order (pipelining) whoever writes them.
 * Keep-alive is HTTP/1.1's: a request that asks for close (or an HTTP/1.0
 * one without keep-alive) is the connection's last. The deadlines are the
 * Pyro connections': the first request must be complete within
 * handshake_timeout, a started one within send_deadline (daemon_conn.c's
 * sweep).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_int.h"
#include "http_req.h"

_Static_assert(SR_DAEMON_MAX_NAME <= SR_HREQ_PATH_CAP, "request paths are object names");

struct sr_http_s {
  sr_hreq_t r;
  sr_conn_t *c;
  int refused; /* an answer that closes was given: read no more */
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
    sr_clog(c, LOG_ERROR, "out of memory answering %s; closing", c->peer);
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
 * closed after. */
static void refuse(sr_http_t *h, int status, const char *text) {
  sr_conn_t *c = h->c;
  sr_clog(c, LOG_WARNING, "HTTP request from %s on %s refused (%d): %s", c->peer,
          c->lis ? c->lis->where : "?", status, text);
  answer(h, status, text, 1);
}

static sr_obj_t *find_path(sr_listener_t *lis, const char *path) {
  for (sr_obj_t *o = lis ? lis->objs : NULL; o; o = o->next)
    if (strcmp(o->name, path) == 0) return o;
  return NULL;
}

/* A request read whole: answered here (404, 405) or handed to the owner. */
static void on_request(sr_http_t *h) {
  sr_conn_t *c = h->c;
  sr_hreq_t *r = &h->r;
  c->handshaken = 1; /* a complete request: handshake_timeout is met */
  char text[SR_DAEMON_MAX_NAME + 100];
  if (find_path(c->lis, r->path) == NULL) {
    snprintf(text, sizeof text, "no service at %s", r->path);
    answer(h, 404, text, !r->keep_alive);
  } else if (!r->post) {
    snprintf(text, sizeof text, "Hessian requires POST, got %s", sr_hreq_method(r));
    answer(h, 405, text, !r->keep_alive);
  } else {
    sr_proto_queue_invoke(c, 0, 0, SR_DAEMON_SER_HESSIAN, NULL, (const uint8_t *)r->path,
                          r->path_len, r->body.data, r->body.len);
    if (c->state == C_OPEN && !r->keep_alive) sr_http_last_request(c);
  }
}

int sr_http_conn_init(sr_conn_t *c) {
  sr_http_t *h = malloc(sizeof *h);
  if (h == NULL) return SR_ENOMEM;
  sr_hreq_init(&h->r, SR_DAEMON_HTTP_MAX_HEAD, SR_DAEMON_MAX_NAME,
               c->lis ? c->lis->lim.max_message : 0);
  h->c = c;
  h->refused = 0;
  c->http = h;
  return 0;
}

void sr_http_conn_free(sr_conn_t *c) {
  if (c->http == NULL) return;
  sr_hreq_free(&c->http->r);
  free(c->http);
  c->http = NULL;
}

size_t sr_http_pending(const sr_conn_t *c) { return c->http ? sr_hreq_pending(&c->http->r) : 0; }

void sr_http_last_request(sr_conn_t *c) {
  c->peer_eof = 1; /* closed by the sweep once nothing is owed */
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  sr_sweep_soon(c->d);
}

void sr_http_refuse(sr_conn_t *c, int status, const char *text) {
  if (c->http && !c->http->refused) refuse(c->http, status, text);
}

/* Feeds p[0..n) to c's request reader; returns how many requests
 * completed. Stops at a refusal (answered) or the connection's last
 * request; bytes after it are dropped. */
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
    size_t used = 0;
    int rc = sr_hreq_feed(&h->r, p, n, &used);
    p += used;
    n -= used;
    if (rc == SR_HREQ_DONE) {
      done++;
      on_request(h);
    } else if (rc == SR_HREQ_REFUSED) {
      refuse(h, h->r.status, h->r.text);
    } else if (rc == SR_HREQ_NOMEM) {
      sr_clog(c, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
      sr_conn_close_now(c);
    } else {
      break; /* all taken */
    }
  }
  return done;
}
