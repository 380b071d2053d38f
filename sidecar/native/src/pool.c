#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"

/* Enough for a burst of slow readers on one thread; beyond this, chunks go back to malloc. */
#define MAX_FREE_CHUNKS 64
#define MAX_FREE_PIPES 32

struct chunk *chunk_get(struct thread *t) {
  struct chunk *c = t->free_chunks;
  if (c) {
    t->free_chunks = c->next;
    t->nfree_chunks--;
    return c;
  }
  c = malloc(sizeof *c);
  if (!c) {
    fprintf(stderr, "tpfleet engine: out of memory for a copy chunk\n");
    abort();
  }
  return c;
}

void chunk_put(struct thread *t, struct chunk *c) {
  if (t->nfree_chunks >= MAX_FREE_CHUNKS) {
    free(c);
    return;
  }
  c->next = t->free_chunks;
  t->free_chunks = c;
  t->nfree_chunks++;
}

int pipe_get(struct thread *t, int *r, int *w) {
  if (t->nfree_pipes > 0) {
    t->nfree_pipes--;
    *r = t->free_pipes[2 * t->nfree_pipes];
    *w = t->free_pipes[2 * t->nfree_pipes + 1];
    return 0;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
  /* Bigger pipes move more per splice() (fewer syscalls per GB); refused beyond the user's pipe
   * budget (fs.pipe-user-pages-soft), then the kernel's 64 KiB default stays. */
  (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_CAPACITY);
  *r = fds[0];
  *w = fds[1];
  return 0;
}

/* A pipe that still holds bytes (an aborted connection) is closed, never reused. */
void pipe_put(struct thread *t, int r, int w, bool empty) {
  if (!empty || t->nfree_pipes >= MAX_FREE_PIPES) {
    close(r);
    close(w);
    return;
  }
  t->free_pipes[2 * t->nfree_pipes] = r;
  t->free_pipes[2 * t->nfree_pipes + 1] = w;
  t->nfree_pipes++;
}

void pool_free_all(struct thread *t) {
  while (t->free_chunks) {
    struct chunk *c = t->free_chunks;
    t->free_chunks = c->next;
    free(c);
  }
  t->nfree_chunks = 0;
  for (uint32_t i = 0; i < 2 * t->nfree_pipes; i++) close(t->free_pipes[i]);
  t->nfree_pipes = 0;
}
