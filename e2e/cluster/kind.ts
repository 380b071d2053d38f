// The kind provider: the users' path. Runs on Docker when a Docker daemon answers, else on
// rootful podman (kind's podman provider, KIND_EXPERIMENTAL_PROVIDER=podman) as scripts/bootstrap.sh
// sets it up; kind itself is taken from PATH or built from its Go module (tools/k8s/kind). On
// podman the node image is the one images/kind/build.sh builds here without a registry
// (TPFLEET_KIND_NODE_IMAGE overrides it on either engine). The cluster gets its own name
// (tpfleet-e2e) so a user's `tpfleet` cluster made from the same kind-config.yaml is never touched.
// kind on podman changes the host's network (kind-engine.ts): delete() puts it back and fails if
// anything still differs. This tier and local-real never run at once: cluster.test.ts runs the
// providers one after the other, and kind's delete() has restored the host before local-real starts.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ensureBinaries } from '../testenv/binaries.ts';
import { ensureKindNodeImage } from '../../images/kind/node-image.ts';
import { detectEngine, hostState, restoreHost, run, type Engine, type HostState } from './kind-engine.ts';
import { kubectl, waitFor } from './kube.ts';
import type { BuiltImage, Cluster, ClusterNode, Provider } from './provider.ts';

const CLUSTER_NAME = 'tpfleet-e2e';

interface KindConfigNode {
  role?: string;
  labels?: Record<string, string>;
}

/** kind's node names: <cluster>-control-plane[N], <cluster>-worker[N] (N from 2, in file order). */
export function kindNodes(configPath: string, clusterName: string): ClusterNode[] {
  const doc = parse(readFileSync(configPath, 'utf8')) as { nodes?: KindConfigNode[] };
  const count = { 'control-plane': 0, worker: 0 };
  return (doc.nodes ?? [{ role: 'control-plane' }]).map((n) => {
    const role = n.role === 'worker' ? 'worker' : 'control-plane';
    const i = ++count[role];
    return { name: `${clusterName}-${role}${i > 1 ? i : ''}`, role, labels: { ...(n.labels ?? {}) } };
  });
}

async function kindBinary(): Promise<string> {
  try {
    await run('kind', ['version'], { timeoutMs: 10_000 });
    return 'kind';
  } catch {
    return join(await ensureBinaries(['kind']), 'kind');
  }
}

/**
 * Waits until every node is Ready and routes every other node's pod CIDRs (the CNI has converged),
 * so that the state the suite records on a node before install is the state it keeps.
 */
async function networkSettled(
  c: Pick<Cluster, 'kubeconfigPath' | 'nodes'>,
  exec: (node: string, argv: readonly string[]) => Promise<string>,
): Promise<void> {
  await kubectl(c, ['wait', '--for=condition=Ready', 'nodes', '--all', '--timeout=300s']);
  await waitFor(
    "every node to route the other nodes' pod CIDRs",
    async () => {
      const lines = (
        await kubectl(c, [
          'get',
          'nodes',
          '-o',
          'jsonpath={range .items[*]}{.metadata.name}{" "}{.spec.podCIDRs[*]}{"\\n"}{end}',
        ])
      )
        .trim()
        .split('\n');
      const cidrs = new Map(
        lines.map((l) => {
          const [name, ...rest] = l.split(' ');
          return [name!, rest.filter(Boolean)] as const;
        }),
      );
      for (const n of c.nodes) {
        const routes =
          (await exec(n.name, ['ip', 'route', 'show'])) + (await exec(n.name, ['ip', '-6', 'route', 'show']));
        for (const [other, list] of cidrs) {
          if (other === n.name) continue;
          for (const cidr of list)
            if (!routes.includes(`${cidr} via `)) throw new Error(`${n.name} has no route to ${other}'s ${cidr}`);
        }
      }
      return true;
    },
    180_000,
    1000,
  );
}

let engine: Engine | undefined;

export const kindProvider: Provider = {
  name: 'kind',
  async unavailable() {
    const e = await detectEngine();
    if (typeof e === 'string') return e;
    engine = e;
    return null;
  },
  async create(kindConfigPath) {
    const eng =
      engine ??
      (() => {
        throw new Error('kind provider: create() before unavailable()');
      })();
    const kind = await kindBinary();
    const env = eng.env;
    // The node image: the override, else on podman the one built here (there is no registry to pull
    // kind's from), else kind's default. A smoke run first, so a podman that cannot start a
    // privileged container (containers.conf rlimits) says so instead of failing inside kind.
    const image =
      process.env.TPFLEET_KIND_NODE_IMAGE || (eng.name === 'podman' ? await ensureKindNodeImage() : undefined);
    // A leftover from an interrupted run would make `create` fail; it is ours by name.
    await run(kind, ['delete', 'cluster', '--name', CLUSTER_NAME], { env }).catch(() => undefined);
    const host: HostState | undefined = eng.name === 'podman' ? await hostState() : undefined;
    if (eng.name === 'podman') {
      await run('podman', ['run', '--rm', '--privileged', '--net=none', '--entrypoint', 'true', image!], {
        timeoutMs: 120_000,
      }).catch((e: Error) => {
        throw new Error(
          `kind provider: podman cannot run a privileged node container here (see README, "kind with podman"): ${e.message}`,
        );
      });
    }
    const dir = mkdtempSync(join(tmpdir(), 'tpfleet-kind-'));
    const kubeconfigPath = join(dir, 'kubeconfig');
    const nodeExec = (node: string, argv: readonly string[]) =>
      run(eng.name, ['exec', node, ...argv], { timeoutMs: 60_000 });
    let deleted = false;
    const cluster: Cluster = {
      provider: 'kind',
      kubeconfigPath,
      capabilities: { runsPods: true, realDataPath: true, settableMetrics: false },
      nodes: kindNodes(kindConfigPath, CLUSTER_NAME),
      async loadImages(images: readonly BuiltImage[]) {
        for (const img of images)
          await run(kind, ['load', 'image-archive', img.archive, '--name', CLUSTER_NAME], { env });
      },
      // Each kind node is a container: `<engine> exec` runs in the node's own network namespace.
      nodeExec,
      async delete() {
        if (deleted) return;
        deleted = true;
        await run(kind, ['delete', 'cluster', '--name', CLUSTER_NAME], { env });
        rmSync(dir, { recursive: true, force: true });
        if (!host) return;
        const left = await restoreHost(host);
        if (left) throw new Error(`kind on podman: after delete the host still differs from before create:\n${left}`);
      },
    };
    try {
      await run(
        kind,
        [
          'create',
          'cluster',
          '--name',
          CLUSTER_NAME,
          '--config',
          kindConfigPath,
          '--kubeconfig',
          kubeconfigPath,
          ...(image ? ['--image', image] : []),
          '--wait',
          '180s',
        ],
        { env, timeoutMs: 900_000 },
      );
      await networkSettled(cluster, nodeExec);
    } catch (e) {
      await cluster.delete().catch(() => undefined);
      throw e;
    }
    return cluster;
  },
};
