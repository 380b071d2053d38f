// The container images as the test suites get them: images/build.sh builds (or reuses) them and
// exports docker-archive tarballs; this module runs it and returns what it printed. Building is
// serialised by build.sh's lock, so parallel callers are safe; a warm call takes seconds.
import { spawn } from 'node:child_process';
import path from 'node:path';
export type ImageTarget = 'operator' | 'node';

/** A container image as images/build.sh built it. */
export interface BuiltImage {
  /** e.g. localhost/tpfleet/tpfleet-node:dev */
  ref: string;
  /** path of an oci-archive or docker-archive tarball of that image */
  archive: string;
}

export const BUILD_SH = path.join(import.meta.dirname, 'build.sh');

/** Runs images/build.sh with args; resolves with stdout, rejects with the end of its log. */
export function runBuildSh(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [BUILD_SH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      log = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // build logs can be long (apt, npm); only the end matters when it fails
    p.stderr.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`images/build.sh ${args.join(' ')} exited ${code}:\n${log}`));
    });
  });
}

/**
 * Builds the images of `targets` (both by default) unless their inputs are unchanged, and returns
 * their references and docker-archive paths, in the order asked.
 */
export async function buildImages(targets: readonly ImageTarget[] = ['operator', 'node']): Promise<BuiltImage[]> {
  const out = await runBuildSh(targets);
  const images = out
    .split('\n')
    .filter(Boolean)
    .map((line): BuiltImage => {
      const [ref, archive, ...rest] = line.split('\t');
      if (!ref || !archive || rest.length) throw new Error(`images/build.sh printed an unexpected line: ${line}`);
      return { ref, archive };
    });
  if (images.length !== targets.length)
    throw new Error(`images/build.sh printed ${images.length} images for ${targets.length} targets`);
  return images;
}
