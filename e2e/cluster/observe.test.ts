// What an operator of the fleet sees, on the local-real cluster (real kubelets and containerd, the
// chart installed by Helm, the operator and the node pods really running): the Events of
// activation, scale-out and scale-in in `kubectl describe`, and `kubectl tpfleet` (the bundled
// plugin, started by the real kubectl): `status`, `rules NODE` (the plan the node agent applied
// and verified, from its init container's log) and `why POD` for a pod on the active node.
// Needs root; run alone under the cluster lock (COORDINATION.md).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildImages } from '../../images/images.ts';
import { buildPlugin } from '../../plugin/build.ts';
import { ensureBinaries } from '../testenv/binaries.ts';
import { installChart, type Installed } from './install.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { PAUSE_REF } from './local-real-image.ts';
import { localRealProvider } from './local-real.ts';
import type { Cluster } from './provider.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');
const TP = 'observe';
const CANDIDATE = 'tpfleet.io/proxy-candidate';

describe('what an operator of the fleet sees on the local-real cluster', { concurrency: false }, async () => {
  const reason = process.getuid?.() === 0 ? await localRealProvider.unavailable() : 'not root';
  if (reason) {
    it('runs as root with the local-real prerequisites', () => assert.fail(`local-real unavailable: ${reason}`));
    return;
  }
  let c: Cluster, inst: Installed, dir: string, kubectlBin: string;
  const tp = () => kubectlJson(c, ['get', 'transparentproxy', '-n', inst.fleetNamespace, TP]);
  const settle = (n: number) =>
    waitFor(
      `${n} active node(s), Ready`,
      async () => {
        const o = await tp();
        const ok =
          o.status?.replicas === n &&
          o.status.readyReplicas === n &&
          o.status.nodes?.every((x: { state: string }) => x.state === 'Active') &&
          o.status.conditions?.find((x: { type: string }) => x.type === 'Ready')?.status === 'True';
        if (!ok) throw new Error(`status ${JSON.stringify(o.status?.nodes)}`);
        return (o.status.nodes as { name: string }[]).map((x) => x.name);
      },
      180_000,
    );
  const plugin = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(
        kubectlBin,
        ['tpfleet', ...args, '--kubeconfig', c.kubeconfigPath],
        { env: { ...process.env, PATH: [dir, dirname(process.execPath), process.env.PATH].join(':') } },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      ),
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tpfleet-observe-'));
    await buildPlugin(join(dir, 'kubectl-tpfleet'));
    kubectlBin = join(await ensureBinaries(['kubectl']), 'kubectl');
    const built = await buildImages(['operator', 'node']);
    const images = {
      operator: built.find((b) => b.ref.includes('operator'))!,
      node: built.find((b) => b.ref.includes('node'))!,
    };
    c = await localRealProvider.create(KIND_CONFIG);
    await c.loadImages([images.operator, images.node]);
    inst = await installChart(c, images);
  });
  after(async () => {
    await c?.delete();
    rmSync(dir, { recursive: true, force: true });
  });

  let active = '';
  it('activation, scale-out, scale-in: kubectl describe shows the Events', async () => {
    await kubectl(
      c,
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'tpfleet.io/v1alpha1',
        kind: 'TransparentProxy',
        metadata: { name: TP, namespace: inst.fleetNamespace },
        spec: { nodeSelector: { [CANDIDATE]: 'true' }, replicas: 1, interception: { ports: [{ port: 8080 }] } },
      }),
    );
    active = (await settle(1))[0]!;
    await kubectl(c, ['scale', 'tproxy', TP, '-n', inst.fleetNamespace, '--replicas=2']);
    await settle(2);
    await kubectl(c, ['scale', 'tproxy', TP, '-n', inst.fleetNamespace, '--replicas=1']);
    active = (await settle(1))[0]!;
    const described = await waitFor(
      'NodeRestored in kubectl describe',
      async () => {
        const d = await kubectl(c, ['describe', 'tproxy', TP, '-n', inst.fleetNamespace]);
        if (!/NodeRestored/.test(d)) throw new Error(d.slice(d.indexOf('Events:')));
        return d;
      },
      120_000,
    );
    const events = described.slice(described.indexOf('Events:'));
    for (const r of [
      /Normal\s+NodeActivated\s+.*node\(s\) \S+ intercept now \(active\)/,
      /Normal\s+Scaled\s+.*active nodes 1 -> 2 \(spec\.replicas 2\)/,
      /Normal\s+NodeDraining\s+.*leave the active set/,
      /Normal\s+Scaled\s+.*active nodes 2 -> 1 \(spec\.replicas 1\)/,
      /Normal\s+NodeRestored\s+.*rules, routes and tuning restored/,
    ])
      assert.match(events, r);
    process.stdout.write(`${events}\n`);
  });

  it('kubectl tpfleet status and rules NODE: the fleet, and the rule set the node agent applied and verified', async () => {
    const s = await plugin(['status']);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, new RegExp(`${inst.fleetNamespace}/${TP}\\s+True\\s+1/1 ready`));
    assert.match(s.stdout, new RegExp(`\\n  ${active}\\s+Active\\s+true`));
    const r = await plugin(['rules', active]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`# fleet ${inst.fleetNamespace}/${TP}: node ${active} is Active`));
    assert.match(r.stdout, /# backend: (nftables|iptables-nft|iptables-legacy); families: /);
    assert.match(r.stdout, /tproxy|TPROXY/);
    assert.match(r.stdout, /# routing \(each added only when absent\)\n.*ip.* rule add fwmark/);
    assert.match(r.stdout, /applied \((nftables|iptables-nft|iptables-legacy)\) and verified/);
    process.stdout.write(`${r.stdout}\n`);
  });

  it('kubectl tpfleet why POD: a pod on the active node is intercepted on 8080, not on 9090', async () => {
    await kubectl(
      c,
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'why-client', namespace: 'default' },
        spec: {
          nodeName: active,
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              name: 'main',
              image: PAUSE_REF,
              imagePullPolicy: 'Never',
              securityContext: { runAsUser: 65532, runAsNonRoot: true, allowPrivilegeEscalation: false },
            },
          ],
        },
      }),
    );
    await waitFor('the pod has an address', async () => {
      const p = await kubectlJson(c, ['get', 'pod', 'why-client', '-n', 'default']);
      if (!p.status?.podIP) throw new Error('no podIP yet');
      return true;
    });
    const yes = await plugin(['why', 'why-client', '--to', '10.244.3.2:8080']);
    assert.equal(yes.code, 0, yes.stderr);
    assert.match(yes.stdout, new RegExp(`fleet ${inst.fleetNamespace}/${TP} is active on ${active}`));
    assert.match(yes.stdout, /INTERCEPTED: TCP \S+ -> 10\.244\.3\.2:8080 goes to the proxy/);
    const no = await plugin(['why', 'why-client', '--to', '10.244.3.2:9090']);
    assert.match(no.stdout, /NOT intercepted: rule "ports": 9090 is not in \[8080\]/);
    process.stdout.write(`${yes.stdout}${no.stdout}`);
  });
});
