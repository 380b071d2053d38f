// Typed loader of the N-API addon built from native/src/*.c by scripts/bootstrap.sh: the data engine
// (docs/adr/0011-data-engine.md) and CPU pinning (docs/adr/0002-native-addon.md). engine.ts wraps the
// engine functions; nothing else should call them directly.
import { createRequire } from 'node:module';
import { errorMessage } from '../../api/errors.ts';

export type IpFamily = 4 | 6;

/** The shape of errors the addon throws (like Node's own system errors). */
export interface NativeError extends Error {
  /** errno name: EPERM, EADDRINUSE, ... */
  code: string;
  /** negative errno */
  errno: number;
  syscall: string;
}

export interface NativeEndpoint {
  address: string;
  port: number;
  family: IpFamily;
}

/** Options the engine takes at start; the live ones (LiveOptions) can change while it runs. */
export interface LiveOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Decision hook: how long a held connection waits for its first bytes before the hook decides without them. */
  holdTimeoutMs: number;
  maxConnections: number;
  /** Hold every accepted connection for the decision hook (engine.ts onDecide). */
  hook: boolean;
  /** With hook: wait for the client's first bytes (peeked, left on the socket) before asking. */
  peek: boolean;
  /** One event per accepted and closed connection (debug logging). */
  logConnections: boolean;
  /** Bulk directions move with splice(2); false: copy only (benchmark knob). */
  splice: boolean;
  /** One event per connection when it ends, for the audit log, at most auditPerSecond a second. */
  audit: boolean;
  auditPerSecond: number;
  /** A UDP flow with no datagram either way for this long is closed. */
  udpIdleTimeoutMs: number;
  /** UDP flows, all threads; datagrams of new flows beyond it are dropped (counted). */
  udpMaxFlows: number;
}

export interface StartOptions extends LiveOptions {
  threads: number;
  listenPort: number;
  backlog: number;
  ipv4: boolean;
  ipv6: boolean;
  keepClientIp: boolean;
  /** UDP listeners and flows on listenPort as well (docs/udp.md). */
  udp: boolean;
  /** One CPU per thread, or null to leave threads unpinned. */
  cpus: number[] | null;
  /** A compiled egress policy (sidecar/policy.ts) installed before the listeners open (generation 1). */
  policy?: Uint8Array;
  /** The node agent's probe destinations (api/selftest.ts): answered with selftestReply and closed, never dialled. */
  selftestDestinations?: string[];
  /** Required with selftestDestinations: 1 to 62 bytes. */
  selftestReply?: string;
  /** Test-only fault injection: 0 none, 1 stall thread 0, 2 thread 0 fails. */
  faultKind: 0 | 1 | 2;
  faultAfterMs: number;
}

export type NativeEvent =
  | { kind: 'accepted'; thread: number; id: bigint; src: NativeEndpoint; dst: NativeEndpoint }
  | {
      kind: 'closed';
      thread: number;
      id: bigint;
      src: NativeEndpoint;
      dst: NativeEndpoint;
      /** enum err_reason of stats.h: 0 none, 1..8 the error reasons in metrics.ts order, 9 denied, 10 limited. */
      reason: number;
      bytesUp: number;
      bytesDown: number;
      durationUs: number;
      /** The policy rule that decided (-1 the default action, -2 no policy), in the table of `generation`. */
      rule: number;
      /** 0 allow, 1 deny, 2 forward. */
      action: number;
      upstream: number;
      generation: number;
      /** 1: name is the TLS SNI, 2: the HTTP Host; 0: no name was seen. */
      nameKind: number;
      name?: string;
      /** This event is an audit line (within the per-second cap), not only a debug log. */
      audit: boolean;
    }
  | {
      kind: 'decide';
      thread: number;
      id: bigint;
      src: NativeEndpoint;
      dst: NativeEndpoint;
      flags: number;
      bytes: Buffer;
    }
  | { kind: 'warn'; thread: number; what: string; errno: number; code: string }
  | { kind: 'fatal'; thread: number; what: string; errno: number; code: string };

/** A started engine. */
export interface NativeHandle {
  readonly __engine: unique symbol;
}

export interface TpfleetNative {
  engineStart(
    opts: StartOptions,
    onEvents: (events: NativeEvent[]) => void,
  ): {
    handle: NativeHandle;
    threads: { cpu: number; pinned: boolean }[];
  };
  /** Counters summed over threads, in statNames() order, then the number of open connections. */
  engineStats(h: NativeHandle): Float64Array;
  /** Loop turns per thread: each advances at least once a second while the thread lives. */
  engineHeartbeats(h: NativeHandle): Float64Array;
  engineSetOptions(h: NativeHandle, opts: Partial<LiveOptions>): void;
  /** 0 forward to the original destination, 1 reset, 2 forward to `to`, 3 wait for more bytes. */
  engineDecide(h: NativeHandle, id: bigint, verdict: 0 | 1 | 2 | 3, to?: { address: string; port: number }): void;
  engineDrain(h: NativeHandle): void;
  engineCloseAll(h: NativeHandle): void;
  engineStop(h: NativeHandle): void;
  statNames(): string[];
  /** Installs a compiled policy (sidecar/policy.ts) or removes it (null); returns its generation. Throws on a malformed table and keeps the old one. */
  engineSetPolicy(h: NativeHandle, compiled: Uint8Array | null): number;
  /** Decisions by rule (keyed by the FNV-1a of the rule name, 0 for the default action): allow, deny, forward, limited. */
  engineRuleCounters(h: NativeHandle): { keys: BigUint64Array; counts: Float64Array };
  /** The engine's decision for one connection, off-line (tests). */
  policyEvaluate(
    compiled: Uint8Array,
    c: { src: string; dst: string; port: number; sni?: string; host?: string },
  ): { rule: number; peek: boolean };
  /**
   * Pins every thread of the calling process to `cpus` (sched_setaffinity per /proc/self/task
   * entry; threads created later inherit it). Call it before engineStart: it would re-pin engine
   * threads too. Throws EINVAL when no CPU of the list is online and allowed (cgroup cpuset).
   */
  setAffinity(cpus: number[]): void;
  /** The calling thread's allowed CPUs, ascending (sched_getaffinity). */
  getAffinity(): number[];
}

const ADDON = './build/Release/tpfleet_native.node';

function load(): TpfleetNative {
  try {
    return createRequire(import.meta.url)(ADDON) as TpfleetNative;
  } catch (e) {
    throw new Error(
      `the sidecar's native addon is not built (${errorMessage(e)}); ` +
        'run any `bash scripts/tpfleet.sh ...` command, which builds it with node-gyp',
    );
  }
}

/** Loaded on first use so modules that only import types never need the build. */
let addon: TpfleetNative | undefined;
export function native(): TpfleetNative {
  addon ??= load();
  return addon;
}
