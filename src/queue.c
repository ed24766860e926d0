/*
 * queue.c -- the FIFO between the Lua thread and the daemon thread
 * (see queue.h): push under a mutex, take the whole chain in one go.
 */
#include "queue.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__linux__)
#include <unistd.h>
#endif

#include "sr.h"

int sr_queue_init(sr_queue_t *q) {
  q->head = q->tail = NULL;
  return uv_mutex_init(&q->mu) == 0 ? 0 : SR_ENOMEM;
}

void sr_queue_destroy(sr_queue_t *q) { uv_mutex_destroy(&q->mu); }

int sr_queue_push(sr_queue_t *q, sr_qnode_t *n) {
  n->next = NULL;
  return sr_queue_push_chain(q, n, n);
}

int sr_queue_push_chain(sr_queue_t *q, sr_qnode_t *first, sr_qnode_t *last) {
  int was_empty;
  last->next = NULL;
  uv_mutex_lock(&q->mu);
  was_empty = q->head == NULL;
  if (was_empty)
    q->head = first;
  else
    q->tail->next = first;
  q->tail = last;
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

/* libuv < 1.45 on Linux: the loop's wake-up fd is its eventfd (async_wfd ==
 * -1) or the write end of a pipe; anything else falls back to libuv. */
#if defined(__linux__) && UV_VERSION_HEX < 0x012d00 && defined(__GNUC__)
#define SR_WAKE_NOSPIN 1
#endif

void sr_async_wake(uv_async_t *a) {
#ifdef SR_WAKE_NOSPIN
  static int usable = -1; /* run-time libuv also < 1.45: decided once, racy but idempotent */
  int u = __atomic_load_n(&usable, __ATOMIC_RELAXED);
  if (u < 0) {
    u = uv_version() < 0x012d00;
    __atomic_store_n(&usable, u, __ATOMIC_RELAXED);
  }
  if (u) {
    if (__atomic_load_n(&a->pending, __ATOMIC_RELAXED) != 0) return; /* already woken */
    int expected = 0;
    if (!__atomic_compare_exchange_n(&a->pending, &expected, 2, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
      return;
    uv_loop_t *loop = a->loop;
    int fd = loop->async_wfd;
    static const uint64_t one = 1;
    const void *buf = &one;
    size_t len = sizeof one;
    if (fd == -1) {
      fd = loop->async_io_watcher.fd; /* eventfd: an 8-byte count */
    } else {
      buf = ""; /* pipe: one byte */
      len = 1;
    }
    ssize_t r;
    do
      r = write(fd, buf, len);
    while (r == -1 && errno == EINTR);
    /* EAGAIN: the counter/pipe is already full, so the loop is woken anyway */
    return;
  }
#endif
  uv_async_send(a);
}
