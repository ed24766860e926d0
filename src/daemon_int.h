/*
 * daemon_int.h -- the daemon's private structures, shared by its four files:
 *
 *   daemon.c        the daemon object: its thread and command loop, the
 *                   owner API (listen/unlisten/register/quiesce), listeners,
 *                   events to the owner
 *   daemon_write.c  the write side of a connection and the connection table:
 *                   the only code both threads run, so every lock on a
 *                   connection's state (w->mu, d->tab_mu) is taken there
 *   daemon_proto.c  the Pyro protocol: CONNECT and its answers (CONNECTOK,
 *                   CONNECTFAIL), PING, INVOKE -> event
 *   daemon_conn.c   a connection on the daemon thread: accept, read, frame,
 *                   close, back-pressure, and the sweep timer (deadlines)
 *   daemon_http.c   HTTP listeners (the Hessian exporter): parse requests
 *                   (http-parser), answer refusals, POST -> event
 *
 * Nothing here is C API (daemon.h is). A field belongs to the thread running
 * the loop (the daemon thread, or the owner while it holds the loop: see
 * "who runs the loop" in daemon.c) unless its comment says otherwise; "the
 * daemon thread" below (and in these files) means that thread, "the owner"
 * the Lua thread outside the loop.
 */
#ifndef SR_DAEMON_INT_H
#define SR_DAEMON_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "auth.h"
#include "daemon.h"
#include "wire.h"

/* Levels of the log lines sent to the owner (SR_EV_LOG). */
#define LOG_DEBUG 10
#define LOG_INFO 20
#define LOG_WARNING 30
#define LOG_ERROR 40

#define READ_CHUNK 65536
#define GRACE_MS 2000
/* Back-pressure: a connection with limits.max_queued_conn requests awaiting
 * their reply is not read until it is down to a quarter of that (bounds
 * memory for clients that pipeline without reading); a listener with
 * limits.max_queued INVOKEs not yet dispatched by the owner reads none of its
 * connections until it is down to half (checked by the sweep timer). */

/* The sweep timer (deadlines, idle connections, listener back-pressure) runs
 * every SWEEP_MIN_MS..SWEEP_MAX_MS depending on the shortest limit. */
#define SWEEP_MIN_MS 10
#define SWEEP_MAX_MS 1000

/* A listener's count of INVOKEs handed to the owner and not yet dispatched;
 * shared by the listener and its pending events (refcounted: a listener may
 * be gone before the owner dispatches what it queued). */
typedef struct sr_dcount_s {
  atomic_int refs;
  atomic_uint queued;
  atomic_size_t queued_bytes; /* their payload bytes (max_queued_bytes) */
  atomic_size_t reply_bytes;  /* reply bytes queued by the listener's
                                 connections (max_reply_bytes) */
} sr_dcount_t;

enum { RUN_OWNER = 0, RUN_THREAD = 1 };

enum { CMD_LISTEN = 1, CMD_UNLISTEN, CMD_REGISTER, CMD_UNREGISTER, CMD_QUIESCE, CMD_STOP,
       CMD_REPLY, CMD_FLUSH, CMD_CLOSE, CMD_RESUME, CMD_LIMITS };

/* The common head of everything on d->cmds. */
typedef struct sr_cmdhead_s {
  sr_qnode_t node;
  int kind;
} sr_cmdhead_t;

/* A synchronous command: lives on the owner's stack while it waits. */
typedef struct sr_cmd_s {
  sr_cmdhead_t head;
  int sync;
  int finished;                 /* sync: done (under d->run_mu) */
  int rc;
  char *err;
  size_t errlen;
  struct sockaddr_storage addr; /* LISTEN */
  const char *where;            /* LISTEN: "host:port" for messages */
  unsigned ser_mask;            /* LISTEN */
  int protocol;                 /* LISTEN: SR_DAEMON_PROTO_* */
  int port_out;                 /* LISTEN */
  uint32_t listener;            /* everything but STOP/QUIESCE; LISTEN: out */
  const char *name;             /* REGISTER/UNREGISTER */
  const uint8_t *const *meta;   /* REGISTER */
  const size_t *meta_len;       /* REGISTER */
  const sr_listener_obj_t *objs; /* LISTEN: registered before accepting */
  size_t nobjs;
  sr_tls_ctx_t *tls;            /* LISTEN: server TLS context or NULL (borrowed) */
  int has_secret;               /* LISTEN: handshake secret set */
  sr_secret_t secret;
  sr_listener_limits_t lim;     /* LISTEN, defaults applied; LIMITS: out */
} sr_cmd_t;

/* A reply frame (also used for frames the daemon thread writes itself). */
typedef struct sr_reply_s {
  sr_cmdhead_t head;
  uv_write_t wr;
  struct sr_reply_s *next; /* pending list (sorted by slot) or outq */
  uint64_t conn;
  uint32_t slot;
  size_t len;
  uint8_t data[];
} sr_reply_t;

/* CMD_FLUSH / CMD_CLOSE: the owner asks the daemon thread to write a connection's
 * queued bytes, or to close it after a failed write. */
typedef struct sr_conncmd_s {
  sr_cmdhead_t head;
  uint64_t conn;
} sr_conncmd_t;

/* The write side of a connection, shared by the daemon thread and the owner
 * (which may write replies itself, see sr_daemon_reply). Everything but fd
 * is guarded by mu. Bytes never interleave: the owner writes directly only
 * while nothing is queued for the daemon thread (queued == 0), and every write of
 * the daemon thread goes through outq in order. */
typedef struct sr_wside_s {
  uv_mutex_t mu;
  int refs;          /* the connection's, plus the owner's while it writes */
  int fd;            /* the socket; not written once closed is set */
  int tls;           /* TLS connection: only the daemon thread writes (owns SSL) */
  int closed;
  int queued;        /* replies in outq plus uv_writes in flight */
  uint32_t send_slot; /* slot whose reply goes out next */
  int paused;         /* reading stopped for back-pressure ... */
  uint32_t resume_at; /* ... until send_slot reaches this */
  sr_reply_t *pending;           /* replies ahead of their turn, by slot */
  sr_reply_t *outq, *outq_tail;  /* in order, for the daemon thread to uv_write */
  size_t qbytes;      /* bytes of pending + outq + held + writes in flight */
  size_t max_bytes;   /* max_reply_bytes_conn: pause reading past it */
  size_t max_total;   /* max_reply_bytes of the listener (dc) */
  sr_dcount_t *dc;    /* the listener's counts (a reference) or NULL */
  int over_total;     /* a reply would have passed max_reply_bytes */
  sr_reply_t *held; /* the CONNECTOK of a connection whose first call came with
                       its CONNECT (a pipelining client): it leaves in one write
                       with that call's reply (emit_locked), or first in outq
                       when the daemon thread flushes; counted in queued */
} sr_wside_t;

typedef struct sr_obj_s {
  struct sr_obj_s *next;
  uint8_t *meta[SR_DAEMON_NSER];
  size_t meta_len[SR_DAEMON_NSER];
  char name[];
} sr_obj_t;

struct sr_listener_s;
typedef struct sr_http_s sr_http_t; /* daemon_http.c */

enum { C_OPEN = 0, C_SHUTTING, C_CLOSED };

typedef struct sr_conn_s {
  uv_tcp_t tcp;
  uv_shutdown_t shut;
  sr_daemon_t *d;
  struct sr_listener_s *lis; /* NULL once its listener is gone */
  uint64_t id;
  sr_framer_t fr;
  int state;
  int handshaken;
  sr_reply_t *connectok; /* within conn_process only: see sr_proto_place_connectok */
  int reading;
  int paused;   /* back-pressure (mirror of w->paused, daemon thread side) */
  int dpaused;  /* back-pressure of the listener (max_queued) */
  int quiesced; /* shutdown: never read again */
  int refused;  /* over max_connections: CONNECTFAIL to its first message */
  int counted;  /* counted in lis->nconns */
  int peer_eof; /* the peer half-closed while owed replies: not read again,
                   closed gracefully once they are written (sweep) */
  uint32_t max_owed, resume_below; /* max_queued_conn of its listener */
  uint64_t accepted_at, last_active; /* uv_now() ms */
  uint64_t msg_start; /* uv_now() when the unfinished message began; 0: none */
  uint32_t next_slot; /* slot of the next request */
  sr_wside_t *w;
  sr_tls_t *tls; /* TLS session (daemon thread only) or NULL */
  int tls_fed;   /* bytes were fed to it */
  sr_http_t *http; /* HTTP listener: the request parser (else NULL) */
  char peer[64];
} sr_conn_t;

typedef struct sr_listener_s {
  uv_tcp_t tcp;
  sr_daemon_t *d;
  struct sr_listener_s *next;
  uint32_t id;
  unsigned ser_mask;
  int protocol; /* SR_DAEMON_PROTO_* */
  int tcp_open; /* not yet handed to uv_close */
  int tcp_closed; /* its close callback ran */
  int removed;       /* unlisten done: free when the listener is closed */
  sr_listener_limits_t lim; /* every field set (defaults applied) */
  uint32_t nconns;   /* open connections counted against max_connections */
  sr_dcount_t *dc;   /* INVOKEs queued for the owner (max_queued) */
  /* rate-limited log lines (SR_DAEMON_LOG_EVERY_MS): when the last one of
   * each kind was logged, and how many were not since */
  uint64_t hs_logged_at, accept_logged_at;
  uint32_t hs_unlogged, accept_unlogged;
  uint64_t reply_logged_at;
  uint32_t reply_unlogged;
  unsigned long long nofile; /* the open-files limit at listen (0: none) */
  sr_obj_t *objs;
  sr_tls_ctx_t *tls; /* server TLS context (a reference) or NULL */
  int has_secret;    /* CONNECT must carry this handshake secret */
  sr_secret_t secret;
  char where[300];
} sr_listener_t;

struct sr_daemon_s {
  /* owner side */
  sr_daemon_notify_cb notify;
  void *notify_ud;
  int running;
  int nlisteners;
  uv_thread_t thread;
  uint8_t *tls_rbuf;      /* daemon thread: ciphertext read buffer (READ_CHUNK) */
  sr_qnode_t *rep_first, *rep_last; /* SR_REPLY_BATCH replies not handed over yet */
  int nrep;
  /* shared (locked inside) */
  sr_queue_t cmds;
  sr_queue_t events;
  /* Who runs the loop (daemon.c, "who runs the loop"): the owner while it
   * is idle, the daemon thread while the owner is busy. Under run_mu. */
  uv_mutex_t run_mu;
  uv_cond_t run_cv;   /* the parked thread; the owner waiting for a command */
  int runner;         /* RUN_OWNER or RUN_THREAD */
  int owner_in_loop;  /* the owner is inside uv_run(&loop) */
  int want_back;      /* the owner asked the thread for the loop */
  int stop_req;       /* stop_thread: the thread runs the loop to its end */
  int backend_fd;     /* the loop's (for the parked thread's look) */
  uint64_t progress;  /* the owner's runs of the loop */
  uint64_t due_ms;    /* when the loop's next timer is due (uv_hrtime ms;
                         0: none), as the owner last saw it */
  /* owner side: its loop, and what drains the events after it ran ours */
  uv_loop_t *owner_loop;
  sr_daemon_drain_cb drain;
  void *drain_ud;
  struct sr_lead_s *lead; /* the handles on owner_loop (daemon.c) */
  int quiet;          /* the owner runs the loop and drains right after:
                         flush_events wakes nobody */
  /* daemon thread (or the owner while it runs the loop) */
  uv_loop_t loop;
  sr_wake_t wake;   /* the owner wakes the loop for d->cmds */
  /* events of this loop iteration, handed to the owner in one push and at
   * most one wake-up when the iteration's callbacks are done (flush_check:
   * right after the poll phase; flush_prep: before the loop blocks again,
   * for what close callbacks queued) */
  sr_qnode_t *ev_first, *ev_last;
  uv_check_t flush_check;
  uv_prepare_t flush_prep;
  uv_timer_t grace;
  int grace_closed;
  uv_timer_t sweep; /* deadlines, idle connections, listener back-pressure */
  uint64_t sweep_ms;
  int stopping;
  sr_listener_t *listeners;
  uint32_t next_listener_id;
  uv_mutex_t tab_mu;  /* guards the table below against the owner's lookups */
  int direct_writes;  /* the owner writes replies itself (default) */
  sr_conn_t **conns; /* table indexed by the low 32 bits of a conn id */
  uint32_t *gens;
  uint32_t *freelist;
  uint32_t cap, nfree;
  size_t nconns;
};

/* Appends n to the chain *first..*last (linked through next) that is
 * handed to a queue later in one sr_queue_push_chain. */
static inline void sr_chain_append(sr_qnode_t **first, sr_qnode_t **last, sr_qnode_t *n) {
  n->next = NULL;
  if (*last)
    (*last)->next = n;
  else
    *first = n;
  *last = n;
}

/* ---- daemon.c ------------------------------------------------------------ */

/* Hands ev (owned) to the owner: batched until the end of the loop
 * iteration on the daemon thread, at once from any other thread. */
void sr_daemon_push_event(sr_daemon_t *d, sr_event_t *ev);
/* A log line for the owner (an SR_EV_LOG event; dropped under OOM). */
void sr_dlog(sr_daemon_t *d, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The same about listener lis (NULL: none): the event carries its id, and
 * SR_DAEMON_SER_HESSIAN as serializer when lis speaks HTTP, so the owner
 * logs it under the right exporter's name. sr_clog: about connection c. */
void sr_dlog_on(sr_daemon_t *d, const sr_listener_t *lis, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
#define sr_clog(c, level, ...) sr_dlog_on((c)->d, (c)->lis, (level), __VA_ARGS__)
/* Stopping and the last connection is gone: closes the grace timer, which
 * lets the loop end. */
void sr_daemon_maybe_finish_stop(sr_daemon_t *d);

/* ---- daemon_write.c (both threads) --------------------------------------- */

/* The connection table: an id carries a generation in its high 32 bits, so
 * a late reply cannot reach a reused slot. add/remove run on the daemon
 * thread under d->tab_mu; lookup runs on the daemon thread without it. */
int sr_conn_table_add(sr_daemon_t *d, sr_conn_t *c);
void sr_conn_table_remove(sr_daemon_t *d, sr_conn_t *c);
sr_conn_t *sr_conn_lookup(sr_daemon_t *d, uint64_t id);

/* A write side for fd counting its queued reply bytes against lim and dc's
 * reply_bytes (dc may be NULL; a reference is taken). */
sr_wside_t *sr_wside_new(int fd, const sr_listener_limits_t *lim, sr_dcount_t *dc);
/* Closes c after a write failed or a reply passed max_reply_bytes (logged
 * with the peer and the limit, rate-limited). */
void sr_conn_close_write_failed(sr_conn_t *c);
/* Drops a reference of a listener's counts. */
void sr_dcount_release(sr_dcount_t *dc);
void sr_wside_release(sr_wside_t *w);
/* The owner writes nothing more on w (the connection is closing). */
void sr_wside_close(sr_wside_t *w);
/* Nonzero while bytes are queued or being written (or a CONNECTOK held). */
int sr_wside_busy(sr_wside_t *w);
/* Nonzero when the connection owes a reply (next_slot: the slot of its next
 * request) or has bytes left to write. */
int sr_wside_owes(sr_wside_t *w, uint32_t next_slot);
/* Keeps rep (owned), the CONNECTOK of a pipelining client, to leave with
 * the reply to the request that came with it. */
void sr_wside_hold(sr_wside_t *w, sr_reply_t *rep);
/* Back-pressure: when the replies owed plus those not yet taken by the
 * socket reach max_owed, or their bytes queued reach max_reply_bytes_conn,
 * marks w paused until the connection owes resume_below (and a quarter of
 * those bytes) and returns 1 (else 0); *outstanding and *qbytes get the
 * counts. */
int sr_wside_pause(sr_wside_t *w, uint32_t next_slot, uint32_t max_owed, uint32_t resume_below,
                   uint32_t *outstanding, size_t *qbytes);

/* Daemon thread: hands c's queued bytes to uv_write in order (TLS: encrypts
 * them first). */
void sr_conn_flush(sr_conn_t *c);
/* Writes r (owned) after everything queued before it (no slot: the
 * handshake answers). */
void sr_conn_write(sr_conn_t *c, sr_reply_t *r);
/* Puts reply r (owned) in its slot's order and writes what is due. */
void sr_conn_submit(sr_conn_t *c, sr_reply_t *r);
/* TLS: queues the ciphertext waiting in c's session. Returns 0, or -1 when
 * c must be closed (the caller closes it). */
int sr_conn_tls_send(sr_conn_t *c);

/* ---- daemon_proto.c (daemon thread) -------------------------------------- */

/* The first message of a connection (must be CONNECT): answers CONNECTOK
 * (left in c->connectok without TLS, see sr_proto_place_connectok) or
 * CONNECTFAIL and a graceful close. */
void sr_proto_connect(sr_conn_t *c, const sr_wire_msg_t *m);
/* Places the CONNECTOK left in c->connectok: held for the reply to m when m
 * is an INVOKE that will be answered, else (m NULL too) written now. */
void sr_proto_place_connectok(sr_conn_t *c, const sr_wire_msg_t *m);
/* A message after the handshake: PING is answered, INVOKE becomes an event
 * for the owner, anything else closes the connection. */
void sr_proto_request(sr_conn_t *c, const sr_wire_msg_t *m);
/* Hands a request to the owner as an INVOKE event (in the connection's next
 * reply slot unless flags has ONEWAY; corr: the 16-byte correlation id
 * or NULL): data is pre[0..prelen) (its
 * name_len) then p[0..n); counted against the listener's max_queued and
 * max_queued_bytes, pausing the connection past them. Closes c on OOM. */
void sr_proto_queue_invoke(sr_conn_t *c, uint16_t seq, uint16_t flags, uint16_t ser,
                           const uint8_t *corr, const uint8_t *pre, size_t prelen, const uint8_t *p, size_t n);
/* The first message (m, or NULL for a bad one) of a connection refused for
 * max_connections: CONNECTFAIL naming the limit. */
void sr_proto_refuse(sr_conn_t *c, const sr_wire_msg_t *m);
/* Sends CONNECTFAIL with text encoded by ser, then closes gracefully. */
void sr_proto_fail_handshake(sr_conn_t *c, uint16_t ser, uint16_t seq, const char *text);

/* ---- daemon_conn.c (daemon thread) --------------------------------------- */

/* uv_connection_cb of a listener's socket (server->data: the listener). */
void sr_conn_accept_cb(uv_stream_t *server, int status);
/* Closes c now (pending writes are cancelled). Idempotent. */
void sr_conn_close_now(sr_conn_t *c);
/* Stops reading, lets queued writes finish, then closes. Idempotent. */
void sr_conn_close_graceful(sr_conn_t *c);
/* Rate limit of a flood-prone log line: 1 when one may be logged now
 * (*unlogged then holds how many were skipped since the last; the caller
 * reports and resets it), 0 when this one is only counted. */
int sr_log_allowed(uint64_t *logged_at, uint32_t *unlogged, uint64_t now);
/* Back-pressure of the connection released (its replies left): reads
 * again. */
void sr_conn_resume(sr_conn_t *c);
/* (Re)starts the sweep timer at a quarter of the shortest time limit of
 * the listeners. */
void sr_sweep_schedule(sr_daemon_t *d);
/* A connection just paused for its listener: sweep again soon. */
void sr_sweep_soon(sr_daemon_t *d);

/* ---- daemon_http.c (daemon thread) --------------------------------------- */

/* Gives c a request parser (c->http). Returns 0 or SR_ENOMEM. */
int sr_http_conn_init(sr_conn_t *c);
void sr_http_conn_free(sr_conn_t *c); /* idempotent */
/* Feeds bytes read to c's parser: refusals are answered, requests become
 * events. Returns how many requests completed. */
int sr_http_conn_input(sr_conn_t *c, const uint8_t *p, size_t n);
/* Bytes of the request c has started and not finished (0: none). */
size_t sr_http_pending(const sr_conn_t *c);
/* c reads no more; it is closed once what it is owed is written. */
void sr_http_last_request(sr_conn_t *c);
/* Refuses c's request with status and text (logged, answered, closed after). */
void sr_http_refuse(sr_conn_t *c, int status, const char *text);

#endif
