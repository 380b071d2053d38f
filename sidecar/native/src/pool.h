/* Per-thread pools of copy chunks and splice pipes, held by a connection only while bytes sit in
 * them. The free lists are capped, so memory and descriptors go back after a burst. */
#ifndef TPFLEET_POOL_H
#define TPFLEET_POOL_H

#include "engine.h"

/* Pipes are asked for this size (the kernel's default is 64 KiB); splice moves at most this much per call. */
#define PIPE_CAPACITY (256 * 1024)

struct chunk {
  struct chunk *next;
  char data[COPY_CHUNK];
};

struct chunk *chunk_get(struct thread *t); /* aborts the process on ENOMEM: nothing sane remains */
void chunk_put(struct thread *t, struct chunk *c);
int pipe_get(struct thread *t, int *r, int *w); /* -1 with errno when no pipe can be made */
void pipe_put(struct thread *t, int r, int w, bool empty);
void pool_free_all(struct thread *t);

#endif
