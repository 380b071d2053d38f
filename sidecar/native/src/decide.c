/*
 * Egress policy decisions for one connection, in its engine thread (no JavaScript): by addresses and
 * port at accept when the first candidate rule needs no name; else after peeking at the client's first
 * bytes (a TLS ClientHello's SNI or an HTTP Host, sniff.c) or when the peek timeout expires (a client
 * that waits for the server to speak first then matches only rules that need no name). The decided
 * rule's action: allow (dial the original destination, optionally with a PROXY header), deny (reset),
 * or forward through an upstream proxy (dial it, then its handshake, handshake.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"
#include "decide.h"
#include "handshake.h"
#include "limits.h"
#include "policy.h"
#include "sniff.h"

static void count(struct thread *t, const struct policy *p, int rule, int k) {
  unsigned slot = rule >= 0 ? p->rules[rule].slot : 0;
  uint64_t *c = rule_counter(t->e, t->index, slot, k);
  __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

static struct handshake *new_handshake(struct thread *t, struct conn *c) {
  c->hs = malloc(sizeof *c->hs);
  if (!c->hs) conn_abort(t, c, ERR_OTHER);
  return c->hs;
}

/* Carries out the decision of `rule` (-1: the default action). */
static void apply(struct thread *t, struct conn *c, struct policy *p, int rule) {
  const struct policy_rule *r = rule >= 0 ? &p->rules[rule] : NULL;
  c->rule = (int16_t)rule;
  c->action = (uint8_t)(r ? r->action : p->default_action);
  c->generation = p->generation;
  if (r && (r->rate_per_s || r->max_open)) {
    if (!limits_admit(t->e->limits, r->key, &c->src, r->rate_per_s, r->burst, r->max_open, t->now_ms)) {
      count(t, p, rule, PC_LIMITED);
      return conn_abort(t, c, ERR_LIMITED);
    }
    c->limited = 1;
    c->limit_key = r->key;
  }
  if (c->action == PA_DENY) {
    count(t, p, rule, PC_DENY);
    return conn_abort(t, c, ERR_DENIED);
  }
  if (c->action == PA_ALLOW) {
    count(t, p, rule, PC_ALLOW);
    if (r && r->proxy_protocol) {
      if (!new_handshake(t, c)) return;
      hs_start(c->hs, 0, r->proxy_protocol, &c->src, &c->dst, NULL, NULL, 0, NULL, 0);
    }
    return conn_dial(t, c, &c->dst);
  }
  count(t, p, rule, PC_FORWARD);
  const struct upstream *u = &p->upstreams[r->upstream];
  c->upstream = r->upstream;
  if (!new_handshake(t, c)) return;
  hs_start(c->hs, u->type, r->proxy_protocol, &c->src, &c->dst, c->name, u->user, u->user_len, u->pass, u->pass_len);
  c->deadline_ms = t->now_ms + u->connect_timeout_ms; /* covers the TCP connect and the handshake */
  conn_dial(t, c, &u->addr);
}

/* Decides with the name seen (kind PN_SNI or PN_HOST), or none (kind 0). */
static void finish(struct thread *t, struct conn *c, struct policy *p, int kind, const char *name) {
  uint64_t cand[POLICY_MAX_WORDS];
  policy_match_addr(p, &c->src, &c->dst, cand);
  policy_narrow_by_name(p, kind, kind ? name : NULL, cand);
  if (kind && !(c->name = strdup(name))) return conn_abort(t, c, ERR_OTHER);
  c->name_kind = (uint8_t)kind;
  if (!kind) STAT_ADD(t, ST_policy_no_name, 1);
  apply(t, c, p, policy_first(p, cand));
}

bool decide_at_accept(struct thread *t, struct conn *c) {
  struct policy *p = atomic_load_explicit(&t->e->policy, memory_order_acquire);
  if (!p) return false;
  uint64_t cand[POLICY_MAX_WORDS];
  policy_match_addr(p, &c->src, &c->dst, cand);
  int first = policy_first(p, cand);
  if (first < 0 || p->rules[first].needs == 0) {
    apply(t, c, p, first);
    return true;
  }
  /* The first candidate needs a name: hold the connection until its first bytes say which. */
  c->state = C_HELD;
  c->policy_peek = 1;
  c->deadline_ms = t->now_ms + p->peek_timeout_ms;
  tlist_push(&t->held, c);
  STAT_ADD(t, ST_policy_peeked, 1);
  return true;
}

/* Leaves the held state (the hold list) before the decision dials. */
static struct policy *unhold(struct thread *t, struct conn *c) {
  tlist_remove(&t->held, c);
  c->state = C_NEW;
  c->policy_peek = 0;
  return atomic_load_explicit(&t->e->policy, memory_order_acquire);
}

void decide_readable(struct thread *t, struct conn *c) {
  struct policy *p = atomic_load_explicit(&t->e->policy, memory_order_acquire);
  size_t max = p ? p->peek_max : PEEK_MAX;
  ssize_t n = recv(c->c.fd, t->copybuf, max, MSG_PEEK);
  if (n < 0 && errno == EAGAIN) return;
  if (n < 0) return conn_abort(t, c, ERR_CLIENT_RESET);
  /* No more bytes will come for the parsers: the client ended its stream, or the peek limit is full. */
  bool last = n == 0 || (size_t)n >= max || (c->c.flags & S_RDHUP);
  char name[254];
  const unsigned char *b = (const unsigned char *)t->copybuf;
  int tls = n > 0 ? sniff_tls_sni(b, (size_t)n, name, sizeof name) : SNIFF_NOT;
  if (tls == SNIFF_NEED_MORE && !last) return;
  int kind = tls == SNIFF_FOUND ? PN_SNI : 0;
  if (tls == SNIFF_NOT || tls == SNIFF_NEED_MORE) {
    int http = n > 0 ? sniff_http_host(b, (size_t)n, name, sizeof name) : SNIFF_NOT;
    if (http == SNIFF_NEED_MORE && !last) return;
    if (http == SNIFF_FOUND) kind = PN_HOST;
  }
  p = unhold(t, c);
  if (!p) return conn_dial(t, c, &c->dst); /* the policy was removed meanwhile: no rule, no filter */
  finish(t, c, p, kind, name);
}

void decide_timeout(struct thread *t, struct conn *c) {
  struct policy *p = unhold(t, c);
  if (!p) return conn_dial(t, c, &c->dst);
  finish(t, c, p, 0, NULL);
}
