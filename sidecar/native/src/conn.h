/* Connection lifecycle inside an engine thread (conn.c). */
#ifndef TPFLEET_CONN_H
#define TPFLEET_CONN_H

#include "engine.h"

/* How long JS has to answer a decision request before the connection is reset. */
#define HOOK_ANSWER_MS 5000

void tlist_push(struct tlist *l, struct conn *c);
void tlist_remove(struct tlist *l, struct conn *c);
void conn_accept(struct thread *t, struct side *listener);
void conn_dial(struct thread *t, struct conn *c, const struct endpoint *to);
void conn_connected(struct thread *t, struct conn *c);
void conn_handshake_io(struct thread *t, struct conn *c);
void conn_held_readable(struct thread *t, struct conn *c);
void conn_ask(struct thread *t, struct conn *c, const char *bytes, uint32_t len, uint8_t flags);
void conn_verdict(struct thread *t, const struct cmd *cmd);
struct conn *held_find(struct thread *t, uint64_t id);

#endif
