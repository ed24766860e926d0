/*
 * client.c -- the blocking client connection (client.h): connect with a
 * deadline, send what is queued in one write, frame the next reply; TLS
 * through the memory-BIO engine (tls.c). Every send and recv passes
 * MSG_DONTWAIT and waits in poll(2), so a silent peer cannot hang a caller
 * that asked for a timeout; only a connection made without a timeout keeps
 * a blocking fd, so that connect and a wait with no deadline are one system
 * call each. A connection costs socket, connect, send and recv per reply,
 * and close. No Lua here and no protocol: the caller decides what to send
 * and what a reply means.
 */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Replies are read in chunks that start small (a connection usually sees a
 * few hundred bytes: allocating 64 KiB per connection and freeing it again
 * costs more than the reads) and double while reads fill them. */
#define SR_CLIENT_READ_FIRST 4096
#define SR_CLIENT_READ_CHUNK 65536
/* Room reserved for the first request of a connection (a CONNECT and an
 * INVOKE usually fit). */
#define SR_CLIENT_OUT_FIRST 488

static const char *const texts[] = {
#define SR_CLIENT_TEXT_STR(name, text) text,
    SR_CLIENT_TEXTS(SR_CLIENT_TEXT_STR)
#undef SR_CLIENT_TEXT_STR
};

static const char *const text_names[] = {
#define SR_CLIENT_TEXT_NAME(name, text) #name,
    SR_CLIENT_TEXTS(SR_CLIENT_TEXT_NAME)
#undef SR_CLIENT_TEXT_NAME
};

const char *sr_client_text(sr_client_text_t t) {
  return (unsigned)t < SR_CLIENT_T_COUNT ? texts[t] : "?";
}

const char *sr_client_text_name(sr_client_text_t t) {
  return (unsigned)t < SR_CLIENT_T_COUNT ? text_names[t] : "?";
}

/* Fills *e with text t (and its arguments) and code; returns rc. */
static int fail(sr_client_err_t *e, int rc, const char *code, sr_client_text_t t, ...) {
  va_list ap;
  va_start(ap, t);
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#endif
  vsnprintf(e->msg, sizeof e->msg, texts[t], ap);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
  va_end(ap);
  e->code = code;
  return rc;
}

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

double sr_client_deadline(double timeout) { return timeout > 0 ? now_s() + timeout : 0; }

/* Waits for `events` on fd until the deadline (0: none). Returns 1 ready,
 * 0 timed out, -errno on poll failure. */
static int wait_fd(int fd, short events, double deadline) {
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
    return 1;
  }
}

/* Sets TCP_NODELAY once. Nagle's algorithm holds a small write back only
 * while earlier bytes are unacknowledged; a request answered by a reply is
 * acknowledged by it, so the option matters only after a oneway message,
 * a write the socket took in part, and for TLS (several records in a
 * row). Setting it only then saves a system call per connection. */
static void want_nodelay(sr_client_t *c) {
  if (c->nodelay || c->fd < 0) return;
  int one = 1;
  (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c->nodelay = 1;
}

void sr_client_close(sr_client_t *c) {
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  sr_framer_free(&c->framer);
  sr_buf_free(&c->out);
  c->queued = 0;
  sr_buf_free(&c->cipher);
  sr_tls_free(c->tls);
  c->tls = NULL;
}

int sr_client_fd_idle(int fd) {
  if (fd < 0) return 0;
  struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
  int r;
  do r = poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  return r == 0;
}

/* Connects one address with a deadline. Returns the fd or -errno
 * (-ETIMEDOUT when the deadline passed). Without a deadline the socket is
 * left in blocking mode and connect() itself waits (no poll and SO_ERROR
 * round trip); every later send/recv passes MSG_DONTWAIT, so the mode of
 * the fd never matters. */
static int connect_addr(const struct sockaddr *sa, socklen_t salen, int family, double deadline) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (deadline > 0 ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -errno;
  int r = connect(fd, sa, salen);
  if (r < 0 && errno != EINPROGRESS && errno != EINTR) {
    int e = errno;
    close(fd);
    return -e;
  }
  if (r < 0) {
    int w = wait_fd(fd, POLLOUT, deadline);
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

/* Writes b fully before the deadline. Returns 0, SR_ETIMEOUT, or SR_EIO
 * with *oserr = errno. *sent counts bytes written. */
static int send_buf(sr_client_t *c, const sr_buf_t *b, double deadline, size_t *sent, int *oserr) {
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
      int r = wait_fd(c->fd, POLLOUT, deadline);
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
static int tls_flush(sr_client_t *c, double deadline, size_t *sent, int *oserr) {
  c->cipher.len = 0;
  if (sr_tls_take(c->tls, &c->cipher) < 0) {
    *oserr = ENOMEM;
    return SR_EIO;
  }
  int rc = send_buf(c, &c->cipher, deadline, sent, oserr);
  c->cipher.len = 0;
  return rc;
}

/* TLS: reads what the socket has (up to one chunk, waiting until the
 * deadline when wait is set) and feeds it to the session. Returns 1 fed,
 * 0 nothing available (no wait), or SR_ETIMEOUT, SR_ECLOSED (EOF), SR_EIO
 * (*oserr). */
static int tls_pull(sr_client_t *c, double deadline, int wait, int *oserr) {
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
    int w = wait_fd(c->fd, POLLIN, deadline);
    if (w == 0) return SR_ETIMEOUT;
    if (w < 0) {
      *oserr = -w;
      return SR_EIO;
    }
  }
}

/* The TLS handshake of a new connection, within the deadline. Returns 0,
 * SR_ETIMEOUT, or another code with msg set (SR_ETLS: OpenSSL's reason). */
static int tls_handshake(sr_client_t *c, double deadline, char *msg, size_t msglen) {
  for (;;) {
    int h = sr_tls_handshake(c->tls, msg, msglen);
    size_t sent = 0;
    int oserr = 0;
    int rc = tls_flush(c, deadline, &sent, &oserr); /* also the alert of a failure */
    if (h < 0) return h;
    if (rc == SR_ETIMEOUT) return SR_ETIMEOUT;
    if (rc < 0) return sr_seterr(msg, msglen, rc, "TLS handshake: sending failed: %s", strerror(oserr));
    if (h == 1) return 0;
    rc = tls_pull(c, deadline, 1, &oserr);
    if (rc == SR_ETIMEOUT) return SR_ETIMEOUT;
    if (rc == SR_ECLOSED)
      return sr_seterr(msg, msglen, SR_ETLS, "%s", sr_client_text(SR_CLIENT_T_TLS_NOT_TLS));
    if (rc < 0) return sr_seterr(msg, msglen, rc, "TLS handshake: receiving failed: %s", strerror(oserr));
  }
}

/* After a socket error on a TLS connection: the peer may have said why
 * before it reset the connection (an alert such as "certificate required"
 * is readable even after the reset). Returns 1 with err set to OpenSSL's
 * reason when it did, else 0. */
static int tls_diagnose(sr_client_t *c, char *err, size_t errlen) {
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

/* An idle TLS connection: records that arrived since the last reply (TLS
 * 1.3 session tickets) are consumed; plaintext, an alert, a close_notify
 * or EOF mean it cannot carry a new request. Returns 1 when it can; 0
 * when it cannot, with err set to OpenSSL's reason when the peer gave one
 * (an alert such as "certificate required" after the handshake). */
static int tls_idle_ok(sr_client_t *c, char *err, size_t errlen) {
  int oserr = 0;
  err[0] = '\0';
  for (;;) {
    int r = tls_pull(c, 0, 0, &oserr);
    if (r == 0) break;
    if (r < 0) break; /* EOF or reset: what was fed may still say why */
  }
  uint8_t one;
  size_t got = 0;
  int rc = sr_tls_read(c->tls, &one, 1, &got, err, errlen);
  if (rc != SR_ETLS) err[0] = '\0';
  if (rc < 0 || got > 0) return 0;
  return oserr == 0 && sr_client_fd_idle(c->fd);
}

int sr_client_connect(sr_client_t *c, const char *host, int port, double timeout, sr_tls_ctx_t *tctx,
                      const char *servername, sr_client_err_t *e) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  e->sent = 0;
  double deadline = sr_client_deadline(timeout);
  int fd = -ECONNREFUSED;
  struct sockaddr_in sin;
  struct sockaddr_in6 sin6;
  memset(&sin, 0, sizeof sin);
  memset(&sin6, 0, sizeof sin6);
  if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
    /* an IP literal: no resolver (getaddrinfo costs more than the rest of
     * the connect) */
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    fd = connect_addr((struct sockaddr *)&sin, sizeof sin, AF_INET, deadline);
  } else if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons((uint16_t)port);
    fd = connect_addr((struct sockaddr *)&sin6, sizeof sin6, AF_INET6, deadline);
  } else {
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0)
      return fail(e, SR_ENOTFOUND, "EAI_NONAME", SR_CLIENT_T_RESOLVE_FAILED, host, gai_strerror(g));
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
      fd = connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline);
      if (fd >= 0 || fd == -ETIMEDOUT) break;
    }
    freeaddrinfo(res);
  }
  if (fd == -ETIMEDOUT)
    return fail(e, SR_ETIMEOUT, "ETIMEDOUT", SR_CLIENT_T_CONNECT_TIMEOUT, host, port, timeout);
  if (fd < 0) return fail(e, SR_EIO, errno_name(-fd), SR_CLIENT_T_CONNECT_FAILED, host, port, strerror(-fd));

  c->fd = fd;
  sr_framer_init(&c->framer, SR_WIRE_DEFAULT_MAX_MESSAGE);
  sr_buf_init(&c->out);
  sr_buf_init(&c->cipher);
  c->chunk = SR_CLIENT_READ_FIRST;
  c->blocking = deadline <= 0;
  if (tctx != NULL) {
    want_nodelay(c);
    char msg[256];
    int rc = sr_tls_new(&c->tls, tctx, servername ? servername : host, msg, sizeof msg);
    if (rc == 0) rc = tls_handshake(c, deadline, msg, sizeof msg);
    if (rc < 0) {
      sr_client_close(c);
      if (rc == SR_ETIMEOUT) return fail(e, rc, "ETIMEDOUT", SR_CLIENT_T_TLS_TIMEOUT, host, port, timeout);
      return fail(e, rc, sr_err_name(rc), SR_CLIENT_T_TLS_FAILED, host, port, msg);
    }
  }
  return 0;
}

size_t sr_client_begin(sr_client_t *c) {
  size_t start = c->queued;
  c->out.len = start;
  if (sr_buf_reserve(&c->out, SR_WIRE_HEADER_SIZE + (c->out.cap ? 0 : SR_CLIENT_OUT_FIRST)) != 0)
    return (size_t)-1;
  c->out.len += SR_WIRE_HEADER_SIZE;
  return start;
}

int sr_client_commit(sr_client_t *c, size_t start, int type, int flags, int seq, int ser) {
  return sr_client_commit_ann(c, start, type, flags, seq, ser, 0);
}

int sr_client_commit_ann(sr_client_t *c, size_t start, int type, int flags, int seq, int ser,
                         size_t ann_len) {
  size_t len = c->out.len - start - SR_WIRE_HEADER_SIZE - ann_len;
  if (len > 0x7FFFFFFFu || ann_len > 0xFFFFu) {
    c->out.len = c->queued;
    return SR_ETOOBIG;
  }
  sr_wire_header_t h = {.type = (uint16_t)type, .flags = (uint16_t)flags, .seq = (uint16_t)seq,
                        .serializer = (uint16_t)ser, .ann_len = (uint16_t)ann_len,
                        .data_len = (uint32_t)len};
  sr_wire_header_encode(c->out.data + start, &h);
  if (flags & SR_FLAG_ONEWAY) want_nodelay(c);
  c->queued = c->out.len;
  return 0;
}

void sr_client_drop(sr_client_t *c) { c->out.len = c->queued; }

int sr_client_send(sr_client_t *c, double deadline, double timeout, sr_client_err_t *e) {
  e->sent = 0;
  c->out.len = c->queued; /* whole messages only */
  c->queued = 0;
  if (c->fd < 0) {
    c->out.len = 0;
    return fail(e, SR_ECLOSED, "SR_ECLOSED", SR_CLIENT_T_CLOSED);
  }
  if (c->out.len == 0) return 0;
  /* A request goes out only on a connection that can carry it: one the
   * peer closed, or spoke on unasked (a daemon never speaks first: EOF, a
   * reset or junk), fails here with nothing sent, which tells the caller
   * it may try again on a new one. A new connection is not checked (the
   * system call would be wasted on every connection: nothing was asked
   * yet, and a failure shows when the reply is read). */
  char why[256];
  why[0] = '\0';
  if (c->used && (sr_framer_pending(&c->framer) != 0 ||
                  !(c->tls ? tls_idle_ok(c, why, sizeof why) : sr_client_fd_idle(c->fd)))) {
    int rc = SR_ECLOSED;
    c->out.len = 0;
    if (why[0] != '\0') {
      snprintf(e->msg, sizeof e->msg, "%s", why);
      e->code = "SR_ETLS";
      rc = SR_ETLS;
    } else {
      fail(e, rc, "SR_ECLOSED", SR_CLIENT_T_CLOSED_BY_PEER);
    }
    sr_client_close(c);
    return rc;
  }
  c->used = 1;
  size_t sent = 0;
  int oserr = 0, rc;
  if (c->tls == NULL) {
    rc = send_buf(c, &c->out, deadline, &sent, &oserr);
  } else {
    char err[256];
    rc = sr_tls_write(c->tls, c->out.data, c->out.len, err, sizeof err) < 0
             ? SR_ETLS
             : tls_flush(c, deadline, &sent, &oserr);
  }
  c->out.len = 0;
  if (rc == 0) return 0;
  e->sent = sent > 0;
  if (rc == SR_ETIMEOUT) {
    fail(e, rc, "SR_ETIMEOUT", SR_CLIENT_T_SEND_TIMEOUT, timeout);
  } else if (rc == SR_ETLS) {
    fail(e, rc, "SR_ETLS", SR_CLIENT_T_SEND_FAILED, "TLS session broken");
  } else if (tls_diagnose(c, e->msg, sizeof e->msg)) {
    rc = SR_ETLS;
    e->code = "SR_ETLS";
  } else {
    fail(e, rc, errno_name(oserr), SR_CLIENT_T_SEND_FAILED, strerror(oserr));
  }
  sr_client_close(c);
  return rc;
}

/* Reads until the framer yields one message or the deadline passes. Returns
 * the message size (> 0) with *msg filled, or a negative code: SR_ETIMEOUT,
 * SR_ECLOSED (EOF), a framer or TLS error (err set), or SR_EIO with
 * *oserr = errno. */
static long recv_message(sr_client_t *c, double deadline, sr_wire_msg_t *msg, char *err,
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
      if (tr < 0) return tr;
      if (got > 0) {
        sr_framer_commit(&c->framer, got);
        continue;
      }
      tr = tls_pull(c, deadline, 1, oserr);
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
      if ((size_t)r == room && c->chunk < SR_CLIENT_READ_CHUNK) c->chunk *= 2;
      continue;
    }
    if (r == 0) return SR_ECLOSED;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int w = wait_fd(c->fd, POLLIN, deadline);
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

int sr_client_receive(sr_client_t *c, double deadline, double timeout, sr_wire_msg_t *m,
                      sr_client_err_t *e) {
  e->sent = 1;
  if (c->fd < 0) return fail(e, SR_ECLOSED, "SR_ECLOSED", SR_CLIENT_T_CLOSED);
  char err[256];
  err[0] = '\0';
  int oserr = 0;
  long got = recv_message(c, deadline, m, err, sizeof(err), &oserr);
  if (got >= 0) return 0;
  int rc = (int)got;
  if (rc == SR_ETIMEOUT) {
    fail(e, rc, "SR_ETIMEOUT", SR_CLIENT_T_RECV_TIMEOUT, timeout);
  } else if (rc == SR_ECLOSED) {
    fail(e, rc, "SR_ECLOSED", SR_CLIENT_T_CLOSED_BY_PEER);
  } else if (rc == SR_EIO && tls_diagnose(c, e->msg, sizeof e->msg)) {
    rc = SR_ETLS;
    e->code = "SR_ETLS";
  } else if (rc == SR_EIO) {
    fail(e, rc, errno_name(oserr), SR_CLIENT_T_RECV_FAILED, strerror(oserr));
  } else {
    snprintf(e->msg, sizeof e->msg, "%s", err[0] ? err : sr_strerror(rc));
    e->code = sr_err_name(rc);
  }
  sr_client_close(c);
  return rc;
}
