/*
 * lsr.h -- the Lua binding of the C core. Each lsr_*.c file exposes one part
 * of the core and registers its functions into the module table that
 * luaopen_springrun_core (lsrun.c) leaves on top of the stack. These are the
 * only files that include lua.h.
 */
#ifndef SR_LSR_H
#define SR_LSR_H

#include <lauxlib.h>
#include <lua.h>

/* Each adds its functions/constants to the table at the top of the stack. */
void lsr_open_wire(lua_State *L);      /* lsr_wire.c: Pyro4 frames */
void lsr_open_json(lua_State *L);      /* lsr_json.c: JSON payloads */
void lsr_open_serpent(lua_State *L);   /* lsr_serpent.c: serpent payloads */
void lsr_open_container(lua_State *L); /* lsr_container.c: IoC core */
void lsr_open_daemon(lua_State *L);    /* lsr_daemon.c: daemon holder thread */
void lsr_open_client(lua_State *L);    /* lsr_client.c: proxy connections */
void lsr_open_tls(lua_State *L);       /* lsr_tls.c: TLS contexts and sessions */

#endif
