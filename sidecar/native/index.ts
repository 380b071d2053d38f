// Typed loader of the N-API addon built from native/src/tpfleet_native.c by scripts/bootstrap.sh
// (docs/adr/0002-native-addon.md). The addon only creates sockets (libuv owns them afterwards) and
// pins the calling process to CPUs.
import { createRequire } from 'node:module';

export type IpFamily = 4 | 6;

/** The shape of errors the addon throws (like Node's own system errors). */
export interface NativeError extends Error {
  /** errno name: EPERM, EADDRINUSE, ... */
  code: string;
  /** negative errno */
  errno: number;
  syscall: 'socket' | 'setsockopt' | 'bind' | 'listen' | 'sched_setaffinity' | 'sched_getaffinity';
}

export interface TpfleetNative {
  /**
   * A non-blocking, close-on-exec TCP listener with SO_REUSEADDR, SO_REUSEPORT and IP_TRANSPARENT
   * (IPV6_TRANSPARENT + IPV6_V6ONLY for family 6), bound and listening with `backlog`. Adopt it
   * with `adoptListener()` (listener.ts). Needs CAP_NET_ADMIN or CAP_NET_RAW.
   */
  listenTransparent(family: IpFamily, address: string, port: number, backlog: number): number;
  /**
   * An unconnected, non-blocking, close-on-exec TCP socket with IP_TRANSPARENT, bound to
   * `bindAddress` (port chosen at connect, IP_BIND_ADDRESS_NO_PORT) when given, with SO_MARK when
   * `mark` is not 0. Adopt it with `new net.Socket({ fd })` and connect() in the same tick (see
   * dial.ts). Needs CAP_NET_ADMIN or CAP_NET_RAW (SO_MARK: CAP_NET_ADMIN).
   */
  transparentSocket(family: IpFamily, bindAddress: string | null, mark: number): number;
  /**
   * Pins every thread of the calling process to `cpus` (sched_setaffinity per /proc/self/task
   * entry; threads created later inherit it). No capability needed. Throws EINVAL when no CPU of
   * the list is online and allowed (cgroup cpuset); a TypeError for an empty list or CPUs outside 0..8191.
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
      `the sidecar's native addon is not built (${(e as Error).message}); ` +
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
