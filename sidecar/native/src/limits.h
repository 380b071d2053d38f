/*
 * Per-source limits of policy rules (limits.c): new connections per second (a token bucket) and open
 * connections, per (rule, client address), shared by every engine thread (SO_REUSEPORT spreads one
 * client's connections over all of them, so per-thread buckets would multiply the limit).
 */
#ifndef TPFLEET_LIMITS_H
#define TPFLEET_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

struct limits;

struct limits *limits_new(void);
void limits_free(struct limits *l);
/* One new connection of src under the rule (key: its name's hash): true when within both limits, and
 * then counted as open until limits_release(). A source the table has no room for is not limited. */
bool limits_admit(struct limits *l, uint64_t key, const struct endpoint *src, uint32_t rate, uint32_t burst,
                  uint32_t max_open, int64_t now_ms);
void limits_release(struct limits *l, uint64_t key, const struct endpoint *src);

#endif
