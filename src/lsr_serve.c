/*
 * lsr_serve.c -- the server's dispatch: one path from a decoded INVOKE to
 * its reply. The exporter declares what is served and supplies the policy;
 * this file finds the object, calls the method and answers.
 *
 *   core.serve_register(listener_id, name, service, exposed) -> stats
 *       serves `service` as object `name` on the listener; exposed maps
 *       each callable method name to the function it named at export (the
 *       metadata the client got). Entries are the binding's own tables:
 *       { stats, name = name, service = service, exposed = exposed };
 *       stats (entry[1], a userdata the entry owns, also returned) counts
 *       the object's calls (stats.h).
 *   core.serve_stats(stats, ...) -> { calls, errors, in_flight, latency =
 *       { p50, p90, p99, p999, max, mean } } (seconds): the statistics of
 *       the objects given, as one (the copies of an exporter on several
 *       ports).
 *   core.serve_unregister(listener_id [, name])   (no name: all of them)
 *   core.serve_new(policy) -> serve, serve_call
 *       serve(listener_id, conn, tag, ser, flags, object, method, params,
 *       kwargs, corr [, call]) is what the daemon binding's handler runs in each
 *       call's task (daemon_set_handler's `first`); `call`, when given, is
 *       marked to-be-closed: the daemon binding learns that the call ended
 *       (lsr_daemon_events.c: max_oneway, call_timeout). policy (Lua,
 *       springrun/daemon.lua):
 *         msgh(e)        xpcall's handler around the method (traceback)
 *         prepare(entry, method, params, kwargs) -> fn, service, args...
 *                        | nil, exc
 *                        lookup and arguments for every call the plain
 *                        case below does not cover (kwargs, a params map or
 *                        long list, an __index function, a name not exposed)
 *         finish(conn, tag, ser, flags, object, method, ok, ...)
 *                        answers with xpcall's outcome (an error, several
 *                        results, a result that cannot be encoded)
 *         answer(conn, tag, ser, flags, object, method, ok, value)
 *                        answers with a value or exception as it is
 *         unknown(conn, tag, ser, flags, object, method)   no such object
 *         batch(entry, conn, tag, ser, flags, object, method, params)
 *                        Pyro4's "<batch>": each item through serve_call
 *         tasks          (a table, optional) runtime's live tasks, co ->
 *                        true: serve sets tasks[co] = conn for the task it
 *                        runs in, so the service code (the exporter's
 *                        instance modes, springrun.current_context) learns
 *                        which connection the call came on; the task pool
 *                        clears the entry when the task ends
 *         corrs          (a table with weak keys, with tasks) co -> the
 *                        call's correlation id (corr: the request's CORR
 *                        annotation, 16 bytes), nil when it had none
 *         listeners      (a table with weak keys, with tasks) co -> the
 *                        listener id of the call
 *   serve_call(entry, method, params, kwargs)
 *       -> true, results... | false, err (xpcall's) | nil, exception (lookup)
 *
 * The plain case -- an exposed method found on the service by plain
 * indexing (tables and __index tables only: no function runs to find it),
 * params a list of at most SERVE_MAX_ARGS values, no kwargs -- takes no Lua
 * function but the method itself: the method runs as xpcall(fn, msgh,
 * service, args...) (the Lua xpcall, so a failure's traceback reads the
 * same whatever prepared the call), and one result is encoded and sent from
 * here. Everything is called with lua_callk and a continuation: a method
 * may yield (a proxy call inside it) and the task resumes here.
 *
 * Every call that finds its object is counted in the entry's stats, here
 * and nowhere else: started when the lookup begins, finished when the
 * method returned or raised (or the lookup or arguments were refused), its
 * latency the time between (waits inside the method included). A "<batch>"
 * counts each of its calls.
 */
#include <string.h>

#include <uv.h>

#include "lsr.h"
#include "lsr_codec.h"
#include "stats.h"

#define SERVE_MAX_ARGS 8
enum { UP_REG = 1, UP_XPCALL, UP_MSGH, UP_PREPARE, UP_FINISH, UP_ANSWER, UP_UNKNOWN, UP_BATCH,
       UP_TASKS, UP_CORRS, UP_LIDS };
#define NUP 11

static char reg_key; /* registry[&reg_key]: listener id -> { name -> entry } */
#define STATS_MT "springrun.stats"

static void push_reg(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &reg_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &reg_key);
}

/* serve_register(listener_id, name, service, exposed) -> stats */
static int l_register(lua_State *L) {
  lua_Integer lid = luaL_checkinteger(L, 1);
  luaL_checkstring(L, 2);
  luaL_argcheck(L, !lua_isnoneornil(L, 3), 3, "service expected");
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  push_reg(L);
  if (lua_rawgeti(L, -1, lid) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, lid);
  }
  sr_stats_t *st = lua_newuserdatauv(L, sizeof *st, 0);
  memset(st, 0, sizeof *st);
  luaL_setmetatable(L, STATS_MT);
  int stats = lua_gettop(L);
  lua_pushvalue(L, 2);
  lua_createtable(L, 1, 3);
  lua_pushvalue(L, stats);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "name");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "service");
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "exposed");
  lua_rawset(L, -4);
  lua_pushvalue(L, stats);
  return 1;
}

/* serve_stats(stats, ...) -> the merged snapshot (see the top) */
static int l_stats(lua_State *L) {
  int n = lua_gettop(L);
  sr_stats_t all;
  memset(&all, 0, sizeof all);
  luaL_checkudata(L, 1, STATS_MT);
  for (int i = 1; i <= n; i++) sr_stats_merge(&all, luaL_checkudata(L, i, STATS_MT));
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)all.calls);
  lua_setfield(L, -2, "calls");
  lua_pushinteger(L, (lua_Integer)all.errors);
  lua_setfield(L, -2, "errors");
  lua_pushinteger(L, (lua_Integer)all.in_flight);
  lua_setfield(L, -2, "in_flight");
  static const struct { const char *name; double q; } qs[] = {
    { "p50", 0.5 }, { "p90", 0.9 }, { "p99", 0.99 }, { "p999", 0.999 },
  };
  lua_createtable(L, 0, 6);
  for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
    lua_pushnumber(L, (double)sr_stats_quantile(&all, qs[i].q) / 1e9);
    lua_setfield(L, -2, qs[i].name);
  }
  lua_pushnumber(L, (double)all.max_ns / 1e9);
  lua_setfield(L, -2, "max");
  lua_pushnumber(L, all.calls ? (double)all.sum_ns / (double)all.calls / 1e9 : 0.0);
  lua_setfield(L, -2, "mean");
  lua_setfield(L, -2, "latency");
  return 1;
}

/* serve_unregister(listener_id [, name]) */
static int l_unregister(lua_State *L) {
  lua_Integer lid = luaL_checkinteger(L, 1);
  lua_settop(L, 2);
  push_reg(L);
  if (lua_isnoneornil(L, 2)) {
    lua_pushnil(L);
    lua_rawseti(L, -2, lid);
    return 0;
  }
  luaL_checkstring(L, 2);
  if (lua_rawgeti(L, -1, lid) == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
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

static int done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* Calls the policy upvalue `up` with serve's arguments 2..7 (conn, tag,
 * ser, flags, object, method) followed by the values from `from` to the
 * top; serve ends with it. */
static int to_policy(lua_State *L, int up, int from) {
  int n = lua_gettop(L) - from + 1;
  luaL_checkstack(L, 8, "springrun serve");
  lua_pushvalue(L, lua_upvalueindex(up));
  for (int i = 2; i <= 7; i++) lua_pushvalue(L, i);
  lua_rotate(L, from, 7); /* the function and the six in front of the values */
  lua_callk(L, n + 6, 0, 0, done_k);
  return 0;
}

/* The call step, shared by serve and serve_call. ctx = start << 22 | base
 * << 2 | flags: MODE_CALL returns the outcome to serve_call's caller,
 * otherwise serve_k answers; PLAIN: the call needed no Lua function to be
 * prepared (counted); start: when the call started, uv_hrtime in units of
 * 2^CTX_TICK ns modulo 2^42 (a call longer than 2^48 ns, 78 hours, is
 * counted short). The start travels in ctx, not on the stack, so counting
 * leaves the stack a method runs on as it was. Stack from base + 1:
 * xpcall's results; the entry at 1 (MODE_CALL) or 12 (l_serve). */
enum { MODE_SERVE = 0, MODE_CALL = 1, PLAIN = 2 };
#define CTX_BASE(ctx) ((int)(((uint64_t)(ctx) >> 2) & 0xFFFFF))
_Static_assert(LUAI_MAXSTACK <= 0xFFFFF, "a stack index fits in 20 bits of ctx");
#define CTX_TICK 6
#define CTX_NOW() ((uv_hrtime() >> CTX_TICK) << 22)

/* The entry's stats (entry[1]: entries are serve_register's). */
static sr_stats_t *entry_stats(lua_State *L, int entry) {
  lua_rawgeti(L, entry, 1);
  sr_stats_t *st = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return st;
}

/* The call of ctx finished. */
static void count_end(lua_State *L, lua_KContext ctx, int failed) {
  sr_stats_t *st = entry_stats(L, ctx & MODE_CALL ? 1 : 12);
  uint64_t ticks = ((uint64_t)CTX_NOW() - ((uint64_t)ctx & ~(uint64_t)0x3FFFFF)) >> 22;
  sr_stats_end(st, ticks << CTX_TICK, failed);
}

static int serve_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; /* xpcall catches every error */
  int base = CTX_BASE(ctx);
  count_end(L, ctx, !lua_toboolean(L, base + 1));
  if (ctx & MODE_CALL) return lua_gettop(L) - base;
  int oneway = (lua_tointeger(L, 5) & SR_FLAG_ONEWAY) != 0;
  int nres = lua_gettop(L) - base - 1;
  if (!lua_toboolean(L, base + 1) || (!oneway && nres > 1))
    return to_policy(L, UP_FINISH, base + 1); /* an exception, or several results */
  if (oneway) return 0;
  if (nres == 0) lua_pushnil(L);
  char err[300];
  uint16_t flags = (uint16_t)(lua_tointeger(L, 5) & SR_FLAG_BATCH);
  if (lsr_daemon_result(L, -1, (uint64_t)lua_tointeger(L, 2), lua_tointeger(L, 3),
                        (uint16_t)lua_tointeger(L, 4), flags, (ctx & PLAIN) != 0, err,
                        sizeof err) < 0)
    return to_policy(L, UP_FINISH, base + 1); /* the policy tells the client why */
  return 0;
}

/* xpcall(fn, msgh, args...) with fn, args from `fn` to the top (fn's
 * arguments include the service). */
static int invoke(lua_State *L, int fn, lua_KContext ctx) {
  int nargs = lua_gettop(L) - fn; /* without fn */
  lua_pushvalue(L, lua_upvalueindex(UP_XPCALL));
  lua_insert(L, fn);
  lua_pushvalue(L, lua_upvalueindex(UP_MSGH));
  lua_insert(L, fn + 2);
  lua_callk(L, nargs + 2, LUA_MULTRET, ctx, serve_k);
  return serve_k(L, LUA_OK, ctx);
}

/* After policy.prepare returned fn, args... (from base + 1) or nil, exc. */
static int prepare_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  int base = CTX_BASE(ctx);
  if (lua_isnil(L, base + 1)) { /* a lookup or argument error: exc as it is */
    count_end(L, ctx, 1);
    if (ctx & MODE_CALL) {
      lua_settop(L, base + 2);
      return 2;
    }
    lua_settop(L, base + 2);
    lua_pushboolean(L, 0);
    lua_replace(L, base + 1);
    return to_policy(L, UP_ANSWER, base + 1);
  }
  return invoke(L, base + 1, ctx); /* fn, the service, args... */
}

/* The call of `method` on entry (at entry, with params, kwargs at the next
 * two slots after method; st: the entry's stats): the plain case here, any
 * other through policy.prepare. Results from base + 1 on, handled as ctx's
 * mode says. */
static int call(lua_State *L, sr_stats_t *st, int entry, int method, int params, int kwargs,
                int mode) {
  luaL_checkstack(L, SERVE_MAX_ARGS + 16, "springrun serve");
  sr_stats_begin(st);
  int base = lua_gettop(L);
  lua_KContext ctx = (lua_KContext)(CTX_NOW() | ((uint64_t)base << 2) | (uint64_t)mode);
  lua_Unsigned n = 0;
  int plain = lua_isnil(L, kwargs) && lua_type(L, method) == LUA_TSTRING &&
              lua_type(L, params) == LUA_TTABLE && lsr_is_array_marked(L, params) &&
              (n = lua_rawlen(L, params)) <= SERVE_MAX_ARGS;
  if (plain) {
    /* exposed[method] is a function (listed at export), and the service
     * indexed again finds a function (a method replaced since is called as
     * it is now) */
    lua_getfield(L, entry, "exposed");
    lua_pushvalue(L, method);
    plain = lua_type(L, -2) == LUA_TTABLE && lua_rawget(L, -2) == LUA_TFUNCTION;
    lua_settop(L, base);
  }
  if (plain) {
    lua_getfield(L, entry, "service");
    int service = base + 1;
    if (plain_index(L, service, method) == LUA_TFUNCTION) {
      lua_pushvalue(L, service);
      lua_remove(L, service); /* fn, service from base + 1 */
      int fn = base + 1;
      for (lua_Unsigned i = 1; i <= n; i++) {
        lua_rawgeti(L, params, (lua_Integer)i);
        if (lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) { /* null */
          lua_pop(L, 1);
          lua_pushnil(L);
        }
      }
      return invoke(L, fn, ctx | PLAIN);
    }
    lua_settop(L, base);
  }
  lua_pushvalue(L, lua_upvalueindex(UP_PREPARE));
  lua_pushvalue(L, entry);
  lua_pushvalue(L, method);
  lua_pushvalue(L, params);
  lua_pushvalue(L, kwargs);
  lua_callk(L, 4, LUA_MULTRET, ctx, prepare_k);
  return prepare_k(L, LUA_OK, ctx);
}

/* serve(listener_id, conn, tag, ser, flags, object, method, params, kwargs,
 * corr [, call]) */
static int l_serve(lua_State *L) {
  lua_settop(L, 11);
  if (!lua_isnil(L, 11)) lua_toclose(L, 11); /* closed when serve ends, however */
  /* entry = registry[listener_id][object] */
  if (lua_rawgeti(L, lua_upvalueindex(UP_REG), lua_tointeger(L, 1)) != LUA_TTABLE ||
      (lua_pushvalue(L, 6), lua_rawget(L, -2)) != LUA_TTABLE) {
    lua_settop(L, 11);
    return to_policy(L, UP_UNKNOWN, 12);
  }
  lua_remove(L, 12); /* entry at 12 */
  if (lua_type(L, lua_upvalueindex(UP_TASKS)) == LUA_TTABLE) {
    lua_pushthread(L);
    if (lua_rawget(L, lua_upvalueindex(UP_TASKS)) != LUA_TNIL) { /* running as a task */
      lua_pushthread(L);
      lua_pushvalue(L, 2);
      lua_rawset(L, lua_upvalueindex(UP_TASKS));
      if (lua_type(L, lua_upvalueindex(UP_CORRS)) == LUA_TTABLE) {
        lua_pushthread(L);
        lua_pushvalue(L, 10);
        lua_rawset(L, lua_upvalueindex(UP_CORRS));
      }
      if (lua_type(L, lua_upvalueindex(UP_LIDS)) == LUA_TTABLE) {
        lua_pushthread(L);
        lua_pushvalue(L, 1);
        lua_rawset(L, lua_upvalueindex(UP_LIDS));
      }
    }
    lua_pop(L, 1);
  }
  sr_stats_t *st = entry_stats(L, 12);
  if (lua_type(L, 7) == LUA_TSTRING && strcmp(lua_tostring(L, 7), "<batch>") == 0) {
    lua_pushvalue(L, lua_upvalueindex(UP_BATCH));
    lua_pushvalue(L, 12);
    for (int i = 2; i <= 8; i++) lua_pushvalue(L, i);
    lua_callk(L, 8, 0, 0, done_k);
    return 0;
  }
  return call(L, st, 12, 7, 8, 9, MODE_SERVE);
}

/* serve_call(entry, method, params, kwargs) */
static int l_serve_call(lua_State *L) {
  lua_settop(L, 4);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 1);
  sr_stats_t *st = luaL_testudata(L, 5, STATS_MT);
  luaL_argcheck(L, st != NULL, 1, "not an entry of serve_register");
  lua_pop(L, 1);
  return call(L, st, 1, 2, 3, 4, MODE_CALL);
}

/* serve_new(policy) -> serve, serve_call: closures over the registry and
 * the policy functions. */
static int l_serve_new(lua_State *L) {
  static const char *const names[] = { "msgh", "prepare", "finish", "answer", "unknown",
                                       "batch" };
  luaL_checktype(L, 1, LUA_TTABLE);
  push_reg(L);
  lua_getglobal(L, "xpcall");
  luaL_argcheck(L, lua_isfunction(L, -1), 1, "xpcall is not available");
  for (int i = 0; i < 6; i++) {
    if (lua_getfield(L, 1, names[i]) != LUA_TFUNCTION)
      return luaL_error(L, "serve_new: policy.%s must be a function", names[i]);
  }
  int tt = lua_getfield(L, 1, "tasks");
  luaL_argcheck(L, tt == LUA_TNIL || tt == LUA_TTABLE, 1, "policy.tasks must be a table");
  tt = lua_getfield(L, 1, "corrs");
  luaL_argcheck(L, tt == LUA_TNIL || tt == LUA_TTABLE, 1, "policy.corrs must be a table");
  tt = lua_getfield(L, 1, "listeners");
  luaL_argcheck(L, tt == LUA_TNIL || tt == LUA_TTABLE, 1, "policy.listeners must be a table");
  int first = lua_gettop(L) - NUP + 1;
  for (int i = 0; i < NUP; i++) lua_pushvalue(L, first + i);
  lua_pushcclosure(L, l_serve, NUP);
  lua_insert(L, first);
  lua_pushcclosure(L, l_serve_call, NUP);
  return 2;
}

void lsr_open_serve(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "serve_register", l_register },
    { "serve_unregister", l_unregister },
    { "serve_new", l_serve_new },
    { "serve_stats", l_stats },
    { "encode_set_refs", lsr_l_encode_set_refs },
    { NULL, NULL },
  };
  luaL_newmetatable(L, STATS_MT);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
