// The data engine under TypeScript control (docs/adr/0011-data-engine.md). The native threads accept,
// dial and move bytes; this class starts them, reads their counters, hands their events to the
// caller, answers the decision hook and stops them. Nothing here runs per chunk, and nothing runs
// per connection unless connection logging or the hook is on.
import {
  type LiveOptions,
  type NativeEndpoint,
  type NativeEvent,
  type NativeHandle,
  native,
  type StartOptions,
} from './native/index.ts';

export type { LiveOptions, NativeEndpoint, StartOptions };

/** What the hook sees of a held connection. */
export interface HeldConnection {
  id: bigint;
  thread: number;
  src: NativeEndpoint;
  dst: NativeEndpoint;
  /** The client's first bytes (peek mode), still on the socket: forwarding sends them on. */
  bytes: Buffer;
  /** The client ended its stream, or the peek buffer is full: no more bytes will come. */
  complete: boolean;
  /** The hold timeout expired before the bytes the hook wanted arrived. */
  timedOut: boolean;
}

export type Verdict =
  | { action: 'forward' }
  | { action: 'reset' }
  | { action: 'forward-to'; address: string; port: number }
  /** Not enough bytes yet: ask again when more arrive (or at the hold timeout). */
  | { action: 'more' };

const VERDICT_CODE = { forward: 0, reset: 1, 'forward-to': 2, more: 3 } as const;
const EVF_EOF = 1,
  EVF_TIMEOUT = 2;

export type EngineEvent = Exclude<NativeEvent, { kind: 'decide' }>;

/** Counters by their native names (native/src/stats.h), and open connections. */
export type EngineStats = { active: number; udpActive: number } & Record<string, number>;

export interface EngineCallbacks {
  /** Connection events (with logConnections), warnings and the fatal error. */
  onEvent(e: EngineEvent): void;
  /** The decision hook (with hook): must answer, synchronously or not; a throw resets the connection. */
  onDecide?(c: HeldConnection): Verdict | Promise<Verdict>;
}

export class Engine {
  private readonly names: string[];
  private stopped = false;

  private constructor(
    private readonly handle: NativeHandle,
    readonly threads: { cpu: number; pinned: boolean }[],
    readonly options: StartOptions,
  ) {
    this.names = native().statNames();
  }

  /** Starts the threads and their listeners; throws a NativeError (listen, pin) and leaves nothing behind. */
  static start(opts: StartOptions, cb: EngineCallbacks): Engine {
    let engine: Engine | undefined;
    const { handle, threads } = native().engineStart(opts, (events) => {
      for (const e of events) {
        if (e.kind === 'decide') engine?.decide(e, cb);
        else cb.onEvent(e);
      }
    });
    engine = new Engine(handle, threads, opts);
    return engine;
  }

  /** Counters summed over threads, by their native names (stats.h), plus `active`. */
  stats(): EngineStats {
    const v = native().engineStats(this.handle);
    const out: EngineStats = { active: v[this.names.length] ?? 0, udpActive: v[this.names.length + 1] ?? 0 };
    for (const [i, n] of this.names.entries()) out[n] = v[i] ?? 0;
    return out;
  }

  heartbeats(): number[] {
    return [...native().engineHeartbeats(this.handle)];
  }

  /** Changes timeouts, limits, the hook or logging in place (every thread, within one loop turn). */
  setOptions(opts: Partial<LiveOptions>): void {
    native().engineSetOptions(this.handle, opts);
  }

  /** Installs a compiled egress policy (policy.ts) or removes it (null); its generation. Throws and keeps the old one on a malformed table. */
  setPolicy(compiled: Uint8Array | null): number {
    return native().engineSetPolicy(this.handle, compiled);
  }

  /** Decisions by rule key (FNV-1a of the rule's name, 0 the default action): allow, deny, forward, limited per key. */
  ruleCounters(): { keys: BigUint64Array; counts: Float64Array } {
    return native().engineRuleCounters(this.handle);
  }

  /** Stops accepting: every thread closes its listeners; open connections go on. */
  drain(): void {
    native().engineDrain(this.handle);
  }

  /** Resets every open connection (the end of a drain). */
  closeAll(): void {
    native().engineCloseAll(this.handle);
  }

  /** Joins the threads; idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    native().engineStop(this.handle);
  }

  private decide(e: Extract<NativeEvent, { kind: 'decide' }>, cb: EngineCallbacks): void {
    const held: HeldConnection = {
      id: e.id,
      thread: e.thread,
      src: e.src,
      dst: e.dst,
      bytes: e.bytes,
      complete: (e.flags & EVF_EOF) !== 0,
      timedOut: (e.flags & EVF_TIMEOUT) !== 0,
    };
    const answer = (v: Verdict): void => {
      if (this.stopped) return;
      if (v.action === 'forward-to') native().engineDecide(this.handle, e.id, 2, { address: v.address, port: v.port });
      else native().engineDecide(this.handle, e.id, VERDICT_CODE[v.action]);
    };
    if (!cb.onDecide) {
      answer({ action: 'forward' });
      return;
    }
    try {
      const v = cb.onDecide(held);
      if (v instanceof Promise) v.then(answer, () => answer({ action: 'reset' }));
      else answer(v);
    } catch {
      answer({ action: 'reset' });
    }
  }
}

/** TPFLEET_ENGINE_FAULT=stall:MS|fatal:MS (tests only): thread 0 stalls or fails MS after start. */
export function parseFault(text: string | undefined): Pick<StartOptions, 'faultKind' | 'faultAfterMs'> {
  if (!text) return { faultKind: 0, faultAfterMs: 0 };
  const m = /^(stall|fatal):(\d{1,7})$/.exec(text);
  if (!m) throw new Error(`TPFLEET_ENGINE_FAULT must be stall:MS or fatal:MS, got ${JSON.stringify(text)}`);
  return { faultKind: m[1] === 'stall' ? 1 : 2, faultAfterMs: Number(m[2]) };
}
