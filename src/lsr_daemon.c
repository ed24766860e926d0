/*
 * lsr_daemon.c -- the Lua face of the daemon (daemon.c) in springrun.core,
 * and the Lua-thread end of its event queue.
 *
 * One daemon per process, created when springrun.core is opened; its thread
 * starts with the first listen. Events from the daemon thread wake luv's loop
 * through ONE wake-up (sr_wake_t, queue.h; open only while a listener is, so
 * luv's loop stays alive exactly while something is exported); its callback
 * drains everything queued and, for each INVOKE, decodes the payload here
 * (C, hot path) and calls the Lua handler set with daemon_set_handler:
 *
 *   handler([first,] listener_id, conn, tag, ser, flags, object, method, params, kwargs,
 *           corr [, call])
 *
 * params/kwargs are the decoded values as they came, except that an empty
 * kwargs table (map or list) is passed as nil (kwargs may be nil or
 * springrun.null). corr is the request's CORR annotation (16 bytes, the
 * correlation id) or nil. call, present when the listener bounds the call (a
 * oneway call: max_oneway; call_timeout set), is a value with a __close
 * metamethod: the function the call's task runs marks it to-be-closed
 * (lsr_serve.c), so it is closed when the call ends however it ends (a
 * failed task is reset by lsr_task.c, an abandoned one collected).
 * Compressed payloads are inflated here, on this thread, in turn with the
 * other connections' calls (see "by connection" below). The handler must
 * answer every request that is not oneway (flags & FLAG_ONEWAY) exactly
 * once with
 *
 *   core.daemon_reply(conn, tag, ser, flags, value [, ann_key, ann_value])
 *       -> true | nil, err
 *
 * (encodes a RESULT with the request's seq and serializer, and the one
 * annotation given: the STRM of an item stream). Requests whose
 * payload cannot be decoded, or lacks object/method/params/kwargs, are
 * answered here with an exception and never reach the handler; so is a
 * request whose handler raised. Log lines of the daemon thread go to
 * log_fn(level, text).
 *
 *   core.daemon_listen(host, port [, {{name, connectok_value}, ...} [, limits
 *                      [, security]]])   security: {tls = core.tls_context{server =
 *                      true, ...}, handshake_secret = "..."} (daemon.h)
 *       -> listener_id, bound_port | nil, err   (objects registered before
 *          the first connection is accepted). limits: a table with any of
 *          max_message_size (bytes), max_connections, send_deadline,
 *          handshake_timeout and idle_timeout (seconds, fractions allowed;
 *          send_deadline/handshake_timeout false: off, idle_timeout
 *          0/false: off), max_queued_per_connection, max_queued,
 *          max_queued_bytes, max_reply_bytes_per_connection,
 *          max_reply_bytes (bytes), max_oneway, call_timeout (seconds,
 *          0/false: off), max_depth, max_elements (of decoded requests);
 *          missing fields take the defaults (daemon.h, lsr_codec.h)
 *   core.daemon_set_class_hook(fn) -- fn(params, kwargs) -> params, kwargs
 *                               | nil, message: rebuilds the class dicts
 *                               of a request that has any (see below)
 *   core.daemon_unlisten(listener_id) -> true | nil, err
 *   core.daemon_register(listener_id, name, connectok_value) -> true | nil, err
 *   core.daemon_unregister(listener_id, name) -> true | nil, err
 *   core.daemon_quiesce()       -- stop accepting and reading (shutdown)
 *   core.daemon_count()         -- listeners open
 *   core.daemon_peer(conn)      -- "host:port" of a connection's client, or nil
 *   core.daemon_limits(listener_id) -- its limits, defaults filled in (l_limits)
 *   core.daemon_serializers()   -- list of accepted serializer ids
 *   core.daemon_set_reply_writer("auto" | "direct" | "thread")  -- who writes
 *                               replies (set_reply_writer below)
 *   core.daemon_reply_counts()  -- direct, batched, thread, fast, merged (below)
 *   core.daemon_waiting()       -- calls taken from the daemon, not started yet
 *   (the dispatch of a call: lsr_serve.c; its tasks: lsr_task.c)
 */
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "daemon.h"
#include "lsr.h"
#include "lsr_codec.h"
#include "lsr_tls.h"
#include "payload.h"
#include "wire.h"

#define LSR_DAEMON_GC "springrun.daemon"

static struct {
  sr_daemon_t *d;
  sr_wake_t *wake; /* on luv's loop while a listener is open, else NULL */
  uv_loop_t *loop;   /* luv's loop */
  lua_State *L; /* main thread of the state that opened the module */
  int handler_ref;
  int handler_arg_ref; /* LUA_NOREF, or the handler's extra first argument */
  int refuse_ref;      /* refuse(conn, tag, ser, flags, class, message), or LUA_NOREF */
  int classes_ref;     /* classes(params, kwargs), or LUA_NOREF (daemon_set_class_hook) */
  int log_ref;
  unsigned ser_mask; /* serializers whose encoder works, probed once */
  int probed;
  sr_buf_t buf; /* reply frame scratch (Lua thread only) */
  /* Replies to requests that arrived together (one drain of two or more
   * events) are handed to the daemon thread in one go at the end of the
   * drain (SR_REPLY_BATCH), which writes them while this thread works on
   * (cheaper than a send() per reply on this thread when many connections
   * are busy: bench/README.md has the figures); a lone request's reply is
   * sent by this thread at once, saving the daemon thread's wake-up. */
  int batch_replies;
  int in_batch; /* draining such a batch now */
  int direct;   /* otherwise: as sr_daemon_set_direct_writes */
  uint64_t nreplies[3]; /* by SR_REPLY_* */
  uint64_t nfast;       /* calls answered without a Lua function (lsr_serve.c) */
} G = { .handler_ref = LUA_NOREF, .handler_arg_ref = LUA_NOREF, .refuse_ref = LUA_NOREF,
        .classes_ref = LUA_NOREF,
        .log_ref = LUA_NOREF,
        .batch_replies = 1, .direct = 1 };

/* Called on the daemon thread, which only runs while G.wake exists (the
 * wake-up is opened before the first listen and closed after the thread of
 * the last unlisten was joined). */
static void notify_cb(void *ud) {
  (void)ud;
  sr_wake_send(G.wake);
}

static void on_events(sr_wake_t *w);

static void free_wake_cb(sr_wake_t *w) { free(w); }

/* The wake-up lives exactly while a listener is open: it keeps luv's loop
 * alive while something is exported, and no foreign handle is left on luv's
 * loop otherwise (luv's loop finalizer closes every handle it finds with its
 * own callback). */
static int open_wake(lua_State *L) {
  if (G.wake) return 0;
  sr_wake_t *w = malloc(sizeof *w);
  if (w == NULL) return SR_ENOMEM;
  G.loop = lsr_luv_loop(L);
  int rc = sr_wake_init(G.loop, w, on_events, NULL);
  if (rc < 0) {
    free(w);
    return rc;
  }
  G.wake = w;
  return 0;
}

static void close_wake(void) {
  if (G.wake == NULL) return;
  if (!uv_is_closing((uv_handle_t *)&G.wake->poll)) sr_wake_close(G.wake, free_wake_cb);
  G.wake = NULL;
}

/* ---- per listener, on this thread ------------------------------------------
 * The limits this thread enforces travel on each event (max_oneway,
 * call_timeout_ms); what it counts per listener is kept here from listen to
 * unlisten: the oneway calls running, and the rate limit of the line that
 * says some were dropped. */
typedef struct lsr_lstate_s {
  uint32_t id;
  uint32_t noneway;       /* oneway calls started and not ended */
  uint64_t drop_logged;   /* uv_hrtime() of the last "dropping" line, or 0 */
  unsigned drop_unlogged; /* dropped since, not logged */
} lsr_lstate_t;

static lsr_lstate_t *lstates; /* 0..nlstates, owned here (freed by l_gc) */
static int nlstates, caplstates;

static lsr_lstate_t *lstate_find(uint32_t id) {
  for (int i = 0; i < nlstates; i++)
    if (lstates[i].id == id) return &lstates[i];
  return NULL;
}

static int lstate_add(uint32_t id) {
  if (nlstates == caplstates) {
    int cap = caplstates ? caplstates * 2 : 8;
    lsr_lstate_t *n = realloc(lstates, (size_t)cap * sizeof *n);
    if (n == NULL) return SR_ENOMEM;
    lstates = n;
    caplstates = cap;
  }
  memset(&lstates[nlstates], 0, sizeof lstates[0]);
  lstates[nlstates++].id = id;
  return 0;
}

static void lstate_remove(uint32_t id) {
  lsr_lstate_t *ls = lstate_find(id);
  if (ls) *ls = lstates[--nlstates];
}

/* A call the listener bounds (see the handler's `call` argument above):
 * counted while it runs when oneway, or on the call_timeout list while it
 * owes a reply. A full userdata whose __close and __gc are call_end. */
#define LSR_CALL_MT "springrun.daemon.call"
typedef struct lsr_call_s {
  struct lsr_call_s *next, **pprev; /* on the timed list; pprev NULL: not */
  uint32_t listener;
  int oneway; /* counted in its listener's noneway */
  uint64_t conn, deadline_ns;
  uint32_t slot, ms;
  uint16_t seq, ser, flags;
} lsr_call_t;

static lsr_call_t *timed_head; /* calls awaiting their call_timeout */
static uv_timer_t *timed_timer; /* on luv's loop, unref'd; NULL until needed */

static void send_exception(lua_State *L, const sr_event_t *ev, const char *cls, const char *msg);
static void log_line(lua_State *L, int level, const char *text);
static void log_line_ser(lua_State *L, int level, const char *text, int ser);

static void timed_unlink(lsr_call_t *c) {
  *c->pprev = c->next;
  if (c->next) c->next->pprev = c->pprev;
  c->next = NULL;
  c->pprev = NULL;
}

/* The call ended (returned, failed, or its task was abandoned): uncounted,
 * and off the timed list. Idempotent. */
static int call_end(lua_State *L) {
  lsr_call_t *c = luaL_checkudata(L, 1, LSR_CALL_MT);
  if (c->oneway) {
    lsr_lstate_t *ls = lstate_find(c->listener);
    if (ls && ls->noneway > 0) ls->noneway--;
    c->oneway = 0;
  }
  if (c->pprev) timed_unlink(c);
  return 0;
}

/* The timer: calls past their deadline are answered with TimeoutError; the
 * late reply of such a call is dropped by the daemon (a slot is answered
 * once). */
static void on_timed(uv_timer_t *tm) {
  (void)tm;
  lua_State *L = G.L;
  if (L == NULL) return;
  uint64_t now = uv_hrtime();
  for (lsr_call_t *c = timed_head, *next; c; c = next) {
    next = c->next;
    if (now < c->deadline_ns) continue;
    sr_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.conn = c->conn;
    ev.slot = c->slot;
    ev.seq = c->seq;
    ev.serializer = c->ser;
    ev.flags = c->flags;
    char msg[200], line[300], peer[64];
    snprintf(msg, sizeof msg, "call did not finish within %g s (call_timeout)", c->ms / 1000.0);
    sr_daemon_peer(G.d, c->conn, peer, sizeof peer);
    snprintf(line, sizeof line, "call from %s: %s", peer, msg);
    timed_unlink(c);
    int base = lua_gettop(L);
    log_line_ser(L, 30, line, ev.serializer);
    send_exception(L, &ev, "Pyro4.errors.TimeoutError", msg);
    lua_settop(L, base);
  }
  if (timed_head == NULL && timed_timer) uv_timer_stop(timed_timer);
}

static void free_timer_cb(uv_handle_t *h) { free(h); }

/* Puts c (the call of ev) on the timed list with ev's call_timeout. */
static void timed_add(lsr_call_t *c, const sr_event_t *ev) {
  if (G.wake == NULL) return;
  if (timed_timer == NULL) {
    timed_timer = malloc(sizeof *timed_timer);
    if (timed_timer == NULL || uv_timer_init(G.loop, timed_timer) != 0) {
      free(timed_timer);
      timed_timer = NULL;
      return;
    }
    uv_unref((uv_handle_t *)timed_timer);
  }
  uint32_t ms = ev->call_timeout_ms;
  c->conn = ev->conn;
  c->slot = ev->slot;
  c->seq = ev->seq;
  c->ser = ev->serializer;
  c->flags = (uint16_t)(ev->flags & SR_FLAG_BATCH);
  c->ms = ms;
  c->deadline_ns = uv_hrtime() + (uint64_t)ms * 1000000u;
  c->next = timed_head;
  c->pprev = &timed_head;
  if (timed_head) timed_head->pprev = &c->next;
  timed_head = c;
  uint64_t every = ms / 4 < 10 ? 10 : ms / 4 > 1000 ? 1000 : ms / 4;
  if (!uv_is_active((uv_handle_t *)timed_timer) || uv_timer_get_repeat(timed_timer) > every)
    uv_timer_start(timed_timer, on_timed, every, every);
}

/* The last listener closed: nothing is owed any more; the timer goes (no
 * foreign handle stays on luv's loop, see open_wake). */
static void timed_clear(void) {
  while (timed_head) timed_unlink(timed_head);
  if (timed_timer && !uv_is_closing((uv_handle_t *)timed_timer))
    uv_close((uv_handle_t *)timed_timer, free_timer_cb);
  timed_timer = NULL;
}

/* Pushes the `call` value of ev (see the handler above) and returns 1, or
 * pushes nothing and returns 0 when its listener bounds nothing of it. */
static int push_call(lua_State *L, const sr_event_t *ev, lsr_lstate_t *ls, int oneway) {
  if (oneway ? ls == NULL : ev->call_timeout_ms == 0) return 0;
  lsr_call_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, LSR_CALL_MT);
  c->listener = ev->listener;
  if (oneway) {
    c->oneway = 1;
    ls->noneway++;
  } else {
    timed_add(c, ev);
  }
  return 1;
}

static unsigned probe_serializers(lua_State *L) {
  if (G.probed) return G.ser_mask;
  unsigned mask = 0;
  char err[256];
  for (int ser = 1; ser < SR_DAEMON_NSER; ser++) {
    sr_buf_t b;
    sr_buf_init(&b);
    lua_pushliteral(L, "hello");
    if (lsr_payload_encode(L, ser, lua_gettop(L), &b, err, sizeof err) == 0) mask |= 1u << ser;
    lua_pop(L, 1);
    sr_buf_free(&b);
  }
  G.ser_mask = mask;
  G.probed = 1;
  return mask;
}

/* Room kept in front of a Hessian reply for its HTTP head. */
#define HTTP_HEAD_ROOM 128

/* A request of an HTTP listener: the value at idx as a Hessian reply (with
 * EXCEPTION: the exception dict as a fault) in an HTTP/1.1 200 response,
 * built in G.buf and handed over like a RESULT frame. */
static int send_http_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t flags,
                            char *err, size_t errlen) {
  sr_buf_t *b = &G.buf;
  b->len = 0;
  int rc = sr_buf_reserve(b, HTTP_HEAD_ROOM + 64);
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  b->len = HTTP_HEAD_ROOM;
  rc = lsr_hessian_put_reply(L, idx, (flags & SR_FLAG_EXCEPTION) != 0, b, err, errlen);
  if (rc < 0) {
    b->len = 0;
    return rc;
  }
  char head[HTTP_HEAD_ROOM];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 200 OK\r\nContent-Type: x-application/hessian\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    b->len - HTTP_HEAD_ROOM);
  uint8_t *start = b->data + HTTP_HEAD_ROOM - hl;
  memcpy(start, head, (size_t)hl);
  int how = G.in_batch ? SR_REPLY_BATCH : G.direct ? SR_REPLY_DIRECT : SR_REPLY_THREAD;
  G.nreplies[how]++;
  rc = sr_daemon_reply_via(G.d, conn, slot, start, b->len - HTTP_HEAD_ROOM + (size_t)hl, how);
  if (b->cap > (1u << 20)) sr_buf_free(b);
  b->len = 0;
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  return 0;
}

/* Encodes the value at idx as a RESULT frame into G.buf and hands it over
 * (a request of an HTTP listener: send_http_result). Returns 0 or an SR_E* code with err set (nothing sent then). */
static int send_result_ann(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t seq,
                           uint16_t ser, uint16_t flags, const sr_wire_ann_t *ann, char *err,
                           size_t errlen) {
  idx = lua_absindex(L, idx);
  if (ser == SR_DAEMON_SER_HESSIAN) return send_http_result(L, idx, conn, slot, flags, err, errlen);
  sr_buf_t *b = &G.buf;
  b->len = 0;
  size_t ann_len = ann ? 6 + (size_t)ann->len : 0;
  int rc = sr_buf_reserve(b, SR_WIRE_HEADER_SIZE + ann_len + 64);
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  b->len = SR_WIRE_HEADER_SIZE;
  if (ann) { /* one annotation chunk between the header and the payload */
    uint8_t lenbytes[2] = { (uint8_t)(ann->len >> 8), (uint8_t)(ann->len & 0xff) };
    sr_buf_append(b, ann->key, 4); /* reserved above: cannot fail */
    sr_buf_append(b, lenbytes, 2);
    sr_buf_append(b, ann->value, ann->len);
  }
  rc = lsr_payload_encode(L, ser, idx, b, err, errlen);
  if (rc < 0) {
    b->len = 0;
    return rc;
  }
  size_t dlen = b->len - SR_WIRE_HEADER_SIZE - ann_len;
  if (dlen > 0x7fffffff) {
    b->len = 0;
    return sr_seterr(err, errlen, SR_ETOOBIG, "result payload of %zu bytes is too large", dlen);
  }
  sr_wire_header_t h = { .type = SR_MSG_RESULT, .flags = flags, .seq = seq, .serializer = ser,
                         .ann_len = (uint16_t)ann_len, .data_len = (uint32_t)dlen };
  sr_wire_header_encode(b->data, &h);
  int how = G.in_batch ? SR_REPLY_BATCH : G.direct ? SR_REPLY_DIRECT : SR_REPLY_THREAD;
  G.nreplies[how]++;
  rc = sr_daemon_reply_via(G.d, conn, slot, b->data, b->len, how);
  if (b->cap > (1u << 20)) sr_buf_free(b); /* don't keep a huge scratch around */
  b->len = 0;
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  return 0;
}

static int send_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t seq,
                       uint16_t ser, uint16_t flags, char *err, size_t errlen) {
  return send_result_ann(L, idx, conn, slot, seq, ser, flags, NULL, err, errlen);
}

int lsr_daemon_result(lua_State *L, int idx, uint64_t conn, lua_Integer tag, uint16_t ser,
                      uint16_t flags, int plain, char *err, size_t errlen) {
  int rc = send_result(L, idx, conn, (uint32_t)(tag >> 16), (uint16_t)(tag & 0xffff), ser, flags,
                       err, errlen);
  if (rc == 0 && plain) G.nfast++;
  return rc;
}

/* Answers a request refused before the handler ran with the exception cls:
 * msg, built by the exporter's refuse (daemon_set_handler): the exception
 * dict is made in one place. Without a refuse, or when it failed, the text
 * alone travels as the exception payload: the connection would otherwise
 * wait forever for this slot. */
static void send_exception(lua_State *L, const sr_event_t *ev, const char *cls, const char *msg) {
  int base = lua_gettop(L);
  if (G.refuse_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, G.refuse_ref);
    lua_pushinteger(L, (lua_Integer)ev->conn);
    lua_pushinteger(L, ((lua_Integer)ev->slot << 16) | ev->seq);
    lua_pushinteger(L, ev->serializer);
    lua_pushinteger(L, ev->flags);
    lua_pushstring(L, cls);
    lua_pushstring(L, msg);
    int st = lua_pcall(L, 6, 0, 0);
    lua_settop(L, base);
    if (st == LUA_OK) return;
  }
  lua_pushfstring(L, "%s: %s", cls, msg);
  if (ev->serializer == SR_DAEMON_SER_HESSIAN) {
    char err[300];
    send_result(L, -1, ev->conn, ev->slot, ev->seq, ev->serializer, SR_FLAG_EXCEPTION, err,
                sizeof err);
    lua_settop(L, base);
    return;
  }
  sr_buf_t b;
  sr_buf_init(&b);
  const char *s = lua_tostring(L, -1);
  if (sr_payload_encode_string(&b, ev->serializer, s, strlen(s)) == 0) {
    sr_buf_t f;
    sr_buf_init(&f);
    if (sr_wire_encode(&f, SR_MSG_RESULT, SR_FLAG_EXCEPTION, ev->seq, ev->serializer, NULL, 0,
                       b.data, b.len) == 0)
      sr_daemon_reply(G.d, ev->conn, ev->slot, f.data, f.len);
    sr_buf_free(&f);
  }
  sr_buf_free(&b);
  lua_settop(L, base);
}

/* The log function gets (level, text, serializer): SR_DAEMON_SER_HESSIAN
 * when the line is about an HTTP listener or request (logged under the
 * Hessian exporter's name), else 0. */
static void log_line_ser(lua_State *L, int level, const char *text, int ser) {
  if (G.log_ref == LUA_NOREF) return;
  int base = lua_gettop(L);
  lua_pushcfunction(L, lsr_traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.log_ref);
  lua_pushinteger(L, level);
  lua_pushstring(L, text);
  lua_pushinteger(L, ser);
  if (lua_pcall(L, 3, 0, base + 1) != LUA_OK) {
    /* the log function itself failed: nothing better than stderr */
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "springrun: log handler failed: %s\n", m ? m : "?");
  }
  lua_settop(L, base);
}

static void log_line(lua_State *L, int level, const char *text) { log_line_ser(L, level, text, 0); }

/* Replaces the kwargs value on top of the stack by nil when it is an empty
 * table (map or list: either means no keyword arguments), so the Lua side
 * needs no next() to tell. */
static void empty_kwargs_to_nil(lua_State *L) {
  if (lua_type(L, -1) != LUA_TTABLE) return;
  lua_pushnil(L);
  if (lua_next(L, -2) != 0) {
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_pushnil(L);
}

/* Pushes object, method, params, kwargs of the INVOKE table at idx (a map,
 * JSON shape, or a 4-item sequence, serpent's tuple); an empty kwargs table
 * is pushed as nil. Returns NULL, or the name of the missing/ill-typed field
 * with nothing pushed. */
static const char *push_invoke_fields(lua_State *L, int idx) {
  static const char *const keys[4] = { "object", "method", "params", "kwargs" };
  int seq_form = lua_rawgeti(L, idx, 1) != LUA_TNIL;
  lua_pop(L, 1);
  for (int i = 0; i < 4; i++) {
    if (seq_form)
      lua_rawgeti(L, idx, i + 1);
    else
      lua_getfield(L, idx, keys[i]);
    int t = lua_type(L, -1);
    int ok = (i < 2) ? t == LUA_TSTRING : (i == 2 ? t != LUA_TNIL : 1);
    if (!ok) {
      lua_pop(L, i + 1);
      return keys[i];
    }
  }
  empty_kwargs_to_nil(L);
  return NULL;
}

/* push_invoke_fields for the four values at stack slots at..at+3 (from
 * lsr_json_decode_invoke): the same checks, in the same order. */
static const char *push_fields_at(lua_State *L, int at) {
  static const char *const keys[4] = { "object", "method", "params", "kwargs" };
  for (int i = 0; i < 4; i++) {
    int t = lua_type(L, at + i);
    int ok = (i < 2) ? t == LUA_TSTRING : (i == 2 ? t != LUA_TNIL : 1);
    if (!ok) {
      lua_pop(L, i);
      return keys[i];
    }
    lua_pushvalue(L, at + i);
  }
  empty_kwargs_to_nil(L);
  return NULL;
}

static void dispatch_invoke(lua_State *L, sr_event_t *ev) {
  char err[300];
  int oneway = (ev->flags & SR_FLAG_ONEWAY) != 0;
  int base = lua_gettop(L);
  lua_pushcfunction(L, lsr_traceback);
  if (G.handler_ref == LUA_NOREF) {
    lua_settop(L, base);
    if (!oneway) send_exception(L, ev, "Pyro4.errors.DaemonError", "unknown object");
    return;
  }
  lsr_lstate_t *ls = oneway ? lstate_find(ev->listener) : NULL;
  if (ls && ls->noneway >= ev->max_oneway) {
    /* oneway calls owe no reply slot: this bounds the ones running */
    uint64_t now = uv_hrtime();
    if (ls->drop_logged == 0 ||
        now - ls->drop_logged >= (uint64_t)SR_DAEMON_LOG_EVERY_MS * 1000000u) {
      char line[300], peer[64];
      sr_daemon_peer(G.d, ev->conn, peer, sizeof peer);
      snprintf(line, sizeof line,
               "dropping oneway call from %s: %u oneway calls running (max_oneway %u; %u more "
               "dropped since the last line)",
               peer, (unsigned)ls->noneway, (unsigned)ev->max_oneway, ls->drop_unlogged);
      ls->drop_logged = now;
      ls->drop_unlogged = 0;
      log_line(L, 30, line);
    } else {
      ls->drop_unlogged++;
    }
    lua_settop(L, base);
    return;
  }
  /* compressed: inflated here, not on the daemon thread (daemon.h) */
  sr_buf_t plain;
  sr_buf_init(&plain);
  const uint8_t *data = ev->data;
  size_t len = ev->len;
  if (ev->flags & SR_FLAG_COMPRESSED) {
    if (sr_wire_inflate(&plain, ev->data, ev->len, ev->max_plain, err, sizeof err) < 0) {
      sr_buf_free(&plain);
      lua_settop(L, base);
      char text[400], line[500], peer[64];
      snprintf(text, sizeof text, "cannot inflate the request: %s", err);
      sr_daemon_peer(G.d, ev->conn, peer, sizeof peer);
      snprintf(line, sizeof line, "request from %s refused: %s", peer, text);
      log_line_ser(L, 30, line, ev->serializer);
      if (!oneway) send_exception(L, ev, "Pyro4.errors.ProtocolError", text);
      return;
    }
    data = plain.data ? plain.data : (const uint8_t *)"";
    len = plain.len;
    ev->flags &= (uint16_t)~SR_FLAG_COMPRESSED;
  }
  sr_decode_limits_t lim = { (int)ev->max_depth, ev->max_elements };
  /* JSON map (what every Pyro4 and springrun client sends): the four fields
   * straight onto the stack, no table built for the map */
  int rc = 1;
  if (ev->serializer == SR_DAEMON_SER_HESSIAN) {
    /* an HTTP request: the object is its path, the body a Hessian call */
    rc = lsr_hessian_decode_call(L, data + ev->name_len, len - ev->name_len, &lim, err,
                                 sizeof err);
    if (rc == 0) {
      lua_pushlstring(L, (const char *)data, ev->name_len);
      lua_insert(L, base + 2);
      lua_pushnil(L); /* kwargs */
      rc = 2;
    }
  } else if (ev->serializer == SR_SER_JSON) {
    rc = lsr_json_decode_invoke(L, data, len, &lim, err, sizeof err);
  }
  if (rc == 1) rc = lsr_payload_decode(L, ev->serializer, data, len, &lim, err, sizeof err);
  else if (rc == 0) rc = 2; /* the fields are at base + 2 .. base + 5 */
  /* class dicts ({"__class__": ...}) are rare: the bytes tell whether the
   * values need the class hook's walk */
  int has_class = rc >= 0 && G.classes_ref != LUA_NOREF && len >= 9 &&
                  memmem(data, len, "__class__", 9) != NULL;
  sr_buf_free(&plain); /* decoded: the values live in Lua now */
  if (rc < 0) {
    lua_settop(L, base);
    char text[600], line[700], peer[64];
    snprintf(text, sizeof text, "cannot decode the request: %s%s", err,
             rc == SR_EDEPTH ? " (max_depth)" : rc == SR_EELEMENTS ? " (max_elements)" : "");
    sr_daemon_peer(G.d, ev->conn, peer, sizeof peer);
    snprintf(line, sizeof line, "request from %s refused: %s", peer, text);
    log_line_ser(L, 30, line, ev->serializer);
    if (!oneway) send_exception(L, ev, "Pyro4.errors.SerializeError", text);
    return;
  }
  int vidx = lua_gettop(L);
  if (rc != 2 && !lua_istable(L, vidx)) {
    lua_settop(L, base);
    if (!oneway)
      send_exception(L, ev, "Pyro4.errors.ProtocolError", "invoke payload is not a map");
    return;
  }
  int nargs = 9;
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.handler_ref);
  if (G.handler_arg_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, G.handler_arg_ref);
    nargs++;
  }
  lua_pushinteger(L, ev->listener);
  lua_pushinteger(L, (lua_Integer)ev->conn);
  lua_pushinteger(L, ((lua_Integer)ev->slot << 16) | ev->seq);
  lua_pushinteger(L, ev->serializer);
  lua_pushinteger(L, ev->flags);
  const char *missing = rc == 2 ? push_fields_at(L, base + 2) : push_invoke_fields(L, vidx);
  if (missing) {
    lua_settop(L, base);
    if (!oneway) send_exception(L, ev, "builtins.KeyError", missing);
    return;
  }
  if (has_class) { /* params, kwargs on top: rebuilt by the hook, or refused */
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, G.classes_ref);
    lua_pushvalue(L, top - 1);
    lua_pushvalue(L, top);
    int st = lua_pcall(L, 2, 2, 0);
    if (st != LUA_OK || lua_isnil(L, -2)) {
      const char *m = lua_tostring(L, -1);
      snprintf(err, sizeof err, "%s", m ? m : "cannot rebuild the request's class dicts");
      lua_settop(L, base);
      char line[400], peer[64];
      sr_daemon_peer(G.d, ev->conn, peer, sizeof peer);
      snprintf(line, sizeof line, "request from %s refused: %s", peer, err);
      log_line(L, 30, line);
      if (!oneway) send_exception(L, ev, "Pyro4.errors.SerializeError", err);
      return;
    }
    lua_replace(L, top);
    lua_replace(L, top - 1);
  }
  if (ev->has_corr)
    lua_pushlstring(L, (const char *)ev->corr, 16);
  else
    lua_pushnil(L);
  nargs++;
  nargs += push_call(L, ev, ls, oneway);
  if (lua_pcall(L, nargs, 0, base + 1) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    snprintf(err, sizeof err, "%s", m ? m : "(error object)");
    lua_settop(L, base);
    log_line_ser(L, 40, err, ev->serializer);
    if (!oneway) send_exception(L, ev, "builtins.RuntimeError", err);
    return;
  }
  lua_settop(L, base);
}

/* ---- INVOKEs waiting for the Lua thread, by connection --------------------
 *
 * The events of one wake-up are not run in arrival order: each INVOKE joins
 * the queue of its connection, and the Lua thread takes one call from each
 * connection in turn (a ring of the connections with calls waiting), so
 * one connection that floods calls delays another by one of its calls per
 * round, not by its whole backlog. A turn of the loop dispatches for at
 * most DISPATCH_TURN_NS and wakes itself for the rest, so timers (the
 * shutdown's drain_timeout), signals and luv I/O run in between. A call
 * whose connection is gone by its turn is dropped (logged at DEBUG): nobody
 * waits for its reply; a oneway call still runs (as in Pyro4: a client may
 * send one and close at once, Pyro4's close_stream from a second proxy
 * does). The shutdown's drain waits for the waiting calls too
 * (core.daemon_waiting), within drain_timeout. */
#define DISPATCH_TURN_NS 10000000ull
#define CQ_BUCKETS 256

typedef struct lsr_cq_s {
  uint64_t conn;
  sr_event_t *head, *tail;
  struct lsr_cq_s *hnext; /* bucket chain */
  struct lsr_cq_s *rnext; /* ring (FIFO of connections with calls waiting) */
} lsr_cq_t;

static struct {
  lsr_cq_t *bucket[CQ_BUCKETS];
  lsr_cq_t *ring_head, *ring_tail;
  lua_Integer nwaiting;
  sr_event_t *cur; /* being dispatched (finished by on_events after an error) */
} Q;

static unsigned cq_hash(uint64_t conn) {
  return (unsigned)((conn * 0x9E3779B97F4A7C15ull) >> 56) & (CQ_BUCKETS - 1);
}

/* Appends ev to its connection's queue. Returns 0, or -1 (out of memory:
 * the caller dispatches it now). */
static int cq_push(sr_event_t *ev) {
  unsigned h = cq_hash(ev->conn);
  lsr_cq_t *q = Q.bucket[h];
  while (q && q->conn != ev->conn) q = q->hnext;
  if (q == NULL) {
    if ((q = calloc(1, sizeof *q)) == NULL) return -1;
    q->conn = ev->conn;
    q->hnext = Q.bucket[h];
    Q.bucket[h] = q;
    if (Q.ring_tail)
      Q.ring_tail->rnext = q;
    else
      Q.ring_head = q;
    Q.ring_tail = q;
  }
  ev->node.next = NULL;
  if (q->tail)
    q->tail->node.next = &ev->node;
  else
    q->head = ev;
  q->tail = ev;
  Q.nwaiting++;
  return 0;
}

/* The next call in turn (the first of the connection at the ring's head,
 * which then goes to the back of the ring), or NULL. */
static sr_event_t *cq_pop(void) {
  lsr_cq_t *q = Q.ring_head;
  if (q == NULL) return NULL;
  sr_event_t *ev = q->head;
  q->head = (sr_event_t *)ev->node.next;
  if (q->head == NULL) q->tail = NULL;
  ev->node.next = NULL;
  Q.nwaiting--;
  Q.ring_head = q->rnext;
  if (Q.ring_head == NULL) Q.ring_tail = NULL;
  q->rnext = NULL;
  if (q->head) { /* calls left: to the back of the ring */
    if (Q.ring_tail)
      Q.ring_tail->rnext = q;
    else
      Q.ring_head = q;
    Q.ring_tail = q;
  } else { /* none left: forgotten */
    lsr_cq_t **pp = &Q.bucket[cq_hash(q->conn)];
    while (*pp != q) pp = &(*pp)->hnext;
    *pp = q->hnext;
    free(q);
  }
  return ev;
}

/* Drops every waiting call (the daemon stopped: their connections are gone). */
static void cq_drop_all(void) {
  sr_event_t *ev;
  while ((ev = cq_pop()) != NULL) {
    sr_daemon_event_done(ev);
    free(ev);
  }
}

/* Finishes events from *cursor on: each is marked done (so the listener's
 * max_queued pause can lift) and freed. */
static void finish_events(sr_event_t **cursor) {
  while (*cursor) {
    sr_event_t *next = (sr_event_t *)(*cursor)->node.next;
    sr_daemon_event_done(*cursor);
    free(*cursor);
    *cursor = next;
  }
}

/* Runs under lua_pcall (on_events): the new events from the cursor (light
 * userdata) on -- log lines now, INVOKEs to their connection's queue --
 * then calls in turn (see "by connection" above) for one turn's time. */
static int drain_events(lua_State *L) {
  sr_event_t **cursor = lua_touserdata(L, 1);
  luaL_checkstack(L, 32, "springrun daemon events");
  while (*cursor) {
    sr_event_t *ev = *cursor;
    *cursor = (sr_event_t *)ev->node.next;
    if (ev->kind == SR_EV_INVOKE && cq_push(ev) == 0) continue;
    ev->node.next = NULL; /* Q.cur is finished alone after an error */
    Q.cur = ev;
    if (ev->kind == SR_EV_INVOKE)
      dispatch_invoke(L, ev);
    else if (ev->kind == SR_EV_LOG)
      log_line_ser(L, ev->level, (const char *)ev->data, ev->serializer);
    Q.cur = NULL;
    sr_daemon_event_done(ev);
    free(ev);
  }
  G.in_batch = G.batch_replies && Q.nwaiting > 1;
  uint64_t start = uv_hrtime();
  unsigned dropped = 0;
  char peer[64];
  while ((Q.cur = cq_pop()) != NULL) {
    sr_event_t *ev = Q.cur;
    if (!(ev->flags & SR_FLAG_ONEWAY) && sr_daemon_peer(G.d, ev->conn, peer, sizeof peer) < 0)
      dropped++; /* its connection is gone: nobody waits for it */
    else
      dispatch_invoke(L, ev);
    Q.cur = NULL;
    sr_daemon_event_done(ev);
    free(ev);
    if (Q.nwaiting > 0 && uv_hrtime() - start >= DISPATCH_TURN_NS) {
      if (G.wake) sr_wake_send(G.wake); /* the rest next turn */
      break;
    }
  }
  if (dropped) {
    lua_pushfstring(L, "dropped %d calls not started whose connections are gone", (int)dropped);
    log_line(L, 10, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return 0;
}

/* The wake-up's callback on luv's loop: one wake-up drains everything queued.
 * The Lua work runs under a pcall so that a Lua error (out of memory) never
 * unwinds through libuv; whatever was not dispatched is still finished. */
static void on_events(sr_wake_t *w) {
  (void)w;
  lua_State *L = G.L;
  if (G.d == NULL || L == NULL) return;
  sr_event_t *ev = sr_daemon_take(G.d);
  if (ev == NULL && Q.nwaiting == 0) return;
  int base = lua_gettop(L);
  lua_pushcfunction(L, drain_events);
  lua_pushlightuserdata(L, &ev);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "springrun: dispatching requests failed: %s\n", m ? m : "?");
    if (Q.cur != NULL) finish_events(&Q.cur); /* the event that failed mid-way */
    if (ev != NULL) finish_events(&ev);       /* not queued yet */
    if (Q.nwaiting > 0 && G.wake) sr_wake_send(G.wake);
  }
  G.in_batch = 0;
  sr_daemon_flush_replies(G.d);
  lua_settop(L, base);
}

/* ---- bindings ------------------------------------------------------------ */

static int fail(lua_State *L, int code, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, sr_err_name(code));
  return 3;
}

static uint32_t check_listener(lua_State *L, int i) {
  lua_Integer v = luaL_checkinteger(L, i);
  luaL_argcheck(L, v > 0 && v <= 0xffffffff, i, "not a listener id");
  return (uint32_t)v;
}

#define LSR_MAX_LISTEN_OBJS 16

/* Encodes the CONNECTOK value at idx for every accepted serializer into
 * bufs (the caller frees them) and points o's meta at them. */
static int encode_meta(lua_State *L, int idx, unsigned mask, sr_buf_t bufs[SR_DAEMON_NSER],
                       sr_listener_obj_t *o, char *err, size_t errlen) {
  for (int i = 0; i < SR_DAEMON_NSER; i++) {
    o->meta[i] = NULL;
    o->meta_len[i] = 0;
    if (!(mask & (1u << i))) continue;
    int rc = lsr_payload_encode(L, i, idx, &bufs[i], err, errlen);
    if (rc < 0) return rc;
    o->meta[i] = bufs[i].data ? bufs[i].data : (const uint8_t *)"";
    o->meta_len[i] = bufs[i].len;
  }
  return 0;
}

/* Reads field `k` of the limits table at idx: nil leaves *out; false
 * stores off_value (off < 0: false is not accepted); otherwise a number in
 * [lo, hi] (an integer when integer is set) times scale (seconds -> ms).
 * Raises naming the field and its range: the one place limits are checked
 * (the exporter passes its properties through). */
/* How each limit of the listen options travels from Lua into
 * sr_listener_limits_t: its range; an integer count or size, or seconds
 * (stored in ms, at least 1 ms when not 0; `off` is what false stands for,
 * -1 when false is not allowed); the field it fills (size_t or uint32_t). */
typedef struct {
  const char *name;
  double lo, hi;
  int seconds;
  double off;
  size_t at;
  int wide;
} limit_spec_t;

#define LIM_INT(name, lo, hi, field, wide)                                                \
  { name, lo, hi, 0, -1, offsetof(sr_listener_limits_t, field), wide }
#define LIM_SEC(name, lo, hi, off, field)                                                 \
  { name, lo, hi, 1, off, offsetof(sr_listener_limits_t, field), 0 }
static const limit_spec_t LIMITS[] = {
    LIM_INT("max_message_size", 1, SR_WIRE_MAX_MESSAGE_CAP, max_message, 1),
    LIM_INT("max_connections", 1, 1e6, max_connections, 0),
    LIM_SEC("send_deadline", 0.001, 86400, (double)UINT32_MAX, send_deadline_ms),
    LIM_SEC("handshake_timeout", 0.001, 86400, (double)UINT32_MAX, handshake_timeout_ms),
    LIM_SEC("idle_timeout", 0, 86400 * 30, 0, idle_timeout_ms),
    LIM_SEC("call_timeout", 0, 86400, 0, call_timeout_ms),
    LIM_INT("max_queued_per_connection", 4, 1e6, max_queued_conn, 0),
    LIM_INT("max_queued", 1, 1e7, max_queued, 0),
    LIM_INT("max_queued_bytes", 1024, 1099511627776.0, max_queued_bytes, 1),
    LIM_INT("max_reply_bytes_per_connection", 1024, 1099511627776.0, max_reply_bytes_conn, 1),
    LIM_INT("max_reply_bytes", 1024, 1099511627776.0, max_reply_bytes, 1),
    LIM_INT("max_oneway", 1, 1e7, max_oneway, 0),
    LIM_INT("max_depth", 1, 10000, max_depth, 0),
    LIM_INT("max_elements", 1, 1e9, max_elements, 0),
};
#undef LIM_INT
#undef LIM_SEC

/* One limit from the table at idx into hl; absent: left as it is (zero:
 * the default). Raises naming the limit and its range. */
static void read_limit(lua_State *L, int idx, const limit_spec_t *ls, sr_listener_limits_t *hl) {
  int t = lua_getfield(L, idx, ls->name);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  double v = t == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
  if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1) && ls->off >= 0) {
    v = ls->off;
  } else if (t != LUA_TNUMBER || !(v >= ls->lo && v <= ls->hi) ||
             (!ls->seconds && v != (double)(int64_t)v)) {
    if (!ls->seconds)
      luaL_error(L, "%s must be an integer in %I..%I, got %s", ls->name, (lua_Integer)ls->lo,
                 (lua_Integer)ls->hi, luaL_tolstring(L, -1, NULL));
    luaL_error(L, "%s must be a number of seconds in %f..%f%s, got %s", ls->name, ls->lo, ls->hi,
               ls->off >= 0 ? " (false: off)" : "", luaL_tolstring(L, -1, NULL));
  } else if (ls->seconds) {
    v *= 1000;
    if (v > 0 && v < 1) v = 1;
  }
  lua_pop(L, 1);
  char *field = (char *)hl + ls->at;
  if (ls->wide) {
    size_t z = (size_t)v;
    memcpy(field, &z, sizeof z);
  } else {
    uint32_t u = v >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    memcpy(field, &u, sizeof u);
  }
}

/* The limits table at idx (may be none/nil) into hl (zero fields: the
 * defaults). */
static void read_limits(lua_State *L, int idx, sr_listener_limits_t *hl) {
  memset(hl, 0, sizeof *hl);
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  for (size_t i = 0; i < sizeof LIMITS / sizeof LIMITS[0]; i++) read_limit(L, idx, &LIMITS[i], hl);
}

/* The security table at idx (none/nil: none): { tls = core.tls_context{server
 * = true, ...}, handshake_secret = "string" }. Borrowed pointers: valid while
 * the table is on the stack. */
static void read_security(lua_State *L, int idx, sr_listener_security_t *sec) {
  memset(sec, 0, sizeof *sec);
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "tls");
  sec->tls = lsr_tls_optctx(L, -1);
  if (sec->tls && !sr_tls_ctx_is_server(sec->tls))
    luaL_error(L, "daemon_listen: security.tls must be a server context (server = true)");
  lua_pop(L, 1);
  lua_getfield(L, idx, "handshake_secret");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "daemon_listen: security.handshake_secret must be a string");
    sec->secret = lua_tolstring(L, -1, &sec->secret_len);
  }
  lua_pop(L, 1);
}

/* A process that serves must not die when a client goes away mid-reply:
 * SIGPIPE is ignored when it still has the default disposition (one the
 * program set itself is left alone; the daemon thread blocks it anyway). */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
      !(sa.sa_flags & SA_SIGINFO)) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* daemon_listen(host, port [, objects [, limits [, security [, protocol]]]])
 *   -> id, port | nil, err, name
 * objects: a list of {name, connectok_value} registered before the listener
 * accepts its first connection (at most 16). protocol: "pyro" (default) or
 * "http" (daemon.h: object names are request paths, requests are Hessian
 * calls; no CONNECTOK is kept). */
static int l_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  int nobjs = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    nobjs = (int)luaL_len(L, 3);
    luaL_argcheck(L, nobjs >= 0 && nobjs <= LSR_MAX_LISTEN_OBJS, 3, "at most 16 objects");
  }
  char err[400];
  uint32_t id;
  int bound;
  sr_listen_opts_t opts;
  memset(&opts, 0, sizeof opts);
  read_limits(L, 4, &opts.limits);
  read_security(L, 5, &opts.security);
  static const char *const protos[] = { "pyro", "http", NULL };
  opts.protocol = luaL_checkoption(L, 6, "pyro", protos) == 1 ? SR_DAEMON_PROTO_HTTP
                                                                : SR_DAEMON_PROTO_PYRO;
  luaL_argcheck(L, opts.protocol == SR_DAEMON_PROTO_PYRO || opts.security.secret == NULL, 5,
                "an http listener has no handshake_secret");
  unsigned mask = opts.protocol == SR_DAEMON_PROTO_HTTP ? 0 : probe_serializers(L);
  if (port < 0 || port > 65535) {
    snprintf(err, sizeof err, "cannot listen on %s:%lld: port out of range (0..65535)", host,
             (long long)port);
    return fail(L, SR_EINVAL, err);
  }
  sr_listener_obj_t objs[LSR_MAX_LISTEN_OBJS];
  sr_buf_t bufs[LSR_MAX_LISTEN_OBJS][SR_DAEMON_NSER];
  for (int i = 0; i < nobjs; i++)
    for (int k = 0; k < SR_DAEMON_NSER; k++) sr_buf_init(&bufs[i][k]);
  int rc = 0;
  for (int i = 0; i < nobjs && rc == 0; i++) {
    lua_rawgeti(L, 3, i + 1);
    if (!lua_istable(L, -1)) {
      rc = sr_seterr(err, sizeof err, SR_EINVAL, "objects[%d] must be {name, value}", i + 1);
    } else {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      /* a string only: lua_tostring would convert a number in place, on the
       * stack slot popped below, and the name must outlive it */
      objs[i].name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      if (objs[i].name == NULL)
        rc = sr_seterr(err, sizeof err, SR_EINVAL, "objects[%d][1] must be a name", i + 1);
      else
        rc = encode_meta(L, lua_gettop(L), mask, bufs[i], &objs[i], err, sizeof err);
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  if (rc == 0) rc = open_wake(L);
  if (rc == 0) {
    ignore_sigpipe();
    opts.ser_mask = mask;
    opts.objs = objs;
    opts.nobjs = (size_t)nobjs;
    rc = sr_daemon_listen(G.d, host, (int)port, &opts, &id, &bound, err, sizeof err);
    if (rc < 0 && sr_daemon_count(G.d) == 0) close_wake();
  }
  for (int i = 0; i < nobjs; i++)
    for (int k = 0; k < SR_DAEMON_NSER; k++) sr_buf_free(&bufs[i][k]);
  if (rc == 0 && lstate_add(id) < 0) {
    sr_daemon_unlisten(G.d, id);
    if (sr_daemon_count(G.d) == 0) close_wake();
    rc = sr_seterr(err, sizeof err, SR_ENOMEM, "out of memory");
  }
  if (rc < 0) return fail(L, rc, err);
  lua_pushinteger(L, id);
  lua_pushinteger(L, bound);
  return 2;
}

static int l_unlisten(lua_State *L) {
  uint32_t did = check_listener(L, 1);
  int rc = sr_daemon_unlisten(G.d, did);
  lstate_remove(did);
  if (sr_daemon_count(G.d) == 0 && G.wake) {
    /* the thread is joined: deliver what it queued last (log lines; the
     * calls' connections are gone), then drop the wake-up */
    on_events(G.wake);
    cq_drop_all();
    timed_clear();
    close_wake();
  }
  if (rc < 0) return fail(L, rc, "no such listener");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_register(lua_State *L) {
  uint32_t id = check_listener(L, 1);
  size_t nl;
  const char *name = luaL_checklstring(L, 2, &nl);
  luaL_checkany(L, 3);
  luaL_argcheck(L, nl <= SR_DAEMON_MAX_NAME && strlen(name) == nl, 2,
                "object name too long or contains NUL");
  unsigned mask = probe_serializers(L);
  sr_buf_t bufs[SR_DAEMON_NSER];
  sr_listener_obj_t o;
  char err[300];
  for (int i = 0; i < SR_DAEMON_NSER; i++) sr_buf_init(&bufs[i]);
  int rc = encode_meta(L, 3, mask, bufs, &o, err, sizeof err);
  if (rc == 0) {
    rc = sr_daemon_register(G.d, id, name, o.meta, o.meta_len);
    if (rc < 0) snprintf(err, sizeof err, "cannot register %s: %s", name, sr_strerror(rc));
  }
  for (int i = 0; i < SR_DAEMON_NSER; i++) sr_buf_free(&bufs[i]);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unregister(lua_State *L) {
  uint32_t id = check_listener(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int rc = sr_daemon_unregister(G.d, id, name);
  if (rc < 0) return fail(L, rc, "no such object");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_quiesce(lua_State *L) {
  sr_daemon_quiesce(G.d);
  lua_pushboolean(L, 1);
  return 1;
}

/* Sets t[k] = ms in seconds, or false when ms == off. */
static void set_seconds(lua_State *L, const char *k, uint32_t ms, uint32_t off) {
  if (ms == off)
    lua_pushboolean(L, 0);
  else
    lua_pushnumber(L, ms / 1000.0);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* daemon_limits(listener_id) -> the limits the listener runs with, every
 * field filled in (the names daemon_listen takes; the timeouts in seconds,
 * false when off) | nil, err. Read back from the daemon thread, so defaults
 * are checked where they apply. */
static int l_limits(lua_State *L) {
  uint32_t id = check_listener(L, 1);
  sr_listener_limits_t hl;
  int rc = sr_daemon_limits(G.d, id, &hl);
  if (rc < 0) return fail(L, rc, "no such listener");
  lua_createtable(L, 0, 14);
  set_int(L, "max_message_size", (lua_Integer)hl.max_message);
  set_int(L, "max_connections", hl.max_connections);
  set_seconds(L, "send_deadline", hl.send_deadline_ms, UINT32_MAX);
  set_seconds(L, "handshake_timeout", hl.handshake_timeout_ms, UINT32_MAX);
  set_seconds(L, "idle_timeout", hl.idle_timeout_ms, 0);
  set_seconds(L, "call_timeout", hl.call_timeout_ms, 0);
  set_int(L, "max_queued_per_connection", hl.max_queued_conn);
  set_int(L, "max_queued", hl.max_queued);
  set_int(L, "max_queued_bytes", (lua_Integer)hl.max_queued_bytes);
  set_int(L, "max_reply_bytes_per_connection", (lua_Integer)hl.max_reply_bytes_conn);
  set_int(L, "max_reply_bytes", (lua_Integer)hl.max_reply_bytes);
  set_int(L, "max_oneway", hl.max_oneway);
  set_int(L, "max_depth", hl.max_depth);
  set_int(L, "max_elements", hl.max_elements);
  return 1;
}

static int l_count(lua_State *L) {
  lua_pushinteger(L, sr_daemon_count(G.d));
  return 1;
}

/* core.daemon_peer(conn) -> "host:port" of the connection's client, or nil
 * once the connection is gone (log lines name the caller with it). */
static int l_peer(lua_State *L) {
  uint64_t conn = (uint64_t)luaL_checkinteger(L, 1);
  char peer[80];
  if (G.d == NULL || sr_daemon_peer(G.d, conn, peer, sizeof peer) != 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, peer);
  return 1;
}

static int l_serializers(lua_State *L) {
  unsigned mask = probe_serializers(L);
  lua_newtable(L);
  int n = 0;
  for (int i = 1; i < SR_DAEMON_NSER; i++)
    if (mask & (1u << i)) {
      lua_pushinteger(L, i);
      lua_rawseti(L, -2, ++n);
    }
  return 1;
}

/* Sets who writes replies (only while no listener is open): "auto" (the
 * default: a lone request's reply by the Lua thread, replies to requests
 * drained together batched to the daemon thread), "direct" (the Lua thread
 * whenever it can) or "thread" (always the daemon thread). */
static void set_reply_writer(const char *mode) {
  int thread = strcmp(mode, "thread") == 0;
  sr_daemon_set_direct_writes(G.d, !thread);
  G.direct = !thread;
  G.batch_replies = strcmp(mode, "auto") == 0;
}

/* daemon_set_reply_writer("auto" | "direct" | "thread") */
static int l_set_reply_writer(lua_State *L) {
  static const char *const modes[] = { "auto", "direct", "thread", NULL };
  int i = luaL_checkoption(L, 1, NULL, modes);
  if (sr_daemon_count(G.d) > 0) return luaL_error(L, "daemon_set_reply_writer: a listener is open");
  set_reply_writer(modes[i]);
  return 0;
}

/* daemon_reply_counts() -> direct, batched, thread, fast, merged: replies
 * this process encoded, by who was to write them (see set_reply_writer), how
 * many calls were answered without a Lua function (lsr_serve.c's plain case), and
 * how many CONNECTOKs left with the first reply (daemon.h). */
static int l_reply_counts(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)G.nreplies[SR_REPLY_DIRECT]);
  lua_pushinteger(L, (lua_Integer)G.nreplies[SR_REPLY_BATCH]);
  lua_pushinteger(L, (lua_Integer)G.nreplies[SR_REPLY_THREAD]);
  lua_pushinteger(L, (lua_Integer)G.nfast);
  lua_pushinteger(L, (lua_Integer)sr_daemon_merged_connectoks());
  return 5;
}

/* daemon_waiting() -> calls taken from the daemon and not started yet
 * (waiting for their turn, see "by connection"). */
static int l_waiting(lua_State *L) {
  lua_pushinteger(L, Q.nwaiting);
  return 1;
}

/* *ref becomes a registry reference to the value at idx (LUA_NOREF for
 * none or nil); the one it held is dropped. */
static void replace_ref(lua_State *L, int *ref, int idx) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnoneornil(L, idx)) {
    lua_pushvalue(L, idx);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* daemon_set_handler(handler, log_fn [, first [, refuse]]): with `first`,
 * the handler is called as handler(first, listener_id, conn, ...) -- e.g.
 * runtime's task spawn and the function each call runs in a task, without
 * a Lua function in between. refuse(conn, tag, ser, flags, class, message)
 * answers a request refused before the handler (undecodable, fields
 * missing, the handler raised) with the exception it builds. */
/* daemon_set_class_hook(fn): fn(params, kwargs) -> params, kwargs | nil,
 * message is called for a request whose payload holds a class dict
 * ("__class__"); nil, message refuses the request with SerializeError. */
static int l_set_class_hook(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  replace_ref(L, &G.classes_ref, 1);
  return 0;
}

static int l_set_handler(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
  replace_ref(L, &G.handler_ref, 1);
  replace_ref(L, &G.handler_arg_ref, 3);
  replace_ref(L, &G.refuse_ref, 4);
  replace_ref(L, &G.log_ref, 2);
  return 0;
}

/* daemon_reply(conn, tag, ser, flags, value) -> true | nil, err, name */
static int l_reply(lua_State *L) {
  lua_Integer conn = luaL_checkinteger(L, 1);
  lua_Integer tag = luaL_checkinteger(L, 2);
  lua_Integer ser = luaL_checkinteger(L, 3);
  lua_Integer flags = luaL_checkinteger(L, 4);
  luaL_argcheck(L, ser > 0 && ser < 0xffff, 3, "bad serializer id");
  luaL_argcheck(L, flags >= 0 && flags <= 0xffff, 4, "bad flags");
  sr_wire_ann_t ann, *annp = NULL;
  if (!lua_isnoneornil(L, 6)) { /* one annotation: key (4 bytes), value */
    size_t klen, vlen;
    const char *k = luaL_checklstring(L, 6, &klen);
    const char *v = luaL_checklstring(L, 7, &vlen);
    luaL_argcheck(L, klen == 4, 6, "annotation key must be 4 bytes");
    luaL_argcheck(L, vlen <= 0xffff - 6, 7, "annotation value too long");
    memcpy(ann.key, k, 4);
    ann.len = (uint16_t)vlen;
    ann.value = (const uint8_t *)v;
    annp = &ann;
  }
  lua_settop(L, 5);
  char err[300];
  int rc = send_result_ann(L, 5, (uint64_t)conn, (uint32_t)(tag >> 16), (uint16_t)(tag & 0xffff),
                           (uint16_t)ser, (uint16_t)flags, annp, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  (void)L;
  if (G.d) {
    sr_daemon_free(G.d); /* joins the daemon thread */
    G.d = NULL;
  }
  cq_drop_all();
  timed_clear();
  free(lstates);
  lstates = NULL;
  nlstates = caplstates = 0;
  /* still exported while the state closes: luv's loop finalizer completes
   * the close (or already closed it with its own callback: then the few
   * bytes of the handle are left to the exiting process) */
  if (G.wake && uv_is_closing((uv_handle_t *)&G.wake->poll)) G.wake = NULL;
  close_wake();
  sr_buf_free(&G.buf);
  G.L = NULL;
  /* the references lived in the closing state's registry */
  G.handler_ref = G.handler_arg_ref = G.refuse_ref = G.log_ref = G.classes_ref = LUA_NOREF;
  return 0;
}

static const luaL_Reg funcs[] = {
  { "daemon_listen", l_listen },
  { "daemon_unlisten", l_unlisten },
  { "daemon_register", l_register },
  { "daemon_unregister", l_unregister },
  { "daemon_quiesce", l_quiesce },
  { "daemon_count", l_count },
  { "daemon_limits", l_limits },
  { "daemon_serializers", l_serializers },
  { "daemon_set_handler", l_set_handler },
  { "daemon_set_class_hook", l_set_class_hook },
  { "daemon_set_reply_writer", l_set_reply_writer },
  { "daemon_reply_counts", l_reply_counts },
  { "daemon_waiting", l_waiting },
  { "daemon_reply", l_reply },
  { "daemon_peer", l_peer },
  { NULL, NULL },
};

void lsr_open_daemon(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  if (luaL_newmetatable(L, LSR_CALL_MT)) {
    lua_pushcfunction(L, call_end);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, call_end);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (G.d != NULL) return; /* opened twice in one process: keep the first */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  G.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (sr_daemon_new(&G.d, notify_cb, NULL) < 0) luaL_error(L, "springrun.core: out of memory");
  sr_buf_init(&G.buf);
  /* a sentinel whose finalizer stops the thread when the state closes;
   * created after luv's loop, so finalized before it */
  lua_newuserdatauv(L, 1, 0);
  lua_newtable(L);
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LSR_DAEMON_GC);
}
