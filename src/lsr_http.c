/*
 * lsr_http.c -- springrun.core's HTTP client: the Lua side of http.c
 * (libcurl's multi-socket interface on luv's loop). One client per Lua
 * state, made when the module opens, kept in the registry; its finalizer
 * (created after luv's loop, so run before the loop's) stops whatever is
 * still in flight and closes its handles. lua/springrun/http.lua builds the
 * public API (blocking outside tasks, yielding inside) on this.
 *
 *   core.http_start(opts, on_event) -> req | nil, msg, code
 *       opts = { url =, method = "GET", headers = {"Name: value", ...},
 *                body = string, connect_timeout = s, timeout = s,
 *                max_size = bytes, stream = bool, cafile =, capath =,
 *                certfile =, keyfile =, verify = bool (default true) }
 *       on_event(req, "data", chunk)                    (stream only)
 *       on_event(req, "done", status, headers, body)    (body "" if stream)
 *       on_event(req, "error", code, message, os_code)
 *           code: "CURLE_COULDNT_CONNECT", ... (curl's names), or
 *           "SR_ELIMIT" (the body passed max_size) / "SR_ENOMEM";
 *           os_code: "ECONNREFUSED", ... or nil
 *       headers: { ["content-type"] = "text/plain", ... } (names in lower
 *       case; a repeated header's values joined with ", ")
 *       on_event runs on luv's loop (from a libuv callback, through the one
 *       pcall-with-traceback helper call_lua; an error is printed, never
 *       raised into the loop); after "done" or "error" nothing more comes.
 *       Misuse (a bad option) raises.
 *   req:cancel() -> true (it was in flight: stopped, no event follows)
 *       | false (already done or cancelled). Also __gc and __close.
 *   core.http_pending() -> number of requests in flight
 *   core.http_scan(bytes [, step [, max_head, max_path, max_body]]) -> list
 *       The HTTP listeners' request reader (http_req.c) over bytes, fed in
 *       pieces of step bytes (0 or none: whole; limits default to the
 *       daemon's: 16 KiB, 1024, 64 MiB): one string per request read,
 *       "METHOD path keep-alive|close <body bytes>", and a last "refused
 *       <status> <text>" when they end in a refusal. For the fuzz corpus
 *       replay (spec/fuzz_corpus_spec.lua).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_req.h"
#include "lsr.h"

#define LSR_HTTP_MT "springrun.http.req"
#define LSR_HTTP_CLIENT "springrun.http.client"
#define LSR_HTTP_MAX_HEADERS 256

typedef struct {
  sr_http_multi_t m;
  lua_State *L; /* main thread of the state that owns the client */
  int dispatching;
  lua_Integer pending;
} lsr_http_t;

typedef struct {
  sr_http_req_t r; /* first: an sr_http_req_t pointer is the struct pointer */
  lsr_http_t *h;
  int self_ref; /* keeps the userdata alive while in flight */
  int cb_ref;
} lsr_http_req_t;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* The one way C calls Lua here: function and nargs arguments on top of L;
 * runs it protected with a traceback; an error is printed to stderr (the
 * callbacks are springrun's own; a failure is a bug to see, not to raise
 * through libuv). Pops everything it was given. */
static void call_lua(lua_State *L, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lua_pushcfunction(L, lsr_traceback);
  lua_insert(L, fn);
  if (lua_pcall(L, nargs, 0, fn) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "springrun.http: callback failed: %s\n", msg ? msg : "?");
    lua_pop(L, 1);
  }
  lua_remove(L, fn);
}

/* Stops tracking a request on the Lua side: drops its references. */
static void release(lua_State *L, lsr_http_req_t *q) {
  if (q->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, q->self_ref);
    q->self_ref = LUA_NOREF;
    q->h->pending--;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, q->cb_ref);
  q->cb_ref = LUA_NOREF;
}

/* Pushes the header lines of q's last response as a table. */
static void push_headers(lua_State *L, const sr_buf_t *b) {
  lua_newtable(L);
  const char *p = (const char *)b->data, *end = p + b->len;
  luaL_Buffer name;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    const char *le = eol ? eol : end;
    if (le > p && le[-1] == '\r') le--;
    const char *colon = memchr(p, ':', (size_t)(le - p));
    if (colon && colon > p && !(le - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
      luaL_buffinit(L, &name);
      for (const char *c = p; c < colon; c++)
        luaL_addchar(&name, (*c >= 'A' && *c <= 'Z') ? (char)(*c + 32) : *c);
      luaL_pushresult(&name);
      const char *v = colon + 1;
      while (v < le && (*v == ' ' || *v == '\t')) v++;
      const char *ve = le;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated: join */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = next;
  }
}

static const char *os_code(long e) {
  return e > 0 ? strerrorname_np((int)e) : NULL;
}

/* Hands every pending event to Lua (runs protected, see ready_cb). Each
 * round rescans the list: a callback may start, cancel or finish any
 * request. Every round consumes an event, so it ends. */
static int deliver_all(lua_State *L) {
  lsr_http_t *h = (lsr_http_t *)lua_touserdata(L, 1);
  for (;;) {
    sr_http_req_t *r = h->m.reqs;
    while (r && !(r->stream && r->data.len > 0) && !r->finished) r = r->next;
    if (r == NULL) break;
    lsr_http_req_t *q = (lsr_http_req_t *)r;
    lua_rawgeti(L, LUA_REGISTRYINDEX, q->cb_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, q->self_ref);
    if (r->stream && r->data.len > 0) {
      lua_pushliteral(L, "data");
      lua_pushlstring(L, (const char *)r->data.data, r->data.len);
      r->data.len = 0;
      call_lua(L, 3);
      continue;
    }
    int nargs;
    if (r->too_large) {
      lua_pushliteral(L, "error");
      lua_pushstring(L, "SR_ELIMIT");
      lua_pushfstring(L, "response larger than max_size (%I bytes)", (lua_Integer)r->max_size);
      lua_pushnil(L);
      nargs = 5;
    } else if (r->nomem) {
      lua_pushliteral(L, "error");
      lua_pushstring(L, "SR_ENOMEM");
      lua_pushliteral(L, "out of memory");
      lua_pushnil(L);
      nargs = 5;
    } else if (r->result != CURLE_OK) {
      lua_pushliteral(L, "error");
      lua_pushstring(L, r->result == CURLE_FILESIZE_EXCEEDED ? "SR_ELIMIT" : sr_http_code_name(r->result));
      if (r->result == CURLE_FILESIZE_EXCEEDED)
        lua_pushfstring(L, "response larger than max_size (%I bytes)", (lua_Integer)r->max_size);
      else
        lua_pushstring(L, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
      const char *oc = os_code(r->os_errno);
      if (oc) lua_pushstring(L, oc); else lua_pushnil(L);
      nargs = 5;
    } else {
      lua_pushliteral(L, "done");
      lua_pushinteger(L, (lua_Integer)r->status);
      push_headers(L, &r->head);
      lua_pushlstring(L, (const char *)r->data.data, r->data.len);
      nargs = 5;
    }
    sr_http_req_free(r); /* unlinks it; the event is on the stack */
    release(L, q);
    lua_pushnil(L);
    lua_setiuservalue(L, -(nargs + 1), 1); /* the request body is no longer needed */
    call_lua(L, nargs);
  }
  return 0;
}

static void ready_cb(sr_http_multi_t *m, void *ud) {
  (void)m;
  lsr_http_t *h = (lsr_http_t *)ud;
  if (h->dispatching || h->L == NULL) return; /* the running round rescans */
  lua_State *L = h->L;
  int top = lua_gettop(L);
  h->dispatching = 1;
  lua_pushcfunction(L, deliver_all);
  lua_pushlightuserdata(L, h);
  call_lua(L, 1);
  h->dispatching = 0;
  lua_settop(L, top);
}

static lsr_http_t *client(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LSR_HTTP_CLIENT);
  lsr_http_t *h = (lsr_http_t *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (h == NULL || h->m.cm == NULL) luaL_error(L, "springrun.http: the HTTP client is closed");
  return h;
}

static const char *opt_string(lua_State *L, const char *k, size_t *len) {
  const char *s = NULL;
  int t = lua_getfield(L, 1, k);
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING) luaL_error(L, "http_start: %s must be a string, got %s", k, luaL_typename(L, -1));
    s = lua_tolstring(L, -1, len);
  }
  lua_pop(L, 1); /* the string stays alive in opts */
  return s;
}

static long opt_ms(lua_State *L, const char *k) {
  long ms = 0;
  int t = lua_getfield(L, 1, k);
  if (t != LUA_TNIL) {
    int ok;
    lua_Number s = lua_tonumberx(L, -1, &ok);
    if (!ok || s < 0 || s != s || s > 1e6) luaL_error(L, "http_start: %s must be seconds (0..1e6)", k);
    ms = s > 0 ? (long)ceil(s * 1000) : 0;
  }
  lua_pop(L, 1);
  return ms;
}

static int opt_bool(lua_State *L, const char *k, int dflt) {
  int v = dflt;
  int t = lua_getfield(L, 1, k);
  if (t != LUA_TNIL) {
    if (t != LUA_TBOOLEAN) luaL_error(L, "http_start: %s must be true or false", k);
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int l_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lsr_http_t *h = client(L);
  sr_http_opts_t o;
  memset(&o, 0, sizeof o);
  o.url = opt_string(L, "url", NULL);
  if (o.url == NULL) return luaL_error(L, "http_start: url is required");
  o.method = opt_string(L, "method", NULL);
  if (o.method) {
    for (const char *c = o.method; *c; c++)
      if (!((*c >= 'A' && *c <= 'Z') || *c == '-' || *c == '_'))
        return luaL_error(L, "http_start: method must be upper-case letters, got '%s'", o.method);
    if (*o.method == '\0') return luaL_error(L, "http_start: method is empty");
  }
  o.body = opt_string(L, "body", &o.body_len);
  o.connect_timeout_ms = opt_ms(L, "connect_timeout");
  o.timeout_ms = opt_ms(L, "timeout");
  o.stream = opt_bool(L, "stream", 0);
  o.verify = opt_bool(L, "verify", 1);
  o.cafile = opt_string(L, "cafile", NULL);
  o.capath = opt_string(L, "capath", NULL);
  o.certfile = opt_string(L, "certfile", NULL);
  o.keyfile = opt_string(L, "keyfile", NULL);
  lua_getfield(L, 1, "max_size");
  int isint;
  lua_Integer max = lua_tointegerx(L, -1, &isint);
  if (lua_isnil(L, -1)) luaL_error(L, "http_start: max_size is required");
  if (!isint || max <= 0) luaL_error(L, "http_start: max_size must be a positive integer");
  o.max_size = (size_t)max;
  lua_pop(L, 1);
  /* header lines: pointers into the strings of opts.headers */
  const char **lines = NULL;
  if (lua_getfield(L, 1, "headers") != LUA_TNIL) {
    if (!lua_istable(L, -1)) return luaL_error(L, "http_start: headers must be a list of strings");
    lua_Integer n = luaL_len(L, -1);
    if (n > LSR_HTTP_MAX_HEADERS) return luaL_error(L, "http_start: more than %d headers", LSR_HTTP_MAX_HEADERS);
    lines = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
      size_t len;
      if (lua_rawgeti(L, -2, i) != LUA_TSTRING) return luaL_error(L, "http_start: headers[%I] must be a string", i);
      const char *s = lua_tolstring(L, -1, &len);
      if (strlen(s) != len || strpbrk(s, "\r\n") || !strchr(s, ':'))
        return luaL_error(L, "http_start: headers[%I] must be one 'Name: value' line", i);
      lines[i - 1] = s;
      lua_pop(L, 1);
    }
    lines[n] = NULL;
  }
  o.headers = lines;
  lsr_http_req_t *q = (lsr_http_req_t *)lua_newuserdatauv(L, sizeof *q, 1);
  memset(q, 0, sizeof *q);
  q->self_ref = q->cb_ref = LUA_NOREF;
  q->h = h;
  luaL_setmetatable(L, LSR_HTTP_MT);
  char err[256];
  int rc = sr_http_req_start(&h->m, &q->r, &o, err, sizeof err);
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    lua_pushstring(L, sr_err_name(rc));
    return 3;
  }
  if (o.body) { /* curl reads the body from the Lua string: anchor it */
    lua_getfield(L, 1, "body");
    lua_setiuservalue(L, -2, 1);
  }
  lua_pushvalue(L, 2);
  q->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  q->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  h->pending++;
  return 1;
}

/* Stops q if it is in flight; true if it was. */
static int req_stop(lua_State *L, lsr_http_req_t *q) {
  int was = q->self_ref != LUA_NOREF;
  sr_http_req_free(&q->r);
  if (q->h) release(L, q);
  return was;
}

static int l_cancel(lua_State *L) {
  lsr_http_req_t *q = (lsr_http_req_t *)luaL_checkudata(L, 1, LSR_HTTP_MT);
  lua_pushboolean(L, req_stop(L, q));
  return 1;
}

static int l_req_gc(lua_State *L) {
  lsr_http_req_t *q = (lsr_http_req_t *)luaL_checkudata(L, 1, LSR_HTTP_MT);
  req_stop(L, q);
  return 0;
}

static int l_pending(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LSR_HTTP_CLIENT);
  lsr_http_t *h = (lsr_http_t *)lua_touserdata(L, -1);
  lua_pushinteger(L, h ? h->pending : 0);
  return 1;
}

static int l_client_gc(lua_State *L) {
  lsr_http_t *h = (lsr_http_t *)lua_touserdata(L, 1);
  h->L = NULL; /* nothing reaches Lua any more */
  sr_http_multi_close(&h->m);
  return 0;
}

#define LSR_HREQ_MT "springrun.http.scan"

static int l_hreq_gc(lua_State *L) {
  sr_hreq_free(luaL_checkudata(L, 1, LSR_HREQ_MT));
  return 0;
}

static int l_scan(lua_State *L) {
  size_t n;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &n);
  lua_Integer step = luaL_optinteger(L, 2, 0);
  lua_Integer max_head = luaL_optinteger(L, 3, 16 * 1024);
  lua_Integer max_path = luaL_optinteger(L, 4, SR_HREQ_PATH_CAP);
  lua_Integer max_body = luaL_optinteger(L, 5, 64 << 20);
  luaL_argcheck(L, step >= 0, 2, "must be >= 0");
  luaL_argcheck(L, max_head >= 0 && max_path >= 0 && max_body >= 0, 3, "limits must be >= 0");
  sr_hreq_t *h = lua_newuserdatauv(L, sizeof *h, 0);
  sr_hreq_init(h, (size_t)max_head, (size_t)max_path, (size_t)max_body);
  luaL_setmetatable(L, LSR_HREQ_MT); /* frees the body, even on an error */
  lua_newtable(L);
  int k = 0;
  size_t off = 0;
  while (off < n) {
    size_t len = step == 0 || n - off < (size_t)step ? n - off : (size_t)step;
    const uint8_t *q = p + off;
    off += len;
    while (len > 0) {
      size_t used = 0;
      int rc = sr_hreq_feed(h, q, len, &used);
      q += used;
      len -= used;
      if (rc == SR_HREQ_DONE) {
        lua_pushfstring(L, "%s %s %s %d", sr_hreq_method(h), h->path,
                        h->keep_alive ? "keep-alive" : "close", (int)h->body.len);
      } else if (rc == SR_HREQ_REFUSED) {
        lua_pushfstring(L, "refused %d %s", h->status, h->text);
      } else if (rc == SR_HREQ_NOMEM) {
        lua_pushliteral(L, "refused 0 out of memory");
      } else {
        break;
      }
      lua_rawseti(L, -2, ++k);
      if (rc < 0) {
        off = n;
        break;
      }
    }
  }
  return 1;
}

static const luaL_Reg req_methods[] = {
  { "cancel", l_cancel },
  { NULL, NULL },
};

static const luaL_Reg funcs[] = {
  { "http_start", l_start },
  { "http_pending", l_pending },
  { "http_scan", l_scan },
  { NULL, NULL },
};

void lsr_open_http(lua_State *L) {
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK) luaL_error(L, "springrun.core: curl_global_init failed");
  if (luaL_newmetatable(L, LSR_HTTP_MT)) {
    luaL_newlib(L, req_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_req_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_req_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LSR_HREQ_MT)) {
    lua_pushcfunction(L, l_hreq_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LSR_HTTP_CLIENT) != LUA_TNIL) { /* opened again */
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lsr_http_t *h = (lsr_http_t *)lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  if (sr_http_multi_init(&h->m, lsr_luv_loop(L), ready_cb, h) < 0) luaL_error(L, "springrun.core: out of memory");
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  h->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_client_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LSR_HTTP_CLIENT);
}
