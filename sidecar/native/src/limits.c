#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"

#define BUCKETS 4096
#define STRIPES 64
#define MAX_ENTRIES 200000
/* An entry with nothing open and a full bucket carries no state worth keeping after this long. */
#define IDLE_MS 60000

struct entry {
  struct entry *next;
  uint64_t key;
  struct endpoint src;
  double tokens;
  int64_t last_ms;
  uint32_t open;
};

struct limits {
  pthread_mutex_t stripe[STRIPES];
  struct entry *bucket[BUCKETS];
  _Atomic uint32_t entries;
};

struct limits *limits_new(void) {
  struct limits *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  for (int i = 0; i < STRIPES; i++) pthread_mutex_init(&l->stripe[i], NULL);
  return l;
}

void limits_free(struct limits *l) {
  if (!l) return;
  for (int b = 0; b < BUCKETS; b++)
    for (struct entry *e = l->bucket[b], *n; e; e = n) n = e->next, free(e);
  for (int i = 0; i < STRIPES; i++) pthread_mutex_destroy(&l->stripe[i]);
  free(l);
}

static uint32_t slot(uint64_t key, const struct endpoint *src) {
  uint64_t h = key ^ 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 16; i++) h = (h ^ src->addr[i]) * 0x100000001b3ull;
  return (uint32_t)(h >> 20) % BUCKETS;
}

static bool same(const struct entry *e, uint64_t key, const struct endpoint *src) {
  return e->key == key && e->src.family == src->family && memcmp(e->src.addr, src->addr, 16) == 0;
}

/* Finds the entry, dropping idle ones met on the way; creates it when asked and there is room. */
static struct entry *find(struct limits *l, uint32_t b, uint64_t key, const struct endpoint *src, bool create,
                          uint32_t burst, int64_t now) {
  for (struct entry **p = &l->bucket[b]; *p;) {
    struct entry *e = *p;
    if (same(e, key, src)) return e;
    if (e->open == 0 && now - e->last_ms > IDLE_MS) {
      *p = e->next;
      free(e);
      atomic_fetch_sub(&l->entries, 1);
      continue;
    }
    p = &e->next;
  }
  if (!create || atomic_load(&l->entries) >= MAX_ENTRIES) return NULL;
  struct entry *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->key = key, e->src = *src, e->tokens = burst, e->last_ms = now;
  e->next = l->bucket[b];
  l->bucket[b] = e;
  atomic_fetch_add(&l->entries, 1);
  return e;
}

bool limits_admit(struct limits *l, uint64_t key, const struct endpoint *src, uint32_t rate, uint32_t burst,
                  uint32_t max_open, int64_t now_ms) {
  uint32_t b = slot(key, src);
  if (burst == 0) burst = rate;
  pthread_mutex_lock(&l->stripe[b % STRIPES]);
  struct entry *e = find(l, b, key, src, true, burst, now_ms);
  bool ok = true;
  if (e) {
    if (rate > 0) {
      e->tokens += (double)rate * (double)(now_ms - e->last_ms) / 1000.0;
      if (e->tokens > burst) e->tokens = burst;
      if (e->tokens < 1.0) ok = false;
    }
    if (ok && max_open > 0 && e->open >= max_open) ok = false;
    e->last_ms = now_ms;
    if (ok) {
      if (rate > 0) e->tokens -= 1.0;
      e->open++;
    }
  }
  pthread_mutex_unlock(&l->stripe[b % STRIPES]);
  return ok;
}

void limits_release(struct limits *l, uint64_t key, const struct endpoint *src) {
  uint32_t b = slot(key, src);
  pthread_mutex_lock(&l->stripe[b % STRIPES]);
  struct entry *e = find(l, b, key, src, false, 0, 0);
  if (e && e->open > 0) e->open--;
  pthread_mutex_unlock(&l->stripe[b % STRIPES]);
}
