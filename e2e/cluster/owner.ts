// What the owner e2e (owner.test.ts, issue 20 paths 1-5 on local-real) does in every path: a
// FailClosed TransparentProxy whose sidecar is seen carrying a connection, "every node as before
// install" timed from the triggering action, a prober timing when new connections flow again, a
// connection checked to go direct, and the tidying that keeps one failed path from the next.
import assert from 'node:assert/strict';
import { fleet } from './fleet.ts';
import { admissionAnswers, type Installed } from './install.ts';
import { kubectl, waitFor } from './kube.ts';
import type { Cluster } from './provider.ts';
import { flowingSince, nodeNetState, probe, type Prober, sidecarAccepted, startProber, stateDiff } from './traffic.ts';

export const CANDIDATE = 'tpfleet.io/proxy-candidate';
const METRICS_PORT = 15190;
/** 8080: answer-and-close server; 8081: the hold server (connections stay open). Both intercepted. */
export const PORTS = { echo: 8080, hold: 8081 };
/** Node restored and traffic flowing again, from the triggering action (the janitor's pass is 30 s). */
export const BOUND_MS = 90_000;
/** How long a prober runs at most: past the longest path (3: drain, timeout, close, restore). */
const PROBER_S = 300;
export const NO_FINALIZERS = '{"metadata":{"finalizers":null}}';

export interface Figure {
  path: string;
  restoredMs: number;
  flowingMs: number;
  note?: string;
}

export interface OwnerEnv {
  c: Cluster;
  inst: Installed;
  /** Each node's state before install (nodeNetState). */
  before0: ReadonlyMap<string, string>;
  echoIp: string;
}

export function tpObject(name: string, ns: string, o: { replicas?: number; drain?: string } = {}) {
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

export function ownerKit({ c, inst, before0, echoIp }: OwnerEnv) {
  const echo = `${echoIp}:${PORTS.echo}`;
  const getTp = (name: string, ns: string) => [
    'get',
    'transparentproxy',
    name,
    '-n',
    ns,
    '--ignore-not-found',
    '-o',
    'name',
  ];
  const tpGone = (name: string, ns: string) =>
    waitFor(
      `${ns}/${name} to be gone`,
      async () => (await kubectl(c, getTp(name, ns))).trim() === '' || undefined,
      120_000,
    );
  const operatorSelector = 'app.kubernetes.io/instance=tpfleet,app.kubernetes.io/component=operator';
  /** Probers still running: a failed path's would send its connections through the next path's sidecar. */
  const probers = new Set<Prober>();

  return {
    tpGone,

    /** Applies the object, waits for its active nodes, and checks a connection from each goes through its sidecar. */
    async intercept(name: string, ns: string, o: Parameters<typeof tpObject>[2] = {}) {
      for (const p of probers) await p.remove();
      probers.clear();
      await kubectl(c, ['apply', '-f', '-'], JSON.stringify(tpObject(name, ns, o)));
      const f = fleet(c, ns, name, before0);
      const active = await f.settle(o.replicas ?? 1);
      for (const [k, node] of active.entries()) {
        const pod = (await f.podOn(node)).metadata.name;
        const n0 = await sidecarAccepted(c, ns, pod, METRICS_PORT);
        const saw = await probe(c, 'default', node, inst.nodeImage, echo, `${name}-via-${k}`);
        assert.equal(saw.dst, echo, 'the server saw the original destination');
        assert.equal(await sidecarAccepted(c, ns, pod, METRICS_PORT), n0 + 1, `${node}'s sidecar carried it`);
      }
      return { f, active };
    },

    /** Waits until every node in `nodes` (default: all) is as before install; returns ms since t0. */
    restored: (what: string, t0: number, nodes: readonly string[] = [...before0.keys()]) =>
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
      ),

    /** A prober on `node` against the echo server: a new connection every 100 ms, answered or not. */
    async prober(node: string, id: string) {
      const p = await startProber(c, 'default', node, inst.nodeImage, echo, PROBER_S, `tpfleet-e2e-flow-${id}`);
      probers.add(p);
      return p;
    },

    /** Waits for 20 answered attempts in a row (2 s); returns when the flow resumed (ms since t0). */
    async flowing(p: Prober, t0: number): Promise<number> {
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
    },

    /** A pod on `node` reaches the server with its own address: no sidecar in between (keepClientIp is off). */
    async direct(node: string, id: string) {
      const saw = await probe(c, 'default', node, inst.nodeImage, echo, id);
      assert.equal(saw.src.slice(0, saw.src.lastIndexOf(':')), saw.clientIp, `${node}: the connection went direct`);
    },

    /** A failed path leaves nothing for the next: its object goes (its finalizer by hand if that hangs). */
    async tidy(name: string, ns: string) {
      if (!(await kubectl(c, getTp(name, ns)).catch(() => '')).trim()) return;
      await kubectl(c, ['delete', 'transparentproxy', name, '-n', ns, '--wait=false', '--ignore-not-found']);
      const gone = await tpGone(name, ns).catch(() => false);
      if (!gone) await kubectl(c, ['patch', 'transparentproxy', name, '-n', ns, '--type=merge', '-p', NO_FINALIZERS]);
    },

    /** Scales the operator Deployment; at 0 waits for its pods to go, otherwise for it and its webhook to answer. */
    async scaleOperator(replicas: number) {
      const ns = inst.namespace;
      const [deploy] = (await kubectl(c, ['get', 'deploy', '-n', ns, '-l', operatorSelector, '-o', 'name']))
        .trim()
        .split('\n');
      await kubectl(c, ['scale', deploy!, '-n', ns, `--replicas=${replicas}`]);
      if (replicas > 0) {
        await kubectl(c, ['rollout', 'status', deploy!, '-n', ns, '--timeout=180s']);
        await admissionAnswers(c, inst.fleetNamespace);
        return;
      }
      await waitFor(
        'the operator pods to be gone',
        async () =>
          (await kubectl(c, ['get', 'pods', '-n', ns, '-l', operatorSelector, '-o', 'name'])).trim() === '' ||
          undefined,
        120_000,
      );
    },
  };
}

/** Keeps the figure for the summary and asserts both bounds. */
export function record(figures: Figure[], f: Figure): void {
  figures.push(f);
  assert.ok(f.restoredMs <= BOUND_MS, `${f.path}: node restored after ${f.restoredMs} ms (bound ${BOUND_MS})`);
  assert.ok(f.flowingMs <= BOUND_MS, `${f.path}: traffic flowing after ${f.flowingMs} ms (bound ${BOUND_MS})`);
}
