/*
 * stats.c -- reading the call statistics of stats.h: percentiles from the
 * log-linear histogram, and merging (the copies of one exporter on several
 * ports report as one). Recording is inline in stats.h: it runs on every
 * call.
 */
#include "stats.h"

uint64_t sr_stats_bucket_high(int i) {
  if (i < 8) return (uint64_t)i;
  int e = (i >> 3) + 2;
  uint64_t width = (uint64_t)1 << (e - 3);
  uint64_t lo = (uint64_t)(8 + (i & 7)) << (e - 3);
  if (i == SR_STATS_BUCKETS - 1) return UINT64_MAX; /* also holds everything larger */
  return lo + width - 1;
}

uint64_t sr_stats_quantile(const sr_stats_t *s, double q) {
  uint64_t n = 0;
  for (int i = 0; i < SR_STATS_BUCKETS; i++) n += s->buckets[i];
  if (n == 0) return 0;
  if (q > 1) q = 1;
  double r = q * (double)n;
  uint64_t rank = (uint64_t)r;
  if ((double)rank < r) rank++; /* ceil */
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < SR_STATS_BUCKETS; i++) {
    seen += s->buckets[i];
    if (seen >= rank) {
      uint64_t hi = sr_stats_bucket_high(i);
      return hi < s->max_ns ? hi : s->max_ns;
    }
  }
  return s->max_ns;
}

void sr_stats_merge(sr_stats_t *dst, const sr_stats_t *src) {
  dst->calls += src->calls;
  dst->errors += src->errors;
  dst->in_flight += src->in_flight;
  dst->sum_ns += src->sum_ns;
  if (src->max_ns > dst->max_ns) dst->max_ns = src->max_ns;
  for (int i = 0; i < SR_STATS_BUCKETS; i++) dst->buckets[i] += src->buckets[i];
}
