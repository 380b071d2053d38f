// The `local` provider's one piece of networking: a network namespace joined to the host by a
// veth pair on a private /30. It exists for the custom-metrics adapter, for two reasons:
//  - the API server proxies to an APIService's endpoint IP (aggregator routing, no kube-proxy)
//    and Endpoint validation rejects loopback addresses, so the adapter needs a real address;
//  - the upstream test adapter hard-codes its metric-writing HTTP port (:8080 on every
//    address); in its own namespace it can never collide with anything on the host.
// The host side of the pair is where the API server binds, so the adapter reaches it over the
// veth. Invariant: everything here is named after this process and removed by destroy(), or by
// the exit hook if the test process dies first.
import { execFile, execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface LocalNet {
  /** The namespace's name (for `ip netns exec`). */
  ns: string;
  /** Host-side address (the API server binds here). */
  hostIp: string;
  /** Namespace-side address (the adapter listens here; the APIService's endpoint). */
  nsIp: string;
  destroy(): Promise<void>;
}

const live = new Map<string, string>(); // ns -> host-side veth
process.on('exit', () => {
  for (const [ns, veth] of live) {
    // Deleting one end of a veth pair deletes both; the namespace goes with its name.
    for (const argv of [
      ['link', 'del', veth],
      ['netns', 'del', ns],
    ]) {
      try {
        execFileSync('ip', argv, { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  }
});

async function ip(args: string[]): Promise<string> {
  try {
    return (await run('ip', args)).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${err.stderr?.trim() || err.message}`, { cause: e });
  }
}

/** A /30 in 10.251.0.0/16 that no interface of this host uses yet (other tests use 10.1-200.x). */
async function freeSubnet(): Promise<[string, string]> {
  const used = await ip(['-4', '-o', 'addr', 'show']);
  for (let i = 0; i < 50; i++) {
    const n = randomInt(0, 1 << 14) * 4;
    const base = `10.251.${n >> 8}.`,
      low = n & 0xff;
    const pair: [string, string] = [`${base}${low + 1}`, `${base}${low + 2}`];
    if (!pair.some((a) => used.includes(`${a}/`))) return pair;
  }
  throw new Error('local provider: no free /30 in 10.251.0.0/16');
}

let counter = 0;

export async function createLocalNet(): Promise<LocalNet> {
  const id = `${process.pid % 100000}x${counter++}`;
  const ns = `tpf-local-${id}`,
    veth = `tpl${id}h`,
    peer = `tpl${id}n`; // <= 15 chars
  const [hostIp, nsIp] = await freeSubnet();
  live.set(ns, veth);
  const destroy = async () => {
    if (!live.delete(ns)) return;
    await ip(['link', 'del', veth]).catch(() => undefined);
    await ip(['netns', 'del', ns]).catch(() => undefined);
  };
  try {
    await ip(['netns', 'add', ns]);
    await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', peer, 'netns', ns]);
    await ip(['addr', 'add', `${hostIp}/30`, 'dev', veth]);
    await ip(['link', 'set', veth, 'up']);
    await ip(['-n', ns, 'addr', 'add', `${nsIp}/30`, 'dev', peer]);
    await ip(['-n', ns, 'link', 'set', peer, 'up']);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    return { ns, hostIp, nsIp, destroy };
  } catch (e) {
    await destroy();
    throw e;
  }
}
