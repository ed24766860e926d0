/*
 * lsrun.c -- luaopen_springrun_core: builds the `springrun.core` module from
 * the binding parts (lsr_*.c). luv is required first so that its loop exists
 * (luv_loop(L)) before any part that needs it is opened.
 */
#include "lsr.h"
#include "sr.h"

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
  lsr_open_hessian(L);
  return 1;
}
