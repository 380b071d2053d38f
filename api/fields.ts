// The pieces both API schemas are built from, each rule stated once: field types with their
// ranges and messages, the enums, and the cross-field rules with their CEL mirrors. The
// TransparentProxy schema (api/transparentproxy.ts, the CRD) makes them optional and documents
// their defaults; the NodeConfig schema (api/nodeconfig.ts, what the nodes read) fills the defaults
// in (api/defaults.ts). Messages are the ones the user sees, after the field's path.
import { z } from 'zod';
import { DEFAULTS } from './defaults.ts';
import { DURATION, parseDuration } from './net.ts';

/** A CEL rule of the CRD (x-kubernetes-validations), enforced by the API server at admission. */
export interface CelRule {
  rule: string;
  message: string;
  fieldPath?: string;
  reason?: string;
}
export const cel = (...rules: CelRule[]) => ({ 'x-kubernetes-validations': rules });

/** `interception.protocol`, the field before `protocols`: TCP only, kept so stored objects stay valid. */
export const PROTOCOLS = ['TCP'] as const;
/** `interception.protocols`: the transports intercepted (docs/udp.md). */
export const TRANSPORTS = ['TCP', 'UDP'] as const;
export const IP_FAMILIES = ['IPv4', 'IPv6'] as const;
export const BACKENDS = ['auto', 'nftables', 'iptables'] as const;
export const FAILURE_POLICIES = ['FailClosed', 'FailOpen'] as const;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'] as const;
export const RESOURCE_NAMES = ['cpu', 'memory', 'ephemeral-storage'] as const;

export const port = z.number().int().min(1).max(65535);

/** IPv4/IPv6 CIDR or bare address with host bits zero, as the CRD takes it; mirrors api/net.ts parseCidr. */
export const cidr = z
  .string()
  .max(64)
  .meta({
    description: 'IPv4 or IPv6 CIDR (host bits zero) or a bare address.',
    ...cel({
      rule: 'isIP(self) || (isCIDR(self) && cidr(self) == cidr(self).masked())',
      message: 'must be an IP address or a CIDR with host bits zero',
    }),
  });

/** Kubernetes-style duration text; api/net.ts parseDuration turns it into milliseconds. */
export const DURATION_MESSAGE = 'must be a duration like 500ms, 5s, 1m30s or 2h';
export const durationText = z.string().max(32).regex(DURATION, DURATION_MESSAGE);

/** A resource quantity (100m, 128Mi, 2), as text or a plain number. */
export const QUANTITY = /^[0-9.]+([eE][-+]?[0-9]+|[numkMGTPE]i?)?$/;
export const quantityText = z.string().max(64).regex(QUANTITY, 'must be a quantity like 100m, 128Mi or 2');

/** Interface names: IFNAMSIZ is 16 bytes with the NUL, so 15 characters. */
export const IFNAME = '[A-Za-z0-9_.@:-]{1,15}';
/** An ingress interface to intercept on; a trailing "*" matches a prefix (veth*, cali*). */
export const interfacePattern = z
  .string()
  .regex(new RegExp(`^${IFNAME}\\*?$`), 'must be an interface name (max 15 chars), optionally ending in *');

export const PortRange = z
  .object({
    port: port.meta({ description: 'Destination port, or the first port of a range.' }),
    endPort: port.optional().meta({ description: 'Last port of the range (inclusive); omitted for a single port.' }),
  })
  .strict()
  .refine((p) => p.endPort === undefined || p.endPort >= p.port, { message: 'must be >= port', path: ['endPort'] })
  .meta(
    cel({
      rule: '!has(self.endPort) || self.endPort >= self.port',
      message: 'endPort must be >= port',
      fieldPath: '.endPort',
    }),
  );
export type PortRange = z.output<typeof PortRange>;

/** Tables 253-255 are the kernel's default, main and local tables. */
const RESERVED_TABLES = [253, 254, 255];
export const routingTable = z
  .number()
  .int()
  .min(1)
  .max(4294967039)
  .refine((t) => !RESERVED_TABLES.includes(t), 'tables 253-255 (default, main, local) are reserved');
export const ROUTING_TABLE_CEL: CelRule = {
  rule: `!(self in [${RESERVED_TABLES.join(', ')}])`,
  message: 'routingTable 253-255 (default, main, local) are reserved',
};
/** Below 32766, the main table's rule. */
export const rulePriority = z.number().int().min(1).max(32765);

export const workers = z.number().int().min(0).max(64);
export const backlog = z.number().int().min(16).max(65535);
export const maxConnections = z.number().int().min(1).max(1_000_000);
/** UDP flows one sidecar tracks. Each holds one socket: 500,000 stays below the kernel's default
 * per-process descriptor ceiling (fs.nr_open 1,048,576) with room for maxConnections' two per connection. */
export const maxFlows = z.number().int().min(1).max(500_000);
/** A UDP flow's idle timeout: a datagram either way restarts it. */
export const UDP_IDLE_BOUNDS = { min: '1s', max: '1h', minMs: 1000, maxMs: 3_600_000 } as const;
export const UDP_IDLE_MESSAGE = `must be between ${UDP_IDLE_BOUNDS.min} and ${UDP_IDLE_BOUNDS.max}`;
export const UDP_IDLE_CEL: CelRule = {
  rule: `duration(self) >= duration('${UDP_IDLE_BOUNDS.min}') && duration(self) <= duration('${UDP_IDLE_BOUNDS.max}')`,
  message: `idleTimeout ${UDP_IDLE_MESSAGE}`,
};

export const inUdpIdleBounds = (text: string): boolean => {
  const ms = parseDuration(text);
  return typeof ms === 'number' && ms >= UDP_IDLE_BOUNDS.minMs && ms <= UDP_IDLE_BOUNDS.maxMs;
};

/** The deprecated `protocol` and `protocols` may both be set only when they agree. */
export const PROTOCOL_CONFLICT_ISSUE = {
  code: 'custom' as const,
  path: ['protocols'],
  message: 'must list protocol (the deprecated field) when both are set',
};
export const PROTOCOL_CONFLICT_CEL: CelRule = {
  rule: '!has(self.protocol) || !has(self.protocols) || self.protocol in self.protocols',
  message: 'protocols must list protocol (the deprecated field) when both are set',
  fieldPath: '.protocols',
};

/** Which of [listenPort, metricsPort] (defaults included) a port list covers: intercepting them would loop. */
export function coveredProxyPorts(
  ports: readonly { port: number; endPort?: number }[] | undefined,
  p: { listenPort?: number; metricsPort?: number } | undefined,
): number[] {
  const mine = [p?.listenPort ?? DEFAULTS.proxy.listenPort, p?.metricsPort ?? DEFAULTS.proxy.metricsPort];
  return mine.filter((m) => (ports ?? []).some((r) => r.port <= m && (r.endPort ?? r.port) >= m));
}
export const UDP_PORTS_MESSAGE = 'must not cover proxy.listenPort or proxy.metricsPort';
/** The CEL mirror of coveredProxyPorts on udpPorts, at the spec root (it spans interception and proxy). */
export const UDP_PORTS_CEL: CelRule = (() => {
  const L = `(has(self.proxy) && has(self.proxy.listenPort) ? self.proxy.listenPort : ${DEFAULTS.proxy.listenPort})`;
  const M = `(has(self.proxy) && has(self.proxy.metricsPort) ? self.proxy.metricsPort : ${DEFAULTS.proxy.metricsPort})`;
  const covers = (x: string) => `(r.port <= ${x} && (has(r.endPort) ? r.endPort : r.port) >= ${x})`;
  return {
    rule: `!has(self.interception) || !has(self.interception.udpPorts) || !self.interception.udpPorts.exists(r, ${covers(L)} || ${covers(M)})`,
    message: `udpPorts ${UDP_PORTS_MESSAGE}`,
    fieldPath: '.interception.udpPorts',
  };
})();

/**
 * include/exclude: an address range may not be both. Issues at exclude[i], naming the entry as
 * `text` prints it (the CRD compares the strings, as its CEL rule does; NodeConfig the parsed CIDRs).
 */
export function overlapIssues<T>(set: { include?: readonly T[]; exclude?: readonly T[] }, text: (t: T) => string) {
  const included = new Set((set.include ?? []).map(text));
  return (set.exclude ?? []).flatMap((e, i) =>
    included.has(text(e))
      ? [{ code: 'custom' as const, path: ['exclude', i], message: `${text(e)} is both included and excluded` }]
      : [],
  );
}
export const OVERLAP_CEL: CelRule = {
  rule: '!has(self.include) || !has(self.exclude) || !self.exclude.exists(e, e in self.include)',
  message: 'exclude must not repeat an include entry',
  fieldPath: '.exclude',
};

/** The transparent listener and the status server cannot share a port (defaults included). */
export function portsClash(p: { listenPort?: number; metricsPort?: number }): boolean {
  return (p.listenPort ?? DEFAULTS.proxy.listenPort) === (p.metricsPort ?? DEFAULTS.proxy.metricsPort);
}
export const PORTS_CLASH_ISSUE = {
  code: 'custom' as const,
  path: ['metricsPort'],
  message: 'must differ from listenPort',
};
export const PORTS_CLASH_CEL: CelRule = {
  rule: `(has(self.listenPort) ? self.listenPort : ${DEFAULTS.proxy.listenPort}) != (has(self.metricsPort) ? self.metricsPort : ${DEFAULTS.proxy.metricsPort})`,
  message: 'metricsPort must differ from listenPort',
  fieldPath: '.metricsPort',
};
