/*
 * daemon_write.c -- the write side of a connection and the connection table:
 * the only code of the daemon that both threads run.
 *
 * The owner (the Lua thread) hands a reply over with sr_daemon_reply_via;
 * the daemon thread writes handshake answers, PING replies and whatever
 * the owner queued. Both meet in a connection's sr_wside_t, guarded by its
 * mutex w->mu: a reply is put in slot order (submit_locked) and sent
 * (emit_locked) with a non-blocking sendmsg() by whichever thread has it
 * when it is next and nothing is queued; otherwise it waits in `pending`
 * (early) or `outq` (for the daemon thread's uv_write), so one connection's
 * bytes never interleave and replies keep request order. The owner finds a
 * connection's write side through the connection table under d->tab_mu and
 * holds a reference while it writes. TLS connections are written by the
 * daemon thread only (it owns the SSL object). Every lock of connection
 * state is taken in this file; the other files call the small helpers
 * below (sr_wside_busy, sr_wside_owes, sr_wside_hold, sr_wside_pause).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "daemon_int.h"

/* ---- connection table (daemon thread; the owner reads under tab_mu) ------- */

static int conn_table_add_locked(sr_daemon_t *d, sr_conn_t *c) {
  if (d->nfree == 0) {
    uint32_t ncap = d->cap ? d->cap * 2 : 16;
    sr_conn_t **conns = realloc(d->conns, ncap * sizeof *conns);
    if (conns == NULL) return SR_ENOMEM;
    d->conns = conns;
    uint32_t *gens = realloc(d->gens, ncap * sizeof *gens);
    if (gens == NULL) return SR_ENOMEM;
    d->gens = gens;
    uint32_t *fl = realloc(d->freelist, ncap * sizeof *fl);
    if (fl == NULL) return SR_ENOMEM;
    d->freelist = fl;
    for (uint32_t i = ncap; i > d->cap; i--) {
      d->conns[i - 1] = NULL;
      d->gens[i - 1] = 1;
      d->freelist[d->nfree++] = i - 1;
    }
    d->cap = ncap;
  }
  uint32_t idx = d->freelist[--d->nfree];
  d->conns[idx] = c;
  c->id = ((uint64_t)d->gens[idx] << 32) | idx;
  d->nconns++;
  return 0;
}

int sr_conn_table_add(sr_daemon_t *d, sr_conn_t *c) {
  uv_mutex_lock(&d->tab_mu);
  int rc = conn_table_add_locked(d, c);
  uv_mutex_unlock(&d->tab_mu);
  return rc;
}

sr_conn_t *sr_conn_lookup(sr_daemon_t *d, uint64_t id) {
  uint32_t idx = (uint32_t)(id & 0xffffffffu);
  if (idx >= d->cap) return NULL;
  sr_conn_t *c = d->conns[idx];
  return (c != NULL && c->id == id) ? c : NULL;
}

void sr_conn_table_remove(sr_daemon_t *d, sr_conn_t *c) {
  uint32_t idx = (uint32_t)(c->id & 0xffffffffu);
  uv_mutex_lock(&d->tab_mu);
  d->conns[idx] = NULL;
  d->gens[idx]++;
  d->freelist[d->nfree++] = idx;
  d->nconns--;
  uv_mutex_unlock(&d->tab_mu);
}

/* ---- write side (both threads) ------------------------------------------- */

/* CONNECTOKs written in one write with the first reply (for the specs). */
static atomic_ulong merged_connectoks;

unsigned long sr_daemon_merged_connectoks(void) { return atomic_load(&merged_connectoks); }

sr_wside_t *sr_wside_new(int fd, const sr_listener_limits_t *lim, sr_dcount_t *dc) {
  sr_wside_t *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  if (uv_mutex_init(&w->mu) != 0) {
    free(w);
    return NULL;
  }
  w->refs = 1;
  w->fd = fd;
  w->max_bytes = lim->max_reply_bytes_conn;
  w->max_total = lim->max_reply_bytes;
  if (dc) atomic_fetch_add(&dc->refs, 1);
  w->dc = dc;
  return w;
}

/* Reply bytes of w change by +n / -n (with w->mu held). */
static void qbytes_add(sr_wside_t *w, size_t n) {
  w->qbytes += n;
  if (w->dc) atomic_fetch_add(&w->dc->reply_bytes, n);
}
static void qbytes_sub(sr_wside_t *w, size_t n) {
  w->qbytes -= n;
  if (w->dc) atomic_fetch_sub(&w->dc->reply_bytes, n);
}

/* Whether n more reply bytes fit the listener's max_reply_bytes; when not,
 * marks w (the caller fails, and its connection is closed). */
static int qbytes_fit(sr_wside_t *w, size_t n) {
  if (w->dc == NULL || atomic_load(&w->dc->reply_bytes) + n <= w->max_total) return 1;
  w->over_total = 1;
  return 0;
}

/* A paused connection may be read again: owed + queued replies are down to
 * resume_below (see sr_wside_pause) and its queued bytes to a quarter. */
static int resume_ok_locked(const sr_wside_t *w) {
  return (int32_t)(w->send_slot - w->resume_at) >= w->queued && w->qbytes <= w->max_bytes / 4;
}

static void free_chain(sr_reply_t *r) {
  while (r) {
    sr_reply_t *n = r->next;
    free(r);
    r = n;
  }
}

void sr_wside_release(sr_wside_t *w) {
  uv_mutex_lock(&w->mu);
  int last = --w->refs == 0;
  uv_mutex_unlock(&w->mu);
  if (!last) return;
  if (w->dc) { /* what never left stops counting for the listener */
    atomic_fetch_sub(&w->dc->reply_bytes, w->qbytes);
    sr_dcount_release(w->dc);
  }
  free_chain(w->pending);
  free_chain(w->outq);
  free(w->held);
  uv_mutex_destroy(&w->mu);
  free(w);
}

void sr_wside_close(sr_wside_t *w) {
  uv_mutex_lock(&w->mu);
  w->closed = 1;
  uv_mutex_unlock(&w->mu);
}

int sr_wside_busy(sr_wside_t *w) {
  uv_mutex_lock(&w->mu);
  int busy = w->queued != 0;
  uv_mutex_unlock(&w->mu);
  return busy;
}

int sr_wside_owes(sr_wside_t *w, uint32_t next_slot) {
  uv_mutex_lock(&w->mu);
  int owes = next_slot != w->send_slot || w->queued != 0;
  uv_mutex_unlock(&w->mu);
  return owes;
}

void sr_wside_hold(sr_wside_t *w, sr_reply_t *rep) {
  uv_mutex_lock(&w->mu);
  w->held = rep;
  w->queued++;
  qbytes_add(w, rep->len);
  uv_mutex_unlock(&w->mu);
}

int sr_wside_pause(sr_wside_t *w, uint32_t next_slot, uint32_t max_owed, uint32_t resume_below,
                   uint32_t *outstanding, size_t *qbytes) {
  uv_mutex_lock(&w->mu);
  /* owed replies plus replies written but not yet taken by the socket (a
   * client that does not read) */
  *outstanding = next_slot - w->send_slot + (uint32_t)w->queued;
  *qbytes = w->qbytes;
  int pause = *outstanding >= max_owed || w->qbytes >= w->max_bytes;
  if (pause) {
    w->paused = 1;
    w->resume_at = next_slot - resume_below;
  }
  uv_mutex_unlock(&w->mu);
  return pause;
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
  qbytes_add(w, r->len);
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
 * queue it for the daemon thread's uv_write. Called with w->mu held. Returns
 * 0, or -1 when the socket failed (the connection must be closed). */
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
      qbytes_sub(w, hd->len);
      iov[cnt++] = (struct iovec){ hd->data, hd->len };
      /* counted before the write: a peer that reads both answers may look
       * at the count at once (the daemon thread writes in batch/thread modes) */
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
  } else if (!qbytes_fit(w, total - done)) {
    free(hd);
    free(r);
    return -1; /* past max_reply_bytes: the connection is closed */
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
    if (!qbytes_fit(w, r ? r->len : len)) {
      free(r);
      return -1;
    }
    if (r == NULL && (r = copy_reply(data, len, slot)) == NULL) return -1;
    for (sr_reply_t *p = w->pending; p; p = p->next)
      if (p->slot == slot) { /* answered twice (call_timeout first) */
        free(r);
        return 0;
      }
    qbytes_add(w, r->len);
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
    qbytes_sub(w, n->len);
    if (emit_locked(w, NULL, 0, n, direct) < 0) return -1;
    w->send_slot++;
  }
  if (w->paused && resume_ok_locked(w)) {
    w->paused = 0;
    return 1;
  }
  return 0;
}

/* ---- daemon thread ------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);

int sr_conn_tls_send(sr_conn_t *c) {
  size_t n = sr_tls_pending(c->tls);
  if (n == 0) return 0;
  if (c->state == C_CLOSED) return -1;
  sr_reply_t *r = malloc(sizeof *r + n);
  if (r == NULL) {
    sr_clog(c, LOG_ERROR, "out of memory writing to %s; closing", c->peer);
    return -1; /* the caller closes it */
  }
  memset(r, 0, sizeof *r);
  r->len = sr_tls_take_raw(c->tls, r->data, n);
  uv_mutex_lock(&c->w->mu);
  c->w->queued++;
  qbytes_add(c->w, r->len);
  uv_mutex_unlock(&c->w->mu);
  uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
  r->wr.data = r;
  int rc = uv_write(&r->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc != 0) {
    uv_mutex_lock(&c->w->mu);
    c->w->queued--;
    qbytes_sub(c->w, r->len);
    uv_mutex_unlock(&c->w->mu);
    free(r);
    return -1;
  }
  return 0;
}

static void on_write(uv_write_t *req, int status) {
  sr_reply_t *r = req->data;
  sr_conn_t *c = req->handle->data;
  uv_mutex_lock(&c->w->mu);
  sr_wside_t *w = c->w;
  w->queued--;
  qbytes_sub(w, r->len);
  /* replies that left the process count against back-pressure too */
  int resume = w->paused && resume_ok_locked(w);
  if (resume) w->paused = 0;
  uv_mutex_unlock(&c->w->mu);
  if (resume && c->state == C_OPEN) sr_conn_resume(c);
  if (status < 0 && status != UV_ECANCELED && c->state != C_CLOSED) {
    sr_clog(c, LOG_INFO, "write to %s failed: %s; closing the connection", c->peer,
            uv_strerror(status));
    sr_conn_close_now(c);
  }
  free(r);
}

/* Hands everything in c's outq to uv_write, in order. */
void sr_conn_flush(sr_conn_t *c) {
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
    qbytes_sub(w, r->len);
    uv_mutex_unlock(&w->mu);
    free(r);
    if (trc < 0) {
      sr_clog(c, LOG_WARNING, "TLS to %s failed: %s; closing the connection", c->peer, err);
      sr_conn_close_now(c);
    }
    r = next;
  }
  if (c->tls) {
    if (c->state != C_CLOSED && sr_conn_tls_send(c) < 0) sr_conn_close_now(c);
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
      qbytes_sub(w, r->len);
      uv_mutex_unlock(&w->mu);
      free(r);
      if (c->state != C_CLOSED) {
        sr_clog(c, LOG_INFO, "write to %s failed: %s; closing the connection", c->peer,
                uv_strerror(rc));
        sr_conn_close_now(c);
      }
    }
    r = next;
  }
}

/* Writes r (owned) on c after everything queued before it (no slot: the
 * handshake answers). */
void sr_conn_write(sr_conn_t *c, sr_reply_t *r) {
  if (c->state == C_CLOSED) {
    free(r);
    return;
  }
  uv_mutex_lock(&c->w->mu);
  outq_push_locked(c->w, r);
  uv_mutex_unlock(&c->w->mu);
  sr_conn_flush(c);
}

/* Queues reply r (owned) for its slot, from the daemon thread. */
void sr_conn_submit(sr_conn_t *c, sr_reply_t *r) {
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
  if (flush) sr_conn_flush(c);
  if (rc < 0)
    sr_conn_close_write_failed(c);
  else if (rc == 1)
    sr_conn_resume(c);
}

void sr_conn_close_write_failed(sr_conn_t *c) {
  if (c->state == C_CLOSED) return;
  uv_mutex_lock(&c->w->mu);
  int over = c->w->over_total;
  size_t total = c->w->dc ? atomic_load(&c->w->dc->reply_bytes) : 0;
  uv_mutex_unlock(&c->w->mu);
  sr_listener_t *lis = c->lis;
  if (!over) {
    sr_clog(c, LOG_INFO, "write to %s failed; closing the connection", c->peer);
  } else if (lis == NULL ||
             sr_log_allowed(&lis->reply_logged_at, &lis->reply_unlogged, uv_now(&c->d->loop))) {
    sr_clog(c, LOG_WARNING,
            "closing connection from %s on %s: its reply would pass %zu bytes of replies queued "
            "(max_reply_bytes), %zu queued now (%u more not logged)",
            c->peer, lis ? lis->where : "?", c->w->max_total, total,
            lis ? (unsigned)lis->reply_unlogged : 0u);
    if (lis) lis->reply_unlogged = 0;
  }
  sr_conn_close_now(c);
}

/* ---- owner thread -------------------------------------------------------- */

int sr_daemon_peer(sr_daemon_t *d, uint64_t conn, char *out, size_t n) {
  int rc = SR_ENOTFOUND;
  uint32_t idx = (uint32_t)(conn & 0xffffffffu);
  if (d->running) {
    uv_mutex_lock(&d->tab_mu);
    /* peer is written at accept, before any event of the connection exists */
    if (idx < d->cap && d->conns[idx] != NULL && d->conns[idx]->id == conn) {
      /* a copy, not snprintf: this runs once per call (~450 instructions) */
      if (out != NULL && n > 0) {
        size_t len = strnlen(d->conns[idx]->peer, n - 1);
        memcpy(out, d->conns[idx]->peer, len);
        out[len] = '\0';
      }
      rc = 0;
    }
    uv_mutex_unlock(&d->tab_mu);
  }
  if (rc != 0 && out != NULL && n > 0) snprintf(out, n, "?");
  return rc;
}

static int push_conncmd(sr_daemon_t *d, int kind, uint64_t conn) {
  sr_conncmd_t *cc = calloc(1, sizeof *cc);
  if (cc == NULL) return SR_ENOMEM;
  cc->head.kind = kind;
  cc->conn = conn;
  if (sr_queue_push(&d->cmds, &cc->head.node)) sr_wake_send(&d->wake);
  return 0;
}

int sr_daemon_reply(sr_daemon_t *d, uint64_t conn, uint32_t slot, const uint8_t *frame,
                    size_t len) {
  return sr_daemon_reply_via(d, conn, slot, frame, len,
                             d->direct_writes ? SR_REPLY_DIRECT : SR_REPLY_THREAD);
}

#define REPLY_BATCH_MAX 32

void sr_daemon_flush_replies(sr_daemon_t *d) {
  if (d->rep_first == NULL) return;
  sr_qnode_t *first = d->rep_first, *last = d->rep_last;
  d->rep_first = d->rep_last = NULL;
  d->nrep = 0;
  if (sr_queue_push_chain(&d->cmds, first, last)) sr_wake_send(&d->wake);
}

int sr_daemon_reply_via(sr_daemon_t *d, uint64_t conn, uint32_t slot, const uint8_t *frame,
                        size_t len, int how) {
  if (!d->running) return 0;
  if (how != SR_REPLY_DIRECT) {
    sr_reply_t *r = copy_reply(frame, len, slot);
    if (r == NULL) return SR_ENOMEM;
    r->head.kind = CMD_REPLY;
    r->conn = conn;
    if (how == SR_REPLY_BATCH) {
      sr_chain_append(&d->rep_first, &d->rep_last, &r->head.node);
      /* a long batch starts going out before it is complete */
      if (++d->nrep >= REPLY_BATCH_MAX) sr_daemon_flush_replies(d);
      return 0;
    }
    if (sr_queue_push(&d->cmds, &r->head.node)) sr_wake_send(&d->wake);
    return 0;
  }
  /* find the connection's write side and hold it while writing */
  sr_wside_t *w = NULL;
  uint32_t idx = (uint32_t)(conn & 0xffffffffu);
  uv_mutex_lock(&d->tab_mu);
  if (idx < d->cap && d->conns[idx] != NULL && d->conns[idx]->id == conn) {
    w = d->conns[idx]->w;
    if (w) {
      uv_mutex_lock(&w->mu);
      w->refs++;
      uv_mutex_unlock(&w->mu);
    }
  }
  uv_mutex_unlock(&d->tab_mu);
  if (w == NULL) return 0; /* the connection is gone: nobody to answer */
  uv_mutex_lock(&w->mu);
  int rc = submit_locked(w, slot, frame, len, NULL, 1);
  int flush = w->outq != NULL;
  uv_mutex_unlock(&w->mu);
  sr_wside_release(w);
  if (rc < 0) return push_conncmd(d, CMD_CLOSE, conn);
  if (flush) {
    int frc = push_conncmd(d, CMD_FLUSH, conn);
    if (frc < 0) return frc;
  }
  if (rc == 1) return push_conncmd(d, CMD_RESUME, conn);
  return 0;
}

