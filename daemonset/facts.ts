// I/O: reads the facts the planner and preflight need from the host (the current netns).
import { accessSync, constants, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Family } from '../api/net.ts';
import {
  parseIpRoutes,
  parseIpRules,
  parseProcNetTcp,
  procNetAddress,
  TCP_LISTEN,
  type IpRoute,
  type IpRule,
} from './parse.ts';
import type { PortListener, RpSysctls } from './preflight.ts';
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

const readIfExists = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return ''; // no IPv6 on this node
    throw e;
  }
};

/**
 * TCP listeners of this network namespace (the node's: hostNetwork) on `ports`, each with the
 * process holding it where this PID namespace can see it (/proc/<pid>/fd -> socket:[inode]).
 */
export function readPortListeners(ports: readonly number[]): PortListener[] {
  const sockets = ['/proc/net/tcp', '/proc/net/tcp6']
    .flatMap((f) => parseProcNetTcp(readIfExists(f)))
    .filter((s) => s.state === TCP_LISTEN && ports.includes(s.localPort));
  if (sockets.length === 0) return [];
  const owners = socketOwners(new Set(sockets.map((s) => s.inode)));
  return sockets.map((s) => ({
    port: s.localPort,
    address: procNetAddress(s.localAddress),
    uid: s.uid,
    process: owners.get(s.inode),
  }));
}

/** argv[0]'s base name (node renames its main thread "MainThread", so comm is no help), else comm. */
function programName(pid: string): string {
  try {
    const argv0 = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    return argv0.split('/').pop() || readFileSync(`/proc/${pid}/comm`, 'utf8').trim() || '?';
  } catch {
    return '?'; // exited meanwhile
  }
}

/** inode -> "program (pid N)" for the sockets among `inodes` some visible process holds. */
function socketOwners(inodes: Set<number>): Map<number, string> {
  const out = new Map<number, string>();
  const ls = (dir: string) => {
    try {
      return readdirSync(dir);
    } catch {
      return []; // gone meanwhile, or not ours to read
    }
  };
  for (const pid of ls('/proc').filter((p) => /^\d+$/.test(p))) {
    for (const fd of ls(`/proc/${pid}/fd`)) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (!m || !inodes.has(Number(m[1])) || out.has(Number(m[1]))) continue;
      out.set(Number(m[1]), `${programName(pid)} (pid ${pid})`);
    }
    if (out.size === inodes.size) break;
  }
  return out;
}
