/*
 * Engine threads: start-up (listeners, pinning), the event loop, timers and commands from JS.
 *
 * The loop of one thread, each turn: epoll_wait (edge-triggered, every fd registered once), dispatch
 * each event to its socket, pump connections whose budget ran out last turn (ready list), accept
 * again if a batch hit its cap, sweep the timer lists, free what closed during the turn.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "decide.h"
#include "events.h"
#include "pool.h"
#include "udp.h"

#define STAT_NAME(n) #n,
const char *const STAT_NAMES[ST__COUNT] = {STATS(STAT_NAME)};
#undef STAT_NAME

/* Held connections are few; their list is scanned whole at most this often. */
#define HELD_SCAN_MS 100
#define MAX_EVENTS 256

int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mono_ms(void) { return mono_ns() / 1000000; }

static int64_t opt_ms(_Atomic int64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

/* --- commands (JS -> thread) ------------------------------------------------------------------ */

void engine_send(struct engine *e, int thread, const struct cmd *c) {
  for (int i = 0; i < e->nthreads; i++) {
    if (thread >= 0 && i != thread) continue;
    struct thread *t = &e->threads[i];
    pthread_mutex_lock(&t->cmds.mu);
    if (t->cmds.len == t->cmds.cap) {
      uint32_t cap = t->cmds.cap ? 2 * t->cmds.cap : 64;
      struct cmd *items = realloc(t->cmds.items, cap * sizeof *items);
      if (!items) {
        pthread_mutex_unlock(&t->cmds.mu);
        fprintf(stderr, "tpfleet engine: out of memory for a command\n");
        abort();
      }
      t->cmds.items = items;
      t->cmds.cap = cap;
    }
    t->cmds.items[t->cmds.len++] = *c;
    pthread_mutex_unlock(&t->cmds.mu);
    uint64_t one = 1;
    if (write(t->wake.fd, &one, sizeof one) < 0 && errno != EAGAIN) perror("tpfleet engine: eventfd write");
  }
}

static void abort_list(struct thread *t, struct tlist *l, int reason) {
  while (l->head) conn_abort(t, l->head, reason);
}

static void close_listeners(struct thread *t) {
  for (int i = 0; i < t->nlisteners; i++) {
    if (t->listeners[i].fd >= 0) close(t->listeners[i].fd);
    t->listeners[i].fd = -1;
  }
}

static void run_commands(struct thread *t) {
  uint64_t n;
  if (read(t->wake.fd, &n, sizeof n) < 0 && errno != EAGAIN) return engine_fatal(t, "eventfd read", errno);
  pthread_mutex_lock(&t->cmds.mu);
  uint32_t len = t->cmds.len;
  struct cmd *items = t->cmds.items;
  t->cmds.items = NULL;
  t->cmds.len = t->cmds.cap = 0;
  pthread_mutex_unlock(&t->cmds.mu);
  for (uint32_t i = 0; i < len; i++) {
    const struct cmd *c = &items[i];
    switch (c->kind) {
    case CMD_DRAIN:
      /* Stop accepting; open connections go on. With net.ipv4.tcp_migrate_req the kernel moves
       * connections still in our accept queue to another listener of the port (the next pod's). */
      close_listeners(t);
      udp_close_listeners(t); /* flows go on: their own sockets receive their datagrams */
      t->draining = true;
      break;
    case CMD_CLOSE_ALL:
      abort_list(t, &t->held, ERR_OTHER);
      abort_list(t, &t->connecting, ERR_OTHER);
      abort_list(t, &t->idle, ERR_OTHER);
      udp_close_all(t);
      break;
    case CMD_STOP: t->stop = true; break;
    case CMD_VERDICT: conn_verdict(t, c); break;
    case CMD_OPTIONS: break; /* options are read from engine->opt each turn; this only wakes us */
    }
  }
  free(items);
}

/* --- timers ------------------------------------------------------------------------------------- */

static void sweep_connecting(struct thread *t) {
  int64_t limit = opt_ms(&t->e->opt.connect_timeout_ms);
  struct conn *c;
  while ((c = t->connecting.head) && c->started_ns / 1000000 + limit <= t->now_ms) conn_abort(t, c, ERR_CONNECT_TIMEOUT);
}

/*
 * Lazy LRU: activity only stamps active_ms; nothing moves on the data path. The list is sorted by
 * queued_ms (the stamp when the connection was last placed), so only a head whose placement is older
 * than the timeout needs a look: nothing behind it can be due. Such a head was either idle (expired)
 * or active since (re-placed by its new stamp, usually near the tail). One comparison per turn when
 * nothing is due, whatever the number of connections.
 */
static void idle_requeue(struct tlist *l, struct conn *c) {
  tlist_remove(l, c);
  c->queued_ms = c->active_ms;
  struct conn *after = l->tail;
  while (after && after->queued_ms > c->queued_ms) after = after->tprev;
  c->tprev = after;
  c->tnext = after ? after->tnext : l->head;
  if (c->tnext) c->tnext->tprev = c;
  else l->tail = c;
  if (after) after->tnext = c;
  else l->head = c;
}

static void sweep_idle(struct thread *t) {
  int64_t limit = opt_ms(&t->e->opt.idle_timeout_ms);
  struct conn *c;
  while ((c = t->idle.head) && c->queued_ms + limit <= t->now_ms) {
    if (c->active_ms != c->queued_ms) idle_requeue(&t->idle, c);
    else conn_abort(t, c, ERR_IDLE_TIMEOUT);
  }
}

static void sweep_held(struct thread *t) {
  if (!t->held.head || t->now_ms - t->held_scan_ms < HELD_SCAN_MS) return;
  t->held_scan_ms = t->now_ms;
  for (struct conn *c = t->held.head, *next; c; c = next) {
    next = c->tnext;
    if (c->deadline_ms > t->now_ms) continue;
    if (c->state != C_HELD) conn_abort(t, c, ERR_CONNECT_TIMEOUT); /* an upstream proxy: connect + handshake */
    else if (c->policy_peek) decide_timeout(t, c);                   /* no name came: decide without one */
    else if (c->asked) conn_abort(t, c, ERR_OTHER);                  /* JS did not answer in time */
    else conn_ask(t, c, NULL, 0, EVF_TIMEOUT); /* no (more) bytes came: decide with what is known */
  }
}

/* Milliseconds epoll may sleep: until the earliest deadline, at most a second (the heartbeat). */
static int next_timeout(struct thread *t) {
  if (t->ready || t->accept_more || t->stop) return 0;
  int64_t next = t->now_ms + 1000;
  if (t->connecting.head) {
    int64_t d = t->connecting.head->started_ns / 1000000 + opt_ms(&t->e->opt.connect_timeout_ms);
    if (d < next) next = d;
  }
  if (t->idle.head) {
    int64_t d = t->idle.head->queued_ms + opt_ms(&t->e->opt.idle_timeout_ms);
    if (d < next) next = d;
  }
  if (t->held.head && t->held_scan_ms + HELD_SCAN_MS < next) next = t->held_scan_ms + HELD_SCAN_MS;
  if (t->accept_retry_ms && t->accept_retry_ms < next) next = t->accept_retry_ms;
  int64_t udp = udp_next_deadline(t);
  if (udp < next) next = udp;
  return next <= t->now_ms ? 0 : (int)(next - t->now_ms);
}

/* --- the loop -------------------------------------------------------------------------------------- */

static struct conn *conn_of(struct side *s) {
  return s->kind == K_CLIENT ? (struct conn *)((char *)s - offsetof(struct conn, c))
                             : (struct conn *)((char *)s - offsetof(struct conn, u));
}

static void on_socket(struct thread *t, struct side *s, uint32_t ev) {
  struct conn *c = conn_of(s);
  if (c->state == C_DEAD || s->fd < 0) return;
  if (ev & EPOLLIN) s->flags |= S_READABLE;
  if (ev & EPOLLOUT) s->flags |= S_WRITABLE;
  if (ev & EPOLLRDHUP) s->flags |= S_RDHUP;
  /* An error or hang-up: the next read or write reports it (or reads what is still queued). */
  if (ev & (EPOLLERR | EPOLLHUP)) s->flags |= S_READABLE | S_WRITABLE;
  if (c->state == C_CONNECTING) {
    if (s == &c->u && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return conn_connected(t, c);
    if (s == &c->c && (ev & EPOLLERR)) return conn_abort(t, c, ERR_CLIENT_RESET); /* no point connecting */
    return;
  }
  if (c->state == C_HANDSHAKE) {
    if (s == &c->c && (ev & EPOLLERR)) return conn_abort(t, c, ERR_CLIENT_RESET);
    if (s == &c->u) conn_handshake_io(t, c);
    return;
  }
  if (c->state == C_HELD) {
    if (ev & EPOLLERR) return conn_abort(t, c, ERR_CLIENT_RESET);
    return c->policy_peek ? decide_readable(t, c) : conn_held_readable(t, c);
  }
  relay_pump(t, c);
}

static void dispatch(struct thread *t, struct epoll_event *evs, int n) {
  for (int i = 0; i < n; i++) {
    struct side *s = evs[i].data.ptr;
    if (s->kind == K_WAKE) run_commands(t);
    else if (s->kind >= K_UDP_LISTENER) udp_event(t, s);
    else if (s->kind == K_LISTENER) {
      if (s->fd >= 0) conn_accept(t, s);
    } else on_socket(t, s, evs[i].events);
  }
}

static void run_ready(struct thread *t) {
  struct conn *list = t->ready;
  t->ready = NULL;
  while (list) {
    struct conn *c = list;
    list = c->rnext;
    c->queued = 0;
    if (c->state == C_OPEN) relay_pump(t, c);
  }
}

static void free_dead(struct thread *t) {
  while (t->dead) {
    struct conn *c = t->dead;
    t->dead = c->rnext;
    free(c);
  }
}

static void accept_again(struct thread *t) {
  if (!t->accept_more && !(t->accept_retry_ms && t->accept_retry_ms <= t->now_ms)) return;
  t->accept_more = false;
  t->accept_retry_ms = 0;
  for (int i = 0; i < t->nlisteners; i++)
    if (t->listeners[i].fd >= 0) conn_accept(t, &t->listeners[i]);
}

/* Test-only fault injection (engine.ts reads TPFLEET_ENGINE_FAULT): proves a broken engine never
 * hangs silently. Kind 1 stalls thread 0 for good (the heartbeat stops), kind 2 makes it fail. */
static void maybe_fault(struct thread *t, int64_t started_ms) {
  struct engine *e = t->e;
  if (t->index != 0 || e->fault_kind == 0 || t->now_ms - started_ms < e->fault_after_ms) return;
  if (e->fault_kind == 1) for (;;) pause();
  engine_fatal(t, "injected fault", EIO);
}

static void teardown(struct thread *t) {
  close_listeners(t);
  abort_list(t, &t->held, ERR_OTHER);
  abort_list(t, &t->connecting, ERR_OTHER);
  abort_list(t, &t->idle, ERR_OTHER);
  udp_close_all(t);
  free_dead(t);
  udp_free_dead(t);
  pool_free_all(t);
}

/* Pins the calling thread to its CPU and reads it back: a thread runs on the CPU it reports, or
 * the start fails (engine.ts exits naming tuning.affinity). */
static void pin(struct thread *t) {
  if (t->cpu < 0) return;
  cpu_set_t want, got;
  CPU_ZERO(&want);
  CPU_SET(t->cpu, &want);
  t->pinned_ok = pthread_setaffinity_np(pthread_self(), sizeof want, &want) == 0 &&
                 pthread_getaffinity_np(pthread_self(), sizeof got, &got) == 0 && CPU_EQUAL(&want, &got);
}

void *engine_thread_main(void *arg) {
  struct thread *t = arg;
  struct epoll_event evs[MAX_EVENTS];
  char name[16];
  snprintf(name, sizeof name, "tpf-engine-%d", t->index); /* what /proc/<pid>/task/<tid>/comm and top show */
  pthread_setname_np(pthread_self(), name);
  pin(t);
  pthread_barrier_wait(t->started);
  int64_t started_ms = mono_ms();
  while (!t->stop) {
    t->now_ms = mono_ms();
    int n = epoll_wait(t->ep, evs, MAX_EVENTS, next_timeout(t));
    if (n < 0 && errno != EINTR) {
      engine_fatal(t, "epoll_wait", errno);
      break;
    }
    atomic_fetch_add_explicit(&t->loops, 1, memory_order_relaxed);
    t->now_ms = mono_ms();
    if (n > 0) dispatch(t, evs, n);
    run_ready(t);
    if (!t->draining) accept_again(t);
    sweep_connecting(t);
    sweep_idle(t);
    sweep_held(t);
    udp_sweep(t);
    free_dead(t);
    udp_free_dead(t);
    maybe_fault(t, started_ms);
  }
  teardown(t);
  return NULL;
}
