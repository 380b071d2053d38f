/*
 * Events from an engine thread to JavaScript: a single-producer (the engine thread) single-consumer
 * (the JS thread) ring per thread. Produced only when something asked for them: per-connection
 * events when connection logging is on, decision requests when the hook is on, warnings and the
 * fatal error always. A full ring drops the event and counts it (events_dropped), except a decision
 * request: its connection is reset instead (the thread must never wait for JavaScript).
 */
#ifndef TPFLEET_EVENTS_H
#define TPFLEET_EVENTS_H

#include "engine.h"

#define RING_CAPACITY 8192 /* power of two */

enum ev_kind { EV_ACCEPTED = 1, EV_CLOSED, EV_DECIDE, EV_WARN, EV_FATAL };

enum ev_flags {
  EVF_EOF = 1,     /* decide: the client ended its stream (or reset it) before the hook was satisfied */
  EVF_TIMEOUT = 2, /* decide: the hold timeout expired: decide with what is there */
};

struct event {
  uint8_t kind;
  uint8_t thread;
  uint8_t reason; /* closed: enum err_reason */
  uint8_t flags;
  int32_t err; /* warn/fatal: errno */
  uint64_t id;
  struct endpoint src, dst;
  uint64_t bytes_up, bytes_down;
  uint64_t duration_us;
  const char *what; /* warn/fatal: a static text naming the call that failed */
  char *peek;       /* decide: the client's first bytes; closed: the SNI/Host seen; malloc'd, freed by the consumer */
  uint32_t peek_len;
  /* closed: the policy decision, and whether this event is an audit line (else a debug log) */
  int16_t rule;
  uint8_t action, upstream, name_kind, audit;
  uint32_t generation;
};

struct event_ring {
  _Atomic uint64_t head; /* next to read (consumer) */
  _Atomic uint64_t tail; /* next to write (producer) */
  struct event items[RING_CAPACITY];
};

struct event_ring *ring_new(void);
/* Producer side. false when the ring is full (the event was not queued). Wakes JS when needed. */
bool ring_push(struct thread *t, const struct event *ev);
/* Consumer side: the next event or false. */
bool ring_pop(struct event_ring *r, struct event *out);

/* Rate-limited warning (one a second a thread): accept failures and the like. */
void engine_warn(struct thread *t, const char *what, int err);
/* The thread cannot go on: report, stop this thread; the process exits (addon.c / engine.ts). */
void engine_fatal(struct thread *t, const char *what, int err);

#endif
