/*
 * daemon.c -- the daemon: one process-wide C thread with its own libuv loop
 * serving every listener (host:port) of the process (see daemon.h for the
 * contract). This file holds the daemon object and its thread, the owner's
 * API (listen, unlisten, register, unregister, quiesce, free), the
 * listeners and their registered objects, and the events to the owner.
 *
 * Owner side (the Lua thread): sr_daemon_* functions build commands, push
 * them on d->cmds and wake the daemon loop with sr_wake_send (queue.h);
 * synchronous ones wait on a semaphore inside the command. Daemon side: one
 * uv loop with the wake-up (sr_wake_t), a uv_tcp_t per listener and per
 * connection (daemon_conn.c), the protocol (daemon_proto.c) and the write
 * side both threads share (daemon_write.c). Everything under "daemon
 * thread" is touched only by the daemon thread while it runs (and by the
 * owner only after joining it). Log lines and INVOKEs reach the owner as
 * events (only the owner may log or run Lua), collected per loop iteration
 * and pushed in one go.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/resource.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_int.h"

/* ---- listener queue counts ----------------------------------------------- */

void sr_dcount_release(sr_dcount_t *dc) {
  if (dc && atomic_fetch_sub(&dc->refs, 1) == 1) free(dc);
}

/* ---- events to the owner ------------------------------------------------- */

/* The daemon whose thread this is (NULL on any other thread). */
static _Thread_local sr_daemon_t *tl_daemon;

static void flush_events(sr_daemon_t *d) {
  if (d->ev_first == NULL) return;
  sr_qnode_t *first = d->ev_first, *last = d->ev_last;
  d->ev_first = d->ev_last = NULL;
  if (sr_queue_push_chain(&d->events, first, last) && d->notify) d->notify(d->notify_ud);
}

static void on_flush_check(uv_check_t *c) { flush_events(c->data); }
static void on_flush_prep(uv_prepare_t *p) { flush_events(p->data); }

/* On the daemon thread, while it serves, events wait for the end of the
 * loop iteration (flush_events): everything read from the sockets that
 * were ready together crosses in one go, with one wake-up of the owner
 * instead of one per event the owner manages to take in between. */
void sr_daemon_push_event(sr_daemon_t *d, sr_event_t *ev) {
  if (tl_daemon == d && !d->stopping) {
    sr_chain_append(&d->ev_first, &d->ev_last, &ev->node);
    return;
  }
  if (sr_queue_push(&d->events, &ev->node) && d->notify) d->notify(d->notify_ud);
}

static void vdlog(sr_daemon_t *d, const sr_listener_t *lis, int level, const char *fmt,
                  va_list ap) {
  char text[512];
  int n = vsnprintf(text, sizeof text, fmt, ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof text) n = (int)sizeof text - 1;
  sr_event_t *ev = malloc(sizeof *ev + (size_t)n + 1);
  if (ev == NULL) return; /* a lost log line under OOM */
  memset(ev, 0, sizeof *ev);
  ev->kind = SR_EV_LOG;
  ev->level = level;
  if (lis) {
    ev->listener = lis->id;
    /* the owner logs an HTTP listener's lines under the Hessian exporter's name */
    if (lis->protocol == SR_DAEMON_PROTO_HTTP) ev->serializer = SR_DAEMON_SER_HESSIAN;
  }
  ev->len = (size_t)n;
  memcpy(ev->data, text, (size_t)n + 1);
  sr_daemon_push_event(d, ev);
}

void sr_dlog(sr_daemon_t *d, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdlog(d, NULL, level, fmt, ap);
  va_end(ap);
}

void sr_dlog_on(sr_daemon_t *d, const sr_listener_t *lis, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdlog(d, lis, level, fmt, ap);
  va_end(ap);
}

/* ---- stopping (daemon thread) --------------------------------------------- */

void sr_daemon_maybe_finish_stop(sr_daemon_t *d) {
  if (d->stopping && d->nconns == 0 && !d->grace_closed) {
    d->grace_closed = 1;
    uv_close((uv_handle_t *)&d->grace, NULL);
  }
}

/* ---- listeners and commands (daemon thread) ------------------------------- */

static int listener_add_obj(sr_listener_t *lis, const char *name, const uint8_t *const *meta,
                            const size_t *meta_len);

static void free_listener(sr_listener_t *lis) {
  sr_tls_ctx_unref(lis->tls);
  sr_dcount_release(lis->dc);
  while (lis->objs) {
    sr_obj_t *o = lis->objs;
    lis->objs = o->next;
    for (int i = 0; i < SR_DAEMON_NSER; i++) free(o->meta[i]);
    free(o);
  }
  free(lis);
}

static void on_listener_close(uv_handle_t *hd) {
  sr_listener_t *lis = hd->data;
  lis->tcp_closed = 1;
  if (lis->removed) free_listener(lis);
}

static void close_listener(sr_listener_t *lis) {
  if (!lis->tcp_open) return;
  lis->tcp_open = 0;
  uv_close((uv_handle_t *)&lis->tcp, on_listener_close);
}

static sr_listener_t *find_listener(sr_daemon_t *d, uint32_t id) {
  for (sr_listener_t *lis = d->listeners; lis; lis = lis->next)
    if (lis->id == id) return lis;
  return NULL;
}

static void do_listen(sr_daemon_t *d, sr_cmd_t *cmd) {
  sr_listener_t *lis = calloc(1, sizeof *lis);
  if (lis == NULL) {
    cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_ENOMEM, "cannot listen on %s: out of memory",
                        cmd->where);
    return;
  }
  lis->d = d;
  lis->ser_mask = cmd->ser_mask;
  lis->protocol = cmd->protocol;
  lis->lim = cmd->lim;
  lis->dc = calloc(1, sizeof *lis->dc);
  if (lis->dc == NULL) {
    free(lis);
    cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_ENOMEM, "cannot listen on %s: out of memory",
                        cmd->where);
    return;
  }
  atomic_init(&lis->dc->refs, 1);
  atomic_init(&lis->dc->queued, 0);
  atomic_init(&lis->dc->queued_bytes, 0);
  atomic_init(&lis->dc->reply_bytes, 0);
  lis->tls = sr_tls_ctx_ref(cmd->tls);
  lis->has_secret = cmd->has_secret;
  lis->secret = cmd->secret;
  uv_tcp_init(&d->loop, &lis->tcp);
  lis->tcp.data = lis;
  lis->tcp_open = 1;
  int r = uv_tcp_bind(&lis->tcp, (const struct sockaddr *)&cmd->addr, 0);
#ifdef __linux__
  /* Linux: accepted sockets inherit TCP_NODELAY from the listener, so it is
   * set once here, not with a setsockopt per connection (sr_conn_accept_cb) */
  if (r == 0) r = uv_tcp_nodelay(&lis->tcp, 1);
#endif
  /* the first objects are registered before accepting: a client that sees
   * the port open finds them */
  for (size_t i = 0; r == 0 && i < cmd->nobjs; i++) {
    if (listener_add_obj(lis, cmd->objs[i].name, cmd->objs[i].meta, cmd->objs[i].meta_len) < 0) {
      cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_ENOMEM, "cannot listen on %s: out of memory",
                          cmd->where);
      lis->removed = 1;
      close_listener(lis);
      return;
    }
  }
  if (r == 0) r = uv_listen((uv_stream_t *)&lis->tcp, 128, sr_conn_accept_cb);
  if (r != 0) {
    cmd->rc = sr_seterr(cmd->err, cmd->errlen, SR_EIO, "cannot listen on %s: %s (%s)",
                        cmd->where, uv_strerror(r), uv_err_name(r));
    lis->removed = 1;
    close_listener(lis);
    return;
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  int port = 0;
  char ip[INET6_ADDRSTRLEN] = "?";
  if (uv_tcp_getsockname(&lis->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) {
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    } else if (ss.ss_family == AF_INET6) {
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    }
  }
  snprintf(lis->where, sizeof lis->where, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    lis->nofile = (unsigned long long)rl.rlim_cur;
  lis->id = ++d->next_listener_id;
  if (lis->nofile != 0 && (unsigned long long)lis->lim.max_connections + 32 > lis->nofile)
    sr_dlog_on(d, lis, LOG_WARNING,
               "listening on %s: max_connections %u cannot be reached with the open-files limit "
               "%llu (ulimit -n); past it new clients are closed at once",
               lis->where, (unsigned)lis->lim.max_connections, lis->nofile);
  lis->next = d->listeners;
  d->listeners = lis;
  sr_sweep_schedule(d);
  cmd->listener = lis->id;
  cmd->port_out = port;
  cmd->rc = 0;
}

/* Unlinks lis, shuts its connections down gracefully, frees it once closed. */
static void remove_listener(sr_daemon_t *d, sr_listener_t *lis) {
  for (sr_listener_t **pp = &d->listeners; *pp; pp = &(*pp)->next) {
    if (*pp == lis) {
      *pp = lis->next;
      break;
    }
  }
  for (uint32_t i = 0; i < d->cap; i++) {
    sr_conn_t *c = d->conns[i];
    if (c && c->lis == lis) {
      c->lis = NULL;
      sr_conn_close_graceful(c);
    }
  }
  lis->removed = 1;
  if (lis->tcp_open)
    close_listener(lis); /* its close callback frees lis */
  else if (lis->tcp_closed)
    free_listener(lis); /* closed by quiesce earlier */
  /* else: quiesce's close callback is still to come and frees lis */
}

static void on_grace(uv_timer_t *t) {
  sr_daemon_t *d = t->data;
  for (uint32_t i = 0; i < d->cap; i++)
    if (d->conns[i]) sr_conn_close_now(d->conns[i]);
  if (!d->grace_closed) {
    d->grace_closed = 1;
    uv_close((uv_handle_t *)&d->grace, NULL);
  }
}

/* Adds (or replaces) object `name` of lis with copies of its CONNECTOK
 * payloads. Returns 0 or SR_ENOMEM. */
static int listener_add_obj(sr_listener_t *lis, const char *name, const uint8_t *const *meta,
                            const size_t *meta_len) {
  size_t nl = strlen(name);
  sr_obj_t *o = calloc(1, sizeof *o + nl + 1);
  if (o == NULL) return SR_ENOMEM;
  memcpy(o->name, name, nl + 1);
  for (int i = 0; i < SR_DAEMON_NSER; i++) {
    if (meta[i] == NULL || !(lis->ser_mask & (1u << i))) continue;
    o->meta[i] = malloc(meta_len[i] ? meta_len[i] : 1);
    if (o->meta[i] == NULL) {
      for (int j = 0; j < i; j++) free(o->meta[j]);
      free(o);
      return SR_ENOMEM;
    }
    memcpy(o->meta[i], meta[i], meta_len[i]);
    o->meta_len[i] = meta_len[i];
  }
  for (sr_obj_t **pp = &lis->objs; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->name, o->name) == 0) {
      sr_obj_t *old = *pp;
      *pp = old->next;
      for (int i = 0; i < SR_DAEMON_NSER; i++) free(old->meta[i]);
      free(old);
      break;
    }
  }
  o->next = lis->objs;
  lis->objs = o;
  return 0;
}

static void do_register(sr_daemon_t *d, sr_cmd_t *cmd) {
  sr_listener_t *lis = find_listener(d, cmd->listener);
  cmd->rc = lis ? listener_add_obj(lis, cmd->name, cmd->meta, cmd->meta_len) : SR_ENOTFOUND;
}

static void do_unregister(sr_daemon_t *d, sr_cmd_t *cmd) {
  sr_listener_t *lis = find_listener(d, cmd->listener);
  cmd->rc = SR_ENOTFOUND;
  if (lis == NULL) return;
  for (sr_obj_t **pp = &lis->objs; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->name, cmd->name) == 0) {
      sr_obj_t *old = *pp;
      *pp = old->next;
      for (int i = 0; i < SR_DAEMON_NSER; i++) free(old->meta[i]);
      free(old);
      cmd->rc = 0;
      return;
    }
  }
}

static void do_quiesce(sr_daemon_t *d) {
  for (sr_listener_t *lis = d->listeners; lis; lis = lis->next) close_listener(lis);
  for (uint32_t i = 0; i < d->cap; i++) {
    sr_conn_t *c = d->conns[i];
    if (c) c->quiesced = 1;
    if (c && c->reading) {
      uv_read_stop((uv_stream_t *)&c->tcp);
      c->reading = 0;
    }
  }
}

static void do_stop(sr_daemon_t *d) {
  flush_events(d);
  d->stopping = 1; /* events go out at once from now on */
  uv_close((uv_handle_t *)&d->flush_check, NULL);
  uv_close((uv_handle_t *)&d->flush_prep, NULL);
  uv_close((uv_handle_t *)&d->sweep, NULL);
  while (d->listeners) remove_listener(d, d->listeners);
  for (uint32_t i = 0; i < d->cap; i++)
    if (d->conns[i]) sr_conn_close_graceful(d->conns[i]);
  sr_wake_close(&d->wake, NULL);
  if (d->nconns > 0) {
    d->grace.data = d;
    uv_timer_start(&d->grace, on_grace, GRACE_MS, 0);
  } else {
    sr_daemon_maybe_finish_stop(d);
  }
}

static void do_reply(sr_daemon_t *d, sr_reply_t *r) {
  sr_conn_t *c = sr_conn_lookup(d, r->conn);
  if (c == NULL) {
    free(r);
    return;
  }
  sr_conn_submit(c, r);
}

static void on_wake(sr_wake_t *w) {
  sr_daemon_t *d = w->data;
  sr_qnode_t *n = sr_queue_take_all(&d->cmds);
  while (n) {
    sr_qnode_t *next = n->next;
    sr_cmdhead_t *head = (sr_cmdhead_t *)n;
    if (head->kind == CMD_REPLY) {
      do_reply(d, (sr_reply_t *)head);
    } else if (head->kind == CMD_FLUSH || head->kind == CMD_CLOSE || head->kind == CMD_RESUME) {
      sr_conncmd_t *cc = (sr_conncmd_t *)head;
      sr_conn_t *c = sr_conn_lookup(d, cc->conn);
      if (c && head->kind == CMD_FLUSH) sr_conn_flush(c);
      if (c && head->kind == CMD_RESUME) sr_conn_resume(c);
      if (c && head->kind == CMD_CLOSE && c->state != C_CLOSED) sr_conn_close_write_failed(c);
      free(cc);
    } else {
      sr_cmd_t *cmd = (sr_cmd_t *)head;
      switch (head->kind) {
        case CMD_LISTEN: do_listen(d, cmd); break;
        case CMD_UNLISTEN: {
          sr_listener_t *lis = find_listener(d, cmd->listener);
          cmd->rc = lis ? 0 : SR_ENOTFOUND;
          if (lis) remove_listener(d, lis);
          break;
        }
        case CMD_REGISTER: do_register(d, cmd); break;
        case CMD_UNREGISTER: do_unregister(d, cmd); break;
        case CMD_QUIESCE: do_quiesce(d); cmd->rc = 0; break;
        case CMD_STOP: do_stop(d); cmd->rc = 0; break;
        case CMD_LIMITS: {
          sr_listener_t *lis = find_listener(d, cmd->listener);
          cmd->rc = lis ? 0 : SR_ENOTFOUND;
          if (lis) cmd->lim = lis->lim;
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
  sr_daemon_t *d = arg;
  /* libuv writes with write(2), which raises SIGPIPE on a socket the peer
   * reset: blocked in this thread, the write fails with EPIPE whatever the
   * embedding program did with the signal's disposition */
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, NULL);
  tl_daemon = d;
  uv_run(&d->loop, UV_RUN_DEFAULT);
  flush_events(d);
  tl_daemon = NULL;
}

/* ---- owner side ---------------------------------------------------------- */

int sr_daemon_new(sr_daemon_t **out, sr_daemon_notify_cb notify, void *ud) {
  sr_daemon_t *d = calloc(1, sizeof *d);
  if (d == NULL) return SR_ENOMEM;
  if (sr_queue_init(&d->cmds) < 0) {
    free(d);
    return SR_ENOMEM;
  }
  if (sr_queue_init(&d->events) < 0) {
    sr_queue_destroy(&d->cmds);
    free(d);
    return SR_ENOMEM;
  }
  if (uv_mutex_init(&d->tab_mu) != 0) {
    sr_queue_destroy(&d->events);
    sr_queue_destroy(&d->cmds);
    free(d);
    return SR_ENOMEM;
  }
  d->notify = notify;
  d->notify_ud = ud;
  d->direct_writes = 1;
  *out = d;
  return 0;
}

static int start_thread(sr_daemon_t *d) {
  if (uv_loop_init(&d->loop) != 0) return SR_ENOMEM;
  if (sr_wake_init(&d->loop, &d->wake, on_wake, d) < 0) {
    uv_loop_close(&d->loop);
    return SR_EIO;
  }
  uv_timer_init(&d->loop, &d->grace);
  d->grace.data = d;
  uv_timer_init(&d->loop, &d->sweep);
  d->sweep.data = d;
  d->ev_first = d->ev_last = NULL;
  uv_check_init(&d->loop, &d->flush_check);
  d->flush_check.data = d;
  uv_check_start(&d->flush_check, on_flush_check);
  uv_unref((uv_handle_t *)&d->flush_check);
  uv_prepare_init(&d->loop, &d->flush_prep);
  d->flush_prep.data = d;
  uv_prepare_start(&d->flush_prep, on_flush_prep);
  uv_unref((uv_handle_t *)&d->flush_prep);
  d->grace_closed = 0;
  d->stopping = 0;
  if (uv_thread_create(&d->thread, thread_main, d) != 0) {
    uv_close((uv_handle_t *)&d->flush_check, NULL);
    uv_close((uv_handle_t *)&d->flush_prep, NULL);
    sr_wake_close(&d->wake, NULL);
    uv_close((uv_handle_t *)&d->grace, NULL);
    uv_close((uv_handle_t *)&d->sweep, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    uv_loop_close(&d->loop);
    return SR_ENOMEM;
  }
  d->running = 1;
  return 0;
}

static void stop_thread(sr_daemon_t *d) {
  if (!d->running) return;
  sr_daemon_flush_replies(d); /* batched replies go out before the stop */
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_STOP;
  sr_queue_push(&d->cmds, &cmd.head.node);
  sr_wake_send(&d->wake);
  uv_thread_join(&d->thread);
  /* run close callbacks left, if any, then release the loop */
  uv_run(&d->loop, UV_RUN_NOWAIT);
  uv_loop_close(&d->loop);
  d->running = 0;
  free(d->conns);
  free(d->gens);
  free(d->freelist);
  free(d->tls_rbuf);
  d->tls_rbuf = NULL;
  d->conns = NULL;
  d->gens = NULL;
  d->freelist = NULL;
  d->cap = d->nfree = 0;
  d->nconns = 0;
  d->listeners = NULL;
  sr_qnode_t *n = sr_queue_take_all(&d->cmds); /* nothing should be left */
  while (n) {
    sr_qnode_t *next = n->next;
    int kind = ((sr_cmdhead_t *)n)->kind;
    if (kind == CMD_REPLY || kind == CMD_FLUSH || kind == CMD_CLOSE || kind == CMD_RESUME) free(n);
    n = next;
  }
}

static int run_sync(sr_daemon_t *d, sr_cmd_t *cmd) {
  if (uv_sem_init(&cmd->done, 0) != 0) return SR_ENOMEM;
  cmd->sync = 1;
  sr_queue_push(&d->cmds, &cmd->head.node);
  sr_wake_send(&d->wake);
  uv_sem_wait(&cmd->done);
  uv_sem_destroy(&cmd->done);
  return cmd->rc;
}

void sr_daemon_free(sr_daemon_t *d) {
  if (d == NULL) return;
  stop_thread(d);
  sr_qnode_t *n = sr_queue_take_all(&d->events);
  while (n) {
    sr_qnode_t *next = n->next;
    sr_daemon_event_done((sr_event_t *)n);
    free(n);
    n = next;
  }
  sr_queue_destroy(&d->cmds);
  sr_queue_destroy(&d->events);
  uv_mutex_destroy(&d->tab_mu);
  free(d);
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

/* lim with the defaults filled in. */
static void limits_resolve(const sr_listener_limits_t *lim, sr_listener_limits_t *out) {
  *out = *lim;
  if (out->max_message == 0) out->max_message = SR_WIRE_DEFAULT_MAX_MESSAGE;
  if (out->max_connections == 0) out->max_connections = SR_DAEMON_DEFAULT_MAX_CONNECTIONS;
  if (out->send_deadline_ms == 0) out->send_deadline_ms = SR_DAEMON_DEFAULT_SEND_DEADLINE_MS;
  if (out->max_queued_conn == 0) out->max_queued_conn = SR_DAEMON_DEFAULT_MAX_QUEUED_CONN;
  if (out->max_queued_conn < 4) out->max_queued_conn = 4; /* resumes at a quarter */
  if (out->max_queued == 0) out->max_queued = SR_DAEMON_DEFAULT_MAX_QUEUED;
  if (out->max_reply_bytes_conn == 0) out->max_reply_bytes_conn = SR_DAEMON_DEFAULT_MAX_REPLY_BYTES_CONN;
  if (out->max_reply_bytes == 0) out->max_reply_bytes = SR_DAEMON_DEFAULT_MAX_REPLY_BYTES;
  if (out->max_queued_bytes == 0) out->max_queued_bytes = SR_DAEMON_DEFAULT_MAX_QUEUED_BYTES;
  if (out->handshake_timeout_ms == 0)
    out->handshake_timeout_ms = SR_DAEMON_DEFAULT_HANDSHAKE_TIMEOUT_MS;
  if (out->max_oneway == 0) out->max_oneway = SR_DAEMON_DEFAULT_MAX_ONEWAY;
  if (out->max_depth == 0) out->max_depth = SR_DECODE_DEFAULT_DEPTH;
  if (out->max_elements == 0) out->max_elements = SR_DECODE_DEFAULT_ELEMENTS;
}

void sr_daemon_event_done(sr_event_t *ev) {
  if (ev == NULL || ev->kind != SR_EV_INVOKE || ev->dc == NULL) return;
  atomic_fetch_sub(&ev->dc->queued, 1);
  atomic_fetch_sub(&ev->dc->queued_bytes, ev->len);
  sr_dcount_release(ev->dc);
  ev->dc = NULL;
}

int sr_daemon_listen(sr_daemon_t *d, const char *host, int port, const sr_listen_opts_t *opts,
                     uint32_t *listener_id, int *bound_port, char *err, size_t errlen) {
  if (port < 0 || port > 65535)
    return sr_seterr(err, errlen, SR_EINVAL, "cannot listen on %s:%d: port out of range", host,
                     port);
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  int rc = resolve(host, port, &cmd.addr, err, errlen);
  if (rc < 0) return rc;
  char where[300];
  snprintf(where, sizeof where, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
  if (!d->running && (rc = start_thread(d)) < 0)
    return sr_seterr(err, errlen, rc, "cannot listen on %s: cannot start the daemon thread",
                     where);
  for (size_t i = 0; i < opts->nobjs; i++)
    if (strlen(opts->objs[i].name) > SR_DAEMON_MAX_NAME)
      return sr_seterr(err, errlen, SR_EINVAL, "cannot listen on %s: object name too long", where);
  cmd.head.kind = CMD_LISTEN;
  cmd.where = where;
  limits_resolve(&opts->limits, &cmd.lim);
  cmd.ser_mask = opts->ser_mask;
  cmd.protocol = opts->protocol;
  cmd.objs = opts->objs;
  cmd.nobjs = opts->nobjs;
  cmd.tls = opts->security.tls;
  cmd.has_secret = opts->security.secret != NULL;
  if (cmd.has_secret)
    sr_secret_init(&cmd.secret, opts->security.secret, opts->security.secret_len);
  cmd.err = err;
  cmd.errlen = errlen;
  rc = run_sync(d, &cmd);
  if (rc < 0) {
    if (d->nlisteners == 0) stop_thread(d);
    return rc;
  }
  d->nlisteners++;
  *listener_id = cmd.listener;
  *bound_port = cmd.port_out;
  return 0;
}

int sr_daemon_unlisten(sr_daemon_t *d, uint32_t listener_id) {
  if (!d->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_UNLISTEN;
  cmd.listener = listener_id;
  int rc = run_sync(d, &cmd);
  if (rc == 0 && --d->nlisteners == 0) stop_thread(d);
  return rc;
}

int sr_daemon_register(sr_daemon_t *d, uint32_t listener_id, const char *name,
                       const uint8_t *const meta[SR_DAEMON_NSER],
                       const size_t meta_len[SR_DAEMON_NSER]) {
  if (strlen(name) > SR_DAEMON_MAX_NAME) return SR_EINVAL;
  if (!d->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_REGISTER;
  cmd.listener = listener_id;
  cmd.name = name;
  cmd.meta = meta;
  cmd.meta_len = meta_len;
  return run_sync(d, &cmd);
}

int sr_daemon_unregister(sr_daemon_t *d, uint32_t listener_id, const char *name) {
  if (!d->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_UNREGISTER;
  cmd.listener = listener_id;
  cmd.name = name;
  return run_sync(d, &cmd);
}

int sr_daemon_limits(sr_daemon_t *d, uint32_t listener_id, sr_listener_limits_t *out) {
  if (!d->running) return SR_ENOTFOUND;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_LIMITS;
  cmd.listener = listener_id;
  int rc = run_sync(d, &cmd);
  if (rc == 0) *out = cmd.lim;
  return rc;
}

int sr_daemon_quiesce(sr_daemon_t *d) {
  if (!d->running) return 0;
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_QUIESCE;
  return run_sync(d, &cmd);
}

void sr_daemon_set_direct_writes(sr_daemon_t *d, int on) { d->direct_writes = on != 0; }

sr_event_t *sr_daemon_take(sr_daemon_t *d) { return (sr_event_t *)sr_queue_take_all(&d->events); }

int sr_daemon_count(const sr_daemon_t *d) { return d->nlisteners; }

