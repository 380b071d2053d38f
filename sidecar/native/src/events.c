#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events.h"

struct event_ring *ring_new(void) {
  /* calloc: the pages stay untouched (no RSS) until events are produced. */
  return calloc(1, sizeof(struct event_ring));
}

static void notify(struct engine *e) {
  /* One wake-up per batch: JS clears the flag before draining, so nothing is missed. */
  if (atomic_exchange_explicit(&e->notify_pending, 1, memory_order_acq_rel) == 0 && e->notify) e->notify(e);
}

bool ring_push(struct thread *t, const struct event *ev) {
  struct event_ring *r = t->ring;
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
  if (tail - head >= RING_CAPACITY) {
    STAT_ADD(t, ST_events_dropped, 1);
    return false;
  }
  r->items[tail & (RING_CAPACITY - 1)] = *ev;
  r->items[tail & (RING_CAPACITY - 1)].thread = (uint8_t)t->index;
  atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
  notify(t->e);
  return true;
}

bool ring_pop(struct event_ring *r, struct event *out) {
  uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
  if (head == tail) return false;
  *out = r->items[head & (RING_CAPACITY - 1)];
  atomic_store_explicit(&r->head, head + 1, memory_order_release);
  return true;
}

void engine_warn(struct thread *t, const char *what, int err) {
  if (t->now_ms - t->warned_ms < 1000) return;
  t->warned_ms = t->now_ms;
  struct event ev = {.kind = EV_WARN, .err = err, .what = what};
  ring_push(t, &ev);
}

void engine_fatal(struct thread *t, const char *what, int err) {
  int expected = 0;
  atomic_compare_exchange_strong(&t->e->fatal, &expected, 1);
  fprintf(stderr, "tpfleet engine thread %d: %s: %s\n", t->index, what, strerror(err));
  struct event ev = {.kind = EV_FATAL, .err = err, .what = what};
  if (!ring_push(t, &ev)) notify(t->e);
  t->stop = true;
}
