/* Egress policy decisions in the engine thread (decide.c). */
#ifndef TPFLEET_DECIDE_H
#define TPFLEET_DECIDE_H

#include <stdbool.h>

#include "engine.h"

/* With a policy installed: decides now, or holds the connection for its first bytes. false: no policy. */
bool decide_at_accept(struct thread *t, struct conn *c);
/* A connection held by the policy became readable (or ended). */
void decide_readable(struct thread *t, struct conn *c);
/* Its peek timeout expired: decide with what is known (no name). */
void decide_timeout(struct thread *t, struct conn *c);

#endif
