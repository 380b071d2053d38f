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

/** spec.policy cases (issue 13), also used by policy-cel.apiserver.test.ts for field + message. */
export interface InvalidPolicy {
  why: string;
  field: string;
  /** What the API server says after the field. */
  message: RegExp;
  spec: Record<string, unknown>;
}
const sni = (...serverNames: string[]) => ({ rules: [{ name: 'r', action: 'Deny', match: { serverNames } }] });
const host = (...hosts: string[]) => ({ rules: [{ name: 'r', action: 'Deny', match: { hosts } }] });
const NAME_MSG = /should match '\^\(\\\*\\\.\)\?/;
const proxyUp = { name: 'corp', type: 'HTTPConnect', address: 'proxy.corp:3128' };
export const POLICY_INVALID: InvalidPolicy[] = [
  {
    why: 'wildcard without a dot',
    field: 'spec.policy.rules[0].match.serverNames[0]',
    message: NAME_MSG,
    spec: sni('*foo'),
  },
  {
    why: 'wildcard inside a name',
    field: 'spec.policy.rules[0].match.hosts[0]',
    message: NAME_MSG,
    spec: host('a.*.b'),
  },
  { why: 'bare wildcard', field: 'spec.policy.rules[0].match.serverNames[0]', message: NAME_MSG, spec: sni('*') },
  {
    why: 'SNI with a space',
    field: 'spec.policy.rules[0].match.serverNames[1]',
    message: NAME_MSG,
    spec: sni('ok.example.com', 'bad name.example.com'),
  },
  {
    why: 'unicode SNI (not punycode)',
    field: 'spec.policy.rules[0].match.serverNames[0]',
    message: NAME_MSG,
    spec: sni('bücher.de'),
  },
  {
    why: 'upper-case SNI',
    field: 'spec.policy.rules[0].match.serverNames[0]',
    message: NAME_MSG,
    spec: sni('Example.com'),
  },
  {
    why: 'upper-case Host',
    field: 'spec.policy.rules[0].match.hosts[0]',
    message: NAME_MSG,
    spec: host('API.example.com'),
  },
  {
    why: 'label over 63',
    field: 'spec.policy.rules[0].match.hosts[0]',
    message: NAME_MSG,
    spec: host(`${'a'.repeat(64)}.com`),
  },
  {
    why: 'trailing dot',
    field: 'spec.policy.rules[0].match.serverNames[0]',
    message: NAME_MSG,
    spec: sni('example.com.'),
  },
  {
    why: 'duplicate rule names',
    field: 'spec.policy.rules[1]',
    message: /Duplicate value: .*"name":"same"/,
    spec: {
      rules: [
        { name: 'same', action: 'Allow' },
        { name: 'same', action: 'Deny' },
      ],
    },
  },
  {
    why: 'rule naming an undefined upstream',
    field: 'spec.policy.rules',
    message: /a rule names an upstream that spec.policy.upstreams does not define/,
    spec: {
      upstreams: [proxyUp],
      rules: [
        { name: 'ok', action: 'Forward', upstream: 'corp' },
        { name: 'via', action: 'Forward', upstream: 'nowhere' },
      ],
    },
  },
  {
    why: 'Forward with no upstreams at all',
    field: 'spec.policy.rules',
    message: /a rule names an upstream that spec.policy.upstreams does not define/,
    spec: { rules: [{ name: 'via', action: 'Forward', upstream: 'corp' }] },
  },
  {
    why: 'Forward without upstream',
    field: 'spec.policy.rules[0].upstream',
    message: /Forward rules name an upstream, and only they do/,
    spec: { upstreams: [proxyUp], rules: [{ name: 'via', action: 'Forward' }] },
  },
  {
    why: 'Deny naming an upstream',
    field: 'spec.policy.rules[0].upstream',
    message: /Forward rules name an upstream, and only they do/,
    spec: { upstreams: [proxyUp], rules: [{ name: 'no', action: 'Deny', upstream: 'corp' }] },
  },
  {
    why: 'rule name not a DNS label',
    field: 'spec.policy.rules[0].name',
    message: /should match/,
    spec: { rules: [{ name: 'Block_All', action: 'Deny' }] },
  },
  {
    why: 'destination prefix over 32',
    field: 'spec.policy.rules[0].match.destinations[0]',
    message: /should match/,
    spec: { rules: [{ name: 'r', action: 'Deny', match: { destinations: ['10.0.0.0/33'] } }] },
  },
  {
    why: 'source not an address',
    field: 'spec.policy.rules[0].match.sources[0]',
    message: /should match/,
    spec: { rules: [{ name: 'r', action: 'Deny', match: { sources: ['pods'] } }] },
  },
  {
    why: 'unknown action',
    field: 'spec.policy.rules[0].action',
    message: /Unsupported value: "Reject"/,
    spec: { rules: [{ name: 'r', action: 'Reject' }] },
  },
  {
    why: 'upstream address without a port',
    field: 'spec.policy.upstreams[0].address',
    message: /should match/,
    spec: { upstreams: [{ ...proxyUp, address: 'proxy.corp' }] },
  },
  {
    why: 'credentials Secret name not a Secret name',
    field: 'spec.policy.upstreams[0].credentialsSecret.name',
    message: /should match/,
    spec: { upstreams: [{ ...proxyUp, credentialsSecret: { name: 'Corp_Creds' } }] },
  },
  {
    why: 'duplicate upstream names',
    field: 'spec.policy.upstreams[1]',
    message: /Duplicate value: .*"name":"corp"/,
    spec: { upstreams: [proxyUp, { ...proxyUp, type: 'SOCKS5' }] },
  },
  {
    why: 'peek buffer too small',
    field: 'spec.policy.peek.maxBytes',
    message: /should be greater than or equal to 512/,
    spec: { peek: { maxBytes: 100 } },
  },
  {
    why: 'upstream connect timeout above 60s',
    field: 'spec.policy.upstreams[0].connectTimeout',
    message: /must be between 1ms and 60s/,
    spec: { upstreams: [{ ...proxyUp, connectTimeout: '61s' }] },
  },
  {
    why: 'peek timeout above 10s',
    field: 'spec.policy.peek.timeout',
    message: /must be between 1ms and 10s/,
    spec: { peek: { timeout: '11s' } },
  },
];

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
  {
    why: 'protocol UDP (the deprecated field is TCP only)',
    field: 'spec.interception.protocol',
    spec: i({ protocol: 'UDP' }),
  },
  { why: 'unknown transport', field: 'spec.interception.protocols[0]', spec: i({ protocols: ['SCTP'] }) },
  { why: 'no transport', field: 'spec.interception.protocols', spec: i({ protocols: [] }) },
  {
    why: 'protocol not in protocols',
    field: 'spec.interception.protocols',
    spec: i({ protocol: 'TCP', protocols: ['UDP'] }),
  },
  {
    why: 'UDP port range covering the default listen port',
    field: 'spec.interception.udpPorts',
    spec: i({ protocols: ['UDP'], udpPorts: [{ port: 15000, endPort: 15200 }] }),
  },
  {
    why: 'UDP port = metrics port',
    field: 'spec.interception.udpPorts',
    spec: { interception: { protocols: ['UDP'], udpPorts: [{ port: 9100 }] }, proxy: { metricsPort: 9100 } },
  },
  { why: 'UDP flow cap 0', field: 'spec.proxy.udp.maxFlows', spec: p({ udp: { maxFlows: 0 } }) },
  { why: 'UDP flow cap too high', field: 'spec.proxy.udp.maxFlows', spec: p({ udp: { maxFlows: 500_001 } }) },
  {
    why: 'UDP idle timeout too short',
    field: 'spec.proxy.udp.idleTimeout',
    spec: p({ udp: { idleTimeout: '500ms' } }),
  },
  { why: 'UDP idle timeout too long', field: 'spec.proxy.udp.idleTimeout', spec: p({ udp: { idleTimeout: '2h' } }) },
  { why: 'mark 0', field: 'spec.interception.mark', spec: i({ mark: 0 }) },
  // fwmark bits kube-proxy and the common CNIs own (api/fields.ts RESERVED_MARKS).
  { why: "kube-proxy's masquerade bit", field: 'spec.interception.mask', spec: i({ mark: 0x4000, mask: 0x4000 }) },
  { why: "kube-proxy's drop bit in the mark", field: 'spec.interception.mark', spec: i({ mark: 0x8000 }) },
  { why: "Calico's mark range", field: 'spec.interception.mask', spec: i({ mark: 0x10000, mask: 0x30000 }) },
  { why: "Cilium's magic marks", field: 'spec.interception.mask', spec: i({ mark: 0x200, mask: 0x300 }) },
  { why: 'mask over 32 bits', field: 'spec.interception.mask', spec: i({ mask: 4294967296 }) },
  { why: 'reserved routing table', field: 'spec.interception.routingTable', spec: i({ routingTable: 254 }) },
  { why: 'rule priority too high', field: 'spec.interception.rulePriority', spec: i({ rulePriority: 40000 }) },
  { why: 'listen port 0', field: 'spec.proxy.listenPort', spec: p({ listenPort: 0 }) },
  { why: 'listen port on the kubelet', field: 'spec.proxy.listenPort', spec: p({ listenPort: 10250 }) },
  { why: 'metrics port in the NodePort range', field: 'spec.proxy.metricsPort', spec: p({ metricsPort: 30080 }) },
  { why: 'metrics port below 1024', field: 'spec.proxy.metricsPort', spec: p({ metricsPort: 80 }) },
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
  // Duration bounds (api/fields.ts DURATION_BOUNDS): above them a consumer would refuse or misfire.
  { why: 'drain above 1h (leave wait)', field: 'spec.proxy.timeouts.drain', spec: p({ timeouts: { drain: '3601s' } }) },
  { why: 'idle above 24h', field: 'spec.proxy.timeouts.idle', spec: p({ timeouts: { idle: '25h' } }) },
  { why: 'connect timeout 0', field: 'spec.proxy.timeouts.connect', spec: p({ timeouts: { connect: '0s' } }) },
  {
    why: 'stabilization above the HPA maximum',
    field: 'spec.autoscaling.scaleDownStabilization',
    spec: { autoscaling: { scaleDownStabilization: '61m' } },
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
    why: 'utilization and a fixed per-proxy target together',
    field: 'spec.autoscaling.utilization',
    spec: { autoscaling: { utilization: { percent: 70 }, targetConnectionsPerProxy: 100 } },
  },
  {
    why: 'utilization above 100 %',
    field: 'spec.autoscaling.utilization.percent',
    spec: { autoscaling: { utilization: { percent: 101 } } },
  },
  {
    why: 'utilization window above the HPA maximum',
    field: 'spec.autoscaling.utilization.window',
    spec: { autoscaling: { utilization: { window: '61m' } } },
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
  ...POLICY_INVALID.map((b) => ({ ...b, spec: { policy: b.spec } })),
  { why: 'name too long for derived names', field: 'metadata.name', spec: {}, name: 'x'.repeat(51), apiOnly: true },
];
