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
import { fleet } from './fleet.ts';
import { admissionAnswers, installChart, type Installed } from './install.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { type Load, startHoldServer, startLoad } from './load.ts';
import { localRealProvider, type LocalRealCluster } from './local-real.ts';
import {
  flowingSince,
  nodeNetState,
  probe,
  type Prober,
  sidecarAccepted,
  startProber,
  startServer,
  stateDiff,
} from './traffic.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');
const CANDIDATE = 'tpfleet.io/proxy-candidate';
const METRICS_PORT = 15190;
/** 8080: answer-and-close server; 8081: the hold server (connections stay open). Both intercepted. */
const PORTS = { echo: 8080, hold: 8081 };
/** A namespace the installation reconciles besides the fleet namespace (tenancy.namespaces, ADR 0016): path 2 deletes it. */
const TENANT = 'tpfleet-owner-tenant';
/** Short, so path 3 reaches it while the node still drains; the chart's default is 5m. */
const CLEANUP_TIMEOUT_S = 10;
/** Node restored and traffic flowing again, from the triggering action (the janitor's pass is 30 s). */
const BOUND_MS = 90_000;
/** How long a prober runs at most: past the longest path (3: drain, timeout, close, restore). */
const PROBER_S = 300;

interface Figure {
  path: string;
  restoredMs: number;
  flowingMs: number;
  note?: string;
}

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
  const NO_FINALIZERS = '{"metadata":{"finalizers":null}}';

  before(async () => {
    const built = await buildImages(['operator', 'node']);
    const images = {
      operator: built.find((b) => b.ref.includes('operator'))!,
      node: built.find((b) => b.ref.includes('node'))!,
    };
    c = await localRealProvider.create(KIND_CONFIG);
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
  });
  after(async () => {
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    for (const f of figures)
      process.stdout.write(
        `owner e2e: ${f.path}: node restored ${s(f.restoredMs)}, traffic flowing ${s(f.flowingMs)}${f.note ? ` (${f.note})` : ''}\n`,
      );
    await c?.delete();
  });

  function tpObject(name: string, ns: string, o: { replicas?: number; drain?: string } = {}) {
    return {
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name, namespace: ns },
      spec: {
        nodeSelector: { [CANDIDATE]: 'true' },
        replicas: o.replicas ?? 1,
        interception: { ports: [{ port: PORTS.echo, endPort: PORTS.hold }], failurePolicy: 'FailClosed' },
        proxy: { metricsPort: METRICS_PORT, timeouts: { drain: o.drain ?? '2s' } },
      },
    };
  }

  /** Applies the object, waits for its active nodes, and checks a connection from each goes through its sidecar. */
  async function intercept(name: string, ns: string, o: Parameters<typeof tpObject>[2] = {}) {
    await kubectl(c, ['apply', '-f', '-'], JSON.stringify(tpObject(name, ns, o)));
    const f = fleet(c, ns, name, before0);
    const active = await f.settle(o.replicas ?? 1);
    for (const [k, node] of active.entries()) {
      const pod = (await f.podOn(node)).metadata.name;
      const n0 = await sidecarAccepted(c, ns, pod, METRICS_PORT);
      const saw = await probe(c, 'default', node, inst.nodeImage, `${echoIp}:${PORTS.echo}`, `${name}-via-${k}`);
      assert.equal(saw.dst, `${echoIp}:${PORTS.echo}`, 'the server saw the original destination');
      assert.equal(await sidecarAccepted(c, ns, pod, METRICS_PORT), n0 + 1, `${node}'s sidecar carried it`);
    }
    return { f, active };
  }

  /** Every node in `nodes` (default all) is as before install; returns ms since t0. Bounded by the caller's assert. */
  const restored = (what: string, t0: number, nodes: readonly string[] = [...before0.keys()]) =>
    waitFor(
      `${what}: ${nodes.join(', ')} as before install`,
      async () => {
        for (const n of nodes) {
          const now = await nodeNetState(c, n);
          const was = before0.get(n)!;
          if (now !== was) throw new Error(`${n} still differs:\n${stateDiff(was, now) || '(line order)'}`);
        }
        return Date.now() - t0;
      },
      BOUND_MS + 60_000,
      1000,
    );

  /** A prober on `node` against the echo server: new connections every 100 ms, each answered or not. */
  const prober = (node: string, id: string) =>
    startProber(c, 'default', node, inst.nodeImage, `${echoIp}:${PORTS.echo}`, PROBER_S, `tpfleet-e2e-flow-${id}`);

  /** Waits for 20 answered attempts in a row (2 s) and returns when the flow resumed (ms since t0). */
  async function flowing(p: Prober, t0: number): Promise<number> {
    const ms = await waitFor(
      `${p.name}: traffic flowing again`,
      async () => {
        const r = await p.sofar();
        const since = flowingSince(r, t0);
        const okAfter = r.filter((x) => x.at >= t0 + (since ?? Infinity)).length;
        if (since === undefined || okAfter < 20)
          throw new Error(`${r.length} attempts, last ${JSON.stringify(r.at(-1))}`);
        return since;
      },
      BOUND_MS + 60_000,
      1000,
    );
    await p.remove();
    return ms;
  }

  /** A pod on `node` reaches the server with its own address: no sidecar in between (keepClientIp is off). */
  async function direct(node: string, id: string) {
    const saw = await probe(c, 'default', node, inst.nodeImage, `${echoIp}:${PORTS.echo}`, id);
    assert.equal(saw.src.slice(0, saw.src.lastIndexOf(':')), saw.clientIp, `${node}: the connection went direct`);
  }

  function record(f: Figure) {
    figures.push(f);
    assert.ok(f.restoredMs <= BOUND_MS, `${f.path}: node restored after ${f.restoredMs} ms (bound ${BOUND_MS})`);
    assert.ok(f.flowingMs <= BOUND_MS, `${f.path}: traffic flowing after ${f.flowingMs} ms (bound ${BOUND_MS})`);
  }

  /** A failed path leaves nothing for the next: its object goes (finalizer removed by hand if it hangs). */
  async function tidy(name: string, ns: string) {
    const get = ['get', 'transparentproxy', name, '-n', ns, '--ignore-not-found', '-o', 'name'];
    if (!(await kubectl(c, get).catch(() => '')).trim()) return;
    await kubectl(c, ['delete', 'transparentproxy', name, '-n', ns, '--wait=false', '--ignore-not-found']);
    const gone = await waitFor(`${name} gone`, async () => !(await kubectl(c, get)).trim() || undefined, 90_000).catch(
      () => false,
    );
    if (!gone) await kubectl(c, ['patch', 'transparentproxy', name, '-n', ns, '--type=merge', '-p', NO_FINALIZERS]);
  }
  const tpGone = (name: string, ns: string) =>
    waitFor(
      `${ns}/${name} to be gone`,
      async () => {
        const out = await kubectl(c, ['get', 'transparentproxy', name, '-n', ns, '--ignore-not-found', '-o', 'name']);
        return out.trim() === '' || undefined;
      },
      120_000,
    );

  const operatorSelector = 'app.kubernetes.io/instance=tpfleet,app.kubernetes.io/component=operator';
  async function scaleOperator(replicas: number) {
    const [deploy] = (await kubectl(c, ['get', 'deploy', '-n', inst.namespace, '-l', operatorSelector, '-o', 'name']))
      .trim()
      .split('\n');
    await kubectl(c, ['scale', deploy!, '-n', inst.namespace, `--replicas=${replicas}`]);
    if (replicas > 0) {
      await kubectl(c, ['rollout', 'status', deploy!, '-n', inst.namespace, '--timeout=180s']);
      await admissionAnswers(c, fleetNs());
      return;
    }
    await waitFor(
      'the operator pods to be gone',
      async () =>
        (await kubectl(c, ['get', 'pods', '-n', inst.namespace, '-l', operatorSelector, '-o', 'name'])).trim() === '' ||
        undefined,
      120_000,
    );
  }

  it('path 1: the operator scaled to 0, the TransparentProxy deleted and its finalizer removed by hand: the janitor restores the node', async () => {
    const name = 'p1';
    try {
      const {
        active: [node],
      } = await intercept(name, fleetNs());
      const p = await prober(node!, name);
      await scaleOperator(0);
      const t0 = Date.now();
      await kubectl(c, ['delete', 'transparentproxy', name, '-n', fleetNs(), '--wait=false']);
      await kubectl(c, ['patch', 'transparentproxy', name, '-n', fleetNs(), '--type=merge', '-p', NO_FINALIZERS]);
      await tpGone(name, fleetNs());
      const restoredMs = await restored('path 1', t0);
      const flowingMs = await flowing(p, t0);
      await direct(node!, `${name}-direct`);
      record({ path: 'path 1 (operator at 0, finalizer removed)', restoredMs, flowingMs });
    } finally {
      await scaleOperator(2);
      await tidy(name, fleetNs());
    }
  });

  it('path 3: --cleanup-timeout expires while the node drains: the finalizer stays, Degraded CleanupTimedOut names the node; restored once the drain ends', async () => {
    const name = 'p3';
    let load: Load | undefined;
    try {
      const {
        f,
        active: [node],
      } = await intercept(name, fleetNs(), { drain: '10m' });
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
      const p = await prober(node!, name);
      const t0 = Date.now();
      await kubectl(c, ['delete', 'transparentproxy', name, '-n', fleetNs(), '--wait=false']);
      const degraded = await waitFor(
        'Degraded=True CleanupTimedOut naming the node',
        async () => {
          const d = (await f.tp()).status?.conditions?.find((x: { type: string }) => x.type === 'Degraded');
          if (d?.reason !== 'CleanupTimedOut' || d.status !== 'True' || !String(d.message).includes(node!))
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
      const restoredMs = await restored('path 3', tClose);
      const flowingMs = await flowing(p, tClose);
      await tpGone(name, fleetNs());
      await direct(node!, `${name}-direct`);
      record({
        path: 'path 3 (cleanup timeout during drain; from the connections closing)',
        restoredMs,
        flowingMs,
        note: `Degraded CleanupTimedOut ${degraded.ms} ms after the delete: "${degraded.message}"`,
      });
    } finally {
      await load?.close();
      await tidy(name, fleetNs());
    }
  });

  it('path 4: drain 1h and a scale from 2 to 1: the leave pod runs, the node goes from leaving to gone once its connections close, restored', async () => {
    const name = 'p4';
    const loads = new Map<string, Load>();
    try {
      const { f, active } = await intercept(name, fleetNs(), { replicas: 2, drain: '1h' });
      for (const [k, node] of active.entries()) {
        const l = await startLoad(
          c,
          'default',
          node,
          inst.nodeImage,
          `${holdIp}:${PORTS.hold}`,
          2,
          `tpfleet-e2e-load-${name}-${k}`,
        );
        loads.set(node, l);
        await l.allOpen();
      }
      const probers = new Map<string, Prober>();
      for (const [k, node] of active.entries()) probers.set(node, await prober(node, `${name}-${k}`));
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
      const leavePod = async () =>
        (
          await kubectlJson(c, [
            'get',
            'pods',
            '-n',
            fleetNs(),
            '-l',
            `app.kubernetes.io/name=tpfleet-leave,app.kubernetes.io/instance=${name}`,
            '--field-selector',
            `spec.nodeName=${leaving}`,
          ])
        ).items[0];
      // Its agent waits for the drain (the connections stay open): running, never restarted, the label kept.
      await waitFor(
        'the leave pod to run its agent',
        async () => leavePod().then((p) => p?.status?.initContainerStatuses?.[0]?.state?.running || undefined),
        120_000,
      );
      for (let k = 0; k < 10; k++) {
        const s = (await leavePod())?.status?.initContainerStatuses?.[0];
        assert.ok(s?.state?.running && s.restartCount === 0, `the leave pod's agent runs: ${JSON.stringify(s)}`);
        assert.equal(await label(leaving), 'leaving', `${leaving} stays leaving while its connections are open`);
        await new Promise((r) => setTimeout(r, 1000));
      }
      const tClose = Date.now();
      await loads.get(leaving)!.close();
      loads.delete(leaving);
      const goneMs = await waitFor(
        `${leaving}'s label to go`,
        async () => ((await label(leaving)) === undefined ? Date.now() - tClose : undefined),
        BOUND_MS,
      );
      const restoredMs = await restored('path 4', tClose, [leaving]);
      const flowingMs = await flowing(probers.get(leaving)!, tClose);
      await direct(leaving, `${name}-direct`);
      const stays = active.find((n) => n !== leaving)!;
      assert.equal(await label(stays), 'true', `${stays} stays active`);
      record({
        path: 'path 4 (drain 1h, scale 2 to 1; from the connections closing)',
        restoredMs,
        flowingMs,
        note: `label gone ${goneMs} ms after the close, ${((tClose - t0) / 1000).toFixed(1)} s after the scale`,
      });
      for (const p of probers.values()) await p.remove();
      await f.settle(1);
      await loads.get(stays)!.close();
      loads.delete(stays);
      await tidy(name, fleetNs());
      await restored('path 4: after the deletion', Date.now());
    } finally {
      for (const l of loads.values()) await l.close();
      await tidy(name, fleetNs());
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
        } = await intercept(id, ns);
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
        const p = await prober(node!, id);
        const t0 = Date.now();
        await kubectl(c, ['delete', 'transparentproxy', id, '-n', ns, '--wait=false']);
        const restoredMs = await restored(`path 5 (${id})`, t0);
        const flowingMs = await flowing(p, t0);
        await tpGone(id, ns);
        // A cleanup that found the copy removes it with the state (executor.ts removeState).
        await c.nodeExec!(node!, ['test', '!', '-e', copy]);
        await direct(node!, `${id}-direct`);
        record({ path: `path 5 (${lost} lost)`, restoredMs, flowingMs });
      } finally {
        await tidy(id, ns);
      }
    });
  }

  // Last: it deletes a namespace the operator watches (its RoleBinding goes too).
  it("path 2: the TransparentProxy's namespace deleted: node restored, traffic flows", async () => {
    const name = 'p2';
    const {
      active: [node],
    } = await intercept(name, TENANT);
    const p = await prober(node!, name);
    const t0 = Date.now();
    await kubectl(c, ['delete', 'namespace', TENANT, '--wait=false']);
    const restoredMs = await restored('path 2', t0);
    const flowingMs = await flowing(p, t0);
    await direct(node!, `${name}-direct`);
    const nsGone = await waitFor(
      `namespace ${TENANT} to be gone`,
      async () =>
        (await kubectl(c, ['get', 'namespace', TENANT, '--ignore-not-found', '-o', 'name'])).trim() === ''
          ? Date.now() - t0
          : undefined,
      120_000,
    );
    record({ path: 'path 2 (namespace deleted)', restoredMs, flowingMs, note: `namespace gone after ${nsGone} ms` });
  });
});
