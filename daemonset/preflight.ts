// Pure checks on facts read from the host. apply refuses (and changes nothing) when any problem
// is found; the messages name the sysctl, interface or rule involved.
import { PROBE_IN, PROBE_OUT } from '../api/selftest.ts';
import { isOurRoute, isOurRule, type IpRoute, type IpRule } from './parse.ts';
import type { RoutingPlan } from './types.ts';

export interface RpSysctl {
  rp_filter: number;
  src_valid_mark: number;
}

/** net.ipv4.conf.<name>.{rp_filter,src_valid_mark}; "all" holds the global values. */
export type RpSysctls = Record<string, RpSysctl>;

/** Interfaces the rules intercept on: configured names (trailing * = prefix) or every one but lo. */
export function interceptedInterfaces(all: string[], configured: string[]): string[] {
  // The self-test's probe pair is ours and set up for the probe (selftest.ts), not a traffic interface.
  const real = all.filter((n) => n !== 'all' && n !== 'default' && n !== PROBE_OUT && n !== PROBE_IN);
  if (configured.length === 0) return real.filter((n) => n !== 'lo');
  return real.filter((n) => configured.some((c) => (c.endsWith('*') ? n.startsWith(c.slice(0, -1)) : n === c)));
}

/**
 * Reference pitfall 4: the effective rp_filter of an interface is max(all, iface); 1 or 2 together
 * with src_valid_mark=1 (all or iface) makes the reverse-path lookup follow our fwmark into the
 * local table and drop every intercepted packet.
 */
export function rpFilterProblems(sysctls: RpSysctls, interfaces: string[]): string[] {
  const all = sysctls.all ?? { rp_filter: 0, src_valid_mark: 0 };
  const bad: string[] = [];
  for (const name of interfaces) {
    const i = sysctls[name];
    if (!i) continue;
    const rp = Math.max(all.rp_filter, i.rp_filter);
    const svm = all.src_valid_mark === 1 || i.src_valid_mark === 1;
    if ((rp === 1 || rp === 2) && svm) {
      bad.push(
        `${name} (net.ipv4.conf.all.rp_filter=${all.rp_filter}, net.ipv4.conf.${name}.rp_filter=${i.rp_filter}, ` +
          `net.ipv4.conf.all.src_valid_mark=${all.src_valid_mark}, net.ipv4.conf.${name}.src_valid_mark=${i.src_valid_mark})`,
      );
    }
  }
  if (bad.length === 0) return [];
  return [
    `rp_filter 1/2 together with src_valid_mark=1 breaks TPROXY on: ${bad.join('; ')}. ` +
      "Set net.ipv4.conf.all.rp_filter and the interface's rp_filter to 0, or src_valid_mark to 0.",
  ];
}

const masks = (a: number, b: number) => (a & b) >>> 0 !== 0;

type RuleKey = Pick<RoutingPlan, 'mark' | 'mask' | 'table' | 'priority'>;

/**
 * Our priority, table and mark bits must not be used by an ip rule or route someone else owns.
 * `previous`: rules of our own earlier install (from the state file), replaced by this apply.
 */
export function routingProblems(
  p: RoutingPlan,
  rules: IpRule[],
  routes: IpRoute[],
  previous: RuleKey[] = [],
): string[] {
  const v = p.family === 'IPv4' ? 'ip -4' : 'ip -6';
  const out: string[] = [];
  for (const r of rules) {
    if (isOurRule(r, p) || previous.some((q) => isOurRule(r, q))) continue;
    if (r.priority === p.priority)
      out.push(`${v} rule priority ${p.priority} is already used by another rule: ${r.text}`);
    else if (r.table === String(p.table)) out.push(`${v} rule already looks up routing table ${p.table}: ${r.text}`);
    else if (r.fwmark !== undefined && masks(r.fwmask ?? 0xffffffff, p.mask) && masks(r.fwmark, p.mask)) {
      out.push(`${v} rule matches fwmark bits in our mask 0x${p.mask.toString(16)}: ${r.text}`);
    }
  }
  for (const r of routes) {
    if (!isOurRoute(r, p)) out.push(`${v} route table ${p.table} already holds a route we did not create: ${r.text}`);
  }
  return out;
}

export function binaryProblems(required: string[], available: Set<string>): string[] {
  const missing = required.filter((b) => !available.has(b));
  return missing.length ? [`required programs not found in PATH: ${missing.join(', ')}`] : [];
}

/** A TCP listener on the node, as read from /proc/net/tcp{,6}; `process` when visible from here. */
export interface PortListener {
  port: number;
  address: string;
  uid: number;
  /** "kubelet (pid 812)"; undefined when no process of this PID namespace holds it (a pod without hostPID). */
  process?: string;
}

/**
 * listenPort and metricsPort must be free on the node: a listener there that is not a tpfleet proxy
 * (an exporter, a host agent) makes the sidecar exit at start, so the node drops (FailClosed) or
 * bypasses (FailOpen) intercepted traffic, and the watchdog counts the other program's socket as
 * the proxy. A tpfleet proxy is not a conflict: `ours` lists the ports of this object's previous
 * install (state file; during a rollout the old pod's sidecar still listens), and a holder of both
 * ports at once (the same process, or the same uid where the process is not visible) is a proxy
 * too, e.g. one whose state was lost. What is refused is another program on one of them.
 */
export function portProblems(
  proxy: { listenPort: number; metricsPort: number },
  listeners: PortListener[],
  ours: readonly number[],
): string[] {
  const holder = (l: PortListener) => l.process ?? `uid ${l.uid}`;
  const on = (port: number) => new Set(listeners.filter((l) => l.port === port).map(holder));
  const listen = on(proxy.listenPort),
    metrics = on(proxy.metricsPort);
  const proxies = new Set([...listen].filter((h) => metrics.has(h)));
  const out: string[] = [];
  for (const [field, port] of [
    ['listenPort', proxy.listenPort],
    ['metricsPort', proxy.metricsPort],
  ] as const) {
    if (ours.includes(port)) continue;
    const found = listeners.filter((l) => l.port === port && !proxies.has(holder(l)));
    if (found.length === 0) continue;
    const who = [
      ...new Set(found.map((l) => `${l.process ?? 'a process not visible from here'}, uid ${l.uid}, on ${l.address}`)),
    ];
    out.push(
      `proxy.${field} ${port} is already in use on this node by another program (${who.join('; ')}): the sidecar ` +
        `could not listen there, and the node would drop (FailClosed) or bypass (FailOpen) intercepted traffic. ` +
        `Choose a free port (spec.proxy.${field} of the TransparentProxy).`,
    );
  }
  return out;
}
