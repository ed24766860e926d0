/*
 * daemon.c -- the daemon holder thread (see daemon.h for the contract).
 *
 * Owner side (the Lua thread): sr_holder_* functions build commands, push
 * them on h->cmds and wake the holder loop with sr_async_wake (queue.h); synchronous
 * ones wait on a semaphore inside the command. Holder side: one uv loop with
 * the wake-up async, a listener per daemon and a uv_tcp_t per connection.
 * Everything below "holder thread" is touched only by the holder thread while
 * it runs (and by the owner only after joining it).
 *
 * A connection frames bytes with an sr_framer_t, answers CONNECT and PING
 * itself, and turns each INVOKE into an event for the owner. Replies are put
 * in slot order in the connection's write side (sr_wside_t, shared under a
 * mutex): the owner send()s a reply itself when it is next and nothing is
 * queued, otherwise frames wait in `pending` (early) or `outq` (for the
 * holder's uv_write), so bytes never interleave. Protocol errors during the
 * handshake get a CONNECTFAIL, afterwards the connection is closed without a
 * reply; both are logged (as events, since only the owner may log). Each
 * daemon has its limits (sr_holder_limits_t): a connection owing
 * max_queued_conn replies (computed or not yet taken by its socket) is not
 * read until it owes a quarter of that, a daemon with max_queued INVOKEs
 * not yet dispatched reads none of its connections until half are; a sweep
 * timer closes connections past their send deadline or idle timeout.
 */
#include "daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "auth.h"
#include "payload.h"
#include "wire.h"

#define LOG_DEBUG 10
#define LOG_INFO 20
#define LOG_WARNING 30
#define LOG_ERROR 40

#define READ_CHUNK 65536
#define GRACE_MS 2000
/* Back-pressure: a connection with limits.max_queued_conn requests awaiting
 * their reply is not read until it is down to a quarter of that (bounds
 * memory for clients that pipeline without reading); a daemon with
 * limits.max_queued INVOKEs not yet dispatched by the owner reads none of its
 * connections until it is down to half (checked by the sweep timer). */

/* The sweep timer (deadlines, idle connections, daemon back-pressure) runs
 * every SWEEP_MIN_MS..SWEEP_MAX_MS depending on the shortest limit. */
#define SWEEP_MIN_MS 10
#define SWEEP_MAX_MS 1000

/* A daemon's count of INVOKEs handed to the owner and not yet dispatched;
 * shared by the daemon and its pending events (refcounted: a daemon may be
 * gone before the owner dispatches what it queued). */
typedef struct sr_dcount_s {
  atomic_int refs;
  atomic_uint queued;
} sr_dcount_t;

static void dcount_release(sr_dcount_t *dc) {
  if (dc && atomic_fetch_sub(&dc->refs, 1) == 1) free(dc);
}

/* ---- types --------------------------------------------------------------- */

enum { CMD_LISTEN = 1, CMD_UNLISTEN, CMD_REGISTER, CMD_UNREGISTER, CMD_QUIESCE, CMD_STOP,
       CMD_REPLY, CMD_FLUSH, CMD_CLOSE, CMD_RESUME, CMD_LIMITS };

/* The common head of everything on h->cmds. */
typedef struct sr_cmdhead_s {
  sr_qnode_t node;
  int kind;
} sr_cmdhead_t;

/* A synchronous command: lives on the owner's stack while it waits. */
typedef struct sr_cmd_s {
  sr_cmdhead_t head;
  uv_sem_t done;
  int sync;
  int rc;
  char *err;
  size_t errlen;
  struct sockaddr_storage addr; /* LISTEN */
  const char *where;            /* LISTEN: "host:port" for messages */
  unsigned ser_mask;            /* LISTEN */
  int port_out;                 /* LISTEN */
  uint32_t daemon;              /* everything but STOP/QUIESCE; LISTEN: out */
  const char *name;             /* REGISTER/UNREGISTER */
  const uint8_t *const *meta;   /* REGISTER */
  const size_t *meta_len;       /* REGISTER */
  const sr_holder_obj_t *objs;  /* LISTEN: registered before accepting */
  size_t nobjs;
  sr_tls_ctx_t *tls;            /* LISTEN: server TLS context or NULL (borrowed) */
  int has_secret;               /* LISTEN: handshake secret set */
  sr_secret_t secret;
  sr_holder_limits_t lim;       /* LISTEN, defaults applied; LIMITS: out */
} sr_cmd_t;

/* A reply frame (also used for frames the holder writes itself). */
typedef struct sr_reply_s {
  sr_cmdhead_t head;
  uv_write_t wr;
  struct sr_reply_s *next; /* pending list (sorted by slot) or outq */
  uint64_t conn;
  uint32_t slot;
  size_t len;
  uint8_t data[];
} sr_reply_t;

/* CMD_FLUSH / CMD_CLOSE: the owner asks the holder to write a connection's
 * queued bytes, or to close it after a failed write. */
typedef struct sr_conncmd_s {
  sr_cmdhead_t head;
  uint64_t conn;
} sr_conncmd_t;

/* The write side of a connection, shared by the holder thread and the owner
 * (which may write replies itself, see sr_holder_reply). Everything but fd
 * is guarded by mu. Bytes never interleave: the owner writes directly only
 * while nothing is queued for the holder (queued == 0), and every write of
 * the holder goes through outq in order. */
typedef struct sr_wside_s {
  uv_mutex_t mu;
  int refs;          /* the connection's, plus the owner's while it writes */
  int fd;            /* the socket; not written once closed is set */
  int tls;           /* TLS connection: only the holder writes (it owns the SSL) */
  int closed;
  int queued;        /* replies in outq plus uv_writes in flight */
  uint32_t send_slot; /* slot whose reply goes out next */
  int paused;         /* reading stopped for back-pressure ... */
  uint32_t resume_at; /* ... until send_slot reaches this */
  sr_reply_t *pending;           /* replies ahead of their turn, by slot */
  sr_reply_t *outq, *outq_tail;  /* in order, for the holder to uv_write */
  sr_reply_t *held; /* the CONNECTOK of a connection whose first call came with
                       its CONNECT (a pipelining client): it leaves in one write
                       with that call's reply (emit_locked), or first in outq
                       when the holder flushes; counted in queued */
} sr_wside_t;

typedef struct sr_obj_s {
  struct sr_obj_s *next;
  uint8_t *meta[SR_HOLDER_NSER];
  size_t meta_len[SR_HOLDER_NSER];
  char name[];
} sr_obj_t;

struct sr_daemon_s;

enum { C_OPEN = 0, C_SHUTTING, C_CLOSED };

typedef struct sr_conn_s {
  uv_tcp_t tcp;
  uv_shutdown_t shut;
  sr_holder_t *h;
  struct sr_daemon_s *d; /* NULL once its daemon is gone */
  uint64_t id;
  sr_framer_t fr;
  int state;
  int handshaken;
  sr_reply_t *connectok; /* within conn_process only: see place_connectok */
  int reading;
  int paused;   /* back-pressure (mirror of w->paused, holder side) */
  int dpaused;  /* back-pressure of the daemon (max_queued) */
  int quiesced; /* shutdown: never read again */
  int refused;  /* over max_connections: CONNECTFAIL to its first message */
  int counted;  /* counted in d->nconns */
  uint32_t max_owed, resume_below; /* max_queued_conn of its daemon */
  uint64_t accepted_at, last_active; /* uv_now() ms */
  uint64_t msg_start; /* uv_now() when the unfinished message began; 0: none */
  uint32_t next_slot; /* slot of the next request */
  sr_wside_t *w;
  sr_tls_t *tls; /* TLS session (holder thread only) or NULL */
  int tls_fed;   /* bytes were fed to it */
  char peer[64];
} sr_conn_t;

typedef struct sr_daemon_s {
  uv_tcp_t listener;
  sr_holder_t *h;
  struct sr_daemon_s *next;
  uint32_t id;
  unsigned ser_mask;
  int listener_open; /* not yet handed to uv_close */
  int listener_closed; /* its close callback ran */
  int removed;       /* unlisten done: free when the listener is closed */
  sr_holder_limits_t lim; /* every field set (defaults applied) */
  uint32_t nconns;   /* open connections counted against max_connections */
  sr_dcount_t *dc;   /* INVOKEs queued for the owner (max_queued) */
  sr_obj_t *objs;
  sr_tls_ctx_t *tls; /* server TLS context (a reference) or NULL */
  int has_secret;    /* CONNECT must carry this handshake secret */
  sr_secret_t secret;
  char where[300];
} sr_daemon_t;

struct sr_holder_s {
  /* owner side */
  sr_holder_notify_cb notify;
  void *notify_ud;
  int running;
  int ndaemons;
  uv_thread_t thread;
  size_t max_message;
  sr_tls_ctx_t *next_tls; /* security for the next listen (a reference) */
  int next_has_secret;
  sr_secret_t next_secret;
  uint8_t *tls_rbuf;      /* holder thread: ciphertext read buffer (READ_CHUNK) */
  sr_holder_limits_t next_lim; /* for the next listen (zero fields: defaults) */
  sr_qnode_t *rep_first, *rep_last; /* SR_REPLY_BATCH replies not handed over yet */
  int nrep;
  /* shared (locked inside) */
  sr_queue_t cmds;
  sr_queue_t events;
  /* holder thread */
  uv_loop_t loop;
  uv_async_t wake;
  /* events of this loop iteration, handed to the owner in one push and at
   * most one wake-up when the iteration's callbacks are done (flush_check:
   * right after the poll phase; flush_prep: before the loop blocks again,
   * for what close callbacks queued) */
  sr_qnode_t *ev_first, *ev_last;
  uv_check_t flush_check;
  uv_prepare_t flush_prep;
  uv_timer_t grace;
  int grace_closed;
  uv_timer_t sweep; /* deadlines, idle connections, daemon back-pressure */
  uint64_t sweep_ms;
  int stopping;
  sr_daemon_t *daemons;
  uint32_t next_daemon_id;
  uv_mutex_t tab_mu;  /* guards the table below against the owner's lookups */
  int direct_writes;  /* the owner writes replies itself (default) */
  sr_conn_t **conns; /* table indexed by the low 32 bits of a conn id */
  uint32_t *gens;
  uint32_t *freelist;
  uint32_t cap, nfree;
  size_t nconns;
};

/* ---- payload text helpers ------------------------------------------------ */

static int put_hex_escape(sr_buf_t *b, const char *fmt, unsigned v) {
  char tmp[8];
  int n = snprintf(tmp, sizeof tmp, fmt, v);
  return sr_buf_append(b, tmp, (size_t)n);
}

int sr_holder_encode_string(sr_buf_t *out, int ser, const char *s, size_t n) {
  int rc = 0;
  if (ser == SR_SER_MARSHAL) {
    uint8_t hdr[5] = { 'u', (uint8_t)(n & 0xff), (uint8_t)((n >> 8) & 0xff),
                       (uint8_t)((n >> 16) & 0xff), (uint8_t)((n >> 24) & 0xff) };
    if ((rc = sr_buf_append(out, hdr, 5)) < 0) return rc;
    return sr_buf_append(out, s, n);
  }
  if (ser != SR_SER_JSON && ser != SR_SER_SERPENT) return SR_ESERIALIZER;
  int json = ser == SR_SER_JSON;
  if (!json && (rc = sr_buf_puts(out, "# serpent utf-8 python3.2\n")) < 0) return rc;
  char q = json ? '"' : '\'';
  if ((rc = sr_buf_putc(out, (uint8_t)q)) < 0) return rc;
  for (size_t i = 0; i < n && rc == 0; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == (unsigned char)q || c == '\\') {
      rc = sr_buf_putc(out, '\\');
      if (rc == 0) rc = sr_buf_putc(out, c);
    } else if (c == '\n') {
      rc = sr_buf_puts(out, "\\n");
    } else if (c == '\r') {
      rc = sr_buf_puts(out, "\\r");
    } else if (c == '\t') {
      rc = sr_buf_puts(out, "\\t");
    } else if (c < 0x20 || c == 0x7f) {
      rc = put_hex_escape(out, json ? "\\u%04x" : "\\x%02x", c);
    } else {
      rc = sr_buf_putc(out, c);
    }
  }
  if (rc == 0) rc = sr_buf_putc(out, (uint8_t)q);
  return rc;
}

/* ---- events to the owner ------------------------------------------------- */

/* Appends n to the chain *first..*last (linked through next) that is
 * handed to a queue later in one sr_queue_push_chain. */
static void chain_append(sr_qnode_t **first, sr_qnode_t **last, sr_qnode_t *n) {
  n->next = NULL;
  if (*last)
    (*last)->next = n;
  else
    *first = n;
  *last = n;
}

/* The holder whose thread this is (NULL on any other thread). */
static _Thread_local sr_holder_t *tl_holder;

static void flush_events(sr_holder_t *h) {
  if (h->ev_first == NULL) return;
  sr_qnode_t *first = h->ev_first, *last = h->ev_last;
  h->ev_first = h->ev_last = NULL;
  if (sr_queue_push_chain(&h->events, first, last) && h->notify) h->notify(h->notify_ud);
}

static void on_flush_check(uv_check_t *c) { flush_events(c->data); }
static void on_flush_prep(uv_prepare_t *p) { flush_events(p->data); }

/* On the holder thread, while it serves, events wait for the end of the
 * loop iteration (flush_events): everything read from the sockets that
 * were ready together crosses in one go, with one wake-up of the owner
 * instead of one per event the owner manages to take in between. */
static void push_event(sr_holder_t *h, sr_event_t *ev) {
  if (tl_holder == h && !h->stopping) {
    chain_append(&h->ev_first, &h->ev_last, &ev->node);
    return;
  }
  if (sr_queue_push(&h->events, &ev->node) && h->notify) h->notify(h->notify_ud);
}

static void hlog(sr_holder_t *h, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void hlog(sr_holder_t *h, int level, const char *fmt, ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof text) n = (int)sizeof text - 1;
  sr_event_t *ev = malloc(sizeof *ev + (size_t)n + 1);
  if (ev == NULL) return; /* a lost log line under OOM */
  memset(ev, 0, sizeof *ev);
  ev->kind = SR_EV_LOG;
  ev->level = level;
  ev->len = (size_t)n;
  memcpy(ev->data, text, (size_t)n + 1);
  push_event(h, ev);
}

/* ---- connection table (holder thread) ------------------------------------ */

static int conn_table_add_locked(sr_holder_t *h, sr_conn_t *c) {
  if (h->nfree == 0) {
    uint32_t ncap = h->cap ? h->cap * 2 : 16;
    sr_conn_t **conns = realloc(h->conns, ncap * sizeof *conns);
    if (conns == NULL) return SR_ENOMEM;
    h->conns = conns;
    uint32_t *gens = realloc(h->gens, ncap * sizeof *gens);
    if (gens == NULL) return SR_ENOMEM;
    h->gens = gens;
    uint32_t *fl = realloc(h->freelist, ncap * sizeof *fl);
    if (fl == NULL) return SR_ENOMEM;
    h->freelist = fl;
    for (uint32_t i = ncap; i > h->cap; i--) {
      h->conns[i - 1] = NULL;
      h->gens[i - 1] = 1;
      h->freelist[h->nfree++] = i - 1;
    }
    h->cap = ncap;
  }
  uint32_t idx = h->freelist[--h->nfree];
  h->conns[idx] = c;
  c->id = ((uint64_t)h->gens[idx] << 32) | idx;
  h->nconns++;
  return 0;
}

static int conn_table_add(sr_holder_t *h, sr_conn_t *c) {
  uv_mutex_lock(&h->tab_mu);
  int rc = conn_table_add_locked(h, c);
  uv_mutex_unlock(&h->tab_mu);
  return rc;
}

static sr_conn_t *conn_lookup(sr_holder_t *h, uint64_t id) {
  uint32_t idx = (uint32_t)(id & 0xffffffffu);
  if (idx >= h->cap) return NULL;
  sr_conn_t *c = h->conns[idx];
  return (c != NULL && c->id == id) ? c : NULL;
}

static void conn_table_remove(sr_holder_t *h, sr_conn_t *c) {
  uint32_t idx = (uint32_t)(c->id & 0xffffffffu);
  uv_mutex_lock(&h->tab_mu);
  h->conns[idx] = NULL;
  h->gens[idx]++;
  h->freelist[h->nfree++] = idx;
  h->nconns--;
  uv_mutex_unlock(&h->tab_mu);
}

/* ---- write side (both threads) -------------------------------------------- */

/* CONNECTOKs written in one write with the first reply (for the specs). */
static atomic_ulong merged_connectoks;

unsigned long sr_holder_merged_connectoks(void) { return atomic_load(&merged_connectoks); }

static sr_wside_t *wside_new(int fd) {
  sr_wside_t *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  if (uv_mutex_init(&w->mu) != 0) {
    free(w);
    return NULL;
  }
  w->refs = 1;
  w->fd = fd;
  return w;
}

static void free_chain(sr_reply_t *r) {
  while (r) {
    sr_reply_t *n = r->next;
    free(r);
    r = n;
  }
}

static void wside_release(sr_wside_t *w) {
  uv_mutex_lock(&w->mu);
  int last = --w->refs == 0;
  uv_mutex_unlock(&w->mu);
  if (!last) return;
  free_chain(w->pending);
  free_chain(w->outq);
  free(w->held);
  uv_mutex_destroy(&w->mu);
  free(w);
}

static void wside_close(sr_wside_t *w) {
  uv_mutex_lock(&w->mu);
  w->closed = 1;
  uv_mutex_unlock(&w->mu);
}

/* Appends r (owned) to outq. Called with w->mu held. */
static void outq_push_locked(sr_wside_t *w, sr_reply_t *r) {
  r->next = NULL;
  if (w->outq_tail)
    w->outq_tail->next = r;
  else
    w->outq = r;
  w->outq_tail = r;
  w->queued++;
}

static sr_reply_t *copy_reply(const uint8_t *data, size_t len, uint32_t slot) {
  sr_reply_t *r = malloc(sizeof *r + len);
  if (r == NULL) return NULL;
  memset(r, 0, sizeof *r);
  r->len = len;
  r->slot = slot;
  memcpy(r->data, data, len);
  return r;
}

/* Writes the parts of iov (one or two) to fd without blocking. Returns the
 * bytes the socket took (fewer than all when it is full), or -1 when it
 * failed. */
static ssize_t send_parts(int fd, const struct iovec *iov, int cnt) {
  size_t total = 0, done = 0;
  for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
  while (done < total) {
    struct iovec v[2];
    int k = 0;
    size_t skip = done;
    for (int i = 0; i < cnt; i++) {
      if (skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        continue;
      }
      v[k].iov_base = (char *)iov[i].iov_base + skip;
      v[k++].iov_len = iov[i].iov_len - skip;
      skip = 0;
    }
    struct msghdr mh = { .msg_iov = v, .msg_iovlen = (size_t)k };
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0)
      done += (size_t)n;
    else if (n < 0 && errno == EINTR)
      continue;
    else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    else
      return -1;
  }
  return (ssize_t)done;
}

/* Sends data (or owned reply r) now. direct: with sendmsg() while nothing
 * is queued -- the held CONNECTOK of a pipelining client going in the same
 * write -- queueing what the socket did not take; otherwise (or with TLS)
 * queue it for the holder's uv_write. Called with w->mu held. Returns 0, or
 * -1 when the socket failed (the connection must be closed). */
static int emit_locked(sr_wside_t *w, const uint8_t *data, size_t len, sr_reply_t *r,
                       int direct) {
  if (r) {
    data = r->data;
    len = r->len;
  }
  int merge = w->held != NULL && w->queued == 1;
  struct iovec iov[2];
  int cnt = 0;
  sr_reply_t *hd = NULL;
  ssize_t sent = 0;
  if (direct && !w->tls && (w->queued == 0 || merge)) {
    if (merge) { /* the held CONNECTOK and this reply in one write */
      hd = w->held;
      w->held = NULL;
      w->queued--;
      iov[cnt++] = (struct iovec){ hd->data, hd->len };
      /* counted before the write: a peer that reads both answers may look
       * at the count at once (the holder thread writes in batch/holder modes) */
      atomic_fetch_add(&merged_connectoks, 1);
    }
    iov[cnt++] = (struct iovec){ (void *)data, len };
    sent = send_parts(w->fd, iov, cnt);
    if (sent < 0) {
      free(hd);
      free(r);
      return -1;
    }
  } else {
    iov[cnt++] = (struct iovec){ (void *)data, len };
  }
  size_t total = (hd ? hd->len : 0) + len, done = (size_t)sent;
  sr_reply_t *rest = NULL;
  if (done == total) {
    /* all of it left */
  } else if (r && hd == NULL && done == 0) {
    rest = r; /* nothing of it left: queued as it is */
    r = NULL;
  } else if ((rest = malloc(sizeof *rest + (total - done))) != NULL) {
    memset(rest, 0, sizeof *rest);
    for (int i = 0; i < cnt; i++) { /* what the socket did not take, in order */
      size_t skip = done < iov[i].iov_len ? done : iov[i].iov_len;
      done -= skip;
      memcpy(rest->data + rest->len, (char *)iov[i].iov_base + skip, iov[i].iov_len - skip);
      rest->len += iov[i].iov_len - skip;
    }
  }
  int failed = sent < (ssize_t)total && rest == NULL;
  free(hd);
  free(r);
  if (failed) return -1;
  if (rest) outq_push_locked(w, rest);
  return 0;
}

/* Puts the reply for `slot` in order: emits it and the pending replies that
 * follow, or keeps a copy until its turn. data/len or owned r. Called with
 * w->mu held; returns -1 when the socket failed, 1 when a connection paused
 * for back-pressure may be read again, else 0. */
static int submit_locked(sr_wside_t *w, uint32_t slot, const uint8_t *data, size_t len,
                         sr_reply_t *r, int direct) {
  if (w->closed || (int32_t)(slot - w->send_slot) < 0) { /* gone, or answered twice */
    free(r);
    return 0;
  }
  if (slot != w->send_slot) {
    if (r == NULL && (r = copy_reply(data, len, slot)) == NULL) return -1;
    r->slot = slot;
    sr_reply_t **pp = &w->pending;
    while (*pp && (int32_t)((*pp)->slot - slot) < 0) pp = &(*pp)->next;
    r->next = *pp;
    *pp = r;
    return 0;
  }
  if (emit_locked(w, data, len, r, direct) < 0) return -1;
  w->send_slot++;
  while (w->pending && w->pending->slot == w->send_slot) {
    sr_reply_t *n = w->pending;
    w->pending = n->next;
    if (emit_locked(w, NULL, 0, n, direct) < 0) return -1;
    w->send_slot++;
  }
  if (w->paused && (int32_t)(w->send_slot - w->resume_at) >= w->queued) {
    w->paused = 0; /* owed + queued is down to resume_below (see maybe_pause) */
    return 1;
  }
  return 0;
}

/* ---- connection lifetime (holder thread) --------------------------------- */

static void maybe_finish_stop(sr_holder_t *h) {
  if (h->stopping && h->nconns == 0 && !h->grace_closed) {
    h->grace_closed = 1;
    uv_close((uv_handle_t *)&h->grace, NULL);
  }
}

static void on_conn_close(uv_handle_t *hd) {
  sr_conn_t *c = hd->data;
  sr_holder_t *h = c->h;
  sr_framer_free(&c->fr);
  sr_tls_free(c->tls);
  if (c->counted && c->d) c->d->nconns--;
  conn_table_remove(h, c);
  if (c->w) wside_release(c->w);
  free(c);
  maybe_finish_stop(h);
}

static void conn_flush(sr_conn_t *c);
static void conn_resume(sr_conn_t *c);
static void sweep_soon(sr_holder_t *h);

static void on_write(uv_write_t *req, int status);

/* TLS: hands the ciphertext waiting in c's session (handshake records,
 * encrypted replies, alerts) to uv_write, after everything written before.
 * Returns 0, or -1 when it must be closed (the caller closes it). */
static int conn_tls_send(sr_conn_t *c) {
  size_t n = sr_tls_pending(c->tls);
  if (n == 0) return 0;
  if (c->state == C_CLOSED) return -1;
  sr_reply_t *r = malloc(sizeof *r + n);
  if (r == NULL) {
    hlog(c->h, LOG_ERROR, "out of memory writing to %s; closing", c->peer);
    return -1; /* the caller closes it */
  }
  memset(r, 0, sizeof *r);
  r->len = sr_tls_take_raw(c->tls, r->data, n);
  uv_mutex_lock(&c->w->mu);
  c->w->queued++;
  uv_mutex_unlock(&c->w->mu);
  uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
  r->wr.data = r;
  int rc = uv_write(&r->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc != 0) {
    uv_mutex_lock(&c->w->mu);
    c->w->queued--;
    uv_mutex_unlock(&c->w->mu);
    free(r);
    return -1;
  }
  return 0;
}

/* Closes c now (pending writes are cancelled). Idempotent. */
static void conn_close_now(sr_conn_t *c) {
  if (c->state == C_CLOSED) return;
  c->state = C_CLOSED;
  if (c->w) wside_close(c->w);
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  sr_conn_t *c = req->data;
  conn_close_now(c);
}

/* Stops reading, lets queued writes finish, then closes. Idempotent. */
static void conn_close_graceful(sr_conn_t *c) {
  if (c->state != C_OPEN) return;
  if (c->w) {
    wside_close(c->w); /* the owner writes no more; what it queued goes first */
    conn_flush(c);
  }
  if (c->tls && c->state == C_OPEN) { /* close_notify after the last reply */
    sr_tls_close(c->tls);
    if (conn_tls_send(c) < 0) conn_close_now(c);
  }
  if (c->state != C_OPEN) return; /* the flush failed and closed it */
  c->state = C_SHUTTING;
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close_now(c);
}

/* The peer closed its side (EOF read: nothing is left unread). With no
 * reply waiting to be written and no TLS close_notify to send, close()
 * alone sends the FIN after whatever the kernel still holds, so the
 * shutdown() round (a POLLOUT wake-up and a syscall: ~15 us of a
 * connect + call + close) is skipped; otherwise as conn_close_graceful. */
static void conn_close_at_eof(sr_conn_t *c) {
  int idle = c->state == C_OPEN && c->tls == NULL;
  if (idle && c->w) {
    uv_mutex_lock(&c->w->mu);
    idle = c->w->queued == 0;
    uv_mutex_unlock(&c->w->mu);
  }
  if (idle && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
    conn_close_now(c);
  else
    conn_close_graceful(c);
}

static void on_write(uv_write_t *req, int status) {
  sr_reply_t *r = req->data;
  sr_conn_t *c = req->handle->data;
  uv_mutex_lock(&c->w->mu);
  sr_wside_t *w = c->w;
  w->queued--;
  /* replies that left the process count against back-pressure too */
  int resume = w->paused && (int32_t)(w->send_slot - w->resume_at) >= w->queued;
  if (resume) w->paused = 0;
  uv_mutex_unlock(&c->w->mu);
  if (resume && c->state == C_OPEN) conn_resume(c);
  if (status < 0 && status != UV_ECANCELED && c->state != C_CLOSED) {
    hlog(c->h, LOG_INFO, "write to %s failed: %s; closing the connection", c->peer,
         uv_strerror(status));
    conn_close_now(c);
  }
  free(r);
}

/* Hands everything in c's outq to uv_write, in order. */
static void conn_flush(sr_conn_t *c) {
  sr_wside_t *w = c->w;
  uv_mutex_lock(&w->mu);
  if (w->held) { /* the held CONNECTOK leaves first (queued counts it already) */
    w->held->next = w->outq;
    w->outq = w->held;
    if (w->outq_tail == NULL) w->outq_tail = w->held;
    w->held = NULL;
  }
  sr_reply_t *r = w->outq;
  w->outq = w->outq_tail = NULL;
  uv_mutex_unlock(&w->mu);
  while (r && c->tls) {
    /* TLS: encrypt in order, then write the records in one go below */
    sr_reply_t *next = r->next;
    char err[300];
    int trc = c->state == C_CLOSED ? 0 : sr_tls_write(c->tls, r->data, r->len, err, sizeof err);
    uv_mutex_lock(&w->mu);
    w->queued--;
    uv_mutex_unlock(&w->mu);
    free(r);
    if (trc < 0) {
      hlog(c->h, LOG_WARNING, "TLS to %s failed: %s; closing the connection", c->peer, err);
      conn_close_now(c);
    }
    r = next;
  }
  if (c->tls) {
    if (c->state != C_CLOSED && conn_tls_send(c) < 0) conn_close_now(c);
    return;
  }
  while (r) {
    sr_reply_t *next = r->next;
    int rc = UV_ECANCELED;
    if (c->state != C_CLOSED) {
      uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
      r->wr.data = r;
      rc = uv_write(&r->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    }
    if (rc != 0) {
      uv_mutex_lock(&w->mu);
      w->queued--;
      uv_mutex_unlock(&w->mu);
      free(r);
      if (c->state != C_CLOSED) {
        hlog(c->h, LOG_INFO, "write to %s failed: %s; closing the connection", c->peer,
             uv_strerror(rc));
        conn_close_now(c);
      }
    }
    r = next;
  }
}

/* Writes r (owned) on c after everything queued before it (no slot: the
 * handshake answers). */
static void conn_write(sr_conn_t *c, sr_reply_t *r) {
  if (c->state == C_CLOSED) {
    free(r);
    return;
  }
  uv_mutex_lock(&c->w->mu);
  outq_push_locked(c->w, r);
  uv_mutex_unlock(&c->w->mu);
  conn_flush(c);
}

/* Queues reply r (owned) for its slot, from the holder thread. */
static void conn_submit(sr_conn_t *c, sr_reply_t *r) {
  if (c->state != C_OPEN) {
    free(r);
    return;
  }
  uv_mutex_lock(&c->w->mu);
  /* a plain socket with nothing queued: send() now, as the owner thread
   * does (no uv_write request, callback or poll change per reply) */
  int rc = submit_locked(c->w, r->slot, NULL, 0, r, 1);
  int flush = c->w->outq != NULL;
  uv_mutex_unlock(&c->w->mu);
  if (flush) conn_flush(c);
  if (rc < 0)
    conn_close_now(c);
  else if (rc == 1)
    conn_resume(c);
}

/* Builds a frame into a new reply (slot given). NULL on OOM. */
static sr_reply_t *make_frame(uint16_t type, uint16_t flags, uint16_t seq, uint16_t ser,
                              const uint8_t *data, size_t len, uint32_t slot) {
  if (len > 0x7fffffff) return NULL;
  sr_reply_t *r = malloc(sizeof *r + SR_WIRE_HEADER_SIZE + len);
  if (r == NULL) return NULL;
  memset(r, 0, sizeof *r);
  sr_wire_put_header(r->data, type, flags, seq, ser, (uint32_t)len);
  if (len) memcpy(r->data + SR_WIRE_HEADER_SIZE, data, len);
  r->len = SR_WIRE_HEADER_SIZE + len;
  r->slot = slot;
  return r;
}

/* Sends CONNECTFAIL with text encoded by ser, then closes gracefully. */
static void conn_fail_handshake(sr_conn_t *c, uint16_t ser, uint16_t seq, const char *text) {
  sr_buf_t b;
  sr_buf_init(&b);
  hlog(c->h, LOG_WARNING, "handshake from %s on %s refused: %s", c->peer,
       c->d ? c->d->where : "?", text);
  if (sr_holder_encode_string(&b, ser, text, strlen(text)) == 0) {
    sr_reply_t *r = make_frame(SR_MSG_CONNECTFAIL, 0, seq, ser, b.data, b.len, 0);
    if (r) conn_write(c, r);
  }
  sr_buf_free(&b);
  conn_close_graceful(c);
}

/* The payload of m: its bytes, or when COMPRESSED the inflated bytes in
 * *plain (initialised here; the caller frees it either way), bounded by the
 * connection's current message limit. Returns 0 or an SR_E* code, err set. */
static int msg_payload(const sr_conn_t *c, const sr_wire_msg_t *m, sr_buf_t *plain,
                       const uint8_t **data, size_t *len, char *err, size_t errlen) {
  sr_buf_init(plain);
  *data = m->data;
  *len = m->h.data_len;
  if (!(m->h.flags & SR_FLAG_COMPRESSED)) return 0;
  int rc = sr_wire_inflate(plain, m->data, m->h.data_len, c->fr.max_message, err, errlen);
  if (rc < 0) return rc;
  *data = plain->data;
  *len = plain->len;
  return 0;
}

static sr_obj_t *find_obj(sr_daemon_t *d, const char *name) {
  for (sr_obj_t *o = d ? d->objs : NULL; o; o = o->next)
    if (strcmp(o->name, name) == 0) return o;
  return NULL;
}

/* Pyro4's name of a serializer id, for refusals. */
static const char *ser_name(uint16_t ser) {
  static const char *const names[] = { "?", "serpent", "json", "marshal", "pickle",
                                       "dill", "msgpack", "cloudpickle" };
  return ser < sizeof names / sizeof names[0] && ser > 0 ? names[ser] : "unknown";
}

static int ser_accepted(sr_daemon_t *d, uint16_t ser) {
  return d != NULL && ser < SR_HOLDER_NSER && (d->ser_mask & (1u << ser));
}

static void handle_connect(sr_conn_t *c, const sr_wire_msg_t *m) {
  char text[600], err[300];
  uint16_t ser = m->h.serializer;
  if (m->h.type != SR_MSG_CONNECT) {
    snprintf(text, sizeof text, "invalid msg type %u received", m->h.type);
    conn_fail_handshake(c, SR_SER_MARSHAL, 0, text);
    return;
  }
  if (!ser_accepted(c->d, ser)) {
    snprintf(text, sizeof text, "message used serializer that is not accepted: %u (%s)", ser,
             ser_name(ser));
    conn_fail_handshake(c, SR_SER_MARSHAL, m->h.seq, text);
    return;
  }
  const uint8_t *data;
  size_t len;
  sr_buf_t plain;
  if (msg_payload(c, m, &plain, &data, &len, err, sizeof err) < 0) {
    sr_buf_free(&plain);
    conn_fail_handshake(c, ser, m->h.seq, err);
    return;
  }
  if (c->d && c->d->has_secret) {
    /* Pyro4's validateHandshake with a shared secret: the handshake value
     * must be that string (constant-time comparison) */
    sr_buf_t hv;
    sr_buf_init(&hv);
    err[0] = '\0';
    int hr = sr_handshake_value(ser, data, len, &hv, err, sizeof err);
    int ok = hr == 1 && sr_secret_check(&c->d->secret, hv.data ? hv.data : (const uint8_t *)"",
                                        hv.len);
    sr_buf_free(&hv);
    if (!ok) {
      sr_buf_free(&plain);
      if (hr < 0 && hr != SR_ENOTFOUND && err[0])
        conn_fail_handshake(c, ser, m->h.seq, err);
      else
        conn_fail_handshake(c, ser, m->h.seq,
                            "authentication failed: wrong or missing handshake secret");
      return;
    }
  }
  char name[SR_HOLDER_MAX_NAME + 1];
  int r;
  err[0] = '\0';
  if (ser == SR_SER_JSON)
    r = sr_json_handshake_object(data, len, name, sizeof name, err, sizeof err);
  else if (ser == SR_SER_SERPENT)
    r = sr_serpent_handshake_object(data, len, name, sizeof name, err, sizeof err);
  else
    r = sr_seterr(err, sizeof err, SR_ESERIALIZER, "cannot read the handshake of serializer %u",
                  ser);
  sr_buf_free(&plain);
  int meta = (m->h.flags & SR_FLAG_META_ON_CONNECT) != 0;
  if (r < 0 && !(r == SR_ENOTFOUND && !meta)) {
    if (r == SR_ENOTFOUND) snprintf(err, sizeof err, "'object'");
    conn_fail_handshake(c, ser, m->h.seq, err[0] ? err : sr_strerror(r));
    return;
  }
  sr_reply_t *rep;
  if (meta) {
    sr_obj_t *o = find_obj(c->d, name);
    if (o == NULL || o->meta[ser] == NULL) {
      conn_fail_handshake(c, ser, m->h.seq, "unknown object");
      return;
    }
    rep = make_frame(SR_MSG_CONNECTOK, SR_FLAG_META_ON_CONNECT, m->h.seq, ser, o->meta[ser],
                     o->meta_len[ser], 0);
  } else {
    sr_buf_t b;
    sr_buf_init(&b);
    rep = NULL;
    if (sr_holder_encode_string(&b, ser, "hello", 5) == 0)
      rep = make_frame(SR_MSG_CONNECTOK, 0, m->h.seq, ser, b.data, b.len, 0);
    sr_buf_free(&b);
  }
  if (rep == NULL) {
    hlog(c->h, LOG_ERROR, "out of memory answering %s; closing", c->peer);
    conn_close_now(c);
    return;
  }
  c->handshaken = 1;
  if (c->d) c->fr.max_message = c->d->lim.max_message; /* the handshake limit is lifted */
  if (c->tls == NULL)
    c->connectok = rep; /* conn_process decides: hold it for the first reply, or write */
  else
    conn_write(c, rep);
}

/* The CONNECTOK handle_connect left in c->connectok: held for the reply of
 * m when m (the message that came right behind the CONNECT) is an INVOKE
 * that will be answered; otherwise (m NULL: nothing came behind it) written
 * now. */
static void place_connectok(sr_conn_t *c, const sr_wire_msg_t *m) {
  sr_reply_t *rep = c->connectok;
  c->connectok = NULL;
  if (c->state != C_OPEN) {
    free(rep);
    return;
  }
  if (m && m->h.type == SR_MSG_INVOKE && !(m->h.flags & SR_FLAG_ONEWAY)) {
    uv_mutex_lock(&c->w->mu);
    c->w->held = rep;
    c->w->queued++;
    uv_mutex_unlock(&c->w->mu);
    return;
  }
  conn_write(c, rep);
}

static void handle_request(sr_conn_t *c, const sr_wire_msg_t *m) {
  char err[300];
  sr_holder_t *h = c->h;
  if (m->h.type == SR_MSG_PING) {
    sr_reply_t *r = make_frame(SR_MSG_PING, 0, m->h.seq, m->h.serializer,
                               (const uint8_t *)"pong", 4, c->next_slot++);
    if (r == NULL) {
      conn_close_now(c);
      return;
    }
    conn_submit(c, r);
    return;
  }
  if (m->h.type != SR_MSG_INVOKE) {
    hlog(h, LOG_WARNING, "closing connection from %s on %s: unexpected message type %u",
         c->peer, c->d ? c->d->where : "?", m->h.type);
    conn_close_now(c);
    return;
  }
  if (!ser_accepted(c->d, m->h.serializer)) {
    hlog(h, LOG_WARNING, "closing connection from %s on %s: serializer %u (%s) is not accepted",
         c->peer, c->d ? c->d->where : "?", m->h.serializer, ser_name(m->h.serializer));
    conn_close_now(c);
    return;
  }
  const uint8_t *data;
  size_t len;
  sr_buf_t plain;
  if (msg_payload(c, m, &plain, &data, &len, err, sizeof err) < 0) {
    sr_buf_free(&plain);
    hlog(h, LOG_WARNING, "closing connection from %s: %s", c->peer, err);
    conn_close_now(c);
    return;
  }
  sr_event_t *ev = malloc(sizeof *ev + len + 1);
  if (ev == NULL) {
    sr_buf_free(&plain);
    hlog(h, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
    conn_close_now(c);
    return;
  }
  memset(ev, 0, sizeof *ev);
  ev->kind = SR_EV_INVOKE;
  ev->daemon = c->d->id;
  ev->conn = c->id;
  ev->seq = m->h.seq;
  ev->flags = (uint16_t)(m->h.flags & ~SR_FLAG_COMPRESSED);
  ev->serializer = m->h.serializer;
  ev->slot = (m->h.flags & SR_FLAG_ONEWAY) ? 0 : c->next_slot++;
  ev->len = len;
  if (len) memcpy(ev->data, data, len);
  ev->data[len] = 0;
  sr_buf_free(&plain);
  sr_dcount_t *dc = c->d->dc;
  atomic_fetch_add(&dc->refs, 1);
  ev->dc = dc;
  unsigned queued = atomic_fetch_add(&dc->queued, 1) + 1;
  push_event(h, ev);
  if (queued >= c->d->lim.max_queued && !c->dpaused) {
    /* the owner is behind: read no more from this connection until the
     * sweep sees the daemon's queue down to half */
    c->dpaused = 1;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    hlog(h, LOG_DEBUG, "pausing reads from %s on %s: %u invocations queued (max_queued)",
         c->peer, c->d->where, queued);
    sweep_soon(h);
  }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  sr_conn_t *c = hd->data;
  if (c->tls) { /* ciphertext: one holder-wide buffer, consumed in on_read */
    *buf = uv_buf_init((char *)c->h->tls_rbuf, c->h->tls_rbuf ? READ_CHUNK : 0);
    return;
  }
  size_t got = 0;
  uint8_t *p = sr_framer_space(&c->fr, READ_CHUNK, &got);
  *buf = uv_buf_init((char *)p, p ? (unsigned)got : 0);
}

/* TLS: feeds ciphertext p[0..n) to c's session, moves every byte of
 * plaintext it yields into the framer and sends what the session has to say
 * (handshake records, alerts). Returns 0; 1 when the peer closed the session
 * (close_notify: handle what is framed, then close like at EOF); or -1 when
 * c is being closed (a TLS failure is logged, with OpenSSL's reason). */
static int conn_tls_input(sr_conn_t *c, const uint8_t *p, size_t n) {
  char err[300];
  if (sr_tls_feed(c->tls, p, n) < 0) {
    hlog(c->h, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
    conn_close_now(c);
    return -1;
  }
  int was = sr_tls_established(c->tls);
  for (;;) {
    size_t room = 0, got = 0;
    uint8_t *dst = sr_framer_space(&c->fr, READ_CHUNK, &room);
    if (dst == NULL) {
      hlog(c->h, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
      conn_close_now(c);
      return -1;
    }
    int rc = sr_tls_read(c->tls, dst, room, &got, err, sizeof err);
    if (rc == SR_ECLOSED) return 1; /* close_notify: like EOF */
    if (rc < 0) {
      hlog(c->h, LOG_WARNING, "TLS with %s on %s failed: %s; closing the connection", c->peer,
           c->d ? c->d->where : "?", err);
      if (conn_tls_send(c) < 0) { /* the alert, if any */
        conn_close_now(c);
        return -1;
      }
      uv_mutex_lock(&c->w->mu);
      int writing = c->w->queued != 0;
      uv_mutex_unlock(&c->w->mu);
      if (writing && c->state == C_OPEN) {
        /* let the alert leave, then close */
        c->state = C_SHUTTING;
        wside_close(c->w);
        if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        c->shut.data = c;
        if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close_now(c);
      } else {
        conn_close_now(c);
      }
      return -1;
    }
    if (got == 0) break;
    sr_framer_commit(&c->fr, got);
  }
  if (!was && sr_tls_established(c->tls)) {
    char subject[256];
    sr_tls_peer_subject(c->tls, subject, sizeof subject);
    hlog(c->h, LOG_DEBUG, "TLS established with %s on %s%s%s", c->peer, c->d ? c->d->where : "?",
         subject[0] ? ", client certificate " : "", subject);
  }
  if (conn_tls_send(c) < 0) {
    conn_close_now(c);
    return -1;
  }
  return 0;
}

/* Stops reading c when too many replies are owed (back-pressure). */
static void maybe_pause(sr_conn_t *c) {
  sr_wside_t *w = c->w;
  uv_mutex_lock(&w->mu);
  /* owed replies plus replies written but not yet taken by the socket (a
   * client that does not read) */
  uint32_t outstanding = c->next_slot - w->send_slot + (uint32_t)w->queued;
  int pause = outstanding >= c->max_owed;
  if (pause) {
    w->paused = 1;
    w->resume_at = c->next_slot - c->resume_below;
  }
  uv_mutex_unlock(&w->mu);
  if (!pause) return;
  c->paused = 1;
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  hlog(c->h, LOG_DEBUG, "pausing reads from %s: %u replies outstanding", c->peer,
       (unsigned)outstanding);
}

/* Answers the first message of a connection refused for max_connections. */
static void conn_refuse(sr_conn_t *c, const sr_wire_msg_t *m) {
  char text[400];
  uint16_t ser = m && ser_accepted(c->d, m->h.serializer) ? m->h.serializer : SR_SER_MARSHAL;
  snprintf(text, sizeof text, "too many connections to %s (max_connections %u)",
           c->d ? c->d->where : "?", c->d ? (unsigned)c->d->lim.max_connections : 0u);
  conn_fail_handshake(c, ser, m ? m->h.seq : 0, text);
}

/* Handles every complete message buffered in c's framer; returns how many. */
static int conn_process_msgs(sr_conn_t *c) {
  int done = 0;
  while (c->state == C_OPEN && !c->paused && !c->dpaused && !c->quiesced) {
    sr_wire_msg_t m;
    char err[300];
    long r = sr_framer_next(&c->fr, &m, err, sizeof err);
    if (r == 0) break;
    done++;
    if (c->refused) {
      conn_refuse(c, r > 0 ? &m : NULL);
      break;
    }
    if (r < 0) {
      if (!c->handshaken && r != SR_ETOOBIG) {
        conn_fail_handshake(c, SR_SER_MARSHAL, 0, err);
      } else {
        hlog(c->h, LOG_WARNING, "closing connection from %s on %s: %s%s", c->peer,
             c->d ? c->d->where : "?", err,
             r != SR_ETOOBIG ? "" : c->handshaken ? " (max_message_size)" : " (before the handshake)");
        conn_close_now(c);
      }
      return done;
    }
    if (!c->handshaken) {
      handle_connect(c, &m);
    } else {
      if (c->connectok) place_connectok(c, &m);
      handle_request(c, &m);
      if (c->state == C_OPEN) maybe_pause(c);
    }
  }
  return done;
}

/* Handles the complete messages read so far (conn_process_msgs); a
 * CONNECTOK nothing came behind is written now. Returns how many. */
static int conn_process(sr_conn_t *c) {
  int done = conn_process_msgs(c);
  if (c->connectok) place_connectok(c, NULL);
  return done;
}

/* After reading or processing: the send deadline runs from the first byte of
 * an unfinished message; a complete message restarts it. */
static void conn_track_partial(sr_conn_t *c, int progressed, uint64_t now) {
  /* a TLS handshake that started counts as an unfinished message */
  int tls_pending = c->tls != NULL && c->tls_fed && !sr_tls_established(c->tls);
  if (sr_framer_pending(&c->fr) == 0 && !tls_pending)
    c->msg_start = 0;
  else if (progressed || c->msg_start == 0)
    c->msg_start = now;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  sr_conn_t *c = s->data;
  if (n < 0) {
    if (n != UV_EOF)
      hlog(c->h, LOG_DEBUG, "connection from %s: %s", c->peer, uv_strerror((int)n));
    /* the peer is gone or half-closed */
    if (n == UV_EOF)
      conn_close_at_eof(c);
    else
      conn_close_now(c);
    return;
  }
  if (n == 0) return;
  uint64_t now = uv_now(&c->h->loop);
  c->last_active = now;
  int peer_done = 0; /* TLS close_notify */
  if (c->tls && !c->tls_fed && n >= 4 && memcmp(buf->base, "PYRO", 4) == 0) {
    /* a Pyro client without TLS: tell it in its own terms */
    sr_tls_free(c->tls);
    c->tls = NULL;
    hlog(c->h, LOG_WARNING, "connection from %s on %s does not use TLS; refusing it", c->peer,
         c->d ? c->d->where : "?");
    conn_fail_handshake(c, SR_SER_MARSHAL, 0, "this daemon requires TLS (SSL)");
    return;
  }
  if (c->tls) {
    c->tls_fed = 1;
    if ((peer_done = conn_tls_input(c, (const uint8_t *)buf->base, (size_t)n)) < 0) return;
  } else {
    sr_framer_commit(&c->fr, (size_t)n);
  }
  int progressed = conn_process(c);
  if (peer_done) {
    conn_close_graceful(c);
    return;
  }
  if (c->state == C_OPEN) conn_track_partial(c, progressed, now);
}

/* Reading again after back-pressure: handle what is buffered, then read. */
static void conn_unpause(sr_conn_t *c) {
  if (c->state != C_OPEN || c->quiesced) return;
  hlog(c->h, LOG_DEBUG, "resuming reads from %s", c->peer);
  uint64_t now = uv_now(&c->h->loop);
  int progressed = conn_process(c);
  if (c->state == C_OPEN) {
    c->last_active = now; /* the pause was ours, not the client's */
    conn_track_partial(c, progressed || c->msg_start != 0, now);
  }
  if (c->state == C_OPEN && !c->paused && !c->dpaused && !c->quiesced && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
    else
      conn_close_now(c);
  }
}

/* Back-pressure of the connection released (its replies left). */
static void conn_resume(sr_conn_t *c) {
  if (!c->paused) return;
  c->paused = 0;
  conn_unpause(c);
}

static void free_handle(uv_handle_t *hd) { free(hd); }

static void on_connection(uv_stream_t *server, int status) {
  sr_daemon_t *d = server->data;
  sr_holder_t *h = d->h;
  if (status < 0) {
    hlog(h, LOG_WARNING, "accept on %s failed: %s", d->where, uv_strerror(status));
    return;
  }
  sr_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL || conn_table_add(h, c) < 0) {
    free(c);
    /* accept and drop, or the listener keeps firing */
    uv_tcp_t *tmp = malloc(sizeof *tmp);
    if (tmp != NULL && uv_tcp_init(&h->loop, tmp) == 0) {
      (void)uv_accept(server, (uv_stream_t *)tmp);
      uv_close((uv_handle_t *)tmp, free_handle);
    } else {
      free(tmp);
    }
    hlog(h, LOG_ERROR, "out of memory accepting on %s", d->where);
    return;
  }
  c->h = h;
  c->d = d;
  sr_framer_init(&c->fr, d->lim.max_message < SR_HOLDER_HANDSHAKE_MAX_MESSAGE
                             ? d->lim.max_message
                             : SR_HOLDER_HANDSHAKE_MAX_MESSAGE);
  c->max_owed = d->lim.max_queued_conn;
  c->resume_below = c->max_owed / 4;
  c->accepted_at = c->last_active = uv_now(&h->loop);
  c->counted = 1;
  if (++d->nconns > d->lim.max_connections) c->refused = 1;
  uv_tcp_init(&h->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    c->state = C_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    return;
  }
#ifndef __linux__
  uv_tcp_nodelay(&c->tcp, 1); /* on Linux: inherited from the listener (do_listen) */
#endif
  uv_os_fd_t fd = -1;
  uv_fileno((uv_handle_t *)&c->tcp, &fd);
  c->w = wside_new(fd);
  if (c->w == NULL) {
    hlog(h, LOG_ERROR, "out of memory accepting on %s", d->where);
    conn_close_now(c);
    return;
  }
  if (d->tls) {
    char err[300];
    if (h->tls_rbuf == NULL) h->tls_rbuf = malloc(READ_CHUNK);
    if (h->tls_rbuf == NULL || sr_tls_new(&c->tls, d->tls, NULL, err, sizeof err) < 0) {
      hlog(h, LOG_ERROR, "cannot start TLS on a connection to %s: %s", d->where,
           h->tls_rbuf ? err : "out of memory");
      conn_close_now(c);
      return;
    }
    c->w->tls = 1; /* set before the owner can see the connection's first request */
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  snprintf(c->peer, sizeof c->peer, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      uv_ip4_name(a, ip, sizeof ip);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, ip, sizeof ip);
      port = ntohs(a->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
  }
  if (c->refused)
    hlog(h, LOG_WARNING,
         "refusing connection from %s on %s: %u connections open (max_connections %u)",
         c->peer, d->where, (unsigned)(d->nconns - 1), (unsigned)d->lim.max_connections);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close_now(c);
    return;
  }
  c->reading = 1;
}

/* ---- limits over time: the sweep timer (holder thread) -------------------- */

/* Every SWEEP_*: closes connections past their send deadline (slow-loris)
 * or idle timeout, drops refused ones that never sent a CONNECT, and reads
 * again from connections paused for their daemon's max_queued once its
 * queue is down to half. */
static void on_sweep(uv_timer_t *t) {
  sr_holder_t *h = t->data;
  uint64_t now = uv_now(&h->loop);
  int any_dpaused = 0;
  for (uint32_t i = 0; i < h->cap; i++) {
    sr_conn_t *c = h->conns[i];
    if (c == NULL || c->state != C_OPEN || c->d == NULL) continue;
    sr_daemon_t *d = c->d;
    if (c->dpaused) {
      if (atomic_load(&d->dc->queued) <= d->lim.max_queued / 2) {
        c->dpaused = 0;
        conn_unpause(c);
      } else {
        any_dpaused = 1;
      }
      continue;
    }
    if (c->refused) {
      if (now - c->accepted_at >= SR_HOLDER_REFUSED_LINGER_MS) conn_close_now(c);
      continue;
    }
    if (c->paused || c->quiesced) continue;
    if (c->msg_start != 0 && d->lim.send_deadline_ms != UINT32_MAX &&
        now - c->msg_start >= d->lim.send_deadline_ms) {
      hlog(h, LOG_WARNING,
           "closing connection from %s on %s: message not complete within %u ms "
           "(send_deadline), %zu bytes received",
           c->peer, d->where, (unsigned)d->lim.send_deadline_ms, sr_framer_pending(&c->fr));
      conn_close_now(c);
      continue;
    }
    if (d->lim.idle_timeout_ms != 0 && c->msg_start == 0 &&
        now - c->last_active >= d->lim.idle_timeout_ms) {
      uv_mutex_lock(&c->w->mu);
      int owes = c->next_slot != c->w->send_slot || c->w->queued != 0;
      uv_mutex_unlock(&c->w->mu);
      if (owes) continue;
      hlog(h, LOG_INFO, "closing connection from %s on %s: idle for %u ms (idle_timeout)",
           c->peer, d->where, (unsigned)d->lim.idle_timeout_ms);
      conn_close_graceful(c);
    }
  }
  uint64_t want = any_dpaused ? SWEEP_MIN_MS : h->sweep_ms;
  if (uv_timer_get_repeat(&h->sweep) != want) uv_timer_start(&h->sweep, on_sweep, want, want);
}

/* (Re)starts the sweep timer at a quarter of the shortest time limit of the
 * daemons (SWEEP_MIN_MS..SWEEP_MAX_MS). */
static void sweep_schedule(sr_holder_t *h) {
  uint64_t ms = SWEEP_MAX_MS;
  if (SR_HOLDER_REFUSED_LINGER_MS / 4 < ms) ms = SR_HOLDER_REFUSED_LINGER_MS / 4;
  for (sr_daemon_t *d = h->daemons; d; d = d->next) {
    if (d->lim.send_deadline_ms != UINT32_MAX && d->lim.send_deadline_ms / 4 < ms)
      ms = d->lim.send_deadline_ms / 4;
    if (d->lim.idle_timeout_ms != 0 && d->lim.idle_timeout_ms / 4 < ms)
      ms = d->lim.idle_timeout_ms / 4;
  }
  if (ms < SWEEP_MIN_MS) ms = SWEEP_MIN_MS;
  h->sweep_ms = ms;
  if (h->stopping) return;
  uv_timer_start(&h->sweep, on_sweep, ms, ms);
}

/* A connection just paused for its daemon: check again soon. */
static void sweep_soon(sr_holder_t *h) {
  if (!h->stopping && uv_timer_get_repeat(&h->sweep) != SWEEP_MIN_MS)
    uv_timer_start(&h->sweep, on_sweep, SWEEP_MIN_MS, SWEEP_MIN_MS);
}

/* ---- daemons (holder thread) --------------------------------------------- */

static int daemon_add_obj(sr_daemon_t *d, const char *name, const uint8_t *const *meta,
                          const size_t *meta_len);

static void free_daemon(sr_daemon_t *d) {
  sr_tls_ctx_unref(d->tls);
  dcount_release(d->dc);
  while (d->objs) {
    sr_obj_t *o = d->objs;
    d->objs = o->next;
    for (int i = 0; i < SR_HOLDER_NSER; i++) free(o->meta[i]);
    free(o);
  }
  free(d);
}

static void on_listener_close(uv_handle_t *hd) {
  sr_daemon_t *d = hd->data;
  d->listener_closed = 1;
  if (d->removed) free_daemon(d);
}

static void close_listener(sr_daemon_t *d) {
  if (!d->listener_open) return;
  d->listener_open = 0;
  uv_close((uv_handle_t *)&d->listener, on_listener_close);
}

static sr_daemon_t *find_daemon(sr_holder_t *h, uint32_t id) {
  for (sr_daemon_t *d = h->daemons; d; d = d->next)
    if (d->id == id) return d;
  return NULL;
}

static void do_listen(sr_holder_t *h, sr_cmd_t *cmd) {
  sr_daemon_t *d = calloc(1, sizeof *d);
  if (d == NULL) {
    cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_ENOMEM, "cannot listen on %s: out of memory",
                        cmd->where);
    return;
  }
  d->h = h;
  d->ser_mask = cmd->ser_mask;
  d->lim = cmd->lim;
  d->dc = calloc(1, sizeof *d->dc);
  if (d->dc == NULL) {
    free(d);
    cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_ENOMEM, "cannot listen on %s: out of memory",
                        cmd->where);
    return;
  }
  atomic_init(&d->dc->refs, 1);
  atomic_init(&d->dc->queued, 0);
  d->tls = sr_tls_ctx_ref(cmd->tls);
  d->has_secret = cmd->has_secret;
  d->secret = cmd->secret;
  uv_tcp_init(&h->loop, &d->listener);
  d->listener.data = d;
  d->listener_open = 1;
  int r = uv_tcp_bind(&d->listener, (const struct sockaddr *)&cmd->addr, 0);
#ifdef __linux__
  /* Linux: accepted sockets inherit TCP_NODELAY from the listener, so it is
   * set once here, not with a setsockopt per connection (on_connection) */
  if (r == 0) r = uv_tcp_nodelay(&d->listener, 1);
#endif
  /* the first objects are registered before accepting: a client that sees
   * the port open finds them */
  for (size_t i = 0; r == 0 && i < cmd->nobjs; i++) {
    if (daemon_add_obj(d, cmd->objs[i].name, cmd->objs[i].meta, cmd->objs[i].meta_len) < 0) {
      cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_ENOMEM, "cannot listen on %s: out of memory",
                          cmd->where);
      d->removed = 1;
      close_listener(d);
      return;
    }
  }
  if (r == 0) r = uv_listen((uv_stream_t *)&d->listener, 128, on_connection);
  if (r != 0) {
    cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_EIO, "cannot listen on %s: %s (%s)",
                        cmd->where, uv_strerror(r), uv_err_name(r));
    d->removed = 1;
    close_listener(d);
    return;
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  int port = 0;
  char ip[INET6_ADDRSTRLEN] = "?";
  if (uv_tcp_getsockname(&d->listener, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) {
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    } else if (ss.ss_family == AF_INET6) {
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    }
  }
  snprintf(d->where, sizeof d->where, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
  d->id = ++h->next_daemon_id;
  d->next = h->daemons;
  h->daemons = d;
  sweep_schedule(h);
  cmd->daemon = d->id;
  cmd->port_out = port;
  cmd->rc = 0;
}

/* Unlinks d, shuts its connections down gracefully, frees it once closed. */
static void remove_daemon(sr_holder_t *h, sr_daemon_t *d) {
  for (sr_daemon_t **pp = &h->daemons; *pp; pp = &(*pp)->next) {
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  }
  for (uint32_t i = 0; i < h->cap; i++) {
    sr_conn_t *c = h->conns[i];
    if (c && c->d == d) {
      c->d = NULL;
      conn_close_graceful(c);
    }
  }
  d->removed = 1;
  if (d->listener_open)
    close_listener(d); /* its close callback frees d */
  else if (d->listener_closed)
    free_daemon(d); /* closed by quiesce earlier */
  /* else: quiesce's close callback is still to come and frees d */
}

static void on_grace(uv_timer_t *t) {
  sr_holder_t *h = t->data;
  for (uint32_t i = 0; i < h->cap; i++)
    if (h->conns[i]) conn_close_now(h->conns[i]);
  if (!h->grace_closed) {
    h->grace_closed = 1;
    uv_close((uv_handle_t *)&h->grace, NULL);
  }
}

/* Adds (or replaces) object `name` of d with copies of its CONNECTOK
 * payloads. Returns 0 or SR_ENOMEM. */
static int daemon_add_obj(sr_daemon_t *d, const char *name, const uint8_t *const *meta,
                          const size_t *meta_len) {
  size_t nl = strlen(name);
  sr_obj_t *o = calloc(1, sizeof *o + nl + 1);
  if (o == NULL) return SR_ENOMEM;
  memcpy(o->name, name, nl + 1);
  for (int i = 0; i < SR_HOLDER_NSER; i++) {
    if (meta[i] == NULL || !(d->ser_mask & (1u << i))) continue;
    o->meta[i] = malloc(meta_len[i] ? meta_len[i] : 1);
    if (o->meta[i] == NULL) {
      for (int j = 0; j < i; j++) free(o->meta[j]);
      free(o);
      return SR_ENOMEM;
    }
    memcpy(o->meta[i], meta[i], meta_len[i]);
    o->meta_len[i] = meta_len[i];
  }
  for (sr_obj_t **pp = &d->objs; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->name, o->name) == 0) {
      sr_obj_t *old = *pp;
      *pp = old->next;
      for (int i = 0; i < SR_HOLDER_NSER; i++) free(old->meta[i]);
      free(old);
      break;
    }
  }
  o->next = d->objs;
  d->objs = o;
  return 0;
}

static void do_register(sr_holder_t *h, sr_cmd_t *cmd) {
  sr_daemon_t *d = find_daemon(h, cmd->daemon);
  cmd->rc = d ? daemon_add_obj(d, cmd->name, cmd->meta, cmd->meta_len) : SR_ENOTFOUND;
}

static void do_unregister(sr_holder_t *h, sr_cmd_t *cmd) {
  sr_daemon_t *d = find_daemon(h, cmd->daemon);
  cmd->rc = SR_ENOTFOUND;
  if (d == NULL) return;
  for (sr_obj_t **pp = &d->objs; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->name, cmd->name) == 0) {
      sr_obj_t *old = *pp;
      *pp = old->next;
      for (int i = 0; i < SR_HOLDER_NSER; i++) free(old->meta[i]);
      free(old);
      cmd->rc = 0;
      return;
    }
  }
}

static void do_quiesce(sr_holder_t *h) {
  for (sr_daemon_t *d = h->daemons; d; d = d->next) close_listener(d);
  for (uint32_t i = 0; i < h->cap; i++) {
    sr_conn_t *c = h->conns[i];
    if (c) c->quiesced = 1;
    if (c && c->reading) {
      uv_read_stop((uv_stream_t *)&c->tcp);
      c->reading = 0;
    }
  }
}

static void do_stop(sr_holder_t *h) {
  flush_events(h);
  h->stopping = 1; /* events go out at once from now on */
  uv_close((uv_handle_t *)&h->flush_check, NULL);
  uv_close((uv_handle_t *)&h->flush_prep, NULL);
  uv_close((uv_handle_t *)&h->sweep, NULL);
  while (h->daemons) remove_daemon(h, h->daemons);
  for (uint32_t i = 0; i < h->cap; i++)
    if (h->conns[i]) conn_close_graceful(h->conns[i]);
  uv_close((uv_handle_t *)&h->wake, NULL);
  if (h->nconns > 0) {
    h->grace.data = h;
    uv_timer_start(&h->grace, on_grace, GRACE_MS, 0);
  } else {
    maybe_finish_stop(h);
  }
}

static void do_reply(sr_holder_t *h, sr_reply_t *r) {
  sr_conn_t *c = conn_lookup(h, r->conn);
  if (c == NULL) {
    free(r);
    return;
  }
  conn_submit(c, r);
}

static void on_wake(uv_async_t *a) {
  sr_holder_t *h = a->data;
  sr_qnode_t *n = sr_queue_take_all(&h->cmds);
  while (n) {
    sr_qnode_t *next = n->next;
    sr_cmdhead_t *head = (sr_cmdhead_t *)n;
    if (head->kind == CMD_REPLY) {
      do_reply(h, (sr_reply_t *)head);
    } else if (head->kind == CMD_FLUSH || head->kind == CMD_CLOSE || head->kind == CMD_RESUME) {
      sr_conncmd_t *cc = (sr_conncmd_t *)head;
      sr_conn_t *c = conn_lookup(h, cc->conn);
      if (c && head->kind == CMD_FLUSH) conn_flush(c);
      if (c && head->kind == CMD_RESUME) conn_resume(c);
      if (c && head->kind == CMD_CLOSE && c->state != C_CLOSED) {
        hlog(h, LOG_INFO, "write to %s failed; closing the connection", c->peer);
        conn_close_now(c);
      }
      free(cc);
    } else {
      sr_cmd_t *cmd = (sr_cmd_t *)head;
      switch (head->kind) {
        case CMD_LISTEN: do_listen(h, cmd); break;
        case CMD_UNLISTEN: {
          sr_daemon_t *d = find_daemon(h, cmd->daemon);
          cmd->rc = d ? 0 : SR_ENOTFOUND;
          if (d) remove_daemon(h, d);
          break;
        }
        case CMD_REGISTER: do_register(h, cmd); break;
        case CMD_UNREGISTER: do_unregister(h, cmd); break;
        case CMD_QUIESCE: do_quiesce(h); cmd->rc = 0; break;
        case CMD_STOP: do_stop(h); cmd->rc = 0; break;
        case CMD_LIMITS: {
          sr_daemon_t *d = find_daemon(h, cmd->daemon);
          cmd->rc = d ? 0 : SR_ENOTFOUND;
          if (d) cmd->lim = d->lim;
          break;
        }
        default: break;
      }
      if (cmd->sync) uv_sem_post(&cmd->done);
    }
    n = next;
  }
}

static void thread_main(void *arg) {
  sr_holder_t *h = arg;
  tl_holder = h;
  uv_run(&h->loop, UV_RUN_DEFAULT);
  flush_events(h);
  tl_holder = NULL;
}

/* ---- owner side ---------------------------------------------------------- */

int sr_holder_new(sr_holder_t **out, sr_holder_notify_cb notify, void *ud) {
  sr_holder_t *h = calloc(1, sizeof *h);
  if (h == NULL) return SR_ENOMEM;
  if (sr_queue_init(&h->cmds) < 0) {
    free(h);
    return SR_ENOMEM;
  }
  if (sr_queue_init(&h->events) < 0) {
    sr_queue_destroy(&h->cmds);
    free(h);
    return SR_ENOMEM;
  }
  if (uv_mutex_init(&h->tab_mu) != 0) {
    sr_queue_destroy(&h->events);
    sr_queue_destroy(&h->cmds);
    free(h);
    return SR_ENOMEM;
  }
  h->notify = notify;
  h->notify_ud = ud;
  h->max_message = SR_WIRE_DEFAULT_MAX_MESSAGE;
  h->direct_writes = 1;
  *out = h;
  return 0;
}

static int start_thread(sr_holder_t *h) {
  if (uv_loop_init(&h->loop) != 0) return SR_ENOMEM;
  uv_async_init(&h->loop, &h->wake, on_wake);
  h->wake.data = h;
  uv_timer_init(&h->loop, &h->grace);
  h->grace.data = h;
  uv_timer_init(&h->loop, &h->sweep);
  h->sweep.data = h;
  h->ev_first = h->ev_last = NULL;
  uv_check_init(&h->loop, &h->flush_check);
  h->flush_check.data = h;
  uv_check_start(&h->flush_check, on_flush_check);
  uv_unref((uv_handle_t *)&h->flush_check);
  uv_prepare_init(&h->loop, &h->flush_prep);
  h->flush_prep.data = h;
  uv_prepare_start(&h->flush_prep, on_flush_prep);
  uv_unref((uv_handle_t *)&h->flush_prep);
  h->grace_closed = 0;
  h->stopping = 0;
  if (uv_thread_create(&h->thread, thread_main, h) != 0) {
    uv_close((uv_handle_t *)&h->flush_check, NULL);
    uv_close((uv_handle_t *)&h->flush_prep, NULL);
    uv_close((uv_handle_t *)&h->wake, NULL);
    uv_close((uv_handle_t *)&h->grace, NULL);
    uv_close((uv_handle_t *)&h->sweep, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    uv_loop_close(&h->loop);
    return SR_ENOMEM;
  }
  h->running = 1;
  return 0;
}

static void stop_thread(sr_holder_t *h) {
  if (!h->running) return;
  sr_holder_flush_replies(h); /* batched replies go out before the stop */
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_STOP;
  sr_queue_push(&h->cmds, &cmd.head.node);
  sr_async_wake(&h->wake);
  uv_thread_join(&h->thread);
  /* run close callbacks left, if any, then release the loop */
  uv_run(&h->loop, UV_RUN_NOWAIT);
  uv_loop_close(&h->loop);
  h->running = 0;
  free(h->conns);
  free(h->gens);
  free(h->freelist);
  free(h->tls_rbuf);
  h->tls_rbuf = NULL;
  h->conns = NULL;
  h->gens = NULL;
  h->freelist = NULL;
  h->cap = h->nfree = 0;
  h->nconns = 0;
  h->daemons = NULL;
  sr_qnode_t *n = sr_queue_take_all(&h->cmds); /* nothing should be left */
  while (n) {
    sr_qnode_t *next = n->next;
    int kind = ((sr_cmdhead_t *)n)->kind;
    if (kind == CMD_REPLY || kind == CMD_FLUSH || kind == CMD_CLOSE || kind == CMD_RESUME) free(n);
    n = next;
  }
}

static int run_sync(sr_holder_t *h, sr_cmd_t *cmd) {
  if (uv_sem_init(&cmd->done, 0) != 0) return SR_ENOMEM;
  cmd->sync = 1;
  sr_queue_push(&h->cmds, &cmd->head.node);
  sr_async_wake(&h->wake);
  uv_sem_wait(&cmd->done);
  uv_sem_destroy(&cmd->done);
  return cmd->rc;
}

void sr_holder_free(sr_holder_t *h) {
  if (h == NULL) return;
  stop_thread(h);
  sr_qnode_t *n = sr_queue_take_all(&h->events);
  while (n) {
    sr_qnode_t *next = n->next;
    sr_holder_event_done((sr_event_t *)n);
    free(n);
    n = next;
  }
  sr_queue_destroy(&h->cmds);
  sr_queue_destroy(&h->events);
  uv_mutex_destroy(&h->tab_mu);
  sr_tls_ctx_unref(h->next_tls);
  free(h);
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, char *err,
                   size_t errlen) {
  memset(ss, 0, sizeof *ss);
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int r = getaddrinfo(host, NULL, &hints, &res);
  if (r != 0 || res == NULL) {
    return sr_seterr(err, errlen, SR_EINVAL, "cannot listen on %s:%d: unknown host (%s)", host,
                     port, gai_strerror(r));
  }
  struct addrinfo *pick = res;
  for (struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  memcpy(ss, pick->ai_addr, pick->ai_addrlen);
  if (pick->ai_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  freeaddrinfo(res);
  return 0;
}

/* h->next_lim with the defaults filled in. */
static void limits_resolve(const sr_holder_t *h, sr_holder_limits_t *out) {
  *out = h->next_lim;
  if (out->max_message == 0) out->max_message = h->max_message;
  if (out->max_connections == 0) out->max_connections = SR_HOLDER_DEFAULT_MAX_CONNECTIONS;
  if (out->send_deadline_ms == 0) out->send_deadline_ms = SR_HOLDER_DEFAULT_SEND_DEADLINE_MS;
  if (out->max_queued_conn == 0) out->max_queued_conn = SR_HOLDER_DEFAULT_MAX_QUEUED_CONN;
  if (out->max_queued_conn < 4) out->max_queued_conn = 4; /* resumes at a quarter */
  if (out->max_queued == 0) out->max_queued = SR_HOLDER_DEFAULT_MAX_QUEUED;
}

int sr_holder_peer(sr_holder_t *h, uint64_t conn, char *out, size_t n) {
  int rc = SR_ENOTFOUND;
  if (n == 0) return rc;
  snprintf(out, n, "?");
  if (!h->running) return rc;
  uint32_t idx = (uint32_t)(conn & 0xffffffffu);
  uv_mutex_lock(&h->tab_mu);
  /* peer is written at accept, before any event of the connection exists */
  if (idx < h->cap && h->conns[idx] != NULL && h->conns[idx]->id == conn) {
    snprintf(out, n, "%s", h->conns[idx]->peer);
    rc = 0;
  }
  uv_mutex_unlock(&h->tab_mu);
  return rc;
}

void sr_holder_set_limits(sr_holder_t *h, const sr_holder_limits_t *lim) {
  if (lim)
    h->next_lim = *lim;
  else
    memset(&h->next_lim, 0, sizeof h->next_lim);
}

void sr_holder_event_done(sr_event_t *ev) {
  if (ev == NULL || ev->kind != SR_EV_INVOKE || ev->dc == NULL) return;
  atomic_fetch_sub(&ev->dc->queued, 1);
  dcount_release(ev->dc);
  ev->dc = NULL;
}

int sr_holder_listen(sr_holder_t *h, const char *host, int port, unsigned ser_mask,
                     const sr_holder_obj_t *objs, size_t nobjs, uint32_t *daemon_id,
                     int *bound_port, char *err, size_t errlen) {
  if (port < 0 || port > 65535)
    return sr_seterr(err, errlen, SR_EINVAL, "cannot listen on %s:%d: port out of range", host,
                     port);
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  int rc = resolve(host, port, &cmd.addr, err, errlen);
  if (rc < 0) return rc;
  char where[300];
  snprintf(where, sizeof where, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
  if (!h->running && (rc = start_thread(h)) < 0)
    return sr_seterr(err, errlen, rc, "cannot listen on %s: cannot start the daemon thread",
                     where);
  for (size_t i = 0; i < nobjs; i++)
    if (strlen(objs[i].name) > SR_HOLDER_MAX_NAME)
      return sr_seterr(err, errlen, SR_EINVAL, "cannot listen on %s: object name too long", where);
  cmd.head.kind = CMD_LISTEN;
  cmd.where = where;
  limits_resolve(h, &cmd.lim);
  cmd.ser_mask = ser_mask;
  cmd.objs = objs;
  cmd.nobjs = nobjs;
  cmd.tls = h->next_tls;
  cmd.has_secret = h->next_has_secret;
  cmd.secret = h->next_secret;
  cmd.err = err;
  cmd.errlen = errlen;
  rc = run_sync(h, &cmd);
  if (rc < 0) {
    if (h->ndaemons == 0) stop_thread(h);
    return rc;
  }
  h->ndaemons++;
  *daemon_id = cmd.daemon;
  *bound_port = cmd.port_out;
  return 0;
}

int sr_holder_unlisten(sr_holder_t *h, uint32_t daemon_id) {
  if (!h->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_UNLISTEN;
  cmd.daemon = daemon_id;
  int rc = run_sync(h, &cmd);
  if (rc == 0 && --h->ndaemons == 0) stop_thread(h);
  return rc;
}

int sr_holder_register(sr_holder_t *h, uint32_t daemon_id, const char *name,
                       const uint8_t *const meta[SR_HOLDER_NSER],
                       const size_t meta_len[SR_HOLDER_NSER]) {
  if (strlen(name) > SR_HOLDER_MAX_NAME) return SR_EINVAL;
  if (!h->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_REGISTER;
  cmd.daemon = daemon_id;
  cmd.name = name;
  cmd.meta = meta;
  cmd.meta_len = meta_len;
  return run_sync(h, &cmd);
}

int sr_holder_unregister(sr_holder_t *h, uint32_t daemon_id, const char *name) {
  if (!h->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_UNREGISTER;
  cmd.daemon = daemon_id;
  cmd.name = name;
  return run_sync(h, &cmd);
}

int sr_holder_limits(sr_holder_t *h, uint32_t daemon_id, sr_holder_limits_t *out) {
  if (!h->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_LIMITS;
  cmd.daemon = daemon_id;
  int rc = run_sync(h, &cmd);
  if (rc == 0) *out = cmd.lim;
  return rc;
}

int sr_holder_quiesce(sr_holder_t *h) {
  if (!h->running) return 0;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_QUIESCE;
  return run_sync(h, &cmd);
}

static int push_conncmd(sr_holder_t *h, int kind, uint64_t conn) {
  sr_conncmd_t *cc = calloc(1, sizeof *cc);
  if (cc == NULL) return SR_ENOMEM;
  cc->head.kind = kind;
  cc->conn = conn;
  if (sr_queue_push(&h->cmds, &cc->head.node)) sr_async_wake(&h->wake);
  return 0;
}

int sr_holder_reply(sr_holder_t *h, uint64_t conn, uint32_t slot, const uint8_t *frame,
                    size_t len) {
  return sr_holder_reply_via(h, conn, slot, frame, len,
                             h->direct_writes ? SR_REPLY_DIRECT : SR_REPLY_HOLDER);
}

#define REPLY_BATCH_MAX 32

void sr_holder_flush_replies(sr_holder_t *h) {
  if (h->rep_first == NULL) return;
  sr_qnode_t *first = h->rep_first, *last = h->rep_last;
  h->rep_first = h->rep_last = NULL;
  h->nrep = 0;
  if (sr_queue_push_chain(&h->cmds, first, last)) sr_async_wake(&h->wake);
}

int sr_holder_reply_via(sr_holder_t *h, uint64_t conn, uint32_t slot, const uint8_t *frame,
                        size_t len, int how) {
  if (!h->running) return 0;
  if (how != SR_REPLY_DIRECT) {
    sr_reply_t *r = copy_reply(frame, len, slot);
    if (r == NULL) return SR_ENOMEM;
    r->head.kind = CMD_REPLY;
    r->conn = conn;
    if (how == SR_REPLY_BATCH) {
      chain_append(&h->rep_first, &h->rep_last, &r->head.node);
      /* a long batch starts going out before it is complete */
      if (++h->nrep >= REPLY_BATCH_MAX) sr_holder_flush_replies(h);
      return 0;
    }
    if (sr_queue_push(&h->cmds, &r->head.node)) sr_async_wake(&h->wake);
    return 0;
  }
  /* find the connection's write side and hold it while writing */
  sr_wside_t *w = NULL;
  uint32_t idx = (uint32_t)(conn & 0xffffffffu);
  uv_mutex_lock(&h->tab_mu);
  if (idx < h->cap && h->conns[idx] != NULL && h->conns[idx]->id == conn) {
    w = h->conns[idx]->w;
    if (w) {
      uv_mutex_lock(&w->mu);
      w->refs++;
      uv_mutex_unlock(&w->mu);
    }
  }
  uv_mutex_unlock(&h->tab_mu);
  if (w == NULL) return 0; /* the connection is gone: nobody to answer */
  uv_mutex_lock(&w->mu);
  int rc = submit_locked(w, slot, frame, len, NULL, 1);
  int flush = w->outq != NULL;
  uv_mutex_unlock(&w->mu);
  wside_release(w);
  if (rc < 0) return push_conncmd(h, CMD_CLOSE, conn);
  if (flush) {
    int frc = push_conncmd(h, CMD_FLUSH, conn);
    if (frc < 0) return frc;
  }
  if (rc == 1) return push_conncmd(h, CMD_RESUME, conn);
  return 0;
}

void sr_holder_set_security(sr_holder_t *h, const sr_holder_security_t *sec) {
  sr_tls_ctx_unref(h->next_tls);
  h->next_tls = sec ? sr_tls_ctx_ref(sec->tls) : NULL;
  h->next_has_secret = sec != NULL && sec->secret != NULL;
  if (h->next_has_secret) sr_secret_init(&h->next_secret, sec->secret, sec->secret_len);
}

void sr_holder_set_direct_writes(sr_holder_t *h, int on) { h->direct_writes = on != 0; }

sr_event_t *sr_holder_take(sr_holder_t *h) { return (sr_event_t *)sr_queue_take_all(&h->events); }

int sr_holder_count(const sr_holder_t *h) { return h->ndaemons; }

void sr_holder_set_max_message(sr_holder_t *h, size_t max_message) {
  h->max_message = max_message;
}
