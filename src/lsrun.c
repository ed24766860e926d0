/*
 * lsrun.c -- luaopen_springrun_core: builds the `springrun.core` module from
 * the binding parts (lsr_*.c). luv is required first so that its loop exists
 * (luv_loop(L)) before any part that needs it is opened.
 *
 * luv_loop is found in the luv module `require "luv"` loaded (dlsym on its
 * file, located with package.searchpath as require does) instead of linking
 * a luv shared library: Debian ships luv as liblua5.4-luv.so, a LuaRocks
 * tree as a plain luv.so module, and this works with both.
 */
#include <dlfcn.h>

#include "lsr.h"
#include "sr.h"

typedef struct uv_loop_s *(*luv_loop_fn)(lua_State *L);
static luv_loop_fn luv_loop_ptr;

struct uv_loop_s *lsr_luv_loop(lua_State *L) { return luv_loop_ptr(L); }

/* Sets luv_loop_ptr from the luv module already loaded; raises naming the
 * file when it has no luv_loop. The handle from RTLD_NOLOAD only adds a
 * reference to the loaded module; it is kept for the life of the process,
 * as the module itself is. */
static void find_luv_loop(lua_State *L) {
  if (luv_loop_ptr != NULL) return;
  int top = lua_gettop(L);
  void *fn = dlsym(RTLD_DEFAULT, "luv_loop"); /* luv linked into the program */
  const char *path = "(not found on package.cpath)";
  if (fn == NULL) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushliteral(L, "luv");
    lua_getfield(L, -3, "cpath");
    lua_call(L, 2, 1);
    if (lua_isstring(L, -1)) {
      path = lua_tostring(L, -1);
      void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
      if (h != NULL) fn = dlsym(h, "luv_loop");
    }
  }
  if (fn == NULL) luaL_error(L, "springrun.core: luv module %s has no luv_loop", path);
  *(void **)&luv_loop_ptr = fn;
  lua_settop(L, top);
}

#define LSR_BUF_MT "springrun.buf"

static int buf_gc(lua_State *L) {
  sr_buf_free((sr_buf_t *)luaL_checkudata(L, 1, LSR_BUF_MT));
  return 0;
}

sr_buf_t *lsr_push_buf(lua_State *L) {
  sr_buf_t *b = (sr_buf_t *)lua_newuserdatauv(L, sizeof(*b), 0);
  sr_buf_init(b);
  luaL_setmetatable(L, LSR_BUF_MT);
  return b;
}

int luaopen_springrun_core(lua_State *L);

int luaopen_springrun_core(lua_State *L) {
  if (luaL_newmetatable(L, LSR_BUF_MT)) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luv");
  lua_call(L, 1, 0);
  find_luv_loop(L);

  lua_newtable(L);
  lua_pushliteral(L, SR_VERSION);
  lua_setfield(L, -2, "version");
  lsr_open_wire(L);
  lsr_open_json(L);
  lsr_open_serpent(L);
  lsr_open_container(L);
  lsr_open_daemon(L);
  lsr_open_client(L);
  lsr_open_tls(L);
  lsr_open_task(L);
  lsr_open_serve(L);
  lsr_open_http(L);
  lsr_open_hessian(L);
  return 1;
}
