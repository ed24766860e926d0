/*
 * lsr_daemon_events.c -- the Lua-thread end of the daemon's event queue:
 * what runs when the daemon thread has queued something for the Lua thread,
 * and the replies sent from here.
 *
 * Apart from lsr_daemon.c (the functions Lua calls to set up and use the
 * daemon: listen and its options, register, reply...) because this is the
 * other direction, and the hot path of every call: it runs from the
 * wake-up's callback on luv's loop (and the call_timeout timer), drains the
 * events, decodes each INVOKE and calls into Lua; the replies of
 * core.daemon_reply and of lsr_serve.c are encoded and handed over here
 * too. The state both files share is in lsr_daemon_int.h.
 *
 * Events from the daemon thread wake luv's loop
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
 * (the dispatch of a call: lsr_serve.c; its tasks: lsr_task.c)
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "lsr_codec.h"
#include "lsr_daemon_int.h"
#include "payload.h"
#include "wire.h"

/* Called on the daemon thread, which only runs while lsr_daemon.wake exists
 * (the wake-up is opened before the first listen and closed after the
 * thread of the last unlisten was joined). */
void lsr_daemon_notify(void *ud) {
  (void)ud;
  sr_wake_send(lsr_daemon.wake);
}

static void free_wake_cb(sr_wake_t *w) { free(w); }

/* The wake-up lives exactly while a listener is open: it keeps luv's loop
 * alive while something is exported, and no foreign handle is left on luv's
 * loop otherwise (luv's loop finalizer closes every handle it finds with its
 * own callback). */
int lsr_daemon_open_wake(lua_State *L) {
  if (lsr_daemon.wake) return 0;
  sr_wake_t *w = malloc(sizeof *w);
  if (w == NULL) return SR_ENOMEM;
  lsr_daemon.loop = lsr_luv_loop(L);
  int rc = sr_wake_init(lsr_daemon.loop, w, lsr_daemon_on_events, NULL);
  if (rc < 0) {
    free(w);
    return rc;
  }
  lsr_daemon.wake = w;
  /* this thread runs the daemon's loop while it is idle (daemon.h) */
  sr_daemon_set_owner_loop(lsr_daemon.d, lsr_daemon.loop, lsr_daemon_drain, NULL);
  return 0;
}

void lsr_daemon_close_wake(void) {
  if (lsr_daemon.wake == NULL) return;
  if (!uv_is_closing((uv_handle_t *)&lsr_daemon.wake->poll))
    sr_wake_close(lsr_daemon.wake, free_wake_cb);
  lsr_daemon.wake = NULL;
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

static lsr_lstate_t *lstates; /* 0..nlstates, owned here (freed by lsr_daemon_events_free) */
static int nlstates, caplstates;

static lsr_lstate_t *lstate_find(uint32_t id) {
  for (int i = 0; i < nlstates; i++)
    if (lstates[i].id == id) return &lstates[i];
  return NULL;
}

int lsr_daemon_lstate_add(uint32_t id) {
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

void lsr_daemon_lstate_remove(uint32_t id) {
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
  lua_State *L = lsr_daemon.L;
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
    sr_daemon_peer(lsr_daemon.d, c->conn, peer, sizeof peer);
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
  if (lsr_daemon.wake == NULL) return;
  if (timed_timer == NULL) {
    timed_timer = malloc(sizeof *timed_timer);
    if (timed_timer == NULL || uv_timer_init(lsr_daemon.loop, timed_timer) != 0) {
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
 * foreign handle stays on luv's loop, see lsr_daemon_open_wake). */
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
/* Room kept in front of a Hessian reply for its HTTP head. */
#define HTTP_HEAD_ROOM 128

/* A request of an HTTP listener: the value at idx as a Hessian reply (with
 * EXCEPTION: the exception dict as a fault) in an HTTP/1.1 200 response,
 * built in lsr_daemon.buf and handed over like a RESULT frame. */
static int send_http_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t flags,
                            char *err, size_t errlen) {
  sr_buf_t *b = &lsr_daemon.buf;
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
  int how = lsr_daemon.in_batch ? SR_REPLY_BATCH
            : lsr_daemon.direct ? SR_REPLY_DIRECT
                                : SR_REPLY_THREAD;
  lsr_daemon.nreplies[how]++;
  rc = sr_daemon_reply_via(lsr_daemon.d, conn, slot, start, b->len - HTTP_HEAD_ROOM + (size_t)hl,
                           how);
  if (b->cap > (1u << 20)) sr_buf_free(b);
  b->len = 0;
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  return 0;
}

/* Encodes the value at idx as a RESULT frame into lsr_daemon.buf and hands
 * it over (a request of an HTTP listener: send_http_result). Returns 0 or an
 * SR_E* code with err set (nothing sent then). */
int lsr_daemon_send_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t seq,
                           uint16_t ser, uint16_t flags, const sr_wire_ann_t *ann, char *err,
                           size_t errlen) {
  idx = lua_absindex(L, idx);
  if (ser == SR_DAEMON_SER_HESSIAN) return send_http_result(L, idx, conn, slot, flags, err, errlen);
  sr_buf_t *b = &lsr_daemon.buf;
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
  int how = lsr_daemon.in_batch ? SR_REPLY_BATCH
            : lsr_daemon.direct ? SR_REPLY_DIRECT
                                : SR_REPLY_THREAD;
  lsr_daemon.nreplies[how]++;
  rc = sr_daemon_reply_via(lsr_daemon.d, conn, slot, b->data, b->len, how);
  if (b->cap > (1u << 20)) sr_buf_free(b); /* don't keep a huge scratch around */
  b->len = 0;
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  return 0;
}

static int send_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t seq,
                       uint16_t ser, uint16_t flags, char *err, size_t errlen) {
  return lsr_daemon_send_result(L, idx, conn, slot, seq, ser, flags, NULL, err, errlen);
}

int lsr_daemon_result(lua_State *L, int idx, uint64_t conn, lua_Integer tag, uint16_t ser,
                      uint16_t flags, int plain, char *err, size_t errlen) {
  int rc = send_result(L, idx, conn, (uint32_t)(tag >> 16), (uint16_t)(tag & 0xffff), ser, flags,
                       err, errlen);
  if (rc == 0 && plain) lsr_daemon.nfast++;
  return rc;
}

/* Answers a request refused before the handler ran with the exception cls:
 * msg, built by the exporter's refuse (daemon_set_handler): the exception
 * dict is made in one place. Without a refuse, or when it failed, the text
 * alone travels as the exception payload: the connection would otherwise
 * wait forever for this slot. */
static void send_exception(lua_State *L, const sr_event_t *ev, const char *cls, const char *msg) {
  int base = lua_gettop(L);
  if (lsr_daemon.refuse_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsr_daemon.refuse_ref);
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
      sr_daemon_reply(lsr_daemon.d, ev->conn, ev->slot, f.data, f.len);
    sr_buf_free(&f);
  }
  sr_buf_free(&b);
  lua_settop(L, base);
}

/* The log function gets (level, text, serializer): SR_DAEMON_SER_HESSIAN
 * when the line is about an HTTP listener or request (logged under the
 * Hessian exporter's name), else 0. */
static void log_line_ser(lua_State *L, int level, const char *text, int ser) {
  if (lsr_daemon.log_ref == LUA_NOREF) return;
  int base = lua_gettop(L);
  lua_pushcfunction(L, lsr_traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lsr_daemon.log_ref);
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
  if (lsr_daemon.handler_ref == LUA_NOREF) {
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
      sr_daemon_peer(lsr_daemon.d, ev->conn, peer, sizeof peer);
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
      sr_daemon_peer(lsr_daemon.d, ev->conn, peer, sizeof peer);
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
  int has_class = rc >= 0 && lsr_daemon.classes_ref != LUA_NOREF &&
                  sr_payload_may_have_class(data, len);
  sr_buf_free(&plain); /* decoded: the values live in Lua now */
  if (rc < 0) {
    lua_settop(L, base);
    char text[600], line[700], peer[64];
    snprintf(text, sizeof text, "cannot decode the request: %s%s", err,
             rc == SR_EDEPTH ? " (max_depth)" : rc == SR_EELEMENTS ? " (max_elements)" : "");
    sr_daemon_peer(lsr_daemon.d, ev->conn, peer, sizeof peer);
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
  lua_rawgeti(L, LUA_REGISTRYINDEX, lsr_daemon.handler_ref);
  if (lsr_daemon.handler_arg_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsr_daemon.handler_arg_ref);
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
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsr_daemon.classes_ref);
    lua_pushvalue(L, top - 1);
    lua_pushvalue(L, top);
    int st = lua_pcall(L, 2, 2, 0);
    if (st != LUA_OK || lua_isnil(L, -2)) {
      const char *m = lua_tostring(L, -1);
      snprintf(err, sizeof err, "%s", m ? m : "cannot rebuild the request's class dicts");
      lua_settop(L, base);
      char line[400], peer[64];
      sr_daemon_peer(lsr_daemon.d, ev->conn, peer, sizeof peer);
      snprintf(line, sizeof line, "request from %s refused: %s", peer, err);
      log_line_ser(L, 30, line, ev->serializer);
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
  sr_event_t *cur; /* being dispatched (finished by lsr_daemon_on_events after an error) */
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

/* Runs under lua_pcall (lsr_daemon_on_events): the new events from the
 * cursor (light userdata) on -- log lines now, INVOKEs to their connection's queue --
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
  /* several calls to run: the daemon thread takes its loop back to read on
   * and to write their replies, batched, while this thread runs them */
  lsr_daemon.in_batch = lsr_daemon.batch_replies && Q.nwaiting > 1 &&
                        sr_daemon_owner_lend(lsr_daemon.d);
  uint64_t start = uv_hrtime();
  unsigned dropped = 0;
  while ((Q.cur = cq_pop()) != NULL) {
    sr_event_t *ev = Q.cur;
    if (!(ev->flags & SR_FLAG_ONEWAY) && sr_daemon_peer(lsr_daemon.d, ev->conn, NULL, 0) < 0)
      dropped++; /* its connection is gone: nobody waits for it */
    else
      dispatch_invoke(L, ev);
    Q.cur = NULL;
    sr_daemon_event_done(ev);
    free(ev);
    if (Q.nwaiting > 0 && uv_hrtime() - start >= DISPATCH_TURN_NS) {
      if (lsr_daemon.wake) sr_wake_send(lsr_daemon.wake); /* the rest next turn */
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

/* Drains everything queued (the wake-up's callback, and the daemon's drain
 * callback after this thread ran the daemon's loop itself). The Lua work
 * runs under a pcall so that a Lua error (out of memory) never unwinds
 * through libuv; whatever was not dispatched is still finished. */
void lsr_daemon_drain(void *ud) {
  (void)ud;
  lua_State *L = lsr_daemon.L;
  if (lsr_daemon.d == NULL || L == NULL) return;
  sr_event_t *ev = sr_daemon_take(lsr_daemon.d);
  if (ev == NULL && Q.nwaiting == 0) return;
  int base = lua_gettop(L);
  lua_pushcfunction(L, drain_events);
  lua_pushlightuserdata(L, &ev);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "springrun: dispatching requests failed: %s\n", m ? m : "?");
    if (Q.cur != NULL) finish_events(&Q.cur); /* the event that failed mid-way */
    if (ev != NULL) finish_events(&ev);       /* not queued yet */
    if (Q.nwaiting > 0 && lsr_daemon.wake) sr_wake_send(lsr_daemon.wake);
  }
  lsr_daemon.in_batch = 0;
  sr_daemon_flush_replies(lsr_daemon.d);
  lua_settop(L, base);
}

/* The wake-up's callback on luv's loop: one wake-up drains everything
 * queued; then, when the daemon thread has handed its loop back (it wakes
 * this thread for that), this thread runs it. */
void lsr_daemon_on_events(sr_wake_t *w) {
  (void)w;
  lsr_daemon_drain(NULL);
  if (lsr_daemon.d) sr_daemon_owner_step(lsr_daemon.d);
}

void lsr_daemon_events_clear(void) {
  cq_drop_all();
  timed_clear();
}

void lsr_daemon_events_free(void) {
  lsr_daemon_events_clear();
  free(lstates);
  lstates = NULL;
  nlstates = caplstates = 0;
}

lua_Integer lsr_daemon_nwaiting(void) { return Q.nwaiting; }

void lsr_daemon_call_mt(lua_State *L) {
  if (luaL_newmetatable(L, LSR_CALL_MT)) {
    lua_pushcfunction(L, call_end);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, call_end);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
