// Issue 20 on real nodes (local-real: real kubelets, containerd, rules): nothing a TransparentProxy
// installs on a node outlives it (ADR 0015). Each path starts with a FailClosed TransparentProxy
// intercepting on a candidate node and traffic through its sidecar, then removes the owner the way
// the issue measured it stranding rules:
//   1. the operator scaled to 0, the object deleted and its finalizer removed by hand;
//   2. the object's namespace deleted;
//   3. --cleanup-timeout expiring while the node still drains (an open connection);
//   4. drain: 1h and a scale from 2 to 1 (the leave pod must run, not crash-loop);
//   5. state.json lost before the deletion: restored from the /var/lib copy, then from the owner
//      markers with both lost.
// Each ends with every node byte-identical to before install (rules of every backend, ip rules,
// routes, sysctls) and new connections from a pod on the node reaching the server directly, both
// within BOUND_MS of the triggering action (a prober on the node measures the second).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildImages } from '../../images/images.ts';
import { activeLabelKey, FINALIZER } from '../../operator/render/names.ts';
import { installChart, type Installed } from './install.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { type Load, startHoldServer, startLoad } from './load.ts';
import { localRealProvider, type LocalRealCluster } from './local-real.ts';
import { BOUND_MS, CANDIDATE, type Figure, NO_FINALIZERS, ownerKit, PORTS, record } from './owner.ts';
import { nodeNetState, type Prober, startServer } from './traffic.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');
/** A namespace the installation reconciles besides the fleet namespace (tenancy.namespaces, ADR 0016): path 2 deletes it. */
const TENANT = 'tpfleet-owner-tenant';
/** Short, so path 3 reaches it while the node still drains; the chart's default is 5m. */
const CLEANUP_TIMEOUT_S = 10;

describe('nothing outlives its owner: issue 20 paths 1-5 on real nodes (local-real)', {
  concurrency: false,
}, async () => {
  const root = process.getuid?.() === 0;
  const reason = root ? await localRealProvider.unavailable() : 'not root';
  if (reason) {
    if (root) it('runs on local-real', () => assert.fail(`owner e2e: local-real cannot run: ${reason}`));
    else it('runs on local-real', (t) => t.skip(`owner e2e skipped: ${reason}`));
    return;
  }
  let c: LocalRealCluster, inst: Installed;
  let candidates: string[] = [],
    workload = '',
    echoIp = '',
    holdIp = '';
  const before0 = new Map<string, string>();
  const figures: Figure[] = [];
  const fleetNs = () => inst.fleetNamespace;
  let k: ReturnType<typeof ownerKit>;

  before(async () => {
    const built = await buildImages(['operator', 'node']);
    const images = {
      operator: built.find((b) => b.ref.includes('operator'))!,
      node: built.find((b) => b.ref.includes('node'))!,
    };
    // No test metrics adapter: nothing here reads custom metrics (it is a 10-minute cold Go build).
    c = await localRealProvider.create(KIND_CONFIG, { testMetricsAdapter: false });
    candidates = c.nodes
      .filter((n) => n.labels[CANDIDATE] === 'true')
      .map((n) => n.name)
      .sort();
    workload = c.nodes.find((n) => n.role === 'worker' && n.labels[CANDIDATE] !== 'true')!.name;
    for (const n of candidates) before0.set(n, await nodeNetState(c, n));
    await c.loadImages([images.operator, images.node]);
    // The chart's RoleBinding for a reconciled namespace needs the namespace to exist.
    await kubectl(c, ['create', 'namespace', TENANT]);
    await kubectl(c, ['label', 'namespace', TENANT, 'pod-security.kubernetes.io/enforce=privileged']);
    inst = await installChart(c, images, {
      operator: { cleanupTimeout: `${CLEANUP_TIMEOUT_S}s` },
      tenancy: { namespaces: [TENANT] },
    });
    echoIp = await startServer(c, 'default', workload, inst.nodeImage);
    holdIp = await startHoldServer(c, 'default', workload, inst.nodeImage, PORTS.hold);
    // The workload node never intercepts, but runs the janitor and the servers: compared from here on.
    before0.set(workload, await nodeNetState(c, workload));
    k = ownerKit({ c, inst, before0, echoIp });
  });
  after(async () => {
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    for (const f of figures)
      process.stdout.write(
        `owner e2e: ${f.path}: node restored ${s(f.restoredMs)}, traffic flowing ${s(f.flowingMs)}${f.note ? ` (${f.note})` : ''}\n`,
      );
    await c?.delete();
  });

  it('path 1: the operator scaled to 0, the TransparentProxy deleted and its finalizer removed by hand: the janitor restores the node', async () => {
    const name = 'p1';
    try {
      const {
        active: [node],
      } = await k.intercept(name, fleetNs());
      const p = await k.prober(node!, name);
      await k.scaleOperator(0);
      const t0 = Date.now();
      await kubectl(c, ['delete', 'transparentproxy', name, '-n', fleetNs(), '--wait=false']);
      await kubectl(c, ['patch', 'transparentproxy', name, '-n', fleetNs(), '--type=merge', '-p', NO_FINALIZERS]);
      await k.tpGone(name, fleetNs());
      const restoredMs = await k.restored('path 1', t0);
      const flowingMs = await k.flowing(p, t0);
      await k.direct(node!, `${name}-direct`);
      record(figures, { path: 'path 1 (operator at 0, finalizer removed)', restoredMs, flowingMs });
    } finally {
      await k.scaleOperator(2);
      await k.tidy(name, fleetNs());
    }
  });

  it('path 3: --cleanup-timeout expires while the node drains: the finalizer stays, Degraded CleanupTimedOut names the node; restored once the drain ends', async () => {
    const name = 'p3';
    let load: Load | undefined;
    try {
      const {
        f,
        active: [node],
      } = await k.intercept(name, fleetNs(), { drain: '10m' });
      load = await startLoad(
        c,
        'default',
        node!,
        inst.nodeImage,
        `${holdIp}:${PORTS.hold}`,
        3,
        `tpfleet-e2e-load-${name}`,
      );
      await load.allOpen();
      const p = await k.prober(node!, name);
      const t0 = Date.now();
      await kubectl(c, ['delete', 'transparentproxy', name, '-n', fleetNs(), '--wait=false']);
      const degraded = await waitFor(
        'Degraded=True CleanupTimedOut naming the node',
        async () => {
          const d = (await f.tp()).status?.conditions?.find((x: { type: string }) => x.type === 'Degraded');
          // "... to remove their rules (n1, n2); the finalizer stays ...": the node by its exact name.
          const named = /rules \(([^)]*)\)/.exec(String(d?.message))?.[1]?.split(', ') ?? [];
          if (d?.reason !== 'CleanupTimedOut' || d.status !== 'True' || !named.includes(node!))
            throw new Error(JSON.stringify(d));
          return { ms: Date.now() - t0, message: String(d.message) };
        },
        CLEANUP_TIMEOUT_S * 1000 + 60_000,
      );
      const obj = await f.tp();
      assert.ok(obj.metadata.finalizers?.includes(FINALIZER), 'the finalizer stays past the timeout');
      assert.notEqual(
        await nodeNetState(c, node!),
        before0.get(node!),
        `${node} still holds its rules while it drains`,
      );
      const tClose = Date.now();
      await load.close();
      load = undefined;
      const restoredMs = await k.restored('path 3', tClose);
      const flowingMs = await k.flowing(p, tClose);
      await k.tpGone(name, fleetNs());
      await k.direct(node!, `${name}-direct`);
      record(figures, {
        path: 'path 3 (cleanup timeout during drain; from the connections closing)',
        restoredMs,
        flowingMs,
        note: `Degraded CleanupTimedOut ${degraded.ms} ms after the delete: "${degraded.message}"`,
      });
    } finally {
      await load?.close();
      await k.tidy(name, fleetNs());
    }
  });

  /**
   * The leave pod on `node` runs its agent, which waits for the drain (the connections stay open):
   * running, never restarted (issue 20 path 4 measured Init:CrashLoopBackOff), the label kept, for 10 s.
   */
  async function leaveRuns(name: string, node: string, label: (n: string) => Promise<string | undefined>) {
    const agent = async () =>
      (
        await kubectlJson(c, [
          'get',
          'pods',
          '-n',
          fleetNs(),
          '-l',
          `app.kubernetes.io/name=tpfleet-leave,app.kubernetes.io/instance=${name}`,
          '--field-selector',
          `spec.nodeName=${node}`,
        ])
      ).items[0]?.status?.initContainerStatuses?.[0];
    await waitFor('the leave pod to run its agent', async () => (await agent())?.state?.running || undefined, 120_000);
    for (let i = 0; i < 10; i++) {
      const s = await agent();
      assert.ok(s?.state?.running && s.restartCount === 0, `the leave pod's agent runs: ${JSON.stringify(s)}`);
      assert.equal(await label(node), 'leaving', `${node} stays leaving while its connections are open`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  it('path 4: drain 1h and a scale from 2 to 1: the leave pod runs, the node goes from leaving to gone once its connections close, restored', async () => {
    const name = 'p4';
    const loads = new Map<string, Load>();
    try {
      const { f, active } = await k.intercept(name, fleetNs(), { replicas: 2, drain: '1h' });
      for (const [i, node] of active.entries()) {
        const l = await startLoad(
          c,
          'default',
          node,
          inst.nodeImage,
          `${holdIp}:${PORTS.hold}`,
          2,
          `tpfleet-e2e-load-${name}-${i}`,
        );
        loads.set(node, l);
        await l.allOpen();
      }
      const probers = new Map<string, Prober>();
      for (const [i, node] of active.entries()) probers.set(node, await k.prober(node, `${name}-${i}`));
      const key = activeLabelKey(fleetNs(), name);
      const label = async (node: string) =>
        (await kubectlJson(c, ['get', 'node', node])).metadata.labels?.[key] as string | undefined;
      const t0 = Date.now();
      await kubectl(c, ['scale', 'transparentproxy', name, '-n', fleetNs(), '--replicas=1']);
      const leaving = await waitFor(
        'one node labelled leaving',
        async () => {
          for (const n of active) if ((await label(n)) === 'leaving') return n;
          return undefined;
        },
        60_000,
      );
      await leaveRuns(name, leaving, label);
      const tClose = Date.now();
      await loads.get(leaving)!.close();
      loads.delete(leaving);
      const goneMs = await waitFor(
        `${leaving}'s label to go`,
        async () => ((await label(leaving)) === undefined ? Date.now() - tClose : undefined),
        BOUND_MS,
      );
      const restoredMs = await k.restored('path 4', tClose, [leaving]);
      const flowingMs = await k.flowing(probers.get(leaving)!, tClose);
      await k.direct(leaving, `${name}-direct`);
      const stays = active.find((n) => n !== leaving)!;
      assert.equal(await label(stays), 'true', `${stays} stays active`);
      record(figures, {
        path: 'path 4 (drain 1h, scale 2 to 1; from the connections closing)',
        restoredMs,
        flowingMs,
        note: `label gone ${goneMs} ms after the close, ${((tClose - t0) / 1000).toFixed(1)} s after the scale`,
      });
      for (const p of probers.values()) await p.remove();
      await f.settle(1);
      await loads.get(stays)!.close();
      loads.delete(stays);
      await k.tidy(name, fleetNs());
      await k.restored('path 4: after the deletion', Date.now());
    } finally {
      for (const l of loads.values()) await l.close();
      await k.tidy(name, fleetNs());
    }
  });

  for (const [id, lost, fromCopy] of [
    ['p5a', 'state.json in /run', true],
    ['p5b', 'state.json in /run and the copy in /var/lib', false],
  ] as const) {
    it(`path 5: ${lost} deleted before the TransparentProxy: restored from ${fromCopy ? 'the copy' : 'the owner markers'}`, async () => {
      const ns = fleetNs();
      try {
        const {
          active: [node],
        } = await k.intercept(id, ns);
        const run = `/run/tpfleet/${ns}.${id}/state.json`,
          copy = `/var/lib/tpfleet/${ns}.${id}/state.json`;
        await c.nodeExec!(node!, ['test', '-f', copy]);
        for (const other of candidates.filter((n) => n !== node))
          assert.doesNotMatch(
            await c.nodeExec!(other, ['find', '/var/lib/tpfleet', '-name', 'state.json']),
            new RegExp(`${ns}\\.${id}/`),
            `${other} does not see ${node}'s copy`,
          );
        await c.nodeExec!(node!, ['rm', run, ...(fromCopy ? [] : [copy])]);
        await c.nodeExec!(node!, ['test', '!', '-e', run]);
        const p = await k.prober(node!, id);
        const t0 = Date.now();
        await kubectl(c, ['delete', 'transparentproxy', id, '-n', ns, '--wait=false']);
        const restoredMs = await k.restored(`path 5 (${id})`, t0);
        const flowingMs = await k.flowing(p, t0);
        await k.tpGone(id, ns);
        // A cleanup that found the copy removes it with the state (executor.ts removeState).
        await c.nodeExec!(node!, ['test', '!', '-e', copy]);
        await k.direct(node!, `${id}-direct`);
        record(figures, { path: `path 5 (${lost} lost)`, restoredMs, flowingMs });
      } finally {
        await k.tidy(id, ns);
      }
    });
  }

  // Last: it deletes a namespace the operator watches (its RoleBinding goes too).
  it("path 2: the TransparentProxy's namespace deleted: node restored, traffic flows", async () => {
    const name = 'p2';
    const {
      active: [node],
    } = await k.intercept(name, TENANT);
    const p = await k.prober(node!, name);
    const t0 = Date.now();
    await kubectl(c, ['delete', 'namespace', TENANT, '--wait=false']);
    const restoredMs = await k.restored('path 2', t0);
    const flowingMs = await k.flowing(p, t0);
    await k.direct(node!, `${name}-direct`);
    const nsGone = await waitFor(
      `namespace ${TENANT} to be gone`,
      async () =>
        (await kubectl(c, ['get', 'namespace', TENANT, '--ignore-not-found', '-o', 'name'])).trim() === ''
          ? Date.now() - t0
          : undefined,
      120_000,
    );
    record(figures, {
      path: 'path 2 (namespace deleted)',
      restoredMs,
      flowingMs,
      note: `namespace gone after ${nsGone} ms`,
    });
  });
});
