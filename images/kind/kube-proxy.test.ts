// The kube-proxy image preloaded in the kind node image writes to the iptables backend the node's
// kubelet uses (images/kind/kube-proxy/iptables-wrapper): run from its own image in a network
// namespace that plays a node whose kubelet made its marker chain with iptables-legacy (as on kind
// nodes on podman), then one whose kubelet used iptables-nft.
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { nsExec, privilegedSkipReason, sh } from '../../e2e/netns.ts';
import { buildah, inImage, mountImage, run } from '../rootfs.ts';
import { kindPreloadedImages } from './node-image.ts';

const skip = privilegedSkipReason();

describe("kube-proxy's image follows the node's iptables backend", { skip, timeout: 30 * 60_000 }, () => {
  let image = '';
  const namespaces: string[] = [];
  before(async () => {
    const archive = (await kindPreloadedImages()).find((i) => /\/kube-proxy:v/.test(i.ref))!.archive;
    image = (await buildah(['pull', '--quiet', `docker-archive:${archive}`])).trim();
  });
  after(async () => {
    for (const ns of namespaces) await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    if (image) await buildah(['rmi', image]).catch(() => undefined);
  });

  for (const backend of ['legacy', 'nft'] as const) {
    test(`kubelet on iptables-${backend}: kube-proxy's iptables commands become ${backend}, and see the kubelet's chain`, async () => {
      const ns = `tpf-kp-${backend}-${process.pid % 100000}`;
      namespaces.push(ns);
      await sh(['ip', 'netns', 'add', ns]);
      // What the kubelet leaves in its backend before kube-proxy starts.
      await nsExec(ns, [`iptables-${backend}`, '-t', 'mangle', '-N', 'KUBE-KUBELET-CANARY']);
      const root = await mountImage(image);
      try {
        const r = await run(inImage(root.root, root.env, ns, { privileged: true }, ['iptables-save', '-t', 'mangle']));
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^:KUBE-KUBELET-CANARY /m, "kube-proxy reads the kubelet's ruleset");
        for (const c of ['iptables', 'iptables-restore', 'ip6tables-save']) {
          assert.equal(readlinkSync(path.join(root.root, 'usr/sbin', c)), `xtables-${backend}-multi`);
        }
      } finally {
        await root.remove();
      }
    });
  }
});
