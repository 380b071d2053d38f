// I/O: reads the facts the planner and preflight need from the host (the current netns).
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Family } from '../api/net.ts';
import { parseIpRoutes, parseIpRules, type IpRoute, type IpRule } from './parse.ts';
import type { RpSysctls } from './preflight.ts';
import { run, runOk } from './run.ts';
import type { Backend, HostFacts, IptablesVariant } from './types.ts';

export function findBinaries(names: string[], pathVar: string): Set<string> {
  const dirs = pathVar.split(':').filter(Boolean);
  const found = new Set<string>();
  for (const n of names) {
    for (const d of dirs) {
      try {
        accessSync(join(d, n), constants.X_OK);
        found.add(n);
        break;
      } catch {
        /* not in this directory */
      }
    }
  }
  return found;
}

/** True when `<tool>-save` prints at least one rule (any table); a missing tool counts as no rules. */
async function hasIptablesRules(saves: string[]): Promise<boolean> {
  for (const s of saves) {
    const r = await run([s]);
    if (r.code === 0 && /^-A /m.test(r.stdout)) return true;
  }
  return false;
}

/**
 * Prefer what the host already uses (iptables-legacy rules are invisible to nft, pitfall 7):
 * legacy rules -> iptables-legacy; rules made with iptables-nft -> iptables-nft; otherwise
 * (native nft tables, or nothing at all) -> nftables.
 */
export async function detectHost(): Promise<HostFacts> {
  const legacy = await hasIptablesRules(['iptables-legacy-save', 'ip6tables-legacy-save']);
  const nftIpt = await hasIptablesRules(['iptables-nft-save', 'ip6tables-nft-save']);
  const detectedBackend: Backend = legacy ? 'iptables-legacy' : nftIpt ? 'iptables-nft' : 'nftables';
  let iptablesVariant: IptablesVariant = 'iptables-nft';
  if (legacy) iptablesVariant = 'iptables-legacy';
  else if (!nftIpt) {
    const v = await run(['iptables', '--version']);
    if (v.code === 0 && v.stdout.includes('legacy')) iptablesVariant = 'iptables-legacy';
  }
  return { detectedBackend, iptablesVariant };
}

const CONF = '/proc/sys/net/ipv4/conf';

export function readRpSysctls(): RpSysctls {
  const out: RpSysctls = {};
  for (const name of readdirSync(CONF)) {
    const read = (k: string) => Number(readFileSync(join(CONF, name, k), 'utf8').trim());
    out[name] = { rp_filter: read('rp_filter'), src_valid_mark: read('src_valid_mark') };
  }
  return out;
}

const v = (f: Family) => (f === 'IPv4' ? '-4' : '-6');

export async function readIpRules(f: Family): Promise<IpRule[]> {
  return parseIpRules(await runOk(['ip', '-j', v(f), 'rule', 'show']));
}

export async function readRoutes(f: Family, table: number): Promise<IpRoute[]> {
  const r = await run(['ip', '-j', v(f), 'route', 'show', 'table', String(table)]);
  // ip exits 2 with "FIB table does not exist" for a table never used: that is an empty table.
  if (r.code !== 0) {
    if (/does not exist/.test(r.stderr)) return [];
    throw new Error(`ip ${v(f)} route show table ${table}: ${r.stderr.trim()}`);
  }
  return parseIpRoutes(r.stdout);
}
