// `kubectl tpfleet` against a real kube-apiserver, run the way a user runs it: the bundled file
// (plugin/build.ts) on the PATH as kubectl-tpfleet, found and started by the real kubectl, as a
// user bound to exactly plugin/rbac.yaml. The operator reconciles a fleet in-process; no kubelet
// runs here, so `rules` (which reads a container log) is covered on the local-real cluster.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { ensureBinaries } from '../e2e/testenv/binaries.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';
import { buildPlugin } from './build.ts';

const FLEET = 'fleet',
  APPS = 'apps',
  USER = 'alice';
let env: TestEnv, admin: KubeClient, op: RunningOperator, dir: string, kubectl: string, userConfig: string;
type Obj = KubeObject & { spec?: any; status?: any };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tpfleet-plugin-'));
  await buildPlugin(join(dir, 'kubectl-tpfleet'));
  kubectl = join(await ensureBinaries(['kubectl']), 'kubectl');
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'plugin-test');
  await installCrd(admin);
  for (const ns of [FLEET, APPS]) await createNamespace(admin, ns);
  for (const n of ['n1', 'n2']) await createNode(admin, n, { labels: { pool: 'edge' } });
  const role = parse(readFileSync(join(import.meta.dirname, 'rbac.yaml'), 'utf8')) as Obj;
  await admin.create('/apis/rbac.authorization.k8s.io/v1/clusterroles', role);
  await admin.create('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'tpfleet-viewer-alice' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name },
    subjects: [{ kind: 'User', name: USER, apiGroup: 'rbac.authorization.k8s.io' }],
  });
  userConfig = await env.userKubeconfig(USER);
  op = await startOperator(env.kubeconfigPath);
});
after(async () => {
  await op?.stop();
  await env?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** `kubectl tpfleet ARGS` as alice: kubectl finds kubectl-tpfleet on the PATH (flags go after the plugin name). */
function plugin(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const PATH = [dir, dirname(process.execPath), process.env.PATH].join(':');
  return new Promise((resolve) => {
    execFile(
      kubectl,
      ['tpfleet', ...args, '--kubeconfig', userConfig],
      { env: { ...process.env, PATH } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** A pod as the scheduler and kubelet would leave it: bound to a node, running with an address. */
async function runningPod(name: string, node: string, ip: string, hostNetwork = false): Promise<void> {
  await admin.create(`/api/v1/namespaces/${APPS}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: { nodeName: node, hostNetwork, containers: [{ name: 'c', image: 'busybox' }] },
  });
  await admin.mergePatch(`/api/v1/namespaces/${APPS}/pods/${name}/status`, {
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  });
}

let active = '',
  idle = '';
test('status: the fleet, its active node and state, the last error', async () => {
  await admin.create(tpPath(FLEET), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'web' },
    spec: {
      replicas: 1,
      nodeSelector: { pool: 'edge' },
      interception: { ports: [{ port: 80 }], destinations: { exclude: ['10.96.0.0/12'] } },
    },
  });
  const t = await waitFor('one active node', async () => {
    const o = await admin.get<Obj>(tpPath(FLEET, 'web'));
    return o?.status?.replicas === 1 && o;
  });
  active = t.status.nodes[0].name;
  idle = active === 'n1' ? 'n2' : 'n1';
  const r = await plugin(['status']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^FLEET\s+READY\s+ACTIVE\s+REQUESTED\s+CANDIDATES/);
  assert.match(r.stdout, /fleet\/web\s+False\s+0\/1 ready\s+1\s+2\s+-/);
  assert.match(r.stdout, new RegExp(`\\n  ${active}\\s+Active\\s+false`));
  assert.match(r.stdout, /last error: /);
  const none = await plugin(['status', '-n', APPS]);
  assert.equal(none.stdout, 'No TransparentProxies found.\n');
});

test('why: a pod on the active node is intercepted by the fleet (rule named); elsewhere or on the host network not', async () => {
  await runningPod('client', active, '10.244.1.3');
  await runningPod('other', idle, '10.244.2.3');
  await runningPod('hostnet', active, '192.168.0.10', true);
  const on = await plugin(['why', 'client', '-n', APPS, '--to', '10.1.2.3:80']);
  assert.equal(on.code, 0, on.stderr);
  assert.match(on.stdout, new RegExp(`fleet fleet/web is active on ${active}`));
  assert.match(
    on.stdout,
    /INTERCEPTED: TCP 10\.244\.1\.3 -> 10\.1\.2\.3:80 goes to the proxy \(rule "tproxy" to :\d+\)/,
  );
  const svc = await plugin(['why', 'client', '-n', APPS, '--to', '10.96.0.1:80']);
  assert.match(
    svc.stdout,
    /NOT intercepted: rule "destinations": destination 10\.96\.0\.1 is in destinations\.exclude/,
  );
  const port = await plugin(['why', 'client', '-n', APPS, '--to', '10.1.2.3:443']);
  assert.match(port.stdout, /NOT intercepted: rule "ports": 443 is not in \[80\]/);
  assert.match((await plugin(['why', 'client', '-n', APPS])).stdout, /INTERCEPTED: its TCP connections to any address/);
  assert.match(
    (await plugin(['why', 'other', '-n', APPS])).stdout,
    new RegExp(`NOT intercepted: no TransparentProxy is active on node ${idle}`),
  );
  assert.match((await plugin(['why', 'hostnet', '-n', APPS])).stdout, /NOT intercepted: the pod uses the host network/);
});

test('rules: names the fleet and the node state; errors and usage exit non-zero with a message', async () => {
  const r = await plugin(['rules', active]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`# fleet fleet/web: node ${active} is Active\\n# no proxy pod on ${active}`));
  assert.match((await plugin(['rules', 'nowhere'])).stdout, /node nowhere: no TransparentProxy lists it/);
  const missing = await plugin(['why', 'ghost', '-n', APPS]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /pod apps\/ghost not found/);
  const usage = await plugin(['why', 'client', '--to', 'nonsense']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--to: "nonsense" is not IP:PORT/);
});

test('least privilege: every command above ran as alice, whose ClusterRole only reads (no exec, proxy or Secrets)', () => {
  const role = parse(readFileSync(join(import.meta.dirname, 'rbac.yaml'), 'utf8')) as {
    rules: { resources: string[]; verbs: string[] }[];
  };
  const verbs = new Set(role.rules.flatMap((r) => r.verbs));
  assert.deepEqual([...verbs].sort(), ['get', 'list']);
  const resources = role.rules.flatMap((r) => r.resources).sort();
  assert.deepEqual(resources, ['configmaps', 'daemonsets', 'pods', 'pods/log', 'transparentproxies']);
});
