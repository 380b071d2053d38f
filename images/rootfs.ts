// Looking into built images without a container engine: image config through `buildah inspect`, the
// root filesystem through `buildah from` + `buildah mount`, and processes started in that root the
// way a kubelet would start a container's: own mount and PID namespace with /proc, a network
// namespace, the image's environment, a uid and a capability bounding set (setpriv from the image).
// Every command is an argv array. Used by images.test.ts.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { runBuildSh } from './images.ts';

const exec = promisify(execFile);

let driver: Promise<string> | undefined;
/** buildah with the storage driver images/build.sh uses (one store per machine). */
export async function buildah(args: readonly string[]): Promise<string> {
  driver ??= runBuildSh(['--storage-driver']).then((s) => s.trim());
  const { stdout } = await exec('buildah', ['--storage-driver', await driver, ...args], { maxBuffer: 64 << 20 });
  return stdout;
}

/** The parts of an OCI image config the tests look at. */
export interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Labels?: Record<string, string>;
}

export async function imageConfig(ref: string): Promise<ImageConfig> {
  const info = JSON.parse(await buildah(['inspect', '--type', 'image', ref])) as { OCIv1: { config: ImageConfig } };
  return info.OCIv1.config;
}

/** A working container of an image with its root filesystem mounted at `root` (writable, a copy). */
export interface Rootfs {
  root: string;
  env: string[];
  /**
   * A read-only view of root (a bind mount), as a container with readOnlyRootFilesystem sees it.
   * Made on first use; remove() unmounts it.
   */
  readOnly(): Promise<string>;
  remove(): Promise<void>;
}

export async function mountImage(ref: string): Promise<Rootfs> {
  const env = (await imageConfig(ref)).Env ?? [];
  const ctr = (await buildah(['from', '--pull-never', '--quiet', ref])).trim();
  let ro: string | undefined;
  const remove = async () => {
    if (ro) {
      await exec('umount', [ro]).catch(() => undefined);
      rmdirSync(ro);
      ro = undefined;
    }
    await buildah(['rm', ctr]).catch(() => undefined);
  };
  try {
    const root = (await buildah(['mount', ctr])).trim();
    await makeDevices(root);
    return {
      root,
      env,
      remove,
      readOnly: async () => {
        if (ro) return ro;
        ro = mkdtempSync(path.join(tmpdir(), 'tpfleet-ro-root-'));
        await exec('mount', ['--bind', '-o', 'ro', root, ro]);
        return ro;
      },
    };
  } catch (e) {
    await remove();
    throw e;
  }
}

/**
 * The device nodes every OCI runtime creates in a container's /dev (the image's /dev is empty).
 * Without /dev/null, Node cannot spawn a child with stdio 'ignore' (the agent's commands fail ENOENT).
 */
const DEVICES: [name: string, major: number, minor: number][] = [
  ['null', 1, 3],
  ['zero', 1, 5],
  ['full', 1, 7],
  ['random', 1, 8],
  ['urandom', 1, 9],
  ['tty', 5, 0],
];

async function makeDevices(root: string): Promise<void> {
  for (const [name, major, minor] of DEVICES) {
    await exec('mknod', ['-m', '666', path.join(root, 'dev', name), 'c', String(major), String(minor)]);
  }
}

/** Who runs a process: root with every capability (privileged), or a uid with a bounding set. */
export type RunAs = { privileged: true } | { uid: number; caps: readonly string[]; noNewPrivs?: boolean };

/**
 * argv that runs `argv` (resolved on the image's PATH) inside root in network namespace `netns`.
 * The process gets PID 1 of a new PID namespace and its own /proc; the bounding set and uid are
 * set with the image's own setpriv, so exec'ing a file-capability binary follows the kernel rules
 * a container would meet (no inheritable or ambient capabilities, the bounding set caps it).
 */
export function inImage(
  root: string,
  env: readonly string[],
  netns: string,
  as: RunAs,
  argv: readonly string[],
): string[] {
  const base = [
    'ip',
    'netns',
    'exec',
    netns,
    'unshare',
    '--mount',
    '--pid',
    '--fork',
    '--kill-child',
    `--root=${root}`,
    '--mount-proc',
    '/usr/bin/env',
    '-i',
    ...env,
  ];
  if ('privileged' in as) return [...base, ...argv];
  const caps = ['-all', ...as.caps.map((c) => `+${c.toLowerCase()}`)].join(',');
  return [
    ...base,
    '/usr/bin/setpriv',
    `--reuid=${as.uid}`,
    `--regid=${as.uid}`,
    '--clear-groups',
    '--inh-caps=-all',
    `--bounding-set=${caps}`,
    ...(as.noNewPrivs ? ['--no-new-privs'] : []),
    '--',
    ...argv,
  ];
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv to completion (never throws for a non-zero exit); killed after timeoutMs. */
export async function run(argv: readonly string[], timeoutMs = 60_000): Promise<Result> {
  try {
    const { stdout, stderr } = await exec(argv[0]!, argv.slice(1), { timeout: timeoutMs, maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return {
      code: typeof err.code === 'number' ? err.code : -1,
      stdout: err.stdout ?? '',
      stderr: err.stderr ?? err.message,
    };
  }
}
