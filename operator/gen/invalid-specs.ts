// Invalid TransparentProxy specs, each with the field the rejection must name. Used by the
// API-server test (schema + CEL at admission) and by the operator-side check (zod), so both
// layers are held to the same list. apiOnly: rules only the API server enforces (list-map key
// uniqueness, metadata.name).
import { DEFAULTS } from '../../api/defaults.ts';

export interface InvalidSpec {
  why: string;
  field: string;
  spec: Record<string, unknown>;
  name?: string;
  apiOnly?: boolean;
}

const i = (interception: Record<string, unknown>) => ({ interception });
const p = (proxy: Record<string, unknown>) => ({ proxy });

export const INVALID_SPECS: InvalidSpec[] = [
  { why: 'port 0', field: 'spec.interception.ports[0].port', spec: i({ ports: [{ port: 0 }] }) },
  { why: 'port over 65535', field: 'spec.interception.ports[0].port', spec: i({ ports: [{ port: 70000 }] }) },
  {
    why: 'range end before start',
    field: 'spec.interception.ports[0].endPort',
    spec: i({ ports: [{ port: 9000, endPort: 8000 }] }),
  },
  {
    why: 'duplicate port',
    field: 'spec.interception.ports[1]',
    spec: i({ ports: [{ port: 80 }, { port: 80 }] }),
    apiOnly: true,
  },
  {
    why: 'not a CIDR',
    field: 'spec.interception.destinations.include[0]',
    spec: i({ destinations: { include: ['not-a-cidr'] } }),
  },
  {
    why: 'CIDR with host bits',
    field: 'spec.interception.destinations.include[0]',
    spec: i({ destinations: { include: ['10.0.0.1/8'] } }),
  },
  {
    why: 'bad IPv4 octet',
    field: 'spec.interception.sources.exclude[0]',
    spec: i({ sources: { exclude: ['300.1.1.1/32'] } }),
  },
  {
    why: 'IPv6 prefix too long',
    field: 'spec.interception.sources.include[0]',
    spec: i({ sources: { include: ['fd00::/129'] } }),
  },
  {
    why: 'include == exclude',
    field: 'spec.interception.destinations.exclude',
    spec: i({ destinations: { include: ['10.0.0.0/8'], exclude: ['10.0.0.0/8'] } }),
  },
  {
    why: 'interface name too long',
    field: 'spec.interception.interfaces[0]',
    spec: i({ interfaces: ['averyveryverylongname0'] }),
  },
  { why: 'no IP family', field: 'spec.interception.ipFamilies', spec: i({ ipFamilies: [] }) },
  { why: 'unknown IP family', field: 'spec.interception.ipFamilies[0]', spec: i({ ipFamilies: ['IPv5'] }) },
  { why: 'unknown backend', field: 'spec.interception.backend', spec: i({ backend: 'ebpf' }) },
  { why: 'unknown failure policy', field: 'spec.interception.failurePolicy', spec: i({ failurePolicy: 'Ignore' }) },
  { why: 'UDP not yet', field: 'spec.interception.protocol', spec: i({ protocol: 'UDP' }) },
  { why: 'mark 0', field: 'spec.interception.mark', spec: i({ mark: 0 }) },
  { why: 'mask over 32 bits', field: 'spec.interception.mask', spec: i({ mask: 4294967296 }) },
  { why: 'reserved routing table', field: 'spec.interception.routingTable', spec: i({ routingTable: 254 }) },
  { why: 'rule priority too high', field: 'spec.interception.rulePriority', spec: i({ rulePriority: 40000 }) },
  { why: 'listen port 0', field: 'spec.proxy.listenPort', spec: p({ listenPort: 0 }) },
  {
    why: 'metrics port = listen port',
    field: 'spec.proxy.metricsPort',
    spec: p({ listenPort: 9000, metricsPort: 9000 }),
  },
  {
    why: 'metrics port = default listen port',
    field: 'spec.proxy.metricsPort',
    spec: p({ metricsPort: DEFAULTS.proxy.listenPort }),
  },
  {
    why: 'duration with spaces',
    field: 'spec.proxy.timeouts.connect',
    spec: p({ timeouts: { connect: '5 seconds' } }),
  },
  { why: 'unknown log level', field: 'spec.proxy.logLevel', spec: p({ logLevel: 'verbose' }) },
  { why: 'too many workers', field: 'spec.proxy.workers', spec: p({ workers: 65 }) },
  { why: 'maxConnections 0', field: 'spec.proxy.maxConnections', spec: p({ maxConnections: 0 }) },
  { why: 'tiny backlog', field: 'spec.proxy.backlog', spec: p({ backlog: 8 }) },
  {
    why: 'unknown resource',
    field: 'spec.proxy.resources.requests',
    spec: p({ resources: { requests: { gpu: '1' } } }),
  },
  { why: 'unknown pull policy', field: 'spec.proxy.imagePullPolicy', spec: p({ imagePullPolicy: 'Sometimes' }) },
  { why: 'typo in a field name', field: 'spec.proxy.listenport', spec: p({ listenport: 15101 }) },
  { why: 'negative replicas', field: 'spec.replicas', spec: { replicas: -1 } },
  {
    why: 'min > max replicas',
    field: 'spec.autoscaling.minReplicas',
    spec: { autoscaling: { minReplicas: 5, maxReplicas: 2 } },
  },
  {
    why: 'autoscaling without max',
    field: 'spec.autoscaling.maxReplicas',
    spec: { replicas: 1, autoscaling: { enabled: true } },
  },
  {
    why: 'autoscaling without replicas (/scale unreadable)',
    field: 'spec.replicas',
    spec: { autoscaling: { enabled: true, maxReplicas: 3 } },
  },
  {
    why: 'bad stabilization window',
    field: 'spec.autoscaling.scaleDownStabilization',
    spec: { autoscaling: { scaleDownStabilization: 'soon' } },
  },
  {
    why: 'sysctl outside the allowlist',
    field: 'spec.tuning.sysctls.overrides',
    spec: { tuning: { sysctls: { overrides: { 'kernel.panic': '1' } } } },
  },
  {
    why: 'unknown sysctl profile',
    field: 'spec.tuning.sysctls.profile',
    spec: { tuning: { sysctls: { profile: 'turbo' } } },
  },
  {
    why: 'sysctl value out of range',
    field: 'spec.tuning.sysctls.overrides',
    spec: { tuning: { sysctls: { overrides: { 'net.core.somaxconn': 10 } } } },
  },
  {
    why: 'explicit affinity without CPU lists',
    field: 'spec.tuning.affinity',
    spec: { tuning: { affinity: { mode: 'explicit' } } },
  },
  {
    why: 'worker CPUs not a CPU list',
    field: 'spec.tuning.affinity.workerCpus',
    spec: { tuning: { affinity: { mode: 'auto', workerCpus: 'all' } } },
  },
  {
    why: 'Exists toleration with a value',
    field: 'spec.tolerations[0].value',
    spec: { tolerations: [{ key: 'a', operator: 'Exists', value: 'b' }] },
  },
  {
    why: 'unknown taint effect',
    field: 'spec.tolerations[0].effect',
    spec: { tolerations: [{ key: 'a', effect: 'Sometimes' }] },
  },
  { why: 'nodeSelector value not a string', field: 'spec.nodeSelector.zone', spec: { nodeSelector: { zone: 1 } } },
  { why: 'name too long for derived names', field: 'metadata.name', spec: {}, name: 'x'.repeat(51), apiOnly: true },
];
