/*
 * lsr_daemon.c -- the Lua face of the daemon (daemon.c) in springrun.core:
 * the core.daemon_* functions, and the daemon's life with the Lua state.
 *
 * One daemon per process, created when springrun.core is opened and freed
 * (its thread joined) when the state closes; its thread starts with the
 * first listen. This file is what Lua calls: it checks the arguments and
 * options (the limits and security settings of a listener are read and
 * range-checked here, in one place) and calls daemon.h. The other direction
 * -- events from the daemon thread drained on the Lua thread, each INVOKE
 * decoded and handed to the handler set with daemon_set_handler, and the
 * replies -- is lsr_daemon_events.c, which also documents the handler and
 * core.daemon_reply; the state both share is in lsr_daemon_int.h.
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

#include "lsr_codec.h"
#include "lsr_daemon_int.h"
#include "lsr_tls.h"
#include "wire.h"

#define LSR_DAEMON_GC "springrun.daemon"

lsr_daemon_state_t lsr_daemon = { .handler_ref = LUA_NOREF, .handler_arg_ref = LUA_NOREF,
                                  .refuse_ref = LUA_NOREF, .classes_ref = LUA_NOREF,
                                  .log_ref = LUA_NOREF, .batch_replies = 1, .direct = 1 };

static unsigned probe_serializers(lua_State *L) {
  if (lsr_daemon.probed) return lsr_daemon.ser_mask;
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
  lsr_daemon.ser_mask = mask;
  lsr_daemon.probed = 1;
  return mask;
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
  if (rc == 0) rc = lsr_daemon_open_wake(L);
  if (rc == 0) {
    ignore_sigpipe();
    opts.ser_mask = mask;
    opts.objs = objs;
    opts.nobjs = (size_t)nobjs;
    rc = sr_daemon_listen(lsr_daemon.d, host, (int)port, &opts, &id, &bound, err, sizeof err);
    if (rc < 0 && sr_daemon_count(lsr_daemon.d) == 0) lsr_daemon_close_wake();
  }
  for (int i = 0; i < nobjs; i++)
    for (int k = 0; k < SR_DAEMON_NSER; k++) sr_buf_free(&bufs[i][k]);
  if (rc == 0 && lsr_daemon_lstate_add(id) < 0) {
    sr_daemon_unlisten(lsr_daemon.d, id);
    if (sr_daemon_count(lsr_daemon.d) == 0) lsr_daemon_close_wake();
    rc = sr_seterr(err, sizeof err, SR_ENOMEM, "out of memory");
  }
  if (rc < 0) return fail(L, rc, err);
  lua_pushinteger(L, id);
  lua_pushinteger(L, bound);
  return 2;
}

static int l_unlisten(lua_State *L) {
  uint32_t did = check_listener(L, 1);
  int rc = sr_daemon_unlisten(lsr_daemon.d, did);
  lsr_daemon_lstate_remove(did);
  if (sr_daemon_count(lsr_daemon.d) == 0 && lsr_daemon.wake) {
    /* the thread is joined: deliver what it queued last (log lines; the
     * calls' connections are gone), then drop the wake-up */
    lsr_daemon_on_events(lsr_daemon.wake);
    lsr_daemon_events_clear();
    lsr_daemon_close_wake();
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
    rc = sr_daemon_register(lsr_daemon.d, id, name, o.meta, o.meta_len);
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
  int rc = sr_daemon_unregister(lsr_daemon.d, id, name);
  if (rc < 0) return fail(L, rc, "no such object");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_quiesce(lua_State *L) {
  sr_daemon_quiesce(lsr_daemon.d);
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
  int rc = sr_daemon_limits(lsr_daemon.d, id, &hl);
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
  lua_pushinteger(L, sr_daemon_count(lsr_daemon.d));
  return 1;
}

/* core.daemon_peer(conn) -> "host:port" of the connection's client, or nil
 * once the connection is gone (log lines name the caller with it). */
static int l_peer(lua_State *L) {
  uint64_t conn = (uint64_t)luaL_checkinteger(L, 1);
  char peer[80];
  if (lsr_daemon.d == NULL || sr_daemon_peer(lsr_daemon.d, conn, peer, sizeof peer) != 0) {
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
  sr_daemon_set_direct_writes(lsr_daemon.d, !thread);
  lsr_daemon.direct = !thread;
  lsr_daemon.batch_replies = strcmp(mode, "auto") == 0;
}

/* daemon_set_reply_writer("auto" | "direct" | "thread") */
static int l_set_reply_writer(lua_State *L) {
  static const char *const modes[] = { "auto", "direct", "thread", NULL };
  int i = luaL_checkoption(L, 1, NULL, modes);
  if (sr_daemon_count(lsr_daemon.d) > 0)
    return luaL_error(L, "daemon_set_reply_writer: a listener is open");
  set_reply_writer(modes[i]);
  return 0;
}

/* daemon_reply_counts() -> direct, batched, thread, fast, merged: replies
 * this process encoded, by who was to write them (see set_reply_writer), how
 * many calls were answered without a Lua function (lsr_serve.c's plain case), and
 * how many CONNECTOKs left with the first reply (daemon.h). */
static int l_reply_counts(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lsr_daemon.nreplies[SR_REPLY_DIRECT]);
  lua_pushinteger(L, (lua_Integer)lsr_daemon.nreplies[SR_REPLY_BATCH]);
  lua_pushinteger(L, (lua_Integer)lsr_daemon.nreplies[SR_REPLY_THREAD]);
  lua_pushinteger(L, (lua_Integer)lsr_daemon.nfast);
  lua_pushinteger(L, (lua_Integer)sr_daemon_merged_connectoks());
  return 5;
}

/* daemon_waiting() -> calls taken from the daemon and not started yet
 * (waiting for their turn, see "by connection" in lsr_daemon_events.c). */
static int l_waiting(lua_State *L) {
  lua_pushinteger(L, lsr_daemon_nwaiting());
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
  replace_ref(L, &lsr_daemon.classes_ref, 1);
  return 0;
}

static int l_set_handler(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
  replace_ref(L, &lsr_daemon.handler_ref, 1);
  replace_ref(L, &lsr_daemon.handler_arg_ref, 3);
  replace_ref(L, &lsr_daemon.refuse_ref, 4);
  replace_ref(L, &lsr_daemon.log_ref, 2);
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
  int rc = lsr_daemon_send_result(L, 5, (uint64_t)conn, (uint32_t)(tag >> 16),
                                  (uint16_t)(tag & 0xffff), (uint16_t)ser, (uint16_t)flags, annp,
                                  err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  (void)L;
  if (lsr_daemon.d) {
    sr_daemon_free(lsr_daemon.d); /* joins the daemon thread */
    lsr_daemon.d = NULL;
  }
  lsr_daemon_events_free();
  /* still exported while the state closes: luv's loop finalizer completes
   * the close (or already closed it with its own callback: then the few
   * bytes of the handle are left to the exiting process) */
  if (lsr_daemon.wake && uv_is_closing((uv_handle_t *)&lsr_daemon.wake->poll))
    lsr_daemon.wake = NULL;
  lsr_daemon_close_wake();
  sr_buf_free(&lsr_daemon.buf);
  lsr_daemon.L = NULL;
  /* the references lived in the closing state's registry */
  lsr_daemon.handler_ref = lsr_daemon.handler_arg_ref = lsr_daemon.refuse_ref = LUA_NOREF;
  lsr_daemon.log_ref = lsr_daemon.classes_ref = LUA_NOREF;
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
  lsr_daemon_call_mt(L);
  if (lsr_daemon.d != NULL) return; /* opened twice in one process: keep the first */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lsr_daemon.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (sr_daemon_new(&lsr_daemon.d, lsr_daemon_notify, NULL) < 0)
    luaL_error(L, "springrun.core: out of memory");
  sr_buf_init(&lsr_daemon.buf);
  /* a sentinel whose finalizer stops the thread when the state closes;
   * created after luv's loop, so finalized before it */
  lua_newuserdatauv(L, 1, 0);
  lua_newtable(L);
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LSR_DAEMON_GC);
}
