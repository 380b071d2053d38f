// The pure planner: plan(config, hostFacts) -> Plan. Rules are rendered as data (documents and
// argv arrays); nothing here touches the host, so every output is covered by golden files.
import type { Family } from '../api/net.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { renderIptables, binaries } from './render-ipt.ts';
import { renderNft } from './render-nft.ts';
import type { Backend, HostFacts, Plan, RoutingPlan } from './types.ts';

export function chooseBackend(config: NodeConfig, facts: HostFacts): Backend {
  switch (config.interception.backend) {
    case 'nftables':
      return 'nftables';
    case 'iptables':
      return facts.iptablesVariant;
    case 'auto':
      return facts.detectedBackend;
  }
}

/** fwmark policy routing: marked packets are delivered locally (to the transparent socket). */
export function routingPlan(config: NodeConfig, f: Family): RoutingPlan {
  const { mark, mask, routingTable: table, rulePriority: priority } = config.interception;
  return routingArgv(f, mark, mask, table, priority);
}

/** The ip rule and route argv for these numbers: also how a state file's argv is checked (state.ts). */
export function routingArgv(f: Family, mark: number, mask: number, table: number, priority: number): RoutingPlan {
  const v = f === 'IPv4' ? '-4' : '-6';
  const fw = `0x${mark.toString(16)}/0x${mask.toString(16)}`;
  const rule = ['fwmark', fw, 'lookup', String(table), 'priority', String(priority)];
  const route = ['local', f === 'IPv4' ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', String(table)];
  return {
    family: f,
    mark,
    mask,
    table,
    priority,
    ruleAdd: ['ip', v, 'rule', 'add', ...rule],
    ruleDel: ['ip', v, 'rule', 'del', ...rule],
    routeAdd: ['ip', v, 'route', 'add', ...route],
    routeDel: ['ip', v, 'route', 'del', ...route],
  };
}

/** `owner` (`<namespace>.<name>`): written into the rule sets as the owner marker (owner.ts). */
export function plan(config: NodeConfig, facts: HostFacts, owner?: string): Plan {
  const ic = config.interception;
  const backend = chooseBackend(config, facts);
  const families = (['IPv4', 'IPv6'] as const).filter((f) => ic.ipFamilies.includes(f));
  const out: Plan = {
    backend,
    families,
    failurePolicy: ic.failurePolicy,
    listenPort: config.proxy.listenPort,
    routing: families.map((f) => routingPlan(config, f)),
    requiredBinaries: ['ip'],
  };
  if (backend === 'nftables') {
    out.nft = renderNft(ic, config.proxy.listenPort, owner ? { key: owner, routing: out.routing } : undefined);
    out.requiredBinaries.push('nft');
  } else {
    out.iptables = families.map((f, i) =>
      renderIptables(
        ic,
        config.proxy.listenPort,
        backend,
        f,
        owner ? { key: owner, routing: out.routing[i]! } : undefined,
      ),
    );
    for (const f of families) out.requiredBinaries.push(binaries(backend, f).restore, binaries(backend, f).save);
    // iptables-nft leaves an empty `ip mangle` table behind; cleanup removes it with nft.
    if (backend === 'iptables-nft') out.requiredBinaries.push('nft');
  }
  return out;
}

/** Human-readable plan: exactly the documents and argv the executor would run. */
export function formatPlan(p: Plan): string {
  const parts = [`# backend: ${p.backend}; families: ${p.families.join(', ')}; failurePolicy: ${p.failurePolicy}`];
  if (p.nft) parts.push('# nft -f -', p.nft.document);
  for (const ipt of p.iptables ?? []) {
    parts.push(`# ${ipt.restore} --noflush`, ipt.document);
    parts.push(`# hook, inserted only when absent: -I PREROUTING 1 ${ipt.hookSpec}`);
  }
  parts.push('# routing (each added only when absent)');
  for (const r of p.routing) parts.push(r.ruleAdd.join(' '), r.routeAdd.join(' '));
  return `${parts.join('\n')}\n`;
}
