/*
 * Counters each engine thread keeps in its own cache-line-aligned block. Only the owning thread
 * writes them (plain increments, no atomics on the fast path); JavaScript sums the blocks at scrape
 * time (addon.c stats()) and maps them to Prometheus metrics by NAME (sidecar/metrics.ts), so this
 * list is the one place their order is stated.
 */
#ifndef TPFLEET_STATS_H
#define TPFLEET_STATS_H

#include <stdint.h>

/* Connect latency histogram upper bounds, in microseconds (metrics.ts CONNECT_BUCKETS, in seconds). */
#define CONNECT_BUCKETS_US 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000
#define NCONNECT_BUCKETS 13

/* X(name): every counter, in order. Close results and error reasons mirror metrics.ts's closed sets. */
#define STATS(X)                                                                         \
  X(accepted) X(shed)                                                                    \
  X(closed_ok) X(closed_error) X(closed_timeout) X(closed_shed) X(closed_loop)           \
  X(closed_denied) X(closed_limited) X(closed_selftest)                                 \
  X(err_connect_refused) X(err_connect_timeout) X(err_connect_unreachable)               \
  X(err_upstream_reset) X(err_client_reset) X(err_idle_timeout) X(err_other)             \
  X(err_upstream_proxy)                                                                  \
  X(bytes_up) X(bytes_down)                                                              \
  X(relay_copy_bytes) X(relay_splice_bytes)                                              \
  X(connect_count) X(connect_sum_us)                                                     \
  X(connect_b0) X(connect_b1) X(connect_b2) X(connect_b3) X(connect_b4) X(connect_b5)    \
  X(connect_b6) X(connect_b7) X(connect_b8) X(connect_b9) X(connect_b10) X(connect_b11)  \
  X(connect_b12) X(connect_binf)                                                         \
  X(held) X(hook_asked) X(events_dropped) X(accept_errors) X(fin_with_data)              \
  X(policy_peeked) X(policy_no_name) X(audit_written) X(audit_suppressed)                \
  X(udp_flows_created) X(udp_flows_expired) X(udp_dgrams_up) X(udp_dgrams_down)          \
  X(udp_bytes_up) X(udp_bytes_down) X(udp_drop_flow_cap) X(udp_drop_buffer_full)         \
  X(udp_drop_no_route) X(udp_drop_expired) X(udp_drop_setup_error) X(udp_icmp_errors)   \
  X(udp_gso_sends)

#define STAT_ENUM(n) ST_##n,
enum stat_index { STATS(STAT_ENUM) ST__COUNT };
#undef STAT_ENUM

/* Error reasons, in the order of the err_* counters (ERR_NONE: no error). */
enum err_reason {
  ERR_NONE = 0,
  ERR_CONNECT_REFUSED,
  ERR_CONNECT_TIMEOUT,
  ERR_CONNECT_UNREACHABLE,
  ERR_UPSTREAM_RESET,
  ERR_CLIENT_RESET,
  ERR_IDLE_TIMEOUT,
  ERR_OTHER,
  ERR_UPSTREAM_PROXY, /* an upstream proxy refused the handshake (or spoke something else) */
  ERR_DENIED,         /* the hook or a policy rule said reset: closed_denied, not an error */
  ERR_LIMITED,        /* a rule's per-source limit: closed_limited, not an error */
};

struct stats {
  uint64_t v[ST__COUNT];
} __attribute__((aligned(64)));

extern const char *const STAT_NAMES[ST__COUNT];

/* Only the owning thread writes a counter; JS reads it with a relaxed load at scrape time. A
 * relaxed store (a plain mov on x86-64) keeps that free of data races without a locked add. */
#define STAT_ADD(t, k, n) __atomic_store_n(&(t)->st->v[k], (t)->st->v[k] + (uint64_t)(n), __ATOMIC_RELAXED)
#define STAT_SUB(t, k, n) __atomic_store_n(&(t)->st->v[k], (t)->st->v[k] - (uint64_t)(n), __ATOMIC_RELAXED)

#endif
