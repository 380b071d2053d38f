/* Engine start-up and shutdown: per-thread epoll, eventfd, listeners, buffers; threads. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine.h"
#include "events.h"
#include "limits.h"
#include "policy.h"
#include "udp.h"

#define HELD_BUCKETS 1024

static int add(int ep, struct side *s, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = s};
  return epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void free_thread(struct thread *t) {
  for (int i = 0; i < t->nlisteners; i++)
    if (t->listeners[i].fd >= 0) close(t->listeners[i].fd);
  t->nlisteners = 0;
  udp_free_thread(t);
  if (t->wake.fd >= 0) close(t->wake.fd);
  if (t->ep >= 0) close(t->ep);
  t->wake.fd = t->ep = -1;
  free(t->copybuf);
  free(t->st);
  free(t->ring);
  free(t->held_hash);
  free(t->cmds.items);
  t->copybuf = NULL, t->st = NULL, t->ring = NULL, t->held_hash = NULL, t->cmds.items = NULL;
}

/* Everything a thread owns, created before it runs. -1 with errno and *syscall. */
static int init_thread(struct engine *e, struct thread *t, int index, int cpu, const char **syscall) {
  memset(t, 0, sizeof *t);
  t->e = e, t->index = index, t->cpu = cpu, t->ep = -1, t->wake.fd = -1;
  t->wake.kind = K_WAKE;
  pthread_mutex_init(&t->cmds.mu, NULL);
  *syscall = "malloc";
  t->copybuf = malloc(COPY_CHUNK);
  t->st = aligned_alloc(64, sizeof *t->st);
  t->ring = ring_new();
  t->held_buckets = HELD_BUCKETS;
  t->held_hash = calloc(HELD_BUCKETS, sizeof *t->held_hash);
  if (!t->copybuf || !t->st || !t->ring || !t->held_hash) return errno = ENOMEM, -1;
  memset(t->st, 0, sizeof *t->st);
  *syscall = "epoll_create1";
  if ((t->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) return -1;
  *syscall = "eventfd";
  if ((t->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 || add(t->ep, &t->wake, EPOLLIN) < 0) return -1;
  for (int f = 0; f < e->nfamilies; f++) {
    struct side *l = &t->listeners[t->nlisteners];
    *l = (struct side){.fd = listen_transparent(e->families[f], e->listen_port, e->backlog, syscall), .kind = K_LISTENER};
    if (l->fd < 0) return -1;
    t->nlisteners++;
    *syscall = "epoll_ctl";
    if (add(t->ep, l, EPOLLIN | EPOLLET) < 0) return -1;
  }
  return e->udp ? udp_init_thread(e, t, syscall) : 0;
}

int engine_start(struct engine *e, const int *cpus, const char **syscall) {
  /* calloc: untouched pages cost no memory until a policy's rules are counted. */
  e->limits = limits_new();
  e->rule_counters = calloc((size_t)e->nthreads * RULE_SLOTS * PC__COUNT, sizeof *e->rule_counters);
  /* nrule_keys and a first policy are set by the caller (addon.c engine_start_js) before this. */
  if (!e->limits || !e->rule_counters) {
    *syscall = "malloc";
    limits_free(e->limits), free(e->rule_counters);
    return errno = ENOMEM, -1;
  }
  for (int i = 0; i < e->nthreads; i++) {
    if (init_thread(e, &e->threads[i], i, cpus ? cpus[i] : -1, syscall) < 0) {
      int err = errno;
      for (int j = 0; j <= i; j++) free_thread(&e->threads[j]);
      limits_free(e->limits), free(e->rule_counters);
      errno = err;
      return -1;
    }
  }
  /* Engine threads take no signals: SIGTERM and SIGINT belong to the JavaScript thread (drain). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_barrier_t started;
  pthread_barrier_init(&started, NULL, (unsigned)e->nthreads + 1);
  int created = 0, rc = 0;
  for (; created < e->nthreads; created++) {
    e->threads[created].started = &started;
    if ((rc = pthread_create(&e->threads[created].tid, NULL, engine_thread_main, &e->threads[created])) != 0) break;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    /* Threads already running wait at the barrier: the engine cannot be half started. */
    fprintf(stderr, "tpfleet engine: pthread_create: %s\n", strerror(rc));
    abort();
  }
  pthread_barrier_wait(&started);
  pthread_barrier_destroy(&started);
  return 0;
}

void engine_join(struct engine *e) {
  struct cmd stop = {.kind = CMD_STOP};
  engine_send(e, -1, &stop);
  for (int i = 0; i < e->nthreads; i++) pthread_join(e->threads[i].tid, NULL);
  for (int i = 0; i < e->nthreads; i++) {
    free_thread(&e->threads[i]);
    pthread_mutex_destroy(&e->threads[i].cmds.mu);
  }
  policy_free(atomic_exchange(&e->policy, NULL));
  while (e->retired) {
    struct policy *p = e->retired;
    e->retired = p->retired_next;
    policy_free(p);
  }
  limits_free(e->limits), free(e->rule_counters);
}
