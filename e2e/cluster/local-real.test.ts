// The local-real provider itself: the kind-config.yaml workers register as real kubelets and
// turn Ready, a pod on the CNI network (ptp) and a hostNetwork pod really run (their containers are
// processes in the node's cgroup, on the node's addresses), nodeExec runs in the node's network
// namespace, and delete() leaves no process, mount, cgroup, namespace, route or directory.
// Needs root; the binaries (kubelet, containerd) and the pause image build on first use.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { PAUSE_REF } from './local-real-image.ts';
import { localRealProvider, type LocalRealCluster } from './local-real.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');

interface Pod {
  status: { phase?: string; podIP?: string; hostIP?: string; conditions?: { type: string; status: string }[] };
}
const ip = (args: string[]) => new Promise<string>((resolve) => execFile('ip', args, (_e, out) => resolve(out)));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function pausePod(name: string, node: string, hostNetwork: boolean) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default' },
    spec: {
      nodeName: node,
      hostNetwork,
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
  };
}

describe('the local-real cluster provider', { concurrency: false }, async () => {
  const reason = await localRealProvider.unavailable();
  if (reason) {
    it('runs only as root with iproute2, runc, gcc and the CNI plugins', (t) => t.skip(reason));
    return;
  }
  let c: LocalRealCluster;
  before(async () => {
    const t0 = Date.now();
    c = await localRealProvider.create(KIND_CONFIG);
    process.stdout.write(
      `local-real provider: ${c.real.length} real node(s) Ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (binaries already built)\n`,
    );
  });
  after(async () => {
    await c?.delete();
  });

  it('registers every worker as a real kubelet, Ready, with the kind-config labels', async () => {
    const nodes = (
      await kubectlJson<{
        items: {
          metadata: { name: string; labels: Record<string, string> };
          status: { nodeInfo: { containerRuntimeVersion: string }; conditions: { type: string; status: string }[] };
        }[];
      }>(c, ['get', 'nodes'])
    ).items;
    const workers = c.nodes.filter((n) => n.role === 'worker');
    assert.deepEqual(c.real.map((n) => n.name).sort(), workers.map((n) => n.name).sort());
    for (const w of workers) {
      const n = nodes.find((x) => x.metadata.name === w.name)!;
      assert.match(n.status.nodeInfo.containerRuntimeVersion, /^containerd:\/\/2\./, `${w.name} runs our containerd`);
      assert.ok(
        n.status.conditions.some((x) => x.type === 'Ready' && x.status === 'True'),
        `${w.name} Ready`,
      );
      for (const [k, v] of Object.entries(w.labels)) assert.equal(n.metadata.labels[k], v, `${w.name} label ${k}`);
    }
  });

  it("runs a CNI pod and a hostNetwork pod for real, each on the node's own network", async () => {
    const node = c.real[0]!;
    await kubectl(
      c,
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [pausePod('lr-pod', node.name, false), pausePod('lr-host', node.name, true)],
      }),
    );
    const get = async (name: string) => kubectlJson<Pod>(c, ['get', 'pod', name]);
    for (const name of ['lr-pod', 'lr-host']) {
      await waitFor(
        `${name} Ready`,
        async () =>
          (await get(name)).status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True')
            ? true
            : undefined,
        90_000,
      );
    }
    const [pod, host] = [await get('lr-pod'), await get('lr-host')];
    assert.equal(host.status.podIP, node.net.nsIp, "a hostNetwork pod has the node's address");
    assert.ok(
      pod.status.podIP?.startsWith(node.paths.podCidr.slice(0, node.paths.podCidr.lastIndexOf('.'))),
      `pod IP ${pod.status.podIP} in ${node.paths.podCidr}`,
    );
    // The container really runs: a process of the node's pod cgroups whose uid is the pod's.
    const procs = await node.exec(['ps', '-eo', 'uid=,args=']);
    assert.ok(
      procs.split('\n').filter((l) => /^\s*65532\s+\/pause/.test(l)).length >= 2,
      `two /pause processes as uid 65532:\n${procs}`,
    );
    // The node routes to the CNI pod over the pod's own veth (ptp, as kindnet does).
    assert.match(await node.exec(['ip', 'route', 'get', pod.status.podIP!]), /dev veth[0-9a-f]+/);
  });

  it('each kubelet has its own device-plugin socket and container-log links; none reach the host', async () => {
    // Both paths are compiled into the kubelet; shared, two kubelets starting together race on the socket and one exits.
    const sockets = await Promise.all(
      c.real.map((n) => n.exec(['stat', '-c', '%d:%i', '/var/lib/kubelet/device-plugins/kubelet.sock'])),
    );
    assert.equal(
      new Set(sockets.map((x) => x.trim())).size,
      c.real.length,
      `one socket per kubelet: ${sockets.join(', ')}`,
    );
    const node = c.real[0]!;
    assert.match(
      await node.exec(['ls', '/var/log/containers']),
      /^lr-pod_default_main-/m,
      'the node keeps its container-log links',
    );
    const host = existsSync('/var/log/containers') ? readdirSync('/var/log/containers') : [];
    assert.ok(!host.some((e) => e.startsWith('lr-pod_')), `no link on the host: ${host.join(', ')}`);
  });

  it("nodeExec runs in the node's network namespace", async () => {
    const node = c.real[0]!;
    const addrs = await c.nodeExec!(node.name, ['ip', '-4', '-o', 'addr', 'show']);
    assert.match(addrs, new RegExp(`inet ${node.net.nsIp.replace(/\./g, '\\.')}/30`));
    assert.ok(!(await ip(['-4', '-o', 'addr', 'show'])).includes(`inet ${node.net.nsIp}/`), 'not the host namespace');
    await assert.rejects(c.nodeExec!('tpfleet-e2e-control-plane', ['true']), /not a real node/);
  });

  it('the kubelet refuses anonymous requests, and the API server reaches it with its own client certificate', async () => {
    const node = c.real[0]!;
    const code = await c.nodeExec!(node.name, [
      'curl',
      '-sk',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `https://${node.net.nsIp}:10250/pods`,
    ]);
    assert.equal(code.trim(), '401', 'anonymous: Unauthorized');
    // kubectl logs goes API server -> kubelet (kube-apiserver-kubelet-client, authorized by webhook).
    // A refused kubelet request makes kubectl fail naming Unauthorized or Forbidden.
    await assert.doesNotReject(kubectl(c, ['logs', 'lr-host']));
  });

  it('delete() leaves no process, mount, cgroup, namespace, route or directory behind', async () => {
    const { pids, dir } = c,
      nss = c.real.map((n) => n.net.ns),
      roots = c.real.map((n) => n.paths.cgroupRoot),
      cidrs = c.real.map((n) => n.paths.podCidr);
    await c.delete();
    await c.delete(); // idempotent
    for (const p of pids) assert.ok(!alive(p), `pid ${p} is gone`);
    assert.ok(!existsSync(dir), `${dir} removed`);
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(dir), 'no mount under the cluster directory');
    const netns = await ip(['netns', 'list']);
    for (const ns of nss) assert.ok(!netns.includes(ns), `netns ${ns} removed`);
    const routes = await ip(['route', 'show']);
    for (const r of cidrs) assert.ok(!routes.includes(r), `route to ${r} removed`);
    for (const h of readdirSync('/sys/fs/cgroup'))
      for (const r of roots) assert.ok(!existsSync(join('/sys/fs/cgroup', h, r)), `cgroup ${h}${r} removed`);
  });
});
