/*
 * lsr_tls.c -- springrun.core's TLS values: a context made from certificate
 * and CA files (shared by every connection of an exporter or a proxy), and
 * a session object that drives the TLS engine (tls.c) from Lua, for the
 * proxy's luv task path: luv moves the ciphertext, this moves plaintext.
 *
 *   core.tls_context{ server = bool, certfile =, keyfile =, cafile =,
 *                     verify = bool }          -> ctx | nil, msg, code
 *       server: certfile required; verify = require and check client
 *       certificates against cafile (mutual TLS).
 *       client: verify (default true) checks the server's chain against
 *       cafile (or the system store) and its name; certfile/keyfile: the
 *       client certificate for mutual TLS.
 *   ctx:session([servername]) -> s | nil, msg, code   (client: servername is
 *       the host name or IP address the certificate must name)
 *   s:feed(ciphertext) -> plaintext ("" when none yet) [, msg, code]
 *       (drives the handshake). msg/code when the session ended or failed
 *       ("SR_ECLOSED" on close_notify, "SR_ETLS"): the plaintext that came
 *       before is still returned first.
 *   s:handshake() -> true (complete) | false (needs peer bytes) | nil, msg, code
 *   s:write(plaintext) -> true | nil, msg, code
 *   s:take() -> ciphertext to send ("" when none)
 *   s:established() -> boolean;  s:close_notify();  s:free() (also __gc)
 *
 * And the handshake-secret scan of the daemon thread (auth.c), for specs and
 * the fuzz corpus replay:
 *   core.handshake_value(ser, payload) -> string (the CONNECT payload's
 *       "handshake" is that string) | false (present, not a string)
 *       | nil, msg, code ("SR_ENOTFOUND": no "handshake" key; else unreadable)
 */
#include <string.h>

#include "auth.h"
#include "lsr_tls.h"

#define LSR_TLSCTX_MT "springrun.tls_context"
#define LSR_TLSSESS_MT "springrun.tls_session"

typedef struct {
  sr_tls_ctx_t *ctx;
} lsr_tlsctx_t;

typedef struct {
  sr_tls_t *t;
} lsr_tlssess_t;

static int fail(lua_State *L, int code, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, sr_err_name(code));
  return 3;
}

sr_tls_ctx_t *lsr_tls_checkctx(lua_State *L, int idx) {
  lsr_tlsctx_t *u = (lsr_tlsctx_t *)luaL_checkudata(L, idx, LSR_TLSCTX_MT);
  if (u->ctx == NULL) luaL_argerror(L, idx, "TLS context is freed");
  return u->ctx;
}

sr_tls_ctx_t *lsr_tls_optctx(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  return lsr_tls_checkctx(L, idx);
}

static const char *opt_field(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "tls_context: %s must be a file name", k);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1); /* the string stays alive in the table */
  return s;
}

static int l_context(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  sr_tls_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  lua_getfield(L, 1, "server");
  cfg.server = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "verify");
  cfg.verify_peer = lua_isnil(L, -1) ? !cfg.server : lua_toboolean(L, -1);
  lua_pop(L, 1);
  cfg.certfile = opt_field(L, 1, "certfile");
  cfg.keyfile = opt_field(L, 1, "keyfile");
  cfg.cafile = opt_field(L, 1, "cafile");
  lsr_tlsctx_t *u = (lsr_tlsctx_t *)lua_newuserdatauv(L, sizeof *u, 0);
  u->ctx = NULL;
  luaL_setmetatable(L, LSR_TLSCTX_MT);
  char err[600];
  int rc = sr_tls_ctx_new(&u->ctx, &cfg, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  return 1;
}

static int ctx_gc(lua_State *L) {
  lsr_tlsctx_t *u = (lsr_tlsctx_t *)luaL_checkudata(L, 1, LSR_TLSCTX_MT);
  sr_tls_ctx_unref(u->ctx);
  u->ctx = NULL;
  return 0;
}

static int ctx_session(lua_State *L) {
  sr_tls_ctx_t *ctx = lsr_tls_checkctx(L, 1);
  const char *name = luaL_optstring(L, 2, NULL);
  lsr_tlssess_t *s = (lsr_tlssess_t *)lua_newuserdatauv(L, sizeof *s, 0);
  s->t = NULL;
  luaL_setmetatable(L, LSR_TLSSESS_MT);
  char err[300];
  int rc = sr_tls_new(&s->t, ctx, name, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  return 1;
}

static sr_tls_t *check_sess(lua_State *L) {
  lsr_tlssess_t *s = (lsr_tlssess_t *)luaL_checkudata(L, 1, LSR_TLSSESS_MT);
  if (s->t == NULL) luaL_error(L, "TLS session is closed");
  return s->t;
}

static int sess_free(lua_State *L) {
  lsr_tlssess_t *s = (lsr_tlssess_t *)luaL_checkudata(L, 1, LSR_TLSSESS_MT);
  sr_tls_free(s->t);
  s->t = NULL;
  return 0;
}

static int sess_feed(lua_State *L) {
  sr_tls_t *t = check_sess(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  if (sr_tls_feed(t, (const uint8_t *)p, n) < 0) return fail(L, SR_ENOMEM, "out of memory");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char err[300];
  for (;;) {
    size_t got = 0;
    char *dst = luaL_prepbuffer(&b);
    int rc = sr_tls_read(t, (uint8_t *)dst, LUAL_BUFFERSIZE, &got, err, sizeof err);
    if (rc < 0) {
      luaL_pushresult(&b);
      lua_pushstring(L, err);
      lua_pushstring(L, sr_err_name(rc));
      return 3;
    }
    if (got == 0) break;
    luaL_addsize(&b, got);
  }
  luaL_pushresult(&b);
  return 1;
}

static int sess_handshake(lua_State *L) {
  sr_tls_t *t = check_sess(L);
  char err[300];
  int rc = sr_tls_handshake(t, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, rc == 1);
  return 1;
}

static int sess_write(lua_State *L) {
  sr_tls_t *t = check_sess(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  char err[300];
  int rc = sr_tls_write(t, (const uint8_t *)p, n, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int sess_take(lua_State *L) {
  sr_tls_t *t = check_sess(L);
  size_t n = sr_tls_pending(t);
  luaL_Buffer b;
  char *dst = luaL_buffinitsize(L, &b, n);
  size_t got = sr_tls_take_raw(t, (uint8_t *)dst, n);
  luaL_pushresultsize(&b, got);
  return 1;
}

static int sess_established(lua_State *L) {
  lua_pushboolean(L, sr_tls_established(check_sess(L)));
  return 1;
}

static int sess_close_notify(lua_State *L) {
  sr_tls_close(check_sess(L));
  return 0;
}

static const luaL_Reg ctx_methods[] = {
  { "session", ctx_session },
  { NULL, NULL },
};

static const luaL_Reg sess_methods[] = {
  { "feed", sess_feed },
  { "handshake", sess_handshake },
  { "write", sess_write },
  { "take", sess_take },
  { "established", sess_established },
  { "close_notify", sess_close_notify },
  { "free", sess_free },
  { NULL, NULL },
};

static int l_handshake_value(lua_State *L) {
  lua_Integer ser = luaL_checkinteger(L, 1);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  sr_buf_t *out = lsr_push_buf(L);
  char err[256];
  err[0] = '\0';
  int rc = sr_handshake_value((int)ser, (const uint8_t *)p, n, out, err, sizeof err);
  if (rc == 1) lua_pushlstring(L, out->data ? (const char *)out->data : "", out->len);
  sr_buf_free(out);
  if (rc == 1) return 1;
  if (rc == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return fail(L, rc, rc == SR_ENOTFOUND ? "the handshake has no \"handshake\" key" : err);
}

void lsr_open_tls(lua_State *L) {
  if (luaL_newmetatable(L, LSR_TLSCTX_MT)) {
    luaL_newlib(L, ctx_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LSR_TLSSESS_MT)) {
    luaL_newlib(L, sess_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sess_free);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sess_free);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_context);
  lua_setfield(L, -2, "tls_context");
  lua_pushcfunction(L, l_handshake_value);
  lua_setfield(L, -2, "handshake_value");
}
