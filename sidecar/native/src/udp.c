/*
 * UDP flows of one engine thread (udp.h): the transparent listeners, the flow table and the shared
 * reply sockets, moving
 * datagrams in batches (recvmmsg, then one UDP GSO send when the batch is uniform, else sendmmsg),
 * idle expiry and the flow cap. Every fd belongs to this thread; nothing is allocated per datagram.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "udp.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define HASH_BUCKETS 65536 /* power of two */
/* The most one GSO send may carry (the payload limit of one UDP datagram). */
#define GSO_MAX_BYTES 65000
#define LISTENER_RCVBUF (8 << 20)
#define UPSTREAM_RCVBUF (1 << 20)

/* The reply socket of one original destination on one thread, shared by its flows. */
struct reply {
  int fd;
  uint32_t refs;
  struct endpoint dst;
  struct reply *hnext;
};

struct udp_state {
  struct flow **hash;
  struct reply **replies; /* by dst */
  struct flow *head, *tail; /* idle list, sorted by queued_ms */
  struct flow *dead;
  bool no_gso; /* the kernel or the route refused UDP_SEGMENT once: sendmmsg from then on */
  struct mmsghdr msgs[UDP_BATCH];
  struct iovec iov[UDP_BATCH];
  struct sockaddr_storage names[UDP_BATCH];
  char ctrl[UDP_BATCH][64];
  char gso_ctrl[CMSG_SPACE(sizeof(uint16_t))];
  char *bufs; /* UDP_BATCH * UDP_SLOT */
};

static int set_int(int fd, int level, int opt, int value) { return setsockopt(fd, level, opt, &value, sizeof value); }

static int fail_close(int fd) {
  int err = errno;
  close(fd);
  errno = err;
  return -1;
}

/* A non-blocking UDP socket with IP(V6)_TRANSPARENT. reuse: SO_REUSEADDR, for sockets bound to an
 * address others bind too (each thread's reply socket of a destination, a client's address and port
 * towards two destinations). Never on an upstream socket the kernel picks a port for: with it,
 * autobind may hand out a port another reusing socket holds, and two flows would share a 4-tuple. */
static int transparent_udp(int family, bool reuse) {
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int rc = family == 4 ? set_int(fd, IPPROTO_IP, IP_TRANSPARENT, 1) : set_int(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1);
  if (rc < 0 || (reuse && set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) ||
      (family == 6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0))
    return fail_close(fd);
  return fd;
}

static int udp_listen(int family, uint16_t port, const char **syscall) {
  *syscall = "socket(UDP, IP_TRANSPARENT)";
  int fd = transparent_udp(family, true);
  if (fd < 0) return -1;
  *syscall = "setsockopt(IP_RECVORIGDSTADDR)";
  int rc = family == 4 ? set_int(fd, IPPROTO_IP, IP_RECVORIGDSTADDR, 1)
                       : set_int(fd, IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1);
  if (rc < 0 || set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) return fail_close(fd);
  /* Every new flow's first datagram queues here: a burst of new flows (a resolver restarting, a
   * benchmark) must not overflow the default ~200 KiB. FORCE needs CAP_NET_ADMIN; else rmem_max caps it. */
  if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, LISTENER_RCVBUF) < 0) set_int(fd, SOL_SOCKET, SO_RCVBUF, LISTENER_RCVBUF);
  struct endpoint any = {.family = (uint8_t)family, .port = port};
  struct sockaddr_storage ss;
  socklen_t len = endpoint_to(&any, &ss);
  *syscall = "bind(UDP)";
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) return fail_close(fd);
  return fd;
}

int udp_init_thread(struct engine *e, struct thread *t, const char **syscall) {
  *syscall = "malloc";
  struct udp_state *u = calloc(1, sizeof *u);
  if (!u) return errno = ENOMEM, -1;
  t->udp = u;
  u->hash = calloc(HASH_BUCKETS, sizeof *u->hash);
  u->replies = calloc(HASH_BUCKETS, sizeof *u->replies);
  u->bufs = malloc((size_t)UDP_BATCH * UDP_SLOT); /* pages are touched only as datagrams fill them */
  if (!u->hash || !u->replies || !u->bufs) return errno = ENOMEM, -1;
  for (int f = 0; f < e->nfamilies; f++) {
    struct side *l = &t->udp_listeners[t->nudp];
    *l = (struct side){.fd = udp_listen(e->families[f], e->listen_port, syscall), .kind = K_UDP_LISTENER};
    if (l->fd < 0) return -1;
    t->nudp++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = l};
    *syscall = "epoll_ctl";
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, l->fd, &ev) < 0) return -1;
  }
  return 0;
}

void udp_close_listeners(struct thread *t) {
  for (int i = 0; i < t->nudp; i++) {
    if (t->udp_listeners[i].fd >= 0) close(t->udp_listeners[i].fd);
    t->udp_listeners[i].fd = -1;
  }
}

/* --- the flow table ------------------------------------------------------------------------------ */

static uint32_t fnv(uint32_t h, const struct endpoint *ep) {
  const uint8_t *b = (const uint8_t *)ep;
  for (size_t i = 0; i < sizeof *ep; i++) h = (h ^ b[i]) * 16777619u;
  return h;
}

static uint32_t flow_hash(const struct endpoint *src, const struct endpoint *dst) {
  return fnv(fnv(2166136261u, src), dst) & (HASH_BUCKETS - 1);
}

/* Datagrams still queued on a socket being closed: dropped, counted as expired. */
static void count_queued(struct thread *t, int fd) {
  char one;
  while (recv(fd, &one, 1, MSG_DONTWAIT | MSG_TRUNC) >= 0) STAT_ADD(t, ST_udp_drop_expired, 1);
}

/* The reply socket of dst on this thread: found, or made (bound to dst, connected to itself).
 * Between bind() and connect() it is a transparent socket bound to dst and connected to nobody; the
 * rules' UDP divert goes through tproxy's established lookup, which skips unconnected sockets, so no
 * client datagram is steered into it in that window (issue 14; docs/udp.md). */
static struct reply *reply_get(struct udp_state *u, const struct endpoint *dst) {
  uint32_t b = fnv(2166136261u, dst) & (HASH_BUCKETS - 1);
  for (struct reply *r = u->replies[b]; r; r = r->hnext)
    if (memcmp(&r->dst, dst, sizeof *dst) == 0) return r->refs++, r;
  struct sockaddr_storage ss;
  socklen_t len = endpoint_to(dst, &ss);
  int fd = transparent_udp(dst->family, true);
  if (fd < 0) return NULL;
  struct reply *r = malloc(sizeof *r);
  if (!r || bind(fd, (struct sockaddr *)&ss, len) < 0 || connect(fd, (struct sockaddr *)&ss, len) < 0) {
    free(r);
    fail_close(fd);
    return NULL;
  }
  *r = (struct reply){.fd = fd, .refs = 1, .dst = *dst, .hnext = u->replies[b]};
  u->replies[b] = r;
  return r;
}

static void reply_put(struct thread *t, struct reply *r) {
  struct udp_state *u = t->udp;
  if (--r->refs > 0) return;
  struct reply **pp = &u->replies[fnv(2166136261u, &r->dst) & (HASH_BUCKETS - 1)];
  while (*pp != r) pp = &(*pp)->hnext;
  *pp = r->hnext;
  close(r->fd);
  free(r);
}

static struct flow *flow_find(struct udp_state *u, const struct endpoint *src, const struct endpoint *dst) {
  for (struct flow *f = u->hash[flow_hash(src, dst)]; f; f = f->hnext)
    if (memcmp(&f->src, src, sizeof *src) == 0 && memcmp(&f->dst, dst, sizeof *dst) == 0) return f;
  return NULL;
}

static void idle_unlink(struct udp_state *u, struct flow *f) {
  if (f->tprev) f->tprev->tnext = f->tnext;
  else u->head = f->tnext;
  if (f->tnext) f->tnext->tprev = f->tprev;
  else u->tail = f->tprev;
  f->tprev = f->tnext = NULL;
}

/* Placed by queued_ms (= active_ms now): usually at the tail, as in engine.c idle_requeue. */
static void idle_place(struct udp_state *u, struct flow *f) {
  f->queued_ms = f->active_ms;
  struct flow *after = u->tail;
  while (after && after->queued_ms > f->queued_ms) after = after->tprev;
  f->tprev = after;
  f->tnext = after ? after->tnext : u->head;
  if (f->tnext) f->tnext->tprev = f;
  else u->tail = f;
  if (after) after->tnext = f;
  else u->head = f;
}

static void flow_close(struct thread *t, struct flow *f, bool expired) {
  struct udp_state *u = t->udp;
  if (f->dead) return;
  if (expired) {
    count_queued(t, f->u.fd);
    STAT_ADD(t, ST_udp_flows_expired, 1);
  }
  struct flow **pp = &u->hash[flow_hash(&f->src, &f->dst)];
  while (*pp != f) pp = &(*pp)->hnext;
  *pp = f->hnext;
  idle_unlink(u, f);
  close(f->u.fd);
  f->u.fd = -1;
  reply_put(t, f->reply);
  f->reply = NULL;
  f->dead = 1;
  f->dnext = u->dead;
  u->dead = f;
  atomic_fetch_sub_explicit(&t->e->udp_active, 1, memory_order_relaxed);
}

static int flow_sockets(struct thread *t, struct flow *f) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (!(f->reply = reply_get(t->udp, &f->dst))) return -1;
  if ((f->u.fd = transparent_udp(f->dst.family, t->e->keep_client_ip)) < 0) return -1;
  /* Room for a burst of replies while the thread is busy elsewhere (a ceiling, not an allocation). */
  set_int(f->u.fd, SOL_SOCKET, SO_RCVBUF, UPSTREAM_RCVBUF);
  if (t->e->keep_client_ip) {
    len = endpoint_to(&f->src, &ss);
    if (bind(f->u.fd, (struct sockaddr *)&ss, len) < 0) return -1;
  }
  len = endpoint_to(&f->dst, &ss);
  if (connect(f->u.fd, (struct sockaddr *)&ss, len) < 0) return -1;
  struct epoll_event eu = {.events = EPOLLIN | EPOLLET, .data.ptr = &f->u};
  return epoll_ctl(t->ep, EPOLL_CTL_ADD, f->u.fd, &eu);
}

/* A new flow, or NULL (the datagram is dropped and counted: flow cap or a socket error). */
static struct flow *flow_open(struct thread *t, const struct endpoint *src, const struct endpoint *dst) {
  struct engine *e = t->e;
  uint32_t max = atomic_load_explicit(&e->opt.udp_max_flows, memory_order_relaxed);
  if (atomic_fetch_add_explicit(&e->udp_active, 1, memory_order_relaxed) >= max) {
    atomic_fetch_sub_explicit(&e->udp_active, 1, memory_order_relaxed);
    STAT_ADD(t, ST_udp_drop_flow_cap, 1);
    return NULL;
  }
  struct flow *f = calloc(1, sizeof *f);
  if (f) {
    f->src = *src, f->dst = *dst;
    f->u = (struct side){.fd = -1, .kind = K_UDP_UPSTREAM};
  }
  if (!f || flow_sockets(t, f) < 0) {
    if (f && f->u.fd >= 0) close(f->u.fd);
    if (f && f->reply) reply_put(t, f->reply);
    free(f);
    atomic_fetch_sub_explicit(&e->udp_active, 1, memory_order_relaxed);
    STAT_ADD(t, ST_udp_drop_setup_error, 1);
    return NULL;
  }
  struct udp_state *u = t->udp;
  uint32_t b = flow_hash(src, dst);
  f->hnext = u->hash[b];
  u->hash[b] = f;
  f->active_ms = t->now_ms;
  idle_place(u, f);
  STAT_ADD(t, ST_udp_flows_created, 1);
  return f;
}

/* --- moving datagrams ---------------------------------------------------------------------------- */

/* Receive headers for a batch; with_addr: the listener's (client address, original destination). */
static void prepare_recv(struct udp_state *u, bool with_addr) {
  for (int i = 0; i < UDP_BATCH; i++) {
    u->iov[i] = (struct iovec){.iov_base = u->bufs + (size_t)i * UDP_SLOT, .iov_len = UDP_SLOT};
    u->msgs[i].msg_hdr = (struct msghdr){
        .msg_iov = &u->iov[i],
        .msg_iovlen = 1,
        .msg_name = with_addr ? &u->names[i] : NULL,
        .msg_namelen = with_addr ? sizeof u->names[i] : 0,
        .msg_control = with_addr ? u->ctrl[i] : NULL,
        .msg_controllen = with_addr ? sizeof u->ctrl[i] : 0,
    };
  }
}

/* A send error on a connected socket: what it means for the datagrams not sent. */
static void count_send_error(struct thread *t, int err, uint64_t n) {
  if (err == ENETUNREACH || err == EHOSTUNREACH || err == EADDRNOTAVAIL) STAT_ADD(t, ST_udp_drop_no_route, n);
  else STAT_ADD(t, ST_udp_drop_buffer_full, n); /* EAGAIN, ENOBUFS, ENOMEM and the rest */
}

/* One GSO send when every datagram but the last has the same size (the kernel's segmenting rule). */
static bool gso_fits(struct udp_state *u, int first, int n) {
  if (u->no_gso || n < 2) return false;
  size_t size = u->iov[first].iov_len, total = 0;
  for (int i = first; i < first + n; i++) {
    size_t l = u->iov[i].iov_len;
    if ((i < first + n - 1 && l != size) || l > size) return false;
    total += l;
  }
  return total <= GSO_MAX_BYTES;
}

/* A peer to send to: NULL for a connected socket (upstream), the client for a reply socket. */
struct peer {
  struct sockaddr_storage ss;
  socklen_t len;
};

static int send_gso(struct udp_state *u, int fd, const struct peer *to, int first, int n) {
  struct msghdr m = {.msg_iov = &u->iov[first], .msg_iovlen = (size_t)n, .msg_control = u->gso_ctrl,
                     .msg_controllen = sizeof u->gso_ctrl};
  if (to) m.msg_name = (void *)&to->ss, m.msg_namelen = to->len;
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t seg = (uint16_t)u->iov[first].iov_len;
  memcpy(CMSG_DATA(c), &seg, sizeof seg);
  return sendmsg(fd, &m, MSG_DONTWAIT) < 0 ? -1 : 0;
}

/* Sends datagrams [first, first+n) of the batch (their iov_len set) to one peer. */
static void send_run(struct thread *t, int fd, const struct peer *to, int first, int n) {
  struct udp_state *u = t->udp;
  if (gso_fits(u, first, n)) {
    if (send_gso(u, fd, to, first, n) == 0) return STAT_ADD(t, ST_udp_gso_sends, 1);
    if (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP) u->no_gso = true;
    else if (errno != ECONNREFUSED) return count_send_error(t, errno, (uint64_t)n);
    /* else: an ICMP error of an earlier datagram surfaced here; counted below, the batch retried */
  }
  struct mmsghdr out[UDP_BATCH];
  for (int i = 0; i < n; i++)
    out[i].msg_hdr = (struct msghdr){.msg_iov = &u->iov[first + i],
                                     .msg_iovlen = 1,
                                     .msg_name = to ? (void *)&to->ss : NULL,
                                     .msg_namelen = to ? to->len : 0};
  int done = 0, retried = 0;
  while (done < n) {
    int r = sendmmsg(fd, out + done, (unsigned)(n - done), MSG_DONTWAIT);
    if (r > 0) {
      done += r;
      continue;
    }
    if (r < 0 && errno == ECONNREFUSED && !retried++) { /* reported once, then cleared: go on */
      STAT_ADD(t, ST_udp_icmp_errors, 1);
      continue;
    }
    count_send_error(t, r < 0 ? errno : EAGAIN, (uint64_t)(n - done));
    return;
  }
}

static bool orig_dst(struct msghdr *m, struct endpoint *dst) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_ORIGDSTADDR) ||
        (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)) {
      struct sockaddr_storage ss;
      memset(&ss, 0, sizeof ss);
      memcpy(&ss, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) < sizeof ss ? c->cmsg_len - CMSG_LEN(0) : sizeof ss);
      endpoint_from(dst, &ss);
      return true;
    }
  }
  return false;
}

/* A received batch of client datagrams: find or open each flow by the datagram's source and
 * IP(V6)_ORIGDSTADDR, send runs of one flow together. */
static void forward_batch(struct thread *t, int n) {
  struct udp_state *u = t->udp;
  struct flow *run_flow = NULL;
  int run_start = 0;
  for (int i = 0; i <= n; i++) {
    struct flow *f = NULL;
    if (i < n) {
      struct endpoint src, dst;
      u->iov[i].iov_len = u->msgs[i].msg_len;
      endpoint_from(&src, &u->names[i]);
      if (orig_dst(&u->msgs[i].msg_hdr, &dst)) {
        f = flow_find(u, &src, &dst);
        if (!f) f = flow_open(t, &src, &dst);
      } else STAT_ADD(t, ST_udp_drop_setup_error, 1); /* no original destination: not TPROXY'd */
      if (f) {
        f->active_ms = t->now_ms;
        STAT_ADD(t, ST_udp_dgrams_up, 1);
        STAT_ADD(t, ST_udp_bytes_up, u->msgs[i].msg_len);
      }
    }
    if (i < n && f == run_flow) continue; /* same flow as the run (or, NULL, nothing to send) */
    if (run_flow) send_run(t, run_flow->u.fd, NULL, run_start, i - run_start);
    run_flow = f, run_start = i;
  }
}

/* First datagrams of flows, from the listener. */
static void on_listener(struct thread *t, struct side *l) {
  struct udp_state *u = t->udp;
  for (;;) {
    prepare_recv(u, true);
    int n = recvmmsg(l->fd, u->msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return; /* EAGAIN: drained (an error on an unconnected socket is nobody's) */
    forward_batch(t, n);
    if (n < UDP_BATCH) return;
  }
}

/* Replies of one flow: everything its upstream socket reads goes to the client, from dst. */
static void on_upstream(struct thread *t, struct side *s) {
  struct udp_state *u = t->udp;
  struct flow *f = (struct flow *)((char *)s - offsetof(struct flow, u));
  if (f->dead) return;
  struct peer client;
  client.len = endpoint_to(&f->src, &client.ss);
  for (;;) {
    prepare_recv(u, false);
    int n = recvmmsg(s->fd, u->msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      /* ICMP port or host unreachable: reported once on the connected socket, then cleared. The
       * flow goes on (the peer may come back); anything else (EAGAIN) ends this wake-up. */
      if (errno != ECONNREFUSED && errno != EHOSTUNREACH && errno != ENETUNREACH) return;
      STAT_ADD(t, ST_udp_icmp_errors, 1);
      continue;
    }
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += u->iov[i].iov_len = u->msgs[i].msg_len;
    f->active_ms = t->now_ms;
    STAT_ADD(t, ST_udp_dgrams_down, n);
    STAT_ADD(t, ST_udp_bytes_down, bytes);
    send_run(t, f->reply->fd, &client, 0, n);
    if (n < UDP_BATCH) return;
  }
}

void udp_event(struct thread *t, struct side *s) {
  if (s->fd < 0) return;
  if (s->kind == K_UDP_LISTENER) on_listener(t, s);
  else on_upstream(t, s);
}

/* --- timers and teardown --------------------------------------------------------------------------- */

int64_t udp_next_deadline(struct thread *t) {
  if (!t->udp || !t->udp->head) return INT64_MAX;
  return t->udp->head->queued_ms + atomic_load_explicit(&t->e->opt.udp_idle_ms, memory_order_relaxed);
}

void udp_sweep(struct thread *t) {
  struct udp_state *u = t->udp;
  if (!u) return;
  int64_t limit = atomic_load_explicit(&t->e->opt.udp_idle_ms, memory_order_relaxed);
  struct flow *f;
  while ((f = u->head) && f->queued_ms + limit <= t->now_ms) {
    if (f->active_ms != f->queued_ms) {
      idle_unlink(u, f);
      idle_place(u, f);
    } else flow_close(t, f, true);
  }
}

void udp_free_dead(struct thread *t) {
  if (!t->udp) return;
  while (t->udp->dead) {
    struct flow *f = t->udp->dead;
    t->udp->dead = f->dnext;
    free(f);
  }
}

void udp_close_all(struct thread *t) {
  if (!t->udp) return;
  while (t->udp->head) flow_close(t, t->udp->head, false);
}

void udp_free_thread(struct thread *t) {
  udp_close_listeners(t);
  t->nudp = 0;
  if (!t->udp) return;
  udp_close_all(t);
  udp_free_dead(t);
  free(t->udp->hash);
  free(t->udp->replies);
  free(t->udp->bufs);
  free(t->udp);
  t->udp = NULL;
}
