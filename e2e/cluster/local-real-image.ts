// The pod sandbox ("pause") image of the local-real provider's nodes. There is no registry to
// pull registry.k8s.io/pause from, so it is made here: e2e/cluster/pause/pause.c built with
// `gcc -static`, packed as a one-layer docker-archive by hand (manifest.json + config + layer
// tar), which `ctr images import` accepts. Cached under $TPFLEET_CACHE/local-real by the hash of
// the source, so reruns reuse it; the archive is written to a temp name and renamed, so an
// interrupted build never leaves a half-written archive that a later run would trust.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BuiltImage } from './provider.ts';

const run = promisify(execFile);
const SOURCE = join(import.meta.dirname, 'pause', 'pause.c');
/** The reference the nodes' containerd is configured with (sandbox_image). */
export const PAUSE_REF = 'localhost/tpfleet/pause:3.10';

export function localRealCache(): string {
  return join(process.env.TPFLEET_CACHE ?? join(homedir(), '.cache', 'tpfleet'), 'local-real');
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Builds (or reuses) the pause image archive. */
export async function ensurePauseImage(): Promise<BuiltImage> {
  const src = readFileSync(SOURCE);
  const dir = localRealCache();
  mkdirSync(dir, { recursive: true });
  const archive = join(dir, `pause-${sha256(src).slice(0, 16)}.tar`);
  if (existsSync(archive)) return { ref: PAUSE_REF, archive };
  const work = mkdtempSync(join(dir, '.pause-'));
  try {
    const rootfs = join(work, 'rootfs');
    mkdirSync(rootfs);
    await run('gcc', ['-static', '-O2', '-s', '-o', join(rootfs, 'pause'), SOURCE]);
    const img = join(work, 'img');
    mkdirSync(img);
    await run('tar', [
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '-C',
      rootfs,
      '-cf',
      join(img, 'layer.tar'),
      'pause',
    ]);
    const layerSum = sha256(readFileSync(join(img, 'layer.tar')));
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Entrypoint: ['/pause'], User: '65535:65535' },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerSum}`] },
      history: [{ created_by: 'e2e/cluster/local-real-image.ts (gcc -static pause.c)' }],
    });
    const configName = `${sha256(config)}.json`;
    writeFileSync(join(img, configName), config);
    writeFileSync(
      join(img, 'manifest.json'),
      JSON.stringify([{ Config: configName, RepoTags: [PAUSE_REF], Layers: ['layer.tar'] }]),
    );
    const tmp = join(work, 'pause.tar');
    await run('tar', [
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '-C',
      img,
      '-cf',
      tmp,
      'manifest.json',
      configName,
      'layer.tar',
    ]);
    renameSync(tmp, archive);
    return { ref: PAUSE_REF, archive };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
