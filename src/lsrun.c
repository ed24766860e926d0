/*
 * lsrun.c -- luaopen_springrun_core: builds the `springrun.core` module from
 * the binding parts (lsr_*.c). luv is required first so that its loop exists
 * (luv_loop(L)) before any part that needs it is opened.
 */
#include "lsr.h"
#include "sr.h"

int luaopen_springrun_core(lua_State *L);

int luaopen_springrun_core(lua_State *L) {
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
  return 1;
}
