/*
 * queue.h -- a FIFO between threads: intrusive singly linked nodes under one
 * mutex. Producers push; the consumer takes everything queued at once (one
 * lock per drain), which matches uv_async_send's coalescing: one wake-up
 * drains all. Plain C on libuv's portable mutex; no Lua.
 */
#ifndef SR_QUEUE_H
#define SR_QUEUE_H

#include <uv.h>

typedef struct sr_qnode_s {
  struct sr_qnode_s *next;
} sr_qnode_t;

typedef struct sr_queue_s {
  uv_mutex_t mu;
  sr_qnode_t *head;
  sr_qnode_t *tail;
} sr_queue_t;

/* Returns 0 or SR_ENOMEM (mutex creation failed). */
int sr_queue_init(sr_queue_t *q);
/* Destroys the mutex. The queue must be empty (drain it first: the nodes
 * belong to whoever pushed them). */
void sr_queue_destroy(sr_queue_t *q);
/* Appends n (n->next is overwritten). Returns 1 when the queue was empty
 * before, so the producer knows a wake-up is needed; 0 otherwise. */
int sr_queue_push(sr_queue_t *q, sr_qnode_t *n);
/* Appends the chain first..last (linked through next; last->next is
 * overwritten) under one lock. Returns 1 when the queue was empty before. */
int sr_queue_push_chain(sr_queue_t *q, sr_qnode_t *first, sr_qnode_t *last);
/* Detaches and returns every queued node in FIFO order (NULL when empty).
 * The caller owns the returned chain. */
sr_qnode_t *sr_queue_take_all(sr_queue_t *q);

/* uv_async_send(a), from any thread, without making the woken loop spin.
 * libuv before 1.45 marks the handle "busy" (pending = 1) around its eventfd
 * write, and the woken loop spins (then sched_yield()s) until the sender
 * has returned from that write and set pending = 2: when the wake-up
 * preempts the sender on the same CPU, the woken thread burns its slice
 * waiting for it (measured: ~5 us of server CPU per sequential call). With
 * such a libuv (checked at build time and at run time) this sets pending
 * straight from 0 to 2 and then writes the loop's eventfd, the order libuv
 * 1.45 itself uses (PR #3879); with any other libuv it is uv_async_send.
 * The receiver's side is libuv's own: a pending handle's callback runs once
 * per wake-up, and a push before the wake-up is seen by that callback. */
void sr_async_wake(uv_async_t *a);

#endif
