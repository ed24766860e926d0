/* bench/floor.c -- the physical floor of the benchmark suite, and its C load tools.
 *
 * One binary, several subcommands (see usage()):
 *   server   a single-threaded epoll echo server: each message is a 4-byte big-endian
 *            length then the body; the server reads a whole message, then writes it back.
 *            A length with bit 31 set is a "oneway" message: read, never answered.
 *            This is the least work any request/reply server can do over TCP.
 *   server --handoff
 *            the same reader, but every message read is handed to a second thread, which
 *            writes the reply: springrun's threading design (the daemon thread reads and
 *            frames, hands over once per loop iteration with one eventfd write; the Lua
 *            thread sleeps in epoll_wait on that eventfd and sends the reply itself) with
 *            no work in either thread. Its rate is the ceiling of that design.
 *   seq      sequential round trips on one connection (latency percentiles, rate).
 *   oneway   N oneway messages, then one round trip to wait for the server to drain.
 *   echo     round trips of SIZE-byte bodies (bandwidth).
 *   connect  connect + one 64-byte round trip + close, repeated.
 *   timed    `seq` between two wall-clock instants (one of N client processes): prints
 *            READY after connecting, then reads "START_EPOCH DURATION" from stdin.
 *   load     one process, C connections on epoll, each with one request outstanding;
 *            speaks the floor protocol or the Pyro4 wire (prerecorded request bytes).
 *   hold     open C connections (Pyro4 handshake or a floor round trip on each), keep
 *            them idle until stdin closes or SIGTERM.
 * Every client prints one JSON object on stdout. With --pid, it reads the server's
 * utime+stime from /proc/<pid>/stat around the measured loop (server CPU per call).
 * Everything binds/connects to 127.0.0.1 only; every loop is bounded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define SMALL 64            /* bytes on the wire per small floor message (header+body) */
#define ONEWAY_BIT 0x80000000u
#define MAX_BODY (64u << 20)

static void die(const char *what) {
  fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *msg) {
  fprintf(stderr, "floor: %s\n", msg);
  exit(2);
}

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_until_wall(double t) {
  for (int i = 0; i < 100000; i++) {
    double d = t - now_wall();
    if (d <= 0) return;
    struct timespec ts = { (time_t)d, (long)((d - (time_t)d) * 1e9) };
    nanosleep(&ts, NULL);
  }
}

/* Server CPU seconds (utime+stime of all its threads) or -1 when pid is 0/unreadable. */
static double proc_cpu(int pid) {
  if (pid <= 0) return -1;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  /* after ") " : field 3 is state; utime is field 14, stime 15 */
  unsigned long ut = 0, st = 0;
  int field = 2;
  for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
    field++;
    if (field == 14) ut = strtoul(tok, NULL, 10);
    if (field == 15) { st = strtoul(tok, NULL, 10); break; }
  }
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(int pid) {
  if (pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) { kb = strtol(line + 6, NULL, 10); break; }
  fclose(f);
  return kb;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
  if (n == 0) return -1;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

/* ---- options ---- */
typedef struct {
  int port, pid, conns, n, size, warm;
  double dur, start;
  const char *proto, *req, *hello;
} opts_t;

static void parse_opts(int argc, char **argv, opts_t *o) {
  memset(o, 0, sizeof *o);
  o->n = 10000; o->size = SMALL - 4; o->conns = 1; o->dur = 1.0; o->warm = 200;
  o->proto = "floor";
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) fail("option without value");
    if (!strcmp(a, "--port")) o->port = atoi(v);
    else if (!strcmp(a, "--pid")) o->pid = atoi(v);
    else if (!strcmp(a, "--conns")) o->conns = atoi(v);
    else if (!strcmp(a, "--n")) o->n = atoi(v);
    else if (!strcmp(a, "--size")) o->size = atoi(v);
    else if (!strcmp(a, "--warm")) o->warm = atoi(v);
    else if (!strcmp(a, "--dur")) o->dur = atof(v);
    else if (!strcmp(a, "--start")) o->start = atof(v);
    else if (!strcmp(a, "--proto")) o->proto = v;
    else if (!strcmp(a, "--req")) o->req = v;
    else if (!strcmp(a, "--hello")) o->hello = v;
    else { fprintf(stderr, "floor: unknown option %s\n", a); exit(2); }
    i++;
  }
  if (o->port <= 0 || o->port > 65535) fail("--port is required (1..65535)");
  if (o->n < 1 || o->n > 100000000) fail("--n out of range");
  if (o->size < 0 || (unsigned)o->size > MAX_BODY) fail("--size out of range");
  if (o->conns < 1 || o->conns > 100000) fail("--conns out of range");
  if (o->dur <= 0 || o->dur > 3600) fail("--dur out of range");
}

/* ---- blocking client helpers ---- */
static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) { if (errno == EINTR) continue; die("write"); }
    c += w; n -= (size_t)w;
  }
}

static void read_all(int fd, void *p, size_t n) {
  char *c = p;
  while (n > 0) {
    ssize_t r = read(fd, c, n);
    if (r < 0) { if (errno == EINTR) continue; die("read"); }
    if (r == 0) fail("server closed the connection");
    c += r; n -= (size_t)r;
  }
}

/* one floor round trip of a prepared message (4-byte header + body in msg) */
static void roundtrip(int fd, char *msg, size_t total, char *rbuf) {
  write_all(fd, msg, total);
  read_all(fd, rbuf, total);
}

static char *make_msg(size_t body, int oneway) {
  char *m = malloc(body + 4);
  if (!m) die("malloc");
  uint32_t len = htonl((uint32_t)body | (oneway ? ONEWAY_BIT : 0));
  memcpy(m, &len, 4);
  for (size_t i = 0; i < body; i++) m[4 + i] = (char)('a' + i % 26);
  return m;
}

/* For the harness to merge several clients' percentiles: up to 2000 evenly strided
 * latency samples, one line {"lat_us":[...]} printed before the result line. */
static void print_samples(const double *lat, size_t n) {
  size_t step = n > 2000 ? n / 2000 : 1;
  printf("{\"lat_us\":[");
  for (size_t i = 0, k = 0; i < n && k < 2000; i += step, k++)
    printf("%s%.2f", k ? "," : "", lat[i] * 1e6);
  printf("]}\n");
}

static void print_result(const char *scenario, long calls, double secs, double *lat,
                         size_t nlat, double cpu0, double cpu1, double bytes) {
  qsort(lat, nlat, sizeof *lat, cmp_double);
  printf("{\"scenario\":\"%s\",\"calls\":%ld,\"secs\":%.6f,\"rate\":%.1f", scenario, calls,
         secs, secs > 0 ? calls / secs : 0);
  if (nlat) printf(",\"p50_us\":%.2f,\"p99_us\":%.2f", pct(lat, nlat, 0.5) * 1e6,
                   pct(lat, nlat, 0.99) * 1e6);
  if (cpu0 >= 0 && cpu1 >= 0) printf(",\"server_cpu_s\":%.4f", cpu1 - cpu0);
  if (bytes > 0) printf(",\"bytes\":%.0f", bytes);
  printf("}\n");
  fflush(stdout);
}

/* ---- server ---- */
typedef struct conn {
  int fd;
  char *in; size_t inlen, incap;
  char *out; size_t outlen, outoff, outcap;
  int armed_out;     /* EPOLLOUT registered */
} conn_t;

static volatile sig_atomic_t stop_flag;
static void on_term(int sig) { (void)sig; stop_flag = 1; }

/* ---- handoff (server --handoff) ----
 * An item is one message read (reply = 1: to be echoed; 0: oneway) or, with len 0,
 * the connection's end: the worker closes the socket and frees the conn, so the reader
 * never touches a conn after handing its end over. Items are owned by the queue until
 * the worker takes the whole list. */
typedef struct item { struct item *next; conn_t *c; size_t len; int reply; char msg[]; } item_t;
static int handoff;
static pthread_mutex_t hq_mu = PTHREAD_MUTEX_INITIALIZER;
static item_t *hq_head, **hq_tail = &hq_head;  /* the shared queue */
static item_t *hb_head, **hb_tail = &hb_head;  /* this loop iteration's batch (reader only) */
static int hq_efd = -1;

static void conn_release(conn_t *c) {
  close(c->fd);
  free(c->in); free(c->out); free(c);
}

static int handoff_push(conn_t *c, const char *p, size_t n, int reply) {
  item_t *it = malloc(sizeof *it + n);
  if (!it) return -1;
  it->next = NULL; it->c = c; it->len = n; it->reply = reply;
  if (n) memcpy(it->msg, p, n);
  *hb_tail = it; hb_tail = &it->next;
  return 0;
}

/* One push and one wake-up per loop iteration, as springrun's daemon thread does. */
static void handoff_flush(void) {
  if (!hb_head) return;
  pthread_mutex_lock(&hq_mu);
  *hq_tail = hb_head; hq_tail = hb_tail;
  pthread_mutex_unlock(&hq_mu);
  hb_head = NULL; hb_tail = &hb_head;
  uint64_t one = 1;
  if (write(hq_efd, &one, sizeof one) < 0 && errno != EAGAIN) die("eventfd write");
}

static void write_reply(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return; /* the reader sees the broken connection */
      struct pollfd pf = { .fd = fd, .events = POLLOUT };
      poll(&pf, 1, 1000);
      continue;
    }
    p += w; n -= (size_t)w;
  }
}

static void *handoff_worker(void *arg) {
  (void)arg;
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  epoll_ctl(ep, EPOLL_CTL_ADD, hq_efd, &ev);
  while (!stop_flag) {
    int n = epoll_wait(ep, &ev, 1, 500);
    if (n <= 0) continue;
    uint64_t v;
    if (read(hq_efd, &v, sizeof v) < 0 && errno != EAGAIN) die("eventfd read");
    pthread_mutex_lock(&hq_mu);
    item_t *it = hq_head;
    hq_head = NULL; hq_tail = &hq_head;
    pthread_mutex_unlock(&hq_mu);
    while (it) {
      item_t *next = it->next;
      if (it->len == 0) conn_release(it->c);
      else if (it->reply) write_reply(it->c->fd, it->msg, it->len);
      free(it);
      it = next;
    }
  }
  close(ep);
  return NULL;
}

static void conn_free(int ep, conn_t *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  if (handoff) {
    if (handoff_push(c, NULL, 0, 0) < 0) die("malloc");
    return;
  }
  conn_release(c);
}

static int reserve(char **p, size_t *cap, size_t need) {
  if (*cap >= need) return 0;
  size_t nc = *cap ? *cap : 4096;
  while (nc < need) nc *= 2;
  char *np = realloc(*p, nc);
  if (!np) return -1;
  *p = np; *cap = nc;
  return 0;
}

/* Flush what is queued; returns -1 on a broken connection. Arms EPOLLOUT while pending. */
static int conn_flush(int ep, conn_t *c) {
  while (c->outoff < c->outlen) {
    ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return -1;
    }
    c->outoff += (size_t)w;
  }
  int want_out = c->outoff < c->outlen;
  if (!want_out) {
    c->outoff = c->outlen = 0;
    free(c->out); c->out = NULL; c->outcap = 0;
  }
  if (want_out != c->armed_out) {
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->armed_out = want_out;
  }
  return 0;
}

/* Queue or write one reply; -1 on a broken connection. */
static int conn_reply(conn_t *c, const char *p, size_t n) {
  if (c->outlen == 0) {
    for (;;) {
      ssize_t w = write(c->fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return -1;
      }
      p += w; n -= (size_t)w;
      if (n == 0) return 0;
    }
  }
  if (reserve(&c->out, &c->outcap, c->outlen + n) < 0) return -1;
  memcpy(c->out + c->outlen, p, n);
  c->outlen += n;
  return 0;
}

/* Read what is there, answer every complete message; -1 closes the connection.
 * A connection owns no buffer unless a message arrived in part (then c->in) or a
 * reply could not be written at once (then c->out): idle connections cost a conn_t. */
static char rstatic[1 << 18];
static int conn_read(int ep, conn_t *c) {
  for (int loops = 0; loops < 1024; loops++) {
    char *base; size_t have, space;
    if (c->inlen == 0) {
      base = rstatic; have = 0; space = sizeof rstatic;
    } else {
      uint32_t h;
      size_t need = c->inlen + 4096;
      if (c->inlen >= 4) {
        memcpy(&h, c->in, 4);
        need = 4 + (size_t)(ntohl(h) & ~ONEWAY_BIT);
        if (need < c->inlen + 4096) need = c->inlen + 4096;
      }
      if (reserve(&c->in, &c->incap, need) < 0) return -1;
      base = c->in; have = c->inlen; space = c->incap - c->inlen;
    }
    ssize_t r = read(c->fd, base + have, space);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return -1;
    }
    if (r == 0) return -1;
    size_t len = have + (size_t)r, off = 0;
    while (len - off >= 4) {
      uint32_t h;
      memcpy(&h, base + off, 4);
      h = ntohl(h);
      uint32_t body = h & ~ONEWAY_BIT;
      if (body > MAX_BODY) return -1;
      if (len - off < 4 + (size_t)body) break;
      if (handoff) {
        if (handoff_push(c, base + off, 4 + body, !(h & ONEWAY_BIT)) < 0) return -1;
      } else if (!(h & ONEWAY_BIT) && conn_reply(c, base + off, 4 + body) < 0) {
        return -1;
      }
      off += 4 + body;
    }
    if (base == rstatic) {
      if (off < len) {
        if (reserve(&c->in, &c->incap, len - off) < 0) return -1;
        memcpy(c->in, base + off, len - off);
        c->inlen = len - off;
      }
    } else {
      memmove(c->in, c->in + off, len - off);
      c->inlen = len - off;
    }
    if (c->outlen && conn_flush(ep, c) < 0) return -1;
    if ((size_t)r < space) break; /* short read: drained */
  }
  return 0;
}

static int cmd_server(int argc, char **argv) {
  handoff = argc > 2 && !strcmp(argv[2], "--handoff");
  pthread_t worker;
  if (handoff) {
    hq_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (hq_efd < 0) die("eventfd");
    if (pthread_create(&worker, NULL, handoff_worker, NULL)) fail("pthread_create");
  }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
  if (listen(ls, 4096) < 0) die("listen");
  socklen_t sl = sizeof sa;
  getsockname(ls, (struct sockaddr *)&sa, &sl);
  printf("PORT %d\n", ntohs(sa.sin_port));
  fflush(stdout);
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[256];
  while (!stop_flag) {
    int n = epoll_wait(ep, evs, 256, 500);
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (!c) {
        for (int k = 0; k < 1024; k++) {
          int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn_t *nc = calloc(1, sizeof *nc);
          if (!nc) { close(fd); continue; }
          nc->fd = fd;
          struct epoll_event cev = { .events = EPOLLIN, .data.ptr = nc };
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      int bad = 0;
      if (evs[i].events & EPOLLOUT) bad = conn_flush(ep, c) < 0;
      if (!bad && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) bad = conn_read(ep, c) < 0;
      if (bad) conn_free(ep, c);
    }
    if (handoff) handoff_flush();
  }
  if (handoff) pthread_join(worker, NULL);
  return 0;
}

/* ---- simple clients ---- */
static int cmd_seq(opts_t *o, const char *scenario, int timed) {
  int fd = dial(o->port);
  char *msg = make_msg((size_t)o->size, 0);
  size_t total = (size_t)o->size + 4;
  char *rbuf = malloc(total);
  if (!rbuf) die("malloc");
  for (int i = 0; i < o->warm; i++) roundtrip(fd, msg, total, rbuf);
  size_t cap = timed ? 2000000 : (size_t)o->n;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat) die("malloc");
  long calls = 0;
  double t0, t1, cpu0, cpu1, end = 0;
  if (timed) {
    if (o->start <= 0) {
      /* barrier: say READY, then the harness writes "START_EPOCH DURATION" */
      char line[128];
      printf("READY\n");
      fflush(stdout);
      if (!fgets(line, sizeof line, stdin) || sscanf(line, "%lf %lf", &o->start, &o->dur) != 2)
        fail("timed: expected 'START DURATION' on stdin");
    }
    sleep_until_wall(o->start);
    end = now_mono() + o->dur;
  }
  cpu0 = proc_cpu(o->pid);
  t0 = now_mono();
  for (;;) {
    if (timed ? calls >= 100000000 : calls >= o->n) break;
    double a = now_mono();
    if (timed && a >= end) break;
    roundtrip(fd, msg, total, rbuf);
    double b = now_mono();
    if ((size_t)calls < cap) lat[calls] = b - a;
    calls++;
  }
  t1 = now_mono();
  cpu1 = proc_cpu(o->pid);
  close(fd);
  if (timed) print_samples(lat, (size_t)calls < cap ? (size_t)calls : cap);
  print_result(scenario, calls, t1 - t0, lat, (size_t)calls < cap ? (size_t)calls : cap,
               cpu0, cpu1, strcmp(scenario, "echo") ? 0 : (double)calls * o->size * 2);
  free(lat); free(msg); free(rbuf);
  return 0;
}

static int cmd_oneway(opts_t *o) {
  int fd = dial(o->port);
  char *ow = make_msg(SMALL - 4, 1), *msg = make_msg(SMALL - 4, 0);
  char rbuf[SMALL];
  for (int i = 0; i < o->warm; i++) roundtrip(fd, msg, SMALL, rbuf);
  double cpu0 = proc_cpu(o->pid), t0 = now_mono();
  for (int i = 0; i < o->n; i++) write_all(fd, ow, SMALL);
  roundtrip(fd, msg, SMALL, rbuf);
  double t1 = now_mono(), cpu1 = proc_cpu(o->pid);
  close(fd);
  print_result("oneway", o->n, t1 - t0, NULL, 0, cpu0, cpu1, 0);
  free(ow); free(msg);
  return 0;
}

#define CONNECT_WARM 50 /* connect: warm-up connections (as in the bench's other clients) */

static int cmd_connect(opts_t *o) {
  char *msg = make_msg(SMALL - 4, 0);
  char rbuf[SMALL];
  for (int i = 0; i < (o->warm < CONNECT_WARM ? o->warm : CONNECT_WARM); i++) {
    int fd = dial(o->port);
    roundtrip(fd, msg, SMALL, rbuf);
    close(fd);
  }
  double *lat = malloc((size_t)o->n * sizeof *lat);
  if (!lat) die("malloc");
  double cpu0 = proc_cpu(o->pid), t0 = now_mono();
  for (int i = 0; i < o->n; i++) {
    double a = now_mono();
    int fd = dial(o->port);
    roundtrip(fd, msg, SMALL, rbuf);
    close(fd);
    lat[i] = now_mono() - a;
  }
  double t1 = now_mono(), cpu1 = proc_cpu(o->pid);
  print_result("connect", o->n, t1 - t0, lat, (size_t)o->n, cpu0, cpu1, 0);
  free(lat); free(msg);
  return 0;
}

/* ---- load generator and holder (nonblocking, epoll) ---- */
typedef struct {
  char *p; size_t n;
} blob_t;

static blob_t read_file(const char *path) {
  blob_t b = { 0, 0 };
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n <= 0 || n > (long)MAX_BODY) fail("request file empty or too large");
  b.p = malloc((size_t)n);
  if (!b.p) die("malloc");
  if (fread(b.p, 1, (size_t)n, f) != (size_t)n) die("fread");
  b.n = (size_t)n;
  fclose(f);
  return b;
}

typedef struct {
  int fd;
  int phase;            /* 0 handshake pending, 1 running */
  size_t got;           /* bytes of the current reply read so far */
  size_t want;          /* reply length once known (0: header not complete) */
  unsigned char hdr[24];
  double sent_at;
} lconn_t;

static int pyro_proto;

/* Feed bytes of the current reply; returns 1 when it is complete, -1 on garbage. */
static int reply_feed(lconn_t *c, const unsigned char *p, size_t n, size_t *used, size_t floor_len) {
  size_t i = 0;
  if (!pyro_proto) {
    size_t take = floor_len - c->got;
    if (take > n) take = n;
    c->got += take; *used = take;
    if (c->got == floor_len) { c->got = 0; return 1; }
    return 0;
  }
  while (c->want == 0 && i < n) {
    c->hdr[c->got++] = p[i++];
    if (c->got == 24) {
      if (memcmp(c->hdr, "PYRO", 4) != 0) return -1;
      uint32_t dl = ((uint32_t)c->hdr[12] << 24) | ((uint32_t)c->hdr[13] << 16) |
                    ((uint32_t)c->hdr[14] << 8) | c->hdr[15];
      uint32_t al = ((uint32_t)c->hdr[18] << 8) | c->hdr[19];
      c->want = 24 + (size_t)dl + al;
    }
  }
  if (c->want) {
    size_t take = c->want - c->got;
    if (take > n - i) take = n - i;
    c->got += take; i += take;
    *used = i;
    if (c->got == c->want) { c->got = 0; c->want = 0; return 1; }
    return 0;
  }
  *used = i;
  return 0;
}

static int dial_nb(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int tries = 0; connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0; tries++) {
    if (tries > 50) die("connect");
    usleep(20000);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void send_nb(int fd, const char *p, size_t n) {
  /* requests are small (they fit the socket buffer): a short write is unexpected */
  size_t off = 0;
  for (int spins = 0; off < n && spins < 1000000; spins++) {
    ssize_t w = write(fd, p + off, n - off);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      die("write");
    }
    off += (size_t)w;
  }
  if (off < n) fail("could not send a request");
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* Open conns connections and complete the handshake (pyro) or one round trip (floor)
 * on each; connections are registered in ep. */
static lconn_t *open_conns(opts_t *o, int ep, blob_t *hello, blob_t *req) {
  lconn_t *cs = calloc((size_t)o->conns, sizeof *cs);
  if (!cs) die("calloc");
  unsigned char buf[65536];
  int batch = 200;
  for (int base = 0; base < o->conns; base += batch) {
    int top = base + batch < o->conns ? base + batch : o->conns;
    for (int i = base; i < top; i++) {
      cs[i].fd = dial_nb(o->port);
      struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cs[i] };
      if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
      if (pyro_proto) send_nb(cs[i].fd, hello->p, hello->n);
      else send_nb(cs[i].fd, req->p, req->n);
    }
    int pending = top - base;
    struct epoll_event evs[256];
    double deadline = now_mono() + 30;
    while (pending > 0) {
      if (now_mono() > deadline) fail("handshakes did not complete within 30 s");
      int n = epoll_wait(ep, evs, 256, 1000);
      for (int k = 0; k < n; k++) {
        lconn_t *c = evs[k].data.ptr;
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r == 0) fail("server closed a connection during the handshake");
        if (r < 0) { if (errno == EAGAIN || errno == EINTR) continue; die("read"); }
        size_t off = 0;
        while (off < (size_t)r) {
          size_t used = 0;
          int done = reply_feed(c, buf + off, (size_t)r - off, &used, req->n);
          if (done < 0) fail("bad reply during the handshake");
          off += used;
          if (done == 1) { c->phase = 1; pending--; }
          if (used == 0) break;
        }
      }
    }
  }
  return cs;
}

static int cmd_load(opts_t *o) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  pyro_proto = strcmp(o->proto, "pyro") == 0;
  blob_t req, hello = { 0, 0 };
  if (pyro_proto) {
    if (!o->req || !o->hello) fail("--proto pyro needs --req and --hello files");
    req = read_file(o->req);
    hello = read_file(o->hello);
  } else {
    char *m = make_msg(SMALL - 4, 0);
    req.p = m; req.n = SMALL;
  }
  int ep = epoll_create1(0);
  lconn_t *cs = open_conns(o, ep, &hello, &req);
  if (o->start > 0) sleep_until_wall(o->start);
  size_t cap = 4000000, nlat = 0;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat) die("malloc");
  double t0 = now_mono(), end = t0 + o->dur, cpu0 = proc_cpu(o->pid);
  for (int i = 0; i < o->conns; i++) {
    cs[i].sent_at = now_mono();
    send_nb(cs[i].fd, req.p, req.n);
  }
  long calls = 0;
  unsigned char buf[65536];
  struct epoll_event evs[512];
  int open_count = o->conns;
  while (open_count > 0) {
    int n = epoll_wait(ep, evs, 512, 1000);
    double t = now_mono();
    if (n == 0 && t > end + 10) fail("replies stopped coming");
    for (int k = 0; k < n; k++) {
      lconn_t *c = evs[k].data.ptr;
      ssize_t r = read(c->fd, buf, sizeof buf);
      if (r == 0) fail("server closed a connection");
      if (r < 0) { if (errno == EAGAIN || errno == EINTR) continue; die("read"); }
      size_t off = 0;
      while (off < (size_t)r) {
        size_t used = 0;
        int done = reply_feed(c, buf + off, (size_t)r - off, &used, req.n);
        if (done < 0) fail("bad reply");
        off += used;
        if (done == 1) {
          calls++;
          if (nlat < cap) lat[nlat++] = t - c->sent_at;
          if (t < end) {
            c->sent_at = t;
            send_nb(c->fd, req.p, req.n);
          } else {
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            open_count--;
          }
        }
        if (used == 0) break;
      }
    }
  }
  double t1 = now_mono(), cpu1 = proc_cpu(o->pid);
  for (int i = 0; i < o->conns; i++) close(cs[i].fd);
  print_result("load", calls, t1 - t0, lat, nlat, cpu0, cpu1, 0);
  return 0;
}

static int cmd_hold(opts_t *o) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_term);
  pyro_proto = strcmp(o->proto, "pyro") == 0;
  blob_t req = { make_msg(SMALL - 4, 0), SMALL }, hello = { 0, 0 };
  if (pyro_proto) {
    if (!o->hello) fail("--proto pyro needs --hello");
    hello = read_file(o->hello);
  }
  int ep = epoll_create1(0);
  double t0 = now_mono();
  lconn_t *cs = open_conns(o, ep, &hello, &req);
  printf("{\"scenario\":\"hold\",\"conns\":%d,\"secs\":%.3f,\"server_rss_kb\":%ld}\n", o->conns,
         now_mono() - t0, proc_rss_kb(o->pid));
  fflush(stdout);
  /* idle until stdin closes (the harness holds our stdin) or SIGTERM; bounded: 1 hour */
  char b[64];
  for (int i = 0; i < 3600 && !stop_flag; i++) {
    struct timeval tv = { 1, 0 };
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(0, &rs);
    int n = select(1, &rs, NULL, NULL, &tv);
    if (n > 0 && read(0, b, sizeof b) <= 0) break;
  }
  for (int i = 0; i < o->conns; i++) close(cs[i].fd);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: floor server [--handoff]\n"
          "       floor seq|oneway|echo|connect|timed|load|hold --port P [--pid SERVERPID]\n"
          "             [--n N] [--size BYTES] [--warm N] [--conns C] [--dur S] [--start EPOCH]\n"
          "             [--proto floor|pyro --req FILE --hello FILE]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  const char *cmd = argv[1];
  if (!strcmp(cmd, "server")) return cmd_server(argc, argv);
  opts_t o;
  parse_opts(argc - 2, argv + 2, &o);
  signal(SIGPIPE, SIG_IGN);
  if (!strcmp(cmd, "seq")) return cmd_seq(&o, "seq", 0);
  if (!strcmp(cmd, "echo")) return cmd_seq(&o, "echo", 0);
  if (!strcmp(cmd, "timed")) return cmd_seq(&o, "timed", 1);
  if (!strcmp(cmd, "oneway")) return cmd_oneway(&o);
  if (!strcmp(cmd, "connect")) return cmd_connect(&o);
  if (!strcmp(cmd, "load")) return cmd_load(&o);
  if (!strcmp(cmd, "hold")) return cmd_hold(&o);
  usage();
  return 2;
}
