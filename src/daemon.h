/*
 * daemon.h -- the daemon holder: one process-wide C thread with its own libuv
 * loop that serves every Pyro daemon (one per host:port) of the process. It
 * accepts, reads, frames and validates, answers the handshake (CONNECT, from
 * per-object CONNECTOK payloads cached at registration) and wire PING itself,
 * and hands INVOKE requests to the Lua thread as events. It never touches Lua.
 *
 * Threads: every sr_holder_* function below is called from ONE thread (the
 * Lua thread, "the owner"). Commands reach the holder thread through a queue
 * and a uv_async_t on its loop. listen/unlisten/register/unregister/quiesce
 * are synchronous (they return once the holder thread has done them, so
 * "address in use" is reported to the caller and a name is reachable as soon
 * as register returns). reply never waits for the holder (see
 * sr_holder_set_direct_writes, sr_holder_reply_via). Events (INVOKE
 * requests, log lines) go the other way through a second queue: the holder
 * thread collects what one loop iteration produced and pushes it in one go;
 * after pushing to an empty queue it calls the owner's notify callback (from
 * the holder thread: it must only wake the owner up, e.g. sr_async_wake).
 *
 * Ordering: each non-oneway INVOKE (and each wire PING) of a connection gets
 * the next reply slot of that connection. Replies may be handed over in any
 * order; they leave in slot order. Every slot must be answered exactly once
 * (sr_holder_reply), or later replies of that connection wait (and, past
 * max_queued_conn owed replies, the connection is no longer read).
 *
 * Lifetime: the thread starts on the first successful listen and is stopped
 * and joined when the last daemon is unlistened (or by sr_holder_free).
 * Stopping shuts connections down gracefully: queued replies are written
 * first (bounded by a 2 s grace timer).
 */
#ifndef SR_DAEMON_H
#define SR_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "queue.h"
#include "sr.h"
#include "tls.h"

typedef struct sr_holder_s sr_holder_t;

/* Serializer ids 0..SR_HOLDER_NSER-1 can carry cached CONNECTOK payloads
 * (1 serpent, 2 json). */
#define SR_HOLDER_NSER 3
/* Longest object name (Pyro object id) a daemon registers. */
#define SR_HOLDER_MAX_NAME 1024

enum sr_event_kind_e {
  SR_EV_INVOKE = 1, /* data = INVOKE payload (already inflated) */
  SR_EV_LOG = 2     /* data = NUL-terminated message; level = 10..40 */
};

/* An event for the owner thread; one malloc'd block (free() it). */
typedef struct sr_event_s {
  sr_qnode_t node; /* first member */
  int kind;
  int level;          /* SR_EV_LOG: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR */
  uint32_t daemon;    /* daemon id the request arrived on */
  uint64_t conn;      /* connection id (for sr_holder_reply) */
  uint32_t slot;      /* reply slot; meaningless for oneway requests */
  uint16_t seq;       /* request sequence number (echo it) */
  uint16_t flags;     /* request flags, COMPRESSED already removed */
  uint16_t serializer;
  size_t len;         /* bytes in data (without the NUL of a log line) */
  struct sr_dcount_s *dc; /* SR_EV_INVOKE: the daemon's queue count (see
                             sr_holder_event_done) */
  uint8_t data[];
} sr_event_t;

/* The owner calls this for every event taken before freeing it (any kind):
 * an INVOKE stops counting against its daemon's max_queued. */
void sr_holder_event_done(sr_event_t *ev);

typedef void (*sr_holder_notify_cb)(void *ud);

/* Resource limits of one daemon (see sr_holder_set_limits). A zero field
 * means the default, except where "0: off" is said. */
typedef struct sr_holder_limits_s {
  size_t max_message;        /* data_len + ann_len of a request, checked from
                                the header (default: sr_holder_set_max_message) */
  uint32_t max_connections;  /* open connections; more get CONNECTFAIL (4096) */
  uint32_t send_deadline_ms; /* a started message must be complete within this
                                (slow-loris), else the connection is closed
                                (30000; UINT32_MAX: off) */
  uint32_t idle_timeout_ms;  /* close a connection silent this long that owes
                                nothing (0: off, the default) */
  uint32_t max_queued_conn;  /* replies a connection may owe before it is not
                                read any more (1024; resumes at a quarter) */
  uint32_t max_queued;       /* INVOKEs of the daemon handed to the owner and
                                not yet dispatched (sr_holder_event_done);
                                past it no connection of the daemon is read
                                until it is down to half (16384) */
} sr_holder_limits_t;

#define SR_HOLDER_DEFAULT_MAX_CONNECTIONS 4096u
#define SR_HOLDER_DEFAULT_SEND_DEADLINE_MS 30000u
#define SR_HOLDER_DEFAULT_MAX_QUEUED_CONN 1024u
#define SR_HOLDER_DEFAULT_MAX_QUEUED 16384u
/* A connection refused for max_connections that sends no CONNECT is closed
 * after this long. */
#define SR_HOLDER_REFUSED_LINGER_MS 2000u
/* Largest message a connection may send before its handshake succeeded (a
 * CONNECT is tens of bytes): unauthenticated and refused connections cannot
 * make the daemon buffer up to max_message_size each. */
#define SR_HOLDER_HANDSHAKE_MAX_MESSAGE (64u * 1024u)

/* Creates a holder (no thread yet). notify(ud) is called from the holder
 * thread when events become available. Returns 0 or SR_ENOMEM. */
int sr_holder_new(sr_holder_t **out, sr_holder_notify_cb notify, void *ud);

/* Stops the thread if it runs (closing every daemon and connection, replies
 * already queued are flushed first), joins it and frees everything,
 * including undelivered events. NULL is fine. */
void sr_holder_free(sr_holder_t *h);

/* An object to register: its name and CONNECTOK payloads per serializer
 * (meta[ser], meta_len[ser] bytes; NULL for one that is not accepted). */
typedef struct sr_holder_obj_s {
  const char *name;
  const uint8_t *meta[SR_HOLDER_NSER];
  size_t meta_len[SR_HOLDER_NSER];
} sr_holder_obj_t;

/* Starts listening on host:port (port 0: a free port). host: a numeric
 * address or a name ("localhost" means 127.0.0.1). ser_mask: bit (1 << id)
 * for every serializer accepted on connections (ids 1..SR_HOLDER_NSER-1).
 * objs[0..nobjs) are registered before the first connection is accepted (a
 * client that finds the port open finds them; payloads are copied).
 * Returns 0 and fills *daemon_id and *bound_port, or a negative code with a
 * message naming host:port in err (SR_EINVAL bad host/port, SR_EIO for
 * bind/listen failures such as "address already in use"). Starts the thread
 * when it is the first daemon. */
int sr_holder_listen(sr_holder_t *h, const char *host, int port, unsigned ser_mask,
                     const sr_holder_obj_t *objs, size_t nobjs, uint32_t *daemon_id,
                     int *bound_port, char *err, size_t errlen);

/* Stops daemon_id: closes its listener, shuts its connections down after
 * their queued replies, forgets its objects. The last one stops and joins the
 * thread. Returns 0 or SR_ENOTFOUND. */
int sr_holder_unlisten(sr_holder_t *h, uint32_t daemon_id);

/* Registers (or replaces) object `name` on daemon_id with the CONNECTOK
 * payloads to send when a client asks for metadata: meta[ser] (meta_len[ser]
 * bytes, copied; NULL for a serializer that is not accepted). Returns 0,
 * SR_ENOTFOUND (no such daemon), SR_EINVAL (name too long) or SR_ENOMEM. */
int sr_holder_register(sr_holder_t *h, uint32_t daemon_id, const char *name,
                       const uint8_t *const meta[SR_HOLDER_NSER],
                       const size_t meta_len[SR_HOLDER_NSER]);

/* Removes object `name` from daemon_id. Returns 0 or SR_ENOTFOUND. */
int sr_holder_unregister(sr_holder_t *h, uint32_t daemon_id, const char *name);

/* The limits daemon_id runs with, defaults filled in (read on the holder
 * thread: what its connections are checked against). Returns 0 or
 * SR_ENOTFOUND. */
int sr_holder_limits(sr_holder_t *h, uint32_t daemon_id, sr_holder_limits_t *out);

/* Shutdown step: every daemon stops accepting and stops reading its
 * connections; replies still go out. Returns 0 (also with no thread). */
int sr_holder_quiesce(sr_holder_t *h);

/* Sends the complete reply frame frame[0..len) for slot `slot` of
 * connection conn: written now when it is next in order (direct writes, see
 * below), else copied and kept until its turn. A reply for a connection that
 * is gone is dropped; a socket error closes that connection. Returns 0 or
 * SR_ENOMEM. */
int sr_holder_reply(sr_holder_t *h, uint64_t conn, uint32_t slot, const uint8_t *frame,
                    size_t len);

/* Who writes replies. On (the default), sr_holder_reply writes the frame
 * to the socket itself with a non-blocking send() when the reply is next in
 * order and nothing is queued for the holder (only what the socket does not
 * take is handed to the holder thread): one cross-thread wake-up per call
 * instead of two. Off: every reply goes to the holder thread, which writes
 * it. Either way one connection's bytes never interleave and replies keep
 * request order. Set it while no daemon listens. */
void sr_holder_set_direct_writes(sr_holder_t *h, int on);
/* sr_holder_reply with the writer chosen for this one reply (order is kept
 * whichever writes it):
 *   SR_REPLY_DIRECT  the owner sends it now when it is next and nothing is
 *                    queued (as direct writes above)
 *   SR_REPLY_HOLDER  handed to the holder thread now (a wake-up if its
 *                    queue was empty)
 *   SR_REPLY_BATCH   kept until sr_holder_flush_replies, which hands every
 *                    batched reply over at once: one push, at most one
 *                    wake-up. For replies to a batch of requests drained
 *                    together: the holder thread writes them while the
 *                    owner works on, instead of the owner paying a send()
 *                    per reply. */
enum { SR_REPLY_HOLDER = 0, SR_REPLY_DIRECT = 1, SR_REPLY_BATCH = 2 };
int sr_holder_reply_via(sr_holder_t *h, uint64_t conn, uint32_t slot, const uint8_t *frame,
                        size_t len, int how);
void sr_holder_flush_replies(sr_holder_t *h);

/* How many CONNECTOKs this process sent in one write with the reply to the
 * INVOKE that came right behind their CONNECT (a client that pipelines its
 * first call). Such a CONNECTOK waits for that reply; every other one is
 * written at once. */
unsigned long sr_holder_merged_connectoks(void);

/* Detaches every pending event, oldest first (a chain through node.next,
 * NULL when none). The caller free()s each event. */
sr_event_t *sr_holder_take(sr_holder_t *h);

/* Number of daemons currently listening (owner's view). */
int sr_holder_count(const sr_holder_t *h);

/* Limit on data_len + ann_len of incoming messages (default
 * SR_WIRE_DEFAULT_MAX_MESSAGE); applies to connections accepted later. */
void sr_holder_set_max_message(sr_holder_t *h, size_t max_message);

/* Copies the peer address ("ip:port") of connection conn into out (n
 * bytes, NUL-terminated). Returns 0, or SR_ENOTFOUND when it is gone (out
 * is then "?"). For log lines of the owner. */
int sr_holder_peer(sr_holder_t *h, uint64_t conn, char *out, size_t n);

/* Limits for the daemons listened from now on (copied; NULL: defaults).
 * Zero fields take the defaults above. Owner thread, like listen. */
void sr_holder_set_limits(sr_holder_t *h, const sr_holder_limits_t *lim);

/* Security of the daemons listened from now on (owner thread, like
 * listen; NULL: none). tls: a server context (tls.h) -- every connection is
 * TLS, the daemon keeps a reference; NULL: plain TCP. secret/secret_len:
 * the CONNECT handshake value must be this string (Pyro4's _pyroHandshake;
 * compared in constant time on the holder thread), otherwise the client
 * gets CONNECTFAIL "authentication failed: wrong or missing handshake
 * secret" and is closed; NULL: any handshake is accepted (Pyro4's default).
 *
 * TLS and who writes replies: one SSL object is only ever used by the
 * holder thread. Replies of a TLS connection are never written by the owner
 * (direct writes are skipped for it): sr_holder_reply puts them in order in
 * the connection's queue and the holder encrypts and writes them. Reading
 * is read -> decrypt -> framer, all on the holder thread. */
typedef struct sr_holder_security_s {
  sr_tls_ctx_t *tls;
  const char *secret;
  size_t secret_len;
} sr_holder_security_t;
void sr_holder_set_security(sr_holder_t *h, const sr_holder_security_t *sec);

/* Payload text helpers (Lua-free, also used for CONNECTFAIL): append the
 * string s[0..n) as a complete payload of serializer ser: 1 serpent (with its
 * header line), 2 JSON, 3 marshal. Returns 0, SR_ENOMEM or SR_ESERIALIZER. */
int sr_holder_encode_string(sr_buf_t *out, int ser, const char *s, size_t n);

#endif
