/*
 * lsr_container.c -- the Lua binding of the object container (container.h),
 * registered into springrun.core as core.container(). springrun.context
 * (lua/springrun/context.lua) drives it: it feeds definitions and edges,
 * asks for validation and the eager order, and brackets every creation with
 * enter/leave so cycles met at run time are reported with their chain.
 *
 * Cached singletons live in the userdata's user value (a table); the C core
 * only keeps the integer references into it, so it stays Lua-free.
 *
 *   local c = core.container()
 *   c:define(id, {prototype=, lazy=, abstract=, parent=}) -> replaced
 *   c:add_dep(id, dep [, via]);  c:validate() -> true | nil, msg, errname
 *   c:eager_order() -> {ids}; c:ids() -> {ids}; c:info(id) -> {...} | nil
 *   c:enter(id) -> true | nil, msg, errname;  c:leave(id); c:depth(); c:unwind(d)
 *   c:store(id, obj); c:get(id) -> found, obj; c:forget(id) -> was_cached
 *   c:created() -> {ids}; c:clear()
 *
 * Misuse (wrong argument types, unknown id where one must exist) raises;
 * graph problems are returned as nil, message, "SR_E..." for the caller to
 * word with its own context.
 */
#include <stdlib.h>
#include <string.h>

#include "container.h"
#include "lsr.h"
#include "sr.h"

#define LSR_CONTAINER_MT "springrun.Container"

typedef struct lsr_container_s {
  sr_container_t *c; /* NULL once closed */
} lsr_container_t;

static lsr_container_t *check_open(lua_State *L) {
  lsr_container_t *u = luaL_checkudata(L, 1, LSR_CONTAINER_MT);
  if (u->c == NULL) luaL_error(L, "container is closed");
  return u;
}

static int fail(lua_State *L, int rc, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg[0] ? msg : sr_strerror(rc));
  lua_pushstring(L, sr_err_name(rc));
  return 3;
}

/* Pushes the handle table (user value 1) of the userdata at index 1. */
static void push_store(lua_State *L) { lua_getiuservalue(L, 1, 1); }

static void unref_handle(lua_State *L, int64_t h) {
  push_store(L);
  luaL_unref(L, -1, (int)h);
  lua_pop(L, 1);
}

static int lsr_container_new(lua_State *L) {
  lsr_container_t *u = lua_newuserdatauv(L, sizeof(*u), 1);
  u->c = NULL;
  luaL_setmetatable(L, LSR_CONTAINER_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  u->c = sr_container_new();
  if (u->c == NULL) return luaL_error(L, "out of memory");
  return 1;
}

static int opt_flag(lua_State *L, int t, const char *name, unsigned bit) {
  lua_getfield(L, t, name);
  int on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return on ? (int)bit : 0;
}

static int lsr_container_define(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  unsigned flags = 0;
  const char *parent = NULL;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    flags |= (unsigned)opt_flag(L, 3, "prototype", SR_DEF_PROTOTYPE);
    flags |= (unsigned)opt_flag(L, 3, "lazy", SR_DEF_LAZY);
    flags |= (unsigned)opt_flag(L, 3, "abstract", SR_DEF_ABSTRACT);
    lua_getfield(L, 3, "parent");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "define: parent must be a string");
      parent = lua_tostring(L, -1); /* stays on the stack while used */
    }
  }
  char err[256] = "";
  int had = 0;
  int64_t old = 0;
  int rc = sr_container_define(u->c, id, flags, parent, &had, &old, err, sizeof err);
  if (rc < 0) return luaL_error(L, "define: %s", err);
  if (had) unref_handle(L, old);
  lua_pushboolean(L, rc == 1);
  return 1;
}

static int lsr_container_add_dep(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  const char *dep = luaL_checkstring(L, 3);
  const char *via = luaL_optstring(L, 4, NULL);
  char err[256] = "";
  int rc = sr_container_add_dep(u->c, id, dep, via, err, sizeof err);
  if (rc < 0) return luaL_error(L, "add_dep: %s", err);
  return 0;
}

static int lsr_container_validate(lua_State *L) {
  lsr_container_t *u = check_open(L);
  char err[1024] = "";
  int rc = sr_container_validate(u->c, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int lsr_container_eager_order(lua_State *L) {
  lsr_container_t *u = check_open(L);
  size_t n = sr_container_count(u->c), got = 0;
  /* a userdata, not malloc: lua_pushstring below may raise (out of memory) */
  const char **ids = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*ids), 0);
  char err[1024] = "";
  int rc = sr_container_eager_order(u->c, ids, &got, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_createtable(L, (int)got, 0);
  for (size_t i = 0; i < got; i++) {
    lua_pushstring(L, ids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int lsr_container_ids(lua_State *L) {
  lsr_container_t *u = check_open(L);
  size_t n = sr_container_count(u->c);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, sr_container_id_at(u->c, i));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int lsr_container_info(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  unsigned flags = 0;
  const char *parent = NULL;
  if (sr_container_lookup(u->c, id, &flags, &parent) != 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 4);
  lua_pushboolean(L, (flags & SR_DEF_PROTOTYPE) != 0);
  lua_setfield(L, -2, "prototype");
  lua_pushboolean(L, (flags & SR_DEF_LAZY) != 0);
  lua_setfield(L, -2, "lazy");
  lua_pushboolean(L, (flags & SR_DEF_ABSTRACT) != 0);
  lua_setfield(L, -2, "abstract");
  if (parent != NULL) {
    lua_pushstring(L, parent);
    lua_setfield(L, -2, "parent");
  }
  return 1;
}

static int lsr_container_enter(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  char err[1024] = "";
  int rc = sr_container_enter(u->c, id, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int lsr_container_leave(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  if (sr_container_leave(u->c, id) != 0)
    return luaL_error(L, "leave: '%s' is not the object being created", id);
  return 0;
}

static int lsr_container_depth(lua_State *L) {
  lsr_container_t *u = check_open(L);
  lua_pushinteger(L, (lua_Integer)sr_container_depth(u->c));
  return 1;
}

static int lsr_container_unwind(lua_State *L) {
  lsr_container_t *u = check_open(L);
  lua_Integer d = luaL_checkinteger(L, 2);
  luaL_argcheck(L, d >= 0, 2, "depth must be >= 0");
  sr_container_unwind(u->c, (size_t)d);
  return 0;
}

static int lsr_container_store(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  if (lua_isnil(L, 3)) return luaL_error(L, "store: object '%s' is nil", id);
  int64_t dummy;
  int have = sr_container_get(u->c, id, &dummy);
  if (have == SR_ENOTFOUND) return luaL_error(L, "store: no object named '%s'", id);
  if (have == 1) return luaL_error(L, "store: a singleton '%s' is already stored", id);
  push_store(L);
  lua_pushvalue(L, 3);
  int ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  int rc = sr_container_store(u->c, id, ref);
  if (rc < 0) {
    unref_handle(L, ref);
    return luaL_error(L, "store '%s': %s", id, sr_strerror(rc));
  }
  return 0;
}

static int lsr_container_get(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  int64_t h = 0;
  int rc = sr_container_get(u->c, id, &h);
  if (rc != 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  push_store(L);
  lua_rawgeti(L, -1, (lua_Integer)h);
  lua_remove(L, -2);
  return 2;
}

static int lsr_container_forget(lua_State *L) {
  lsr_container_t *u = check_open(L);
  const char *id = luaL_checkstring(L, 2);
  int64_t h = 0;
  int rc = sr_container_forget(u->c, id, &h);
  if (rc == SR_ENOTFOUND) return luaL_error(L, "forget: no object named '%s'", id);
  if (rc == 1) unref_handle(L, h);
  lua_pushboolean(L, rc == 1);
  return 1;
}

static int lsr_container_created(lua_State *L) {
  lsr_container_t *u = check_open(L);
  size_t n = sr_container_created_count(u->c);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const char *id = NULL;
    sr_container_created_at(u->c, i, &id, NULL);
    lua_pushstring(L, id);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

typedef struct {
  lua_State *L;
} release_ud_t;

static void release_cb(int64_t h, void *ud) {
  release_ud_t *r = ud;
  unref_handle(r->L, h);
}

static int lsr_container_clear(lua_State *L) {
  lsr_container_t *u = check_open(L);
  release_ud_t r = {L};
  sr_container_clear(u->c, release_cb, &r);
  return 0;
}

/* __gc and __close: frees the C container; idempotent. */
static int lsr_container_gc(lua_State *L) {
  lsr_container_t *u = luaL_checkudata(L, 1, LSR_CONTAINER_MT);
  sr_container_free(u->c);
  u->c = NULL;
  return 0;
}

static int lsr_container_tostring(lua_State *L) {
  lsr_container_t *u = luaL_checkudata(L, 1, LSR_CONTAINER_MT);
  if (u->c == NULL)
    lua_pushliteral(L, "springrun.Container (closed)");
  else
    lua_pushfstring(L, "springrun.Container (%d objects)", (int)sr_container_count(u->c));
  return 1;
}

static const luaL_Reg container_methods[] = {
    {"define", lsr_container_define},
    {"add_dep", lsr_container_add_dep},
    {"validate", lsr_container_validate},
    {"eager_order", lsr_container_eager_order},
    {"ids", lsr_container_ids},
    {"info", lsr_container_info},
    {"enter", lsr_container_enter},
    {"leave", lsr_container_leave},
    {"depth", lsr_container_depth},
    {"unwind", lsr_container_unwind},
    {"store", lsr_container_store},
    {"get", lsr_container_get},
    {"forget", lsr_container_forget},
    {"created", lsr_container_created},
    {"clear", lsr_container_clear},
    {"free", lsr_container_gc},
    {NULL, NULL},
};

void lsr_open_container(lua_State *L) {
  if (luaL_newmetatable(L, LSR_CONTAINER_MT)) {
    luaL_newlib(L, container_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lsr_container_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lsr_container_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lsr_container_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, lsr_container_new);
  lua_setfield(L, -2, "container");
}
