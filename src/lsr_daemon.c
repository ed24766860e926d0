/*
 * lsr_daemon.c -- the Lua face of the daemon holder (daemon.c) in
 * springrun.core, and the Lua-thread end of its event queue.
 *
 * One holder per process, created when springrun.core is opened; its thread
 * starts with the first listen. Events from the holder thread wake luv's loop
 * through ONE uv_async_t (referenced only while a daemon listens, so luv's
 * loop stays alive exactly while something is exported); its callback drains
 * everything queued and, for each INVOKE, decodes the payload here (C, hot
 * path) and calls the Lua handler set with daemon_set_handler:
 *
 *   handler([first,] daemon_id, conn, tag, ser, flags, object, method, params, kwargs)
 *
 * params/kwargs are the decoded values as they came, except that an empty
 * kwargs table (map or list) is passed as nil (kwargs may be nil or
 * springrun.null). The handler must answer every request that is not oneway
 * (flags & FLAG_ONEWAY) exactly once with
 *
 *   core.daemon_reply(conn, tag, ser, flags, value) -> true | nil, err
 *
 * (encodes a RESULT with the request's seq and serializer). Requests whose
 * payload cannot be decoded, or lacks object/method/params/kwargs, are
 * answered here with an exception and never reach the handler; so is a
 * request whose handler raised. Log lines of the holder thread go to
 * log_fn(level, text).
 *
 *   core.daemon_listen(host, port [, {{name, connectok_value}, ...} [, limits
 *                      [, security]]])   security: {tls = core.tls_context{server =
 *                      true, ...}, handshake_secret = "..."} (daemon.h)
 *       -> daemon_id, bound_port | nil, err   (objects registered before
 *          the first connection is accepted). limits: a table with any of
 *          max_message_size (bytes), max_connections, send_deadline and
 *          idle_timeout (seconds, fractions allowed; send_deadline false:
 *          off, idle_timeout 0/false: off), max_queued_per_connection,
 *          max_queued, max_depth, max_elements (of decoded requests);
 *          missing fields take the defaults (daemon.h, lsr_codec.h)
 *   core.daemon_unlisten(daemon_id) -> true | nil, err
 *   core.daemon_register(daemon_id, name, connectok_value) -> true | nil, err
 *   core.daemon_unregister(daemon_id, name) -> true | nil, err
 *   core.daemon_quiesce()       -- stop accepting and reading (shutdown)
 *   core.daemon_count()         -- daemons listening
 *   core.daemon_limits(daemon_id) -- its limits, defaults filled in (l_limits)
 *   core.daemon_serializers()   -- list of accepted serializer ids
 *   core.daemon_set_max_message(n)
 *   core.daemon_set_reply_writer("auto" | "direct" | "holder")  -- who writes
 *                               replies (set_reply_writer below)
 *   core.daemon_reply_counts()  -- direct, batched, holder, fast, merged (below)
 *   core.daemon_fast_serve(...) -- the common call in C (see below)
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "daemon.h"
#include "lsr.h"
#include "lsr_codec.h"
#include "lsr_tls.h"
#include "luv.h"
#include "wire.h"

#define LSR_DAEMON_GC "springrun.daemon_holder"

static struct {
  sr_holder_t *h;
  uv_async_t *async; /* on luv's loop while a daemon listens, else NULL */
  uv_loop_t *loop;   /* luv's loop */
  lua_State *L; /* main thread of the state that opened the module */
  int handler_ref;
  int handler_arg_ref; /* LUA_NOREF, or the handler's extra first argument */
  int log_ref;
  unsigned ser_mask; /* serializers whose encoder works, probed once */
  int probed;
  sr_buf_t buf; /* reply frame scratch (Lua thread only) */
  /* decode limits per listening daemon (few daemons: a small list) */
  struct lsr_dlim_s {
    uint32_t id;
    sr_decode_limits_t lim;
  } dlims[64];
  int ndlims;
  /* Replies to requests that arrived together (one drain of two or more
   * events) are handed to the holder thread in one go at the end of the
   * drain (SR_REPLY_BATCH), which writes them while this thread works on;
   * a lone request's reply is sent by this thread at once. Measured with
   * the C load client, 32 connections: 105,000 -> 135,000 calls/s, server
   * CPU 9.4 -> 7.3 us per call; one connection unchanged (bench/README). */
  int batch_replies;
  int in_batch; /* draining such a batch now */
  int direct;   /* otherwise: as sr_holder_set_direct_writes */
  uint64_t nreplies[3]; /* by SR_REPLY_* */
  uint64_t nfast;       /* calls answered entirely by serve_fast */
  /* task coroutines started here (see spawn_task) */
  int tasks_ref;       /* runtime's table co -> true | task marker, or LUA_NOREF */
  int task_failed_ref; /* runtime's report(co, err) */
  int pool_ref;        /* finished coroutines ready for the next call: 1..npool */
  int npool;
  lua_Integer ctasks; /* started here and not finished */
} G = { .handler_ref = LUA_NOREF, .handler_arg_ref = LUA_NOREF, .log_ref = LUA_NOREF,
        .batch_replies = 1, .direct = 1, .tasks_ref = LUA_NOREF, .task_failed_ref = LUA_NOREF,
        .pool_ref = LUA_NOREF };

static sr_decode_limits_t decode_limits(uint32_t daemon) {
  for (int i = 0; i < G.ndlims; i++)
    if (G.dlims[i].id == daemon) return G.dlims[i].lim;
  sr_decode_limits_t d = { SR_DECODE_DEFAULT_DEPTH, SR_DECODE_DEFAULT_ELEMENTS };
  return d;
}

static void forget_decode_limits(uint32_t daemon) {
  for (int i = 0; i < G.ndlims; i++)
    if (G.dlims[i].id == daemon) {
      G.dlims[i] = G.dlims[--G.ndlims];
      return;
    }
}

/* Called on the holder thread, which only runs while G.async exists (the
 * async is created before the first listen and closed after the thread of
 * the last unlisten was joined). */
static void notify_cb(void *ud) {
  (void)ud;
  sr_async_wake(G.async);
}

static void on_events(uv_async_t *a);

static void free_handle_cb(uv_handle_t *h) { free(h); }

/* The async lives exactly while a daemon listens: it keeps luv's loop alive
 * while something is exported, and no foreign handle is left on luv's loop
 * otherwise (luv's loop finalizer closes every handle it finds with its own
 * callback). */
static int open_async(lua_State *L) {
  if (G.async) return 0;
  uv_async_t *a = malloc(sizeof *a);
  if (a == NULL) return SR_ENOMEM;
  G.loop = luv_loop(L);
  if (uv_async_init(G.loop, a, on_events) != 0) {
    free(a);
    return SR_ENOMEM;
  }
  G.async = a;
  return 0;
}

static void close_async(void) {
  if (G.async == NULL) return;
  if (!uv_is_closing((uv_handle_t *)G.async)) uv_close((uv_handle_t *)G.async, free_handle_cb);
  G.async = NULL;
}

static unsigned probe_serializers(lua_State *L) {
  if (G.probed) return G.ser_mask;
  unsigned mask = 0;
  char err[256];
  for (int ser = 1; ser < SR_HOLDER_NSER; ser++) {
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

/* Encodes the value at idx as a RESULT frame into G.buf and hands it over.
 * Returns 0 or an SR_E* code with err set (nothing sent then). */
static int send_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t seq,
                       uint16_t ser, uint16_t flags, char *err, size_t errlen) {
  idx = lua_absindex(L, idx);
  sr_buf_t *b = &G.buf;
  b->len = 0;
  int rc = sr_buf_reserve(b, SR_WIRE_HEADER_SIZE + 64);
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  b->len = SR_WIRE_HEADER_SIZE;
  rc = lsr_payload_encode(L, ser, idx, b, err, errlen);
  if (rc < 0) {
    b->len = 0;
    return rc;
  }
  size_t dlen = b->len - SR_WIRE_HEADER_SIZE;
  if (dlen > 0x7fffffff) {
    b->len = 0;
    return sr_seterr(err, errlen, SR_ETOOBIG, "result payload of %zu bytes is too large", dlen);
  }
  sr_wire_put_header(b->data, SR_MSG_RESULT, flags, seq, ser, (uint32_t)dlen);
  int how = G.in_batch ? SR_REPLY_BATCH : G.direct ? SR_REPLY_DIRECT : SR_REPLY_HOLDER;
  G.nreplies[how]++;
  rc = sr_holder_reply_via(G.h, conn, slot, b->data, b->len, how);
  if (b->cap > (1u << 20)) sr_buf_free(b); /* don't keep a huge scratch around */
  b->len = 0;
  if (rc < 0) return sr_seterr(err, errlen, rc, "out of memory");
  return 0;
}

/* Sends an exception RESULT {__class__=cls, args={msg}, ...} for a request. */
static void send_exception(lua_State *L, const sr_event_t *ev, const char *cls, const char *msg) {
  char err[256];
  lua_createtable(L, 0, 4);
  lua_pushstring(L, cls);
  lua_setfield(L, -2, "__class__");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "__exception__");
  lua_createtable(L, 1, 0);
  lua_pushstring(L, msg);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, -2, "args");
  lua_createtable(L, 0, 1);
  lua_createtable(L, 1, 0);
  lua_pushfstring(L, "%s: %s\n", cls, msg);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, -2, "_pyroTraceback");
  lua_setfield(L, -2, "attributes");
  if (send_result(L, -1, ev->conn, ev->slot, ev->seq, ev->serializer,
                  (uint16_t)(SR_FLAG_EXCEPTION | (ev->flags & SR_FLAG_BATCH)), err,
                  sizeof err) < 0) {
    /* last resort: the connection would wait forever for this slot */
    lua_pop(L, 1);
    lua_pushfstring(L, "%s: %s", cls, msg);
    sr_buf_t b;
    sr_buf_init(&b);
    const char *s = lua_tostring(L, -1);
    if (sr_holder_encode_string(&b, ev->serializer, s, strlen(s)) == 0) {
      sr_buf_t f;
      sr_buf_init(&f);
      if (sr_wire_encode(&f, SR_MSG_RESULT, SR_FLAG_EXCEPTION, ev->seq, ev->serializer, NULL, 0,
                         b.data, b.len) == 0)
        sr_holder_reply(G.h, ev->conn, ev->slot, f.data, f.len);
      sr_buf_free(&f);
    }
    sr_buf_free(&b);
  }
  lua_pop(L, 1);
}

static void log_line(lua_State *L, int level, const char *text) {
  if (G.log_ref == LUA_NOREF) return;
  int base = lua_gettop(L);
  lua_pushcfunction(L, lsr_traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.log_ref);
  lua_pushinteger(L, level);
  lua_pushstring(L, text);
  if (lua_pcall(L, 2, 0, base + 1) != LUA_OK) {
    /* the log function itself failed: nothing better than stderr */
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "springrun: log handler failed: %s\n", m ? m : "?");
  }
  lua_settop(L, base);
}

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

/* ---- task coroutines, started in C ---------------------------------------
 *
 * Every incoming call runs in a coroutine of its own (the threading
 * contract, rule 4). With core.daemon_set_tasks(tasks, report) -- done by
 * springrun.runtime when it loads -- dispatch_invoke starts that coroutine
 * here instead of through runtime's Lua spawn: a pooled coroutine (or a new
 * one) gets the call's function and arguments and is resumed with
 * lua_resume, with no Lua function, coroutine.resume, worker loop or
 * end-of-task yield in between (about 3,000 instructions of the Lua thread's
 * ~17,000 per call; bench/README). runtime's table `tasks` marks it with
 * TASK_MARK (runtime.current() sees a task; runtime.resume resumes it as
 * any task); a call that returns in its first resume -- nearly every one --
 * is forgotten and its coroutine pooled at once; one that yielded is
 * finished by runtime.resume, which hands the coroutine back with
 * core.daemon_task_done. A task that fails is reported with report(co, err)
 * and its coroutine dropped. */
#define TASK_POOL_MAX 64
static char task_mark; /* tasks[co] of a task started here: its address */

static void task_forget(lua_State *L, int co_idx) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.tasks_ref);
  lua_pushvalue(L, co_idx);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  G.ctasks--;
}

/* The coroutine at co_idx, finished (status OK, empty stack), into the pool
 * (preallocated: rawseti in its array part allocates nothing). */
static void task_pool_push(lua_State *L, int co_idx) {
  if (G.npool >= TASK_POOL_MAX) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.pool_ref);
  lua_pushvalue(L, co_idx);
  lua_rawseti(L, -2, ++G.npool);
  lua_pop(L, 1);
}

/* spawn_task(fn, args...): runs fn(args...) as a task (above). Called
 * under dispatch_invoke's lua_pcall: an error before the task starts (out
 * of memory) is answered as a failed dispatch. */
static int spawn_task(lua_State *L) {
  int nargs = lua_gettop(L) - 1;
  lua_State *co;
  if (G.npool > 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, G.pool_ref);
    lua_rawgeti(L, -1, G.npool);
    lua_pushnil(L);
    lua_rawseti(L, -3, G.npool--); /* the pool does not keep a running task alive */
    lua_remove(L, -2);
    co = lua_tothread(L, -1);
  } else {
    co = lua_newthread(L);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.tasks_ref);
  lua_pushvalue(L, -2);
  lua_pushlightuserdata(L, &task_mark);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_insert(L, 1); /* co, fn, args */
  G.ctasks++;
  lua_xmove(L, co, nargs + 1);
  int nres = 0;
  int st = lua_resume(co, L, nargs, &nres);
  if (st == LUA_YIELD) { /* waiting for I/O: runtime.resume goes on with it */
    lua_pop(co, nres);
    return 0;
  }
  task_forget(L, 1);
  if (st == LUA_OK) {
    lua_settop(co, 0);
    task_pool_push(L, 1);
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, G.task_failed_ref);
  lua_pushvalue(L, 1);
  lua_xmove(co, L, 1); /* the error */
  lua_call(L, 2, 0);
  return 0;
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
  sr_decode_limits_t lim = decode_limits(ev->daemon);
  /* JSON map (what every Pyro4 and springrun client sends): the four fields
   * straight onto the stack, no table built for the map */
  int rc = 1;
  if (ev->serializer == SR_SER_JSON)
    rc = lsr_json_decode_invoke(L, ev->data, ev->len, &lim, err, sizeof err);
  if (rc == 1) rc = lsr_payload_decode(L, ev->serializer, ev->data, ev->len, &lim, err, sizeof err);
  else if (rc == 0) rc = 2; /* the fields are at base + 2 .. base + 5 */
  if (rc < 0) {
    lua_settop(L, base);
    char text[600], line[700], peer[64];
    snprintf(text, sizeof text, "cannot decode the request: %s%s", err,
             rc == SR_EDEPTH ? " (max_depth)" : rc == SR_EELEMENTS ? " (max_elements)" : "");
    sr_holder_peer(G.h, ev->conn, peer, sizeof peer);
    snprintf(line, sizeof line, "request from %s refused: %s", peer, text);
    log_line(L, 30, line);
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
  if (G.tasks_ref != LUA_NOREF && G.handler_arg_ref != LUA_NOREF)
    lua_pushcfunction(L, spawn_task); /* spawn_task(fn, ...) for handler(fn, ...) */
  else
    lua_rawgeti(L, LUA_REGISTRYINDEX, G.handler_ref);
  if (G.handler_arg_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, G.handler_arg_ref);
    nargs++;
  }
  lua_pushinteger(L, ev->daemon);
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
  if (lua_pcall(L, nargs, 0, base + 1) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    snprintf(err, sizeof err, "%s", m ? m : "(error object)");
    lua_settop(L, base);
    log_line(L, 40, err);
    if (!oneway) send_exception(L, ev, "builtins.RuntimeError", err);
    return;
  }
  lua_settop(L, base);
}

/* Finishes events from *cursor on: each is marked done (so the daemon's
 * max_queued pause can lift) and freed. */
static void finish_events(sr_event_t **cursor) {
  while (*cursor) {
    sr_event_t *next = (sr_event_t *)(*cursor)->node.next;
    sr_holder_event_done(*cursor);
    free(*cursor);
    *cursor = next;
  }
}

/* Runs under lua_pcall (on_events): dispatches the events from the cursor
 * (light userdata) on, advancing it past each one it finished. */
static int drain_events(lua_State *L) {
  sr_event_t **cursor = lua_touserdata(L, 1);
  luaL_checkstack(L, 32, "springrun daemon events");
  while (*cursor) {
    sr_event_t *ev = *cursor;
    if (ev->kind == SR_EV_INVOKE)
      dispatch_invoke(L, ev);
    else if (ev->kind == SR_EV_LOG)
      log_line(L, ev->level, (const char *)ev->data);
    *cursor = (sr_event_t *)ev->node.next;
    sr_holder_event_done(ev);
    free(ev);
  }
  return 0;
}

/* The uv_async callback on luv's loop: one wake-up drains everything queued.
 * The Lua work runs under a pcall so that a Lua error (out of memory) never
 * unwinds through libuv; whatever was not dispatched is still finished. */
static void on_events(uv_async_t *a) {
  (void)a;
  lua_State *L = G.L;
  if (G.h == NULL || L == NULL) return;
  sr_event_t *ev = sr_holder_take(G.h);
  if (ev == NULL) return;
  G.in_batch = G.batch_replies && ev->node.next != NULL;
  int base = lua_gettop(L);
  lua_pushcfunction(L, drain_events);
  lua_pushlightuserdata(L, &ev);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "springrun: dispatching requests failed: %s\n", m ? m : "?");
    if (ev != NULL) { /* the event that failed mid-way: finish it with the rest */
      finish_events(&ev);
    }
  }
  G.in_batch = 0;
  sr_holder_flush_replies(G.h);
  lua_settop(L, base);
}

/* ---- bindings ------------------------------------------------------------ */

static int fail(lua_State *L, int code, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, sr_err_name(code));
  return 3;
}

static uint32_t check_daemon(lua_State *L, int i) {
  lua_Integer v = luaL_checkinteger(L, i);
  luaL_argcheck(L, v > 0 && v <= 0xffffffff, i, "not a daemon id");
  return (uint32_t)v;
}

#define LSR_MAX_LISTEN_OBJS 16

/* Encodes the CONNECTOK value at idx for every accepted serializer into
 * bufs (the caller frees them) and points o's meta at them. */
static int encode_meta(lua_State *L, int idx, unsigned mask, sr_buf_t bufs[SR_HOLDER_NSER],
                       sr_holder_obj_t *o, char *err, size_t errlen) {
  for (int i = 0; i < SR_HOLDER_NSER; i++) {
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

/* Reads the number field `k` of the limits table at idx: nil leaves *out;
 * false stores off_value; otherwise a number in [lo, hi] times scale
 * (seconds -> ms). Raises naming the field on a bad value. */
static void limit_field(lua_State *L, int idx, const char *k, double lo, double hi, double scale,
                        double off_value, double *out) {
  int t = lua_getfield(L, idx, k);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    *out = off_value;
    lua_pop(L, 1);
    return;
  }
  int isnum = 0;
  double v = (double)lua_tonumberx(L, -1, &isnum);
  if (!isnum || t != LUA_TNUMBER || !(v >= lo && v <= hi))
    luaL_error(L, "daemon limits: %s must be a number in %g..%g, got %s", k, lo, hi,
               luaL_tolstring(L, -1, NULL));
  *out = v * scale;
  lua_pop(L, 1);
}

/* The limits table at idx (may be none/nil) into hl and dl. */
static void read_limits(lua_State *L, int idx, sr_holder_limits_t *hl, sr_decode_limits_t *dl) {
  memset(hl, 0, sizeof *hl);
  dl->max_depth = SR_DECODE_DEFAULT_DEPTH;
  dl->max_elements = SR_DECODE_DEFAULT_ELEMENTS;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  double v;
  v = 0;
  limit_field(L, idx, "max_message_size", 1, SR_WIRE_MAX_MESSAGE_CAP, 1, 0, &v);
  hl->max_message = (size_t)v;
  v = 0;
  limit_field(L, idx, "max_connections", 1, 1e6, 1, 0, &v);
  hl->max_connections = (uint32_t)v;
  v = 0;
  limit_field(L, idx, "send_deadline", 0.001, 86400, 1000, (double)UINT32_MAX, &v);
  hl->send_deadline_ms = v >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)(v < 1 && v > 0 ? 1 : v);
  v = 0;
  limit_field(L, idx, "idle_timeout", 0, 86400 * 30, 1000, 0, &v);
  hl->idle_timeout_ms = (uint32_t)(v < 1 && v > 0 ? 1 : v);
  v = 0;
  limit_field(L, idx, "max_queued_per_connection", 4, 1e6, 1, 0, &v);
  hl->max_queued_conn = (uint32_t)v;
  v = 0;
  limit_field(L, idx, "max_queued", 1, 1e7, 1, 0, &v);
  hl->max_queued = (uint32_t)v;
  v = dl->max_depth;
  limit_field(L, idx, "max_depth", 1, 10000, 1, SR_DECODE_DEFAULT_DEPTH, &v);
  dl->max_depth = (int)v;
  v = (double)dl->max_elements;
  limit_field(L, idx, "max_elements", 1, 1e9, 1, SR_DECODE_DEFAULT_ELEMENTS, &v);
  dl->max_elements = (size_t)v;
}

/* The security table at idx (none/nil: none): { tls = core.tls_context{server
 * = true, ...}, handshake_secret = "string" }. Borrowed pointers: valid while
 * the table is on the stack. */
static void read_security(lua_State *L, int idx, sr_holder_security_t *sec) {
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

/* daemon_listen(host, port [, objects [, limits [, security]]]) -> id, port | nil, err, name
 * objects: a list of {name, connectok_value} registered before the daemon
 * accepts its first connection (at most 16). */
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
  sr_holder_limits_t hl;
  sr_decode_limits_t dl;
  read_limits(L, 4, &hl, &dl);
  sr_holder_security_t sec;
  read_security(L, 5, &sec);
  if (G.ndlims >= (int)(sizeof G.dlims / sizeof G.dlims[0]))
    return fail(L, SR_EINVAL, "cannot listen: too many daemons in this process");
  unsigned mask = probe_serializers(L);
  if (port < 0 || port > 65535) {
    snprintf(err, sizeof err, "cannot listen on %s:%lld: port out of range (0..65535)", host,
             (long long)port);
    return fail(L, SR_EINVAL, err);
  }
  sr_holder_obj_t objs[LSR_MAX_LISTEN_OBJS];
  sr_buf_t bufs[LSR_MAX_LISTEN_OBJS][SR_HOLDER_NSER];
  for (int i = 0; i < nobjs; i++)
    for (int k = 0; k < SR_HOLDER_NSER; k++) sr_buf_init(&bufs[i][k]);
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
  if (rc == 0) rc = open_async(L);
  if (rc == 0) {
    sr_holder_set_limits(G.h, &hl);
    sr_holder_set_security(G.h, &sec);
    rc = sr_holder_listen(G.h, host, (int)port, mask, objs, (size_t)nobjs, &id, &bound, err,
                          sizeof err);
    sr_holder_set_limits(G.h, NULL);
    sr_holder_set_security(G.h, NULL);
    if (rc < 0 && sr_holder_count(G.h) == 0) close_async();
  }
  for (int i = 0; i < nobjs; i++)
    for (int k = 0; k < SR_HOLDER_NSER; k++) sr_buf_free(&bufs[i][k]);
  if (rc < 0) return fail(L, rc, err);
  G.dlims[G.ndlims].id = id;
  G.dlims[G.ndlims].lim = dl;
  G.ndlims++;
  lua_pushinteger(L, id);
  lua_pushinteger(L, bound);
  return 2;
}

static int l_unlisten(lua_State *L) {
  uint32_t did = check_daemon(L, 1);
  int rc = sr_holder_unlisten(G.h, did);
  forget_decode_limits(did);
  if (sr_holder_count(G.h) == 0 && G.async) {
    /* the thread is joined: deliver what it queued last, then drop the async */
    on_events(G.async);
    close_async();
  }
  if (rc < 0) return fail(L, rc, "no such daemon");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_register(lua_State *L) {
  uint32_t id = check_daemon(L, 1);
  size_t nl;
  const char *name = luaL_checklstring(L, 2, &nl);
  luaL_checkany(L, 3);
  luaL_argcheck(L, nl <= SR_HOLDER_MAX_NAME && strlen(name) == nl, 2,
                "object name too long or contains NUL");
  unsigned mask = probe_serializers(L);
  sr_buf_t bufs[SR_HOLDER_NSER];
  sr_holder_obj_t o;
  char err[300];
  for (int i = 0; i < SR_HOLDER_NSER; i++) sr_buf_init(&bufs[i]);
  int rc = encode_meta(L, 3, mask, bufs, &o, err, sizeof err);
  if (rc == 0) {
    rc = sr_holder_register(G.h, id, name, o.meta, o.meta_len);
    if (rc < 0) snprintf(err, sizeof err, "cannot register %s: %s", name, sr_strerror(rc));
  }
  for (int i = 0; i < SR_HOLDER_NSER; i++) sr_buf_free(&bufs[i]);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unregister(lua_State *L) {
  uint32_t id = check_daemon(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int rc = sr_holder_unregister(G.h, id, name);
  if (rc < 0) return fail(L, rc, "no such object");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_quiesce(lua_State *L) {
  sr_holder_quiesce(G.h);
  lua_pushboolean(L, 1);
  return 1;
}

/* daemon_limits(daemon_id) -> the limits the daemon runs with, every field
 * filled in (the names daemon_listen takes; send_deadline and idle_timeout in
 * seconds, false when off) | nil, err. Read back from the daemon thread, so
 * defaults are checked where they apply. */
static int l_limits(lua_State *L) {
  uint32_t did = check_daemon(L, 1);
  sr_holder_limits_t hl;
  int rc = sr_holder_limits(G.h, did, &hl);
  if (rc < 0) return fail(L, rc, "no such daemon");
  sr_decode_limits_t dl = decode_limits(did);
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, (lua_Integer)hl.max_message);
  lua_setfield(L, -2, "max_message_size");
  lua_pushinteger(L, hl.max_connections);
  lua_setfield(L, -2, "max_connections");
  if (hl.send_deadline_ms == UINT32_MAX)
    lua_pushboolean(L, 0);
  else
    lua_pushnumber(L, hl.send_deadline_ms / 1000.0);
  lua_setfield(L, -2, "send_deadline");
  if (hl.idle_timeout_ms == 0)
    lua_pushboolean(L, 0);
  else
    lua_pushnumber(L, hl.idle_timeout_ms / 1000.0);
  lua_setfield(L, -2, "idle_timeout");
  lua_pushinteger(L, hl.max_queued_conn);
  lua_setfield(L, -2, "max_queued_per_connection");
  lua_pushinteger(L, hl.max_queued);
  lua_setfield(L, -2, "max_queued");
  lua_pushinteger(L, dl.max_depth);
  lua_setfield(L, -2, "max_depth");
  lua_pushinteger(L, (lua_Integer)dl.max_elements);
  lua_setfield(L, -2, "max_elements");
  return 1;
}

static int l_count(lua_State *L) {
  lua_pushinteger(L, sr_holder_count(G.h));
  return 1;
}

static int l_serializers(lua_State *L) {
  unsigned mask = probe_serializers(L);
  lua_newtable(L);
  int n = 0;
  for (int i = 1; i < SR_HOLDER_NSER; i++)
    if (mask & (1u << i)) {
      lua_pushinteger(L, i);
      lua_rawseti(L, -2, ++n);
    }
  return 1;
}

static int l_set_max_message(lua_State *L) {
  lua_Integer v = luaL_checkinteger(L, 1);
  luaL_argcheck(L, v > 0 && (lua_Unsigned)v <= SR_WIRE_MAX_MESSAGE_CAP, 1, "out of range");
  sr_holder_set_max_message(G.h, (size_t)v);
  return 0;
}

/* Sets who writes replies (only while no daemon listens): "auto" (the
 * default: a lone request's reply by the Lua thread, replies to requests
 * drained together batched to the holder thread), "direct" (the Lua thread
 * whenever it can) or "holder" (always the holder thread). */
static void set_reply_writer(const char *mode) {
  int holder = strcmp(mode, "holder") == 0;
  sr_holder_set_direct_writes(G.h, !holder);
  G.direct = !holder;
  G.batch_replies = strcmp(mode, "auto") == 0;
}

/* daemon_set_reply_writer("auto" | "direct" | "holder") */
static int l_set_reply_writer(lua_State *L) {
  static const char *const modes[] = { "auto", "direct", "holder", NULL };
  int i = luaL_checkoption(L, 1, NULL, modes);
  if (sr_holder_count(G.h) > 0) return luaL_error(L, "daemon_set_reply_writer: a daemon is listening");
  set_reply_writer(modes[i]);
  return 0;
}

/* daemon_reply_counts() -> direct, batched, holder, fast, merged: replies
 * this process encoded, by who was to write them (see set_reply_writer), how
 * many calls the C fast path answered without Lua (daemon_fast_serve), and
 * how many CONNECTOKs left with the first reply (daemon.h). */
static int l_reply_counts(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)G.nreplies[SR_REPLY_DIRECT]);
  lua_pushinteger(L, (lua_Integer)G.nreplies[SR_REPLY_BATCH]);
  lua_pushinteger(L, (lua_Integer)G.nreplies[SR_REPLY_HOLDER]);
  lua_pushinteger(L, (lua_Integer)G.nfast);
  lua_pushinteger(L, (lua_Integer)sr_holder_merged_connectoks());
  return 5;
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

/* daemon_set_handler(handler, log_fn [, first]): with `first`, the handler
 * is called as handler(first, daemon_id, conn, ...) -- e.g. runtime.spawn
 * and the function each call runs in a task, without a Lua function in
 * between. */
static int l_set_handler(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  replace_ref(L, &G.handler_ref, 1);
  replace_ref(L, &G.handler_arg_ref, 3);
  replace_ref(L, &G.log_ref, 2);
  return 0;
}

/* True when L belongs to the state that opened the module first: the one
 * whose thread serves incoming calls (G.L). Another state of the process
 * (a luv thread's) shares the module's C side but has its own registry. */
static int owner_state(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  int same = lua_tothread(L, -1) == G.L;
  lua_pop(L, 1);
  return same;
}

/* daemon_set_tasks(tasks, report): incoming calls run in coroutines
 * started here (spawn_task). tasks is runtime's table of live tasks;
 * report(co, err) is called for one that failed. */
static int l_set_tasks(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!owner_state(L)) return 0; /* another state (a luv thread): its tasks stay in Lua */
  if (G.pool_ref == LUA_NOREF) {
    lua_createtable(L, TASK_POOL_MAX, 0);
    G.pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  replace_ref(L, &G.task_failed_ref, 2);
  replace_ref(L, &G.tasks_ref, 1);
  return 0;
}

/* daemon_task_done(co): runtime.resume saw a task started here end (its
 * entry in tasks already cleared); a coroutine that returned is pooled. */
static int l_task_done(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  if (!owner_state(L)) return 0;
  G.ctasks--;
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0 && G.pool_ref != LUA_NOREF)
    task_pool_push(L, 1);
  return 0;
}

/* daemon_tasks() -> the number of tasks started here and not finished. */
static int l_tasks(lua_State *L) {
  lua_pushinteger(L, owner_state(L) ? G.ctasks : 0);
  return 1;
}

/* ---- the common call, in C --------------------------------------------------
 *
 * core.daemon_fast_serve(daemons, xpcall, msgh, slow, on_error, on_results)
 *   -> serve
 *
 * serve(daemon_id, conn, tag, ser, flags, object, method, params, kwargs) does
 * what the exporter's Lua dispatch does, in C, for the shape nearly every call
 * has: a registered object, an exposed method found on the service by plain
 * indexing (tables and __index tables only: no function runs to find it), a
 * params list of at most SERVE_MAX_ARGS values and no kwargs. It calls
 * xpcall(fn, msgh, service, args...) -- the Lua xpcall, so a failing method's
 * traceback reads as on the Lua path -- and answers with its one result (none
 * and nil as null). Everything else goes to Lua: any other shape to slow(...)
 * with the nine arguments; a failure to on_error(conn, tag, ser, flags,
 * object, method, err); several results, or a result that cannot be encoded,
 * to on_results(conn, tag, ser, flags, object, method, ...). daemons is the
 * exporter's table daemon id -> { objects = { name -> entry } }, entry =
 * { service = t, exposed = { method -> function } }. serve runs inside a task
 * coroutine and may yield (a method calling a proxy): every call into Lua is
 * a lua_callk with a continuation. */
#define SERVE_MAX_ARGS 8
enum { UP_DAEMONS = 1, UP_XPCALL, UP_MSGH, UP_SLOW, UP_ON_ERROR, UP_ON_RESULTS };

static int serve_k_done(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* Calls the Lua upvalue `up` with the arguments 2..7 of serve (conn, tag,
 * ser, flags, object, method) followed by the values from `from` to the top. */
static int serve_to_lua(lua_State *L, int up, int from) {
  int n = lua_gettop(L) - from + 1;
  luaL_checkstack(L, 8, "springrun serve");
  lua_pushvalue(L, lua_upvalueindex(up));
  for (int i = 2; i <= 7; i++) lua_pushvalue(L, i);
  lua_rotate(L, from, 7); /* the function and the six in front of the values */
  lua_callk(L, n + 6, 0, 0, serve_k_done);
  return 0;
}

/* t[k] as normal indexing would find it when that needs no function: pushes
 * the value and returns its type, or pushes nothing and returns -1 (an
 * __index function, or a chain deeper than 16). */
static int plain_index(lua_State *L, int t, int k) {
  lua_pushvalue(L, t);
  for (int depth = 0; depth < 16; depth++) {
    lua_pushvalue(L, k);
    int ty = lua_rawget(L, -2);
    if (ty != LUA_TNIL) {
      lua_remove(L, -2);
      return ty;
    }
    lua_pop(L, 1);
    if (!lua_getmetatable(L, -1)) {
      lua_pop(L, 1);
      lua_pushnil(L);
      return LUA_TNIL;
    }
    lua_pushliteral(L, "__index");
    int it = lua_rawget(L, -2);
    lua_remove(L, -2); /* the metatable */
    lua_remove(L, -2); /* the table it belonged to */
    if (it == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushnil(L);
      return LUA_TNIL;
    }
    if (it != LUA_TTABLE) break;
  }
  lua_pop(L, 1);
  return -1;
}

/* Raw t[name] for the table at the top, replacing it; its type. */
static int raw_field(lua_State *L, const char *name) {
  lua_pushstring(L, name);
  int ty = lua_rawget(L, -2);
  lua_remove(L, -2);
  return ty;
}

/* After xpcall returned (or resumed and returned): ok, results... from
 * base + 1 (ctx = base) to the top. */
static int serve_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; /* xpcall catches every error */
  int base = (int)ctx;
  int oneway = (lua_tointeger(L, 5) & SR_FLAG_ONEWAY) != 0;
  if (!lua_toboolean(L, base + 1)) {
    lua_settop(L, base + 2);
    return serve_to_lua(L, UP_ON_ERROR, base + 2);
  }
  if (oneway) return 0;
  int nres = lua_gettop(L) - base - 1;
  if (nres > 1) return serve_to_lua(L, UP_ON_RESULTS, base + 2);
  if (nres == 0) lua_pushnil(L);
  lua_Integer tag = lua_tointeger(L, 3);
  char err[300];
  uint16_t flags = (uint16_t)(lua_tointeger(L, 5) & SR_FLAG_BATCH);
  if (send_result(L, -1, (uint64_t)lua_tointeger(L, 2), (uint32_t)(tag >> 16),
                  (uint16_t)(tag & 0xffff), (uint16_t)lua_tointeger(L, 4), flags, err,
                  sizeof err) < 0) /* Lua tells the client why */
    return serve_to_lua(L, UP_ON_RESULTS, lua_gettop(L));
  G.nfast++;
  return 0;
}

static int serve_slow(lua_State *L) {
  lua_settop(L, 9);
  lua_pushvalue(L, lua_upvalueindex(UP_SLOW));
  lua_insert(L, 1);
  lua_callk(L, 9, 0, 0, serve_k_done);
  return 0;
}

static int serve_fast(lua_State *L) {
  lua_settop(L, 9);
  if (!lua_isnil(L, 9) || lua_type(L, 6) != LUA_TSTRING || lua_type(L, 7) != LUA_TSTRING ||
      lua_type(L, 8) != LUA_TTABLE || !lsr_is_array_marked(L, 8))
    return serve_slow(L);
  lua_Unsigned n = lua_rawlen(L, 8);
  if (n > SERVE_MAX_ARGS) return serve_slow(L);
  luaL_checkstack(L, SERVE_MAX_ARGS + 16, "springrun serve");
  /* entry = daemons[daemon_id].objects[object] */
  if (lua_rawgeti(L, lua_upvalueindex(UP_DAEMONS), lua_tointeger(L, 1)) != LUA_TTABLE ||
      raw_field(L, "objects") != LUA_TTABLE) {
    lua_settop(L, 9);
    return serve_slow(L);
  }
  lua_pushvalue(L, 6);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_settop(L, 9);
    return serve_slow(L);
  }
  int entry = lua_gettop(L); /* 11 */
  lua_pushvalue(L, entry);
  int ok = raw_field(L, "exposed") == LUA_TTABLE;
  if (ok) {
    lua_pushvalue(L, 7);
    ok = lua_rawget(L, -2) == LUA_TFUNCTION; /* the function listed at export */
  }
  int cached = lua_gettop(L);
  lua_pushvalue(L, entry);
  ok = ok && raw_field(L, "service") == LUA_TTABLE;
  int service = lua_gettop(L);
  /* the service indexed again, so a method replaced since is called as it is */
  if (!ok || plain_index(L, service, 7) != LUA_TFUNCTION) {
    lua_settop(L, 9);
    return serve_slow(L);
  }
  (void)cached;
  int base = lua_gettop(L); /* fn here: becomes xpcall's first argument */
  lua_pushvalue(L, lua_upvalueindex(UP_XPCALL));
  lua_insert(L, base);
  lua_pushvalue(L, lua_upvalueindex(UP_MSGH));
  lua_pushvalue(L, service);
  for (lua_Unsigned i = 1; i <= n; i++) {
    lua_rawgeti(L, 8, (lua_Integer)i);
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) { /* null */
      lua_pop(L, 1);
      lua_pushnil(L);
    }
  }
  /* [base - 1] = xpcall, then fn, msgh, service, args: results from base on */
  lua_callk(L, (int)n + 3, LUA_MULTRET, base - 1, serve_k);
  return serve_k(L, LUA_OK, base - 1);
}

static int l_fast_serve(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  for (int i = 2; i <= 6; i++) luaL_checktype(L, i, LUA_TFUNCTION);
  lua_settop(L, 6);
  lua_pushcclosure(L, serve_fast, 6);
  return 1;
}

/* daemon_reply(conn, tag, ser, flags, value) -> true | nil, err, name */
static int l_reply(lua_State *L) {
  lua_Integer conn = luaL_checkinteger(L, 1);
  lua_Integer tag = luaL_checkinteger(L, 2);
  lua_Integer ser = luaL_checkinteger(L, 3);
  lua_Integer flags = luaL_checkinteger(L, 4);
  luaL_argcheck(L, ser > 0 && ser < 0xffff, 3, "bad serializer id");
  luaL_argcheck(L, flags >= 0 && flags <= 0xffff, 4, "bad flags");
  if (lua_isnone(L, 5)) lua_pushnil(L);
  char err[300];
  int rc = send_result(L, 5, (uint64_t)conn, (uint32_t)(tag >> 16), (uint16_t)(tag & 0xffff),
                       (uint16_t)ser, (uint16_t)flags, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  (void)L;
  if (G.h) {
    sr_holder_free(G.h); /* joins the holder thread */
    G.h = NULL;
  }
  /* still exported while the state closes: luv's loop finalizer completes
   * the close (or already closed it with its own callback: then the few
   * bytes of the handle are left to the exiting process) */
  if (G.async && uv_is_closing((uv_handle_t *)G.async)) G.async = NULL;
  close_async();
  sr_buf_free(&G.buf);
  G.L = NULL;
  /* the references lived in the closing state's registry */
  G.handler_ref = G.handler_arg_ref = G.log_ref = LUA_NOREF;
  G.tasks_ref = G.task_failed_ref = G.pool_ref = LUA_NOREF;
  G.npool = 0;
  G.ctasks = 0;
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
  { "daemon_set_max_message", l_set_max_message },
  { "daemon_set_handler", l_set_handler },
  { "daemon_set_reply_writer", l_set_reply_writer },
  { "daemon_reply_counts", l_reply_counts },
  { "daemon_reply", l_reply },
  { "daemon_fast_serve", l_fast_serve },
  { "daemon_set_tasks", l_set_tasks },
  { "daemon_task_done", l_task_done },
  { "daemon_tasks", l_tasks },
  { NULL, NULL },
};

void lsr_open_daemon(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  lua_pushlightuserdata(L, &task_mark);
  lua_setfield(L, -2, "daemon_task_mark");
  if (G.h != NULL) return; /* opened twice in one process: keep the first */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  G.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (sr_holder_new(&G.h, notify_cb, NULL) < 0) luaL_error(L, "springrun.core: out of memory");
  /* SPRINGRUN_REPLY_WRITER (for measurements): holder = every reply written
   * by the holder thread; direct = every reply the Lua thread can send, sent
   * by it (no batches); unset = batches via the holder, lone replies direct */
  const char *writer = getenv("SPRINGRUN_REPLY_WRITER");
  if (writer && (strcmp(writer, "holder") == 0 || strcmp(writer, "direct") == 0))
    set_reply_writer(writer);
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
