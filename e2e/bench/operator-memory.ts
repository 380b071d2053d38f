// bash scripts/tpfleet.sh node e2e/bench/operator-memory.ts [--nodes 5000] [--bundle FILE] [--node-flags="..."]
//   [--seconds 45] [--no-fleets]
// Where the operator's memory goes, without a cluster (issue 17): the operator's bundle against a
// scripted in-memory API server holding N Nodes shaped like kwok's in bench:operator (managedFields
// of three managers, five conditions, nodeInfo...) and the bench's 51 fleets (50 with replicas 3, one
// over half the nodes). Lists are paginated, gets and applies are answered from and into the store,
// node label patches land in it; watches stay open and silent, so each fleet is reconciled once.
// Prints the operator's RSS and its heap spaces (/metrics) after --seconds, as JSON. Quick and
// repeatable, for comparing builds and node flags; bench:operator (a real API server) is the
// measurement of record. Without --bundle, builds the current tree's; --node-flags defaults to the
// image launcher's (images/bin/tpfleet-operator).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bundle } from '../../images/bundle.ts';

const { values: a } = parseArgs({
  options: {
    nodes: { type: 'string', default: '5000' },
    bundle: { type: 'string' },
    'node-flags': { type: 'string' },
    seconds: { type: 'string', default: '45' },
    'no-fleets': { type: 'boolean', default: false },
  },
});
const N = Number(a.nodes);
const T = '2026-12-03T16:00:00Z';
type Obj = { metadata: Record<string, any>; [k: string]: any };
const CONDITIONS = [
  ['Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'],
  ['MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'],
  ['DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'],
  ['PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'],
  ['NetworkUnavailable', 'False', 'RouteCreated', 'RouteController created a route'],
];
const fields = (keys: string[]) => Object.fromEntries(keys.map((k) => [`f:${k}`, {}]));
const NODE_INFO = ['architecture', 'bootID', 'containerRuntimeVersion', 'kernelVersion', 'kubeProxyVersion'];
const pool = (i: number) => (i < N / 2 ? `p${String(Math.floor(i / (N / 2 / 50))).padStart(2, '0')}` : 'all');

/** A Node as kwok's node-initialize stage leaves it (tools/k8s/kwok/stages.yaml), with its managedFields. */
function kwokNode(i: number): Obj {
  const name = `n${String(i).padStart(5, '0')}`;
  const conds = CONDITIONS.map(([type, status, reason, message]) => ({
    lastHeartbeatTime: T,
    lastTransitionTime: T,
    message,
    reason,
    status,
    type,
  }));
  const condFields = Object.fromEntries(
    CONDITIONS.map(([type]) => [
      `k:{"type":"${type}"}`,
      fields(['lastHeartbeatTime', 'lastTransitionTime', 'message', 'reason', 'status', 'type']),
    ]),
  );
  const status = {
    'f:addresses': { 'k:{"type":"Hostname"}': fields(['address', 'type']), 'k:{"type":"InternalIP"}': {} },
    'f:allocatable': fields(['cpu', 'memory', 'pods']),
    'f:capacity': fields(['cpu', 'memory', 'pods']),
    'f:conditions': condFields,
    'f:daemonEndpoints': { 'f:kubeletEndpoint': fields(['Port']) },
    'f:nodeInfo': fields([...NODE_INFO, 'kubeletVersion', 'machineID', 'operatingSystem', 'osImage', 'systemUUID']),
    'f:phase': {},
  };
  const mf = (manager: string, fieldsV1: object, subresource?: string) => ({
    manager,
    operation: 'Update',
    apiVersion: 'v1',
    time: T,
    fieldsType: 'FieldsV1',
    fieldsV1,
    ...(subresource ? { subresource } : {}),
  });
  const labels = { 'kubernetes.io/hostname': name, 'topology.kubernetes.io/zone': `z${i % 3}`, pool: pool(i) };
  return {
    kind: 'Node',
    apiVersion: 'v1',
    metadata: {
      name,
      uid: `0b6c3e8e-5f0c-4a7e-9c1f-${String(i).padStart(12, '0')}`,
      resourceVersion: String(100000 + i),
      creationTimestamp: T,
      labels,
      annotations: { 'kwok.x-k8s.io/node': 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      managedFields: [
        mf('bench', {
          'f:metadata': { 'f:annotations': fields(['kwok.x-k8s.io/node']), 'f:labels': fields(Object.keys(labels)) },
        }),
        mf('kube-controller-manager', { 'f:metadata': { 'f:annotations': fields(['node.alpha.kubernetes.io/ttl']) } }),
        mf('kwok', { 'f:status': status }, 'status'),
      ],
    },
    spec: {},
    status: {
      capacity: { cpu: '1k', memory: '1Ti', pods: '1M' },
      allocatable: { cpu: '1k', memory: '1Ti', pods: '1M' },
      conditions: conds,
      addresses: [
        { address: `10.244.${i >> 8}.${i & 255}`, type: 'InternalIP' },
        { address: name, type: 'Hostname' },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: { ...Object.fromEntries(NODE_INFO.map((k) => [k, 'kwok-v0.8.0'])), operatingSystem: 'linux' },
      phase: 'Running',
    },
  };
}

const store = new Map<string, Obj>();
let rv = 300_000;
for (let i = 0; i < N; i++) store.set(`/api/v1/nodes/${kwokNode(i).metadata.name}`, kwokNode(i));
const TPS = '/apis/tpfleet.io/v1alpha1/namespaces/bench/transparentproxies';
const fleet = (name: string, spec: object): Obj => ({
  apiVersion: 'tpfleet.io/v1alpha1',
  kind: 'TransparentProxy',
  metadata: {
    name,
    namespace: 'bench',
    uid: `tp-${name}`,
    generation: 1,
    resourceVersion: String(++rv),
    creationTimestamp: T,
  },
  spec,
});
if (!a['no-fleets']) {
  for (let i = 0; i < 50; i++) {
    const f = `f${String(i).padStart(2, '0')}`;
    store.set(`${TPS}/${f}`, fleet(f, { replicas: 3, nodeSelector: { pool: `p${String(i).padStart(2, '0')}` } }));
  }
  store.set(`${TPS}/wide`, fleet('wide', { nodeSelector: { pool: 'all' } }));
}

/** Objects directly in a collection; a cluster-wide path (no namespaces/NS) holds every namespace's. */
function collection(path: string): Obj[] {
  const m = /^(\/apis?\/(?:[^/]+\/)?v[^/]+)\/([a-z]+)$/.exec(path);
  return [...store.entries()]
    .filter(([k]) => {
      const rest = k.startsWith(`${path}/`) ? k.slice(path.length + 1) : undefined;
      if (rest !== undefined) return !rest.includes('/');
      return !!m && new RegExp(`^${m[1]}/namespaces/[^/]+/${m[2]}/[^/]+$`).test(k);
    })
    .map(([, v]) => v);
}

function answer(req: http.IncomingMessage, text: string): [number, unknown] {
  const u = new URL(req.url ?? '/', 'http://x');
  const sub = /\/(status|scale)$/.exec(u.pathname)?.[1];
  const path = sub ? u.pathname.slice(0, -sub.length - 1) : u.pathname;
  const cur = store.get(path);
  const body = text ? JSON.parse(text) : {};
  const notFound: [number, unknown] = [404, { kind: 'Status', code: 404, reason: 'NotFound' }];
  if (req.method === 'GET') {
    if (cur) return [200, cur];
    if (!/\/[a-z]+$/.test(path)) return notFound;
    let items = collection(path);
    const sel = u.searchParams.get('labelSelector')?.split('=');
    if (sel) items = items.filter((o) => o.metadata.labels?.[sel[0]!] === sel[1]);
    const limit = Number(u.searchParams.get('limit') ?? 1e9),
      from = Number(u.searchParams.get('continue') ?? 0);
    const next = from + limit < items.length ? String(from + limit) : undefined;
    return [
      200,
      {
        metadata: { resourceVersion: String(rv), ...(next ? { continue: next } : {}) },
        items: items.slice(from, from + limit),
      },
    ];
  }
  if (req.method === 'PATCH' && (req.headers['content-type'] ?? '').includes('apply-patch')) {
    const next: Obj =
      sub === 'status'
        ? { ...cur!, status: body.status }
        : { ...cur, ...body, metadata: { ...cur?.metadata, ...body.metadata } };
    next.metadata.uid ??= `u${rv}`;
    next.metadata.resourceVersion = String(++rv);
    if (!sub) next.metadata.generation = (cur?.metadata.generation ?? 0) + 1;
    next.metadata.managedFields = [{ manager: 'tpfleet-operator', operation: 'Apply', fieldsV1: { 'f:spec': {} } }];
    store.set(path, next);
    return [200, next];
  }
  if (req.method === 'PATCH') {
    if (!cur) return notFound;
    const labels = body.metadata?.labels as Record<string, string | null> | undefined;
    for (const [k, v] of Object.entries(labels ?? {}))
      if (v === null) delete cur.metadata.labels?.[k];
      else cur.metadata.labels = { ...cur.metadata.labels, [k]: v };
    cur.metadata.resourceVersion = String(++rv);
    return [200, cur];
  }
  if (req.method === 'POST') {
    const o = { ...body, metadata: { ...body.metadata, uid: `u${rv}`, resourceVersion: String(++rv) } };
    store.set(`${path}/${o.metadata.name ?? rv}`, o);
    return [201, o];
  }
  if (req.method === 'PUT') return (store.set(path, body), [200, body]);
  if (req.method === 'DELETE') return (store.delete(path), [200, { kind: 'Status', status: 'Success' }]);
  return [405, {}];
}

const server = http.createServer((req, res) => {
  if (new URL(req.url ?? '/', 'http://x').searchParams.get('watch') === '1') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(''); // open and silent
    return;
  }
  let text = '';
  req.on('data', (d) => (text += d));
  req.on('end', () => {
    const [code, o] = answer(req, text);
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(o));
  });
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const dir = mkdtempSync(join(tmpdir(), 'tpfleet-opmem-'));
const kubeconfig = join(dir, 'kubeconfig');
const port = (server.address() as { port: number }).port;
writeFileSync(
  kubeconfig,
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'p', cluster: { server: `http://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'u', user: {} }],
    contexts: [{ name: 'c', context: { cluster: 'p', user: 'u' } }],
    'current-context': 'c',
  }),
);
const file = a.bundle ?? (await bundle(join(dir, 'dist')), join(dir, 'dist', 'tpfleet-operator.mjs'));
const launcher = readFileSync(join(import.meta.dirname, '..', '..', 'images', 'bin', 'tpfleet-operator'), 'utf8');
const flags = (a['node-flags'] ?? /^exec node (.*?)\s*\/opt\/tpfleet\//m.exec(launcher)?.[1] ?? '')
  .split(/\s+/)
  .filter(Boolean);
const mport = 20_000 + (process.pid % 20_000);
const args = [...flags, file, `--kubeconfig=${kubeconfig}`, `--bind=127.0.0.1:${mport}`, '--webhook=false'];
args.push('--leader-elect=false', '--log-level=error', '--namespaces=bench', '--allowed-images=registry.example/');
const op = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
const kib = (field: string) =>
  Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${op.pid}/status`, 'utf8'))?.[1]);
let peak = 0;
for (let s = 0; s < Number(a.seconds); s++) {
  await new Promise((r) => setTimeout(r, 1000));
  peak = Math.max(peak, kib('VmRSS'));
}
const metrics = await new Promise<string>((resolve) =>
  http
    .get(`http://127.0.0.1:${mport}/metrics`, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    })
    .on('error', () => resolve('')),
);
const mib = (re: RegExp) => Math.round((Number(re.exec(metrics)?.[1]) / 2 ** 20) * 10) / 10;
const stat = readFileSync(`/proc/${op.pid}/stat`, 'utf8');
const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
const reconciles = /^tpfleet_operator_reconcile_total\{result="success"\} (\S+)/m.exec(metrics)?.[1];
console.log(
  JSON.stringify({
    nodes: N,
    fleets: a['no-fleets'] ? 0 : 51,
    nodeFlags: flags,
    reconciles: Number(reconciles ?? 0),
    cpuS: (Number(f[11]) + Number(f[12])) / 100,
    rssMiB: Math.round(kib('VmRSS') / 1024),
    peakRssMiB: Math.round(peak / 1024),
    heapUsedMiB: mib(/^nodejs_heap_size_used_bytes (\S+)/m),
    heapTotalMiB: mib(/^nodejs_heap_size_total_bytes (\S+)/m),
    newSpaceMiB: mib(/^nodejs_heap_space_size_total_bytes\{space="new"\} (\S+)/m),
    oldSpaceMiB: mib(/^nodejs_heap_space_size_total_bytes\{space="old"\} (\S+)/m),
    externalMiB: mib(/^nodejs_external_memory_bytes (\S+)/m),
  }),
);
op.kill('SIGKILL');
server.closeAllConnections();
server.close();
