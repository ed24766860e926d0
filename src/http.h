/*
 * http.h -- the HTTP client: libcurl's multi-socket interface driven by a
 * libuv loop (luv's, in the process that runs Lua). Lua-free: the binding
 * (lsr_http.c) owns the Lua side. One sr_http_multi_t per loop holds the
 * curl multi handle (its connection cache gives keep-alive), one uv timer
 * (with an idle/check pair, see http.c's kick) and one uv_poll_t per socket
 * curl asks to watch; each request is an
 * sr_http_req_t with one curl easy handle.
 *
 * Events never reach the owner from inside a curl callback (curl forbids
 * calling curl_multi_* there): curl's write/header callbacks only append to
 * the request's buffers; after each curl_multi_socket_action the multi
 * collects finished transfers (req->finished) and then calls the owner's
 * ready_cb once, which may start, cancel or free requests.
 */
#ifndef SR_HTTP_H
#define SR_HTTP_H

#include <curl/curl.h>
#include <uv.h>

#include "sr.h"

typedef struct sr_http_multi_s sr_http_multi_t;
typedef struct sr_http_req_s sr_http_req_t;
typedef struct sr_http_sock_s sr_http_sock_t;
typedef struct sr_http_timer_s sr_http_timer_t;
typedef struct sr_http_kick_s sr_http_kick_t;

/* Called after curl made progress (data arrived or transfers finished). */
typedef void (*sr_http_ready_cb)(sr_http_multi_t *m, void *ud);

struct sr_http_multi_s {
  CURLM *cm;             /* NULL once closed */
  uv_loop_t *loop;
  sr_http_timer_t *timer; /* malloc'd; freed in its close callback */
  sr_http_kick_t *kick;   /* malloc'd, with its idle; freed in close callbacks */
  sr_http_sock_t *socks; /* sockets being polled (freed in close callbacks) */
  sr_http_req_t *reqs;   /* requests started and not yet forgotten */
  sr_http_ready_cb ready_cb;
  void *ud;
};

/* Options of one request; strings are borrowed until sr_http_req_start
 * returns, except body, which must stay valid until the request is done or
 * cancelled (the binding anchors the Lua string). */
typedef struct sr_http_opts_s {
  const char *method; /* "GET", "POST", "PUT", "DELETE", "HEAD", ... */
  const char *url;
  const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
  const char *body;           /* request body or NULL */
  size_t body_len;
  long connect_timeout_ms; /* 0: curl's default (300 s) */
  long timeout_ms;         /* whole transfer; 0: none */
  size_t max_size;         /* body kept in memory (not in stream mode) */
  int stream;              /* keep nothing: data waits in req->data for the owner */
  const char *cafile;      /* CA bundle file, or NULL (system store) */
  const char *capath;      /* CA directory, or NULL */
  const char *certfile, *keyfile; /* client certificate (PEM), or NULL */
  int verify;              /* check the server's certificate and name */
} sr_http_opts_t;

struct sr_http_req_s {
  CURL *easy; /* NULL when not in flight */
  sr_http_multi_t *m;
  sr_http_req_t *prev, *next; /* in m->reqs while linked */
  int linked;
  struct curl_slist *headers;
  sr_buf_t data;  /* the body (or, streaming, bytes not yet taken by the owner) */
  sr_buf_t head;  /* header lines of the last response */
  size_t max_size;
  int stream;
  int too_large;  /* the body passed max_size: the transfer was stopped */
  int nomem;      /* a buffer could not grow: the transfer was stopped */
  int finished;   /* the transfer ended: result, status, os_errno are set */
  CURLcode result;
  long status;
  long os_errno;
  char errbuf[CURL_ERROR_SIZE];
};

/* Initialises m on loop (curl_global_init must have run). Returns 0 or
 * SR_ENOMEM. */
int sr_http_multi_init(sr_http_multi_t *m, uv_loop_t *loop, sr_http_ready_cb cb, void *ud);

/* Cancels every request still linked, cleans the multi up and closes its
 * handles (their memory is freed by the loop's close callbacks). Idempotent. */
void sr_http_multi_close(sr_http_multi_t *m);

/* Prepares req (zeroed by the caller) and adds it to m. Returns 0, or
 * SR_ENOMEM / SR_EINVAL with err filled (req then holds nothing). */
int sr_http_req_start(sr_http_multi_t *m, sr_http_req_t *req, const sr_http_opts_t *o, char *err,
                      size_t errlen);

/* Removes req from its multi (stopping the transfer if it runs) and frees
 * what it holds; the struct itself stays the caller's. Idempotent. Must not
 * be called from curl's callbacks (ready_cb is fine). */
void sr_http_req_free(sr_http_req_t *req);

/* Unlinks a finished request from m->reqs (the owner took its result). */
void sr_http_req_forget(sr_http_req_t *req);

/* The symbolic name of a curl code ("CURLE_COULDNT_CONNECT"); never NULL. */
const char *sr_http_code_name(CURLcode c);

#endif
