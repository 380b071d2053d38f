// Helpers the API-server tests share: install the generated CRD, create namespaces and nodes,
// poll for a condition. Everything goes through the real API server.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { transparentProxyCrd } from '../../operator/gen/crd.ts';
import { ApiError, type KubeClient, type KubeObject } from '../../kube/client.ts';
import { errorMessage } from '../../api/errors.ts';

export const TP_PATH = '/apis/tpfleet.io/v1alpha1';
export const tpPath = (ns: string, name?: string, sub?: string) =>
  `${TP_PATH}/namespaces/${ns}/transparentproxies${name ? `/${name}` : ''}${sub ? `/${sub}` : ''}`;

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${errorMessage(last)}` : ''}`, {
    cause: last,
  });
}

/** Installs crds/ as generated (in memory, identical to the files) and waits until it is served. */
export async function installCrd(c: KubeClient): Promise<void> {
  await c.apply(
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/transparentproxies.tpfleet.io',
    transparentProxyCrd(),
  );
  await waitFor('CRD Established', async () => {
    const crd = await c.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/transparentproxies.tpfleet.io',
    );
    if (!crd?.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True')) return false;
    // Established can precede discovery by a moment; a list proves the endpoint serves.
    await c.list(`${TP_PATH}/transparentproxies`);
    return true;
  });
}

export async function createNamespace(c: KubeClient, name: string): Promise<void> {
  try {
    await c.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 409)) throw e;
  }
}

export function loadSample(file: string): KubeObject & { spec: Record<string, unknown> } {
  return parse(readFileSync(join(import.meta.dirname, '..', '..', 'operator', 'samples', file), 'utf8'));
}

export interface NodeOpts {
  zone?: string;
  ready?: boolean;
  labels?: Record<string, string>;
  taints?: { key: string; value?: string; effect: string }[];
  unschedulable?: boolean;
}

/** A Node object as a kubelet would register it (no kubelet runs here; nodes are just objects). */
export async function createNode(c: KubeClient, name: string, o: NodeOpts = {}): Promise<void> {
  const labels = {
    'kubernetes.io/hostname': name,
    ...(o.zone ? { 'topology.kubernetes.io/zone': o.zone } : {}),
    ...o.labels,
  };
  await c.create('/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels },
    spec: { taints: o.taints, unschedulable: o.unschedulable },
  });
  await setNodeReady(c, name, o.ready ?? true);
  // The TaintNodesByCondition admission plugin adds node.kubernetes.io/not-ready on create; the
  // node lifecycle controller (not running here) lifts it once the node is Ready. Do it for it.
  if (o.ready ?? true) await c.mergePatch(`/api/v1/nodes/${name}`, { spec: { taints: o.taints ?? null } });
}

/** Writes the Ready condition the way the kubelet reports it (status subresource). */
export async function setNodeReady(c: KubeClient, name: string, ready: boolean): Promise<void> {
  const now = new Date().toISOString();
  await c.mergePatch(`/api/v1/nodes/${name}/status`, {
    status: {
      conditions: [
        {
          type: 'Ready',
          status: ready ? 'True' : 'False',
          reason: ready ? 'KubeletReady' : 'KubeletNotReady',
          message: 'set by the test as the kubelet would',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
    },
  });
}

/**
 * Plays the DaemonSet controller and kubelets for the leave DaemonSet (neither runs here): every
 * node labelled "leaving" for this object gets a Ready leave pod from the DaemonSet's template
 * (as if its cleanup init container had finished), and a node no longer leaving loses its pod.
 * Returns the nodes still labelled "leaving".
 */
export async function completeLeaves(
  c: KubeClient,
  ns: string,
  tpName: string,
  label: string,
  ready = (_node: string) => true,
): Promise<string[]> {
  type Tmpl = {
    spec: {
      selector: { matchLabels: Record<string, string> };
      template: { metadata: { labels: Record<string, string> }; spec: Record<string, unknown> };
    };
  };
  const ds = await c.get<KubeObject & Tmpl>(`/apis/apps/v1/namespaces/${ns}/daemonsets/${tpName}-leave`);
  if (!ds) return [];
  const leaving = (await c.list('/api/v1/nodes', { labelSelector: `${label}=leaving` })).items
    .map((n) => n.metadata.name)
    .sort();
  const selector = Object.entries(ds.spec.selector.matchLabels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const pods = (await c.list(`/api/v1/namespaces/${ns}/pods`, { labelSelector: selector })).items as (KubeObject & {
    spec: { nodeName: string };
  })[];
  // Grace 0: no kubelet here to confirm a graceful deletion.
  for (const p of pods)
    if (!leaving.includes(p.spec.nodeName))
      await c.delete(`/api/v1/namespaces/${ns}/pods/${p.metadata.name}`, { gracePeriodSeconds: '0' });
  for (const node of leaving) {
    if (!ready(node) || pods.some((p) => p.spec.nodeName === node)) continue;
    const name = `${tpName}-leave-${node}`;
    await c.create(`/api/v1/namespaces/${ns}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: ds.spec.template.metadata.labels },
      spec: { ...ds.spec.template.spec, nodeName: node },
    });
    await c.mergePatch(`/api/v1/namespaces/${ns}/pods/${name}/status`, {
      status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
    });
  }
  return leaving;
}
