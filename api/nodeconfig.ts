// NodeConfig: the one document the node agent (daemonset/) and the forwarding sidecar (sidecar/)
// read. The operator renders it into a ConfigMap from a TransparentProxy; by hand it is a YAML file.
// Parsed and validated once at start-up; every error names the field (see formatIssues). Built from
// the same pieces as the CRD's schema (api/fields.ts); the defaults it fills in are api/defaults.ts.
import { z } from 'zod';
import { DEFAULTS } from './defaults.ts';
import {
  BACKENDS,
  backlog,
  boundedDurationMs,
  coveredProxyPorts,
  maxFlows,
  PROTOCOL_CONFLICT_ISSUE,
  TRANSPORTS,
  UDP_PORTS_MESSAGE,
  FAILURE_POLICIES,
  interfacePattern,
  IP_FAMILIES,
  LOG_LEVELS,
  maxConnections,
  overlapIssues,
  PortRange,
  PORTS_CLASH_ISSUE,
  portsClash,
  PROTOCOLS,
  proxyPort,
  routingTable,
  rulePriority,
  workers,
} from './fields.ts';
import { cidrText, parseCidr, type Cidr, type Family } from './net.ts';
import { PolicyConfig } from './policy.ts';
import { Tuning } from './tuning.ts';

export { PortRange };
export type Transport = (typeof TRANSPORTS)[number];

const I = DEFAULTS.interception,
  P = DEFAULTS.proxy;

const cidr = z.string().transform((text, ctx): Cidr => {
  const c = parseCidr(text);
  if (typeof c === 'string') {
    ctx.addIssue({ code: 'custom', message: c });
    return z.NEVER;
  }
  return c;
});

/** fwmark values are 32-bit; accepted as a number or a "0x..." string. */
const u32 = z
  .union([z.number().int(), z.string().regex(/^0x[0-9a-fA-F]{1,8}$/, 'must be a number or 0x-prefixed hex')])
  .transform((v) => (typeof v === 'string' ? parseInt(v, 16) : v))
  .pipe(z.number().int().min(0).max(0xffffffff));

const cidrSet = z
  .object({
    include: z.array(cidr).default([]).describe('CIDRs to match; empty matches every address.'),
    exclude: z.array(cidr).default([]).describe('CIDRs never intercepted; wins over include.'),
  })
  .strict();

export const Interception = z
  .object({
    protocol: z.enum(PROTOCOLS).optional().describe('Deprecated: protocols. Alone, it means protocols [protocol].'),
    protocols: z
      .array(z.enum(TRANSPORTS))
      .min(1)
      .optional()
      .describe(`Transports intercepted; default [${I.protocols.join(', ')}].`),
    ports: z.array(PortRange).default([]).describe('TCP destination ports to intercept; empty intercepts every port.'),
    udpPorts: z
      .array(PortRange)
      .default([])
      .describe('UDP destination ports to intercept (protocols lists UDP); empty intercepts every port.'),
    destinations: cidrSet.default({ include: [], exclude: [] }),
    sources: cidrSet.default({ include: [], exclude: [] }),
    interfaces: z
      .array(interfacePattern)
      .default([])
      .describe('Ingress interfaces; empty intercepts on every interface.'),
    ipFamilies: z
      .array(z.enum(IP_FAMILIES))
      .min(1)
      .default([...I.ipFamilies]),
    backend: z.enum(BACKENDS).default(I.backend),
    failurePolicy: z.enum(FAILURE_POLICIES).default(I.failurePolicy),
    mark: u32.default(I.mark).describe('fwmark set on intercepted packets (within mask).'),
    mask: u32.default(I.mask).describe('Bits of the fwmark owned by tpfleet.'),
    routingTable: routingTable.default(I.routingTable),
    rulePriority: rulePriority.default(I.rulePriority),
    localDestinations: z
      .boolean()
      .default(I.localDestinations)
      .describe(
        "Also intercept traffic addressed to the node itself (off: it and replies to the node's own connections pass).",
      ),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.protocol && v.protocols && !v.protocols.includes(v.protocol)) ctx.addIssue(PROTOCOL_CONFLICT_ISSUE);
    if (v.mask === 0) ctx.addIssue({ code: 'custom', path: ['mask'], message: 'must not be 0' });
    if ((v.mark & ~v.mask) >>> 0 !== 0)
      ctx.addIssue({ code: 'custom', path: ['mark'], message: 'must lie within mask' });
    if (v.mark === 0) ctx.addIssue({ code: 'custom', path: ['mark'], message: 'must not be 0' });
    for (const key of ['destinations', 'sources'] as const) {
      for (const issue of overlapIssues(v[key], cidrText)) ctx.addIssue({ ...issue, path: [key, ...issue.path] });
    }
    const fams = new Set<Family>(v.ipFamilies);
    for (const key of ['destinations', 'sources'] as const) {
      for (const part of ['include', 'exclude'] as const) {
        v[key][part].forEach((c, i) => {
          if (!fams.has(c.family)) {
            ctx.addIssue({
              code: 'custom',
              path: [key, part, i],
              message: `${cidrText(c)} is ${c.family} but ipFamilies does not list it`,
            });
          }
        });
      }
    }
  })
  // One field after parsing: `protocols`, with the deprecated `protocol` folded in.
  .transform(({ protocol, protocols, ...rest }) => ({
    ...rest,
    protocols: [...new Set(protocols ?? (protocol ? [protocol] : I.protocols))].sort() as Transport[],
  }));
export type Interception = z.output<typeof Interception>;

export const ProxyConfig = z
  .object({
    listenPort: proxyPort.default(P.listenPort).describe('Port of the transparent listener (TPROXY target).'),
    metricsPort: proxyPort
      .default(P.metricsPort)
      .describe('Port of /metrics, /healthz and /readyz (loopback and node IPs).'),
    keepClientIp: z.boolean().default(P.keepClientIp).describe("Connect upstream from the client's own address."),
    workers: workers.default(P.workers).describe('Worker processes on one SO_REUSEPORT port; 0 = one per CPU.'),
    backlog: backlog.default(P.backlog),
    maxConnections: maxConnections
      .default(P.maxConnections)
      .describe('Open client connections per proxy (all workers); new ones beyond it are shed.'),
    // Milliseconds once parsed; the defaults are written as a user would write them.
    timeouts: z
      .object({
        connect: boundedDurationMs('connect').prefault(P.timeouts.connect).describe('Upstream connect timeout.'),
        idle: boundedDurationMs('idle')
          .prefault(P.timeouts.idle)
          .describe('Close a connection with no bytes either way for this long.'),
        drain: boundedDurationMs('drain')
          .prefault(P.timeouts.drain)
          .describe('On SIGTERM, wait this long for open connections before closing them.'),
      })
      .strict()
      .prefault({}),
    udp: z
      .object({
        idleTimeout: boundedDurationMs('udpIdle')
          .prefault(P.udp.idleTimeout)
          .describe('A UDP flow with no datagram either way for this long is closed.'),
        maxFlows: maxFlows.default(P.udp.maxFlows).describe('UDP flows tracked; new ones beyond it are dropped.'),
      })
      .strict()
      .prefault({}),
    logLevel: z.enum(LOG_LEVELS).default(P.logLevel),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (portsClash(v)) ctx.addIssue(PORTS_CLASH_ISSUE);
  });
export type ProxyConfig = z.output<typeof ProxyConfig>;

export const NodeConfig = z
  .object({
    apiVersion: z.literal('tpfleet.io/v1alpha1'),
    kind: z.literal('NodeConfig'),
    interception: Interception.prefault({}),
    proxy: ProxyConfig.prefault({}),
    tuning: Tuning.describe(
      'sysctl profile/overrides and NIC IRQ/RPS/XPS/CPU affinity (docs/tuning.md); omitted: change nothing.',
    ),
    policy: PolicyConfig.prefault({}).describe('Egress policy (docs/egress.md); omitted: forward everything.'),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (coveredProxyPorts(v.interception.udpPorts, v.proxy).length > 0)
      ctx.addIssue({ code: 'custom', path: ['interception', 'udpPorts'], message: UDP_PORTS_MESSAGE });
  });
export type NodeConfig = z.output<typeof NodeConfig>;
