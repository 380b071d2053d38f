/*
 * UDP forwarding in the engine threads (docs/adr/0017-udp-forwarding.md). Each engine thread has
 * its own SO_REUSEPORT transparent UDP listener per family. TPROXY hands every client datagram of
 * an intercepted flow to the listener group, and the kernel picks the member by a hash of the
 * client's address and port: a flow's datagrams always reach the same thread, which looks the flow
 * up by (client, original destination) in its own table. Per flow and thread:
 *   - the upstream socket (one per flow): transparent, connected to the original destination,
 *     bound to the client's address and port with keepClientIp, else to a port of the node;
 *   - the reply socket (one per original destination and thread, shared by its flows, kept while
 *     one holds it): transparent, bound to the original destination, so replies leave from the
 *     address the client asked. It only sends (sendmmsg with the client's address); it is connected
 *     to itself, so once connected no incoming datagram matches it and every client datagram reaches
 *     the listener (a bound, unconnected socket catches client datagrams: what it caught between
 *     bind and connect is forwarded after the batch, udp.c reply_get / rescue_fresh).
 * One descriptor per flow: 10,000 flows are 10,000 sockets, not 20,000.
 * Nothing is allocated per datagram: each thread owns one batch of buffers for recvmmsg/sendmmsg.
 */
#ifndef TPFLEET_UDP_H
#define TPFLEET_UDP_H

#include <stdint.h>

#include "engine.h"

/* Datagrams moved per recvmmsg / sendmmsg (and segments per GSO send). */
#define UDP_BATCH 32
/* Room per datagram: the largest IPv4/IPv6 UDP payload, so nothing is ever truncated. */
#define UDP_SLOT 65536

struct reply; /* udp.c */

struct flow {
  struct side u;        /* upstream socket (kind K_UDP_UPSTREAM) */
  struct reply *reply;  /* the reply socket of dst on this thread */
  struct endpoint src, dst;
  int64_t active_ms, queued_ms; /* lazy LRU, as struct conn (engine.c) */
  struct flow *tprev, *tnext;   /* the thread's idle list */
  struct flow *hnext;           /* hash chain, by (src, dst) */
  struct flow *dnext;           /* dead list: freed after the turn */
  uint8_t dead;
};

/* setup.c: the listeners and the flow table of one thread. */
int udp_init_thread(struct engine *e, struct thread *t, const char **syscall);
void udp_free_thread(struct thread *t);
/* engine.c: the loop hands UDP sockets' events here. */
void udp_event(struct thread *t, struct side *s);
/* The earliest idle deadline, or INT64_MAX. */
int64_t udp_next_deadline(struct thread *t);
void udp_sweep(struct thread *t);
void udp_free_dead(struct thread *t);
void udp_close_listeners(struct thread *t);
void udp_close_all(struct thread *t);

#endif
