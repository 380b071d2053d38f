// The cluster e2e case for the interception readiness taint (ADR 0019), on any provider: the taint
// comes back when the active node's proxy pod is deleted, a workload pod created meanwhile waits
// (Unschedulable) for as long as no proxy pod is Ready, and runs once the taint is lifted. Prints
// the latencies it measured (docs/operator.md quotes them).
//
// A DaemonSet replaces a deleted pod at once (maxSurge) and the new pod can be Ready within seconds
// (0.3 s on kwok), which lifts the taint before a workload pod created after the deletion reaches
// the scheduler: the first version of this case failed exactly so. The replacement is therefore
// held back by a ValidatingAdmissionPolicy while the workload pod is checked, as when a proxy pod
// cannot start; a plain replacement follows, measured only.
import assert from 'node:assert/strict';
import { INTERCEPTION_TAINT } from '../../api/defaults.ts';
import { kubectl, kubectlJson, waitFor, watchLines } from './kube.ts';
import type { Cluster } from './provider.ts';

export interface TaintCase {
  fleetNamespace: string;
  /** The TransparentProxy's name (its proxy pods carry it as app.kubernetes.io/instance). */
  tp: string;
  /** The active node, whose one proxy pod is Ready. */
  node: string;
  /** An image present on the nodes, for the workload pod. */
  image: string;
}

type Stamped = { at: number; line: string };
const HOLD = 'tpfleet-e2e-hold-proxy-pods';
const HOLD_MESSAGE = 'held back by the e2e test (readiness taint)';
const ours = (l: Stamped) => l.line.includes(INTERCEPTION_TAINT);
/** A pod watch line (name|deletionTimestamp|Ready): a Ready pod not being deleted, none of `not`. */
const readyOther = (l: Stamped, not: string[]) => {
  const [name, deleting, ready] = l.line.split('|');
  return !not.includes(name!) && !deleting && ready === 'True';
};

/** The proxy pods' own labels (the pod template's; leave pods are named tpfleet-leave). */
const proxyPodLabels = (tp: string) => ({ 'app.kubernetes.io/name': 'tpfleet', 'app.kubernetes.io/instance': tp });

/** A ValidatingAdmissionPolicy and its binding refusing to create the fleet's proxy pods. */
function holdObjects(o: TaintCase): string {
  const items = [
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: HOLD },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: {
          resourceRules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'] }],
        },
        validations: [{ expression: 'false', message: HOLD_MESSAGE }],
      },
    },
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicyBinding',
      metadata: { name: HOLD },
      spec: {
        policyName: HOLD,
        validationActions: ['Deny'],
        matchResources: {
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': o.fleetNamespace } },
          objectSelector: { matchLabels: proxyPodLabels(o.tp) },
        },
      },
    },
  ];
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}

/** Applies the hold and waits until the API server enforces it (a server-side dry run is refused). */
async function hold(c: Cluster, o: TaintCase): Promise<void> {
  await kubectl(c, ['apply', '-f', '-'], holdObjects(o));
  const probe = JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'hold-probe', namespace: o.fleetNamespace, labels: proxyPodLabels(o.tp) },
    spec: { containers: [{ name: 'x', image: o.image }] },
  });
  await waitFor(
    'the hold policy in force (a matching pod refused on a server-side dry run)',
    async () => {
      try {
        await kubectl(c, ['create', '--dry-run=server', '-f', '-'], probe);
      } catch (e) {
        if (String(e).includes(HOLD_MESSAGE)) return true;
        throw e;
      }
      throw new Error('a matching pod was still admitted');
    },
    30_000,
  );
}

/** 'waiting' when the workload pod is Unschedulable on a node whose only taint is ours; else what it is. */
async function workloadVerdict(c: Cluster, o: TaintCase): Promise<string> {
  const w = await kubectlJson(c, ['get', 'pod', '-n', 'default', 'taint-wait']);
  // Scheduled anyway: reported at once, not waited out (a later poll cannot undo it).
  if (w.spec.nodeName) return `scheduled on ${w.spec.nodeName}`;
  // The scheduler names no taint key ("had untolerated taint(s)", Kubernetes 1.37): the node's own
  // taints say that ours is the one.
  const refused = w.status?.conditions?.some(
    (x: { type: string; status: string; reason?: string; message?: string }) =>
      x.type === 'PodScheduled' &&
      x.status === 'False' &&
      x.reason === 'Unschedulable' &&
      /untolerated taint/.test(x.message ?? ''),
  );
  if (!refused) throw new Error(`not yet refused: ${JSON.stringify(w.status)}`);
  const keys = ((await kubectlJson(c, ['get', 'node', o.node])).spec?.taints ?? []).map((x: { key: string }) => x.key);
  return keys.join() === INTERCEPTION_TAINT ? 'waiting' : `refused, the node's taints being ${keys}`;
}

type Watch = Awaited<ReturnType<typeof watchLines>>;
/** A probe for waitFor: the first line of `w` that arrived at or after `t` and satisfies `pred`. */
const after = (w: Watch, t: number, pred: (l: Stamped) => boolean) => async () =>
  w.stamped().find((l) => l.at >= t && pred(l));

/** Runs the case; `oldPod` is the node's Ready proxy pod. Returns the line of figures to print. */
export async function readinessTaintCase(c: Cluster, o: TaintCase, oldPod: string): Promise<string> {
  const tainted = async () =>
    ((await kubectlJson(c, ['get', 'node', o.node])).spec?.taints ?? []).some(
      (x: { key: string }) => x.key === INTERCEPTION_TAINT,
    );
  await waitFor('the taint lifted on the active node', async () => !(await tainted()) || undefined, 60_000);
  await hold(c, o);
  // The node's taint changes and its proxy pods' readiness, stamped on arrival in this one process,
  // so differences between the two watches hold to a few ms.
  const taint = 'jsonpath={.metadata.resourceVersion}|{.spec.taints}{"\\n"}';
  const ready =
    'jsonpath={.metadata.name}|{.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}{"\\n"}';
  const selector = `app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=${o.tp}`;
  const taints = await watchLines(c, ['get', 'node', o.node, '-o', taint]);
  const pods = await watchLines(c, [
    'get',
    'pods',
    '-n',
    o.fleetNamespace,
    '-l',
    selector,
    '--field-selector',
    `spec.nodeName=${o.node}`,
    '-o',
    ready,
  ]);
  try {
    await waitFor(
      'both watches listing',
      async () => (taints.lines().length && pods.lines().length) || undefined,
      30_000,
      100,
    );
    const held = await heldReplacement(c, o, oldPod, taints, pods);
    await waitFor('the taint lifted after the held replacement', async () => !(await tainted()) || undefined);
    const plain = await plainReplacement(c, o, [oldPod, held.newPod], taints, pods);
    await waitFor('the taint lifted after the plain replacement', async () => !(await tainted()) || undefined);
    return `readiness taint on ${c.provider}: ${held.figures}; ${plain}`;
  } finally {
    taints.stop();
    pods.stop();
    await kubectl(c, ['delete', '-f', '-', '--ignore-not-found'], holdObjects(o));
    await kubectl(c, ['delete', 'pod', '-n', 'default', 'taint-wait', '--wait=false', '--ignore-not-found']);
  }
}

/**
 * The proxy pod deleted while the hold is in force: the taint comes back, the workload pod waits;
 * the hold released, a new proxy pod turns Ready, the taint goes and the workload pod runs.
 */
async function heldReplacement(c: Cluster, o: TaintCase, oldPod: string, taints: Watch, pods: Watch) {
  const t0 = Date.now();
  await kubectl(c, ['delete', 'pod', '-n', o.fleetNamespace, oldPod, '--wait=false']);
  const back = await waitFor('the taint back once the proxy pod is deleted', after(taints, t0, ours), 60_000, 100);
  await kubectl(c, ['apply', '-f', '-'], JSON.stringify(workloadPod(o)));
  const verdict = await waitFor('the workload pod Unschedulable while tainted', () => workloadVerdict(c, o), 30_000);
  assert.equal(verdict, 'waiting', `the workload pod while the node is tainted: ${verdict}`);
  await new Promise((r) => setTimeout(r, 5000));
  assert.equal(await workloadVerdict(c, o), 'waiting', 'still waiting 5 s later: no proxy pod is Ready');
  await kubectl(c, ['delete', '-f', '-', '--wait=true'], holdObjects(o));
  const ready = await waitFor(
    'a new Ready proxy pod',
    after(pods, 0, (l) => readyOther(l, [oldPod])),
    240_000,
    200,
  );
  const lifted = await waitFor(
    'the taint lifted',
    after(taints, back.at, (l) => !ours(l)),
    60_000,
    100,
  );
  assert.ok(
    lifted.at >= ready.at - 500,
    `the taint was lifted ${ready.at - lifted.at} ms before the new pod was Ready`,
  );
  const onNode = async () => (await kubectlJson(c, ['get', 'pod', '-n', 'default', 'taint-wait'])).spec.nodeName;
  await waitFor(
    'the workload pod scheduled once the taint is lifted',
    async () => (await onNode()) === o.node || undefined,
  );
  return {
    newPod: ready.line.split('|')[0]!,
    figures: `back ${back.at - t0} ms after the proxy pod was deleted; lifted ${lifted.at - ready.at} ms after the new proxy pod turned Ready`,
  };
}

/** A plain replacement, nothing held back: how long a proxy restart keeps new workloads off. */
async function plainReplacement(c: Cluster, o: TaintCase, before: string[], taints: Watch, pods: Watch) {
  const t1 = Date.now();
  await kubectl(c, ['delete', 'pod', '-n', o.fleetNamespace, before.at(-1)!, '--wait=false']);
  const ready = await waitFor(
    'a third Ready proxy pod',
    after(pods, t1, (l) => readyOther(l, before)),
    120_000,
    200,
  );
  // The taint came back before the replacement was Ready, unless the operator saw the deletion and
  // the Ready replacement in one reconcile (possible on kwok): then the node was never tainted.
  const on = await after(taints, t1, ours)();
  const off =
    on &&
    (await waitFor(
      'the taint lifted',
      after(taints, on.at, (l) => !ours(l)),
      60_000,
      100,
    ));
  return (
    `a plain replacement (nothing held) was Ready ${ready.at - t1} ms after the deletion, the node ` +
    (on && off ? `tainted from +${on.at - t1} ms to +${off.at - t1} ms` : 'never tainted')
  );
}

/** A pod pinned to the node, tolerating nothing: it may start only once the taint is gone. */
function workloadPod(o: TaintCase) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'taint-wait', namespace: 'default' },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': o.node },
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'main', image: o.image, imagePullPolicy: 'Never', command: ['sleep', 'infinity'] }],
    },
  };
}
