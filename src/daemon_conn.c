/*
 * daemon_conn.c -- a connection on the daemon thread: accept, read, frame,
 * close, back-pressure, and the sweep timer that enforces the listeners'
 * time limits.
 *
 * A listener's socket accepts into an sr_conn_t (counted against
 * max_connections; past it the connection is kept just long enough to
 * answer its CONNECT with a CONNECTFAIL naming the limit). Bytes read (after
 * TLS decryption when the listener has TLS) go into the connection's framer
 * (capped at SR_DAEMON_HANDSHAKE_MAX_MESSAGE until the handshake succeeds,
 * then at max_message); each complete message goes to daemon_proto.c.
 * Reading stops while the connection owes max_queued_conn replies (until it
 * owes a quarter of that) or its listener has max_queued INVOKEs not yet
 * dispatched by the owner (until half: the sweep checks); the sweep also
 * closes connections past their send deadline (a message started and not
 * finished: slow-loris) or idle timeout. Connections of HTTP listeners
 * hand their bytes to daemon_http.c instead of the framer; the deadlines
 * and back-pressure are the same. Closing is graceful (queued
 * replies first, then TLS close_notify and shutdown) unless the socket
 * failed. Connections are freed only in their close callback.
 */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "daemon_int.h"

/* ---- connection lifetime ------------------------------------------------ */

static void on_conn_close(uv_handle_t *hd) {
  sr_conn_t *c = hd->data;
  sr_daemon_t *d = c->d;
  sr_framer_free(&c->fr);
  sr_http_conn_free(c);
  sr_tls_free(c->tls);
  if (c->counted && c->lis) c->lis->nconns--;
  sr_conn_table_remove(d, c);
  if (c->w) sr_wside_release(c->w);
  free(c);
  sr_daemon_maybe_finish_stop(d);
}

void sr_conn_close_now(sr_conn_t *c) {
  if (c->state == C_CLOSED) return;
  c->state = C_CLOSED;
  if (c->w) sr_wside_close(c->w);
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  sr_conn_t *c = req->data;
  sr_conn_close_now(c);
}

/* Stops reading, lets queued writes finish, then closes. Idempotent. */
void sr_conn_close_graceful(sr_conn_t *c) {
  if (c->state != C_OPEN) return;
  if (c->w) {
    sr_wside_close(c->w); /* the owner writes no more; what it queued goes first */
    sr_conn_flush(c);
  }
  if (c->tls && c->state == C_OPEN) { /* close_notify after the last reply */
    sr_tls_close(c->tls);
    if (sr_conn_tls_send(c) < 0) sr_conn_close_now(c);
  }
  if (c->state != C_OPEN) return; /* the flush failed and closed it */
  c->state = C_SHUTTING;
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) sr_conn_close_now(c);
}

/* The peer closed its side (EOF read: nothing is left unread). With no
 * reply waiting to be written and no TLS close_notify to send, close()
 * alone sends the FIN after whatever the kernel still holds, so the
 * shutdown() round (a POLLOUT wake-up and a syscall, a good share of a
 * short connection's cost: bench/README.md) is skipped; otherwise as
 * sr_conn_close_graceful. */
static void conn_close_at_eof(sr_conn_t *c) {
  if (c->state == C_OPEN && c->handshaken && c->w && sr_wside_owes(c->w, c->next_slot)) {
    /* a half-close (shutdown(SHUT_WR)): what was received before it is
     * answered, as Pyro4 does; the sweep closes once nothing is owed */
    c->peer_eof = 1;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    return;
  }
  int idle = c->state == C_OPEN && c->tls == NULL;
  if (idle && c->w) idle = !sr_wside_busy(c->w);
  if (idle && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
    sr_conn_close_now(c);
  else
    sr_conn_close_graceful(c);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  sr_conn_t *c = hd->data;
  if (c->tls || c->http) { /* ciphertext or HTTP: one daemon-wide buffer, consumed in on_read */
    *buf = uv_buf_init((char *)c->d->tls_rbuf, c->d->tls_rbuf ? READ_CHUNK : 0);
    return;
  }
  size_t got = 0;
  uint8_t *p = sr_framer_space(&c->fr, READ_CHUNK, &got);
  *buf = uv_buf_init((char *)p, p ? (unsigned)got : 0);
}

/* TLS: feeds ciphertext p[0..n) to c's session, moves every byte of
 * plaintext it yields on -- into the framer, or for an HTTP connection
 * through its request parser (counting the requests completed in
 * *requests) -- and sends what the session has to say (handshake records,
 * alerts). Returns 0; 1 when the peer closed the session (close_notify:
 * handle what is framed, then close like at EOF); or -1 when c is being
 * closed (a TLS failure is logged, with OpenSSL's reason). */
static int conn_tls_input(sr_conn_t *c, const uint8_t *p, size_t n, int *requests) {
  char err[300];
  if (sr_tls_feed(c->tls, p, n) < 0) {
    sr_clog(c, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
    sr_conn_close_now(c);
    return -1;
  }
  int was = sr_tls_established(c->tls);
  for (;;) {
    size_t room = 0, got = 0;
    uint8_t *dst;
    if (c->http) { /* the read buffer: sr_tls_feed copied the ciphertext out of it */
      dst = c->d->tls_rbuf;
      room = READ_CHUNK;
    } else {
      dst = sr_framer_space(&c->fr, READ_CHUNK, &room);
    }
    if (dst == NULL) {
      sr_clog(c, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
      sr_conn_close_now(c);
      return -1;
    }
    int rc = sr_tls_read(c->tls, dst, room, &got, err, sizeof err);
    if (rc == SR_ECLOSED) return 1; /* close_notify: like EOF */
    if (rc < 0) {
      sr_clog(c, LOG_WARNING, "TLS with %s on %s failed: %s; closing the connection", c->peer,
              c->lis ? c->lis->where : "?", err);
      if (sr_conn_tls_send(c) < 0) { /* the alert, if any */
        sr_conn_close_now(c);
        return -1;
      }
      int writing = sr_wside_busy(c->w);
      if (writing && c->state == C_OPEN) {
        /* let the alert leave, then close */
        c->state = C_SHUTTING;
        sr_wside_close(c->w);
        if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        c->shut.data = c;
        if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) sr_conn_close_now(c);
      } else {
        sr_conn_close_now(c);
      }
      return -1;
    }
    if (got == 0) break;
    if (c->http) {
      *requests += sr_http_conn_input(c, dst, got);
      if (c->state != C_OPEN) return -1;
    } else {
      sr_framer_commit(&c->fr, got);
    }
  }
  if (!was && sr_tls_established(c->tls)) {
    char subject[256];
    sr_tls_peer_subject(c->tls, subject, sizeof subject);
    sr_clog(c, LOG_DEBUG, "TLS established with %s on %s%s%s", c->peer,
            c->lis ? c->lis->where : "?", subject[0] ? ", client certificate " : "", subject);
  }
  if (sr_conn_tls_send(c) < 0) {
    sr_conn_close_now(c);
    return -1;
  }
  return 0;
}

/* Stops reading c when too many replies are owed (back-pressure). */
static void maybe_pause(sr_conn_t *c) {
  uint32_t outstanding;
  size_t qbytes;
  if (!sr_wside_pause(c->w, c->next_slot, c->max_owed, c->resume_below, &outstanding, &qbytes))
    return;
  c->paused = 1;
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  sr_clog(c, LOG_DEBUG, "pausing reads from %s: %u replies outstanding, %zu bytes queued (%s)",
          c->peer, (unsigned)outstanding, qbytes,
          outstanding >= c->max_owed ? "max_queued_per_connection"
                                     : "max_reply_bytes_per_connection");
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
      sr_proto_refuse(c, r > 0 ? &m : NULL);
      break;
    }
    if (r < 0) {
      if (!c->handshaken && r != SR_ETOOBIG) {
        sr_proto_fail_handshake(c, SR_SER_MARSHAL, 0, err);
      } else {
        sr_clog(c, LOG_WARNING, "closing connection from %s on %s: %s%s", c->peer,
                c->lis ? c->lis->where : "?", err,
                r != SR_ETOOBIG  ? ""
                : c->handshaken ? " (max_message_size)"
                                : " (before the handshake)");
        sr_conn_close_now(c);
      }
      return done;
    }
    if (!c->handshaken) {
      sr_proto_connect(c, &m);
    } else {
      if (c->connectok) sr_proto_place_connectok(c, &m);
      sr_proto_request(c, &m);
      if (c->state == C_OPEN) maybe_pause(c);
    }
  }
  return done;
}

/* Handles the complete messages read so far (conn_process_msgs); a
 * CONNECTOK nothing came behind is written now. Returns how many. */
static int conn_process(sr_conn_t *c) {
  int done = conn_process_msgs(c);
  if (c->connectok) sr_proto_place_connectok(c, NULL);
  return done;
}

/* Bytes of c's unfinished message. */
static size_t conn_pending(sr_conn_t *c) {
  return c->http ? sr_http_pending(c) : sr_framer_pending(&c->fr);
}

/* After reading or processing: the send deadline runs from the first byte of
 * an unfinished message; a complete message restarts it. */
static void conn_track_partial(sr_conn_t *c, int progressed, uint64_t now) {
  /* a TLS handshake that started counts as an unfinished message */
  int tls_pending = c->tls != NULL && c->tls_fed && !sr_tls_established(c->tls);
  if (conn_pending(c) == 0 && !tls_pending)
    c->msg_start = 0;
  else if (progressed || c->msg_start == 0)
    c->msg_start = now;
}

/* The first bytes on a TLS listener are its own protocol in the clear (a
 * Pyro CONNECT, an HTTP request line; TLS starts with a handshake record,
 * 0x16): refused in the client's terms, since it would not understand a
 * TLS alert. Returns 1 when they were (c is then closed after the answer). */
static int conn_plain_on_tls(sr_conn_t *c, const uint8_t *p, size_t n) {
  int plain = c->http ? p[0] >= 'A' && p[0] <= 'Z' : n >= 4 && memcmp(p, "PYRO", 4) == 0;
  if (!plain) return 0;
  sr_tls_free(c->tls);
  c->tls = NULL;
  if (c->http) { /* logged as a refused request */
    sr_http_refuse(c, 400, "this server requires TLS: use an https:// URL");
    return 1;
  }
  sr_clog(c, LOG_WARNING, "connection from %s on %s does not use TLS; refusing it", c->peer,
          c->lis ? c->lis->where : "?");
  sr_proto_fail_handshake(c, SR_SER_MARSHAL, 0, "this daemon requires TLS (SSL)");
  return 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  sr_conn_t *c = s->data;
  if (n < 0) {
    if (n != UV_EOF)
      sr_clog(c, LOG_DEBUG, "connection from %s: %s", c->peer, uv_strerror((int)n));
    /* the peer is gone or half-closed */
    if (n == UV_EOF)
      conn_close_at_eof(c);
    else
      sr_conn_close_now(c);
    return;
  }
  if (n == 0) return;
  uint64_t now = uv_now(&c->d->loop);
  c->last_active = now;
  int peer_done = 0; /* TLS close_notify */
  if (c->tls && !c->tls_fed && conn_plain_on_tls(c, (const uint8_t *)buf->base, (size_t)n)) return;
  if (c->http) {
    int progressed = 0;
    if (c->tls) {
      c->tls_fed = 1;
      if ((peer_done = conn_tls_input(c, (const uint8_t *)buf->base, (size_t)n, &progressed)) < 0)
        return;
    } else {
      progressed = sr_http_conn_input(c, (const uint8_t *)buf->base, (size_t)n);
    }
    if (peer_done) {
      conn_close_at_eof(c);
      return;
    }
    if (c->state == C_OPEN && !c->peer_eof) maybe_pause(c);
    if (c->state == C_OPEN) conn_track_partial(c, progressed, now);
    return;
  }
  if (c->tls) {
    c->tls_fed = 1;
    int unused = 0;
    if ((peer_done = conn_tls_input(c, (const uint8_t *)buf->base, (size_t)n, &unused)) < 0) return;
  } else {
    sr_framer_commit(&c->fr, (size_t)n);
  }
  int progressed = conn_process(c);
  if (peer_done) {
    sr_conn_close_graceful(c);
    return;
  }
  if (c->state == C_OPEN) conn_track_partial(c, progressed, now);
}

/* Reading again after back-pressure: handle what is buffered, then read. */
static void conn_unpause(sr_conn_t *c) {
  if (c->state != C_OPEN || c->quiesced || c->peer_eof) return;
  sr_clog(c, LOG_DEBUG, "resuming reads from %s", c->peer);
  uint64_t now = uv_now(&c->d->loop);
  int progressed = conn_process(c);
  if (c->state == C_OPEN) {
    c->last_active = now; /* the pause was ours, not the client's */
    conn_track_partial(c, progressed || c->msg_start != 0, now);
  }
  if (c->state == C_OPEN && !c->paused && !c->dpaused && !c->quiesced && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
    else
      sr_conn_close_now(c);
  }
}

void sr_conn_resume(sr_conn_t *c) {
  if (!c->paused) return;
  c->paused = 0;
  conn_unpause(c);
}

static void free_handle(uv_handle_t *hd) { free(hd); }

int sr_log_allowed(uint64_t *logged_at, uint32_t *unlogged, uint64_t now) {
  if (*logged_at != 0 && now - *logged_at < SR_DAEMON_LOG_EVERY_MS) {
    (*unlogged)++;
    return 0;
  }
  *logged_at = now ? now : 1;
  return 1;
}

void sr_conn_accept_cb(uv_stream_t *server, int status) {
  sr_listener_t *lis = server->data;
  sr_daemon_t *d = lis->d;
  if (status < 0) {
    if (sr_log_allowed(&lis->accept_logged_at, &lis->accept_unlogged, uv_now(&d->loop))) {
      sr_dlog_on(d, lis, LOG_WARNING, "accept on %s failed: %s (%s; %u more failures not logged)",
              lis->where, uv_strerror(status), uv_err_name(status),
              (unsigned)lis->accept_unlogged);
      lis->accept_unlogged = 0;
    }
    return;
  }
  sr_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL || sr_conn_table_add(d, c) < 0) {
    free(c);
    /* accept and drop, or the listener keeps firing */
    uv_tcp_t *tmp = malloc(sizeof *tmp);
    if (tmp != NULL && uv_tcp_init(&d->loop, tmp) == 0) {
      (void)uv_accept(server, (uv_stream_t *)tmp);
      uv_close((uv_handle_t *)tmp, free_handle);
    } else {
      free(tmp);
    }
    sr_dlog_on(d, lis, LOG_ERROR, "out of memory accepting on %s", lis->where);
    return;
  }
  c->d = d;
  c->lis = lis;
  sr_framer_init(&c->fr, lis->lim.max_message < SR_DAEMON_HANDSHAKE_MAX_MESSAGE
                             ? lis->lim.max_message
                             : SR_DAEMON_HANDSHAKE_MAX_MESSAGE);
  c->max_owed = lis->lim.max_queued_conn;
  c->resume_below = c->max_owed / 4;
  c->accepted_at = c->last_active = uv_now(&d->loop);
  c->counted = 1;
  if (++lis->nconns > lis->lim.max_connections) c->refused = 1;
  uv_tcp_init(&d->loop, &c->tcp);
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
  /* descriptors are allocated lowest first: this one near the limit means
   * the table is full. On EMFILE libuv closes the connections waiting to be
   * accepted (a reserved descriptor) without telling, so their clients see
   * a closed connection at once, never a hang; the ones open are served on.
   * Said here, rate-limited, since nothing else would say it. */
  if (lis->nofile != 0 && (unsigned long long)fd + 2 >= lis->nofile &&
      sr_log_allowed(&lis->accept_logged_at, &lis->accept_unlogged, uv_now(&d->loop))) {
    sr_dlog_on(d, lis, LOG_WARNING,
            "open files exhausted on %s: descriptor %d of the open-files limit %llu "
            "(ulimit -n), %u connections open; new clients are closed at once until some "
            "close (%u more not logged)",
            lis->where, (int)fd, lis->nofile, (unsigned)lis->nconns,
            (unsigned)lis->accept_unlogged);
    lis->accept_unlogged = 0;
  }
  c->w = sr_wside_new(fd, &lis->lim, lis->dc);
  if (c->w == NULL) {
    sr_dlog_on(d, lis, LOG_ERROR, "out of memory accepting on %s", lis->where);
    sr_conn_close_now(c);
    return;
  }
  if (lis->protocol == SR_DAEMON_PROTO_HTTP) {
    if (d->tls_rbuf == NULL) d->tls_rbuf = malloc(READ_CHUNK);
    if (d->tls_rbuf == NULL || sr_http_conn_init(c) < 0) {
      sr_dlog_on(d, lis, LOG_ERROR, "out of memory accepting on %s", lis->where);
      sr_conn_close_now(c);
      return;
    }
  }
  if (lis->tls) { /* Pyro or HTTP: the same TLS under either */
    char err[300];
    if (d->tls_rbuf == NULL) d->tls_rbuf = malloc(READ_CHUNK);
    if (d->tls_rbuf == NULL || sr_tls_new(&c->tls, lis->tls, NULL, err, sizeof err) < 0) {
      sr_dlog_on(d, lis, LOG_ERROR, "cannot start TLS on a connection to %s: %s", lis->where,
              d->tls_rbuf ? err : "out of memory");
      sr_conn_close_now(c);
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
    sr_dlog_on(d, lis, LOG_WARNING,
            "refusing connection from %s on %s: %u connections open (max_connections %u)",
            c->peer, lis->where, (unsigned)(lis->nconns - 1), (unsigned)lis->lim.max_connections);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    sr_conn_close_now(c);
    return;
  }
  c->reading = 1;
}

/* ---- limits over time: the sweep timer ----------------------------------- */

/* Every SWEEP_*: closes connections past their send deadline (slow-loris)
 * or idle timeout, drops refused ones that never sent a CONNECT, and reads
 * again from connections paused for their listener's max_queued once its
 * queue is down to half. */
static void on_sweep(uv_timer_t *t) {
  sr_daemon_t *d = t->data;
  uint64_t now = uv_now(&d->loop);
  int any_dpaused = 0, any_fast = 0;
  for (uint32_t i = 0; i < d->cap; i++) {
    sr_conn_t *c = d->conns[i];
    if (c == NULL || c->state != C_OPEN || c->lis == NULL) continue;
    sr_listener_t *lis = c->lis;
    if (c->peer_eof) {
      if (!sr_wside_owes(c->w, c->next_slot))
        sr_conn_close_graceful(c);
      else
        any_fast = 1; /* closed soon after its last reply is out */
      continue;
    }
    if (c->dpaused) {
      if (atomic_load(&lis->dc->queued) <= lis->lim.max_queued / 2 &&
          atomic_load(&lis->dc->queued_bytes) <= lis->lim.max_queued_bytes / 2) {
        c->dpaused = 0;
        conn_unpause(c);
      } else {
        any_dpaused = 1;
      }
      continue;
    }
    if (c->refused) {
      if (now - c->accepted_at >= SR_DAEMON_REFUSED_LINGER_MS) sr_conn_close_now(c);
      continue;
    }
    if (!c->handshaken && lis->lim.handshake_timeout_ms != UINT32_MAX &&
        now - c->accepted_at >= lis->lim.handshake_timeout_ms) {
      if (sr_log_allowed(&lis->hs_logged_at, &lis->hs_unlogged, now)) {
        sr_dlog_on(d, lis, LOG_WARNING,
                "closing connection from %s on %s: no %s within %u ms "
                "(handshake_timeout), %zu bytes received (%u more not logged)",
                c->peer, lis->where, c->http ? "complete request" : "handshake",
                (unsigned)lis->lim.handshake_timeout_ms, conn_pending(c),
                (unsigned)lis->hs_unlogged);
        lis->hs_unlogged = 0;
      }
      sr_conn_close_now(c);
      continue;
    }
    if (c->paused || c->quiesced) continue;
    if (c->msg_start != 0 && lis->lim.send_deadline_ms != UINT32_MAX &&
        now - c->msg_start >= lis->lim.send_deadline_ms) {
      sr_dlog_on(d, lis, LOG_WARNING,
              "closing connection from %s on %s: message not complete within %u ms "
              "(send_deadline), %zu bytes received",
              c->peer, lis->where, (unsigned)lis->lim.send_deadline_ms, conn_pending(c));
      sr_conn_close_now(c);
      continue;
    }
    if (lis->lim.idle_timeout_ms != 0 && c->msg_start == 0 &&
        now - c->last_active >= lis->lim.idle_timeout_ms) {
      if (sr_wside_owes(c->w, c->next_slot)) continue;
      sr_dlog_on(d, lis, LOG_INFO, "closing connection from %s on %s: idle for %u ms (idle_timeout)",
              c->peer, lis->where, (unsigned)lis->lim.idle_timeout_ms);
      sr_conn_close_graceful(c);
    }
  }
  uint64_t want = any_dpaused || any_fast ? SWEEP_MIN_MS : d->sweep_ms;
  if (uv_timer_get_repeat(&d->sweep) != want) uv_timer_start(&d->sweep, on_sweep, want, want);
}

void sr_sweep_schedule(sr_daemon_t *d) {
  uint64_t ms = SWEEP_MAX_MS;
  if (SR_DAEMON_REFUSED_LINGER_MS / 4 < ms) ms = SR_DAEMON_REFUSED_LINGER_MS / 4;
  for (sr_listener_t *lis = d->listeners; lis; lis = lis->next) {
    if (lis->lim.send_deadline_ms != UINT32_MAX && lis->lim.send_deadline_ms / 4 < ms)
      ms = lis->lim.send_deadline_ms / 4;
    if (lis->lim.handshake_timeout_ms != UINT32_MAX && lis->lim.handshake_timeout_ms / 4 < ms)
      ms = lis->lim.handshake_timeout_ms / 4;
    if (lis->lim.idle_timeout_ms != 0 && lis->lim.idle_timeout_ms / 4 < ms)
      ms = lis->lim.idle_timeout_ms / 4;
  }
  if (ms < SWEEP_MIN_MS) ms = SWEEP_MIN_MS;
  d->sweep_ms = ms;
  if (d->stopping) return;
  uv_timer_start(&d->sweep, on_sweep, ms, ms);
}

void sr_sweep_soon(sr_daemon_t *d) {
  if (!d->stopping && uv_timer_get_repeat(&d->sweep) != SWEEP_MIN_MS)
    uv_timer_start(&d->sweep, on_sweep, SWEEP_MIN_MS, SWEEP_MIN_MS);
}

