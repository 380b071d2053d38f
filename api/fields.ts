// The pieces both API schemas are built from, each rule stated once: field types with their
// ranges and messages, the enums, and the cross-field rules with their CEL mirrors. The
// TransparentProxy schema (api/transparentproxy.ts, the CRD) makes them optional and documents
// their defaults; the NodeConfig schema (api/nodeconfig.ts, what the nodes read) fills the defaults
// in (api/defaults.ts). Messages are the ones the user sees, after the field's path.
import { z } from 'zod';
import { DEFAULTS } from './defaults.ts';
import { DURATION, durationMs, parseDuration } from './net.ts';

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

/**
 * Ports the node itself listens on (the proxy runs with hostNetwork): ssh, DNS, etcd, the API server,
 * kubelet (10250, healthz 10248, read-only 10255), kube-proxy (10249, 10256), controller-manager and
 * scheduler. A proxy port there makes the sidecar fail to bind (FailClosed then drops traffic) while
 * the watchdog counts the other listener as the proxy. The NodePort range is kube-proxy's; below 1024
 * needs a capability the sidecar does not have. The node agent also checks the live listeners.
 */
export const HOST_RESERVED_PORTS = [22, 53, 2379, 2380, 6443, 10248, 10249, 10250, 10255, 10256, 10257, 10259] as const;
export const NODE_PORT_RANGE = { first: 30000, last: 32767 } as const;
const RESERVED_PORT_MESSAGE = `must be 1024-65535, not a port the node uses (${HOST_RESERVED_PORTS.join(', ')}) nor the NodePort range ${NODE_PORT_RANGE.first}-${NODE_PORT_RANGE.last}`;
export function hostReservedPort(p: number): boolean {
  return (
    p < 1024 ||
    (HOST_RESERVED_PORTS as readonly number[]).includes(p) ||
    (p >= NODE_PORT_RANGE.first && p <= NODE_PORT_RANGE.last)
  );
}
/** listenPort and metricsPort: a port, and not one of the node's own. */
export const proxyPort = port.refine((p) => !hostReservedPort(p), RESERVED_PORT_MESSAGE);
export const PROXY_PORT_CEL: CelRule = {
  rule: `self >= 1024 && !(self in [${HOST_RESERVED_PORTS.join(', ')}]) && (self < ${NODE_PORT_RANGE.first} || self > ${NODE_PORT_RANGE.last})`,
  message: RESERVED_PORT_MESSAGE,
};

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

/**
 * Bounds of every duration tpfleet takes, each stated once, chosen so that every consumer accepts
 * every value in range: Node's timers and the native engine's (2^31-1 ms, about 24.8 days), the
 * agent's --wait-timeout (derived below from drain), the HPA's stabilizationWindowSeconds (0-3600).
 * The CRD refuses a value outside (CEL), the NodeConfig parser and the operator's flags too.
 */
export const DURATION_BOUNDS = {
  connect: { min: '1ms', max: '10m', what: 'upstream connect timeout' },
  idle: { min: '1ms', max: '24h', what: 'idle timeout' },
  udpIdle: { min: '1s', max: '1h', what: 'UDP flow idle timeout (a datagram either way restarts it)' },
  drain: { min: '0s', max: '1h', what: 'drain timeout' },
  scaleDownStabilization: { min: '0s', max: '1h', what: 'HPA scale-down window (stabilizationWindowSeconds <= 3600)' },
  utilizationWindow: { min: '0s', max: '1h', what: 'HPA scale-up window (stabilizationWindowSeconds <= 3600)' },
  upstreamConnect: { min: '1ms', max: '60s', what: 'upstream proxy connect timeout' },
  peek: { min: '1ms', max: '10s', what: 'peek timeout' },
  cleanupTimeout: { min: '1s', max: '24h', what: 'operator --cleanup-timeout (after it: a warning, never a release)' },
  resync: { min: '1s', max: '24h', what: 'operator --resync' },
  scrape: { min: '1s', max: '1h', what: 'ServiceMonitor interval and scrapeTimeout' },
  leaseDuration: { min: '1s', max: '5m', what: 'operator --lease-duration' },
  certValidity: { min: '1h', max: '8760h', what: 'webhook serving certificate lifetime', timer: false },
  caValidity: { min: '24h', max: '87600h', what: 'webhook CA lifetime', timer: false },
  certCheck: { min: '1s', max: '1h', what: 'how often the operator looks at its webhook certificates' },
} as const satisfies Record<string, { min: string; max: string; what: string; timer?: false }>;
// timer: false marks a lifetime compared with dates (certificates), never handed to a timer.
export type DurationField = keyof typeof DURATION_BOUNDS;

/** Node's setTimeout fires at once for anything above this (and warns): the ceiling of every bound. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Milliseconds of a duration text, or an error message naming the bounds of `field`. */
export function boundedMs(field: DurationField, text: string): number | string {
  const b = DURATION_BOUNDS[field];
  const v = parseDuration(text);
  if (typeof v === 'string') return v;
  if (v < durationMs(b.min) || v > durationMs(b.max)) return `must be between ${b.min} and ${b.max}`;
  return v;
}

/** Duration text within the bounds of `field` (zod only: Helm values, whose JSON schema has no CEL). */
export function boundedDurationText(field: DurationField) {
  const b = DURATION_BOUNDS[field];
  return durationText.refine((t) => typeof boundedMs(field, t) === 'number', `must be between ${b.min} and ${b.max}`);
}

/** CRD side: duration text within the bounds of `field`, zod refinement and CEL mirror. */
export function boundedDuration(field: DurationField, description: string) {
  const b = DURATION_BOUNDS[field];
  return boundedDurationText(field).meta({
    description: `${description} Between ${b.min} and ${b.max}.`,
    ...cel({
      // The pattern guard keeps a text the pattern already refused from a CEL evaluation error.
      rule: `!self.matches('${DURATION.source}') || (duration(self) >= duration('${b.min}') && duration(self) <= duration('${b.max}'))`,
      message: `must be between ${b.min} and ${b.max}`,
    }),
  });
}

/** NodeConfig side: the duration in milliseconds, refused outside the bounds of `field`. */
export function boundedDurationMs(field: DurationField) {
  return z.string().transform((text, ctx): number => {
    const v = boundedMs(field, text);
    if (typeof v === 'string') {
      ctx.addIssue({ code: 'custom', message: v });
      return z.NEVER;
    }
    return v;
  });
}

/**
 * A leaving node's agent waits for the old sidecar to drain: the pod's grace period is drain plus
 * this margin, and so is its --wait-timeout. The agent accepts up to the largest drain plus the
 * margin, so every drain the schema accepts renders a leave pod the agent runs.
 */
export const LEAVE_MARGIN_S = 10;
export const leaveWaitSeconds = (drainMs: number): number => Math.ceil(drainMs / 1000) + LEAVE_MARGIN_S;
export const MAX_LEAVE_WAIT_S = leaveWaitSeconds(durationMs(DURATION_BOUNDS.drain.max));

/**
 * A resource quantity (100m, 128Mi, 2), as text or a plain number: Kubernetes' grammar (one decimal
 * point at most, the SI and binary suffixes it knows), so a spec that passes here is one the
 * DaemonSet apply accepts ("1.2.3" or "5ki" used to pass and fail only then, half-way through a
 * reconcile).
 */
export const QUANTITY = /^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,2}|[numkMGTPE]|[KMGTPE]i)?$/;
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

/**
 * fwmark bits the common CNIs and kube-proxy own on every node they run on: a tpfleet mark or mask
 * touching them would be rewritten by, or rewrite, theirs. Each range is contiguous bits
 * [shift, shift + width), so CEL (which has no bitwise operators) tests it with / and %.
 * kube-proxy: 0x4000 masquerade, 0x8000 drop (KUBE-MARK-MASQ/DROP). Calico: 0xffff0000 (its
 * default felix iptablesMarkMask). Cilium: 0x0f00 (its magic marks MARK_MAGIC_*) and 0xffff0000
 * (identity bits, the same range as Calico's).
 */
export const RESERVED_MARKS = [
  { owner: 'kube-proxy', shift: 14, width: 2 },
  { owner: 'Calico and Cilium', shift: 16, width: 16 },
  { owner: 'Cilium', shift: 8, width: 4 },
] as const;
const rangeBits = (r: { shift: number; width: number }) => ((2 ** r.width - 1) * 2 ** r.shift) >>> 0;
const markOwners = (v: number) => RESERVED_MARKS.filter((r) => ((v >>> 0) & rangeBits(r)) >>> 0 !== 0);

/** The issue for a mark or mask that touches a reserved range, or undefined. */
export function reservedMarkMessage(v: number): string | undefined {
  const hit = markOwners(v);
  if (hit.length === 0) return undefined;
  return `uses fwmark bits reserved by ${hit.map((r) => `${r.owner} (0x${rangeBits(r).toString(16)})`).join(', ')}`;
}
/** CEL mirror of reservedMarkMessage for an int field `self`. */
export const RESERVED_MARK_CEL: CelRule = {
  rule: RESERVED_MARKS.map((r) => `(self / ${2 ** r.shift}) % ${2 ** r.width} == 0`).join(' && '),
  message: `must not use fwmark bits reserved by kube-proxy (0xc000), Calico and Cilium (0xffff0000) or Cilium (0xf00)`,
};
