/*
 * daemon_proto.c -- the Pyro protocol on the daemon thread: what a framed
 * message of a connection means and what is answered.
 *
 * The first message must be a CONNECT: its serializer must be accepted by
 * the listener, its handshake value must match the listener's secret when
 * one is set (constant-time, auth.h), and with META_ON_CONNECT the object
 * must be registered; the answer is the CONNECTOK cached at registration,
 * or a CONNECTFAIL whose text says why, followed by a graceful close (so
 * the client reads the reason). A CONNECTOK is held back to leave in one
 * write with the reply to an INVOKE that came right behind its CONNECT (a
 * pipelining client). After the handshake a PING is answered here in its
 * reply slot, an INVOKE becomes an event for the owner (payload as it came,
 * compressed or not: the owner inflates; counted against the listener's
 * max_queued and max_queued_bytes), and anything else closes the
 * connection; refusals are logged as events, since only the owner may log.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_int.h"
#include "payload.h"

/* ---- handshake and requests --------------------------------------------- */

/* Builds a frame into a new reply (slot given). NULL on OOM. */
static sr_reply_t *make_frame(uint16_t type, uint16_t flags, uint16_t seq, uint16_t ser,
                              const uint8_t *data, size_t len, uint32_t slot) {
  if (len > 0x7fffffff) return NULL;
  sr_reply_t *r = malloc(sizeof *r + SR_WIRE_HEADER_SIZE + len);
  if (r == NULL) return NULL;
  memset(r, 0, sizeof *r);
  sr_wire_put_header(r->data, type, flags, seq, ser, (uint32_t)len);
  if (len) memcpy(r->data + SR_WIRE_HEADER_SIZE, data, len);
  r->len = SR_WIRE_HEADER_SIZE + len;
  r->slot = slot;
  return r;
}

/* Sends CONNECTFAIL with text encoded by ser, then closes gracefully. */
void sr_proto_fail_handshake(sr_conn_t *c, uint16_t ser, uint16_t seq, const char *text) {
  sr_buf_t b;
  sr_buf_init(&b);
  sr_clog(c, LOG_WARNING, "handshake from %s on %s refused: %s", c->peer,
          c->lis ? c->lis->where : "?", text);
  if (sr_payload_encode_string(&b, ser, text, strlen(text)) == 0) {
    sr_reply_t *r = make_frame(SR_MSG_CONNECTFAIL, 0, seq, ser, b.data, b.len, 0);
    if (r) sr_conn_write(c, r);
  }
  sr_buf_free(&b);
  sr_conn_close_graceful(c);
}

/* The payload of m: its bytes, or when COMPRESSED the inflated bytes in
 * *plain (initialised here; the caller frees it either way), bounded by the
 * connection's current message limit. Returns 0 or an SR_E* code, err set. */
static int msg_payload(const sr_conn_t *c, const sr_wire_msg_t *m, sr_buf_t *plain,
                       const uint8_t **data, size_t *len, char *err, size_t errlen) {
  sr_buf_init(plain);
  *data = m->data;
  *len = m->h.data_len;
  if (!(m->h.flags & SR_FLAG_COMPRESSED)) return 0;
  int rc = sr_wire_inflate(plain, m->data, m->h.data_len, c->fr.max_message, err, errlen);
  if (rc < 0) return rc;
  *data = plain->data;
  *len = plain->len;
  return 0;
}

static sr_obj_t *find_obj(sr_listener_t *lis, const char *name) {
  for (sr_obj_t *o = lis ? lis->objs : NULL; o; o = o->next)
    if (strcmp(o->name, name) == 0) return o;
  return NULL;
}

/* Pyro4's name of a serializer id, for refusals. */
static const char *ser_name(uint16_t ser) {
  static const char *const names[] = { "?", "serpent", "json", "marshal", "pickle",
                                       "dill", "msgpack", "cloudpickle" };
  return ser < sizeof names / sizeof names[0] && ser > 0 ? names[ser] : "unknown";
}

static int ser_accepted(sr_listener_t *lis, uint16_t ser) {
  return lis != NULL && ser < SR_DAEMON_NSER && (lis->ser_mask & (1u << ser));
}

void sr_proto_connect(sr_conn_t *c, const sr_wire_msg_t *m) {
  char text[600], err[300];
  uint16_t ser = m->h.serializer;
  if (m->h.type != SR_MSG_CONNECT) {
    snprintf(text, sizeof text, "invalid msg type %u received", m->h.type);
    sr_proto_fail_handshake(c, SR_SER_MARSHAL, 0, text);
    return;
  }
  if (!ser_accepted(c->lis, ser)) {
    snprintf(text, sizeof text, "message used serializer that is not accepted: %u (%s)", ser,
             ser_name(ser));
    sr_proto_fail_handshake(c, SR_SER_MARSHAL, m->h.seq, text);
    return;
  }
  const uint8_t *data;
  size_t len;
  sr_buf_t plain;
  if (msg_payload(c, m, &plain, &data, &len, err, sizeof err) < 0) {
    sr_buf_free(&plain);
    sr_proto_fail_handshake(c, ser, m->h.seq, err);
    return;
  }
  if (c->lis && c->lis->has_secret) {
    /* Pyro4's validateHandshake with a shared secret: the handshake value
     * must be that string (constant-time comparison) */
    sr_buf_t hv;
    sr_buf_init(&hv);
    err[0] = '\0';
    int hr = sr_handshake_value(ser, data, len, &hv, err, sizeof err);
    int ok = hr == 1 && sr_secret_check(&c->lis->secret, hv.data ? hv.data : (const uint8_t *)"",
                                        hv.len);
    sr_buf_free(&hv);
    if (!ok) {
      sr_buf_free(&plain);
      if (hr < 0 && hr != SR_ENOTFOUND && err[0])
        sr_proto_fail_handshake(c, ser, m->h.seq, err);
      else
        sr_proto_fail_handshake(c, ser, m->h.seq,
                                "authentication failed: wrong or missing handshake secret");
      return;
    }
  }
  char name[SR_DAEMON_MAX_NAME + 1];
  int r;
  err[0] = '\0';
  if (ser == SR_SER_JSON)
    r = sr_json_handshake_object(data, len, name, sizeof name, err, sizeof err);
  else if (ser == SR_SER_SERPENT)
    r = sr_serpent_handshake_object(data, len, name, sizeof name, err, sizeof err);
  else
    r = sr_seterr(err, sizeof err, SR_ESERIALIZER, "cannot read the handshake of serializer %u",
                  ser);
  sr_buf_free(&plain);
  int meta = (m->h.flags & SR_FLAG_META_ON_CONNECT) != 0;
  if (r < 0 && !(r == SR_ENOTFOUND && !meta)) {
    if (r == SR_ENOTFOUND) snprintf(err, sizeof err, "'object'");
    sr_proto_fail_handshake(c, ser, m->h.seq, err[0] ? err : sr_strerror(r));
    return;
  }
  sr_reply_t *rep;
  if (meta) {
    sr_obj_t *o = find_obj(c->lis, name);
    if (o == NULL || o->meta[ser] == NULL) {
      sr_proto_fail_handshake(c, ser, m->h.seq, "unknown object");
      return;
    }
    rep = make_frame(SR_MSG_CONNECTOK, SR_FLAG_META_ON_CONNECT, m->h.seq, ser, o->meta[ser],
                     o->meta_len[ser], 0);
  } else {
    sr_buf_t b;
    sr_buf_init(&b);
    rep = NULL;
    if (sr_payload_encode_string(&b, ser, "hello", 5) == 0)
      rep = make_frame(SR_MSG_CONNECTOK, 0, m->h.seq, ser, b.data, b.len, 0);
    sr_buf_free(&b);
  }
  if (rep == NULL) {
    sr_clog(c, LOG_ERROR, "out of memory answering %s; closing", c->peer);
    sr_conn_close_now(c);
    return;
  }
  c->handshaken = 1;
  if (c->lis) c->fr.max_message = c->lis->lim.max_message; /* the handshake limit is lifted */
  if (c->tls == NULL)
    c->connectok = rep; /* conn_process decides: hold it for the first reply, or write */
  else
    sr_conn_write(c, rep);
}

/* The CONNECTOK sr_proto_connect left in c->connectok: held for the reply of
 * m when m (the message that came right behind the CONNECT) is an INVOKE
 * that will be answered; otherwise (m NULL: nothing came behind it) written
 * now. */
void sr_proto_place_connectok(sr_conn_t *c, const sr_wire_msg_t *m) {
  sr_reply_t *rep = c->connectok;
  c->connectok = NULL;
  if (c->state != C_OPEN) {
    free(rep);
    return;
  }
  if (m && m->h.type == SR_MSG_INVOKE && !(m->h.flags & SR_FLAG_ONEWAY)) {
    sr_wside_hold(c->w, rep);
    return;
  }
  sr_conn_write(c, rep);
}

void sr_proto_request(sr_conn_t *c, const sr_wire_msg_t *m) {
  sr_daemon_t *d = c->d;
  if (m->h.type == SR_MSG_PING) {
    sr_reply_t *r = make_frame(SR_MSG_PING, 0, m->h.seq, m->h.serializer,
                               (const uint8_t *)"pong", 4, c->next_slot++);
    if (r == NULL) {
      sr_conn_close_now(c);
      return;
    }
    sr_conn_submit(c, r);
    return;
  }
  if (m->h.type != SR_MSG_INVOKE) {
    sr_dlog(d, LOG_WARNING, "closing connection from %s on %s: unexpected message type %u",
            c->peer, c->lis ? c->lis->where : "?", m->h.type);
    sr_conn_close_now(c);
    return;
  }
  if (!ser_accepted(c->lis, m->h.serializer)) {
    sr_dlog(d, LOG_WARNING, "closing connection from %s on %s: serializer %u (%s) is not accepted",
            c->peer, c->lis ? c->lis->where : "?", m->h.serializer, ser_name(m->h.serializer));
    sr_conn_close_now(c);
    return;
  }
  /* a compressed payload crosses as it came: inflating (up to max_message
   * from a few KB) is the owner's work, taken in turn with every other
   * connection's calls, so a client sending compression bombs stalls no
   * accept, handshake or PING here */
  /* the correlation id travels to the call (springrun.current_context);
   * other annotations are ignored, as a Pyro4 daemon does */
  const uint8_t *corr = NULL;
  size_t aoff = 0;
  sr_wire_ann_t a;
  while (sr_wire_ann_next(m->ann, m->h.ann_len, &aoff, &a) == 1)
    if (memcmp(a.key, "CORR", 4) == 0 && a.len == 16) corr = a.value;
  sr_proto_queue_invoke(c, m->h.seq, m->h.flags, m->h.serializer, corr, NULL, 0, m->data,
                        m->h.data_len);
}

void sr_proto_queue_invoke(sr_conn_t *c, uint16_t seq, uint16_t flags, uint16_t ser,
                           const uint8_t *corr, const uint8_t *pre, size_t prelen, const uint8_t *p, size_t n) {
  sr_daemon_t *d = c->d;
  size_t len = prelen + n;
  sr_event_t *ev = malloc(sizeof *ev + len + 1);
  if (ev == NULL) {
    sr_dlog(d, LOG_ERROR, "out of memory reading from %s; closing", c->peer);
    sr_conn_close_now(c);
    return;
  }
  memset(ev, 0, sizeof *ev);
  ev->kind = SR_EV_INVOKE;
  ev->listener = c->lis->id;
  ev->conn = c->id;
  ev->seq = seq;
  ev->flags = flags;
  ev->max_plain = c->lis->lim.max_message;
  ev->serializer = ser;
  ev->slot = (flags & SR_FLAG_ONEWAY) ? 0 : c->next_slot++;
  ev->len = len;
  ev->name_len = prelen;
  ev->max_depth = c->lis->lim.max_depth;
  ev->max_elements = c->lis->lim.max_elements;
  ev->max_oneway = c->lis->lim.max_oneway;
  ev->call_timeout_ms = c->lis->lim.call_timeout_ms;
  if (prelen) memcpy(ev->data, pre, prelen);
  if (n) memcpy(ev->data + prelen, p, n);
  ev->data[len] = 0;
  if (corr) {
    memcpy(ev->corr, corr, 16);
    ev->has_corr = 1;
  }
  sr_dcount_t *dc = c->lis->dc;
  atomic_fetch_add(&dc->refs, 1);
  ev->dc = dc;
  unsigned queued = atomic_fetch_add(&dc->queued, 1) + 1;
  size_t qbytes = atomic_fetch_add(&dc->queued_bytes, len) + len;
  sr_daemon_push_event(d, ev);
  if ((queued >= c->lis->lim.max_queued || qbytes >= c->lis->lim.max_queued_bytes) &&
      !c->dpaused) {
    /* the owner is behind: read no more from this connection until the
     * sweep sees the listener's queue down to half */
    c->dpaused = 1;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    sr_clog(c, LOG_DEBUG, "pausing reads from %s on %s: %u invocations, %zu bytes queued (%s)",
            c->peer, c->lis->where, queued, qbytes,
            queued >= c->lis->lim.max_queued ? "max_queued" : "max_queued_bytes");
    sr_sweep_soon(d);
  }
}

/* Answers the first message of a connection refused for max_connections. */
void sr_proto_refuse(sr_conn_t *c, const sr_wire_msg_t *m) {
  char text[400];
  uint16_t ser = m && ser_accepted(c->lis, m->h.serializer) ? m->h.serializer : SR_SER_MARSHAL;
  snprintf(text, sizeof text, "too many connections to %s (max_connections %u)",
           c->lis ? c->lis->where : "?", c->lis ? (unsigned)c->lis->lim.max_connections : 0u);
  sr_proto_fail_handshake(c, ser, m ? m->h.seq : 0, text);
}
