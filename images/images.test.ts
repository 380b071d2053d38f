// The container images as built by images/build.sh (real buildah builds from the repo's Dockerfile):
// what `docker inspect` and a look inside would show a user. The processes that run in the images
// are in entrypoints.test.ts. Sizes and build times are printed as test diagnostics.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { privilegedSkipReason } from '../e2e/netns.ts';
import type { BuiltImage } from '../e2e/cluster/provider.ts';
import { buildImages, runBuildSh } from './images.ts';
import { buildah, imageConfig, mountImage, type Rootfs } from './rootfs.ts';

const exec = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '..');
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const MB = 1e6;
/** Generous bounds; the measured sizes are in docs/images.md. The node image once carried node twice (ADR 0005): 489 MB; with node_modules and tsx instead of bundles, 363 MB. */
const MAX_SIZE = { operator: 320 * MB, node: 340 * MB };
const BUILD_TOOLS = ['gcc', 'g++', 'cpp', 'make', 'binutils', 'python3', 'gcc-12', 'g++-12', 'python3.11'];

const skip = privilegedSkipReason(); // buildah storage and mounts need root

describe('container images', { skip, timeout: 30 * 60_000 }, () => {
  let images: Record<'operator' | 'node', BuiltImage>;
  const rootfs = {} as Record<'operator' | 'node', Rootfs>;
  let buildMs = 0;

  before(async () => {
    const t0 = Date.now();
    const [operator, node] = await buildImages(['operator', 'node']);
    buildMs = Date.now() - t0;
    images = { operator: operator!, node: node! };
    rootfs.operator = await mountImage(operator!.ref);
    rootfs.node = await mountImage(node!.ref);
  });
  after(async () => {
    for (const r of Object.values(rootfs)) await r.remove();
  });

  test('labels: OCI title, description, source, licenses and the package version', async (t) => {
    t.diagnostic(`first buildImages() of this run: ${(buildMs / 1000).toFixed(1)} s (cold or cached)`);
    for (const [target, img] of Object.entries(images)) {
      const labels = (await imageConfig(img.ref)).Labels ?? {};
      assert.equal(labels['org.opencontainers.image.title'], `tpfleet-${target}`);
      assert.match(labels['org.opencontainers.image.description'] ?? '', /\w{10}/);
      assert.equal(labels['org.opencontainers.image.source'], 'https://github.com/tpfleet/tpfleet');
      assert.equal(labels['org.opencontainers.image.licenses'], 'Apache-2.0');
      assert.equal(labels['org.opencontainers.image.version'], VERSION);
    }
  });

  test('operator image: runs as 65532, entrypoint tpfleet-operator', async () => {
    const c = await imageConfig(images.operator.ref);
    assert.equal(c.User, '65532:65532');
    assert.deepEqual(c.Entrypoint, ['tpfleet-operator']);
    assert.ok(!c.Cmd?.length, `no default args, got ${JSON.stringify(c.Cmd)}`);
  });

  test('node image: runs as 65532 (the sidecar), default command the sidecar on the ConfigMap path', async () => {
    const c = await imageConfig(images.node.ref);
    assert.equal(c.User, '65532:65532');
    assert.ok(!c.Entrypoint?.length, "no entrypoint: the DaemonSet sets each container's command");
    assert.deepEqual(c.Cmd, ['tpfleet-sidecar', '--config', '/etc/tpfleet/nodeconfig.yaml']);
    for (const bin of ['tpfleet-agent', 'tpfleet-sidecar']) {
      assert.ok(statSync(path.join(rootfs.node.root, 'usr/local/bin', bin)).mode & 0o111, `${bin} is executable`);
    }
  });

  test("node image: the only file capability is cap_net_raw=p on the sidecar's small launcher", async () => {
    const { stdout } = await exec('getcap', ['-r', rootfs.node.root], { maxBuffer: 16 << 20 });
    const caps = stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace(rootfs.node.root, ''));
    assert.deepEqual(caps, ['/usr/local/libexec/tpfleet/sidecar-exec cap_net_raw=p']);
    // A launcher, not a second node binary (which cost 127 MB before).
    const launcher = statSync(path.join(rootfs.node.root, 'usr/local/libexec/tpfleet/sidecar-exec'));
    assert.ok(launcher.size < 100_000, `sidecar-exec is ${launcher.size} bytes`);
    assert.deepEqual(readdirSync(path.join(rootfs.node.root, 'usr/local/libexec/tpfleet')), ['sidecar-exec']);
    // and no capability in the operator image at all
    assert.equal((await exec('getcap', ['-r', rootfs.operator.root], { maxBuffer: 16 << 20 })).stdout.trim(), '');
  });

  test("no setuid or setgid programs in either image (nothing raises privileges but the sidecar's capability)", () => {
    for (const [target, r] of Object.entries(rootfs)) {
      const found: string[] = [];
      walk(r.root, (rel, mode) => {
        if (mode & 0o6000) found.push(rel);
      });
      assert.deepEqual(found, [], target);
    }
  });

  test('no compilers or build tools in either image (they stay in the build stage)', () => {
    for (const [target, r] of Object.entries(rootfs)) {
      const installed = installedPackages(r.root);
      assert.ok(
        installed.has('libc6') && installed.size > 50,
        `${target}: dpkg status read (${installed.size} packages)`,
      );
      assert.deepEqual(
        BUILD_TOOLS.filter((p) => installed.has(p)),
        [],
        `${target}: build packages installed`,
      );
      for (const f of ['gcc', 'g++', 'cc', 'c++', 'make', 'python3']) {
        assert.throws(() => statSync(path.join(r.root, 'usr/bin', f)), /ENOENT/, `${target}: /usr/bin/${f}`);
      }
    }
    const node = installedPackages(rootfs.node.root);
    for (const p of ['nftables', 'iptables', 'iproute2']) assert.ok(node.has(p), `node image has ${p}`);
  });

  test('/opt/tpfleet holds only compiled JavaScript (one bundle per entrypoint) and the addon: no TypeScript, no node_modules', async () => {
    const want = {
      operator: ['dist/tpfleet-operator.mjs'],
      node: ['dist/build/Release/tpfleet_native.node', 'dist/tpfleet-agent.mjs', 'dist/tpfleet-sidecar.mjs'],
    };
    for (const [target, r] of Object.entries(rootfs) as ['operator' | 'node', Rootfs][]) {
      const app = path.join(r.root, 'opt/tpfleet');
      assert.deepEqual(listFiles(app, []).sort(), want[target], target);
      for (const f of want[target]) assert.ok(statSync(path.join(app, f)).size > 0, f);
    }
    // What the build context holds (build.sh hashes it): sources, no tests.
    const context = (await runBuildSh(['--context-files'])).trim().split('\n').sort();
    assert.ok(!context.some((f) => /\.test\.ts$|\/testdata\//.test(f)), 'no tests in the context');
    assert.ok(
      context.includes('sidecar/main.ts') &&
        context.includes('operator/main.ts') &&
        context.includes('images/bundle.ts'),
    );
  });

  test('archives: docker-archive tarballs tagged with the image reference, within the size bounds', async (t) => {
    for (const [target, img] of Object.entries(images) as ['operator' | 'node', BuiltImage][]) {
      const { stdout } = await exec('tar', ['-xOf', img.archive, 'manifest.json']);
      const manifest = JSON.parse(stdout) as { RepoTags: string[] }[];
      assert.deepEqual(
        manifest.map((m) => m.RepoTags),
        [[img.ref]],
      );
      const size = statSync(img.archive).size;
      t.diagnostic(`${img.ref}: ${(size / MB).toFixed(0)} MB uncompressed (${img.archive})`);
      assert.ok(size < MAX_SIZE[target], `${target} image ${(size / MB).toFixed(0)} MB < ${MAX_SIZE[target] / MB} MB`);
    }
  });

  test('unchanged inputs: a second build reuses both images within seconds', async (t) => {
    const ids = async () =>
      Promise.all(
        Object.values(images).map(async (i) =>
          (await buildah(['images', '--noheading', '--no-trunc', '--format', '{{.ID}}', i.ref])).trim(),
        ),
      );
    const before = await ids();
    const t0 = Date.now();
    const again = await buildImages(['operator', 'node']);
    const ms = Date.now() - t0;
    t.diagnostic(`warm buildImages(): ${(ms / 1000).toFixed(1)} s`);
    assert.deepEqual(again, Object.values(images));
    assert.deepEqual(await ids(), before, 'same image ids: nothing rebuilt');
    assert.ok(ms < 60_000, `warm build took ${ms} ms`);
  });
});

function installedPackages(root: string): Set<string> {
  const status = readFileSync(path.join(root, 'var/lib/dpkg/status'), 'utf8');
  const names = new Set<string>();
  for (const stanza of status.split('\n\n')) {
    const name = /^Package: (.+)$/m.exec(stanza)?.[1];
    if (name && /^Status: install ok installed$/m.test(stanza)) names.add(name);
  }
  return names;
}

/** Calls fn for every regular file under root (relative path, mode); does not follow symlinks. */
function walk(root: string, fn: (rel: string, mode: number) => void, rel = ''): void {
  for (const e of readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) walk(root, fn, p);
    else if (e.isFile()) fn(p, lstatSync(path.join(root, p)).mode);
  }
}

/** Files under dir (relative paths), skipping the given subtrees. */
function listFiles(dir: string, skipDirs: string[], rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (skipDirs.includes(p)) continue;
    if (e.isDirectory()) out.push(...listFiles(dir, skipDirs, p));
    else out.push(p);
  }
  return out;
}
