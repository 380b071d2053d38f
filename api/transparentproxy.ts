// TransparentProxy (tpfleet.io/v1alpha1): the user-facing API and the single source of truth
// for the CRD (operator/gen turns these schemas into crds/*.yaml). Field names follow NodeConfig
// (api/nodeconfig.ts) so that spec.interception and most of spec.proxy render 1:1 into the node
// config document; the NodeConfig parser then does the deep checks (CIDR families, mark within mask).
//
// Invariant: everything here is a plain JSON type (strings, ints, bools, maps, lists) so the
// JSON-schema output is structural. Cross-field rules are CEL (`x-kubernetes-validations` in meta)
// and are mirrored by zod refinements, so the operator rejects the same specs the API server does
// (an old API server or a CRD installed without CEL still cannot get a bad spec past the operator).
// Field types, ranges and shared rules come from api/fields.ts (NodeConfig is built from the same
// pieces); the "Default ..." of each description from api/defaults.ts, which NodeConfig applies.
import { z } from 'zod';
import { DEFAULTS, hex } from './defaults.ts';
import {
  cidr,
  BACKENDS,
  coveredProxyPorts,
  maxFlows,
  PROTOCOL_CONFLICT_CEL,
  PROTOCOL_CONFLICT_ISSUE,
  TRANSPORTS,
  UDP_PORTS_CEL,
  UDP_PORTS_MESSAGE,
  backlog,
  cel,
  boundedDuration,
  type DurationField,
  FAILURE_POLICIES,
  interfacePattern,
  IP_FAMILIES,
  LOG_LEVELS,
  maxConnections,
  OVERLAP_CEL,
  overlapIssues,
  PortRange,
  PORTS_CLASH_CEL,
  PORTS_CLASH_ISSUE,
  portsClash,
  PROTOCOLS,
  PROXY_PORT_CEL,
  proxyPort,
  PULL_POLICIES,
  quantityText,
  RESERVED_MARK_CEL,
  reservedMarkMessage,
  RESOURCE_NAMES,
  ROUTING_TABLE_CEL,
  routingTable,
  rulePriority,
  workers,
} from './fields.ts';
import { TransparentProxyStatus } from './transparentproxy-status.ts';
import { PolicySpec } from './policy.ts';
import { TuningSpec } from './tuning.ts';

export const GROUP = 'tpfleet.io';
export const VERSION = 'v1alpha1';
export const KIND = 'TransparentProxy';
export const PLURAL = 'transparentproxies';

const I = DEFAULTS.interception,
  P = DEFAULTS.proxy,
  A = DEFAULTS.autoscaling;

const duration = (field: DurationField, what: string) =>
  boundedDuration(field, `${what} Kubernetes-style duration: 500ms, 5s, 1m30s, 2h.`);
const u32 = z.number().int().min(1).max(4294967295);
/** A mark or mask: 32 bits, none of them reserved by kube-proxy or a common CNI (api/fields.ts). */
const markField = u32.superRefine((v, ctx) => {
  const m = reservedMarkMessage(v);
  if (m) ctx.addIssue({ code: 'custom', message: m });
});

const cidrList = (what: string) =>
  z.array(cidr).max(256).optional().meta({ description: what, 'x-kubernetes-list-type': 'set' });
const CidrSet = z
  .object({
    include: cidrList('CIDRs to match; empty or omitted matches every address.'),
    exclude: cidrList('CIDRs never intercepted; wins over include.'),
  })
  .strict()
  .superRefine((v, ctx) => {
    for (const issue of overlapIssues(v, String)) ctx.addIssue(issue);
  })
  .meta(cel(OVERLAP_CEL));

export const InterceptionSpec = z
  .object({
    protocol: z.enum(PROTOCOLS).optional().meta({
      description:
        'Deprecated: use protocols. Kept so objects written before protocols stay valid: TCP alone means protocols [TCP]; when both are set, protocols must list it.',
    }),
    protocols: z
      .array(z.enum(TRANSPORTS))
      .min(1)
      .max(2)
      .optional()
      .meta({
        description: `Transports intercepted: TCP (ports), UDP (udpPorts, docs/udp.md). Default [${I.protocols.join(', ')}].`,
        'x-kubernetes-list-type': 'set',
      }),
    ports: z
      .array(PortRange)
      .max(64)
      .optional()
      .meta({
        description: 'TCP destination ports and ranges to intercept; empty or omitted intercepts every port.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['port'],
      }),
    udpPorts: z
      .array(PortRange)
      .max(64)
      .optional()
      .meta({
        description:
          'UDP destination ports and ranges to intercept when protocols lists UDP; empty or omitted intercepts every port. Must not cover proxy.listenPort or proxy.metricsPort.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['port'],
      }),
    destinations: CidrSet.optional().meta({
      description: 'Destination addresses to intercept (include) or leave alone (exclude).',
    }),
    sources: CidrSet.optional().meta({
      description: 'Client source addresses to intercept (include) or leave alone (exclude).',
    }),
    interfaces: z.array(interfacePattern).max(32).optional().meta({
      description:
        'Ingress interfaces; a trailing * matches a prefix (veth*, cali*). Empty or omitted: every interface.',
      'x-kubernetes-list-type': 'set',
    }),
    ipFamilies: z
      .array(z.enum(IP_FAMILIES))
      .min(1)
      .max(2)
      .optional()
      .meta({
        description: `IP families intercepted. Default [${I.ipFamilies.join(', ')}].`,
        'x-kubernetes-list-type': 'set',
      }),
    backend: z
      .enum(BACKENDS)
      .optional()
      .meta({ description: `Rule backend on the node; auto prefers nftables. Default ${I.backend}.` }),
    failurePolicy: z
      .enum(FAILURE_POLICIES)
      .optional()
      .meta({
        description: `When the proxy on a node is down: FailClosed drops intercepted traffic, FailOpen lets it pass un-proxied. Default ${I.failurePolicy}.`,
      }),
    mark: markField.optional().meta({
      description: `fwmark set on intercepted packets; must lie within mask (YAML hex like 0x2000 works); bits kube-proxy, Calico or Cilium reserve are refused. Default ${hex(I.mark)}.`,
      ...cel(RESERVED_MARK_CEL),
    }),
    mask: markField.optional().meta({
      description: `Bits of the fwmark owned by tpfleet; bits kube-proxy, Calico or Cilium reserve are refused. Default ${hex(I.mask)}.`,
      ...cel(RESERVED_MARK_CEL),
    }),
    routingTable: routingTable.optional().meta({
      description: `Policy-routing table for marked packets. Default ${I.routingTable}.`,
      ...cel(ROUTING_TABLE_CEL),
    }),
    rulePriority: rulePriority
      .optional()
      .meta({ description: `Priority of the fwmark ip rule. Default ${I.rulePriority}.` }),
    localDestinations: z
      .boolean()
      .optional()
      .meta({ description: `Also intercept traffic addressed to the node itself. Default ${I.localDestinations}.` }),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.protocol && v.protocols && !v.protocols.includes(v.protocol)) ctx.addIssue(PROTOCOL_CONFLICT_ISSUE);
  })
  .meta({
    description: 'What the node agent intercepts. Rendered into the NodeConfig document (interception).',
    ...cel(PROTOCOL_CONFLICT_CEL),
  });

const quantity = z
  .union([quantityText, z.number().min(0)])
  .meta({ 'x-kubernetes-int-or-string': true, description: 'A resource quantity (100m, 128Mi, 2).' });
const resourceMap = z
  .partialRecord(z.enum(RESOURCE_NAMES), quantity)
  .optional()
  .meta({
    maxProperties: RESOURCE_NAMES.length,
    ...cel({
      rule: `self.all(k, k in [${RESOURCE_NAMES.map((r) => `'${r}'`).join(', ')}])`,
      message: 'only cpu, memory and ephemeral-storage may be set',
    }),
  });
const Resources = z
  .object({
    requests: resourceMap.meta({ description: 'Minimum resources (cpu, memory, ephemeral-storage).' }),
    limits: resourceMap.meta({ description: 'Maximum resources (cpu, memory, ephemeral-storage).' }),
  })
  .strict();

export const ProxySpec = z
  .object({
    image: z
      .string()
      .min(1)
      .max(512)
      .optional()
      .meta({ description: "Node image (agent + sidecar). Default: the operator's --image flag." }),
    imagePullPolicy: z
      .enum(PULL_POLICIES)
      .optional()
      .meta({ description: `Default ${DEFAULTS.pod.imagePullPolicy}.` }),
    listenPort: proxyPort.optional().meta({
      description: `Port of the transparent listener (TPROXY target); not a port the node itself uses. Default ${P.listenPort}.`,
      ...cel(PROXY_PORT_CEL),
    }),
    metricsPort: proxyPort.optional().meta({
      description: `Port of /metrics, /healthz, /readyz on the node; not a port the node itself uses. Default ${P.metricsPort}.`,
      ...cel(PROXY_PORT_CEL),
    }),
    keepClientIp: z
      .boolean()
      .optional()
      .meta({ description: `Connect upstream from the client's own address. Default ${P.keepClientIp}.` }),
    workers: workers
      .optional()
      .meta({ description: `Worker processes on one SO_REUSEPORT port; 0 = one per CPU. Default ${P.workers}.` }),
    backlog: backlog.optional().meta({ description: `Listen backlog. Default ${P.backlog}.` }),
    maxConnections: maxConnections.optional().meta({
      description: `Open client connections per proxy; new ones beyond it are shed. Default ${P.maxConnections}.`,
    }),
    udp: z
      .object({
        idleTimeout: boundedDuration(
          'udpIdle',
          `A UDP flow with no datagram either way for this long is closed, default ${P.udp.idleTimeout}.`,
        ).optional(),
        maxFlows: maxFlows.optional().meta({
          description: `UDP flows per proxy (per node); datagrams of new flows beyond it are dropped and counted. Default ${P.udp.maxFlows}.`,
        }),
      })
      .strict()
      .optional()
      .meta({ description: 'UDP forwarding (when interception.protocols lists UDP); keepClientIp applies too.' }),
    timeouts: z
      .object({
        connect: duration('connect', `Upstream connect timeout, default ${P.timeouts.connect}.`).optional(),
        idle: duration('idle', `Close a connection idle this long, default ${P.timeouts.idle}.`).optional(),
        drain: duration(
          'drain',
          `On shutdown wait this long for open connections, default ${P.timeouts.drain}.`,
        ).optional(),
      })
      .strict()
      .optional()
      .meta({ description: 'Connection timeouts.' }),
    logLevel: z
      .enum(LOG_LEVELS)
      .optional()
      .meta({ description: `Default ${P.logLevel}.` }),
    resources: Resources.optional().meta({ description: 'Resources of the sidecar container.' }),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (portsClash(v)) ctx.addIssue(PORTS_CLASH_ISSUE);
  })
  .meta({
    description:
      'The forwarding sidecar. All but image, imagePullPolicy and resources render into the NodeConfig document (proxy).',
    ...cel(PORTS_CLASH_CEL),
  });

const U = A.utilization;
/** The seed's rule: scale out when open connections pass a share of maxConnections for a window. */
const UtilizationSpec = z
  .object({
    percent: z
      .number()
      .int()
      .min(1)
      .max(100)
      .optional()
      .meta({
        description: `Share of spec.proxy.maxConnections per proxy pod the HPA aims for (its AverageValue target). Default ${U.percent}.`,
      }),
    window: duration(
      'utilizationWindow',
      `How long the load must stay above the target before scaling out (the HPA's scale-up stabilization window), default ${U.window}.`,
    ).optional(),
  })
  .strict()
  .meta({
    description: `Scale on utilization of proxy.maxConnections instead of targetConnectionsPerProxy ({} means ${U.percent} % for ${U.window}).`,
  });

export const AutoscalingSpec = z
  .object({
    enabled: z
      .boolean()
      .optional()
      .meta({ description: `Create an HPA that drives spec.replicas through /scale. Default ${A.enabled}.` }),
    minReplicas: z
      .number()
      .int()
      .min(1)
      .max(10000)
      .optional()
      .meta({ description: `Fewest active nodes. Default ${A.minReplicas}.` }),
    maxReplicas: z
      .number()
      .int()
      .min(1)
      .max(10000)
      .optional()
      .meta({ description: 'Most active nodes; required when enabled.' }),
    targetConnectionsPerProxy: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .meta({
        description: `Average open connections per proxy pod the HPA aims for. Default ${A.targetConnectionsPerProxy}.`,
      }),
    scaleDownStabilization: duration(
      'scaleDownStabilization',
      `Window the HPA waits before scaling in, default ${A.scaleDownStabilization}.`,
    ).optional(),
    utilization: UtilizationSpec.optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.enabled && a.maxReplicas === undefined)
      ctx.addIssue({ code: 'custom', path: ['maxReplicas'], message: 'required when enabled' });
    if ((a.minReplicas ?? A.minReplicas) > (a.maxReplicas ?? Infinity))
      ctx.addIssue({ code: 'custom', path: ['minReplicas'], message: 'must be <= maxReplicas' });
    if (a.utilization && a.targetConnectionsPerProxy !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['utilization'],
        message: 'set either utilization or targetConnectionsPerProxy',
      });
  })
  .meta({
    description: 'Scale the number of active nodes on connection load.',
    ...cel(
      {
        rule: '!(has(self.enabled) && self.enabled) || has(self.maxReplicas)',
        message: 'maxReplicas is required when autoscaling is enabled',
        fieldPath: '.maxReplicas',
      },
      {
        rule: `!has(self.maxReplicas) || (has(self.minReplicas) ? self.minReplicas : ${A.minReplicas}) <= self.maxReplicas`,
        message: 'minReplicas must be <= maxReplicas',
        fieldPath: '.minReplicas',
      },
      {
        rule: '!(has(self.utilization) && has(self.targetConnectionsPerProxy))',
        message: 'set either utilization or targetConnectionsPerProxy',
        fieldPath: '.utilization',
      },
    ),
  });

const Toleration = z
  .object({
    key: z
      .string()
      .max(316)
      .optional()
      .meta({ description: 'Taint key; empty with operator Exists matches every taint.' }),
    operator: z.enum(['Exists', 'Equal']).optional().meta({ description: 'Default Equal.' }),
    value: z.string().max(63).optional(),
    effect: z
      .enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute'])
      .optional()
      .meta({ description: 'Empty matches every effect.' }),
    tolerationSeconds: z.number().int().optional(),
  })
  .strict()
  .refine((t) => t.operator !== 'Exists' || !t.value, {
    message: 'must be empty when operator is Exists',
    path: ['value'],
  })
  .meta(
    cel({
      rule: "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
      message: 'value must be empty when operator is Exists',
      fieldPath: '.value',
    }),
  );
export type Toleration = z.output<typeof Toleration>;

export const TransparentProxySpec = z
  .object({
    nodeSelector: z
      .record(z.string().max(316), z.string().max(63))
      .optional()
      .meta({ maxProperties: 32, description: 'Labels a node must have to be a candidate. Omitted: every node.' }),
    tolerations: z.array(Toleration).max(32).optional().meta({
      description: 'Taints the proxy pods tolerate; tainted nodes are candidates only when tolerated.',
      'x-kubernetes-list-type': 'atomic',
    }),
    replicas: z.number().int().min(0).max(10000).optional().meta({
      description:
        'How many candidate nodes are active (intercepting). Omitted: every candidate. Set by kubectl scale and the HPA through /scale.',
    }),
    interception: InterceptionSpec.optional(),
    proxy: ProxySpec.optional(),
    policy: PolicySpec.optional(),
    tuning: TuningSpec.optional().meta({
      description:
        'Node tuning (docs/tuning.md): sysctl profile and overrides, NIC IRQ/RPS/XPS and worker CPU placement. Rendered into the NodeConfig document (tuning); applied by the node agent, restored on removal.',
    }),
    autoscaling: AutoscalingSpec.optional(),
  })
  .strict()
  // The HPA (and KEDA) read /scale before writing it, and /scale of an object without
  // spec.replicas is an API error: autoscaling without replicas could never act.
  .refine((s) => !s.autoscaling?.enabled || s.replicas !== undefined, {
    message: 'replicas is required when autoscaling is enabled (the autoscaler reads and writes it through /scale)',
    path: ['replicas'],
  })
  .refine((s) => coveredProxyPorts(s.interception?.udpPorts, s.proxy).length === 0, {
    message: UDP_PORTS_MESSAGE,
    path: ['interception', 'udpPorts'],
  })
  .meta({
    description: 'Desired state of a transparent proxy fleet.',
    ...cel(
      {
        rule: '!has(self.autoscaling) || !has(self.autoscaling.enabled) || !self.autoscaling.enabled || has(self.replicas)',
        message: 'replicas is required when autoscaling is enabled (the autoscaler reads and writes it through /scale)',
        fieldPath: '.replicas',
      },
      UDP_PORTS_CEL,
    ),
  });
export type TransparentProxySpec = z.output<typeof TransparentProxySpec>;

/** DNS-1035 label, short enough that derived names (<name>-nodeconfig, <name>-metrics) stay valid. */
export const NAME_RULE = {
  rule: "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 50",
  message: 'metadata.name must be a DNS-1035 label of at most 50 characters',
};

export const TransparentProxy = z
  .object({
    apiVersion: z.string().optional(),
    kind: z.string().optional(),
    metadata: z.object({}).optional(),
    spec: TransparentProxySpec,
    status: TransparentProxyStatus.optional(),
  })
  .meta({
    description: 'A fleet of transparent proxies: TPROXY interception on selected nodes plus a forwarding sidecar.',
    ...cel(NAME_RULE),
  });
export { TransparentProxyStatus };
