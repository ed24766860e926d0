/*
 * queue.c -- the FIFO between the Lua thread and the daemon holder thread
 * (see queue.h): push under a mutex, take the whole chain in one go.
 */
#include "queue.h"

#include <stddef.h>

#include "sr.h"

int sr_queue_init(sr_queue_t *q) {
  q->head = q->tail = NULL;
  return uv_mutex_init(&q->mu) == 0 ? 0 : SR_ENOMEM;
}

void sr_queue_destroy(sr_queue_t *q) { uv_mutex_destroy(&q->mu); }

int sr_queue_push(sr_queue_t *q, sr_qnode_t *n) {
  int was_empty;
  n->next = NULL;
  uv_mutex_lock(&q->mu);
  was_empty = q->head == NULL;
  if (was_empty)
    q->head = n;
  else
    q->tail->next = n;
  q->tail = n;
  uv_mutex_unlock(&q->mu);
  return was_empty;
}

sr_qnode_t *sr_queue_take_all(sr_queue_t *q) {
  sr_qnode_t *all;
  uv_mutex_lock(&q->mu);
  all = q->head;
  q->head = q->tail = NULL;
  uv_mutex_unlock(&q->mu);
  return all;
}
