/*
 * lsr_daemon_int.h -- the private state of the daemon's Lua binding, shared
 * by its two files:
 *
 *   lsr_daemon.c         the binding functions (core.daemon_*): listen with
 *                        its limits and security options, register, reply,
 *                        the reply writer and counters; the daemon's
 *                        creation when springrun.core opens, and its end
 *                        when the state closes
 *   lsr_daemon_events.c  the Lua-thread end of the daemon's event queue: the
 *                        wake-up, the calls waiting by connection, each
 *                        INVOKE decoded and handed to the Lua handler, the
 *                        bounds this thread enforces per listener
 *                        (max_oneway, call_timeout), and the replies
 *
 * Nothing here is API (lsr.h is). Everything here belongs to the Lua thread,
 * except lsr_daemon_notify, which the daemon thread calls.
 */
#ifndef SR_LSR_DAEMON_INT_H
#define SR_LSR_DAEMON_INT_H

#include <stdint.h>
#include <uv.h>

#include "daemon.h"
#include "lsr.h"
#include "wire.h"

/* One daemon per process (lsr_daemon.c defines it). */
typedef struct lsr_daemon_state_s {
  sr_daemon_t *d;
  sr_wake_t *wake; /* on luv's loop while a listener is open, else NULL */
  uv_loop_t *loop;   /* luv's loop */
  lua_State *L; /* main thread of the state that opened the module */
  int handler_ref;
  int handler_arg_ref; /* LUA_NOREF, or the handler's extra first argument */
  int refuse_ref;      /* refuse(conn, tag, ser, flags, class, message), or LUA_NOREF */
  int classes_ref;     /* classes(params, kwargs), or LUA_NOREF (daemon_set_class_hook) */
  int log_ref;
  unsigned ser_mask; /* serializers whose encoder works, probed once */
  int probed;
  sr_buf_t buf; /* reply frame scratch (Lua thread only) */
  /* Replies to requests that arrived together (one drain of two or more
   * events) are handed to the daemon thread in one go at the end of the
   * drain (SR_REPLY_BATCH), which writes them while this thread works on
   * (cheaper than a send() per reply on this thread when many connections
   * are busy: bench/README.md has the figures); a lone request's reply is
   * sent by this thread at once, saving the daemon thread's wake-up. */
  int batch_replies;
  int in_batch; /* draining such a batch now */
  int direct;   /* otherwise: as sr_daemon_set_direct_writes */
  uint64_t nreplies[3]; /* by SR_REPLY_* */
  uint64_t nfast;       /* calls answered without a Lua function (lsr_serve.c) */
} lsr_daemon_state_t;

extern lsr_daemon_state_t lsr_daemon;

/* ---- lsr_daemon_events.c -------------------------------------------------- */

/* The daemon's notify callback (sr_daemon_new): wakes the Lua thread. */
void lsr_daemon_notify(void *ud);

/* Opens the wake-up on luv's loop (no-op while open): 0 or SR_ENOMEM / a
 * libuv code. close: drops it (no-op while closed). */
int lsr_daemon_open_wake(lua_State *L);
void lsr_daemon_close_wake(void);

/* The wake-up's callback: drains every event queued (also called by
 * unlisten after the last listener's thread was joined). */
void lsr_daemon_on_events(sr_wake_t *w);
/* Drains every event queued (ud unused): the daemon's drain callback after
 * this thread ran the daemon's loop (sr_daemon_set_owner_loop). */
void lsr_daemon_drain(void *ud);

/* What this thread counts per listener, kept from listen to unlisten:
 * add returns 0 or SR_ENOMEM. */
int lsr_daemon_lstate_add(uint32_t id);
void lsr_daemon_lstate_remove(uint32_t id);

/* The last listener closed: drops the calls still waiting and the
 * call_timeout list (and its timer). free: that, and the per-listener
 * counts too (the state closes). */
void lsr_daemon_events_clear(void);
void lsr_daemon_events_free(void);

/* Calls taken from the daemon and not started yet (core.daemon_waiting). */
lua_Integer lsr_daemon_nwaiting(void);

/* Creates the metatable of the handler's `call` values (__close, __gc). */
void lsr_daemon_call_mt(lua_State *L);

/* Encodes the value at idx as the RESULT (seq, ser, flags; with ann: one
 * annotation) of slot on conn and hands it over (a request of an HTTP
 * listener: as a Hessian reply in an HTTP response). Returns 0 or an SR_E*
 * code with err set (nothing sent then). */
int lsr_daemon_send_result(lua_State *L, int idx, uint64_t conn, uint32_t slot, uint16_t seq,
                           uint16_t ser, uint16_t flags, const sr_wire_ann_t *ann, char *err,
                           size_t errlen);

#endif
