// Generated malformed TransparentProxy specs (issue 12: "200 malformed objects, all refused"): each
// object carries one to three defects from MALFORMED on top of a valid spec, chosen by a seeded
// generator so a failure replays. Defects that set the same field are never combined (one would
// hide the other). Each names the text the refusal must contain: the schema's, CEL's or the
// webhook's wording of the field.
export interface Defect {
  why: string;
  /** What the refusal names. */
  field: string;
  /** Paths under spec this defect sets (for disjointness). */
  sets: string[];
  spec: Record<string, unknown>;
}

const d = (why: string, field: string, sets: string[], spec: Record<string, unknown>): Defect => ({
  why,
  field,
  sets,
  spec,
});

export const MALFORMED: Defect[] = [
  d('mark outside mask', 'spec.interception.mark', ['interception.mark', 'interception.mask'], {
    interception: { mark: 0x1000, mask: 0x2000 },
  }),
  d('mask 0', 'spec.interception.mask', ['interception.mask'], { interception: { mask: 0 } }),
  d(
    'IPv6 destination with IPv4 only',
    'spec.interception.destinations.include[0]',
    ['interception.ipFamilies', 'interception.destinations'],
    {
      interception: { ipFamilies: ['IPv4'], destinations: { include: ['fd00::/64'] } },
    },
  ),
  d(
    'IPv4 source with IPv6 only',
    'spec.interception.sources.include[0]',
    ['interception.ipFamilies', 'interception.sources'],
    {
      interception: { ipFamilies: ['IPv6'], sources: { include: ['10.0.0.0/8'] } },
    },
  ),
  d('bare IP excluded, /32 included', 'spec.interception.destinations.exclude[0]', ['interception.destinations'], {
    interception: { destinations: { include: ['10.0.0.1/32'], exclude: ['10.0.0.1'] } },
  }),
  d('same CIDR included and excluded', 'spec.interception.sources.exclude', ['interception.sources'], {
    interception: { sources: { include: ['10.1.0.0/16'], exclude: ['10.1.0.0/16'] } },
  }),
  d('CIDR with host bits', 'spec.interception.sources.include[0]', ['interception.sources'], {
    interception: { sources: { include: ['10.0.0.1/8'] } },
  }),
  d('IPv6 canonical overlap', 'spec.interception.destinations.exclude[0]', ['interception.destinations'], {
    interception: { destinations: { include: ['fd00:0::/64'], exclude: ['fd00::/64'] } },
  }),
  d('reserved routing table', 'spec.interception.routingTable', ['interception.routingTable'], {
    interception: { routingTable: 254 },
  }),
  d('rule priority too high', 'spec.interception.rulePriority', ['interception.rulePriority'], {
    interception: { rulePriority: 40000 },
  }),
  d('interface name too long', 'spec.interception.interfaces[0]', ['interception.interfaces'], {
    interception: { interfaces: ['a-very-long-interface-name'] },
  }),
  d('port out of range', 'spec.interception.ports[0].port', ['interception.ports'], {
    interception: { ports: [{ port: 70000 }] },
  }),
  d('endPort below port', 'spec.interception.ports[0].endPort', ['interception.ports'], {
    interception: { ports: [{ port: 9000, endPort: 8000 }] },
  }),
  d('image outside the allowlist', 'spec.proxy.image', ['proxy.image'], { proxy: { image: 'evil.example/x:1' } }),
  d('listenPort = metricsPort', 'spec.proxy.metricsPort', ['proxy.listenPort', 'proxy.metricsPort'], {
    proxy: { listenPort: 9100, metricsPort: 9100 },
  }),
  d('listenPort out of range', 'spec.proxy.listenPort', ['proxy.listenPort'], { proxy: { listenPort: 0 } }),
  d('listenPort on the kubelet port', 'spec.proxy.listenPort', ['proxy.listenPort'], { proxy: { listenPort: 10250 } }),
  d('metricsPort in the NodePort range', 'spec.proxy.metricsPort', ['proxy.metricsPort'], {
    proxy: { metricsPort: 30080 },
  }),
  d('tcp_mem that starves the host', 'spec.tuning.sysctls.overrides', ['tuning'], {
    tuning: { sysctls: { overrides: { 'net.ipv4.tcp_mem': '1 1 1' } } },
  }),
  d('fs.file-max that starves the host', 'spec.tuning.sysctls.overrides', ['tuning'], {
    tuning: { sysctls: { overrides: { 'fs.file-max': 65536 } } },
  }),
  d('bad duration', 'spec.proxy.timeouts.idle', ['proxy.timeouts'], { proxy: { timeouts: { idle: '5 minutes' } } }),
  d('too many workers', 'spec.proxy.workers', ['proxy.workers'], { proxy: { workers: 1000 } }),
  d('quantity 1.2.3', 'spec.proxy.resources.limits.cpu', ['proxy.resources'], {
    proxy: { resources: { limits: { cpu: '1.2.3' } } },
  }),
  d('unknown field', 'spec.proxy.colour', ['proxy.colour'], { proxy: { colour: 'red' } }),
  d('tolerate every taint', 'spec.tolerations[0]', ['tolerations'], { tolerations: [{ operator: 'Exists' }] }),
  d('select control-plane nodes', 'spec.nodeSelector.node-role.kubernetes.io/control-plane', ['nodeSelector'], {
    nodeSelector: { 'node-role.kubernetes.io/control-plane': '' },
  }),
  d('negative replicas', 'spec.replicas', ['replicas', 'autoscaling'], { replicas: -1 }),
  d('autoscaling without maxReplicas', 'spec.autoscaling.maxReplicas', ['autoscaling', 'replicas'], {
    replicas: 1,
    autoscaling: { enabled: true },
  }),
  d('unknown log level', 'spec.proxy.logLevel', ['proxy.logLevel'], { proxy: { logLevel: 'loud' } }),
];

/** mulberry32: a small seeded PRNG, so a failing object can be replayed from the seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      prev && v && typeof prev === 'object' && typeof v === 'object' && !Array.isArray(v)
        ? merge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

export interface Malformed {
  name: string;
  spec: Record<string, unknown>;
  defects: string[];
  fields: string[];
}

export function malformedObjects(count: number, seed: number): Malformed[] {
  const rand = prng(seed);
  return Array.from({ length: count }, (_, i) => {
    const want = 1 + Math.floor(rand() * 3);
    const chosen: Defect[] = [];
    for (let tries = 0; chosen.length < want && tries < 20; tries++) {
      const c = MALFORMED[Math.floor(rand() * MALFORMED.length)]!;
      if (chosen.some((x) => x.sets.some((p) => c.sets.includes(p)))) continue;
      chosen.push(c);
    }
    const spec = chosen.reduce((acc, x) => merge(acc, x.spec), { nodeSelector: { pool: 'b' } } as Record<
      string,
      unknown
    >);
    return { name: `m-${i}`, spec, defects: chosen.map((x) => x.why), fields: chosen.map((x) => x.field) };
  });
}
