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
/* Detaches and returns every queued node in FIFO order (NULL when empty).
 * The caller owns the returned chain. */
sr_qnode_t *sr_queue_take_all(sr_queue_t *q);

#endif
