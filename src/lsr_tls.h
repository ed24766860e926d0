/*
 * lsr_tls.h -- TLS contexts as Lua values (lsr_tls.c), shared by the daemon
 * binding (exporters) and the client (proxies).
 */
#ifndef LSR_TLS_H
#define LSR_TLS_H

#include "lsr.h"
#include "tls.h"

/* The context in the tls_context userdata at idx (raises when it is not one). */
sr_tls_ctx_t *lsr_tls_checkctx(lua_State *L, int idx);

/* The context at idx, or NULL when that value is nil/none. */
sr_tls_ctx_t *lsr_tls_optctx(lua_State *L, int idx);

void lsr_open_tls(lua_State *L);

#endif
