// NodeConfig: the one document the node agent (daemonset/) and the forwarding sidecar (sidecar/)
// read. The operator renders it into a ConfigMap from a TransparentProxy; by hand it is a YAML file.
// Parsed and validated once at start-up; every error names the field (see formatIssues).
import { z } from 'zod';
import { cidrText, parseCidr, parseDuration, type Cidr, type Family } from './net.ts';
import { Tuning } from './tuning.ts';

const cidr = z.string().transform((text, ctx): Cidr => {
  const c = parseCidr(text);
  if (typeof c === 'string') {
    ctx.addIssue({ code: 'custom', message: c });
    return z.NEVER;
  }
  return c;
});

const duration = z.string().transform((text, ctx): number => {
  const ms = parseDuration(text);
  if (typeof ms === 'string') {
    ctx.addIssue({ code: 'custom', message: ms });
    return z.NEVER;
  }
  return ms;
});

/** fwmark values are 32-bit; accepted as a number or a "0x..." string. */
const u32 = z.union([z.number().int(), z.string().regex(/^0x[0-9a-fA-F]{1,8}$/, 'must be a number or 0x-prefixed hex')])
  .transform((v) => (typeof v === 'string' ? parseInt(v, 16) : v))
  .pipe(z.number().int().min(0).max(0xffffffff));

const port = z.number().int().min(1).max(65535);

export const PortRange = z.object({
  port: port.describe('Destination port, or the first port of a range.'),
  endPort: port.optional().describe('Last port of the range (inclusive); omitted for a single port.'),
}).strict().refine((p) => p.endPort === undefined || p.endPort >= p.port, {
  message: 'must be >= port', path: ['endPort'],
});
export type PortRange = z.output<typeof PortRange>;

/** Interface names (IFNAMSIZ 16 incl. NUL); a trailing "*" matches a prefix (veth*, cali*). */
const ifname = z.string().regex(/^[A-Za-z0-9_.@:-]{1,15}\*?$/, 'must be an interface name (max 15 chars), optionally ending in *');

const cidrSet = z.object({
  include: z.array(cidr).default([]).describe('CIDRs to match; empty matches every address.'),
  exclude: z.array(cidr).default([]).describe('CIDRs never intercepted; wins over include.'),
}).strict();

export const Interception = z.object({
  protocol: z.enum(['TCP']).default('TCP'),
  ports: z.array(PortRange).default([]).describe('Destination ports to intercept; empty intercepts every port.'),
  destinations: cidrSet.default({ include: [], exclude: [] }),
  sources: cidrSet.default({ include: [], exclude: [] }),
  interfaces: z.array(ifname).default([]).describe('Ingress interfaces; empty intercepts on every interface.'),
  ipFamilies: z.array(z.enum(['IPv4', 'IPv6'])).min(1).default(['IPv4', 'IPv6']),
  backend: z.enum(['auto', 'nftables', 'iptables']).default('auto'),
  failurePolicy: z.enum(['FailClosed', 'FailOpen']).default('FailClosed'),
  mark: u32.default(0x2000).describe('fwmark set on intercepted packets (within mask).'),
  mask: u32.default(0x2000).describe('Bits of the fwmark owned by tpfleet.'),
  routingTable: z.number().int().min(1).max(0xfffffeff).default(2000)
    .refine((t) => ![253, 254, 255].includes(t), 'tables 253-255 (default, main, local) are reserved'),
  rulePriority: z.number().int().min(1).max(32765).default(32000),
  localDestinations: z.boolean().default(false)
    .describe('Also intercept traffic addressed to the node itself (off: it and replies to the node\'s own connections pass).'),
}).strict().superRefine((v, ctx) => {
  if (v.mask === 0) ctx.addIssue({ code: 'custom', path: ['mask'], message: 'must not be 0' });
  if ((v.mark & ~v.mask) >>> 0 !== 0) ctx.addIssue({ code: 'custom', path: ['mark'], message: 'must lie within mask' });
  if (v.mark === 0) ctx.addIssue({ code: 'custom', path: ['mark'], message: 'must not be 0' });
  for (const key of ['destinations', 'sources'] as const) {
    const inc = new Set(v[key].include.map(cidrText));
    for (const [i, c] of v[key].exclude.entries()) {
      if (inc.has(cidrText(c))) {
        ctx.addIssue({ code: 'custom', path: [key, 'exclude', i], message: `${cidrText(c)} is both included and excluded` });
      }
    }
  }
  const fams = new Set<Family>(v.ipFamilies);
  for (const key of ['destinations', 'sources'] as const) {
    for (const part of ['include', 'exclude'] as const) {
      v[key][part].forEach((c, i) => {
        if (!fams.has(c.family)) {
          ctx.addIssue({ code: 'custom', path: [key, part, i], message: `${cidrText(c)} is ${c.family} but ipFamilies does not list it` });
        }
      });
    }
  }
});
export type Interception = z.output<typeof Interception>;

export const Proxy = z.object({
  listenPort: port.default(15101).describe('Port of the transparent listener (TPROXY target).'),
  metricsPort: port.default(15190).describe('Port of /metrics, /healthz and /readyz (loopback and node IPs).'),
  keepClientIp: z.boolean().default(false).describe('Connect upstream from the client\'s own address.'),
  workers: z.number().int().min(0).max(64).default(0).describe('Worker processes on one SO_REUSEPORT port; 0 = one per CPU.'),
  backlog: z.number().int().min(16).max(65535).default(4096),
  maxConnections: z.number().int().min(1).max(1_000_000).default(20_000)
    .describe('Open client connections per proxy (all workers); new ones beyond it are shed.'),
  timeouts: z.object({
    connect: duration.default(5_000).describe('Upstream connect timeout.'),
    idle: duration.default(3_600_000).describe('Close a connection with no bytes either way for this long.'),
    drain: duration.default(30_000).describe('On SIGTERM, wait this long for open connections before closing them.'),
  }).strict().prefault({}),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
}).strict().superRefine((v, ctx) => {
  if (v.listenPort === v.metricsPort) ctx.addIssue({ code: 'custom', path: ['metricsPort'], message: 'must differ from listenPort' });
});
export type Proxy = z.output<typeof Proxy>;

export const NodeConfig = z.object({
  apiVersion: z.literal('tpfleet.io/v1alpha1'),
  kind: z.literal('NodeConfig'),
  interception: Interception.prefault({}),
  proxy: Proxy.prefault({}),
  tuning: Tuning.describe('sysctl profile/overrides and NIC IRQ/RPS/XPS/CPU affinity (docs/tuning.md); omitted: change nothing.'),
}).strict();
export type NodeConfig = z.output<typeof NodeConfig>;
