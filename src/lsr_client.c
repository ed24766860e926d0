/*
 * lsr_client.c -- the Lua binding of the blocking client connection
 * (client.c): a userdata per connection, messages encoded straight from the
 * Lua stack into its output buffer and replies decoded onto the stack. What
 * to send and what a reply means is lua/springrun/session.lua's, with one
 * exception made for speed: conn:invoke and conn:connect_invoke recognise
 * the plain RESULT of the call they sent (that message type, sequence
 * number and serializer, no exception or item-stream flag) and return just
 * its value, so the common call builds no message table; every other reply
 * comes back as the ordinary message table for session.lua to judge.
 *
 * Lua API (in springrun.core):
 *   client_connect(host, port [, timeout [, tls_ctx [, servername]]])
 *       -> conn | nil, msg, code
 *       tls_ctx: core.tls_context{...} (client): the connection is TLS, the
 *       handshake done here within the timeout; servername (default host) is
 *       the name/address the server certificate must carry.
 *   client_texts -> { name = format }: the transport's error texts
 *       (client.h), which the luv transport formats too.
 *   conn:push(type, flags, seq, ser, value [, raw]) -> true | nil, msg, code
 *       encodes one message and queues it (raw: value is the payload already
 *       encoded, a string); an argument that cannot be encoded queues
 *       nothing. The next receive/request/invoke sends everything queued in
 *       one write.
 *   conn:receive([timeout [, noreply [, known]]])
 *       -> msg | true (noreply: only the queued bytes are sent)
 *        | nil, msg, code, sent   (the connection is closed)
 *       sends what is queued (failing with sent = false, code SR_ECLOSED,
 *       when the peer closed the connection or spoke unasked meanwhile),
 *       then reads the next message:
 *       msg = { type=, flags=, seq=, serializer=,
 *               ann = {KEY = bytes} (only when the message has annotations),
 *               value = <decoded payload> (JSON or serpent)
 *               | data = <raw bytes> (other serializers, e.g. marshal) }
 *       known: a string: when the payload is exactly these bytes it is not
 *       decoded and msg has same = true instead of value; true: msg also has
 *       raw = the payload bytes (to pass as known later).
 *   conn:request(type, flags, seq, ser, value [, timeout [, corr]])
 *       push(...) then receive(timeout, flags & ONEWAY); an argument that
 *       cannot be encoded fails with sent = false, the connection kept.
 *       corr: 16 bytes sent as the CORR annotation (the correlation id).
 *   conn:invoke(seq, object, method, timeout, args...)
 *       -> true, value | msg | nil, msg, code, sent
 *       the JSON INVOKE of method(args...) (a last argument marked as
 *       springrun.kwargs goes as the keyword arguments), encoded from the
 *       stack, sent, its reply read: true, value for the plain RESULT of
 *       the call (a top-level null is core.null), msg for any other reply.
 *       The texts of arguments that cannot be encoded are those of the
 *       whole payload's encoding (" at params[2]").
 *   conn:invoke_oneway(seq, object, method, timeout, args...)
 *       -> true | nil, msg, code, sent
 *       the same INVOKE with FLAGS_ONEWAY, sent; no reply is read.
 *   conn:connect_invoke(cseq, cbytes, known, seq, object, method, timeout, args...)
 *       -> true, value | hmsg [, msg] | nil, msg, code, sent, stage
 *       the first call of a new connection with its handshake: the CONNECT
 *       (JSON, metadata asked for, sequence cseq, payload cbytes already
 *       encoded) and the INVOKE as conn:invoke's leave in one write; hmsg is
 *       the first answer as receive(timeout, false, known) returns it; only
 *       when it is the CONNECTOK `known` (hmsg.same) is the call's reply read
 *       too (true, value for a plain result, else msg). stage of a failure:
 *       "connect" (before the first answer) or "result".
 *   conn:close()             (idempotent; also __gc and __close)
 *   conn:fileno() -> fd | -1
 *   client_encode_payload(ser, value) -> bytes | nil, msg, code
 *   client_decode_payload(ser, flags, bytes) -> true, value | nil, msg, code
 *       (inflates when flags has FLAG_COMPRESSED)
 *   client_fd_alive(fd) -> boolean  (an idle socket owned elsewhere, the luv
 *       connection's, can carry a request: see sr_client_fd_idle)
 * codes: "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "EHOSTUNREACH", ... for
 * the OS; "SR_ETIMEOUT", "SR_ECLOSED", "SR_E<...>" (sr.h) for the rest.
 * timeout is in seconds (a number); nil, 0 or negative means no limit.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "json.h"
#include "lsr.h"
#include "lsr_codec.h"
#include "lsr_tls.h"
#include "payload.h"
#include "sr.h"
#include "wire.h"

#define LSR_CONN_MT "springrun.client.conn"
/* The metatable of springrun.kwargs{...} tables (core.kwargs_mt): a call's
 * last argument carrying it is sent as the INVOKE's kwargs. */
#define LSR_KWARGS_MT "springrun.kwargs"

typedef struct lsr_conn_s {
  sr_client_t c;
  sr_buf_t tmp; /* inflated payload (reused) */
  /* conn:invoke's last payload head, {"object": .., "method": .., "params": [,
   * for the object and method names in key (on + mn bytes) */
  size_t key_on, key_mn, head_len;
  char key[96];
  char head[256];
} lsr_conn_t;

/* ---- small helpers -------------------------------------------------------- */

static double opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  double t = luaL_checknumber(L, idx);
  return t > 0 ? t : 0;
}

/* pushes nil, msg, code; returns 3 */
static int push_fail(lua_State *L, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

/* pushes the transport failure e as nil, msg, code, sent; returns 4 */
static int push_client_fail(lua_State *L, const sr_client_err_t *e) {
  push_fail(L, e->msg, e->code);
  lua_pushboolean(L, e->sent);
  return 4;
}

/* Decodes a payload (inflating through `tmp` when compressed) and pushes the
 * value. Returns 0 or an SR_E* code (nothing pushed). */
static int decode_payload(lua_State *L, int ser, int flags, const uint8_t *p, size_t n,
                          sr_buf_t *tmp, char *err, size_t errlen) {
  if (flags & SR_FLAG_COMPRESSED) {
    int rc = sr_wire_inflate(tmp, p, n, SR_WIRE_DEFAULT_MAX_MESSAGE, err, errlen);
    if (rc != 0) return rc;
    p = tmp->data;
    n = tmp->len;
  }
  sr_decode_limits_t lim = {SR_DECODE_DEFAULT_DEPTH, SR_DECODE_DEFAULT_ELEMENTS};
  return lsr_payload_decode(L, ser, p, n, &lim, err, errlen);
}

/* ---- the connection userdata --------------------------------------------- */

static lsr_conn_t *check_conn(lua_State *L) {
  return (lsr_conn_t *)luaL_checkudata(L, 1, LSR_CONN_MT);
}

static void conn_release(lsr_conn_t *c) {
  sr_client_close(&c->c);
  sr_buf_free(&c->tmp);
}

/* close(), __gc, __close: idempotent. */
static int lsr_conn_close(lua_State *L) {
  conn_release(check_conn(L));
  return 0;
}

static int lsr_conn_fileno(lua_State *L) {
  lua_pushinteger(L, check_conn(L)->c.fd);
  return 1;
}

static int lsr_conn_tostring(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  if (c->c.fd < 0) lua_pushliteral(L, "springrun.client.conn (closed)");
  else lua_pushfstring(L, "springrun.client.conn (fd %d)", c->c.fd);
  return 1;
}

static int lsr_client_fd_alive(lua_State *L) {
  lua_pushboolean(L, sr_client_fd_idle((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* client_connect(host, port [, timeout [, tls_ctx [, servername]]]) -> conn | nil, msg, code */
static int lsr_client_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_argcheck(L, port >= 1 && port <= 65535, 2, "port must be 1..65535");
  double timeout = opt_timeout(L, 3);
  sr_tls_ctx_t *tctx = lsr_tls_optctx(L, 4);
  luaL_argcheck(L, tctx == NULL || !sr_tls_ctx_is_server(tctx), 4, "a client TLS context is needed");
  const char *servername = luaL_optstring(L, 5, host);
  lsr_conn_t *c = (lsr_conn_t *)lua_newuserdatauv(L, sizeof(*c), 0);
  memset(c, 0, sizeof *c);
  c->c.fd = -1;
  luaL_setmetatable(L, LSR_CONN_MT);
  sr_client_err_t e;
  if (sr_client_connect(&c->c, host, (int)port, timeout, tctx, servername, &e) != 0)
    return push_fail(L, e.msg, e.code);
  return 1;
}

/* True when m's payload may hold a class dict ({"__class__": ...}: a Pyro4
 * Proxy to rebuild, see springrun.refs): the msg path then tells (classes =
 * true); compressed payloads are not looked into and count as maybe. */
static int has_class(const sr_wire_msg_t *m) {
  if (m->h.flags & SR_FLAG_COMPRESSED) return 1;
  return sr_payload_may_have_class(m->data, m->h.data_len);
}

/* Pushes the msg table for a framed reply (decoding the payload). Returns 0
 * or an SR_E* decode error (err set, nothing pushed). */
static int push_reply(lua_State *L, lsr_conn_t *c, const sr_wire_msg_t *m, int known_idx,
                      char *err, size_t errlen) {
  int ser = m->h.serializer;
  int decodable = ser == SR_SER_JSON || ser == SR_SER_SERPENT;
  int same = 0, keep = 0;
  if (known_idx > 0) {
    if (lua_type(L, known_idx) == LUA_TSTRING) {
      size_t kn;
      const char *k = lua_tolstring(L, known_idx, &kn);
      same = kn == m->h.data_len && (kn == 0 || memcmp(k, m->data, kn) == 0);
    } else {
      keep = lua_toboolean(L, known_idx);
    }
  }
  if (same) decodable = 0; /* the caller has the value already */
  if (decodable) {
    int rc = decode_payload(L, ser, m->h.flags, m->data, m->h.data_len, &c->tmp, err, errlen);
    if (rc != 0) return rc;
  }
  lua_createtable(L, 0, 6);
  if (same) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "same");
  } else if (decodable) {
    lua_rotate(L, -2, 1); /* value above the table */
    lua_setfield(L, -2, "value");
    if (keep) {
      lua_pushlstring(L, (const char *)m->data, m->h.data_len);
      lua_setfield(L, -2, "raw");
    }
  } else {
    lua_pushlstring(L, (const char *)m->data, m->h.data_len);
    lua_setfield(L, -2, "data");
  }
  lsr_set_msg_head(L, &m->h);
  if (has_class(m)) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "classes");
  }
  if (m->h.ann_len > 0) {
    lua_newtable(L);
    size_t off = 0;
    sr_wire_ann_t a;
    while (sr_wire_ann_next(m->ann, m->h.ann_len, &off, &a) == 1) {
      lua_pushlstring(L, a.key, 4);
      lua_pushlstring(L, (const char *)a.value, a.len);
      lua_settable(L, -3);
    }
    lua_setfield(L, -2, "ann");
  }
  return 0;
}

/* Encodes the message whose type, flags, seq and serializer are at stack
 * slots 2..5 and value at slot 6 (raw: a string holding the encoded
 * payload) and queues it. Returns 0, or an SR_E* code with err set and
 * nothing queued (an argument that cannot be encoded). */
static int queue_message(lua_State *L, lsr_conn_t *c, int raw, int corr_idx, lua_Integer *flags_out,
                         char *err, size_t errlen) {
  lua_Integer type = luaL_checkinteger(L, 2);
  lua_Integer flags = luaL_checkinteger(L, 3);
  lua_Integer seq = luaL_checkinteger(L, 4);
  lua_Integer ser = luaL_checkinteger(L, 5);
  luaL_checkany(L, 6);
  luaL_argcheck(L, type >= 0 && type <= 0xffff, 2, "message type out of range");
  luaL_argcheck(L, flags >= 0 && flags <= 0xffff, 3, "flags out of range");
  luaL_argcheck(L, seq >= 0 && seq <= 0xffff, 4, "seq out of range");
  luaL_argcheck(L, ser >= 0 && ser <= 0xffff, 5, "serializer out of range");
  *flags_out = flags;
  if (c->c.fd < 0) {
    snprintf(err, errlen, "%s", sr_client_text(SR_CLIENT_T_CLOSED));
    return SR_ECLOSED;
  }
  const char *bytes = NULL;
  size_t nbytes = 0;
  if (raw) bytes = luaL_checklstring(L, 6, &nbytes);
  size_t ncorr = 0;
  const char *corr = corr_idx && !lua_isnoneornil(L, corr_idx) ? luaL_checklstring(L, corr_idx, &ncorr)
                                                                 : NULL;
  luaL_argcheck(L, corr == NULL || ncorr == 16, corr_idx, "correlation id must be 16 bytes");
  /* the payload is encoded in place behind room for its header (no copy) */
  size_t start = sr_client_begin(&c->c);
  int rc = start == (size_t)-1 ? SR_ENOMEM : 0;
  size_t ann_len = 0;
  if (rc == 0 && corr) { /* the CORR annotation: key, length, the 16 uuid bytes */
    ann_len = 6 + 16;
    rc = sr_buf_append(&c->c.out, "CORR\0\x10", 6);
    if (rc == 0) rc = sr_buf_append(&c->c.out, corr, 16);
  }
  if (rc == 0) {
    if (raw) rc = sr_buf_append(&c->c.out, bytes, nbytes);
    else rc = lsr_payload_encode(L, (int)ser, 6, &c->c.out, err, errlen);
  }
  if (rc == 0)
    rc = sr_client_commit_ann(&c->c, start, (int)type, (int)flags, (int)seq, (int)ser, ann_len);
  if (rc != 0) {
    sr_client_drop(&c->c);
    if (err[0] == '\0') snprintf(err, errlen, "%s", sr_strerror(rc));
  }
  return rc;
}

/* A reply whose JSON payload is one string (the commonest result) is
 * pushed without the general decoder's set-up: returns 1 when it pushed
 * it, 0 (nothing pushed) for anything else, a compressed payload or text
 * the decoder would refuse included (it then reports that). */
static int push_plain_string(lua_State *L, lsr_conn_t *c, const sr_wire_msg_t *m) {
  size_t n = m->h.data_len;
  const uint8_t *p = m->data;
  if ((m->h.flags & SR_FLAG_COMPRESSED) || n < 2 || p[0] != '"' || p[n - 1] != '"') return 0;
  const char *s = NULL;
  size_t slen = 0, end = 0;
  char err[8];
  if (sr_json_read_string(p, n, 0, &c->tmp, &s, &slen, &end, err, sizeof err) != 0 || end != n)
    return 0;
  lua_pushlstring(L, s, slen);
  return 1;
}

/* Pushes the reply m: with plain_seq >= 0 (invoke), the plain result of
 * that call (RESULT, that seq, JSON, neither EXCEPTION nor
 * ITEMSTREAMRESULT) as true, value; any other reply as the msg table
 * (push_reply, known_idx as conn:receive's). Returns the count pushed, or
 * the failure tuple's 4 when the payload cannot be decoded (the connection
 * is closed). */
static int push_received(lua_State *L, lsr_conn_t *c, const sr_wire_msg_t *m, int known_idx,
                         long plain_seq) {
  char err[256];
  err[0] = '\0';
  int rc, n;
  int plain = plain_seq >= 0 && m->h.type == SR_MSG_RESULT && m->h.seq == plain_seq &&
              m->h.serializer == SR_SER_JSON &&
              (m->h.flags & (SR_FLAG_EXCEPTION | SR_FLAG_ITEMSTREAMRESULT)) == 0;
  if (plain) lua_pushboolean(L, 1);
  /* one string is no class dict: its bytes need no look for "__class__" */
  if (plain && push_plain_string(L, c, m)) {
    rc = 0;
    n = 2;
  } else if (plain && !has_class(m)) {
    rc = decode_payload(L, SR_SER_JSON, m->h.flags, m->data, m->h.data_len, &c->tmp, err,
                        sizeof(err));
    if (rc != 0) lua_pop(L, 1);
    n = 2;
  } else {
    if (plain) lua_pop(L, 1);
    rc = push_reply(L, c, m, known_idx, err, sizeof(err));
    n = 1;
  }
  c->tmp.len = 0;
  if (rc != 0) {
    push_fail(L, err, sr_err_name(rc));
    conn_release(c);
    lua_pushboolean(L, 1);
    return 4;
  }
  return n;
}

/* Sends everything queued, then, unless noreply, reads and pushes the next
 * message (as push_received). Returns the count pushed. */
static int send_and_receive(lua_State *L, lsr_conn_t *c, double timeout, int noreply,
                            int known_idx, long plain_seq) {
  double deadline = sr_client_deadline(timeout);
  sr_client_err_t e;
  if (sr_client_send(&c->c, deadline, timeout, &e) != 0) return push_client_fail(L, &e);
  if (noreply) {
    lua_pushboolean(L, 1);
    return 1;
  }
  sr_wire_msg_t m;
  if (sr_client_receive(&c->c, deadline, timeout, &m, &e) != 0) return push_client_fail(L, &e);
  return push_received(L, c, &m, known_idx, plain_seq);
}

/* conn:push(type, flags, seq, ser, value [, raw]) (see the header) */
static int lsr_conn_push(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  char err[256];
  err[0] = '\0';
  lua_Integer flags = 0;
  int rc = queue_message(L, c, lua_toboolean(L, 7), 0, &flags, err, sizeof err);
  if (rc != 0) return push_fail(L, err, sr_err_name(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:receive([timeout [, noreply [, known]]]) (see the header) */
static int lsr_conn_receive(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  double timeout = opt_timeout(L, 2);
  return send_and_receive(L, c, timeout, lua_toboolean(L, 3), lua_isnoneornil(L, 4) ? 0 : 4, -1);
}

/* conn:request(type, flags, seq, ser, value [, timeout [, corr]]) (see the
 * header) */
static int lsr_conn_request(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  double timeout = opt_timeout(L, 7);
  char err[256];
  err[0] = '\0';
  lua_Integer flags = 0;
  /* Encode first: an unencodable argument fails before any byte leaves and
   * leaves the connection usable. */
  int rc = queue_message(L, c, 0, 8, &flags, err, sizeof err);
  if (rc != 0) {
    push_fail(L, err, sr_err_name(rc));
    lua_pushboolean(L, 0);
    return 4;
  }
  return send_and_receive(L, c, timeout, (flags & SR_FLAG_ONEWAY) != 0, 0, -1);
}

#define LSR_APPEND_LIT(b, lit) sr_buf_append((b), (lit), sizeof(lit) - 1)

/* Appends the JSON INVOKE payload {"object": object, "method": method,
 * "params": [args at stack slots first..last], "kwargs": {...}} to c's
 * output buffer; a last argument marked as kwargs is the kwargs (the head
 * up to the params is remembered for the next call with the same names).
 * Each argument is encoded as if the whole payload were (lsr_encode_in):
 * the same depth limit and error texts. Returns 0 or an SR_E* code (err
 * set; the buffer holds a partial payload). */
static int encode_invoke(lua_State *L, lsr_conn_t *c, const char *obj, size_t on, const char *meth,
                         size_t mn, int first, int last, char *err, size_t errlen) {
  sr_buf_t *out = &c->c.out;
  int rc;
  if (c->head_len > 0 && c->key_on == on && c->key_mn == mn && memcmp(c->key, obj, on) == 0 &&
      memcmp(c->key + on, meth, mn) == 0) {
    /* the same object and method as the last call: its head again */
    rc = sr_buf_append(out, c->head, c->head_len);
  } else {
    size_t bad = 0, start = out->len;
    rc = LSR_APPEND_LIT(out, "{\"object\": ");
    if (rc == 0) rc = sr_json_put_string(out, (const uint8_t *)obj, on, &bad);
    if (rc == 0) rc = LSR_APPEND_LIT(out, ", \"method\": ");
    if (rc == 0) rc = sr_json_put_string(out, (const uint8_t *)meth, mn, &bad);
    if (rc == 0) rc = LSR_APPEND_LIT(out, ", \"params\": [");
    c->head_len = 0;
    if (rc == 0 && on + mn <= sizeof c->key && out->len - start <= sizeof c->head) {
      memcpy(c->key, obj, on);
      memcpy(c->key + on, meth, mn);
      c->key_on = on;
      c->key_mn = mn;
      c->head_len = out->len - start;
      memcpy(c->head, out->data + start, c->head_len);
    }
  }
  int kw = 0;
  if (last >= first && lua_type(L, last) == LUA_TTABLE && lua_getmetatable(L, last)) {
    luaL_getmetatable(L, LSR_KWARGS_MT);
    kw = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  int nargs = last - first + 1 - kw;
  if (nargs > 0) {
    lua_pushliteral(L, "params"); /* for the error paths */
    for (int i = 0; rc == 0 && i < nargs; i++) {
      if (i > 0) rc = LSR_APPEND_LIT(out, ", ");
      if (rc == 0)
        rc = lsr_encode_in(L, first + i, &lsr_json_emitter, out, err, errlen, -1, (lua_Integer)i + 1);
    }
    lua_pop(L, 1);
  }
  if (rc == 0) rc = LSR_APPEND_LIT(out, "], \"kwargs\": ");
  if (rc == 0 && kw) {
    lua_pushliteral(L, "kwargs");
    rc = lsr_encode_in(L, last, &lsr_json_emitter, out, err, errlen, -1, 0);
    lua_pop(L, 1);
  } else if (rc == 0) {
    rc = LSR_APPEND_LIT(out, "{}");
  }
  if (rc == 0) rc = sr_buf_putc(out, '}');
  return rc;
}

/* The arguments seq, object, method, timeout at stack slots at..at + 3 of
 * conn:invoke and conn:connect_invoke; the call's own arguments follow. */
typedef struct invoke_args_s {
  lua_Integer seq;
  const char *obj, *meth;
  size_t on, mn;
  double timeout;
} invoke_args_t;

static void check_invoke_args(lua_State *L, int at, invoke_args_t *a) {
  a->seq = luaL_checkinteger(L, at);
  a->obj = luaL_checklstring(L, at + 1, &a->on);
  a->meth = luaL_checklstring(L, at + 2, &a->mn);
  a->timeout = opt_timeout(L, at + 3);
  luaL_argcheck(L, a->seq >= 0 && a->seq <= 0xffff, at, "seq out of range");
}

/* Queues the JSON INVOKE (with flags) of a's method with the arguments from
 * stack slot at + 4 on. Returns 0, or pushes the failure tuple (sent false;
 * nothing queued, the connection as it was) and returns 4. */
static int queue_invoke(lua_State *L, lsr_conn_t *c, const invoke_args_t *a, int at, int flags) {
  char err[256];
  err[0] = '\0';
  int rc = SR_ECLOSED;
  if (c->c.fd < 0) {
    snprintf(err, sizeof err, "%s", sr_client_text(SR_CLIENT_T_CLOSED));
  } else {
    size_t start = sr_client_begin(&c->c);
    rc = start == (size_t)-1
             ? SR_ENOMEM
             : encode_invoke(L, c, a->obj, a->on, a->meth, a->mn, at + 4, lua_gettop(L), err, sizeof err);
    if (rc == 0) rc = sr_client_commit(&c->c, start, SR_MSG_INVOKE, flags, (int)a->seq, SR_SER_JSON);
  }
  if (rc == 0) return 0;
  sr_client_drop(&c->c);
  push_fail(L, err[0] ? err : sr_strerror(rc), sr_err_name(rc));
  lua_pushboolean(L, 0);
  return 4;
}

/* conn:invoke(seq, object, method, timeout, args...) (see the header) */
static int lsr_conn_invoke(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  invoke_args_t a;
  check_invoke_args(L, 2, &a);
  int n = queue_invoke(L, c, &a, 2, 0);
  if (n != 0) return n;
  return send_and_receive(L, c, a.timeout, 0, 0, (long)a.seq);
}

/* conn:invoke_oneway(seq, object, method, timeout, args...) (see the
 * header): a oneway call is the plain call's INVOKE with the flag and no
 * reply, so it takes the same encoder (no payload table built in Lua). */
static int lsr_conn_invoke_oneway(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  invoke_args_t a;
  check_invoke_args(L, 2, &a);
  int n = queue_invoke(L, c, &a, 2, SR_FLAG_ONEWAY);
  if (n != 0) return n;
  return send_and_receive(L, c, a.timeout, 1, 0, -1);
}

/* conn:connect_invoke(cseq, cbytes, known, seq, object, method, timeout,
 * args...) (see the header) */
static int lsr_conn_connect_invoke(lua_State *L) {
  lsr_conn_t *c = check_conn(L);
  lua_Integer cseq = luaL_checkinteger(L, 2);
  size_t cn;
  const char *cb = luaL_checklstring(L, 3, &cn);
  invoke_args_t a;
  check_invoke_args(L, 5, &a);
  luaL_argcheck(L, cseq >= 0 && cseq <= 0xffff, 2, "seq out of range");
  int n = 0;
  if (c->c.fd < 0) {
    n = push_fail(L, sr_client_text(SR_CLIENT_T_CLOSED), "SR_ECLOSED");
  } else {
    size_t start = sr_client_begin(&c->c);
    int rc = start == (size_t)-1 ? SR_ENOMEM : sr_buf_append(&c->c.out, cb, cn);
    if (rc == 0)
      rc = sr_client_commit(&c->c, start, SR_MSG_CONNECT, SR_FLAG_META_ON_CONNECT, (int)cseq,
                            SR_SER_JSON);
    if (rc != 0) n = push_fail(L, sr_strerror(rc), sr_err_name(rc));
  }
  if (n != 0) {
    lua_pushboolean(L, 0);
    n = 4;
  } else {
    n = queue_invoke(L, c, &a, 5, 0);
  }
  if (n != 0) { /* nothing leaves: neither message stays queued */
    c->c.queued = 0;
    sr_client_drop(&c->c);
    lua_pushliteral(L, "connect");
    return n + 1;
  }
  double timeout = a.timeout;
  sr_client_err_t e;
  sr_wire_msg_t m;
  if (sr_client_send(&c->c, sr_client_deadline(timeout), timeout, &e) != 0 ||
      sr_client_receive(&c->c, sr_client_deadline(timeout), timeout, &m, &e) != 0) {
    push_client_fail(L, &e);
    lua_pushliteral(L, "connect");
    return 5;
  }
  n = push_received(L, c, &m, 4, -1);
  if (n != 1) {
    lua_pushliteral(L, "connect");
    return n + 1;
  }
  lua_getfield(L, -1, "same");
  int same = lua_toboolean(L, -1) && m.h.type == SR_MSG_CONNECTOK &&
             (m.h.flags & SR_FLAG_META_ON_CONNECT) != 0;
  lua_pop(L, 1);
  if (!same) return 1;
  /* the reply gets a timeout of its own, as conn:receive would give it */
  if (sr_client_receive(&c->c, sr_client_deadline(timeout), timeout, &m, &e) != 0) {
    lua_pop(L, 1);
    push_client_fail(L, &e);
    lua_pushliteral(L, "result");
    return 5;
  }
  n = push_received(L, c, &m, 0, (long)a.seq);
  if (n == 4) {
    lua_remove(L, -5); /* hmsg */
    lua_pushliteral(L, "result");
    return 5;
  }
  if (n == 2) {
    lua_remove(L, -3); /* hmsg: true, value */
    return 2;
  }
  return 2; /* hmsg, msg */
}

/* client_encode_payload(ser, value) -> bytes | nil, msg, code */
static int lsr_client_encode_payload(lua_State *L) {
  int ser = (int)luaL_checkinteger(L, 1);
  luaL_checkany(L, 2);
  sr_buf_t *b = lsr_push_buf(L);
  char err[256];
  err[0] = '\0';
  int rc = lsr_payload_encode(L, ser, 2, b, err, sizeof(err));
  if (rc != 0) return push_fail(L, err[0] ? err : sr_strerror(rc), sr_err_name(rc));
  lua_pushlstring(L, (const char *)b->data, b->len);
  sr_buf_free(b);
  return 1;
}

/* client_decode_payload(ser, flags, bytes) -> true, value | nil, msg, code */
static int lsr_client_decode_payload(lua_State *L) {
  int ser = (int)luaL_checkinteger(L, 1);
  int flags = (int)luaL_checkinteger(L, 2);
  size_t n;
  const char *p = luaL_checklstring(L, 3, &n);
  sr_buf_t *b = lsr_push_buf(L);
  char err[256];
  err[0] = '\0';
  int rc = decode_payload(L, ser, flags, (const uint8_t *)p, n, b, err, sizeof(err));
  if (rc != 0) return push_fail(L, err[0] ? err : sr_strerror(rc), sr_err_name(rc));
  sr_buf_free(b);
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

static const luaL_Reg conn_methods[] = {
    {"request", lsr_conn_request},
    {"invoke", lsr_conn_invoke},
    {"invoke_oneway", lsr_conn_invoke_oneway},
    {"connect_invoke", lsr_conn_connect_invoke},
    {"push", lsr_conn_push},
    {"receive", lsr_conn_receive},
    {"close", lsr_conn_close},
    {"fileno", lsr_conn_fileno},
    {NULL, NULL},
};

static const luaL_Reg client_funcs[] = {
    {"client_connect", lsr_client_connect},
    {"client_encode_payload", lsr_client_encode_payload},
    {"client_decode_payload", lsr_client_decode_payload},
    {"client_fd_alive", lsr_client_fd_alive},
    {NULL, NULL},
};

/* Pushes { name = format } for the transport's error texts (names in lower
 * case). */
static void push_texts(lua_State *L) {
  lua_createtable(L, 0, SR_CLIENT_T_COUNT);
  for (int t = 0; t < SR_CLIENT_T_COUNT; t++) {
    char name[64];
    const char *src = sr_client_text_name((sr_client_text_t)t);
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < sizeof name; i++) name[i] = (char)tolower((unsigned char)src[i]);
    name[i] = '\0';
    lua_pushstring(L, sr_client_text((sr_client_text_t)t));
    lua_setfield(L, -2, name);
  }
}

void lsr_open_client(lua_State *L) {
  if (luaL_newmetatable(L, LSR_CONN_MT)) {
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lsr_conn_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lsr_conn_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lsr_conn_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, LSR_KWARGS_MT);
  lua_setfield(L, -2, "kwargs_mt");
  push_texts(L);
  lua_setfield(L, -2, "client_texts");
  luaL_setfuncs(L, client_funcs, 0);
}
