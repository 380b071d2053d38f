// `kubectl tpfleet why POD [--to IP:PORT]`: is this pod's traffic intercepted, on which node, by
// which fleet, which rule. Pure: the caller reads the pod, the TransparentProxy active on its node
// and that fleet's NodeConfig (its ConfigMap) through the API; this decides from them, stage by
// stage in the order the node's rules match (daemonset/README.md, "The rules"). Without --to it
// says which of the pod's connections are intercepted; with it, whether that one is.
import { familyOf, ipToBigInt, cidrText, type Cidr } from '../api/net.ts';
import type { Interception } from '../api/nodeconfig.ts';

export interface PodFacts {
  namespace: string;
  name: string;
  nodeName?: string;
  hostNetwork?: boolean;
  podIPs: string[];
}

export interface FleetFacts {
  /** namespace/name of the TransparentProxy active on the pod's node. */
  name: string;
  interception: Interception;
  listenPort: number;
}

export interface Target {
  ip: string;
  port: number;
}

export interface Verdict {
  /** true: intercepted; false: not; undefined: depends on the connection (no --to given). */
  intercepted: boolean | undefined;
  lines: string[];
}

const inCidr = (ip: string, c: Cidr) => {
  if (familyOf(ip) !== c.family) return false;
  const bits = c.family === 'IPv4' ? 32 : 128;
  const shift = BigInt(bits - c.prefix);
  return ipToBigInt(ip) >> shift === ipToBigInt(c.address) >> shift;
};
const list = (cs: readonly Cidr[]) => cs.map(cidrText).join(', ');
const ports = (i: Interception) =>
  i.ports.length
    ? i.ports.map((p) => (p.endPort && p.endPort !== p.port ? `${p.port}-${p.endPort}` : String(p.port))).join(', ')
    : 'every port';

/** include/exclude of one address: undefined when it matches, else the reason it does not. */
function outside(ip: string, set: Interception['sources'], what: string): string | undefined {
  const ex = set.exclude.find((c) => inCidr(ip, c));
  if (ex) return `${what} ${ip} is in ${what}s.exclude ${cidrText(ex)} (exclude wins)`;
  if (set.include.length && !set.include.some((c) => inCidr(ip, c)))
    return `${what} ${ip} is not in ${what}s.include [${list(set.include)}]`;
  return undefined;
}

const no = (lines: string[], why: string): Verdict => ({
  intercepted: false,
  lines: [...lines, `NOT intercepted: ${why}`],
});

export function explain(pod: PodFacts, fleet: FleetFacts | undefined, to?: Target): Verdict {
  const lines = [`pod ${pod.namespace}/${pod.name} on node ${pod.nodeName ?? '(not scheduled)'}`];
  if (!pod.nodeName) return no(lines, 'the pod is not scheduled on a node');
  if (pod.hostNetwork)
    return no(
      lines,
      'the pod uses the host network: its traffic leaves from the node itself (output path), and tpfleet intercepts what the node forwards (prerouting)',
    );
  if (!fleet) return no(lines, `no TransparentProxy is active on node ${pod.nodeName}`);
  const i = fleet.interception;
  lines.push(
    `fleet ${fleet.name} is active on ${pod.nodeName} (backend ${i.backend}, failurePolicy ${i.failurePolicy})`,
  );
  const ips = pod.podIPs.filter((ip) => i.ipFamilies.includes(familyOf(ip) ?? 'IPv4'));
  if (ips.length === 0)
    return no(
      lines,
      `the pod's addresses [${pod.podIPs.join(', ')}] are not of ipFamilies [${i.ipFamilies.join(', ')}]`,
    );
  if (i.interfaces.length)
    lines.push(
      `rule "interfaces": only if the pod's host-side interface matches [${i.interfaces.join(', ')}] (the CNI names it)`,
    );
  const src = to ? ips.find((ip) => familyOf(ip) === familyOf(to.ip)) : ips[0];
  if (to && !src) return no(lines, `${to.ip} is not of a family the pod has an address of`);
  const srcWhy = outside(src!, i.sources, 'source');
  if (srcWhy) return no(lines, `rule "sources": ${srcWhy}`);
  lines.push(`rule "sources": source ${src} matches`);
  // `why` judges TCP connections (--to is a TCP target); UDP is named where the fleet takes it too.
  const proto = 'TCP';
  if (!i.protocols.includes('TCP')) return no(lines, `fleet ${fleet.name} intercepts ${i.protocols.join(', ')} only`);
  if (!to) {
    if (i.protocols.includes('UDP'))
      lines.push(
        `its UDP datagrams on ${ports({ ports: i.udpPorts } as Interception)} go to the proxy too (docs/udp.md)`,
      );
    const dst = i.destinations.include.length ? `in [${list(i.destinations.include)}]` : 'to any address';
    const ex = i.destinations.exclude.length ? ` except [${list(i.destinations.exclude)}]` : '';
    const local = i.localDestinations ? '' : ", not to the node's own addresses";
    lines.push(
      `INTERCEPTED: its ${proto} connections ${dst}${ex}${local}, on ${ports(i)}, go to the proxy (rule "tproxy" to :${fleet.listenPort}); the rest passes`,
    );
    return { intercepted: undefined, lines };
  }
  const dstWhy = outside(to.ip, i.destinations, 'destination');
  if (dstWhy) return no(lines, `rule "destinations": ${dstWhy}`);
  const portOk = i.ports.length === 0 || i.ports.some((p) => to.port >= p.port && to.port <= (p.endPort ?? p.port));
  if (!portOk) return no(lines, `rule "ports": ${to.port} is not in [${ports(i)}]`);
  lines.push(
    `INTERCEPTED: ${proto} ${src} -> ${to.ip}:${to.port} goes to the proxy (rule "tproxy" to :${fleet.listenPort})` +
      (i.localDestinations ? '' : ` unless ${to.ip} is an address of node ${pod.nodeName} (rule "local")`),
  );
  return { intercepted: true, lines };
}

/** "10.0.0.1:80", "[fd00::1]:443" -> Target; a string on error. */
export function parseTarget(text: string): Target | string {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([0-9.]+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || !familyOf(m[1]!) || port < 1 || port > 65535)
    return `--to: "${text}" is not IP:PORT (IPv6 as [addr]:port, port 1-65535)`;
  return { ip: m[1]!, port };
}
