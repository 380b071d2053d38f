// The kind node image as the suite gets it: images/kind/build.sh builds (or reuses) it from Debian
// packages and Go modules, without a registry (images/kind/README.md). Building is serialised by
// build.sh's lock; a warm call only hashes its inputs (seconds).
import { spawn } from 'node:child_process';
import path from 'node:path';

export const KIND_BUILD_SH = path.join(import.meta.dirname, 'build.sh');

function runKindBuild(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [KIND_BUILD_SH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      log = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // Go builds, debootstrap and buildah log a lot; only the end matters when it fails.
    p.stderr.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-8000);
      if (process.env.TPFLEET_KIND_BUILD_LOG) process.stderr.write(d);
    });
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`images/kind/build.sh ${args.join(' ')} exited ${code}:\n${log}`)),
    );
  });
}

/** Builds (or reuses) the node image; resolves with its reference in the local image store. */
export async function ensureKindNodeImage(): Promise<string> {
  const ref = (await runKindBuild([])).trim().split('\n').pop() ?? '';
  if (!/^localhost\/tpfleet\/kind-node:v\d+\.\d+\.\d+$/.test(ref))
    throw new Error(`images/kind/build.sh printed an unexpected reference: ${ref}`);
  return ref;
}

/** The images preloaded into the node image's containerd: reference and docker-archive path. */
export async function kindPreloadedImages(): Promise<{ ref: string; archive: string }[]> {
  return (await runKindBuild(['--images']))
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [ref, archive] = l.split('\t');
      if (!ref || !archive) throw new Error(`images/kind/build.sh --images printed an unexpected line: ${l}`);
      return { ref, archive };
    });
}

/** The pinned kind module's directory in the Go module cache (kind's own node files live there). */
export async function kindModuleDir(): Promise<string> {
  return (await runKindBuild(['--kind-module'])).trim();
}
