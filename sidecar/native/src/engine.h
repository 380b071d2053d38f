/*
 * The data engine (docs/adr/0011-data-engine.md): engine threads, each with its own epoll, its own
 * SO_REUSEPORT transparent listeners and its own connections. JavaScript configures and observes
 * it; no JavaScript runs per connection or per chunk unless the decision hook is on.
 *
 * Threading contract:
 *   - struct conn and everything reachable from it belongs to one engine thread, never shared;
 *   - the JS thread talks to an engine thread only through its command queue (mutex + eventfd);
 *   - an engine thread talks to JS only through its event ring (events.c) and the stats block,
 *     which JS reads at scrape time (plain 64-bit loads of counters only this thread writes).
 */
#ifndef TPFLEET_ENGINE_H
#define TPFLEET_ENGINE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stats.h"

#define MAX_THREADS 64
/* Per-thread copy buffer: a recv that fills it means bulk data, so the direction switches to splice. */
#define COPY_CHUNK (16 * 1024)
/* A splice that moves less than this is small traffic again: back to copying (HAProxy uses ~4 KiB). */
#define SPLICE_MIN 4096
/* Bytes one direction may move per wake-up before other connections get their turn. */
#define PUMP_BUDGET (256 * 1024)
#define PEEK_MAX 16384
/* Distinct policy rule names the engine keeps counters for over the life of the process. */
#define RULE_SLOTS 8192

/* What a socket address is, compactly: family 4|6, 16 address bytes (v4 in the first 4), port. */
struct endpoint {
  uint8_t family;
  uint8_t addr[16];
  uint16_t port;
};

enum side_flags {
  S_READABLE = 1 << 0, /* an edge said readable and no read has returned EAGAIN since */
  S_WRITABLE = 1 << 1, /* likewise for writes */
  S_RDHUP = 1 << 2,    /* the peer's FIN has arrived (EPOLLRDHUP): what is queued is all there is */
  S_EOF = 1 << 3,      /* a read returned 0: the peer will send nothing more */
  S_SHUT = 1 << 4,     /* we sent our FIN (shutdown SHUT_WR) on this socket */
};

/* K_UDP_*: udp.c's sockets in epoll (a listener, a flow's upstream socket). */
enum side_kind { K_LISTENER, K_CLIENT, K_UPSTREAM, K_WAKE, K_UDP_LISTENER, K_UDP_UPSTREAM };

/* An fd registered in epoll; epoll_event.data.ptr points here. */
struct side {
  int fd;
  uint8_t kind;
  uint8_t flags;
};

/* Bytes on their way from one side to the other: at most one chunk or one pipe, never both. */
struct dir {
  struct chunk *buf; /* copy mode: bytes a full destination did not take yet */
  uint32_t off, len;
  int pipe_r, pipe_w; /* splice mode: a pooled pipe while bytes sit in it, else -1 */
  uint32_t in_pipe;
  bool splice;
};

/* C_NEW: accepted, on no timer list yet (the moment between accept and dial or hold).
 * C_HANDSHAKE: the upstream proxy's handshake (handshake.c) runs before the relay. */
enum conn_state { C_NEW, C_HELD, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DEAD };

struct handshake;
struct policy;
struct limits;

struct conn {
  struct side c, u; /* client (accepted) and upstream sockets; u.fd == -1 before the dial */
  struct dir up;    /* client -> upstream */
  struct dir down;  /* upstream -> client */
  uint8_t state;
  uint8_t reason; /* first error (enum err_reason), ERR_NONE while healthy */
  uint8_t queued; /* on the ready list */
  uint8_t asked;  /* held: a decision request is out (events.c), no second one until it is answered */
  uint64_t id;
  int64_t started_ns;  /* of the upstream connect (latency, connect timeout) */
  int64_t accepted_ns; /* of the connection (its duration in logs)*/
  int64_t active_ms; /* last time bytes moved (idle timeout) */
  int64_t queued_ms; /* active_ms when last put on the idle list: lazy re-queueing */
  int64_t deadline_ms; /* connect or hold deadline */
  uint64_t bytes_up, bytes_down;
  struct conn *tprev, *tnext; /* the timer list it is on (connect, hold or idle) */
  struct conn *rnext;         /* ready list, or the dead list once closed */
  struct conn *hnext;         /* held-connection hash chain */
  struct endpoint src, dst;   /* client and original destination */
  uint32_t peek_len;          /* bytes seen when the hook was last asked */
  /* The policy decision (decide.c), kept for metrics, limits and the audit line. */
  int16_t rule;               /* the rule that decided, -1 the default action, -2 no policy */
  uint8_t action, upstream;   /* enum policy_action; the upstream's index when forwarded */
  uint8_t name_kind;          /* PN_SNI or PN_HOST when `name` holds what the client asked for */
  uint8_t policy_peek;        /* held by the policy (not the JS hook) until its first bytes arrive */
  uint8_t limited;            /* counted as open by the rule's per-source limit: release at close */
  uint32_t generation;        /* of the policy that decided (JS maps rule indexes to names by it) */
  uint64_t limit_key;
  char *name;                 /* SNI or Host, malloc'd only when one was seen */
  struct handshake *hs;       /* only while an upstream proxy's handshake or a PROXY header is pending */
};

struct tlist {
  struct conn *head, *tail;
};

/* One command from JS (addon.c) to an engine thread. */
enum cmd_kind { CMD_DRAIN, CMD_CLOSE_ALL, CMD_STOP, CMD_VERDICT, CMD_OPTIONS };
enum verdict { V_FORWARD, V_RESET, V_FORWARD_TO, V_MORE };
struct cmd {
  uint8_t kind;
  uint8_t verdict;
  uint64_t id;
  struct endpoint to; /* V_FORWARD_TO */
};

struct cmd_queue {
  pthread_mutex_t mu;
  struct cmd *items;
  uint32_t len, cap;
};

/* Options JS may change while running (hot reload); read by engine threads once per loop turn. */
struct options {
  _Atomic int64_t connect_timeout_ms;
  _Atomic int64_t idle_timeout_ms;
  _Atomic int64_t hold_timeout_ms; /* how long a held connection waits for bytes or a verdict */
  _Atomic uint32_t max_connections;
  _Atomic int hook;      /* 0: off (no JS per connection), 1: every accepted connection is held */
  _Atomic int peek;      /* hook: wait for the client's first bytes before asking */
  _Atomic int log_conns; /* per-connection events (debug logging) */
  _Atomic int splice;    /* bulk directions switch to splice(); off: copy only (benchmarks, ADR 0011) */
  _Atomic int audit;     /* one event per connection at close for the audit log, at most audit_per_s a second */
  _Atomic uint32_t audit_per_s;
  _Atomic int64_t udp_idle_ms;     /* a UDP flow with no datagram either way for this long is closed */
  _Atomic uint32_t udp_max_flows;  /* all threads: datagrams of new flows beyond it are dropped */
};

struct engine;

struct thread {
  struct engine *e;
  int index;
  pthread_t tid;
  int ep;
  struct side wake; /* eventfd */
  struct side listeners[2];
  int nlisteners;
  struct side udp_listeners[2]; /* udp.h; only when the engine forwards UDP */
  int nudp;
  struct udp_state *udp;
  int cpu; /* -1: not pinned */
  int pinned_ok;
  pthread_barrier_t *started; /* engine_start waits until every thread is pinned */
  struct cmd_queue cmds;
  struct tlist connecting, idle, held;
  struct conn *ready;
  struct conn *dead;       /* closed this turn: freed after the turn (epoll may still name them) */
  int64_t accept_retry_ms; /* accept failed for lack of descriptors: try again then (0: no) */
  bool accept_more;        /* a batch hit its cap: accept again before sleeping */
  int64_t held_scan_ms;
  int64_t warned_ms;       /* last warning event (rate limit) */
  bool stop;
  struct conn **held_hash; /* id -> held conn */
  uint32_t held_buckets;
  struct chunk *free_chunks;
  uint32_t nfree_chunks;
  int free_pipes[2 * 32]; /* read/write pairs (pool.c MAX_FREE_PIPES) */
  uint32_t nfree_pipes;
  char *copybuf;
  int64_t now_ms;
  uint64_t next_id;
  bool draining;
  struct stats *st;        /* this thread's counters (stats.h), read by JS */
  struct event_ring *ring; /* events.c */
  _Atomic uint64_t loops;  /* heartbeat: JS checks it advances */
  int fault;               /* test-only fault injection (see engine.c) */
};

struct engine {
  int nthreads;
  struct thread threads[MAX_THREADS];
  struct options opt;
  _Atomic uint32_t active; /* open connections, all threads: the maxConnections budget */
  _Atomic uint32_t udp_active; /* UDP flows, all threads: the udpMaxFlows budget */
  bool udp;                    /* UDP listeners and flows (udp.h) besides TCP */
  _Atomic int fatal;       /* set once by the first thread that cannot go on */
  uint16_t listen_port;
  int backlog;
  bool keep_client_ip;
  /* The datapath self-test (api/selftest.ts, ADR 0021): a connection to one of these addresses (any
   * port) is the node agent's probe; it gets `selftest_reply` and is closed, never dialled. */
  struct endpoint selftest[2];
  int nselftest;
  char selftest_reply[64];
  size_t selftest_reply_len;
  int families[2];
  int nfamilies;
  void (*notify)(struct engine *); /* wakes JS: events are waiting (addon.c) */
  void *notify_ctx;
  _Atomic int notify_pending;
  /* The egress policy (policy.h): swapped whole by JS; a thread reads it once per decision. Retired
   * tables are freed once every thread has turned its loop since (addon.c). */
  _Atomic(struct policy *) policy;
  struct policy *retired;
  uint32_t policy_generation;
  struct limits *limits;
  /* Rule counters by rule name, so they survive reloads: slot 0 is the default action. */
  uint64_t rule_keys[RULE_SLOTS];
  uint32_t nrule_keys;
  uint64_t *rule_counters; /* [threads][RULE_SLOTS][PC__COUNT] */
  _Atomic uint64_t audit_window; /* conn.c audit_admit: second << 32 | lines written in it */
  int64_t fault_after_ms;
  int fault_kind; /* 0 none, 1 stall thread 0, 2 fatal in thread 0 */
};

/* engine.c */
/* Creates every thread's listeners and starts the threads, each pinned to cpus[i] when cpus is not
 * NULL. -1 with errno and *syscall on failure, nothing left behind. */
int engine_start(struct engine *e, const int *cpus, const char **syscall);
void engine_send(struct engine *e, int thread, const struct cmd *c); /* -1: every thread */
/* Stops every thread, joins it, frees everything but the engine struct itself. */
void engine_join(struct engine *e);
void *engine_thread_main(void *arg); /* engine.c */
int64_t mono_ms(void);
int64_t mono_ns(void);

/* relay.c: moving bytes of one connection */
void relay_pump(struct thread *t, struct conn *c);
void conn_abort(struct thread *t, struct conn *c, int reason);
/* engine.c: closes both sockets (RST when rst), counts the result, frees the conn after this turn. */
void conn_close(struct thread *t, struct conn *c, int reason, bool rst);
void conn_release_dir(struct thread *t, struct dir *d);
/* Queues bytes as pending on a direction (they go out before anything read later). */
void dir_stash(struct thread *t, struct dir *d, const char *data, uint32_t len);

/* sockets.c */
int listen_transparent(int family, uint16_t port, int backlog, const char **syscall);
int dial_transparent(const struct endpoint *dst, const struct endpoint *src, const char **syscall);
void endpoint_from(struct endpoint *ep, const struct sockaddr_storage *ss);
socklen_t endpoint_to(const struct endpoint *ep, struct sockaddr_storage *ss);
bool endpoint_is_local(const struct endpoint *ep);
void set_linger0(int fd);

#endif
