// The datapath self-test (ADR 0021). A locally sent packet never traverses PREROUTING, where the
// TPROXY rules are, so the probe leaves the node's netns stack by one end of a veth pair and arrives
// on the other (both ends stay in the node's netns): on arrival it goes through prerouting like a
// packet crossing the node. The renderers' self-test rule sends it from the probe interface to the
// listen stage (gate, tproxy, mark), the fwmark ip rule and route deliver it to the transparent
// listener, and the sidecar, recognising the TEST-NET destination, answers PROBE_REPLY and closes.
// Only those bytes count as a pass: a missing rule, ip rule or route, a closed gate or no listener
// each leave the probe unanswered (measured in selftest.netns.test.ts).
//
// The probe link's routes carry hoplimit 1: a probe that is not diverted (FailOpen bypass, no
// listener) would be forwarded out of the probe interface into itself; TTL 1 ends that at the first
// hop (measured: 0 forwarded packets instead of 63). Its source lives on the arriving interface, so
// strict rp_filter passes; accept_local lets a packet with a local source in.
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../api/errors.ts';
import type { Family } from '../api/net.ts';
import {
  type DatapathCondition,
  datapathCondition,
  PROBE_ADDR,
  PROBE_IN,
  PROBE_INTERVAL_MS,
  PROBE_MAC,
  PROBE_OUT,
  PROBE_PORT,
  PROBE_REPLY,
  PROBE_TIMEOUT_MS,
} from '../api/selftest.ts';
import type { Mutator } from './filter-nft.ts';
import { run, type Argv } from './run.ts';

/** Pure: the commands that set the probe link up (create once, the rest idempotent), and its sysctls. */
export function probeLinkPlan(families: readonly Family[]): {
  create: Argv;
  configure: Argv[];
  sysctls: Array<[string, string]>;
} {
  const configure: Argv[] = [];
  const sysctls: Array<[string, string]> = [
    // The probe's source is a local address: without accept_local it is a martian (measured: timeout).
    [`ipv4/conf/${PROBE_IN}/accept_local`, '1'],
    // Explicit, whatever conf/default says: the reverse-path check of a probe must not depend on it.
    [`ipv4/conf/${PROBE_IN}/rp_filter`, '0'],
  ];
  for (const dev of [PROBE_OUT, PROBE_IN]) {
    // No link-local address and no router solicitations from a pair that only carries the probe.
    configure.push(['ip', 'link', 'set', 'dev', dev, 'addrgenmode', 'none']);
    if (families.includes('IPv6')) sysctls.push([`ipv6/conf/${dev}/disable_ipv6`, '0']);
  }
  configure.push(['ip', 'link', 'set', 'dev', PROBE_OUT, 'up'], ['ip', 'link', 'set', 'dev', PROBE_IN, 'up']);
  for (const f of families) {
    const a = PROBE_ADDR[f],
      v = f === 'IPv4' ? '-4' : '-6';
    configure.push(
      ['ip', v, 'addr', 'replace', `${a.src}/${a.prefix}`, 'dev', PROBE_IN, ...(f === 'IPv6' ? ['nodad'] : [])],
      ['ip', v, 'route', 'replace', `${a.dst}/${a.prefix}`, 'dev', PROBE_OUT, 'hoplimit', '1'],
      ['ip', v, 'neigh', 'replace', a.dst, 'lladdr', PROBE_MAC.in, 'dev', PROBE_OUT, 'nud', 'permanent'],
    );
  }
  return {
    create: [
      'ip',
      'link',
      'add',
      PROBE_OUT,
      'address',
      PROBE_MAC.out,
      'type',
      'veth',
      'peer',
      'name',
      PROBE_IN,
      'address',
      PROBE_MAC.in,
    ],
    configure,
    sysctls,
  };
}

/** absent; ours (a veth with our fixed MAC: the marker we wrote); or someone else's interface of that name. */
export async function probeLinkOwner(): Promise<'absent' | 'ours' | 'foreign'> {
  const r = await run(['ip', '-j', '-d', 'link', 'show', 'dev', PROBE_OUT]);
  if (r.code !== 0) return 'absent';
  const [link] = JSON.parse(r.stdout) as Array<{ address?: string; linkinfo?: { info_kind?: string } }>;
  return link?.address === PROBE_MAC.out && link.linkinfo?.info_kind === 'veth' ? 'ours' : 'foreign';
}

export interface ProbeLinkOptions {
  families: readonly Family[];
  /** Where the writable /proc/sys/net is (agent-watch: /host, ADR 0020; the init container: /). */
  sysctlRoot: string;
  mutate: Mutator;
  dryRun: boolean;
  out?: (text: string) => void;
  /** Whether a state file records the link as ours (so cleanup removes it); checked before creating it. */
  recorded?: () => boolean;
  /** Runs `fn` holding the state directory's lock (lock.ts), the one a cleanup holds while it removes the link. */
  lock?: <T>(fn: () => Promise<T>) => Promise<T>;
}

/** Creates the probe link when absent and (re)asserts its addresses, routes and sysctls; throws on a foreign one. */
export async function ensureProbeLink(o: ProbeLinkOptions): Promise<void> {
  const owner = await probeLinkOwner();
  if (owner === 'foreign')
    throw new Error(`an interface ${PROBE_OUT} exists that tpfleet did not create (not a veth with ${PROBE_MAC.out})`);
  const p = probeLinkPlan(o.families);
  // Idempotency point: created only while a state records it, checked under the state directory's
  // lock. A leaving node's cleanup holds that lock while it deletes the link and then the state, and
  // the old pod's agent-watch may still be running beside it (its self-test retrying against rules
  // that are going away): unlocked, its check could pass just before the state went and its create
  // land just after the delete, leaving a link (and its routes) that no state records.
  const create = async () => {
    if ((await probeLinkOwner()) !== 'absent') return;
    if (o.recorded && !o.recorded()) throw new Error(`no state records the probe link ${PROBE_OUT}: run apply first`);
    await o.mutate(p.create);
  };
  if (owner === 'absent') await (o.lock ? o.lock(create) : create());
  // Sysctls first: with IPv6 off by default (conf/default, as in many container netns) the probe
  // ends' IPv6 addresses can only be added once disable_ipv6 is 0 on them (measured).
  for (const [key, value] of p.sysctls) {
    const path = join(o.sysctlRoot, 'proc/sys/net', key);
    if (o.dryRun) o.out?.(`$ echo ${value} > ${path}`);
    else writeFileSync(path, value);
  }
  for (const argv of p.configure) await o.mutate(argv);
}

/** Deletes the probe link (its peer, addresses, routes, neighbours and sysctls go with it) when it is ours. */
export async function removeProbeLink(mutate: Mutator): Promise<void> {
  if ((await probeLinkOwner()) === 'ours') await mutate(['ip', 'link', 'del', 'dev', PROBE_OUT]);
}

/** One probe of one family: undefined when the sidecar's reply came back, else what happened. */
export function probeOnce(f: Family, timeoutMs = PROBE_TIMEOUT_MS): Promise<string | undefined> {
  const a = PROBE_ADDR[f];
  return new Promise((resolve) => {
    let got = '';
    const s = connect({ host: a.dst, port: PROBE_PORT, localAddress: a.src, family: f === 'IPv4' ? 4 : 6 });
    const done = (reason: string | undefined) => {
      clearTimeout(timer);
      s.destroy();
      resolve(reason);
    };
    const timer = setTimeout(
      () => done(`${f}: no reply within ${timeoutMs} ms${got ? ` (got ${JSON.stringify(got)})` : ''}`),
      timeoutMs,
    );
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      got += d;
      if (got.length > PROBE_REPLY.length) done(`${f}: unexpected reply ${JSON.stringify(got.slice(0, 64))}`);
    });
    s.on('end', () =>
      done(
        got === PROBE_REPLY ? undefined : `${f}: connection closed with ${JSON.stringify(got)} instead of the reply`,
      ),
    );
    s.on('error', (e) => done(`${f}: ${errorMessage(e)}`));
  });
}

/**
 * A probe per family through the link as it is; when one fails (or the link is missing), the link is
 * set up again in full (addresses, routes, sysctls re-asserted) and the probe tried once more. A
 * passing node thus costs one `ip` call and the probes per test.
 */
export async function selfTest(o: ProbeLinkOptions, proxyDown?: () => string | undefined): Promise<DatapathCondition> {
  for (let attempt = 0; ; attempt++) {
    // The watchdog's verdict first: while it holds the fail policy the probe would fail anyway, and
    // re-asserting the link then would only compete with the gate write for the CPU (measured: the
    // FailOpen switch in e2e/dataplane.test.ts took 4-5 s instead of < 2 s on a loaded machine).
    const down = proxyDown?.();
    if (down) return datapathCondition('ProxyDown', down);
    try {
      if (attempt > 0 || (await probeLinkOwner()) !== 'ours') await ensureProbeLink(o);
    } catch (e) {
      if (attempt === 0) continue;
      return datapathCondition('ProbeSetupFailed', errorMessage(e));
    }
    const failures = (await Promise.all(o.families.map((f) => probeOnce(f)))).filter((r) => r !== undefined);
    if (failures.length === 0)
      return datapathCondition(
        'Passed',
        `${o.families.join(', ')} to ${o.families.map((f) => PROBE_ADDR[f].dst).join(', ')}`,
      );
    if (attempt > 0) return datapathCondition('ProbeFailed', failures.join('; '));
  }
}

export interface SelfTestLoop extends ProbeLinkOptions {
  publish?: (c: DatapathCondition) => Promise<unknown>;
  /** Why the watchdog holds the sidecar down (its gate is not pass), or undefined: no probe meanwhile. */
  proxyDown?: () => string | undefined;
  /** Resolves once the watchdog first found the sidecar healthy: no probe before the sidecar is up. */
  started?: Promise<void>;
  log: Logger;
  signal: AbortSignal;
  /** After a pass (default 30 s); while failing it looks again every retryMs (default 2 s). */
  intervalMs?: number;
  retryMs?: number;
}

/** agent-watch's loop: a test at start, then on an interval, the condition published on each change. */
export async function runSelfTests(o: SelfTestLoop): Promise<void> {
  let last: DatapathCondition | undefined;
  await Promise.race([o.started, new Promise((r) => o.signal.addEventListener('abort', r, { once: true }))]);
  while (!o.signal.aborted) {
    const c = await selfTest(o, o.proxyDown);
    if (!last || last.reason !== c.reason || last.message !== c.message) {
      if (c.status === 'True') o.log.info({ reason: c.reason, message: c.message }, 'datapath self-test');
      else o.log.warn({ reason: c.reason, message: c.message }, 'datapath self-test');
    }
    try {
      await o.publish?.(c);
      last = c;
    } catch (e) {
      o.log.warn({ err: errorMessage(e) }, 'datapath condition not published');
    }
    const wait = c.status === 'True' ? (o.intervalMs ?? PROBE_INTERVAL_MS) : (o.retryMs ?? 2000);
    await sleep(wait, undefined, { signal: o.signal }).catch(() => undefined);
  }
}
