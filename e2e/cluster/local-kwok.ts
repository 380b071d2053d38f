// The `local` provider's nodes: the Node objects kind would register for kind-config.yaml (same
// names, kind's default labels, the file's labels, the control plane's NoSchedule taint), played
// by kwok. kwok only manages nodes carrying its annotation, and its stages (tools/k8s/kwok/
// stages.yaml, kwok's own "fast" set) keep them Ready with Lease heartbeats and walk every pod
// bound to them to Running + Ready, and deleted pods to gone. Nothing runs in those pods.
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ensureBinaries } from '../testenv/binaries.ts';
import { startProcess, stopProcess, tail } from '../testenv/testenv.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import type { ClusterNode } from './provider.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
export const STAGES = join(repoRoot, 'tools', 'k8s', 'kwok', 'stages.yaml');
/** kwok's documented way to pick the nodes it plays; other nodes (none here) are left alone. */
export const KWOK_ANNOTATION = { key: 'kwok.x-k8s.io/node', value: 'fake' };
const CONTROL_PLANE_ROLE = 'node-role.kubernetes.io/control-plane';

/** The labels a kind node has: the kubelet's well-known ones, the role, then kind-config's. */
export function kindNodeLabels(n: ClusterNode): Record<string, string> {
  return {
    'kubernetes.io/hostname': n.name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    'beta.kubernetes.io/os': 'linux',
    'beta.kubernetes.io/arch': 'amd64',
    ...(n.role === 'control-plane'
      ? { [CONTROL_PLANE_ROLE]: '', 'node.kubernetes.io/exclude-from-external-load-balancers': '' }
      : {}),
    ...n.labels,
  };
}

/**
 * A Node as its kubelet would register it. Status is set at creation as a kubelet does (the API
 * accepts it on create): an address per node like kind's Docker network, so hostNetwork pods
 * get distinct host IPs; kwok's init stage keeps given addresses and fills the conditions.
 */
export function nodeObject(n: ClusterNode, index: number): Record<string, unknown> {
  const capacity = { cpu: '8', memory: '16Gi', pods: '110', 'ephemeral-storage': '100Gi' };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: kindNodeLabels(n),
      annotations: { [KWOK_ANNOTATION.key]: KWOK_ANNOTATION.value },
    },
    spec: n.role === 'control-plane' ? { taints: [{ key: CONTROL_PLANE_ROLE, effect: 'NoSchedule' }] } : {},
    status: {
      addresses: [
        { type: 'InternalIP', address: `172.18.0.${index + 2}` },
        { type: 'Hostname', address: n.name },
      ],
      capacity,
      allocatable: capacity,
    },
  };
}

interface NodeList {
  items: {
    metadata: { name: string };
    spec: { taints?: { key: string }[] };
    status?: { conditions?: { type: string; status: string }[] };
  }[];
}

/** Creates the nodes, starts kwok on them and waits until every one is Ready and schedulable. */
export async function startKwok(
  c: { kubeconfigPath: string },
  nodes: readonly ClusterNode[],
  dir: string,
): Promise<ChildProcess> {
  const bin = await ensureBinaries(['kwok']);
  const list = { apiVersion: 'v1', kind: 'List', items: nodes.map(nodeObject) };
  await kubectl(c, ['create', '-f', '-'], JSON.stringify(list));
  const log = join(dir, 'kwok.log');
  // kwok stands in for the kubelets, so it is not what these tests authorize: it uses the
  // admin kubeconfig. Pod IPs come from kind's default pod subnet.
  const kwok = startProcess(
    join(bin, 'kwok'),
    [
      `--kubeconfig=${c.kubeconfigPath}`,
      `--config=${STAGES}`,
      '--manage-all-nodes=false',
      `--manage-nodes-with-annotation-selector=${KWOK_ANNOTATION.key}=${KWOK_ANNOTATION.value}`,
      // Heartbeats through Leases, as kubelets do; the heartbeat stage then only refreshes status.
      '--node-lease-duration-seconds=40',
      '--cidr=10.244.0.0/16',
    ],
    log,
  );
  const names = new Set(nodes.map((n) => n.name));
  await waitFor(
    'kwok to make every node Ready (and the node controller to lift not-ready taints)',
    async () => {
      if (kwok.exitCode !== null || kwok.signalCode !== null) throw new Error(`kwok exited:\n${tail(log)}`);
      const got = (await kubectlJson<NodeList>(c, ['get', 'nodes'])).items.filter((n) => names.has(n.metadata.name));
      const notReady = got.filter(
        (n) =>
          !n.status?.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') ||
          n.spec.taints?.some((t) => t.key.startsWith('node.kubernetes.io/')),
      );
      if (got.length !== names.size || notReady.length > 0)
        throw new Error(`not ready yet: ${notReady.map((n) => n.metadata.name).join(', ')}`);
      return true;
    },
    60_000,
  ).catch(async (e: unknown) => {
    await stopProcess(kwok);
    throw e;
  });
  return kwok;
}
