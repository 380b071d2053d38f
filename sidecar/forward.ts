// Forwarding of one accepted client connection to its original destination, both directions,
// with backpressure (pipe) and half-close. One Forwarder per worker process.
import type net from 'node:net';
import { endpoint, isLoop, type Endpoint } from './address.ts';
import type { Dialer } from './dial.ts';
import type { Logger } from './log.ts';
import type { CloseResult, ErrorReason, ForwarderMetrics } from './metrics.ts';

export interface ForwarderOptions {
  listenPort: number;
  keepClientIp: boolean;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Open connections this worker accepts; more are shed (reset at once). */
  maxConnections: number;
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket | undefined;
  /** First failure; decides the close result. */
  reason: ErrorReason | undefined;
  /** Bytes already added to the bytes_total counter (see flushBytes). */
  countedIn: number;
  countedOut: number;
  closes: number;
  timer: NodeJS.Timeout | undefined;
}

const CONNECT_ERRORS: Record<string, ErrorReason> = {
  ECONNREFUSED: 'connect_refused',
  ETIMEDOUT: 'connect_timeout',
  EHOSTUNREACH: 'connect_unreachable',
  ENETUNREACH: 'connect_unreachable',
  EHOSTDOWN: 'connect_unreachable',
};
const RESETS = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

export class Forwarder {
  private readonly open = new Set<Conn>();
  private readonly debug: boolean;
  private idleCallbacks: (() => void)[] = [];

  constructor(
    private readonly opts: ForwarderOptions,
    private readonly dial: Dialer,
    private readonly metrics: ForwarderMetrics,
    private readonly log: Logger,
  ) {
    this.debug = log.isLevelEnabled('debug');
    metrics.beforeCollect.push(() => {
      metrics.active.set(this.open.size);
      for (const c of this.open) this.flushBytes(c);
    });
  }

  get active(): number {
    return this.open.size;
  }

  /**
   * Forwards `client` to `dst`, by default its local address: under TPROXY the accepted socket's
   * local address IS the original destination. Tests pass `dst` explicitly (the seam: a plain
   * listener cannot produce a different local address). Never throws.
   */
  handle(client: net.Socket, dst: Endpoint | undefined = endpoint(client.localAddress, client.localPort)): void {
    this.metrics.accepted.inc();
    if (this.open.size >= this.opts.maxConnections) return this.refuse(client, 'shed', dst);
    // No address: the peer already reset the connection (or, with keepClientIp, we could only
    // connect from our own address, which is not what the user asked for).
    const source = this.opts.keepClientIp ? (endpoint(client.remoteAddress, client.remotePort)?.address ?? null) : null;
    if (!dst || (this.opts.keepClientIp && !source)) return this.refuse(client, 'error', dst);
    if (isLoop(dst, this.opts.listenPort)) return this.refuse(client, 'loop', dst);

    const c: Conn = {
      client,
      upstream: undefined,
      reason: undefined,
      countedIn: 0,
      countedOut: 0,
      closes: 0,
      timer: undefined,
    };
    this.open.add(c);
    client.on('error', (e) => this.fail(c, RESETS.has(errCode(e)) ? 'client_reset' : 'other', e));
    client.on('close', () => this.closed(c));
    client.setTimeout(this.opts.idleTimeoutMs, () => this.fail(c, 'idle_timeout'));
    try {
      c.upstream = this.dial(dst, source);
    } catch (e) {
      c.closes++; // no upstream socket: only the client's 'close' remains
      return this.fail(c, 'other', e as Error);
    }
    this.watchUpstream(c, c.upstream);
    // pipe(): backpressure both ways (a full destination pauses the source) and, with
    // allowHalfOpen on both sockets, a FIN from one side ends only the other side's writing.
    client.pipe(c.upstream);
    c.upstream.pipe(client);
    if (this.debug)
      this.log.debug(
        { dst: `${dst.address}:${dst.port}`, src: client.remoteAddress, keepClientIp: source !== null },
        'accepted',
      );
  }

  /** Connect timeout, connect latency, and the upstream's errors and close. */
  private watchUpstream(c: Conn, upstream: net.Socket): void {
    // No Nagle on the upstream leg: the client already chose its segmenting; delaying small
    // writes again here would add latency to request/response traffic.
    upstream.setNoDelay(true);
    const started = process.hrtime.bigint();
    // The check runs from setImmediate, after the loop's I/O phase: when this process was starved
    // of CPU past the deadline, libuv runs due timers *before* polling, and a connect that did
    // complete in the kernel meanwhile would otherwise be reported as timed out.
    c.timer = setTimeout(
      () =>
        setImmediate(() => {
          if (upstream.connecting) this.fail(c, 'connect_timeout');
        }),
      this.opts.connectTimeoutMs,
    );
    upstream.once('connect', () => {
      clearTimeout(c.timer);
      c.timer = undefined;
      this.metrics.connectSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    });
    upstream.on('error', (e) => {
      const code = errCode(e);
      const connecting = c.timer !== undefined; // cleared on 'connect'
      this.fail(c, connecting ? (CONNECT_ERRORS[code] ?? 'other') : RESETS.has(code) ? 'upstream_reset' : 'other', e);
    });
    upstream.on('close', () => this.closed(c));
  }

  /** Destroys every open connection (end of a drain). */
  destroyAll(): void {
    for (const c of this.open) this.fail(c, 'other');
  }

  /** Resolves when no connection is open. */
  idle(): Promise<void> {
    if (this.open.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleCallbacks.push(resolve));
  }

  private refuse(client: net.Socket, result: CloseResult, dst: Endpoint | undefined): void {
    if (result === 'shed') this.metrics.shed.inc();
    this.metrics.closed.inc({ result });
    client.on('error', () => {}); // the reset may race with a peer error; nothing left to report
    client.resetAndDestroy();
    if (this.debug)
      this.log.debug({ dst: dst && `${dst.address}:${dst.port}`, src: client.remoteAddress, result }, 'refused');
  }

  /** First failure wins; both sockets are torn down with a RST so each peer sees the abort. */
  private fail(c: Conn, reason: ErrorReason, err?: Error): void {
    if (c.reason === undefined) {
      c.reason = reason;
      if (this.debug) this.log.debug({ reason, err: err?.message }, 'connection failed');
    }
    clearTimeout(c.timer);
    abort(c.client);
    if (c.upstream) abort(c.upstream);
  }

  /** Counts one socket's 'close'; the connection is over when both sockets are closed. */
  private closed(c: Conn): void {
    if (++c.closes < 2) return;
    clearTimeout(c.timer);
    this.open.delete(c);
    this.flushBytes(c);
    const r = c.reason;
    const result: CloseResult =
      r === undefined ? 'ok' : r === 'connect_timeout' || r === 'idle_timeout' ? 'timeout' : 'error';
    if (r) this.metrics.errors.inc({ reason: r });
    this.metrics.closed.inc({ result });
    if (this.debug)
      this.log.debug(
        { result, reason: r, bytesIn: c.client.bytesRead, bytesOut: c.upstream?.bytesRead ?? 0 },
        'closed',
      );
    if (this.open.size === 0 && this.idleCallbacks.length) {
      const cbs = this.idleCallbacks;
      this.idleCallbacks = [];
      for (const cb of cbs) cb();
    }
  }

  /** Adds the bytes read since the last flush; called at close and at every scrape. */
  private flushBytes(c: Conn): void {
    const inBytes = c.client.bytesRead,
      outBytes = c.upstream?.bytesRead ?? 0;
    if (inBytes > c.countedIn) this.metrics.bytes.inc({ direction: 'client_to_upstream' }, inBytes - c.countedIn);
    if (outBytes > c.countedOut) this.metrics.bytes.inc({ direction: 'upstream_to_client' }, outBytes - c.countedOut);
    c.countedIn = inBytes;
    c.countedOut = outBytes;
  }
}

const errCode = (e: unknown): string => (e as NodeJS.ErrnoException | undefined)?.code ?? '';

/** RST when connected (the peer learns the stream was cut, not completed), else plain destroy. */
function abort(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.connecting || s.pending) s.destroy();
  else s.resetAndDestroy();
}
