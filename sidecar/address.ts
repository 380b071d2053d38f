// Addresses of a forwarded connection. Pure functions apart from localAddresses() (one getifaddrs).
import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { IpFamily } from './native/index.ts';

export interface Endpoint {
  address: string;
  port: number;
  family: IpFamily;
}

/**
 * Canonical text of an address as the kernel reports it on an accepted socket: an IPv4-mapped
 * IPv6 address ("::ffff:10.0.0.1", from a dual-stack socket) becomes plain IPv4, IPv6 is lower
 * case with any zone index ("%eth0") dropped. Returns undefined for anything that is not an IP.
 */
export function normalizeAddress(text: string | undefined): { address: string; family: IpFamily } | undefined {
  if (!text) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
  if (mapped?.[1] && isIPv4(mapped[1])) return { address: mapped[1], family: 4 };
  if (isIPv4(text)) return { address: text, family: 4 };
  const bare = text.split('%')[0] ?? '';
  if (isIPv6(bare)) return { address: bare.toLowerCase(), family: 6 };
  return undefined;
}

/** Normalised address and port, or undefined when the socket is already gone (no address). */
export function endpoint(address: string | undefined, port: number | undefined): Endpoint | undefined {
  const a = normalizeAddress(address);
  if (!a || port === undefined || port < 1 || port > 65535) return undefined;
  return { ...a, port };
}

/** The addresses of this host's (this network namespace's) interfaces, normalised. */
export function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      const a = normalizeAddress(i.address);
      if (a) out.add(a.address);
    }
  }
  return out;
}

const isLoopbackOrAny = (a: string): boolean => a.startsWith('127.') || a === '0.0.0.0' || a === '::1' || a === '::';

/**
 * True when forwarding to `dst` would connect the proxy to itself: the destination is the proxy's
 * own listen port on an address of this host. Such a connection reaches the proxy when a client
 * connects to the node's IP and listen port directly; forwarding it would loop until descriptors
 * run out. The interface list is read only for the (rare) connections to the listen port, so
 * the hot path pays one integer comparison.
 */
export function isLoop(dst: Endpoint, listenPort: number, local: () => Set<string> = localAddresses): boolean {
  if (dst.port !== listenPort) return false;
  return isLoopbackOrAny(dst.address) || local().has(dst.address);
}
