/*
 * daemon.h -- the daemon: one process-wide libuv loop that serves every
 * listener of the process (one per host:port; what Pyro4 calls a daemon,
 * its exporters share), run by a C thread of its own or by the owner (see
 * sr_daemon_set_owner_loop). It accepts, reads, frames and validates,
 * answers the handshake (CONNECT, from per-object CONNECTOK payloads cached
 * at registration) and wire PING itself, and hands INVOKE requests to the
 * owner as events. It never touches Lua. The code is split along its thread
 * seams (daemon_int.h lists the files).
 *
 * Threads: every sr_daemon_* function below is called from ONE thread (the
 * Lua thread, "the owner"). The daemon's loop is run by one thread at a
 * time: the owner while it is idle (it watches the loop from its own loop,
 * runs it and drains the events at once: a request is read, served and
 * answered on one thread), the daemon thread while the owner is busy (it
 * takes the loop when the owner left its work undone for
 * SR_DAEMON_TAKEOVER_MS, and gives it back when the owner is idle again).
 * Commands reach the loop through a queue and a wake-up (sr_wake_t,
 * queue.h). listen/unlisten/register/unregister/quiesce/limits are
 * synchronous (they return once the loop has done them -- run by the owner
 * itself when it holds the loop -- so "address in use" is reported to the
 * caller and a name is reachable as soon as register returns). reply never
 * waits for the loop (see sr_daemon_set_direct_writes, sr_daemon_reply_via).
 * Events (INVOKE requests, log lines) go the other way through a second
 * queue: the thread running the loop collects what one loop iteration
 * produced and pushes it in one go; after pushing to an empty queue the
 * daemon thread calls the owner's notify callback (from the daemon thread:
 * it must only wake the owner up, e.g. sr_wake_send); the owner, when it ran
 * the loop, drains them itself.
 *
 * Ordering: each non-oneway INVOKE (and each wire PING) of a connection gets
 * the next reply slot of that connection. Replies may be handed over in any
 * order; they leave in slot order. Every slot must be answered exactly once
 * (sr_daemon_reply), or later replies of that connection wait (and, past
 * max_queued_conn owed replies, the connection is no longer read).
 *
 * Lifetime: the loop and the thread start on the first successful listen
 * and are stopped (by the thread) and joined when the last listener is
 * unlistened (or by sr_daemon_free). Stopping shuts connections down
 * gracefully: queued replies are written first (bounded by a 2 s grace
 * timer).
 */
#ifndef SR_DAEMON_H
#define SR_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "queue.h"
#include "sr.h"
#include "tls.h"

typedef struct sr_daemon_s sr_daemon_t;

/* Serializer ids 0..SR_DAEMON_NSER-1 can carry cached CONNECTOK payloads
 * (1 serpent, 2 json). */
#define SR_DAEMON_NSER 3
/* Longest object name (Pyro object id) a listener registers. */
#define SR_DAEMON_MAX_NAME 1024

enum sr_event_kind_e {
  SR_EV_INVOKE = 1, /* data = INVOKE payload as received: the owner
                       inflates it when flags has COMPRESSED (not the
                       daemon thread, whose time every connection shares) */
  SR_EV_LOG = 2     /* data = NUL-terminated message; level = 10..40;
                       listener: the one it is about (0: none), serializer
                       SR_DAEMON_SER_HESSIAN when that speaks HTTP */
};

/* An event for the owner thread; one malloc'd block (free() it). */
typedef struct sr_event_s {
  sr_qnode_t node; /* first member */
  int kind;
  int level;          /* SR_EV_LOG: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR */
  uint32_t listener;  /* listener id the request arrived on */
  uint64_t conn;      /* connection id (for sr_daemon_reply) */
  uint32_t slot;      /* reply slot; meaningless for oneway requests */
  uint16_t seq;       /* request sequence number (echo it) */
  uint16_t flags;     /* request flags */
  size_t max_plain;   /* SR_EV_INVOKE: limit of the inflated payload
                         (the listener's max_message) */
  uint16_t serializer; /* SR_DAEMON_SER_HESSIAN: a request of an HTTP listener */
  size_t len;         /* bytes in data (without the NUL of a log line) */
  size_t name_len;    /* HTTP: data starts with the request's path (the
                         object name), this many bytes; the body follows */
  uint32_t max_depth;    /* SR_EV_INVOKE: the decode limits of its listener */
  uint32_t max_elements; /* (sr_listener_limits_t), for the owner's decoder */
  uint32_t max_oneway;      /* SR_EV_INVOKE: the listener's limits the owner */
  uint32_t call_timeout_ms; /* enforces (sr_listener_limits_t) */
  struct sr_dcount_s *dc; /* SR_EV_INVOKE: the listener's queue count (see
                             sr_daemon_event_done) */
  uint8_t has_corr;       /* SR_EV_INVOKE: the request carried a CORR */
  uint8_t corr[16];       /* annotation (correlation id, 16 uuid bytes) */
  uint8_t data[];
} sr_event_t;

/* The owner calls this for every event taken before freeing it (any kind):
 * an INVOKE stops counting against its listener's max_queued. */
void sr_daemon_event_done(sr_event_t *ev);

typedef void (*sr_daemon_notify_cb)(void *ud);
typedef void (*sr_daemon_drain_cb)(void *ud);

/* Resource limits of one listener (part of sr_listen_opts_t). A zero field
 * means the default, except where "0: off" is said. */
typedef struct sr_listener_limits_s {
  size_t max_message;        /* data_len + ann_len of a request, checked from
                                the header (SR_WIRE_DEFAULT_MAX_MESSAGE) */
  uint32_t max_connections;  /* open connections; more get CONNECTFAIL (4096) */
  uint32_t send_deadline_ms; /* a started message must be complete within this
                                (slow-loris), else the connection is closed
                                (30000; UINT32_MAX: off) */
  uint32_t idle_timeout_ms;  /* close a connection silent this long that owes
                                nothing (0: off, the default) */
  uint32_t max_queued_conn;  /* replies a connection may owe before it is not
                                read any more (1024; resumes at a quarter) */
  size_t max_reply_bytes_conn; /* reply bytes a connection may have queued
                                (not yet taken by its socket) before it is
                                not read any more (8 MiB; resumes at a quarter) */
  size_t max_reply_bytes;    /* reply bytes queued by all connections of the
                                listener: a reply that would pass it closes
                                its connection, the reply dropped (256 MiB) */
  size_t max_queued_bytes;   /* request bytes of the listener handed to the
                                owner and not yet dispatched: past it, as
                                max_queued (64 MiB) */
  uint32_t max_oneway;       /* oneway calls of the listener running (started
                                and waiting for I/O) at once; past it further
                                oneway calls are dropped, logged (8192).
                                Enforced by the owner
                                (lsr_daemon_events.c; it travels on each
                                INVOKE event): oneway calls owe no reply
                                slot, so nothing else bounds them */
  uint32_t call_timeout_ms;  /* a call not finished this long after it started
                                (a task waiting for something that never
                                comes) is answered with TimeoutError, its
                                late reply dropped (0: off, the default).
                                Enforced by the owner
                                (lsr_daemon_events.c; it travels on each
                                INVOKE event) */
  uint32_t handshake_timeout_ms; /* a connection must complete its handshake
                                within this from accept, else it is closed
                                (10000; UINT32_MAX: off) */
  uint32_t max_queued;       /* INVOKEs of the listener handed to the owner and
                                not yet dispatched (sr_daemon_event_done);
                                past it no connection of the listener is read
                                until it is down to half (16384) */
  uint32_t max_depth;        /* nesting and total values of a decoded request: */
  uint32_t max_elements;     /* not used by the daemon thread, they travel on
                                each INVOKE event to the owner's decoder
                                (SR_DECODE_DEFAULT_DEPTH, _ELEMENTS: 200,
                                1,000,000) */
} sr_listener_limits_t;

#define SR_DAEMON_DEFAULT_MAX_CONNECTIONS 4096u
#define SR_DAEMON_DEFAULT_SEND_DEADLINE_MS 30000u
#define SR_DAEMON_DEFAULT_MAX_QUEUED_CONN 1024u
#define SR_DAEMON_DEFAULT_MAX_QUEUED 16384u
#define SR_DAEMON_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define SR_DAEMON_DEFAULT_MAX_ONEWAY 8192u
#define SR_DAEMON_DEFAULT_MAX_REPLY_BYTES_CONN ((size_t)8 << 20)
#define SR_DAEMON_DEFAULT_MAX_REPLY_BYTES ((size_t)256 << 20)
#define SR_DAEMON_DEFAULT_MAX_QUEUED_BYTES ((size_t)64 << 20)
/* Refusals that can come in floods (handshake timeouts, accept failures)
 * are logged at most once per this many ms per listener, with a count of
 * those not logged. */
#define SR_DAEMON_LOG_EVERY_MS 10000u
/* A connection refused for max_connections that sends no CONNECT is closed
 * after this long. */
#define SR_DAEMON_REFUSED_LINGER_MS 2000u
/* Largest message a connection may send before its handshake succeeded (a
 * CONNECT is tens of bytes): unauthenticated and refused connections cannot
 * make the daemon buffer up to max_message_size each. */
#define SR_DAEMON_HANDSHAKE_MAX_MESSAGE (64u * 1024u)

/* What a listener speaks. HTTP (daemon_http.c): HTTP/1.1 requests, POSTed
 * to the path of a registered object (its name, e.g. "/Service"), become
 * INVOKE events whose serializer is SR_DAEMON_SER_HESSIAN and whose data
 * is the path (name_len bytes) then the body; the owner answers with a
 * whole HTTP response through sr_daemon_reply. */
enum { SR_DAEMON_PROTO_PYRO = 0, SR_DAEMON_PROTO_HTTP = 1 };
/* Not a Pyro4 serializer id: marks the requests of HTTP listeners. */
#define SR_DAEMON_SER_HESSIAN 100
/* Longest head (request line and headers) of an HTTP request: longer ones
 * get 431 before anything is kept of them. */
#define SR_DAEMON_HTTP_MAX_HEAD (16u * 1024u)

/* Creates a daemon (no thread yet). notify(ud) is called from the daemon
 * thread when events become available. Returns 0 or SR_ENOMEM. */
int sr_daemon_new(sr_daemon_t **out, sr_daemon_notify_cb notify, void *ud);

/* Who runs the daemon's loop. Without this, the daemon thread always does.
 * With it, the owner runs the loop itself while it is idle: handles on
 * owner_loop (the owner's own libuv loop, e.g. luv's) watch the daemon
 * loop's backend descriptor and next timer; when either fires the owner
 * runs one non-blocking iteration of the daemon loop, then calls
 * drain(ud) to take the events it produced (no wake-up: they were made on
 * this thread), so a request is read, served and answered on one thread.
 * Meanwhile the daemon thread is parked; when the owner has left the loop's
 * work undone for SR_DAEMON_TAKEOVER_MS (it is busy running a call, or
 * blocked elsewhere), the thread takes the loop and runs it as before,
 * until the owner is idle again (a prepare handle on owner_loop asks for the
 * loop back). The loop is never run by both at once (ownership passes under
 * a mutex). Set it before the first listen, from the owner thread. */
void sr_daemon_set_owner_loop(sr_daemon_t *d, uv_loop_t *owner_loop, sr_daemon_drain_cb drain,
                              void *ud);
/* The owner's wake-up (notify) ran: when the loop is the owner's again (the
 * thread hands it back through notify), runs it once and re-arms the
 * handles. Call it after draining the events. */
void sr_daemon_owner_step(sr_daemon_t *d);
/* The owner is about to run several calls: the thread takes the loop now,
 * to read on and to write the batched replies (SR_REPLY_BATCH) while the
 * owner works; the owner asks for it back when idle. Returns nonzero when
 * the thread holds the loop (batching pays), 0 when the owner keeps it (no
 * owner loop set: the thread always holds it, nonzero). */
int sr_daemon_owner_lend(sr_daemon_t *d);
/* How long the owner may leave the loop's work undone before the thread
 * takes it over (ms). */
#define SR_DAEMON_TAKEOVER_MS 1

/* Stops the thread if it runs (closing every listener and connection, replies
 * already queued are flushed first), joins it and frees everything,
 * including undelivered events. NULL is fine. */
void sr_daemon_free(sr_daemon_t *d);

/* An object to register: its name and CONNECTOK payloads per serializer
 * (meta[ser], meta_len[ser] bytes; NULL for one that is not accepted). */
typedef struct sr_listener_obj_s {
  const char *name;
  const uint8_t *meta[SR_DAEMON_NSER];
  size_t meta_len[SR_DAEMON_NSER];
} sr_listener_obj_t;

/* Security of a listener (part of sr_listen_opts_t). tls: a server context
 * (tls.h) -- every connection is TLS, the listener keeps a reference; NULL:
 * plain TCP. secret/secret_len: the CONNECT handshake value must be this
 * string (Pyro4's _pyroHandshake; compared in constant time on the daemon
 * thread), otherwise the client gets CONNECTFAIL "authentication failed:
 * wrong or missing handshake secret" and is closed; NULL: any handshake is
 * accepted (Pyro4's default).
 *
 * TLS and who writes replies: one SSL object is only ever used by the
 * thread running the loop (one at a time). Replies of a TLS connection are
 * never written by sr_daemon_reply directly (direct writes are skipped for
 * it): it puts them in order in the connection's queue and the loop
 * encrypts and writes them. Reading is read -> decrypt -> framer, all in
 * the loop. */
typedef struct sr_listener_security_s {
  sr_tls_ctx_t *tls;
  const char *secret;
  size_t secret_len;
} sr_listener_security_t;

/* What a listener is opened with; everything is copied by sr_daemon_listen.
 * ser_mask: bit (1 << id) for every serializer accepted on connections (ids
 * 1..SR_DAEMON_NSER-1). objs[0..nobjs) are registered before the first
 * connection is accepted (a client that finds the port open finds them).
 * limits: zero fields take the defaults; security: zeroed for none. */
typedef struct sr_listen_opts_s {
  int protocol;       /* SR_DAEMON_PROTO_PYRO (0) or SR_DAEMON_PROTO_HTTP */
  unsigned ser_mask;
  const sr_listener_obj_t *objs;
  size_t nobjs;
  sr_listener_limits_t limits;
  sr_listener_security_t security;
} sr_listen_opts_t;

/* Starts listening on host:port (port 0: a free port) with opts. host: a
 * numeric address or a name ("localhost" means 127.0.0.1). Returns 0 and
 * fills *listener_id and *bound_port, or a negative code with a message
 * naming host:port in err (SR_EINVAL bad host/port, SR_EIO for bind/listen
 * failures such as "address already in use"). Starts the thread when it is
 * the first listener. */
int sr_daemon_listen(sr_daemon_t *d, const char *host, int port, const sr_listen_opts_t *opts,
                     uint32_t *listener_id, int *bound_port, char *err, size_t errlen);

/* Stops listener_id: closes its socket, shuts its connections down after
 * their queued replies, forgets its objects. The last one stops and joins the
 * thread. Returns 0 or SR_ENOTFOUND. */
int sr_daemon_unlisten(sr_daemon_t *d, uint32_t listener_id);

/* Registers (or replaces) object `name` on listener_id with the CONNECTOK
 * payloads to send when a client asks for metadata: meta[ser] (meta_len[ser]
 * bytes, copied; NULL for a serializer that is not accepted). Returns 0,
 * SR_ENOTFOUND (no such listener), SR_EINVAL (name too long) or SR_ENOMEM. */
int sr_daemon_register(sr_daemon_t *d, uint32_t listener_id, const char *name,
                       const uint8_t *const meta[SR_DAEMON_NSER],
                       const size_t meta_len[SR_DAEMON_NSER]);

/* Removes object `name` from listener_id. Returns 0 or SR_ENOTFOUND. */
int sr_daemon_unregister(sr_daemon_t *d, uint32_t listener_id, const char *name);

/* The limits listener_id runs with, defaults filled in (read on the daemon
 * thread: what its connections are checked against). Returns 0 or
 * SR_ENOTFOUND. */
int sr_daemon_limits(sr_daemon_t *d, uint32_t listener_id, sr_listener_limits_t *out);

/* Shutdown step: every listener stops accepting and stops reading its
 * connections; replies still go out. Returns 0 (also with no thread). */
int sr_daemon_quiesce(sr_daemon_t *d);

/* Sends the complete reply frame frame[0..len) for slot `slot` of
 * connection conn: written now when it is next in order (direct writes, see
 * below), else copied and kept until its turn. A reply for a connection that
 * is gone is dropped; a socket error closes that connection. Returns 0 or
 * SR_ENOMEM. */
int sr_daemon_reply(sr_daemon_t *d, uint64_t conn, uint32_t slot, const uint8_t *frame,
                    size_t len);

/* Who writes replies. On (the default), sr_daemon_reply writes the frame
 * to the socket itself with a non-blocking send() when the reply is next in
 * order and nothing is queued for the daemon thread (only what the socket
 * does not take is handed to the daemon thread): one cross-thread wake-up
 * per call instead of two. Off: every reply goes to the daemon thread,
 * which writes it. Either way one connection's bytes never interleave and replies keep
 * request order. Set it while nothing listens. */
void sr_daemon_set_direct_writes(sr_daemon_t *d, int on);
/* sr_daemon_reply with the writer chosen for this one reply (order is kept
 * whichever writes it):
 *   SR_REPLY_DIRECT  the owner sends it now when it is next and nothing is
 *                    queued (as direct writes above)
 *   SR_REPLY_THREAD  handed to the daemon thread now (a wake-up if its
 *                    queue was empty)
 *   SR_REPLY_BATCH   kept until sr_daemon_flush_replies, which hands every
 *                    batched reply over at once: one push, at most one
 *                    wake-up. For replies to a batch of requests drained
 *                    together: the daemon thread writes them while the
 *                    owner works on, instead of the owner paying a send()
 *                    per reply. */
enum { SR_REPLY_THREAD = 0, SR_REPLY_DIRECT = 1, SR_REPLY_BATCH = 2 };
int sr_daemon_reply_via(sr_daemon_t *d, uint64_t conn, uint32_t slot, const uint8_t *frame,
                        size_t len, int how);
void sr_daemon_flush_replies(sr_daemon_t *d);

/* How many CONNECTOKs this process sent in one write with the reply to the
 * INVOKE that came right behind their CONNECT (a client that pipelines its
 * first call). Such a CONNECTOK waits for that reply; every other one is
 * written at once. */
unsigned long sr_daemon_merged_connectoks(void);

/* Detaches every pending event, oldest first (a chain through node.next,
 * NULL when none). The caller free()s each event. */
sr_event_t *sr_daemon_take(sr_daemon_t *d);

/* Number of listeners open (owner's view). */
int sr_daemon_count(const sr_daemon_t *d);

/* Copies the peer address ("ip:port") of connection conn into out (n
 * bytes, NUL-terminated). Returns 0, or SR_ENOTFOUND when it is gone (out
 * is then "?"). For log lines of the owner; with out NULL only whether the
 * connection is still there (the dispatch asks before every call). */
int sr_daemon_peer(sr_daemon_t *d, uint64_t conn, char *out, size_t n);

#endif
