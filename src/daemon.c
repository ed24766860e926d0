/*
 * daemon.c -- the daemon: one process-wide libuv loop serving every listener
 * (host:port) of the process, run by the owner while it is idle and by the
 * daemon's own thread while the owner is busy (see daemon.h for the
 * contract). This file holds the daemon object, who runs its loop ("who
 * runs the loop" below: the daemon thread and the owner's watch), the
 * owner's API (listen, unlisten, register, unregister, quiesce, free), the
 * listeners and their registered objects, and the events to the owner.
 *
 * Owner side (the Lua thread): sr_daemon_* functions build commands, push
 * them on d->cmds and wake the daemon loop with sr_wake_send (queue.h);
 * synchronous ones wait until the loop has run them (running it themselves
 * when the owner holds it). Loop side: one uv loop with the wake-up
 * (sr_wake_t), a uv_tcp_t per listener and per connection (daemon_conn.c),
 * the protocol (daemon_proto.c) and the write side both threads share
 * (daemon_write.c). Everything under "daemon thread" is touched only by
 * the thread running the loop -- the daemon thread, or the owner while it
 * holds the loop (d->runner, under d->run_mu, says which; the mutex orders
 * one's work before the other's) -- and by the owner after joining the
 * thread. Log lines and INVOKEs reach the owner as events (only the owner
 * may log or run Lua), collected per loop iteration and pushed in one go.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stddef.h>
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

/* The daemon whose loop this thread runs now (NULL otherwise). */
static _Thread_local sr_daemon_t *tl_daemon;
/* This is a daemon thread (not the owner running the loop). */
static _Thread_local int tl_thread;

static void flush_events(sr_daemon_t *d) {
  if (d->ev_first == NULL) return;
  sr_qnode_t *first = d->ev_first, *last = d->ev_last;
  d->ev_first = d->ev_last = NULL;
  /* quiet: the owner ran the loop and drains the events itself now */
  if (sr_queue_push_chain(&d->events, first, last) && d->notify && !d->quiet)
    d->notify(d->notify_ud);
}

static void on_flush_check(uv_check_t *c) { flush_events(c->data); }
static void on_flush_prep(uv_prepare_t *p) { flush_events(p->data); }

/* On the thread running the loop, events wait for the end of the
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
      if (cmd->sync) { /* the owner waits for it (run_sync); cmd is gone after */
        uv_mutex_lock(&d->run_mu);
        cmd->finished = 1;
        uv_cond_broadcast(&d->run_cv);
        uv_mutex_unlock(&d->run_mu);
      }
    }
    n = next;
  }
  if (tl_thread) { /* the owner is idle and asks for the loop back */
    uv_mutex_lock(&d->run_mu);
    int back = d->want_back && !d->stop_req;
    uv_mutex_unlock(&d->run_mu);
    if (back) uv_stop(&d->loop);
  }
}

/* ---- who runs the loop ------------------------------------------------------
 *
 * One loop, run by one thread at a time (ownership passes under run_mu, which
 * gives libuv the ordering it needs: a loop has no thread affinity, it must
 * only never run twice at once). While the owner (the Lua thread) is idle it
 * runs the loop itself: its own loop watches our backend descriptor and next
 * timer (sr_lead_t), runs one non-blocking iteration when either fires, and
 * drains the events at once -- a request is read, served and answered on one
 * thread, two wake-ups per sequential call instead of three (bench/README.md,
 * "The Lua thread runs the daemon loop while idle"). The daemon thread is
 * parked meanwhile and looks every SR_DAEMON_TAKEOVER_MS (longer while the
 * owner idles) whether the owner has run the loop since; when it has not and
 * the loop has work (the backend descriptor is readable or a timer is due),
 * the owner is busy (a long call, a blocking wait elsewhere): the thread takes
 * the loop and serves every connection as before, until the owner's prepare
 * handle, before the owner sleeps, asks for it back. */

/* The handles on the owner's loop; their data stay NULL (see sr_wake_init:
 * luv's loop finalizer leaves such handles alone). Freed when all three are
 * closed. */
typedef struct sr_lead_s {
  uv_poll_t poll;    /* the loop's backend descriptor is readable */
  uv_timer_t timer;  /* the loop's next timer is due */
  uv_prepare_t prep; /* the owner is about to sleep: ask the loop back */
  sr_daemon_t *d;    /* NULL once closing */
  int polling;
  int nopen;
} sr_lead_t;

#define LEAD_OF(h, member) ((sr_lead_t *)(void *)((char *)(h) - offsetof(sr_lead_t, member)))

static uint64_t now_ms(void) { return uv_hrtime() / 1000000u; }

static void on_lead_poll(uv_poll_t *p, int status, int events);
static void on_lead_timer(uv_timer_t *t);

/* Owner: watches the loop (t: ms to its next timer, -1 none). */
static void lead_arm(sr_daemon_t *d, int t) {
  sr_lead_t *ld = d->lead;
  if (ld == NULL) return;
  if (!ld->polling) {
    uv_poll_start(&ld->poll, UV_READABLE, on_lead_poll);
    ld->polling = 1;
  }
  if (t < 0)
    uv_timer_stop(&ld->timer);
  else
    uv_timer_start(&ld->timer, on_lead_timer, (uint64_t)t, 0);
}

/* Owner: the thread runs the loop; watching its descriptor would spin. */
static void lead_disarm(sr_lead_t *ld) {
  if (ld->polling) {
    uv_poll_stop(&ld->poll);
    ld->polling = 0;
  }
  uv_timer_stop(&ld->timer);
}

/* Owner: runs the loop (mode) when it holds it, then re-arms its watch.
 * quiet: the caller drains the events right after (no wake-up). Returns 1
 * when it ran, 0 when the thread holds the loop. */
static int owner_run(sr_daemon_t *d, uv_run_mode mode, int quiet) {
  uv_mutex_lock(&d->run_mu);
  if (d->runner != RUN_OWNER || d->stop_req) {
    uv_mutex_unlock(&d->run_mu);
    return 0;
  }
  d->owner_in_loop = 1;
  uv_mutex_unlock(&d->run_mu);
  sr_daemon_t *saved = tl_daemon;
  tl_daemon = d;
  d->quiet = quiet;
  uv_run(&d->loop, mode);
  flush_events(d);
  d->quiet = 0;
  tl_daemon = saved;
  int t = uv_backend_timeout(&d->loop);
  uv_mutex_lock(&d->run_mu);
  d->owner_in_loop = 0;
  d->progress++;
  d->due_ms = t < 0 ? 0 : now_ms() + (uint64_t)t;
  uv_mutex_unlock(&d->run_mu);
  lead_arm(d, t);
  return 1;
}

static void lead_step(sr_daemon_t *d) {
  if (!d->running || d->lead == NULL) return;
  if (owner_run(d, UV_RUN_NOWAIT, 1)) {
    /* the owner's clock as the calls start (their timers count from it),
     * not as its loop woke up before running ours */
    uv_update_time(d->owner_loop);
    if (d->drain) d->drain(d->drain_ud); /* may stop the thread (unlisten) */
  } else {
    lead_disarm(d->lead);
  }
}

void sr_daemon_owner_step(sr_daemon_t *d) { lead_step(d); }

static void on_lead_poll(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  sr_lead_t *ld = LEAD_OF(p, poll);
  if (ld->d) lead_step(ld->d);
}

static void on_lead_timer(uv_timer_t *t) {
  sr_lead_t *ld = LEAD_OF(t, timer);
  if (ld->d) lead_step(ld->d);
}

static void on_lead_prep(uv_prepare_t *p) {
  sr_lead_t *ld = LEAD_OF(p, prep);
  sr_daemon_t *d = ld->d;
  if (d == NULL) return;
  /* events waiting: the owner is not idle, it drains them next */
  uv_mutex_lock(&d->events.mu);
  int busy = d->events.head != NULL;
  uv_mutex_unlock(&d->events.mu);
  if (busy) return;
  uv_mutex_lock(&d->run_mu);
  int ask = d->runner == RUN_THREAD && !d->want_back && !d->stop_req;
  if (ask) d->want_back = 1;
  uv_mutex_unlock(&d->run_mu);
  if (ask) sr_wake_send(&d->wake); /* its on_wake stops its uv_run */
}

static void on_lead_closed(uv_handle_t *h) {
  sr_lead_t *ld;
  if (h->type == UV_POLL)
    ld = LEAD_OF(h, poll);
  else if (h->type == UV_TIMER)
    ld = LEAD_OF(h, timer);
  else
    ld = LEAD_OF(h, prep);
  if (--ld->nopen == 0) free(ld);
}

/* Owner, before the thread starts: the handles on its loop. Returns 0, or
 * -1 (the thread then runs the loop all the time). */
static int lead_open(sr_daemon_t *d) {
  sr_lead_t *ld = calloc(1, sizeof *ld);
  if (ld == NULL) return -1;
  if (uv_poll_init(d->owner_loop, &ld->poll, uv_backend_fd(&d->loop)) != 0) {
    free(ld);
    return -1;
  }
  uv_timer_init(d->owner_loop, &ld->timer);
  uv_prepare_init(d->owner_loop, &ld->prep);
  ld->poll.data = ld->timer.data = ld->prep.data = NULL;
  ld->nopen = 3;
  ld->d = d;
  /* they do not keep the owner's loop alive (its wake-up does) */
  uv_unref((uv_handle_t *)&ld->poll);
  uv_unref((uv_handle_t *)&ld->timer);
  uv_unref((uv_handle_t *)&ld->prep);
  uv_prepare_start(&ld->prep, on_lead_prep);
  d->lead = ld;
  lead_arm(d, 0);
  return 0;
}

/* Owner: the loop is about to end (stop_thread). */
static void lead_close(sr_daemon_t *d) {
  sr_lead_t *ld = d->lead;
  if (ld == NULL) return;
  d->lead = NULL;
  ld->d = NULL;
  uv_close((uv_handle_t *)&ld->poll, on_lead_closed);
  uv_close((uv_handle_t *)&ld->timer, on_lead_closed);
  uv_close((uv_handle_t *)&ld->prep, on_lead_closed);
}

/* Daemon thread, under run_mu: the loop has work the owner has not done.
 * A timer counts once it is late by more than the owner's own timer can be
 * (luv's clock is taken once per iteration, in whole ms). */
static int loop_has_work(sr_daemon_t *d) {
  struct pollfd pf = { .fd = d->backend_fd, .events = POLLIN };
  if (poll(&pf, 1, 0) > 0) return 1;
  return d->due_ms != 0 && now_ms() >= d->due_ms + SR_DAEMON_TAKEOVER_MS + 1;
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
  tl_thread = 1;
  /* checks that found the owner idle: look less often (up to 16 ms), an
   * idle server wakes this thread some 60 times a second */
  unsigned idle = 0;
  uv_mutex_lock(&d->run_mu);
  for (;;) {
    while (d->runner == RUN_OWNER && !d->stop_req) {
      uint64_t seen = d->progress;
      uint64_t ms = (uint64_t)SR_DAEMON_TAKEOVER_MS << (idle < 4 ? idle : 4);
      int r = uv_cond_timedwait(&d->run_cv, &d->run_mu, ms * 1000000u);
      if (d->runner != RUN_OWNER || d->stop_req || r != UV_ETIMEDOUT) continue;
      if (d->progress != seen || d->owner_in_loop) {
        /* (one step down: a lone sweep timer run is no traffic) */
        idle = idle > 0 ? idle - 1 : 0;
      } else if (loop_has_work(d)) {
        d->runner = RUN_THREAD; /* the owner is busy: take the loop */
        d->want_back = 0;
      } else {
        idle++;
      }
    }
    d->runner = RUN_THREAD;
    idle = 0;
    uv_mutex_unlock(&d->run_mu);
    tl_daemon = d;
    int alive = uv_run(&d->loop, UV_RUN_DEFAULT);
    flush_events(d);
    tl_daemon = NULL;
    uv_mutex_lock(&d->run_mu);
    if (!alive) break; /* stopped: every handle closed */
    if (d->want_back && !d->stop_req) { /* the owner is idle: hand it over */
      d->want_back = 0;
      d->runner = RUN_OWNER;
      uv_cond_broadcast(&d->run_cv);
      uv_mutex_unlock(&d->run_mu);
      if (d->notify) d->notify(d->notify_ud); /* sr_daemon_owner_step */
      uv_mutex_lock(&d->run_mu);
    }
  }
  uv_mutex_unlock(&d->run_mu);
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
  if (uv_mutex_init(&d->run_mu) != 0 || uv_cond_init(&d->run_cv) != 0) {
    /* (a mutex that failed to init is not destroyed: there is none) */
    uv_mutex_destroy(&d->tab_mu);
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
  d->backend_fd = uv_backend_fd(&d->loop);
  d->runner = RUN_THREAD;
  d->want_back = d->stop_req = d->owner_in_loop = 0;
  d->progress = d->due_ms = 0;
  if (d->owner_loop && lead_open(d) == 0) d->runner = RUN_OWNER;
  if (uv_thread_create(&d->thread, thread_main, d) != 0) {
    lead_close(d);
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
  lead_close(d); /* the owner stops watching the loop; the thread ends it */
  sr_cmd_t cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.head.kind = CMD_STOP;
  sr_queue_push(&d->cmds, &cmd.head.node);
  uv_mutex_lock(&d->run_mu);
  d->stop_req = 1;
  uv_cond_broadcast(&d->run_cv);
  uv_mutex_unlock(&d->run_mu);
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

/* Pushes cmd and returns once it is done: by the thread when it holds the
 * loop, else by running the loop here (the thread is parked then). */
static int run_sync(sr_daemon_t *d, sr_cmd_t *cmd) {
  cmd->sync = 1;
  cmd->finished = 0;
  sr_queue_push(&d->cmds, &cmd->head.node);
  sr_wake_send(&d->wake);
  for (;;) {
    uv_mutex_lock(&d->run_mu);
    while (!cmd->finished && (d->runner != RUN_OWNER || d->stop_req))
      uv_cond_wait(&d->run_cv, &d->run_mu);
    int done = cmd->finished;
    uv_mutex_unlock(&d->run_mu);
    if (done) return cmd->rc;
    /* not quiet: the events go to the owner's wake-up, drained later */
    owner_run(d, UV_RUN_ONCE, 0);
  }
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
  uv_cond_destroy(&d->run_cv);
  uv_mutex_destroy(&d->run_mu);
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

void sr_daemon_set_owner_loop(sr_daemon_t *d, uv_loop_t *owner_loop, sr_daemon_drain_cb drain,
                              void *ud) {
  d->owner_loop = owner_loop;
  d->drain = drain;
  d->drain_ud = ud;
}

int sr_daemon_owner_lend(sr_daemon_t *d) {
  if (!d->running) return 0;
  uv_mutex_lock(&d->run_mu);
  int lend = d->runner == RUN_OWNER && !d->stop_req && !d->owner_in_loop && d->lead != NULL;
  if (lend) {
    d->runner = RUN_THREAD;
    uv_cond_broadcast(&d->run_cv);
  }
  d->want_back = 0; /* busy after all: the thread keeps the loop */
  int theirs = d->runner == RUN_THREAD;
  uv_mutex_unlock(&d->run_mu);
  if (lend) lead_disarm(d->lead);
  return theirs;
}

void sr_daemon_set_direct_writes(sr_daemon_t *d, int on) { d->direct_writes = on != 0; }

sr_event_t *sr_daemon_take(sr_daemon_t *d) { return (sr_event_t *)sr_queue_take_all(&d->events); }

int sr_daemon_count(const sr_daemon_t *d) { return d->nlisteners; }

