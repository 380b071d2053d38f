// The cluster e2e suite: what a user does with tpfleet, on every provider, one after the other.
// kind (the users' path) runs on Docker, else on podman with the node image built here (ADR 0013);
// the same assertions then run on `local` (real control plane + kwok nodes), where the parts a
// simulated node cannot show (rules and traffic on a node) are guarded by capabilities, and on
// `local-real` (the workers as real kubelets + containerd in network namespaces), where the
// operator and the DaemonSet really run and client traffic crosses the active node. kind's tier
// changes the host's network and local-real's adds host routes: they never overlap, because the
// providers run in sequence and kind's delete() restores (and checks) the host before the next.
// Every provider's prerequisites are set up by scripts/bootstrap.sh as root: a provider that is
// unavailable as root is a failure, not a skip (no skipped tier); only without root is it skipped.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { parse } from 'yaml';
import { buildImages } from '../../images/images.ts';
import { INTERCEPTION_TAINT } from '../../api/defaults.ts';
import { activeLabelKey } from '../../operator/render/names.ts';
import { installChart, type Installed } from './install.ts';
import { readinessTaintCase } from './readiness-taint.ts';
import { kindProvider } from './kind.ts';
import { kubectl, kubectlJson, waitFor, watchLines } from './kube.ts';
import { localProvider } from './local.ts';
import { localRealProvider } from './local-real.ts';
import type { BuiltImage, Cluster, Provider } from './provider.ts';
import {
  connectOnce,
  longestGap,
  nodeNetState,
  nodeRuleset,
  policyDecisions,
  probe,
  sidecarAccepted,
  startProber,
  startServer,
  stateDiff,
  timeline,
  TUNED_SYSCTLS,
} from './traffic.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');
const TP = 'e2e';
const CANDIDATE = 'tpfleet.io/proxy-candidate';
const METRICS_PORT = 15190;
const DRAIN_MS = 2000;
/**
 * The documented bound (docs/operator.md, "Rollouts"): the new pod starts beside the old one, and
 * the old sidecar closes its listener only once the new one is Ready, so new connections see no
 * gap. The prober connects every 100 ms; allow a few missed slots for a loaded 2-core CI machine.
 */
const ROLLOUT_GAP_BOUND_MS = 1_000;
const root = process.getuid?.() === 0;

interface Pod {
  metadata: { name: string; annotations?: Record<string, string> };
  spec: { nodeName?: string };
  status: { conditions?: { type: string; status: string }[] };
}
const ready = (p: Pod) => p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') ?? false;

function transparentProxy(ns: string, replicas: number) {
  return {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: TP, namespace: ns },
    spec: {
      nodeSelector: { [CANDIDATE]: 'true' },
      replicas,
      interception: { ports: [{ port: 8080 }], failurePolicy: 'FailClosed' },
      proxy: { keepClientIp: true, metricsPort: METRICS_PORT, timeouts: { drain: `${DRAIN_MS / 1000}s` } },
      // Per-network-namespace sysctls, so on local-real they change the node, never the machine.
      tuning: { sysctls: { overrides: { ...TUNED_SYSCTLS } } },
    },
  };
}

// TPFLEET_E2E_PROVIDERS=local-real (comma-separated names) runs only those providers while working
// on one: --test-name-pattern does not help here, each provider's before() (cluster creation) runs
// whatever the pattern. Unset (CI, npm test): every provider.
const only = process.env.TPFLEET_E2E_PROVIDERS?.split(',').map((p) => p.trim());
const providers = [kindProvider, localProvider, localRealProvider].filter((p) => !only || only.includes(p.name));
if (only && providers.length !== only.length) throw new Error(`TPFLEET_E2E_PROVIDERS: unknown name in ${only}`);
for (const provider of providers as Provider[]) {
  describe(`cluster e2e on the ${provider.name} provider`, { concurrency: false }, async () => {
    if (!root && process.env.CI) throw new Error('the cluster e2e suite must run as root in CI');
    const reason = root ? await provider.unavailable() : 'not root';
    if (reason) {
      // One test with the reason, counted and shown as such in the report (an early return
      // registered no test at all); the suite goes on with the next provider. As root the
      // bootstrap has installed and configured what every provider needs, so a missing part there
      // fails the tier instead of hiding it behind a skip.
      if (root)
        it("runs the users' path", () =>
          assert.fail(`cluster e2e: ${provider.name} provider cannot run as root here: ${reason}`));
      else it("runs the users' path", (t) => t.skip(`cluster e2e: ${provider.name} provider skipped: ${reason}`));
      return;
    }
    let c: Cluster, inst: Installed, images: { operator: BuiltImage; node: BuiltImage };
    let candidates: string[] = [],
      workload = '';
    const before0 = new Map<string, string>();
    // The proxy pods only (the leave DaemonSet's pods carry app.kubernetes.io/name=tpfleet-leave).
    const fleetPods = async () =>
      (
        await kubectlJson<{ items: Pod[] }>(c, [
          'get',
          'pods',
          '-n',
          inst.fleetNamespace,
          '-l',
          `app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=${TP}`,
        ])
      ).items;
    let serverTarget = '';
    /** Waits until `node` is back to its state before install (rules, routes, sysctls): it has left. */
    const restored = (node: string) =>
      waitFor(
        `${node} restored as before install`,
        async () => {
          const now = await nodeNetState(c, node);
          const was = before0.get(node) ?? '';
          if (now !== was) throw new Error(`${node} still differs:\n${stateDiff(was, now) || '(line order)'}`);
          return true;
        },
        120_000,
      );
    const tp = () => kubectlJson(c, ['get', 'transparentproxy', '-n', inst.fleetNamespace, TP]);
    const activeNodes = async () => {
      const nodes = await kubectlJson<{ items: { metadata: { name: string; labels: Record<string, string> } }[] }>(c, [
        'get',
        'nodes',
      ]);
      return nodes.items
        .filter((n) => n.metadata.labels[activeLabelKey(inst.fleetNamespace, TP)] === 'true')
        .map((n) => n.metadata.name)
        .sort();
    };
    /** Waits until exactly `n` candidate nodes are active, each with one Ready fleet pod, and status agrees. */
    const settle = async (n: number) =>
      waitFor(
        `${n} active node(s) with a Ready proxy pod`,
        async () => {
          const [active, pods, obj] = [await activeNodes(), await fleetPods(), await tp()];
          const on = pods
            .filter(ready)
            .map((p) => p.spec.nodeName!)
            .sort();
          const ok =
            active.length === n &&
            JSON.stringify(on) === JSON.stringify(active) &&
            obj.status?.replicas === n &&
            obj.status?.conditions?.find((x: { type: string }) => x.type === 'Ready')?.status === 'True';
          if (!ok) throw new Error(`active=${active} podsReadyOn=${on} status.replicas=${obj.status?.replicas}`);
          return active;
        },
        120_000,
      );

    before(async () => {
      const built = await buildImages(['operator', 'node']);
      images = {
        operator: built.find((b) => b.ref.includes('operator'))!,
        node: built.find((b) => b.ref.includes('node'))!,
      };
      c = await provider.create(KIND_CONFIG);
      candidates = c.nodes
        .filter((n) => n.labels[CANDIDATE] === 'true')
        .map((n) => n.name)
        .sort();
      workload = c.nodes.find((n) => n.role === 'worker' && n.labels[CANDIDATE] !== 'true')!.name;
      if (c.capabilities.realDataPath) for (const n of candidates) before0.set(n, await nodeNetState(c, n));
      await c.loadImages([images.operator, images.node]);
    });
    after(async () => {
      await c?.delete();
    });

    it('installs with helm: the operator runs and the TransparentProxy CRD serves', async () => {
      inst = await installChart(c, images);
      const crd = await kubectlJson(c, ['get', 'crd', 'transparentproxies.tpfleet.io']);
      assert.equal(crd.spec.group, 'tpfleet.io');
      const ns = await kubectlJson(c, ['get', 'namespace', inst.fleetNamespace]);
      assert.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'privileged');
    });

    it('a TransparentProxy with replicas 1 activates one candidate node and its proxy pod becomes Ready', async () => {
      await kubectl(c, ['apply', '-f', '-'], JSON.stringify(transparentProxy(inst.fleetNamespace, 1)));
      const active = await settle(1);
      assert.ok(candidates.includes(active[0]!), `active node ${active[0]} is a candidate (${candidates})`);
      const pods = await fleetPods();
      assert.ok(
        pods.every((p) => p.spec.nodeName !== workload),
        'no proxy pod on the non-candidate worker',
      );
    });

    it('the readiness taint: off once the proxy pod is Ready, back while it is replaced; a workload pod meanwhile waits, then runs', async () => {
      const [node] = await activeNodes();
      const [old] = (await fleetPods()).filter((p) => p.spec.nodeName === node);
      const o = { fleetNamespace: inst.fleetNamespace, tp: TP, node: node!, image: images.node.ref };
      process.stdout.write(`${await readinessTaintCase(c, o, old!.metadata.name)}\n`);
    });

    it("the active node runs the proxy pod with the TransparentProxy's interception (and, on real nodes, intercepts traffic)", async (t) => {
      // What every provider shows: the pod scheduled on the active node is the one that programs
      // the node (privileged init `tpfleet-agent apply`, the built node image, the sidecar as
      // 65532 with NET_RAW only), and the node config it mounts carries the spec's interception.
      const [active] = await activeNodes();
      const pod = (await fleetPods()).find((p) => p.spec.nodeName === active) as unknown as {
        spec: {
          initContainers: { command: string[]; image: string; securityContext: { privileged?: boolean } }[];
          containers: { name: string; securityContext: { runAsUser?: number; capabilities?: { add?: string[] } } }[];
        };
      };
      assert.ok(pod, `a proxy pod runs on the active node ${active}`);
      const init = pod.spec.initContainers[0]!;
      assert.deepEqual(
        [init.command[0], init.command[1], init.image, init.securityContext.privileged],
        ['tpfleet-agent', 'apply', inst.nodeImage, true],
      );
      const sidecar = pod.spec.containers.find((x) => x.name === 'sidecar')!;
      assert.equal(sidecar.securityContext.runAsUser, 65532);
      assert.deepEqual(sidecar.securityContext.capabilities?.add, ['NET_RAW']);
      const cm = await kubectlJson(c, ['get', 'configmap', '-n', inst.fleetNamespace, `${TP}-nodeconfig`]);
      const nodeConfig = parse(cm.data['nodeconfig.yaml']) as {
        interception: { ports: { port: number }[] };
        proxy: { keepClientIp: boolean };
      };
      assert.deepEqual(
        nodeConfig.interception.ports.map((p) => p.port),
        [8080],
      );
      assert.equal(nodeConfig.proxy.keepClientIp, true);
      // Simulated nodes stop here; real packets through real rules are asserted in network
      // namespaces by e2e/dataplane.test.ts and on real kubelets by the local-real provider.
      if (!c.capabilities.realDataPath) {
        t.diagnostic(`${c.provider}: simulated nodes, rules and traffic on the node not asserted here`);
        return;
      }
      const node = active!;
      const proxyPod = (await fleetPods()).find((p) => p.spec.nodeName === node)!.metadata.name;
      const serverIp = await startServer(c, 'default', workload, inst.nodeImage);
      const host = serverIp.includes(':') ? `[${serverIp}]` : serverIp;
      // backend auto follows the node (kubelet/kube-proxy iptables chains mean iptables-nft, or
      // iptables-legacy on kind nodes on podman), so the rules are looked for in every backend.
      const ruleset = await nodeRuleset(c, node);
      assert.match(ruleset, /tproxy/i, 'the node agent installed our rules on the node');
      assert.equal(
        (await c.nodeExec!(node, ['sysctl', '-n', ...Object.keys(TUNED_SYSCTLS)])).trim().split(/\s+/).join(' '),
        Object.values(TUNED_SYSCTLS).join(' '),
        'spec.tuning reached the node',
      );
      serverTarget = `${host}:8080`;
      const n0 = await sidecarAccepted(c, inst.fleetNamespace, proxyPod, METRICS_PORT);
      const saw = await probe(c, 'default', node, inst.nodeImage, `${host}:8080`, 'a');
      assert.equal(saw.dst, `${serverIp}:8080`, 'the server saw the original destination');
      assert.equal(
        saw.src.slice(0, saw.src.lastIndexOf(':')),
        saw.clientIp,
        'keepClientIp: the server saw the client pod address',
      );
      assert.equal(
        await sidecarAccepted(c, inst.fleetNamespace, proxyPod, METRICS_PORT),
        n0 + 1,
        'the sidecar carried it',
      );
      await probe(c, 'default', node, inst.nodeImage, `${host}:9090`, 'b');
      assert.equal(
        await sidecarAccepted(c, inst.fleetNamespace, proxyPod, METRICS_PORT),
        n0 + 1,
        'port 9090 is not intercepted: it bypassed the sidecar',
      );
    });

    it('a change that needs a new process (proxy.backlog) rolls the proxy pod, the new one beside the old; on real nodes new connections see no gap', async (t) => {
      const [node] = await activeNodes();
      const old = (await fleetPods()).find((p) => p.spec.nodeName === node)!;
      const prober = c.capabilities.realDataPath
        ? await startProber(c, 'default', node!, inst.nodeImage, serverTarget, 45)
        : undefined;
      if (prober) await new Promise((r) => setTimeout(r, 3000)); // intercepted before the change
      // Every change of the node's pods, in the API server's order: name, deletion time, Ready.
      const watch = await watchLines(c, [
        'get',
        'pods',
        '-n',
        inst.fleetNamespace,
        '-l',
        `app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=${TP}`,
        '--field-selector',
        `spec.nodeName=${node}`,
        '-o',
        'jsonpath={.metadata.name}|{.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}{"\\n"}',
      ]);
      await waitFor(
        'the pod watch to list the old pod',
        async () => watch.lines().length > 0 || undefined,
        30_000,
        100,
      );
      const patchedAt = Date.now();
      await kubectl(c, [
        'patch',
        'transparentproxy',
        TP,
        '-n',
        inst.fleetNamespace,
        '--type=merge',
        '-p',
        // A restart field (api/reload.ts): the listeners are created with it, so only a new pod applies it.
        JSON.stringify({ spec: { proxy: { backlog: 2048 } } }),
      ]);
      await waitFor(
        'the proxy pod to be replaced',
        async () => {
          const pods = (await fleetPods()).filter((p) => p.spec.nodeName === node);
          return (
            (pods.some((p) => p.metadata.name !== old.metadata.name && ready(p)) &&
              !pods.some((p) => p.metadata.name === old.metadata.name)) ||
            undefined
          );
        },
        120_000,
      );
      const changes = watch.stop().map((l) => l.split('|'));
      // Surge (maxSurge 1): a new pod was Ready before the old one began terminating.
      const firstReady = changes.findIndex(([name, , r]) => name !== old.metadata.name && r === 'True');
      const oldStops = changes.findIndex(([name, del]) => name === old.metadata.name && !!del);
      const shown = changes.map((x) => x.join(' ')).join('\n');
      assert.ok(
        firstReady >= 0 && oldStops > firstReady,
        `the new pod was Ready while the old one still ran:\n${shown}`,
      );
      // The old pod stayed Ready until it was stopped: an unready old pod is deleted at once by the
      // DaemonSet controller, new pod Ready or not (its probes must reach only its own sidecar).
      assert.ok(
        !changes.some(([name, del, r]) => name === old.metadata.name && !del && r !== 'True'),
        `the old pod stayed Ready until stopped:\n${shown}`,
      );
      await settle(1);
      const fresh = (await fleetPods()).find((p) => p.spec.nodeName === node)!;
      assert.notEqual(
        fresh.metadata.annotations?.['tpfleet.io/pod-hash'],
        old.metadata.annotations?.['tpfleet.io/pod-hash'],
      );
      if (!prober) {
        t.diagnostic(`${c.provider}: no real data path, the gap for new connections is not measured here`);
        return;
      }
      const results = await prober.results();
      const gap = longestGap(results);
      const seen = `answered/attempted per second since the patch: ${timeline(results, patchedAt)}`;
      process.stdout.write(
        `cluster e2e: rollout gap for new connections on ${node}: ${gap} ms (bound ${ROLLOUT_GAP_BOUND_MS} ms; ${results.length} attempts; ${seen})\n`,
      );
      assert.ok(
        results.filter((r) => r.ok).length > 100,
        `the prober got through before and after the rollout; ${seen}`,
      );
      assert.ok(results.at(-1)!.ok && results[0]!.ok, `answered at the start and at the end; ${seen}`);
      assert.ok(gap <= ROLLOUT_GAP_BOUND_MS, `gap ${gap} ms > ${ROLLOUT_GAP_BOUND_MS} ms; ${seen}`);
      assert.deepEqual(
        results.filter((r) => !r.ok).length,
        0,
        `no connection attempt failed (tcp_migrate_req moves the old listener's queue); ${seen}`,
      );
      // After the swap, connections are intercepted again (not merely answered): the new sidecar counts them.
      const n = await sidecarAccepted(c, inst.fleetNamespace, fresh.metadata.name, METRICS_PORT);
      assert.ok(n > 0, 'the new sidecar carries new connections');
    });

    it('a change applied in place (exclusion CIDR, idle timeout, log level) keeps the proxy pod; the node reports the new config hash', async (t) => {
      const [node] = await activeNodes();
      const old = (await fleetPods()).find((p) => p.spec.nodeName === node)! as Pod & { metadata: { uid: string } };
      const ds0 = await kubectlJson(c, ['get', 'daemonset', '-n', inst.fleetNamespace, TP]);
      const hash0 = (await tp()).status.configHash;
      await kubectl(c, [
        'patch',
        'transparentproxy',
        TP,
        '-n',
        inst.fleetNamespace,
        '--type=merge',
        '-p',
        JSON.stringify({
          spec: {
            interception: { destinations: { exclude: ['10.123.0.0/16'] } },
            proxy: { timeouts: { idle: '301s' }, logLevel: 'debug' },
          },
        }),
      ]);
      const hash = await waitFor(
        'a new config hash in status',
        async () => {
          const h = (await tp()).status?.configHash;
          return (h && h !== hash0 && h) || undefined;
        },
        60_000,
      );
      const ds = await kubectlJson(c, ['get', 'daemonset', '-n', inst.fleetNamespace, TP]);
      assert.equal(ds.metadata.generation, ds0.metadata.generation, 'the pod template did not change: no rollout');
      if (!c.capabilities.realDataPath) {
        t.diagnostic(`${c.provider}: simulated nodes run no agent; the in-place reload is not asserted here`);
        return;
      }
      await waitFor(
        `status.nodes[${node}].configHash to be the new hash and Progressing False`,
        async () => {
          const o = await tp();
          const n = o.status?.nodes?.find((x: { name: string }) => x.name === node);
          const p = o.status?.conditions?.find((x: { type: string }) => x.type === 'Progressing');
          return (n?.configHash === hash && p?.status === 'False') || undefined;
        },
        60_000,
      );
      assert.match(await nodeRuleset(c, node!), /10\.123\.0\.0\/16/, 'the new exclusion is in force on the node');
      const now = (await fleetPods()).filter((p) => p.spec.nodeName === node) as (Pod & {
        metadata: { uid: string };
      })[];
      assert.deepEqual(
        now.map((p) => p.metadata.uid),
        [old.metadata.uid],
        'the same pod: nothing rolled',
      );
    });

    it('an egress policy: the denied destination is reset, the allowed one carried; upstream credentials mounted and rotated in place', async (t) => {
      const ns = inst.fleetNamespace;
      const [node] = await activeNodes();
      const secret = 'e2e-upstream';
      const putSecret = (password: string) =>
        kubectl(
          c,
          ['apply', '-f', '-'],
          JSON.stringify({
            apiVersion: 'v1',
            kind: 'Secret',
            metadata: { name: secret, namespace: ns },
            stringData: { username: 'e2e-user', password },
          }),
        );
      // A second server on the workload node: the one destination the Deny rule covers.
      const deniedIp = c.capabilities.realDataPath
        ? await startServer(c, 'default', workload, inst.nodeImage, 'tpfleet-e2e-server-denied')
        : '192.0.2.10';
      const allowedIp = serverTarget
        ? serverTarget.slice(0, serverTarget.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1')
        : '192.0.2.20';
      const policy = {
        defaultAction: 'Allow',
        // Named by no rule: here to show a Secret reaching the sidecar on a real kubelet.
        upstreams: [{ name: 'corp', type: 'SOCKS5', address: '192.0.2.1:1080', credentialsSecret: { name: secret } }],
        rules: [
          { name: 'deny-one', action: 'Deny', match: { destinations: [deniedIp], ports: [{ port: 8080 }] } },
          { name: 'allow-other', action: 'Allow', match: { destinations: [allowedIp] } },
        ],
      };
      const patch = () =>
        kubectl(c, [
          'patch',
          'transparentproxy',
          TP,
          '-n',
          ns,
          '--type=merge',
          '-p',
          JSON.stringify({ spec: { policy } }),
        ]);
      // Without the Secret the spec is refused and nothing rolls: InvalidSpec names the field.
      const hash0 = (await tp()).status?.configHash;
      await patch();
      await waitFor(
        'InvalidSpec for the missing Secret',
        async () => {
          const o = await tp();
          const x = o.status?.conditions?.find((k: { type: string }) => k.type === 'InvalidSpec');
          return (
            (x?.status === 'True' &&
              /spec\.policy\.upstreams\[0\]\.credentialsSecret: Secret .* not found/.test(x.message)) ||
            undefined
          );
        },
        60_000,
      );
      assert.equal((await tp()).status?.configHash, hash0, 'the fleet keeps its configuration');
      await putSecret('first-password');
      await waitFor(
        'the policy rolled out',
        async () => {
          const o = await tp();
          return (o.status?.policy?.rules === 2 && o.status.configHash !== hash0) || undefined;
        },
        120_000,
      );
      await settle(1);
      // The new pod alone on the node (settle can pass while the old one still serves, before the swap):
      // the upstream's Secret is a new volume, so this change rolls; the template says which pod hash.
      const podHash = (await kubectlJson(c, ['get', 'daemonset', '-n', ns, TP])).spec.template.metadata.annotations[
        'tpfleet.io/pod-hash'
      ];
      const pod = await waitFor(
        'the pod with the policy alone Ready on the node',
        async () => {
          const on = (await fleetPods()).filter((p) => p.spec.nodeName === node);
          const p = on[0];
          return (
            (on.length === 1 && p && ready(p) && p.metadata.annotations?.['tpfleet.io/pod-hash'] === podHash && p) ||
            undefined
          );
        },
        120_000,
      );
      const header = (await kubectl(c, ['get', 'tproxy', TP, '-n', ns, '-o', 'wide'])).split('\n');
      // Aligned columns (an empty one is blank): read at RULES' offset.
      const at = (header[0] ?? '').indexOf('RULES');
      assert.equal(
        (header[1] ?? '').slice(at).trim().split(/\s+/)[0],
        '2',
        `kubectl get -o wide: ${header.join('\n')}`,
      );
      if (!c.capabilities.realDataPath) {
        t.diagnostic(`${c.provider}: simulated nodes, policy enforcement and the mounted Secret not asserted here`);
        return;
      }
      const readCred = (key: string) =>
        kubectl(c, [
          'exec',
          '-n',
          ns,
          pod.metadata.name,
          '-c',
          'sidecar',
          '--',
          'node',
          '-e',
          `process.stdout.write(require('fs').readFileSync('/etc/tpfleet-credentials/${secret}/${key}','utf8'))`,
        ]);
      assert.equal(await readCred('username'), 'e2e-user', 'the sidecar (uid 65532) reads the mounted Secret');
      assert.equal(await readCred('password'), 'first-password');
      // Denied: the client's connection is reset by the sidecar; counted under the rule's name.
      const denied0 = await policyDecisions(c, ns, pod.metadata.name, METRICS_PORT, 'deny-one', 'deny');
      const r = await connectOnce(c, 'default', node!, inst.nodeImage, `${deniedIp}:8080`, 'denied');
      assert.ok('error' in r && r.error === 'ECONNRESET', `the denied destination is reset: ${JSON.stringify(r)}`);
      assert.equal(await policyDecisions(c, ns, pod.metadata.name, METRICS_PORT, 'deny-one', 'deny'), denied0 + 1);
      // Allowed: carried by the sidecar to the original destination.
      const allowed0 = await policyDecisions(c, ns, pod.metadata.name, METRICS_PORT, 'allow-other', 'allow');
      const saw = await probe(c, 'default', node!, inst.nodeImage, serverTarget, 'allowed');
      assert.equal(saw.dst, serverTarget, 'the allowed server saw the original destination');
      assert.equal(await policyDecisions(c, ns, pod.metadata.name, METRICS_PORT, 'allow-other', 'allow'), allowed0 + 1);
      // The denied server itself is reachable on a port the node does not intercept: the reset came from the policy.
      await probe(c, 'default', node!, inst.nodeImage, `${deniedIp}:9090`, 'bypass');
      // Rotation: the kubelet rewrites the volume in place; same pod, no restart, new password.
      await putSecret('second-password');
      await waitFor(
        'the rotated password in the sidecar',
        async () => (await readCred('password')) === 'second-password' || undefined,
        180_000,
      );
      const after = (await fleetPods()).find((p) => p.spec.nodeName === node)! as Pod & {
        status: { containerStatuses?: { name: string; restartCount: number }[] };
      };
      // The node's decisions reach status (the agent publishes its sidecar's totals once a minute).
      await waitFor(
        `status.nodes[${node}].policy to count the reset and the carried connection`,
        async () => {
          const n = (await tp()).status?.nodes?.find((x: { name: string }) => x.name === node);
          return (n?.policy?.deny >= 1 && n.policy.allow >= 1) || undefined;
        },
        150_000,
      );
      assert.equal(after.metadata.name, pod.metadata.name, 'the same pod: rotation rolled nothing');
      assert.equal(after.status.containerStatuses?.find((x) => x.name === 'sidecar')?.restartCount, 0);
      await kubectl(c, ['delete', 'pod', '-n', 'default', 'tpfleet-e2e-server-denied', '--wait=false']);
    });

    it('kubectl scale --replicas=2 activates the second candidate node; back to 1, the node that left is restored exactly', async () => {
      await kubectl(c, ['scale', 'transparentproxy', TP, '-n', inst.fleetNamespace, '--replicas=2']);
      assert.deepEqual(await settle(2), candidates);
      await kubectl(c, ['scale', 'transparentproxy', TP, '-n', inst.fleetNamespace, '--replicas=1']);
      const [stays] = await settle(1);
      const left = candidates.find((n) => n !== stays)!;
      if (c.capabilities.realDataPath) {
        // Rules, routes and sysctls as before install, while the other node still intercepts.
        await restored(left);
        assert.notEqual(await nodeNetState(c, stays!), before0.get(stays!), `${stays} still intercepts`);
      }
      await waitFor(
        `${left} to lose its activation label`,
        async () => {
          const n = await kubectlJson(c, ['get', 'node', left]);
          return n.metadata.labels?.[activeLabelKey(inst.fleetNamespace, TP)] === undefined || undefined;
        },
        120_000,
      );
    });

    it('the HPA scales the active nodes on connections per proxy (custom metrics API)', async (t) => {
      if (!c.capabilities.settableMetrics) {
        t.skip(`${c.provider}: no test metrics adapter (the HPA path is asserted on the local provider)`);
        return;
      }
      await kubectl(c, [
        'patch',
        'transparentproxy',
        TP,
        '-n',
        inst.fleetNamespace,
        '--type=merge',
        '-p',
        JSON.stringify({
          spec: {
            autoscaling: {
              enabled: true,
              minReplicas: 1,
              maxReplicas: 2,
              targetConnectionsPerProxy: 100,
              scaleDownStabilization: '0s',
            },
          },
        }),
      ]);
      const setAll = async (v: number) => {
        for (const p of await fleetPods())
          await c.setPodMetric!(inst.fleetNamespace, p.metadata.name, 'tpfleet_proxy_connections_active', v);
      };
      // 500 open connections on one proxy against a target of 100 per proxy: the HPA wants 5, capped at 2.
      await waitFor(
        'the HPA to scale to 2',
        async () => {
          await setAll(500);
          return (await activeNodes()).length === 2 ? true : undefined;
        },
        120_000,
      );
      assert.deepEqual(await settle(2), candidates);
      const hpa = await kubectlJson(c, ['get', 'hpa', '-n', inst.fleetNamespace, TP]);
      assert.equal(hpa.spec.scaleTargetRef.kind, 'TransparentProxy');
      // Load falls to 10 per proxy: back to the minimum.
      await waitFor(
        'the HPA to scale back to 1',
        async () => {
          await setAll(10);
          return (await activeNodes()).length === 1 ? true : undefined;
        },
        120_000,
      );
      await settle(1);
    });

    it('deleting the TransparentProxy cleans every node up, then removes labels and owned objects', async () => {
      await kubectl(c, ['delete', 'transparentproxy', TP, '-n', inst.fleetNamespace, '--wait=true', '--timeout=180s']);
      assert.deepEqual(await activeNodes(), [], 'no node keeps an activation label');
      const nodes = (await kubectlJson<{ items: { spec?: { taints?: { key: string }[] } }[] }>(c, ['get', 'nodes']))
        .items;
      assert.ok(
        nodes.every((n) => !(n.spec?.taints ?? []).some((x) => x.key === INTERCEPTION_TAINT)),
        'no node keeps the readiness taint',
      );
      await waitFor(
        'the garbage collector to delete the fleet objects',
        async () => {
          const left = (
            await kubectl(c, [
              'get',
              'daemonsets,configmaps,services,hpa',
              '-n',
              inst.fleetNamespace,
              '-l',
              `app.kubernetes.io/instance=${TP}`,
              '-o',
              'name',
            ])
          ).trim();
          if (left) throw new Error(`still there: ${left}`);
          return true;
        },
        120_000,
      );
      if (c.capabilities.realDataPath) {
        for (const n of candidates)
          assert.equal(
            await nodeNetState(c, n),
            before0.get(n),
            `${n}: rules, ip rules and routes are as before install`,
          );
      }
    });

    it('helm uninstall removes the operator and keeps the CRD (Helm never deletes CRDs)', async () => {
      await inst.uninstall();
      const left = (
        await kubectl(c, [
          'get',
          'deployments,serviceaccounts,clusterroles,clusterrolebindings',
          '-A',
          '-l',
          'app.kubernetes.io/instance=tpfleet',
          '-o',
          'name',
        ])
      ).trim();
      assert.equal(left, '', 'nothing of the release is left');
      await kubectl(c, ['get', 'crd', 'transparentproxies.tpfleet.io']);
    });
  });
}
