/*
 * queue.c -- the FIFO between the Lua thread and the daemon thread
 * (see queue.h): push under a mutex, take the whole chain in one go; and the
 * wake-up that tells the other thread's loop to take it.
 */
#include "queue.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#else
#include <fcntl.h>
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

/* ---- wake-ups --------------------------------------------------------------- */

static void wake_drain(int fd) {
  uint64_t buf[8];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r > 0 && (size_t)r == sizeof buf) continue; /* pipe: maybe more */
    if (r < 0 && errno == EINTR) continue;
    return; /* emptied (EAGAIN), or an eventfd's one 8-byte read */
  }
}

static void on_wake_poll(uv_poll_t *p, int status, int events) {
  sr_wake_t *w = (sr_wake_t *)p; /* poll is its first member */
  (void)events;
  if (status < 0) return;
  wake_drain(w->rfd); /* before the callback: a send during it wakes again */
  w->cb(w);
}

int sr_wake_init(uv_loop_t *loop, sr_wake_t *w, sr_wake_cb cb, void *data) {
  w->cb = cb;
  w->closed = NULL;
  w->data = data;
#if defined(__linux__)
  w->rfd = w->wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->rfd < 0) return SR_EIO;
#else
  int fds[2];
  if (pipe(fds) != 0) return SR_EIO;
  for (int i = 0; i < 2; i++) {
    fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
  }
  w->rfd = fds[0];
  w->wfd = fds[1];
#endif
  if (uv_poll_init(loop, &w->poll, w->rfd) != 0) {
    close(w->rfd);
    if (w->wfd != w->rfd) close(w->wfd);
    return SR_ENOMEM;
  }
  /* NULL: a loop owner that closes every handle it finds (luv's loop
   * finalizer) takes it for a handle that is not its own */
  w->poll.data = NULL;
  uv_poll_start(&w->poll, UV_READABLE, on_wake_poll);
  return 0;
}

void sr_wake_send(sr_wake_t *w) {
#if defined(__linux__)
  static const uint64_t one = 1;
  const void *buf = &one;
  size_t len = sizeof one;
#else
  const void *buf = "";
  size_t len = 1;
#endif
  ssize_t r;
  do
    r = write(w->wfd, buf, len);
  while (r < 0 && errno == EINTR);
  /* EAGAIN: the counter (or pipe) is full, so the loop is woken anyway */
}

static void on_wake_closed(uv_handle_t *h) {
  sr_wake_t *w = (sr_wake_t *)h;
  close(w->rfd);
  if (w->wfd != w->rfd) close(w->wfd);
  w->rfd = w->wfd = -1;
  if (w->closed) w->closed(w);
}

void sr_wake_close(sr_wake_t *w, sr_wake_cb closed) {
  w->closed = closed;
  uv_close((uv_handle_t *)&w->poll, on_wake_closed);
}
