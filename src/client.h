/*
 * client.h -- a blocking Pyro4 client connection, without Lua: connect
 * (with a deadline, optionally TLS), send the messages queued in its output
 * buffer in one write, receive the next framed message. It knows frames,
 * not the protocol: which messages to send and what a reply means is the
 * caller's (the Lua binding lsr_client.c and lua/springrun/session.lua).
 *
 * Every failure closes the connection and fills an sr_client_err_t: the
 * text (from SR_CLIENT_TEXTS, the one table of transport error texts: the
 * luv transport in lua/springrun/transport.lua formats the same ones, read
 * from springrun.core.client_texts), a code name ("ECONNREFUSED",
 * "ETIMEDOUT", "SR_ETIMEOUT", "SR_ECLOSED", "SR_E<...>") and whether any
 * request byte left.
 */
#ifndef SR_CLIENT_H
#define SR_CLIENT_H

#include <stddef.h>

#include "sr.h"
#include "tls.h"
#include "wire.h"

/* X(NAME, format): the transport's error texts, printf formats whose
 * arguments are named in the NAME's comment where it is used. */
#define SR_CLIENT_TEXTS(X)                                                         \
  X(RESOLVE_FAILED, "cannot resolve host '%s': %s")                                \
  X(RESOLVE_TIMEOUT, "resolving %s timed out after %g s")                          \
  X(CONNECT_TIMEOUT, "connect to %s:%d timed out after %g s")                      \
  X(CONNECT_FAILED, "connect to %s:%d failed: %s")                                 \
  X(TLS_TIMEOUT, "TLS handshake with %s:%d timed out after %g s")                  \
  X(TLS_FAILED, "%s:%d: %s")                                                       \
  X(TLS_NOT_TLS, "TLS handshake failed: the server closed the connection (does it use TLS?)") \
  X(SEND_TIMEOUT, "sending the request timed out after %g s")                      \
  X(SEND_FAILED, "sending the request failed: %s")                                 \
  X(RECV_TIMEOUT, "no reply within %g s")                                          \
  X(RECV_FAILED, "receiving the reply failed: %s")                                 \
  X(CLOSED_BY_PEER, "connection closed by the server")                             \
  X(CLOSED, "connection is closed")

typedef enum {
#define SR_CLIENT_TEXT_ENUM(name, text) SR_CLIENT_T_##name,
  SR_CLIENT_TEXTS(SR_CLIENT_TEXT_ENUM)
#undef SR_CLIENT_TEXT_ENUM
  SR_CLIENT_T_COUNT
} sr_client_text_t;

/* The format of text t, and its name in lower case ("recv_timeout"). */
const char *sr_client_text(sr_client_text_t t);
const char *sr_client_text_name(sr_client_text_t t);

typedef struct sr_client_err_s {
  const char *code; /* static: "ECONNREFUSED", "SR_ETIMEOUT", ... */
  int sent;         /* some request bytes left before the failure */
  char msg[320];
} sr_client_err_t;

typedef struct sr_client_s {
  int fd;             /* -1 once closed */
  sr_framer_t framer; /* reply bytes not yet returned as messages */
  sr_buf_t out;       /* the messages queued to be sent (reused) */
  size_t queued;      /* bytes of whole messages at the start of out */
  sr_tls_t *tls;      /* TLS session or NULL */
  sr_buf_t cipher;    /* TLS: ciphertext being sent (reused) */
  size_t chunk;       /* next read size */
  int nodelay;        /* TCP_NODELAY set */
  int blocking;       /* the fd is in blocking mode (connected without a timeout) */
  int used;           /* something was sent (a new connection is not checked for idleness) */
} sr_client_t;

/* An absolute deadline (monotonic seconds) for timeout seconds from now; 0
 * (no deadline) when timeout <= 0. */
double sr_client_deadline(double timeout);

/* Connects c (which the caller owns; its previous state is ignored) to
 * host:port before timeout seconds (0: no limit): an IP literal directly,
 * a name through getaddrinfo (every address in turn). With tctx (a client
 * context) the TLS handshake is done too, servername (default host) being
 * the name the server certificate must carry. Returns 0 (c open) or a
 * negative code with *e filled (c closed: sr_client_close is still fine). */
int sr_client_connect(sr_client_t *c, const char *host, int port, double timeout, sr_tls_ctx_t *tctx,
                      const char *servername, sr_client_err_t *e);

/* Closes the socket and frees every buffer; idempotent. */
void sr_client_close(sr_client_t *c);

/* True when the idle plain socket fd, which someone else owns, can carry a
 * new request: the peer has not hung up and sent nothing (a daemon never
 * speaks first, so readable means EOF, a reset or junk). Never blocks. */
int sr_client_fd_idle(int fd);

/* Queuing: a message is built in c->out behind the c->queued bytes of whole
 * messages. sr_client_begin reserves room for a header (and, on the first
 * use of the buffer, for a typical request) and returns where the message
 * starts, or (size_t)-1 when memory runs out; the caller appends the
 * payload to c->out; sr_client_commit writes the header and queues it
 * (0, or SR_ETOOBIG), sr_client_drop forgets the partial message. */
size_t sr_client_begin(sr_client_t *c);
int sr_client_commit(sr_client_t *c, size_t start, int type, int flags, int seq, int ser);
/* sr_client_commit for a message whose first ann_len payload bytes (appended
 * by the caller right after sr_client_begin) are annotation chunks. */
int sr_client_commit_ann(sr_client_t *c, size_t start, int type, int flags, int seq, int ser,
                         size_t ann_len);
void sr_client_drop(sr_client_t *c);

/* Sends everything queued (one write; encrypted first on TLS) before the
 * deadline; timeout is only quoted in the text. Returns 0, or a negative
 * code with *e filled (the connection closed): SR_ECLOSED with e->sent 0
 * when the connection could not carry a request (the peer closed it or
 * sent something unasked; TLS session tickets are consumed). A oneway message, or a
 * write the socket took in part, sets TCP_NODELAY so that what follows does
 * not wait for an acknowledgement. */
int sr_client_send(sr_client_t *c, double deadline, double timeout, sr_client_err_t *e);

/* Reads until one whole message is framed, before the deadline. Returns 0
 * with *m pointing into the framer (valid until the next receive), or a
 * negative code with *e filled (e->sent = 1; the connection closed). */
int sr_client_receive(sr_client_t *c, double deadline, double timeout, sr_wire_msg_t *m,
                      sr_client_err_t *e);

#endif
