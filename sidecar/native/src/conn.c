/*
 * A connection's life in its engine thread: accepted (batched until EAGAIN), shed or refused at
 * once, held for the decision hook when it is on, dialled to its original destination (or where the
 * hook says), relayed (relay.c), closed. Timer lists are FIFO: every connection of a list shares one
 * timeout, so the order of insertion is the order of expiry (engine.c sweeps the heads).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "decide.h"
#include "events.h"
#include "handshake.h"
#include "limits.h"
#include "policy.h"

#define ACCEPT_BATCH 64
static const int64_t CONNECT_BOUNDS_US[NCONNECT_BUCKETS] = {CONNECT_BUCKETS_US};

void tlist_push(struct tlist *l, struct conn *c) {
  c->tnext = NULL;
  c->tprev = l->tail;
  if (l->tail) l->tail->tnext = c;
  else l->head = c;
  l->tail = c;
}

void tlist_remove(struct tlist *l, struct conn *c) {
  if (c->tprev) c->tprev->tnext = c->tnext;
  else l->head = c->tnext;
  if (c->tnext) c->tnext->tprev = c->tprev;
  else l->tail = c->tprev;
  c->tprev = c->tnext = NULL;
}

static void held_del(struct thread *t, struct conn *c);

/* Held connections, upstream-proxy connects and handshakes have deadlines of their own: they sit on
 * the held list, which is scanned, not on a FIFO list that assumes one timeout for all. */
static struct tlist *list_of(struct thread *t, struct conn *c) {
  switch (c->state) {
  case C_HELD:
  case C_HANDSHAKE: return &t->held;
  case C_CONNECTING: return c->hs && c->hs->type ? &t->held : &t->connecting;
  case C_OPEN: return &t->idle;
  default: return NULL;
  }
}

/* Takes c off its timer list (and the held hash) before it changes state. */
static void unlist(struct thread *t, struct conn *c) {
  struct tlist *l = list_of(t, c);
  if (l) tlist_remove(l, c);
  if (c->state == C_HELD) held_del(t, c);
}

static void close_side(struct side *s, bool rst) {
  if (s->fd < 0) return;
  if (rst) set_linger0(s->fd);
  close(s->fd); /* also leaves epoll: the fd is never dup'd */
  s->fd = -1;
}

static int watch(struct thread *t, struct side *s) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s};
  return epoll_ctl(t->ep, EPOLL_CTL_ADD, s->fd, &ev);
}

/* --- held connections, found by id when JS answers (a small chained hash) --------------------- */

static uint32_t held_slot(struct thread *t, uint64_t id) { return (uint32_t)(id * 0x9e3779b97f4a7c15ull >> 40) & (t->held_buckets - 1); }

static void held_add(struct thread *t, struct conn *c) {
  uint32_t i = held_slot(t, c->id);
  c->hnext = t->held_hash[i];
  t->held_hash[i] = c;
  STAT_ADD(t, ST_held, 1);
}

static void held_del(struct thread *t, struct conn *c) {
  for (struct conn **p = &t->held_hash[held_slot(t, c->id)]; *p; p = &(*p)->hnext) {
    if (*p == c) {
      *p = c->hnext;
      STAT_SUB(t, ST_held, 1);
      return;
    }
  }
}

struct conn *held_find(struct thread *t, uint64_t id) {
  for (struct conn *c = t->held_hash[held_slot(t, id)]; c; c = c->hnext)
    if (c->id == id) return c;
  return NULL;
}

/* --- close -------------------------------------------------------------------------------------- */

static int result_stat(int reason) {
  switch (reason) {
  case ERR_NONE: return ST_closed_ok;
  case ERR_CONNECT_TIMEOUT:
  case ERR_IDLE_TIMEOUT: return ST_closed_timeout;
  case ERR_DENIED: return ST_closed_denied;
  case ERR_LIMITED: return ST_closed_limited;
  default: return ST_closed_error;
  }
}

static bool post_closed(struct thread *t, struct conn *c, bool audit) {
  struct event ev = {.kind = EV_CLOSED, .id = c->id, .reason = c->reason, .src = c->src, .dst = c->dst,
                     .bytes_up = c->bytes_up, .bytes_down = c->bytes_down, .audit = audit, .rule = c->rule,
                     .action = c->action, .upstream = c->upstream, .name_kind = c->name_kind,
                     .generation = c->generation, .duration_us = (uint64_t)((mono_ns() - c->accepted_ns) / 1000)};
  if (c->name && (ev.peek = strdup(c->name))) ev.peek_len = (uint32_t)strlen(ev.peek);
  if (ring_push(t, &ev)) return true;
  free(ev.peek);
  return false;
}

/* The audit log's cap: at most audit_per_s lines in each second of the monotonic clock, shared by all
 * threads. The window (second << 32 | lines) is one atomic word, so a second's boundary never loses a
 * count; a thread whose clock reads an older second counts into the newer window. */
static bool audit_admit(struct thread *t) {
  struct engine *e = t->e;
  uint64_t sec = (uint64_t)(t->now_ms / 1000) & 0xffffffffu, cap = atomic_load(&e->opt.audit_per_s);
  uint64_t cur = atomic_load(&e->audit_window), next;
  do {
    uint64_t wsec = cur >> 32, n = cur & 0xffffffffu;
    if (wsec < sec) wsec = sec, n = 0;
    if (n >= cap) return false;
    next = wsec << 32 | (n + 1);
  } while (!atomic_compare_exchange_weak(&e->audit_window, &cur, next));
  return true;
}

void conn_close(struct thread *t, struct conn *c, int reason, bool rst) {
  if (c->state == C_DEAD) return;
  if (c->reason == ERR_NONE) c->reason = (uint8_t)reason;
  unlist(t, c);
  close_side(&c->c, rst);
  close_side(&c->u, rst);
  conn_release_dir(t, &c->up);
  conn_release_dir(t, &c->down);
  STAT_ADD(t, result_stat(c->reason), 1);
  /* ERR_CONNECT_REFUSED..ERR_UPSTREAM_PROXY are 1..8, in the order of the err_* counters (stats.h). */
  if (c->reason >= ERR_CONNECT_REFUSED && c->reason <= ERR_UPSTREAM_PROXY) STAT_ADD(t, ST_err_connect_refused + c->reason - 1, 1);
  atomic_fetch_sub_explicit(&t->e->active, 1, memory_order_relaxed);
  if (c->limited) limits_release(t->e->limits, c->limit_key, &c->src);
  /* An audit line counts as written only once it is queued: a full event ring suppresses it. */
  bool want = atomic_load_explicit(&t->e->opt.audit, memory_order_relaxed), audit = want && audit_admit(t);
  bool queued = (audit || atomic_load_explicit(&t->e->opt.log_conns, memory_order_relaxed)) && post_closed(t, c, audit);
  if (want) STAT_ADD(t, audit && queued ? ST_audit_written : ST_audit_suppressed, 1);
  free(c->name);
  free(c->hs);
  c->name = NULL;
  c->hs = NULL;
  /* Freed after this turn: an event for the other socket may still be in the epoll batch. */
  c->state = C_DEAD;
  c->rnext = t->dead;
  t->dead = c;
}

/* --- dial and connect ----------------------------------------------------------------------------- */

static int connect_reason(int err) {
  switch (err) {
  case ECONNREFUSED: return ERR_CONNECT_REFUSED;
  case ETIMEDOUT: return ERR_CONNECT_TIMEOUT;
  case EHOSTUNREACH:
  case ENETUNREACH:
  case EHOSTDOWN: return ERR_CONNECT_UNREACHABLE;
  default: return ERR_OTHER;
  }
}

void conn_dial(struct thread *t, struct conn *c, const struct endpoint *to) {
  const char *syscall;
  int fd = dial_transparent(to, t->e->keep_client_ip ? &c->src : NULL, &syscall);
  if (fd < 0) {
    int err = errno;
    if (strcmp(syscall, "connect") != 0) engine_warn(t, syscall, err);
    return conn_abort(t, c, strcmp(syscall, "connect") == 0 ? connect_reason(err) : ERR_OTHER);
  }
  unlist(t, c);
  c->state = C_CONNECTING;
  c->started_ns = mono_ns();
  tlist_push(list_of(t, c), c); /* the connecting list, or the held list with an upstream proxy's deadline */
  c->u.fd = fd;
  if (watch(t, &c->u) < 0) conn_abort(t, c, ERR_OTHER);
}

static void observe_connect(struct thread *t, int64_t us) {
  int b = 0;
  while (b < NCONNECT_BUCKETS && us > CONNECT_BOUNDS_US[b]) b++;
  STAT_ADD(t, ST_connect_b0 + b, 1);
  STAT_ADD(t, ST_connect_count, 1);
  STAT_ADD(t, ST_connect_sum_us, us);
}

static void open_relay(struct thread *t, struct conn *c);

/* The upstream socket became writable or failed: the connect finished one way or the other. */
void conn_connected(struct thread *t, struct conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->u.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err != 0) return conn_abort(t, c, connect_reason(err));
  observe_connect(t, (mono_ns() - c->started_ns) / 1000);
  tlist_remove(list_of(t, c), c);
  if (c->hs && c->hs->type) { /* an upstream proxy: its handshake first (deadline kept from the dial) */
    c->state = C_HANDSHAKE;
    tlist_push(&t->held, c);
    return conn_handshake_io(t, c);
  }
  if (c->hs) { /* a PROXY protocol header: the first bytes upstream, ahead of the client's */
    dir_stash(t, &c->up, (const char *)c->hs->out, c->hs->out_len);
    free(c->hs);
    c->hs = NULL;
  }
  open_relay(t, c);
}

/* From here the bytes flow both ways (relay.c). */
static void open_relay(struct thread *t, struct conn *c) {
  c->state = C_OPEN;
  c->active_ms = c->queued_ms = t->now_ms;
  tlist_push(&t->idle, c);
  relay_pump(t, c);
}

/* The upstream proxy's handshake: send what is due, read what came, judge it (handshake.c). */
void conn_handshake_io(struct thread *t, struct conn *c) {
  struct handshake *h = c->hs;
  for (;;) {
    while (h->out_off < h->out_len) {
      ssize_t n = send(c->u.fd, h->out + h->out_off, h->out_len - h->out_off, MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) return; /* the next EPOLLOUT edge continues */
      if (n < 0) return conn_abort(t, c, ERR_UPSTREAM_RESET);
      h->out_off = (uint16_t)(h->out_off + n);
    }
    ssize_t n = recv(c->u.fd, h->in + h->in_len, sizeof h->in - h->in_len, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) return conn_abort(t, c, n == 0 ? ERR_UPSTREAM_PROXY : ERR_UPSTREAM_RESET);
    h->in_len = (uint16_t)(h->in_len + n);
    int r = hs_input(h);
    if (r == HS_FAIL) {
      engine_warn(t, h->why, EPROTO);
      return conn_abort(t, c, ERR_UPSTREAM_PROXY);
    }
    if (r == HS_DONE) {
      if (h->leftover) dir_stash(t, &c->down, (const char *)h->in, h->leftover); /* the destination spoke first */
      tlist_remove(&t->held, c);
      free(c->hs);
      c->hs = NULL;
      return open_relay(t, c);
    }
  }
}

/* --- the decision hook ------------------------------------------------------------------------- */

/* Asks JS what to do with a held connection, with the client's first bytes when it wanted them. */
void conn_ask(struct thread *t, struct conn *c, const char *bytes, uint32_t len, uint8_t flags) {
  struct event ev = {.kind = EV_DECIDE, .id = c->id, .src = c->src, .dst = c->dst, .flags = flags, .peek_len = len};
  if (len > 0) {
    ev.peek = malloc(len);
    if (!ev.peek) return conn_abort(t, c, ERR_OTHER);
    memcpy(ev.peek, bytes, len);
  }
  if (!ring_push(t, &ev)) {
    free(ev.peek);
    return conn_abort(t, c, ERR_OTHER);
  }
  STAT_ADD(t, ST_hook_asked, 1);
  c->asked = 1;
  c->peek_len = len;
  /* JS gets its own deadline to answer; a stuck JS thread must not hold connections forever. */
  c->deadline_ms = t->now_ms + HOOK_ANSWER_MS;
}

/* A held client sent bytes (or ended): peek at them, without taking them off the socket. */
void conn_held_readable(struct thread *t, struct conn *c) {
  if (c->asked || !atomic_load_explicit(&t->e->opt.peek, memory_order_relaxed)) return;
  ssize_t n = recv(c->c.fd, t->copybuf, PEEK_MAX, MSG_PEEK);
  if (n < 0 && errno == EAGAIN) return;
  if (n < 0) return conn_abort(t, c, ERR_CLIENT_RESET);
  if (n == 0) return conn_ask(t, c, NULL, 0, EVF_EOF); /* ended without sending anything */
  /* Full buffer or the client's FIN queued: no more bytes will come for the hook to see. */
  uint8_t done = n == PEEK_MAX || (c->c.flags & S_RDHUP) ? EVF_EOF : 0;
  if ((uint32_t)n > c->peek_len || done) conn_ask(t, c, t->copybuf, (uint32_t)n, done);
}

void conn_verdict(struct thread *t, const struct cmd *cmd) {
  struct conn *c = held_find(t, cmd->id);
  if (!c || c->state != C_HELD) return; /* already gone (client reset, timeout) */
  switch (cmd->verdict) {
  case V_FORWARD: return conn_dial(t, c, &c->dst);
  case V_FORWARD_TO: return conn_dial(t, c, &cmd->to);
  case V_RESET: return conn_abort(t, c, ERR_DENIED);
  case V_MORE:
    c->asked = 0;
    c->deadline_ms = c->started_ns / 1000000 + atomic_load(&t->e->opt.hold_timeout_ms);
    return conn_held_readable(t, c);
  }
}

/* --- accept --------------------------------------------------------------------------------------- */

/* Closed at once with a RST and counted, before any state exists for it. */
static void refuse(struct thread *t, int fd, int stat) {
  set_linger0(fd);
  close(fd);
  STAT_ADD(t, stat, 1);
}

/* The node agent's datapath probe (api/selftest.ts, ADR 0021): a connection to a self-test address. */
static bool is_selftest(const struct engine *e, const struct endpoint *dst) {
  for (int i = 0; i < e->nselftest; i++) {
    const struct endpoint *p = &e->selftest[i];
    if (p->family == dst->family && memcmp(p->addr, dst->addr, p->family == 4 ? 4 : 16) == 0) return true;
  }
  return false;
}

/* Answered here, never dialled: its destination is TEST-NET, and a dial would follow the probe route
 * back into our own listener. A fresh socket's send buffer is empty, so the few bytes go out whole,
 * then a normal FIN. Before the connection budget: a full proxy still shows its datapath works. */
static void answer_selftest(struct thread *t, int fd) {
  (void)send(fd, t->e->selftest_reply, t->e->selftest_reply_len, MSG_NOSIGNAL | MSG_DONTWAIT);
  close(fd);
  STAT_ADD(t, ST_closed_selftest, 1);
}

static void admit(struct thread *t, int fd, const struct sockaddr_storage *peer) {
  struct engine *e = t->e;
  STAT_ADD(t, ST_accepted, 1);
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) < 0) return refuse(t, fd, ST_closed_error);
  struct endpoint dst;
  endpoint_from(&dst, &local); /* under TPROXY the local address IS the original destination */
  if (is_selftest(e, &dst)) return answer_selftest(t, fd);
  uint32_t max = atomic_load_explicit(&e->opt.max_connections, memory_order_relaxed);
  if (atomic_fetch_add_explicit(&e->active, 1, memory_order_relaxed) >= max) {
    atomic_fetch_sub_explicit(&e->active, 1, memory_order_relaxed);
    STAT_ADD(t, ST_shed, 1);
    return refuse(t, fd, ST_closed_shed);
  }
  struct conn *c = calloc(1, sizeof *c);
  if (!c) {
    atomic_fetch_sub_explicit(&e->active, 1, memory_order_relaxed);
    return refuse(t, fd, ST_closed_error);
  }
  endpoint_from(&c->src, peer);
  c->dst = dst;
  /* Loop guard: a client that connects to the node's own listen port would be forwarded to us. */
  if (c->dst.port == e->listen_port && endpoint_is_local(&c->dst)) {
    free(c);
    atomic_fetch_sub_explicit(&e->active, 1, memory_order_relaxed);
    return refuse(t, fd, ST_closed_loop);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->c = (struct side){.fd = fd, .kind = K_CLIENT};
  c->u = (struct side){.fd = -1, .kind = K_UPSTREAM};
  c->up.pipe_r = c->up.pipe_w = c->down.pipe_r = c->down.pipe_w = -1;
  c->id = ((uint64_t)t->index << 56) | ++t->next_id;
  c->state = C_NEW;
  c->rule = -2;
  c->accepted_ns = mono_ns();
  c->started_ns = mono_ns();
  if (watch(t, &c->c) < 0) return conn_abort(t, c, ERR_OTHER);
  if (atomic_load_explicit(&e->opt.log_conns, memory_order_relaxed)) {
    struct event ev = {.kind = EV_ACCEPTED, .id = c->id, .src = c->src, .dst = c->dst};
    ring_push(t, &ev);
  }
  /* A policy decides natively (decide.c); without one and without a hook: straight to the dial, no
   * per-connection JavaScript and no hash insert. */
  if (decide_at_accept(t, c)) return;
  if (!atomic_load_explicit(&e->opt.hook, memory_order_relaxed)) return conn_dial(t, c, &c->dst);
  c->state = C_HELD;
  c->deadline_ms = t->now_ms + atomic_load_explicit(&e->opt.hold_timeout_ms, memory_order_relaxed);
  tlist_push(&t->held, c);
  held_add(t, c);
  if (!atomic_load_explicit(&e->opt.peek, memory_order_relaxed)) conn_ask(t, c, NULL, 0, 0);
}

/* Accepts until EAGAIN, at most ACCEPT_BATCH at a time so other events get their turn. */
void conn_accept(struct thread *t, struct side *l) {
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      admit(t, fd, &peer);
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) return;
    if (errno == ECONNABORTED || errno == EPERM || errno == EPROTO) continue;
    /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the queue keeps the connection; retry shortly (an edge
     * would not come again for it). */
    STAT_ADD(t, ST_accept_errors, 1);
    engine_warn(t, "accept4", errno);
    t->accept_retry_ms = t->now_ms + 100;
    return;
  }
  t->accept_more = true;
}
