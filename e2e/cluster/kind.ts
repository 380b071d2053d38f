// The kind provider: the users' path. Needs a Docker engine; kind itself is taken from PATH or
// built from its Go module (tools/k8s/kind). The cluster gets its own name (tpfleet-e2e) so a
// user's `tpfleet` cluster made from the same kind-config.yaml is never touched.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ensureBinaries } from '../testenv/binaries.ts';
import type { BuiltImage, Cluster, ClusterNode, Provider } from './provider.ts';

const CLUSTER_NAME = 'tpfleet-e2e';

function run(bin: string, args: readonly string[], timeoutMs = 600_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { maxBuffer: 64 << 20, timeout: timeoutMs }, (err, stdout, stderr) =>
      err ? reject(new Error(`${bin} ${args.join(' ')}: ${(stderr || err.message).trim()}`)) : resolve(stdout),
    );
  });
}

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
    await run('kind', ['version'], 10_000);
    return 'kind';
  } catch {
    return join(await ensureBinaries(['kind']), 'kind');
  }
}

export const kindProvider: Provider = {
  name: 'kind',
  async unavailable() {
    try {
      await run('docker', ['info', '--format', '{{.ServerVersion}}'], 20_000);
      return null;
    } catch (e) {
      const line =
        (e as Error).message.split('\n').find((l) => /cannot connect|not found|ENOENT|error/i.test(l)) ??
        (e as Error).message;
      return `no Docker engine here (${line.replace(/^docker info --format \{\{\.ServerVersion\}\}: /, '').trim()})`;
    }
  },
  async create(kindConfigPath) {
    const kind = await kindBinary();
    const dir = mkdtempSync(join(tmpdir(), 'tpfleet-kind-'));
    const kubeconfigPath = join(dir, 'kubeconfig');
    // A leftover from an interrupted run would make `create` fail; it is ours by name.
    await run(kind, ['delete', 'cluster', '--name', CLUSTER_NAME]).catch(() => undefined);
    await run(kind, [
      'create',
      'cluster',
      '--name',
      CLUSTER_NAME,
      '--config',
      kindConfigPath,
      '--kubeconfig',
      kubeconfigPath,
      '--wait',
      '180s',
    ]);
    let deleted = false;
    const cluster: Cluster = {
      provider: 'kind',
      kubeconfigPath,
      capabilities: { runsPods: true, realDataPath: true, settableMetrics: false },
      nodes: kindNodes(kindConfigPath, CLUSTER_NAME),
      async loadImages(images: readonly BuiltImage[]) {
        for (const img of images) await run(kind, ['load', 'image-archive', img.archive, '--name', CLUSTER_NAME]);
      },
      // Each kind node is a container: `docker exec` runs in the node's own network namespace.
      nodeExec: (node, argv) => run('docker', ['exec', node, ...argv], 60_000),
      async delete() {
        if (deleted) return;
        deleted = true;
        await run(kind, ['delete', 'cluster', '--name', CLUSTER_NAME]);
        rmSync(dir, { recursive: true, force: true });
      },
    };
    return cluster;
  },
};
