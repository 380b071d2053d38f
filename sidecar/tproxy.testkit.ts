// Test helpers for the sidecar's privileged tests: a minimal TPROXY rule set in the proxy
// namespace of an e2e/netns.ts topology, so the real sidecar receives intercepted connections.
// (The node agent's full rule set is tested in daemonset/ and e2e/; this is just enough plumbing.)
import { nsExec, type Topology } from '../e2e/netns.ts';

export const MARK = '0x1';
export const TABLE = '100';

/**
 * Diverts client→server TCP connections to `ports` on the server into the listener on
 * `listenPort` (TPROXY), and delivers the server's replies to transparent sockets locally (the
 * "divert" rule keepClientIp needs; pure SYNs excluded, see dataplane-facts pitfall 1).
 */
export async function installTproxy(t: Topology, listenPort: number, ports: number[]): Promise<void> {
  const ns = t.proxy.ns;
  const set = `{ ${ports.join(', ')} }`;
  const rules = `
table inet tpfsidecartest {
  chain pre {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp tcp flags & (fin | syn | rst | ack) != syn socket transparent 1 meta mark set ${MARK} accept
    iifname "${t.proxy.clientIf}" ip daddr ${t.server.v4} tcp dport ${set} tproxy ip to :${listenPort} meta mark set ${MARK} accept
    iifname "${t.proxy.clientIf}" ip6 daddr ${t.server.v6} tcp dport ${set} tproxy ip6 to :${listenPort} meta mark set ${MARK} accept
  }
  chain forwarding {
    type filter hook forward priority 0; policy accept;
    # Fail closed: a connection the TPROXY rule could not hand to a listener (none left, e.g.
    # while draining) is refused instead of silently bypassing the proxy (nft tproxy fails open).
    iifname "${t.proxy.clientIf}" tcp dport ${set} reject with tcp reset
  }
}
`;
  await nsExec(ns, ['nft', '-f', '-'], { input: rules });
  for (const [fam, any] of [
    ['-4', '0.0.0.0/0'],
    ['-6', '::/0'],
  ] as const) {
    await nsExec(ns, ['ip', fam, 'rule', 'add', 'fwmark', MARK, 'lookup', TABLE]);
    await nsExec(ns, ['ip', fam, 'route', 'add', 'local', any, 'dev', 'lo', 'table', TABLE]);
  }
}

/** Makes the server namespace silently drop SYNs to `port`: an upstream connect then times out. */
export async function blackhole(t: Topology, port: number): Promise<void> {
  await nsExec(t.server.ns, ['nft', '-f', '-'], {
    input: `table inet tpfsidecarblackhole {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport ${port} drop
  }
}
`,
  });
}
