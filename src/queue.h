/*
 * queue.h -- a FIFO between threads: intrusive singly linked nodes under one
 * mutex. Producers push; the consumer takes everything queued at once (one
 * lock per drain), which matches the coalescing of the wake-up (sr_wake_t
 * below): one wake-up drains all. Plain C on libuv's portable mutex and
 * poll handle; no Lua.
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

/* A wake-up of one loop from any thread: a descriptor the project owns (an
 * eventfd on Linux, a pipe elsewhere) watched by a uv_poll_t on that loop.
 * It stands in for uv_async_t, whose uv_async_send in libuv before 1.45
 * makes the woken loop spin until the sender has returned from its write
 * (see bench/README.md, "Wake-ups"); only public libuv API is used here.
 * sr_wake_send coalesces as the kernel does: any number of sends before the
 * loop runs the callback cost one callback. The callback runs after the
 * descriptor was emptied, so a send racing with it causes another callback
 * rather than a lost one; a producer that pushes to an sr_queue_t and then
 * sends (when the push found the queue empty) is always seen. */
typedef struct sr_wake_s sr_wake_t;
typedef void (*sr_wake_cb)(sr_wake_t *w);
struct sr_wake_s {
  uv_poll_t poll; /* first member; poll.data stays NULL (see sr_wake_init) */
  int rfd, wfd;   /* the same eventfd on Linux */
  sr_wake_cb cb;
  sr_wake_cb closed;
  void *data; /* the owner's */
};
/* Opens w's descriptor and starts watching it on loop (loop's thread).
 * Returns 0 or SR_EIO (no descriptor) / SR_ENOMEM. */
int sr_wake_init(uv_loop_t *loop, sr_wake_t *w, sr_wake_cb cb, void *data);
/* Wakes w's loop; any thread, until sr_wake_close is called. */
void sr_wake_send(sr_wake_t *w);
/* Stops watching and closes the descriptor once libuv has closed the
 * handle, then calls closed(w) (NULL: nothing), which may free w. Loop's
 * thread; no sr_wake_send may follow. */
void sr_wake_close(sr_wake_t *w, sr_wake_cb closed);

#endif
