/*
 * stats.h -- call statistics of one exported object: counters and a latency
 * histogram of fixed size (bounded memory whatever the number of calls).
 *
 * The histogram has log-linear buckets, as HdrHistogram with 3 significant
 * bits: values below 8 ns have a bucket each; above, every power of two is
 * split into 8 equal buckets, so a bucket's width is at most 1/8 of its
 * lower edge. A percentile is reported as the upper edge of the bucket that
 * holds it (never below the true value, at most 12.5 % above it), capped at
 * the largest value recorded. Values from 2^SR_STATS_MAX_EXP ns (about 73
 * minutes) on share the last bucket.
 *
 * Lua-free; one thread (the Lua thread) updates and reads a given sr_stats_t.
 */
#ifndef SR_STATS_H
#define SR_STATS_H

#include <stdint.h>

#define SR_STATS_MAX_EXP 42
#define SR_STATS_BUCKETS ((SR_STATS_MAX_EXP - 2) * 8)

typedef struct sr_stats_s {
  uint64_t calls;     /* calls finished (returned, raised or refused) */
  uint64_t errors;    /* of those, the ones answered with an exception */
  uint64_t in_flight; /* calls started and not finished */
  uint64_t sum_ns;    /* latencies of the finished calls, summed */
  uint64_t max_ns;    /* the largest latency recorded */
  uint64_t buckets[SR_STATS_BUCKETS];
} sr_stats_t;

/* The bucket a latency of ns falls in. */
static inline int sr_stats_bucket(uint64_t ns) {
  if (ns < 8) return (int)ns;
  int e = 63 - __builtin_clzll(ns); /* 2^e <= ns < 2^(e+1), e >= 3 */
  if (e >= SR_STATS_MAX_EXP) return SR_STATS_BUCKETS - 1;
  return ((e - 2) << 3) | (int)((ns >> (e - 3)) & 7);
}

/* A call started. */
static inline void sr_stats_begin(sr_stats_t *s) { s->in_flight++; }

/* A call started with sr_stats_begin finished after ns nanoseconds; failed:
 * it was answered with an exception. */
static inline void sr_stats_end(sr_stats_t *s, uint64_t ns, int failed) {
  s->in_flight--;
  s->calls++;
  s->errors += failed != 0;
  s->sum_ns += ns;
  if (ns > s->max_ns) s->max_ns = ns;
  s->buckets[sr_stats_bucket(ns)]++;
}

/* The largest value bucket i holds. */
uint64_t sr_stats_bucket_high(int i);

/* The q-quantile (0 < q <= 1) of the latencies recorded, in ns: the upper
 * edge of the bucket holding the value of rank ceil(q * n), capped at
 * max_ns; 0 when nothing was recorded. */
uint64_t sr_stats_quantile(const sr_stats_t *s, double q);

/* Adds src's counts to dst (the statistics of both as one). */
void sr_stats_merge(sr_stats_t *dst, const sr_stats_t *src);

#endif
