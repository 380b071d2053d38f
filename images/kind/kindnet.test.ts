// tpfleet-kindnet, the kind node image's default CNI agent, run from its own image (the one preloaded
// into the node image) in a network namespace that plays one kind node (eth0 on the node network,
// both families), against a stand-in kubectl that lists the nodes: what a kind node gets from it
// (its CNI config, routes to the other nodes' pod CIDRs, the masquerade table, forwarding) and what
// it refuses.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { nsExec, privilegedSkipReason, sh, waitFor } from '../../e2e/netns.ts';
import { buildah, inImage, mountImage, type Rootfs } from '../rootfs.ts';
import { kindPreloadedImages } from './node-image.ts';

const skip = privilegedSkipReason();

describe('tpfleet-kindnet on a node', { skip, timeout: 30 * 60_000 }, () => {
  const ns = `tpf-kn-${process.pid % 100000}`;
  let root: Rootfs | undefined,
    image = '',
    conf = '';
  let agent: ChildProcess | undefined;
  let log = '';

  before(async () => {
    const archive = (await kindPreloadedImages()).find((i) => i.ref.includes('/kindnet:'))!.archive;
    image = (await buildah(['pull', '--quiet', `docker-archive:${archive}`])).trim();
    root = await mountImage(image);
    const dir = path.join(root.root, 'tmp');
    conf = path.join(root.root, 'etc/cni/net.d/10-kindnet.conflist');
    await sh(['ip', 'netns', 'add', ns]);
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    // The node network: a veth whose peer stays in the namespace too (no other end is needed).
    await nsExec(ns, [
      'ip',
      'link',
      'add',
      'eth0',
      'mtu',
      '1400',
      'type',
      'veth',
      'peer',
      'name',
      'eth0peer',
      'mtu',
      '1400',
    ]);
    await nsExec(ns, ['ip', 'link', 'set', 'eth0peer', 'up']);
    await nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    await nsExec(ns, ['ip', 'addr', 'add', '10.250.7.2/24', 'dev', 'eth0']);
    await nsExec(ns, ['ip', '-6', 'addr', 'add', 'fd00:250::2/64', 'dev', 'eth0', 'nodad']);
    await nsExec(ns, ['ip', 'route', 'add', 'default', 'via', '10.250.7.1']);
    // The API's answer to the agent's one query, in its jsonpath format: this node, two others,
    // and one whose podCIDRs are not CIDRs (never used).
    const nodes = [
      'kind-worker|10.244.1.0/24 fd00:10:244:1::/64|10.250.7.2 fd00:250::2 ',
      'kind-control-plane|10.244.0.0/24 fd00:10:244::/64|10.250.7.3 fd00:250::3 ',
      'kind-worker2|10.244.2.0/24 fd00:10:244:2::/64|10.250.7.4 fd00:250::4 ',
      'kind-evil|10.244.9.0/24;reboot|10.250.7.9 ',
    ].join('\n');
    writeFileSync(path.join(dir, 'nodes.txt'), nodes);
    // Ahead of the image's kubectl on its PATH (/usr/local/sbin comes first).
    writeFileSync(path.join(root.root, 'usr/local/sbin/kubectl'), '#!/bin/sh\ncat /tmp/nodes.txt\n');
    chmodSync(path.join(root.root, 'usr/local/sbin/kubectl'), 0o755);
    const argv = inImage(
      root.root,
      [...root.env, 'NODE_NAME=kind-worker', 'POD_SUBNET=10.244.0.0/16,fd00:10:244::/56', 'SYNC_SECONDS=1'],
      ns,
      { privileged: true },
      ['/usr/local/bin/tpfleet-kindnet'],
    );
    agent = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    await waitFor(
      'the agent to write its CNI config and routes',
      async () =>
        existsSync(conf) && (await nsExec(ns, ['ip', '-6', 'route', 'show'])).includes('fd00:10:244:2::/64 via'),
      20_000,
      100,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\nagent log:\n${log}`);
    });
  });
  after(async () => {
    if (agent && agent.exitCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      // unshare waits for its child and ignores SIGTERM; SIGKILL ends it, and --kill-child the agent.
      agent.kill('SIGKILL');
      await exited;
    }
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    await root?.remove();
    if (image) await buildah(['rmi', image]).catch(() => undefined);
  });

  test("writes this node's CNI config: ptp veths, host-local over both pod CIDRs, the node's MTU, portmap", () => {
    const c = JSON.parse(readFileSync(conf, 'utf8')) as {
      name: string;
      plugins: {
        type: string;
        mtu?: number;
        ipMasq?: boolean;
        ipam?: { ranges: { subnet: string }[][]; routes: { dst: string }[] };
      }[];
    };
    assert.deepEqual(
      c.plugins.map((p) => p.type),
      ['ptp', 'portmap'],
    );
    const ptp = c.plugins[0]!;
    assert.equal(ptp.mtu, 1400);
    assert.equal(ptp.ipMasq, false, 'pod-to-pod traffic keeps its source address');
    assert.deepEqual(ptp.ipam!.ranges, [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:10:244:1::/64' }]]);
    assert.deepEqual(ptp.ipam!.routes, [{ dst: '0.0.0.0/0' }, { dst: '::/0' }]);
  });

  test("routes every other node's pod CIDRs via its InternalIP of the same family, and nothing for a malformed node", async () => {
    const v4 = await nsExec(ns, ['ip', 'route', 'show']);
    const v6 = await nsExec(ns, ['ip', '-6', 'route', 'show']);
    assert.match(v4, /^10\.244\.0\.0\/24 via 10\.250\.7\.3 dev eth0/m);
    assert.match(v4, /^10\.244\.2\.0\/24 via 10\.250\.7\.4 dev eth0/m);
    assert.match(v6, /^fd00:10:244::\/64 via fd00:250::3 dev eth0/m);
    assert.match(v6, /^fd00:10:244:2::\/64 via fd00:250::4 dev eth0/m);
    assert.doesNotMatch(
      v4,
      /10\.244\.1\.0|10\.244\.9\.0/,
      'no route for its own pod CIDR, none for the malformed node',
    );
    assert.match(log, /node kind-evil: unexpected podCIDRs/);
  });

  test('masquerades only what leaves the pod subnet, and turns on forwarding in the node', async () => {
    const rules = await nsExec(ns, ['nft', 'list', 'table', 'ip', 'tpfleet-kindnet']);
    assert.match(rules, /type nat hook postrouting priority srcnat/);
    assert.match(rules, /ip saddr 10\.244\.0\.0\/16 ip daddr != 10\.244\.0\.0\/16 masquerade/);
    assert.match(
      await nsExec(ns, ['nft', 'list', 'table', 'ip6', 'tpfleet-kindnet']),
      /ip6 saddr fd00:10:244::\/56 ip6 daddr != fd00:10:244::\/56 masquerade/,
    );
    assert.equal(
      (await nsExec(ns, ['sysctl', '-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']))
        .trim()
        .split(/\s+/)
        .join(' '),
      '1 1',
    );
  });

  test('leaves the config alone while the pod CIDRs stay the same (no rewrite every sync)', async () => {
    const first = log.match(/wrote /g)?.length ?? 0;
    await new Promise((r) => setTimeout(r, 2500)); // two more syncs
    assert.equal(log.match(/wrote /g)?.length ?? 0, first);
    assert.equal(first, 1);
  });
});
