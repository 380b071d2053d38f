/*
 * Egress policy as the engine runs it (policy.c): a table compiled by TypeScript (sidecar/policy.ts),
 * which owns every rule and its order; the engine only looks up. The rules are first-match in order;
 * each lookup returns a bitset of the rules a connection could still match, and the lowest set bit
 * wins. So 1,000 rules cost a few binary searches and a bitset AND per connection, not 1,000 tests.
 *
 * Blob layout (little-endian, u32 unless said): magic "TPPL", version 1, nrules, words, default action,
 * nupstreams, peek bytes, peek timeout ms; rules; the nameless bitset; interval tables dst4, dst6, src4,
 * src6, ports; name tables sni exact, sni wildcard, host exact, host wildcard; the string blob;
 * upstreams. See policy.c load() for each record, policy.ts for the writer.
 */
#ifndef TPFLEET_POLICY_H
#define TPFLEET_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

#define POLICY_MAX_RULES 4096
#define POLICY_MAX_WORDS (POLICY_MAX_RULES / 64)
#define POLICY_MAX_UPSTREAMS 32

enum policy_action { PA_ALLOW = 0, PA_DENY = 1, PA_FORWARD = 2 };
enum policy_needs { PN_SNI = 1, PN_HOST = 2 };
enum upstream_type { UP_CONNECT = 1, UP_SOCKS5 = 2 };
/* Per-rule counters, kept by rule name (engine->rule_counters), slot 0 for the default action. */
enum policy_counter { PC_ALLOW, PC_DENY, PC_FORWARD, PC_LIMITED, PC__COUNT };

struct policy_rule {
  uint8_t action, upstream, needs, proxy_protocol; /* proxy_protocol: 0 none, 1 v1, 2 v2 */
  uint32_t rate_per_s, burst, max_open;            /* 0: no limit */
  uint64_t key;                                    /* FNV-1a of the rule's name: limits survive reloads */
  uint16_t slot;                                   /* its counters in engine->rule_counters (by name) */
};

struct interval_table {
  uint32_t count, keylen; /* keylen 4 (IPv4, ports) or 16 (IPv6); entries: key then words of bits */
  const unsigned char *entries;
};

struct name_table {
  uint32_t count; /* entries: u64 hash, u32 offset, u32 length, then words of bits; sorted by hash */
  const unsigned char *entries;
};

struct upstream {
  uint8_t type;
  struct endpoint addr;
  uint32_t connect_timeout_ms;
  const char *user, *pass; /* into the string blob; lengths below */
  uint32_t user_len, pass_len;
};

struct policy {
  uint32_t generation; /* set by the engine at install: which names JS uses for audit and metrics */
  uint32_t nrules, words, default_action, peek_max, peek_timeout_ms;
  const struct policy_rule *rules;
  const uint64_t *nameless; /* rules that need no name: they can match without peeking */
  struct interval_table dst4, dst6, src4, src6, ports;
  struct name_table sni, sni_wild, host, host_wild;
  const char *strings;
  uint32_t strings_len;
  uint32_t nupstreams;
  struct upstream upstreams[POLICY_MAX_UPSTREAMS];
  struct policy_rule *rules_mem;
  unsigned char *blob;      /* owned copy of what JS passed */
  struct policy *retired_next;
  uint64_t retired_at[MAX_THREADS]; /* loop counters at retirement: freed once every thread moved on */
};

/* Validates and copies a compiled blob. NULL with *why set when it is malformed. */
struct policy *policy_load(const void *blob, size_t len, const char **why);
void policy_free(struct policy *p);

/* Rules a connection can match from its addresses alone (out: words); the candidates of a decision. */
void policy_match_addr(const struct policy *p, const struct endpoint *src, const struct endpoint *dst, uint64_t *out);
/* Narrows candidates by the name seen (kind: PN_SNI or PN_HOST, name NULL when none was seen). */
void policy_narrow_by_name(const struct policy *p, int kind, const char *name, uint64_t *cand);
/* Lowest set bit, or -1. */
int policy_first(const struct policy *p, const uint64_t *bits);

/* The counter k of a rule slot, in this thread's row (only this thread writes it). */
static inline uint64_t *rule_counter(struct engine *e, int thread, unsigned slot, int k) {
  return &e->rule_counters[((size_t)thread * RULE_SLOTS + slot) * PC__COUNT + (size_t)k];
}

#endif
