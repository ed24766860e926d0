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

#include "wire.h"

/* Each adds its functions/constants to the table at the top of the stack. */
void lsr_open_wire(lua_State *L);      /* lsr_wire.c: Pyro4 frames */
void lsr_open_json(lua_State *L);      /* lsr_json.c: JSON payloads */
void lsr_open_serpent(lua_State *L);   /* lsr_serpent.c: serpent payloads */
void lsr_open_container(lua_State *L); /* lsr_container.c: IoC core */
void lsr_open_daemon(lua_State *L);    /* lsr_daemon.c: the daemon thread */
void lsr_open_client(lua_State *L);    /* lsr_client.c: proxy connections */
void lsr_open_tls(lua_State *L);       /* lsr_tls.c: TLS contexts and sessions */
void lsr_open_task(lua_State *L);      /* lsr_task.c: task coroutines */
void lsr_open_serve(lua_State *L);     /* lsr_serve.c: the server's dispatch */
void lsr_open_http(lua_State *L);      /* lsr_http.c: HTTP client (libcurl on luv) */
void lsr_open_hessian(lua_State *L);   /* lsr_hessian.c: Hessian values and envelopes */

/* lsr_daemon_events.c: encodes the value at idx as the RESULT of request
 * `tag` (slot << 16 | seq, as the handler got it) on connection conn and
 * hands it to the daemon; plain: counted as answered without a Lua
 * function. Returns 0 or an SR_E* code with err set (nothing sent then). */
int lsr_daemon_result(lua_State *L, int idx, uint64_t conn, lua_Integer tag, uint16_t ser,
                      uint16_t flags, int plain, char *err, size_t errlen);

/* Pushes a userdata owning one (empty) sr_buf_t and returns the buffer: a
 * function that fills a buffer and then pushes its bytes (lua_pushlstring,
 * which raises when memory runs out) keeps it there, so the error cannot
 * leak it; the userdata's __gc frees it (sr_buf_free right after the push
 * gives the memory back at once). lsrun.c. */
sr_buf_t *lsr_push_buf(lua_State *L);

/* Sets type, flags, seq and serializer of h on the table at the top of the
 * stack (the message tables of core.wire_decode and of proxy replies). */
void lsr_set_msg_head(lua_State *L, const sr_wire_header_t *h); /* lsr_wire.c */

/* luv's loop (luv_loop of the loaded luv module; lsrun.c). */
struct uv_loop_s *lsr_luv_loop(lua_State *L);

/* A message handler for lua_pcall: the error as text (its __tostring, or
 * "(error object is a <type> value)") with a traceback. Inline: the CLI
 * (main.c, not linked with the module) uses it too. */
static inline int lsr_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

#endif
