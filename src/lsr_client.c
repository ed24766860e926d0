/*
 * lsr_client.c -- the blocking client connection behind a proxy's fast path
 * (a plain script or the REPL: no event loop, one caller). It connects with a
 * timeout, sends Pyro4 messages whose payloads are encoded straight from the
 * Lua stack into the output buffer (lsr_payload_encode; several can be
 * queued and leave in one write: a pipelined CONNECT + INVOKE), and frames
 * and decodes replies (wire.h, lsr_payload_decode) with a deadline enforced
 * by poll(2). Every send and recv passes MSG_DONTWAIT and waits in poll, so
 * a silent peer cannot hang a caller that asked for a timeout; only a
 * connection made without a timeout keeps a blocking fd, so that connect
 * and a wait with no deadline are one system call each. Per connection it
 * costs socket, connect, send, recv (per reply) and close. Protocol
 * decisions (sequence checks, handshake, exceptions) belong to
 * lua/springrun/proxy.lua; this file moves bytes.
 *
 * Lua API (in springrun.core):
 *   client_connect(host, port [, timeout [, tls_ctx [, servername]]])
 *       -> conn | nil, msg, code
 *       tls_ctx: core.tls_context{...} (client): the connection is TLS, the
 *       handshake done here within the timeout; servername (default host) is
 *       the name/address the server certificate must carry. Every byte then
 *       goes through the TLS engine (tls.c): request -> encrypt -> send,
 *       recv -> decrypt -> framer.
 *   conn:request(type, flags, seq, ser, value [, timeout])
 *       -> msg | true (ONEWAY flag: nothing to wait for)
 *        | nil, msg, code, sent   (sent: some request bytes left; the
 *                                  connection is closed on any failure
 *                                  except an argument that cannot be encoded)
 *       msg = { type=, flags=, seq=, serializer=,
 *               ann = {KEY = bytes} (only when the message has annotations),
 *               value = <decoded payload> (JSON or serpent)
 *               | data = <raw bytes> (other serializers, e.g. marshal) }
 *   conn:push(type, flags, seq, ser, value [, raw]) -> true | nil, msg, code
 *       encodes one message and queues it (raw: value is the payload
 *       already encoded, a string, queued as is) (nothing is sent yet; an
 *       argument that cannot be encoded queues nothing). The next
 *       receive() or request() sends everything queued in one write: a
 *       pipelined CONNECT + INVOKE is push(CONNECT), push(INVOKE),
 *       receive() (CONNECTOK), receive() (RESULT).
 *   conn:receive([timeout [, noreply [, known]]])
 *       -> msg | true (noreply: only the queued bytes are sent)
 *        | nil, msg, code, sent   (as request; the connection is closed)
 *       sends what push() queued, then reads the next message. known: a
 *       string: when the reply's payload is exactly these bytes, it is not
 *       decoded and msg has same = true instead of value; true: msg also
 *       has raw = the payload bytes (to pass as known later).
 *       request(...) is push(...) then receive(timeout, flags & ONEWAY).
 *   conn:invoke(seq, object, method, timeout, args...)
 *       -> true, value | false, msg | nil, msg, code, sent | nothing
 *       the proxy's common blocking call in one step: checks the idle
 *       connection as alive() does, encodes the JSON INVOKE of
 *       method(args...) straight from the stack, sends it, reads the reply;
 *       true, value for the plain RESULT of that call; false, msg (as
 *       request's) for any other reply; request's failure tuple; nothing
 *       when nothing was sent (not idle, or an argument the general path
 *       must report) -- see lsr_conn_invoke.
 *   conn:connect_invoke(cseq, cbytes, known, seq, object, method, timeout, args...)
 *       -> true, value | false, "connect"|"result", msg
 *        | nil, msg, code, sent, stage | nothing
 *       the same for the first call of a new connection, sent with the
 *       CONNECT (payload cbytes) in one write; the CONNECTOK must be `known`
 *       byte for byte -- see lsr_conn_connect_invoke.
 *   conn:alive() -> boolean    (false when the peer closed or sent junk)
 *   conn:close()               (idempotent; also __gc and __close)
 *   conn:fileno() -> fd | -1
 *   client_encode_payload(ser, value) -> bytes | nil, msg, code
 *   client_decode_payload(ser, flags, bytes) -> true, value | nil, msg, code
 *       (inflates when flags has FLAG_COMPRESSED)
 *   client_fd_alive(fd) -> boolean  (conn:alive() for a socket owned elsewhere)
 * codes: "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "EHOSTUNREACH", ... for
 * the OS; "SR_ETIMEOUT", "SR_ECLOSED", "SR_E<...>" (sr.h) for the rest.
 * timeout is in seconds (a number); nil, 0 or negative means no limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "lsr.h"
#include "lsr_codec.h"
#include "lsr_tls.h"
#include "sr.h"
#include "wire.h"

#define LSR_CONN_MT "springrun.client.conn"
/* The metatable of springrun.kwargs{...} tables (core.kwargs_mt): a call's
 * last argument carrying it is sent as the INVOKE's kwargs (proxy.lua). */
#define LSR_KWARGS_MT "springrun.kwargs"
/* Replies are read in chunks that start small (a connection usually sees a
 * few hundred bytes: allocating 64 KiB per connection and freeing it again
 * costs more than the reads) and double while reads fill them. */
#define LSR_READ_FIRST 4096
/* Room reserved for the first request of a connection (a CONNECT and an
 * INVOKE usually fit). */
#define LSR_OUT_FIRST 488
#define LSR_READ_CHUNK 65536

typedef struct lsr_conn_s {
  int fd;             /* -1 once closed */
  sr_framer_t framer; /* reply bytes not yet returned as messages */
  sr_buf_t out;       /* the request being sent (reused) */
  sr_buf_t tmp;       /* inflated payload (reused) */
  sr_tls_t *tls;      /* TLS session or NULL */
  sr_buf_t cipher;    /* TLS: ciphertext being sent (reused) */
  size_t chunk;       /* next read size, LSR_READ_FIRST..LSR_READ_CHUNK */
  int nodelay;        /* TCP_NODELAY set (want_nodelay) */
  int blocking;       /* the fd is in blocking mode (connected without a timeout) */
  size_t queued;      /* bytes of whole messages in out (push) */
  /* conn:invoke's last payload head, {"object": .., "method": .., "params": [,
   * for the object and method names in key (on + mn bytes) */
  size_t key_on, key_mn, head_len;
  char key[96];
  char head[256];
} lsr_conn_t;

static void want_nodelay(lsr_conn_t *c);

/* ---- small helpers -------------------------------------------------------- */

static const char *errno_name(int e) {
  switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNRESET: return "ECONNRESET";
    case ECONNABORTED: return "ECONNABORTED";
    case EPIPE: return "EPIPE";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EACCES: return "EACCES";
    case EMFILE: return "EMFILE";
    case ENOMEM: return "ENOMEM";
    default: return "EIO";
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Deadline for `timeout` seconds from now; 0 = none. */
static double deadline_for(double timeout) { return timeout > 0 ? now_s() + timeout : 0; }

/* Waits for `events` on fd until the deadline. Returns 1 ready (revents in
 * *rev), 0 timed out, -errno on poll failure. */
static int wait_fd(int fd, short events, double deadline, short *rev) {
  for (;;) {
    int ms = -1;
    if (deadline > 0) {
      double left = deadline - now_s();
      if (left <= 0) return 0;
      ms = (int)ceil(left * 1000.0);
      if (ms < 1) ms = 1;
    }
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int r = poll(&p, 1, ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) {
      if (deadline > 0 && now_s() >= deadline) return 0;
      continue;
    }
    *rev = p.revents;
    return 1;
  }
}

static double opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  double t = luaL_checknumber(L, idx);
  return t > 0 ? t : 0;
}

/* pushes nil, msg, code; returns 3 */
static int push_fail(lua_State *L, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

/* Decodes a payload (inflating through `tmp` when compressed) and pushes the
 * value. Returns 0 or an SR_E* code (nothing pushed). */
static int decode_payload(lua_State *L, int ser, int flags, const uint8_t *p, size_t n,
                          sr_buf_t *tmp, char *err, size_t errlen) {
  if (flags & SR_FLAG_COMPRESSED) {
    int rc = sr_wire_inflate(tmp, p, n, SR_WIRE_DEFAULT_MAX_MESSAGE, err, errlen);
    if (rc != 0) return rc;
    p = tmp->data;
    n = tmp->len;
  }
  sr_decode_limits_t lim = {SR_DECODE_DEFAULT_DEPTH, SR_DECODE_DEFAULT_ELEMENTS};
  return lsr_payload_decode(L, ser, p, n, &lim, err, errlen);
}

/* ---- the connection userdata --------------------------------------------- */

static lsr_conn_t *check_conn(lua_State *L) {
  return (lsr_conn_t *)luaL_checkudata(L, 1, LSR_CONN_MT);
}

static void conn_release(lsr_conn_t *c) {
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  sr_framer_free(&c->framer);
  sr_buf_free(&c->out);
  c->queued = 0;
  sr_buf_free(&c->tmp);
  sr_buf_free(&c->cipher);
  sr_tls_free(c->tls);
  c->tls = NULL;
}

/* close(), __gc, __close: idempotent. */
static int lsr_conn_close(lua_State *L) {
  conn_release(check_conn(L));
  return 0;
}

static int lsr_conn_fileno(lua_State *L) {
  lua_pushinteger(L, check_conn(L)->fd);
  return 1;
}

static int lsr_conn_tostring(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  if (c->fd < 0) lua_pushliteral(L, "springrun.client.conn (closed)");
  else lua_pushfstring(L, "springrun.client.conn (fd %d)", c->fd);
  return 1;
}

/* True when an idle connection's fd can carry a new request: not hung up,
 * and nothing readable (a daemon never speaks first, so readable means EOF,
 * a reset, or junk). Never blocks, consumes nothing. */
static int fd_idle_ok(int fd) {
  if (fd < 0) return 0;
  struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
  int r;
  do r = poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  return r == 0;
}

/* conn:alive() -> false when closed, when the peer hung up, or when bytes
 * arrived that nobody asked for: all mean no new request can go out. */
static int tls_idle_ok(lsr_conn_t *c);

static int lsr_conn_alive(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  int ok = c->fd >= 0 && sr_framer_pending(&c->framer) == 0;
  if (ok) ok = c->tls ? tls_idle_ok(c) : fd_idle_ok(c->fd);
  lua_pushboolean(L, ok);
  return 1;
}

/* client_fd_alive(fd) -> boolean: the same check for a socket someone else
 * owns (the proxy's luv connection, by its fileno). */
static int lsr_client_fd_alive(lua_State *L) {
  lua_pushboolean(L, fd_idle_ok((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* Connects one address with a deadline. Returns the fd or -errno
 * (-ETIMEDOUT when the deadline passed). Without a deadline the socket is
 * left in blocking mode and connect() itself waits (no poll and SO_ERROR
 * round trip); every later send/recv passes MSG_DONTWAIT and waits in
 * poll, so the mode of the fd never matters. TCP_NODELAY is set later,
 * only when a write may follow a write the peer does not answer (see
 * want_nodelay). */
static int connect_addr(const struct addrinfo *ai, double deadline) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | (deadline > 0 ? SOCK_NONBLOCK : 0),
                  ai->ai_protocol);
  if (fd < 0) return -errno;
  int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
  if (r < 0 && errno != EINPROGRESS && errno != EINTR) {
    int e = errno;
    close(fd);
    return -e;
  }
  if (r < 0) {
    short rev = 0;
    int w = wait_fd(fd, POLLOUT, deadline, &rev);
    if (w <= 0) {
      close(fd);
      return w == 0 ? -ETIMEDOUT : w;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) soerr = errno;
    if (soerr != 0) {
      close(fd);
      return -soerr;
    }
  }
  return fd;
}

/* Sets TCP_NODELAY once. Nagle's algorithm holds a small write back only
 * while earlier bytes are unacknowledged; a request answered by a reply is
 * acknowledged by it, so the option matters only after a oneway message,
 * a write the socket took in part, and for TLS (several records in a
 * row). Setting it only then saves a system call per connection. */
static void want_nodelay(lsr_conn_t *c) {
  if (c->nodelay || c->fd < 0) return;
  int one = 1;
  (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c->nodelay = 1;
}

static int tls_handshake(lsr_conn_t *c, double deadline, char *msg, size_t msglen);

/* client_connect(host, port [, timeout [, tls_ctx [, servername]]]) -> conn | nil, msg, code */
static int lsr_client_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_argcheck(L, port >= 1 && port <= 65535, 2, "port must be 1..65535");
  double timeout = opt_timeout(L, 3);
  sr_tls_ctx_t *tctx = lsr_tls_optctx(L, 4);
  luaL_argcheck(L, tctx == NULL || !sr_tls_ctx_is_server(tctx), 4, "a client TLS context is needed");
  const char *servername = luaL_optstring(L, 5, host);
  double deadline = deadline_for(timeout);

  int fd = -ECONNREFUSED;
  struct sockaddr_in sin;
  struct sockaddr_in6 sin6;
  memset(&sin, 0, sizeof sin);
  memset(&sin6, 0, sizeof sin6);
  if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
    /* an IPv4 or IPv6 literal: no resolver (getaddrinfo costs more than the
     * rest of the connect) */
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    struct addrinfo ai = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                          .ai_addr = (struct sockaddr *)&sin, .ai_addrlen = sizeof sin};
    fd = connect_addr(&ai, deadline);
  } else if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons((uint16_t)port);
    struct addrinfo ai = {.ai_family = AF_INET6, .ai_socktype = SOCK_STREAM,
                          .ai_addr = (struct sockaddr *)&sin6, .ai_addrlen = sizeof sin6};
    fd = connect_addr(&ai, deadline);
  } else {
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", (int)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0) {
      char msg[256];
      snprintf(msg, sizeof(msg), "cannot resolve host '%s': %s", host, gai_strerror(g));
      return push_fail(L, msg, "EAI_NONAME");
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
      fd = connect_addr(ai, deadline);
      if (fd >= 0 || fd == -ETIMEDOUT) break;
    }
    freeaddrinfo(res);
  }
  if (fd < 0) {
    char msg[256];
    if (fd == -ETIMEDOUT)
      snprintf(msg, sizeof(msg), "connect to %s:%d timed out after %g s", host, (int)port, timeout);
    else
      snprintf(msg, sizeof(msg), "connect to %s:%d failed: %s", host, (int)port, strerror(-fd));
    return push_fail(L, msg, errno_name(-fd));
  }

  lsr_conn_t *c = (lsr_conn_t *)lua_newuserdatauv(L, sizeof(*c), 0);
  c->fd = fd;
  sr_framer_init(&c->framer, SR_WIRE_DEFAULT_MAX_MESSAGE);
  sr_buf_init(&c->out);
  sr_buf_init(&c->tmp);
  sr_buf_init(&c->cipher);
  c->tls = NULL;
  c->chunk = LSR_READ_FIRST;
  c->nodelay = 0;
  c->blocking = deadline <= 0;
  c->queued = 0;
  c->key_on = c->key_mn = c->head_len = 0;
  luaL_setmetatable(L, LSR_CONN_MT);
  if (tctx != NULL) {
    want_nodelay(c);
    char msg[400], full[600];
    int rc = sr_tls_new(&c->tls, tctx, servername, msg, sizeof msg);
    if (rc == 0) rc = tls_handshake(c, deadline, msg, sizeof msg);
    if (rc < 0) {
      conn_release(c);
      if (rc == SR_ETIMEOUT)
        snprintf(full, sizeof full, "TLS handshake with %s:%d timed out after %g s", host, (int)port,
                 timeout);
      else
        snprintf(full, sizeof full, "%s:%d: %s", host, (int)port, msg);
      return push_fail(L, full, rc == SR_ETIMEOUT ? "ETIMEDOUT" : sr_err_name(rc));
    }
  }
  return 1;
}

/* Writes b fully before the deadline. Returns 0, SR_ETIMEOUT, or SR_EIO
 * with *oserr = errno. *sent counts bytes written. */
static int send_buf(lsr_conn_t *c, const sr_buf_t *b, double deadline, size_t *sent, int *oserr) {
  size_t off = 0;
  *sent = 0;
  while (off < b->len) {
    ssize_t w = send(c->fd, b->data + off, b->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      off += (size_t)w;
      *sent = off;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want_nodelay(c); /* the rest must not wait for an ACK */
      short rev = 0;
      int r = wait_fd(c->fd, POLLOUT, deadline, &rev);
      if (r == 0) return SR_ETIMEOUT;
      if (r < 0) {
        *oserr = -r;
        return SR_EIO;
      }
      continue;
    }
    *oserr = w < 0 ? errno : EPIPE;
    return SR_EIO;
  }
  return 0;
}

/* TLS: sends what the session has to send (handshake records, encrypted
 * requests, alerts). Same returns as send_buf. */
static int tls_flush(lsr_conn_t *c, double deadline, size_t *sent, int *oserr) {
  c->cipher.len = 0;
  if (sr_tls_take(c->tls, &c->cipher) < 0) {
    *oserr = ENOMEM;
    return SR_EIO;
  }
  int rc = send_buf(c, &c->cipher, deadline, sent, oserr);
  c->cipher.len = 0;
  return rc;
}

/* Writes c->out (encrypted first on a TLS connection) fully before the
 * deadline. Returns 0, SR_ETIMEOUT, SR_ETLS, or SR_EIO with *oserr = errno.
 * *sent counts bytes written. */
static int send_all(lsr_conn_t *c, double deadline, size_t *sent, int *oserr) {
  if (c->tls == NULL) return send_buf(c, &c->out, deadline, sent, oserr);
  *sent = 0;
  char err[256];
  if (sr_tls_write(c->tls, c->out.data, c->out.len, err, sizeof err) < 0) return SR_ETLS;
  return tls_flush(c, deadline, sent, oserr);
}

/* TLS: reads what the socket has (up to one chunk, waiting until the
 * deadline when wait is set) and feeds it to the session. Returns 1 fed,
 * 0 nothing available (no wait), or SR_ETIMEOUT, SR_ECLOSED (EOF), SR_EIO
 * (*oserr). */
static int tls_pull(lsr_conn_t *c, double deadline, int wait, int *oserr) {
  uint8_t chunk[16384];
  for (;;) {
    ssize_t r = recv(c->fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (r > 0) return sr_tls_feed(c->tls, chunk, (size_t)r) < 0 ? (*oserr = ENOMEM, SR_EIO) : 1;
    if (r == 0) return SR_ECLOSED;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *oserr = errno;
      return SR_EIO;
    }
    if (!wait) return 0;
    short rev = 0;
    int w = wait_fd(c->fd, POLLIN, deadline, &rev);
    if (w == 0) return SR_ETIMEOUT;
    if (w < 0) {
      *oserr = -w;
      return SR_EIO;
    }
  }
}

/* The TLS handshake of a new connection, within the deadline. Returns 0 or
 * a code with msg set (SR_ETLS: OpenSSL's reason). */
static int tls_handshake(lsr_conn_t *c, double deadline, char *msg, size_t msglen) {
  for (;;) {
    int h = sr_tls_handshake(c->tls, msg, msglen);
    size_t sent = 0;
    int oserr = 0;
    int rc = tls_flush(c, deadline, &sent, &oserr); /* also the alert of a failure */
    if (h < 0) return h;
    if (rc == SR_ETIMEOUT) return sr_seterr(msg, msglen, SR_ETIMEOUT, "TLS handshake timed out");
    if (rc < 0) return sr_seterr(msg, msglen, rc, "TLS handshake: sending failed: %s", strerror(oserr));
    if (h == 1) return 0;
    rc = tls_pull(c, deadline, 1, &oserr);
    if (rc == SR_ETIMEOUT) return sr_seterr(msg, msglen, SR_ETIMEOUT, "TLS handshake timed out");
    if (rc == SR_ECLOSED)
      return sr_seterr(msg, msglen, SR_ETLS,
                       "TLS handshake failed: the server closed the connection (does it use TLS?)");
    if (rc < 0) return sr_seterr(msg, msglen, rc, "TLS handshake: receiving failed: %s", strerror(oserr));
  }
}

/* After a socket error on a TLS connection: the peer may have said why
 * before it reset the connection (an alert such as "certificate required"
 * is readable even after the reset). Returns 1 with err set to OpenSSL's
 * reason when it did, else 0. */
static int tls_diagnose(lsr_conn_t *c, char *err, size_t errlen) {
  if (c->tls == NULL || c->fd < 0) return 0;
  int oserr = 0;
  for (int i = 0; i < 64; i++) {
    int r = tls_pull(c, 0, 0, &oserr);
    if (r <= 0) break;
  }
  uint8_t one;
  size_t got = 0;
  return sr_tls_read(c->tls, &one, 1, &got, err, errlen) == SR_ETLS;
}

/* alive() of an idle TLS connection: records that arrived since the last
 * reply (TLS 1.3 session tickets) are consumed; plaintext, an alert, a
 * close_notify or EOF mean it cannot carry a new request. */
static int tls_idle_ok(lsr_conn_t *c) {
  int oserr = 0;
  for (;;) {
    int r = tls_pull(c, 0, 0, &oserr);
    if (r == 0) break;
    if (r < 0) return 0;
  }
  uint8_t one;
  size_t got = 0;
  char err[128];
  if (sr_tls_read(c->tls, &one, 1, &got, err, sizeof err) < 0 || got > 0) return 0;
  return 1;
}

/* Reads until the framer yields one message or the deadline passes. Returns
 * the message size (> 0) with *msg filled, or a negative code: SR_ETIMEOUT,
 * SR_ECLOSED (EOF), a framer error (err set), or SR_EIO with *oserr = errno. */
static long recv_message(lsr_conn_t *c, double deadline, sr_wire_msg_t *msg, char *err,
                         size_t errlen, int *oserr) {
  for (;;) {
    long m = sr_framer_next(&c->framer, msg, err, errlen);
    if (m != 0) return m;
    size_t room = 0;
    uint8_t *dst = sr_framer_space(&c->framer, c->chunk, &room);
    if (dst == NULL) return sr_seterr(err, errlen, SR_ENOMEM, "out of memory reading a reply");
    if (c->tls) {
      size_t got = 0;
      int tr = sr_tls_read(c->tls, dst, room, &got, err, errlen);
      if (tr == SR_ECLOSED)
        return sr_seterr(err, errlen, SR_ECLOSED, "connection closed by the server");
      if (tr < 0) return tr;
      if (got > 0) {
        sr_framer_commit(&c->framer, got);
        continue;
      }
      tr = tls_pull(c, deadline, 1, oserr);
      if (tr == SR_ECLOSED)
        return sr_seterr(err, errlen, SR_ECLOSED, "connection closed by the server");
      if (tr < 0) return tr;
      /* the session may have an answer to send (key update) */
      if (sr_tls_pending(c->tls) > 0) {
        size_t sent = 0;
        int fr = tls_flush(c, deadline, &sent, oserr);
        if (fr < 0) return fr;
      }
      continue;
    }
    /* no deadline on a blocking fd: recv itself waits (one system call
     * instead of recv, poll, recv) */
    ssize_t r = recv(c->fd, dst, room, c->blocking && deadline <= 0 ? 0 : MSG_DONTWAIT);
    if (r > 0) {
      sr_framer_commit(&c->framer, (size_t)r);
      if ((size_t)r == room && c->chunk < LSR_READ_CHUNK) c->chunk *= 2;
      continue;
    }
    if (r == 0) return sr_seterr(err, errlen, SR_ECLOSED, "connection closed by the server");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      short rev = 0;
      int w = wait_fd(c->fd, POLLIN, deadline, &rev);
      if (w == 0) return SR_ETIMEOUT;
      if (w < 0) {
        *oserr = -w;
        return SR_EIO;
      }
      continue;
    }
    *oserr = errno;
    return SR_EIO;
  }
}

/* Pushes the msg table for a framed reply (decoding the payload). Returns 0
 * or an SR_E* decode error (err set, nothing pushed). */
static int push_reply(lua_State *L, lsr_conn_t *c, const sr_wire_msg_t *m, int known_idx,
                      char *err, size_t errlen) {
  int ser = m->h.serializer;
  int decodable = ser == SR_SER_JSON || ser == SR_SER_SERPENT;
  int same = 0, keep = 0;
  if (known_idx > 0) {
    if (lua_type(L, known_idx) == LUA_TSTRING) {
      size_t kn;
      const char *k = lua_tolstring(L, known_idx, &kn);
      same = kn == m->h.data_len && (kn == 0 || memcmp(k, m->data, kn) == 0);
    } else {
      keep = lua_toboolean(L, known_idx);
    }
  }
  if (same) decodable = 0; /* the caller has the value already */
  if (decodable) {
    int rc = decode_payload(L, ser, m->h.flags, m->data, m->h.data_len, &c->tmp, err, errlen);
    if (rc != 0) return rc;
  }
  lua_createtable(L, 0, 6);
  if (same) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "same");
  } else if (decodable) {
    lua_rotate(L, -2, 1); /* value above the table */
    lua_setfield(L, -2, "value");
    if (keep) {
      lua_pushlstring(L, (const char *)m->data, m->h.data_len);
      lua_setfield(L, -2, "raw");
    }
  } else {
    lua_pushlstring(L, (const char *)m->data, m->h.data_len);
    lua_setfield(L, -2, "data");
  }
  lsr_set_msg_head(L, &m->h);
  if (m->h.ann_len > 0) {
    lua_newtable(L);
    size_t off = 0;
    sr_wire_ann_t a;
    while (sr_wire_ann_next(m->ann, m->h.ann_len, &off, &a) == 1) {
      lua_pushlstring(L, a.key, 4);
      lua_pushlstring(L, (const char *)a.value, a.len);
      lua_settable(L, -3);
    }
    lua_setfield(L, -2, "ann");
  }
  return 0;
}

/* Encodes the message whose type, flags, seq and serializer are at stack
 * slots 2..5 and value at slot 6 (raw: a string holding the encoded
 * payload), appending it to c->out behind the c->queued bytes of whole
 * messages already there (bytes beyond that, left by an encoder that
 * raised a Lua error, are dropped first). Returns 0 (c->queued covers the
 * new message), or an SR_E* code with err set and c->out as it was (an
 * argument that cannot be encoded queues nothing). */
static int queue_message(lua_State *L, lsr_conn_t *c, int raw, lua_Integer *flags_out, char *err,
                         size_t errlen) {
  lua_Integer type = luaL_checkinteger(L, 2);
  lua_Integer flags = luaL_checkinteger(L, 3);
  lua_Integer seq = luaL_checkinteger(L, 4);
  lua_Integer ser = luaL_checkinteger(L, 5);
  luaL_checkany(L, 6);
  luaL_argcheck(L, type >= 0 && type <= 0xffff, 2, "message type out of range");
  luaL_argcheck(L, flags >= 0 && flags <= 0xffff, 3, "flags out of range");
  luaL_argcheck(L, seq >= 0 && seq <= 0xffff, 4, "seq out of range");
  luaL_argcheck(L, ser >= 0 && ser <= 0xffff, 5, "serializer out of range");
  *flags_out = flags;
  if (c->fd < 0) {
    snprintf(err, errlen, "connection is closed");
    return SR_ECLOSED;
  }
  size_t queued = c->queued;
  c->out.len = queued;
  const char *bytes = NULL;
  size_t nbytes = 0;
  if (raw) bytes = luaL_checklstring(L, 6, &nbytes);
  if (flags & SR_FLAG_ONEWAY) want_nodelay(c);
  /* the payload is encoded in place behind room for its header (no copy);
   * the first message of a connection sizes the buffer once */
  int rc = sr_buf_reserve(&c->out, SR_WIRE_HEADER_SIZE + (c->out.cap ? 0 : LSR_OUT_FIRST));
  if (rc == 0) {
    c->out.len += SR_WIRE_HEADER_SIZE;
    if (raw) {
      rc = sr_buf_append(&c->out, bytes, nbytes);
    } else {
      rc = lsr_payload_encode(L, (int)ser, 6, &c->out, err, errlen);
    }
  }
  if (rc == 0) {
    size_t len = c->out.len - queued - SR_WIRE_HEADER_SIZE;
    if (len > 0x7FFFFFFFu) {
      rc = sr_seterr(err, errlen, SR_ETOOBIG, "request too large to send: %s", sr_strerror(SR_ETOOBIG));
    } else {
      sr_wire_put_header(c->out.data + queued, (uint16_t)type, (uint16_t)flags, (uint16_t)seq,
                         (uint16_t)ser, (uint32_t)len);
    }
  }
  if (rc != 0) {
    c->out.len = queued;
    if (err[0] == '\0') snprintf(err, errlen, "%s", sr_strerror(rc));
  } else {
    c->queued = c->out.len;
  }
  return rc;
}

/* A reply whose JSON payload is one string (the commonest result) is
 * pushed without the general decoder's set-up: returns 1 when it pushed
 * it, 0 (nothing pushed) for anything else, a compressed payload or text
 * the decoder would refuse included (it then reports that). */
static int push_plain_string(lua_State *L, lsr_conn_t *c, const sr_wire_msg_t *m) {
  size_t n = m->h.data_len;
  const uint8_t *p = m->data;
  if ((m->h.flags & SR_FLAG_COMPRESSED) || n < 2 || p[0] != '"' || p[n - 1] != '"') return 0;
  const char *s = NULL;
  size_t slen = 0, end = 0;
  char err[8];
  if (sr_json_read_string(p, n, 0, &c->tmp, &s, &slen, &end, err, sizeof err) != 0 || end != n)
    return 0;
  lua_pushlstring(L, s, slen);
  return 1;
}

/* Sends c->out (everything queued) before the deadline. Returns 0, or
 * pushes conn:request's failure tuple (nil, msg, code, sent) and returns 4
 * (the connection is closed). */
static int send_queued(lua_State *L, lsr_conn_t *c, double deadline, double timeout) {
  char err[256];
  c->out.len = c->queued; /* whole messages only */
  c->queued = 0;
  if (c->fd < 0) {
    c->out.len = 0;
    push_fail(L, "connection is closed", "SR_ECLOSED");
    lua_pushboolean(L, 0);
    return 4;
  }
  if (c->out.len == 0) return 0;
  size_t sent = 0;
  int oserr = 0;
  int rc = send_all(c, deadline, &sent, &oserr);
  c->out.len = 0;
  if (rc == 0) return 0;
  if (rc == SR_ETIMEOUT) {
    snprintf(err, sizeof(err), "sending the request timed out after %g s", timeout);
    push_fail(L, err, "SR_ETIMEOUT");
  } else if (rc == SR_ETLS) {
    push_fail(L, "sending the request failed: TLS session broken", "SR_ETLS");
  } else if (tls_diagnose(c, err, sizeof(err))) {
    push_fail(L, err, "SR_ETLS");
  } else {
    snprintf(err, sizeof(err), "sending the request failed: %s", strerror(oserr));
    push_fail(L, err, errno_name(oserr));
  }
  conn_release(c);
  lua_pushboolean(L, sent > 0);
  return 4;
}

/* Reads the next message into *m before the deadline. Returns 0, or pushes
 * the failure tuple (sent: true) and returns 4 (the connection is closed). */
static int recv_reply(lua_State *L, lsr_conn_t *c, double deadline, double timeout,
                      sr_wire_msg_t *m) {
  char err[256];
  err[0] = '\0';
  int oserr = 0;
  long got = recv_message(c, deadline, m, err, sizeof(err), &oserr);
  if (got >= 0) return 0;
  int code = (int)got;
  if (code == SR_ETIMEOUT) {
    snprintf(err, sizeof(err), "no reply within %g s", timeout);
    push_fail(L, err, "SR_ETIMEOUT");
  } else if (code == SR_EIO && tls_diagnose(c, err, sizeof(err))) {
    push_fail(L, err, "SR_ETLS");
  } else if (code == SR_EIO) {
    snprintf(err, sizeof(err), "receiving the reply failed: %s", strerror(oserr));
    push_fail(L, err, errno_name(oserr));
  } else {
    push_fail(L, err[0] ? err : sr_strerror(code), sr_err_name(code));
  }
  conn_release(c);
  lua_pushboolean(L, 1);
  return 4;
}

/* Pushes the reply m: with fast_seq >= 0 (conn:invoke), the plain result of
 * that call (RESULT, that seq, JSON, neither EXCEPTION nor ITEMSTREAMRESULT)
 * as true, value, and any other reply as false, msg; else the msg table
 * (push_reply, known_idx as conn:receive's). Returns the count pushed, or
 * the failure tuple's 4 when the payload cannot be decoded (the connection
 * is closed). */
static int push_received(lua_State *L, lsr_conn_t *c, const sr_wire_msg_t *m, int known_idx,
                         long fast_seq) {
  char err[256];
  err[0] = '\0';
  int rc = 0;
  int plain = fast_seq >= 0 && m->h.type == SR_MSG_RESULT && m->h.seq == fast_seq &&
              m->h.serializer == SR_SER_JSON &&
              (m->h.flags & (SR_FLAG_EXCEPTION | SR_FLAG_ITEMSTREAMRESULT)) == 0;
  if (plain) {
    lua_pushboolean(L, 1);
    if (!push_plain_string(L, c, m))
      rc = decode_payload(L, SR_SER_JSON, m->h.flags, m->data, m->h.data_len, &c->tmp, err,
                          sizeof(err));
    if (rc != 0) lua_pop(L, 1);
  } else {
    if (fast_seq >= 0) lua_pushboolean(L, 0);
    rc = push_reply(L, c, m, known_idx, err, sizeof(err));
    if (rc != 0 && fast_seq >= 0) lua_pop(L, 1);
  }
  c->tmp.len = 0;
  if (rc != 0) {
    push_fail(L, err, sr_err_name(rc));
    conn_release(c);
    lua_pushboolean(L, 1);
    return 4;
  }
  return fast_seq >= 0 ? 2 : 1;
}

/* Sends c->out (everything queued), then, unless noreply, reads and pushes
 * the next message. Returns what conn:receive returns (see the header);
 * with fast_seq >= 0 (conn:invoke) as push_received. */
static int send_and_receive(lua_State *L, lsr_conn_t *c, double timeout, int noreply,
                            int known_idx, long fast_seq) {
  double deadline = deadline_for(timeout);
  int n = send_queued(L, c, deadline, timeout);
  if (n != 0) return n;
  if (noreply) {
    lua_pushboolean(L, 1);
    return 1;
  }
  sr_wire_msg_t m;
  if ((n = recv_reply(L, c, deadline, timeout, &m)) != 0) return n;
  return push_received(L, c, &m, known_idx, fast_seq);
}

/* conn:push(type, flags, seq, ser, value) (see the header) */
static int lsr_conn_push(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  char err[256];
  err[0] = '\0';
  lua_Integer flags = 0;
  int rc = queue_message(L, c, lua_toboolean(L, 7), &flags, err, sizeof err);
  if (rc != 0) return push_fail(L, err, sr_err_name(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:receive([timeout [, noreply]]) (see the header) */
static int lsr_conn_receive(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  double timeout = opt_timeout(L, 2);
  return send_and_receive(L, c, timeout, lua_toboolean(L, 3), lua_isnoneornil(L, 4) ? 0 : 4, -1);
}

/* conn:request(type, flags, seq, ser, value [, timeout]) (see the header) */
static int lsr_conn_request(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  double timeout = opt_timeout(L, 7);
  char err[256];
  err[0] = '\0';
  lua_Integer flags = 0;
  /* Encode first: an unencodable argument fails before any byte leaves and
   * leaves the connection usable. */
  int rc = queue_message(L, c, 0, &flags, err, sizeof err);
  if (rc != 0) {
    push_fail(L, err, sr_err_name(rc));
    lua_pushboolean(L, 0);
    return 4;
  }
  return send_and_receive(L, c, timeout, (flags & SR_FLAG_ONEWAY) != 0, 0, -1);
}

/* JSON as the payload encoder writes it (lsr_json_emitter), for the
 * arguments conn:invoke writes one by one into the params list: two levels
 * (the INVOKE map, the params list) less deep, so an argument is refused
 * here exactly when the whole payload would be. Set up by lsr_open_client. */
static lsr_emitter_t invoke_emitter;

#define LSR_APPEND_LIT(b, lit) sr_buf_append((b), (lit), sizeof(lit) - 1)

/* Appends the JSON INVOKE payload {"object": object, "method": method,
 * "params": [args at stack slots first..last], "kwargs": {}} to c->out
 * (the head up to the params is remembered for the next call with the
 * same names). Returns 0 or an SR_E* code (err set; c->out holds a partial
 * payload). */
static int encode_invoke(lua_State *L, lsr_conn_t *c, const char *obj, size_t on, const char *meth,
                         size_t mn, int first, int last, char *err, size_t errlen) {
  sr_buf_t *out = &c->out;
  int rc;
  if (c->head_len > 0 && c->key_on == on && c->key_mn == mn && memcmp(c->key, obj, on) == 0 &&
      memcmp(c->key + on, meth, mn) == 0) {
    /* the same object and method as the last call: its head again */
    rc = sr_buf_append(out, c->head, c->head_len);
  } else {
    size_t bad = 0, start = out->len;
    rc = LSR_APPEND_LIT(out, "{\"object\": ");
    if (rc == 0) rc = sr_json_put_string(out, (const uint8_t *)obj, on, &bad);
    if (rc == 0) rc = LSR_APPEND_LIT(out, ", \"method\": ");
    if (rc == 0) rc = sr_json_put_string(out, (const uint8_t *)meth, mn, &bad);
    if (rc == 0) rc = LSR_APPEND_LIT(out, ", \"params\": [");
    c->head_len = 0;
    if (rc == 0 && on + mn <= sizeof c->key && out->len - start <= sizeof c->head) {
      memcpy(c->key, obj, on);
      memcpy(c->key + on, meth, mn);
      c->key_on = on;
      c->key_mn = mn;
      c->head_len = out->len - start;
      memcpy(c->head, out->data + start, c->head_len);
    }
  }
  if (last >= first && lua_type(L, last) == LUA_TTABLE && lua_getmetatable(L, last)) {
    /* keyword arguments: the general path (proxy.lua) sends them */
    luaL_getmetatable(L, LSR_KWARGS_MT);
    int kw = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (kw) return sr_seterr(err, errlen, SR_EINVAL, "keyword arguments");
  }
  for (int i = first; rc == 0 && i <= last; i++) {
    if (i > first) rc = LSR_APPEND_LIT(out, ", ");
    if (rc == 0) rc = lsr_encode(L, i, &invoke_emitter, out, err, errlen);
  }
  if (rc == 0) rc = LSR_APPEND_LIT(out, "], \"kwargs\": {}}");
  return rc;
}

/* The arguments seq, object, method, timeout at stack slots at..at + 3 of
 * conn:invoke and conn:connect_invoke; the call's own arguments follow. */
typedef struct invoke_args_s {
  lua_Integer seq;
  const char *obj, *meth;
  size_t on, mn;
  double timeout;
} invoke_args_t;

static void check_invoke_args(lua_State *L, int at, invoke_args_t *a) {
  a->seq = luaL_checkinteger(L, at);
  a->obj = luaL_checklstring(L, at + 1, &a->on);
  a->meth = luaL_checklstring(L, at + 2, &a->mn);
  a->timeout = opt_timeout(L, at + 3);
  luaL_argcheck(L, a->seq >= 0 && a->seq <= 0xffff, at, "seq out of range");
}

/* Appends the JSON INVOKE of a's method with the arguments from stack slot
 * at + 4 on to c->out (`before` bytes already there, room reserved by the
 * caller) and queues everything. Returns 0, or -1 with nothing queued (an
 * argument the general path must report). */
static int queue_invoke(lua_State *L, lsr_conn_t *c, size_t before, const invoke_args_t *a,
                        int at) {
  char err[256];
  err[0] = '\0';
  c->out.len = before + SR_WIRE_HEADER_SIZE;
  int rc = encode_invoke(L, c, a->obj, a->on, a->meth, a->mn, at + 4, lua_gettop(L), err, sizeof err);
  size_t len = c->out.len - before - SR_WIRE_HEADER_SIZE;
  if (rc != 0 || len > 0x7FFFFFFFu) {
    c->out.len = 0;
    return -1;
  }
  sr_wire_put_header(c->out.data + before, SR_MSG_INVOKE, 0, (uint16_t)a->seq, SR_SER_JSON,
                     (uint32_t)len);
  c->queued = c->out.len;
  return 0;
}

/* conn:invoke(seq, object, method, timeout, args...) -> the common remote
 * call in one step: when the idle connection can carry a request (what
 * conn:alive() checks), encodes the JSON INVOKE of method(args...) (flags
 * 0, serializer JSON), sends it, reads the reply and returns
 *   true, value      the reply is the plain RESULT of this call (value
 *                    decoded; a top-level null is core.null)
 *   false, msg       any other reply (msg as conn:request returns it: the
 *                    caller checks it: wrong type/seq/serializer, remote
 *                    exception, item stream)
 *   nil, msg, code, sent   as conn:request (the connection is closed)
 *   nothing          nothing was sent and the connection is as it was:
 *                    it is closed, not idle (peer gone, junk, queued
 *                    messages) or an argument cannot be encoded; the
 *                    caller takes the general path, which reports it. */
static int lsr_conn_invoke(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  invoke_args_t a;
  check_invoke_args(L, 2, &a);
  if (c->fd < 0 || c->queued != 0 || sr_framer_pending(&c->framer) != 0) return 0;
  if (!(c->tls ? tls_idle_ok(c) : fd_idle_ok(c->fd))) return 0;
  c->out.len = 0;
  if (sr_buf_reserve(&c->out, SR_WIRE_HEADER_SIZE + (c->out.cap ? 0 : LSR_OUT_FIRST)) != 0 ||
      queue_invoke(L, c, 0, &a, 2) != 0)
    return 0;
  return send_and_receive(L, c, a.timeout, 0, 0, (long)a.seq);
}

/* conn:connect_invoke(cseq, cbytes, known, seq, object, method, timeout,
 * args...) -> the first call of a new connection, pipelined with its
 * handshake, in one step (the proxy's blocking path when it has the
 * service's metadata from an earlier connection): queues the CONNECT
 * (JSON, metadata asked for, sequence cseq; cbytes: its payload, already
 * encoded) and the JSON INVOKE of method(args...) as conn:invoke encodes
 * it, sends both in one write, reads the CONNECTOK, then the reply:
 *   true, value           the CONNECTOK's payload is `known` byte for byte
 *                         (the metadata is the cached one) and the reply
 *                         the plain RESULT of the call
 *   false, "connect", msg the first answer is anything else: msg as
 *                         conn:receive(timeout, false, known) returns it;
 *                         the reply is still to be read
 *   false, "result", msg  the CONNECTOK was `known`; the reply is not a
 *                         plain result (as conn:invoke's false, msg)
 *   nil, msg, code, sent, stage  a failure: stage "connect" (sending, or
 *                         reading the first answer) or "result" (reading
 *                         the reply); the connection is closed
 *   nothing               nothing was sent: not a fresh connection, or an
 *                         argument the general path must report */
static int lsr_conn_connect_invoke(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  lua_Integer cseq = luaL_checkinteger(L, 2);
  size_t cn;
  const char *cb = luaL_checklstring(L, 3, &cn);
  invoke_args_t a;
  check_invoke_args(L, 5, &a);
  luaL_argcheck(L, cseq >= 0 && cseq <= 0xffff, 2, "seq out of range");
  luaL_argcheck(L, cn <= 0x7FFFFFFFu, 3, "payload too large");
  if (c->fd < 0 || c->queued != 0 || sr_framer_pending(&c->framer) != 0) return 0;
  size_t at = SR_WIRE_HEADER_SIZE + cn; /* where the INVOKE starts */
  c->out.len = 0;
  if (sr_buf_reserve(&c->out, at + SR_WIRE_HEADER_SIZE + LSR_OUT_FIRST) != 0) return 0;
  sr_wire_put_header(c->out.data, SR_MSG_CONNECT, SR_FLAG_META_ON_CONNECT, (uint16_t)cseq,
                     SR_SER_JSON, (uint32_t)cn);
  memcpy(c->out.data + SR_WIRE_HEADER_SIZE, cb, cn);
  if (queue_invoke(L, c, at, &a, 5) != 0) return 0;
  double timeout = a.timeout, deadline = deadline_for(timeout);
  lua_Integer seq = a.seq;
  sr_wire_msg_t m;
  int n = send_queued(L, c, deadline, timeout);
  if (n == 0) n = recv_reply(L, c, deadline, timeout, &m);
  if (n != 0) {
    lua_pushliteral(L, "connect");
    return n + 1;
  }
  size_t kn;
  const char *k = lua_tolstring(L, 4, &kn);
  if (m.h.type != SR_MSG_CONNECTOK || !(m.h.flags & SR_FLAG_META_ON_CONNECT) || k == NULL ||
      kn != m.h.data_len || (kn > 0 && memcmp(k, m.data, kn) != 0)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "connect");
    if ((n = push_received(L, c, &m, 4, -1)) == 1) return 3;
    lua_pushliteral(L, "connect"); /* a failure tuple */
    return n + 1;
  }
  /* the reply gets a timeout of its own, as conn:receive would give it */
  n = recv_reply(L, c, deadline_for(timeout), timeout, &m);
  if (n == 0) n = push_received(L, c, &m, 0, (long)seq);
  if (n != 2) {
    lua_pushliteral(L, "result");
    return n + 1;
  }
  if (!lua_toboolean(L, -2)) { /* false, msg -> false, "result", msg */
    lua_pushliteral(L, "result");
    lua_insert(L, -2);
    return 3;
  }
  return 2;
}

/* client_encode_payload(ser, value) -> bytes | nil, msg, code */
static int lsr_client_encode_payload(lua_State *L) {
  int ser = (int)luaL_checkinteger(L, 1);
  luaL_checkany(L, 2);
  sr_buf_t *b = lsr_push_buf(L);
  char err[256];
  err[0] = '\0';
  int rc = lsr_payload_encode(L, ser, 2, b, err, sizeof(err));
  if (rc != 0) return push_fail(L, err[0] ? err : sr_strerror(rc), sr_err_name(rc));
  lua_pushlstring(L, (const char *)b->data, b->len);
  sr_buf_free(b);
  return 1;
}

/* client_decode_payload(ser, flags, bytes) -> true, value | nil, msg, code */
static int lsr_client_decode_payload(lua_State *L) {
  int ser = (int)luaL_checkinteger(L, 1);
  int flags = (int)luaL_checkinteger(L, 2);
  size_t n;
  const char *p = luaL_checklstring(L, 3, &n);
  sr_buf_t *b = lsr_push_buf(L);
  char err[256];
  err[0] = '\0';
  int rc = decode_payload(L, ser, flags, (const uint8_t *)p, n, b, err, sizeof(err));
  if (rc != 0) return push_fail(L, err[0] ? err : sr_strerror(rc), sr_err_name(rc));
  sr_buf_free(b);
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

static const luaL_Reg conn_methods[] = {
    {"request", lsr_conn_request},
    {"invoke", lsr_conn_invoke},
    {"connect_invoke", lsr_conn_connect_invoke},
    {"push", lsr_conn_push},
    {"receive", lsr_conn_receive},
    {"alive", lsr_conn_alive},
    {"close", lsr_conn_close},
    {"fileno", lsr_conn_fileno},
    {NULL, NULL},
};

static const luaL_Reg client_funcs[] = {
    {"client_connect", lsr_client_connect},
    {"client_encode_payload", lsr_client_encode_payload},
    {"client_decode_payload", lsr_client_decode_payload},
    {"client_fd_alive", lsr_client_fd_alive},
    {NULL, NULL},
};

void lsr_open_client(lua_State *L) {
  invoke_emitter = lsr_json_emitter;
  invoke_emitter.max_depth = lsr_json_emitter.max_depth - 2;
  if (luaL_newmetatable(L, LSR_CONN_MT)) {
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lsr_conn_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lsr_conn_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lsr_conn_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, LSR_KWARGS_MT);
  lua_setfield(L, -2, "kwargs_mt");
  luaL_setfuncs(L, client_funcs, 0);
}
