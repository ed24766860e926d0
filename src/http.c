/*
 * http.c -- libcurl's multi-socket interface on a libuv loop (see http.h).
 * curl tells us which sockets to watch (socket_cb) and when to wake it up
 * (timer_cb); libuv's poll and timer callbacks hand the readiness back with
 * curl_multi_socket_action, after which finished transfers are collected
 * and the owner is told (ready_cb). Handles are freed only in libuv close
 * callbacks; their `data` field stays NULL (luv's loop finalizer closes
 * every handle it finds and reads `data` as its own: NULL makes it skip
 * them).
 */
#include "http.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sr_http_sock_s {
  uv_poll_t poll; /* first: the handle pointer is the struct pointer */
  curl_socket_t fd;
  sr_http_multi_t *m;
  sr_http_sock_t *prev, *next; /* in m->socks */
};

static void free_handle_cb(uv_handle_t *h) { free(h); }

static void sock_close(sr_http_multi_t *m, sr_http_sock_t *s) {
  if (s->prev) s->prev->next = s->next; else m->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, free_handle_cb);
}

/* Moves finished transfers out of curl: each request's result is stored,
 * its easy handle removed and cleaned up (the connection stays in the
 * multi's cache for the next request to the same host). */
static void collect(sr_http_multi_t *m) {
  CURLMsg *msg;
  int left;
  while (m->cm && (msg = curl_multi_info_read(m->cm, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *e = msg->easy_handle;
    CURLcode rc = msg->data.result;
    sr_http_req_t *req = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&req);
    if (req == NULL || req->easy != e) continue;
    req->result = rc;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &req->status);
    curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &req->os_errno);
    curl_multi_remove_handle(m->cm, e);
    curl_easy_cleanup(e);
    req->easy = NULL;
    if (req->headers) {
      curl_slist_free_all(req->headers);
      req->headers = NULL;
    }
    req->finished = 1;
  }
}

static void progress(sr_http_multi_t *m, curl_socket_t fd, int flags) {
  int running = 0;
  if (m->cm == NULL) return;
  curl_multi_socket_action(m->cm, fd, flags, &running);
  collect(m);
  if (m->ready_cb) m->ready_cb(m, m->ud);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  sr_http_sock_t *s = (sr_http_sock_t *)h;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  progress(s->m, s->fd, flags);
}

/* The timer's owner is found through the struct around the handle, not
 * through its data field (see the header comment). */
struct sr_http_timer_s {
  uv_timer_t timer; /* first: the handle pointer is the struct pointer */
  sr_http_multi_t *m;
};

/* libuv 1.44's UV_RUN_ONCE runs due timers first and then still polls
 * with the loop's full timeout: a request that a timer callback finishes
 * (curl's timeout, or a transfer curl completes from its timer) would leave
 * a caller turning the loop once per check (`while not done do
 * uv.run("once") end`) blocked in poll until some unrelated event. The kick
 * makes that turn's poll non-blocking: an idle handle started for one turn
 * (an active idle makes libuv poll with timeout 0) and stopped by a check
 * handle after the poll. */
struct sr_http_kick_s {
  uv_check_t check; /* first: the handle pointer is the struct pointer */
  uv_idle_t *idle;  /* malloc'd; freed in its close callback */
};

static void idle_cb(uv_idle_t *h) { (void)h; }

static void kick_done_cb(uv_check_t *h) {
  sr_http_kick_t *k = (sr_http_kick_t *)h;
  uv_idle_stop(k->idle);
  uv_check_stop(&k->check);
}

static void kick(sr_http_multi_t *m) {
  if (m->kick == NULL) return;
  uv_idle_start(m->kick->idle, idle_cb);
  uv_check_start(&m->kick->check, kick_done_cb);
}

static void timer_fired_cb(uv_timer_t *t) {
  sr_http_multi_t *m = ((sr_http_timer_t *)t)->m;
  progress(m, CURL_SOCKET_TIMEOUT, 0);
  kick(m);
}

/* curl: watch (or stop watching) socket fd. */
static int socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)e;
  sr_http_multi_t *m = (sr_http_multi_t *)userp;
  sr_http_sock_t *s = (sr_http_sock_t *)socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(m->cm, fd, NULL);
      sock_close(m, s);
    }
    return 0;
  }
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s == NULL) return -1;
    if (uv_poll_init_socket(m->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->fd = fd;
    s->m = m;
    s->next = m->socks;
    if (m->socks) m->socks->prev = s;
    m->socks = s;
    curl_multi_assign(m->cm, fd, s);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  return uv_poll_start(&s->poll, ev, poll_cb) == 0 ? 0 : -1;
}

/* curl: call curl_multi_socket_action(CURL_SOCKET_TIMEOUT) in timeout_ms
 * (-1: never). Even 0 goes through the timer: curl must not be re-entered
 * from its own callback. */
static int timer_cb(CURLM *cm, long timeout_ms, void *userp) {
  (void)cm;
  sr_http_multi_t *m = (sr_http_multi_t *)userp;
  if (timeout_ms < 0) return uv_timer_stop(&m->timer->timer) == 0 ? 0 : -1;
  return uv_timer_start(&m->timer->timer, timer_fired_cb, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

static void kick_close(sr_http_multi_t *m) {
  if (m->kick == NULL) return;
  uv_idle_stop(m->kick->idle);
  uv_check_stop(&m->kick->check);
  uv_close((uv_handle_t *)m->kick->idle, free_handle_cb);
  uv_close((uv_handle_t *)&m->kick->check, free_handle_cb);
  m->kick = NULL;
}

int sr_http_multi_init(sr_http_multi_t *m, uv_loop_t *loop, sr_http_ready_cb cb, void *ud) {
  memset(m, 0, sizeof *m);
  m->timer = calloc(1, sizeof *m->timer);
  if (m->timer == NULL) return SR_ENOMEM;
  if (uv_timer_init(loop, &m->timer->timer) != 0) {
    free(m->timer);
    m->timer = NULL;
    return SR_ENOMEM;
  }
  m->timer->m = m;
  m->kick = calloc(1, sizeof *m->kick);
  if (m->kick != NULL) m->kick->idle = calloc(1, sizeof *m->kick->idle);
  if (m->kick == NULL || m->kick->idle == NULL || uv_check_init(loop, &m->kick->check) != 0) {
    if (m->kick) free(m->kick->idle);
    free(m->kick);
    m->kick = NULL;
    uv_close((uv_handle_t *)&m->timer->timer, free_handle_cb);
    m->timer = NULL;
    return SR_ENOMEM;
  }
  uv_idle_init(loop, m->kick->idle); /* cannot fail on unix */
  m->cm = curl_multi_init();
  if (m->cm == NULL) {
    kick_close(m);
    uv_close((uv_handle_t *)&m->timer->timer, free_handle_cb);
    m->timer = NULL;
    return SR_ENOMEM;
  }
  m->loop = loop;
  m->ready_cb = cb;
  m->ud = ud;
  curl_multi_setopt(m->cm, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(m->cm, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(m->cm, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(m->cm, CURLMOPT_TIMERDATA, m);
  return 0;
}

void sr_http_multi_close(sr_http_multi_t *m) {
  if (m->cm == NULL) return;
  while (m->reqs) sr_http_req_free(m->reqs);
  curl_multi_cleanup(m->cm); /* closes cached connections (socket_cb REMOVE) */
  m->cm = NULL;
  while (m->socks) sock_close(m, m->socks);
  if (m->timer) {
    uv_timer_stop(&m->timer->timer);
    uv_close((uv_handle_t *)&m->timer->timer, free_handle_cb);
    m->timer = NULL;
  }
  kick_close(m);
  m->ready_cb = NULL;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
  sr_http_req_t *req = (sr_http_req_t *)ud;
  size_t len = size * n;
  if (!req->stream && len > req->max_size - req->data.len) {
    req->too_large = 1;
    return 0; /* curl stops the transfer with CURLE_WRITE_ERROR */
  }
  if (sr_buf_append(&req->data, p, len) != 0) {
    req->nomem = 1;
    return 0;
  }
  return len;
}

/* Keeps the header lines of the last response only: a status line starts
 * a new response (a 100 Continue's headers are dropped). Header blocks are
 * bounded by curl itself (CURL_MAX_HTTP_HEADER per line, 300 KiB in all). */
static size_t header_cb(char *p, size_t size, size_t n, void *ud) {
  sr_http_req_t *req = (sr_http_req_t *)ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) req->head.len = 0;
  if (sr_buf_append(&req->head, p, len) != 0) {
    req->nomem = 1;
    return 0;
  }
  return len;
}

static void link_req(sr_http_multi_t *m, sr_http_req_t *req) {
  req->prev = NULL;
  req->next = m->reqs;
  if (m->reqs) m->reqs->prev = req;
  m->reqs = req;
  req->linked = 1;
}

void sr_http_req_forget(sr_http_req_t *req) {
  if (!req->linked) return;
  sr_http_multi_t *m = req->m;
  if (req->prev) req->prev->next = req->next; else m->reqs = req->next;
  if (req->next) req->next->prev = req->prev;
  req->prev = req->next = NULL;
  req->linked = 0;
}

void sr_http_req_free(sr_http_req_t *req) {
  if (req->easy) {
    if (req->m && req->m->cm) curl_multi_remove_handle(req->m->cm, req->easy);
    curl_easy_cleanup(req->easy);
    req->easy = NULL;
  }
  if (req->headers) {
    curl_slist_free_all(req->headers);
    req->headers = NULL;
  }
  sr_http_req_forget(req);
  sr_buf_free(&req->data);
  sr_buf_free(&req->head);
}

/* curl opens its sockets without close-on-exec: a process spawned while a
 * connection sits in curl's cache would hold it open, and the server would
 * never see it close. */
static int sockopt_cb(void *ud, curl_socket_t fd, curlsocktype purpose) {
  (void)ud;
  (void)purpose;
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) return CURL_SOCKOPT_ERROR;
  return CURL_SOCKOPT_OK;
}

#define SETOPT(opt, val)                                                     \
  do {                                                                       \
    if (curl_easy_setopt(e, opt, val) != CURLE_OK) {                         \
      sr_seterr(err, errlen, SR_EINVAL, "curl refused option %s", #opt);     \
      goto fail;                                                             \
    }                                                                        \
  } while (0)

int sr_http_req_start(sr_http_multi_t *m, sr_http_req_t *req, const sr_http_opts_t *o, char *err,
                      size_t errlen) {
  int rc = SR_EINVAL;
  if (m->cm == NULL) return sr_seterr(err, errlen, SR_EINVAL, "the HTTP client is closed");
  CURL *e = curl_easy_init();
  if (e == NULL) return sr_seterr(err, errlen, SR_ENOMEM, "out of memory");
  req->m = m;
  req->stream = o->stream;
  req->max_size = o->max_size;
  sr_buf_init(&req->data);
  sr_buf_init(&req->head);
  SETOPT(CURLOPT_URL, o->url);
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_TCP_NODELAY, 1L);
  SETOPT(CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
  SETOPT(CURLOPT_PRIVATE, (char *)req);
  SETOPT(CURLOPT_ERRORBUFFER, req->errbuf);
  SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
  SETOPT(CURLOPT_WRITEDATA, req);
  SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
  SETOPT(CURLOPT_HEADERDATA, req);
  if (!o->stream) SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_size);
  if (o->connect_timeout_ms > 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
  if (o->timeout_ms > 0) SETOPT(CURLOPT_TIMEOUT_MS, o->timeout_ms);
  const char *method = o->method ? o->method : "GET";
  if (strcasecmp(method, "HEAD") == 0) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else if (o->body != NULL) {
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    SETOPT(CURLOPT_POSTFIELDS, o->body);
    if (strcmp(method, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, method);
  } else if (strcmp(method, "GET") != 0) {
    SETOPT(CURLOPT_CUSTOMREQUEST, method);
  }
  if (o->cafile) SETOPT(CURLOPT_CAINFO, o->cafile);
  if (o->capath) SETOPT(CURLOPT_CAPATH, o->capath);
  if (o->certfile) SETOPT(CURLOPT_SSLCERT, o->certfile);
  if (o->keyfile) SETOPT(CURLOPT_SSLKEY, o->keyfile);
  SETOPT(CURLOPT_SSL_VERIFYPEER, o->verify ? 1L : 0L);
  SETOPT(CURLOPT_SSL_VERIFYHOST, o->verify ? 2L : 0L);
  /* curl would wait up to a second for "100 Continue" before sending a
   * body; servers of small JSON bodies do not need the round trip */
  int has_expect = 0;
  for (const char *const *h = o->headers; h && *h; h++) {
    if (strncasecmp(*h, "expect:", 7) == 0) has_expect = 1;
    struct curl_slist *l = curl_slist_append(req->headers, *h);
    if (l == NULL) {
      rc = sr_seterr(err, errlen, SR_ENOMEM, "out of memory");
      goto fail;
    }
    req->headers = l;
  }
  if (!has_expect) {
    struct curl_slist *l = curl_slist_append(req->headers, "Expect:");
    if (l == NULL) {
      rc = sr_seterr(err, errlen, SR_ENOMEM, "out of memory");
      goto fail;
    }
    req->headers = l;
  }
  SETOPT(CURLOPT_HTTPHEADER, req->headers);
  req->easy = e;
  if (curl_multi_add_handle(m->cm, e) != CURLM_OK) {
    req->easy = NULL;
    rc = sr_seterr(err, errlen, SR_ENOMEM, "curl_multi_add_handle failed");
    goto fail;
  }
  link_req(m, req);
  return 0;
fail:
  curl_easy_cleanup(e);
  if (req->headers) {
    curl_slist_free_all(req->headers);
    req->headers = NULL;
  }
  sr_buf_free(&req->data);
  sr_buf_free(&req->head);
  return rc;
}

const char *sr_http_code_name(CURLcode c) {
  switch (c) {
#define N(x) case x: return #x;
    N(CURLE_OK) N(CURLE_UNSUPPORTED_PROTOCOL) N(CURLE_URL_MALFORMAT)
    N(CURLE_COULDNT_RESOLVE_PROXY) N(CURLE_COULDNT_RESOLVE_HOST) N(CURLE_COULDNT_CONNECT)
    N(CURLE_WEIRD_SERVER_REPLY) N(CURLE_HTTP2) N(CURLE_PARTIAL_FILE) N(CURLE_HTTP_RETURNED_ERROR)
    N(CURLE_WRITE_ERROR) N(CURLE_READ_ERROR) N(CURLE_OUT_OF_MEMORY) N(CURLE_OPERATION_TIMEDOUT)
    N(CURLE_RANGE_ERROR) N(CURLE_SSL_CONNECT_ERROR) N(CURLE_ABORTED_BY_CALLBACK)
    N(CURLE_TOO_MANY_REDIRECTS) N(CURLE_GOT_NOTHING) N(CURLE_SSL_ENGINE_NOTFOUND)
    N(CURLE_SEND_ERROR) N(CURLE_RECV_ERROR) N(CURLE_SSL_CERTPROBLEM) N(CURLE_SSL_CIPHER)
    N(CURLE_PEER_FAILED_VERIFICATION) N(CURLE_BAD_CONTENT_ENCODING) N(CURLE_FILESIZE_EXCEEDED)
    N(CURLE_SSL_CACERT_BADFILE) N(CURLE_SSL_SHUTDOWN_FAILED) N(CURLE_AGAIN)
    N(CURLE_SSL_CRL_BADFILE) N(CURLE_SSL_ISSUER_ERROR) N(CURLE_HTTP2_STREAM)
    N(CURLE_SSL_PINNEDPUBKEYNOTMATCH) N(CURLE_SSL_INVALIDCERTSTATUS) N(CURLE_HTTP3)
    N(CURLE_QUIC_CONNECT_ERROR) N(CURLE_PROXY) N(CURLE_SSL_CLIENTCERT)
    N(CURLE_UNRECOVERABLE_POLL) N(CURLE_FAILED_INIT) N(CURLE_NOT_BUILT_IN)
    N(CURLE_BAD_FUNCTION_ARGUMENT) N(CURLE_INTERFACE_FAILED) N(CURLE_SEND_FAIL_REWIND)
#undef N
    default: return "CURLE_UNKNOWN";
  }
}
