// The kind node image built here (images/kind/build.sh), looked at as `kind create cluster` uses it:
// kind's layout and files, the node binaries at the pinned version, and every image kubeadm and the
// default manifests need already in containerd's store, so a cluster comes up with no registry.
// Whether kind really brings a cluster up on it is e2e/cluster/cluster.test.ts's kind tier.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { ensureBinaries, k8sVersion } from '../../e2e/testenv/binaries.ts';
import { privilegedSkipReason } from '../../e2e/netns.ts';
import { buildah, imageConfig, mountImage, type Rootfs } from '../rootfs.ts';
import { ensureKindNodeImage, kindModuleDir, kindPreloadedImages } from './node-image.ts';

const exec = promisify(execFile);
const skip = privilegedSkipReason(); // buildah storage and mounts need root
const K8S = k8sVersion();

/** Every container image a manifest names. */
function manifestImages(text: string): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'image' && typeof x === 'string') out.push(x);
        else if (k === 'helperPod.yaml' && typeof x === 'string') out.push(...manifestImages(x));
        else if (k === 'command' && Array.isArray(x) && x.includes('--helper-image'))
          out.push(String(x[x.indexOf('--helper-image') + 1]));
        else walk(x);
      }
    }
  };
  for (const d of parseAllDocuments(text)) walk(d.toJS());
  return out;
}

describe('kind node image', { skip, timeout: 60 * 60_000 }, () => {
  let ref = '',
    root: Rootfs,
    buildMs = 0,
    kindFiles = '';

  before(async () => {
    const t0 = Date.now();
    ref = await ensureKindNodeImage();
    buildMs = Date.now() - t0;
    root = await mountImage(ref);
    kindFiles = path.join(await kindModuleDir(), 'images/base/files');
  });
  after(async () => {
    await root?.remove();
  });

  test("kind's layout: /kind/version, kubelet, kubeadm and kubectl in /usr/bin at the pinned version, kind's entrypoint running systemd", async (t) => {
    t.diagnostic(`ensureKindNodeImage(): ${(buildMs / 1000).toFixed(1)} s (cold or cached)`);
    assert.equal(readFileSync(path.join(root.root, 'kind/version'), 'utf8'), K8S);
    const bin = (b: string) => path.join(root.root, 'usr/bin', b);
    assert.equal((await exec(bin('kubelet'), ['--version'])).stdout.trim(), `Kubernetes ${K8S}`);
    assert.equal((await exec(bin('kubeadm'), ['version', '-o', 'short'])).stdout.trim(), K8S);
    assert.match(
      (await exec(bin('kubectl'), ['version', '--client'])).stdout,
      new RegExp(`Client Version: ${K8S.replace(/\./g, '\\.')}`),
    );
    const c = await imageConfig(ref);
    assert.deepEqual(c.Entrypoint, ['/usr/local/bin/entrypoint', '/sbin/init']);
    assert.ok(c.Env?.includes('container=docker'), 'systemd is told it runs in a container');
    const raw = JSON.parse(await buildah(['inspect', '--type', 'image', ref])) as {
      Docker: { config: { StopSignal?: string } };
      OCIv1: { config: { StopSignal?: string } };
    };
    assert.equal(
      raw.OCIv1.config.StopSignal ?? raw.Docker.config.StopSignal,
      'SIGRTMIN+3',
      'systemd exits on SIGRTMIN+3',
    );
    for (const unit of ['kubelet.service', 'containerd.service', 'undo-mount-hacks.service']) {
      assert.equal(
        readlinkSync(path.join(root.root, 'etc/systemd/system/multi-user.target.wants', unit)),
        `/etc/systemd/system/${unit}`,
        `${unit} is enabled`,
      );
    }
    for (const p of ['ptp', 'host-local', 'portmap', 'loopback']) {
      const target = readlinkSync(path.join(root.root, 'opt/cni/bin', p));
      assert.ok(
        statSync(path.join(root.root, target)).mode & 0o111,
        `CNI plugin ${p} where containerd looks (${target})`,
      );
    }
  });

  test("kind's own files from the pinned kind module; ours differ only where images/kind/README.md says", () => {
    for (const f of [
      'usr/local/bin/entrypoint',
      'kind/bin/mount-product-files.sh',
      'etc/systemd/system/kubelet.service',
      'etc/systemd/system/kubelet.service.d/10-kubeadm.conf',
      'etc/systemd/system/containerd.service',
    ]) {
      assert.equal(
        readFileSync(path.join(root.root, f), 'utf8'),
        readFileSync(path.join(kindFiles, f), 'utf8'),
        `${f} is kind's`,
      );
    }
    const theirs = readFileSync(path.join(kindFiles, 'etc/containerd/config.toml'), 'utf8').split('\n');
    const ours = readFileSync(path.join(root.root, 'etc/containerd/config.toml'), 'utf8').split('\n');
    const changed = ours.filter((l, i) => l !== theirs[i]);
    assert.deepEqual(
      changed.map((l) => l.trim()),
      ['restrict_oom_score_adj = true'],
      'only restrict_oom_score_adj differs (no CAP_SYS_RESOURCE)',
    );
    assert.match(
      readFileSync(path.join(root.root, 'etc/default/kubelet'), 'utf8'),
      /^KUBELET_EXTRA_ARGS=--runtime-cgroups=\/system\.slice\/containerd\.service --fail-cgroupv1=false$/m,
    );
    const spec = JSON.parse(readFileSync(path.join(root.root, 'etc/containerd/cri-base.json'), 'utf8')) as {
      hooks: { createContainer: { path: string }[] };
      process: { rlimits?: unknown };
    };
    assert.deepEqual(
      spec.hooks.createContainer.map((h) => h.path),
      ['/kind/bin/mount-product-files.sh'],
    );
    assert.equal(spec.process.rlimits, undefined, "containers inherit the node's limits, as on kind");
  });

  test("every image kubeadm and the default CNI and storage manifests name is in containerd's store, pinned", async () => {
    const kubeadm = (
      await exec(path.join(root.root, 'usr/bin/kubeadm'), ['config', 'images', 'list', '--kubernetes-version', K8S])
    ).stdout
      .trim()
      .split('\n');
    const sandbox = /^\s*sandbox_image = "(.*)"$/m.exec(
      readFileSync(path.join(root.root, 'etc/containerd/config.toml'), 'utf8'),
    )![1]!;
    const cni = readFileSync(path.join(root.root, 'kind/manifests/default-cni.yaml'), 'utf8');
    const storage = readFileSync(path.join(root.root, 'kind/manifests/default-storage.yaml'), 'utf8');
    assert.match(cni, /would you kindly template this file/, 'kind fills in the pod subnet');
    const want = new Set([
      ...kubeadm.filter((i) => !i.includes('/pause:')),
      sandbox,
      ...manifestImages(cni.replace('{{ .PodSubnet }}', 'x')),
      ...manifestImages(storage),
    ]);
    assert.ok(want.size >= 10, `images: ${[...want]}`);
    // A throwaway containerd (the node's own build) on a copy of the image's store.
    const dir = mkdtempSync(path.join(tmpdir(), 'tpfleet-kind-store-'));
    const bin = await ensureBinaries(['containerd', 'ctr']);
    try {
      cpSync(path.join(root.root, 'var/lib/containerd'), path.join(dir, 'root'), { recursive: true });
      const sock = path.join(dir, 'c.sock');
      writeFileSync(
        path.join(dir, 'config.toml'),
        `version = 3\nroot = "${dir}/root"\nstate = "${dir}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri"]\n[grpc]\n  address = "${sock}"\n[ttrpc]\n  address = "${sock}.ttrpc"\n`,
      );
      const d = spawn(path.join(bin, 'containerd'), ['--config', path.join(dir, 'config.toml')], { stdio: 'ignore' });
      try {
        let list = '';
        for (let i = 0; i < 100 && !list; i++) {
          list = await exec(path.join(bin, 'ctr'), ['--address', sock, '-n', 'k8s.io', 'images', 'list']).then(
            (r) => r.stdout,
            () => '',
          );
          if (!list) await new Promise((r) => setTimeout(r, 200));
        }
        const rows = list
          .trim()
          .split('\n')
          .slice(1)
          .map((l) => l.split(/\s+/));
        for (const img of want) {
          const row = rows.find((r) => r[0] === img);
          assert.ok(row, `${img} is preloaded`);
          assert.match(
            row.join(' '),
            /io\.cri-containerd\.pinned=pinned/,
            `${img} is pinned (never garbage-collected)`,
          );
        }
      } finally {
        d.kill();
        await new Promise((r) => d.once('exit', r));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const preloaded = await kindPreloadedImages();
    assert.deepEqual(new Set(preloaded.map((p) => p.ref)), want, 'build.sh --images lists exactly these');
  });

  test('unchanged inputs: a second build reuses the node image within seconds', async (t) => {
    const t0 = Date.now();
    assert.equal(await ensureKindNodeImage(), ref);
    const ms = Date.now() - t0;
    t.diagnostic(`warm ensureKindNodeImage(): ${(ms / 1000).toFixed(1)} s`);
    assert.ok(ms < 30_000, `warm build took ${ms} ms`);
  });
});
