/*
 * Moving the bytes of one connection, both directions, in the engine thread that owns it.
 *
 * Each direction is a small state machine over two flags per socket (readable, writable: set by
 * edge-triggered epoll, cleared when a call returns EAGAIN) and at most one pending unit: a chunk
 * (copy mode) or a pipe (splice mode), taken from the thread's pools only while bytes sit in it.
 * An idle connection holds neither, which is what keeps its state to a few hundred bytes.
 *
 * Copy vs splice (docs/adr/0011-data-engine.md): reads start as recv() into the thread's buffer; a
 * read that fills it means bulk data, and the direction switches to splice() through a pipe (no
 * copy into user space); a splice that moves less than SPLICE_MIN switches back.
 *
 * FIN with the last data (issue 21, ADR 0003): when the peer's FIN is already queued behind the data
 * (EPOLLRDHUP), the data is sent with MSG_MORE and the FIN follows in the same turn, so the kernel
 * puts both in one segment. A client that closes as soon as it has its response then sees the FIN
 * first and is not the side left holding the TIME_WAIT, exactly as on the direct path.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "pool.h"

enum { PUMP_IDLE = 0, PUMP_MORE = 1, PUMP_DEAD = -1 };

static bool pending(const struct dir *d) { return d->len > 0 || d->in_pipe > 0; }

/* Counts bytes that reached the destination: the direction's total, and how they moved. */
static void account(struct thread *t, struct conn *c, uint64_t *total, int stat, uint64_t n, bool spliced) {
  if (n == 0) return;
  *total += n;
  STAT_ADD(t, stat, n);
  STAT_ADD(t, spliced ? ST_relay_splice_bytes : ST_relay_copy_bytes, n);
  c->active_ms = t->now_ms;
}

void conn_release_dir(struct thread *t, struct dir *d) {
  if (d->buf) chunk_put(t, d->buf);
  d->buf = NULL;
  d->off = d->len = 0;
  if (d->pipe_r >= 0) pipe_put(t, d->pipe_r, d->pipe_w, d->in_pipe == 0);
  d->pipe_r = d->pipe_w = -1;
  d->in_pipe = 0;
}

static int reset_reason(int err, int side_reason) {
  return err == ECONNRESET || err == EPIPE || err == ECONNABORTED || err == ETIMEDOUT ? side_reason : ERR_OTHER;
}

/* Writes what is pending. 1: all of it went, 0: the destination is full, -1: error (errno). */
static int flush(struct thread *t, struct side *dst, struct dir *d, bool more) {
  if (d->len > 0) {
    ssize_t n = send(dst->fd, d->buf->data + d->off, d->len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    d->off += (uint32_t)n;
    d->len -= (uint32_t)n;
    if (d->len > 0) return 0;
    chunk_put(t, d->buf);
    d->buf = NULL;
    d->off = 0;
    return 1;
  }
  while (d->in_pipe > 0) {
    ssize_t n = splice(d->pipe_r, NULL, dst->fd, NULL, d->in_pipe,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (more ? SPLICE_F_MORE : 0));
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (n == 0) return 0;
    d->in_pipe -= (uint32_t)n;
  }
  return 1;
}

/* Keeps what a full destination did not take, in a pooled chunk. */
void dir_stash(struct thread *t, struct dir *d, const char *data, uint32_t len) {
  d->buf = chunk_get(t);
  memcpy(d->buf->data, data, len);
  d->off = 0;
  d->len = len;
}

/* One read-and-forward step in copy mode. Returns bytes read, 0 at EOF, -1 with errno. */
static ssize_t copy_step(struct thread *t, struct side *src, struct side *dst, struct dir *d, int *werr) {
  ssize_t n = recv(src->fd, t->copybuf, COPY_CHUNK, 0);
  if (n <= 0) return n;
  /* A short read with the FIN already queued: nothing follows but EOF. */
  bool fin_follows = (src->flags & S_RDHUP) && n < COPY_CHUNK;
  if (fin_follows) STAT_ADD(t, ST_fin_with_data, 1);
  ssize_t w = send(dst->fd, t->copybuf, (size_t)n, MSG_NOSIGNAL | (fin_follows ? MSG_MORE : 0));
  if (w < 0 && errno != EAGAIN) {
    *werr = errno;
    return n;
  }
  if (w < 0) w = 0;
  if (w < n) {
    dir_stash(t, d, t->copybuf + w, (uint32_t)(n - w));
    dst->flags &= (uint8_t)~S_WRITABLE;
  }
  if (n == COPY_CHUNK && atomic_load_explicit(&t->e->opt.splice, memory_order_relaxed)) d->splice = true;
  /* A short read emptied the socket: the next edge says when more arrives, so no recv() just to see
   * EAGAIN (one syscall saved per message; with the FIN queued, the EOF read still follows). */
  if (n < COPY_CHUNK && !(src->flags & S_RDHUP)) src->flags &= (uint8_t)~S_READABLE;
  return n;
}

/* One step in splice mode: socket -> pipe, then pipe -> socket. Same returns as copy_step. */
static ssize_t splice_step(struct thread *t, struct side *src, struct side *dst, struct dir *d, int *werr, bool *spliced) {
  if (d->pipe_r < 0 && pipe_get(t, &d->pipe_r, &d->pipe_w) < 0) {
    d->splice = *spliced = false; /* no pipe to be had (fd limit): copying still works */
    return copy_step(t, src, dst, d, werr);
  }
  ssize_t n = splice(src->fd, NULL, d->pipe_w, NULL, PIPE_CAPACITY, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n <= 0) return n;
  d->in_pipe = (uint32_t)n;
  bool fin_follows = (src->flags & S_RDHUP) && (size_t)n < PIPE_CAPACITY;
  if (fin_follows) STAT_ADD(t, ST_fin_with_data, 1);
  int r = flush(t, dst, d, fin_follows);
  if (r < 0) *werr = errno;
  if (r == 0) dst->flags &= (uint8_t)~S_WRITABLE;
  if (n < SPLICE_MIN) d->splice = false;
  return n;
}

/*
 * Moves src -> dst until one of them would block, the source ends, or the budget is spent.
 * read_reason/write_reason: the error reason when reading src / writing dst fails with a reset.
 */
static int pump_dir(struct thread *t, struct conn *c, struct side *src, struct side *dst, struct dir *d,
                    int read_reason, int write_reason, uint64_t *total, int stat) {
  int budget = PUMP_BUDGET;
  for (;;) {
    if (pending(d)) {
      if (!(dst->flags & S_WRITABLE)) return PUMP_IDLE;
      uint32_t before = d->len + d->in_pipe;
      bool spliced = d->in_pipe > 0;
      int r = flush(t, dst, d, false);
      account(t, c, total, stat, before - (d->len + d->in_pipe), spliced);
      if (r < 0) {
        conn_abort(t, c, reset_reason(errno, write_reason));
        return PUMP_DEAD;
      }
      if (r == 0) {
        dst->flags &= (uint8_t)~S_WRITABLE;
        return PUMP_IDLE;
      }
    }
    if (src->flags & S_EOF) {
      if (!(dst->flags & S_SHUT)) {
        /* Half-close: the other direction goes on. Sent at once, in the turn that read the EOF. */
        shutdown(dst->fd, SHUT_WR);
        dst->flags |= S_SHUT;
      }
      if (d->pipe_r >= 0) conn_release_dir(t, d);
      return PUMP_IDLE;
    }
    if (!(src->flags & S_READABLE)) return PUMP_IDLE;
    if (budget <= 0) return PUMP_MORE;
    int werr = 0;
    bool spliced = d->splice;
    ssize_t n = spliced ? splice_step(t, src, dst, d, &werr, &spliced) : copy_step(t, src, dst, d, &werr);
    if (n > 0) {
      /* Nothing was pending before the step: what is pending now is what the destination did not take. */
      account(t, c, total, stat, (uint64_t)n - (d->len + d->in_pipe), spliced);
      budget -= (int)n;
      if (werr) {
        conn_abort(t, c, reset_reason(werr, write_reason));
        return PUMP_DEAD;
      }
      continue;
    }
    if (n == 0) {
      src->flags |= S_EOF;
      continue;
    }
    if (errno == EAGAIN) {
      src->flags &= (uint8_t)~S_READABLE;
      if (d->pipe_r >= 0 && d->in_pipe == 0) conn_release_dir(t, d);
      return PUMP_IDLE;
    }
    conn_abort(t, c, reset_reason(errno, read_reason));
    return PUMP_DEAD;
  }
}

/* Runs both directions; requeues the connection when a budget ran out, closes it when both ended. */
void relay_pump(struct thread *t, struct conn *c) {
  if (c->state != C_OPEN) return;
  int a = pump_dir(t, c, &c->c, &c->u, &c->up, ERR_CLIENT_RESET, ERR_UPSTREAM_RESET, &c->bytes_up, ST_bytes_up);
  if (a == PUMP_DEAD) return;
  int b = pump_dir(t, c, &c->u, &c->c, &c->down, ERR_UPSTREAM_RESET, ERR_CLIENT_RESET, &c->bytes_down, ST_bytes_down);
  if (b == PUMP_DEAD) return;
  bool up_done = (c->c.flags & S_EOF) && (c->u.flags & S_SHUT) && !pending(&c->up);
  bool down_done = (c->u.flags & S_EOF) && (c->c.flags & S_SHUT) && !pending(&c->down);
  /* Both directions ended: FINs went both ways, so a plain close sends nothing more. */
  if (up_done && down_done) return conn_close(t, c, ERR_NONE, false);
  if ((a == PUMP_MORE || b == PUMP_MORE) && !c->queued) {
    c->queued = 1;
    c->rnext = t->ready;
    t->ready = c;
  }
}

void conn_abort(struct thread *t, struct conn *c, int reason) { conn_close(t, c, reason, true); }
