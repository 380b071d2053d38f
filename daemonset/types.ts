// Data shapes shared by the planner (pure), the executor (I/O) and the watchdog.
import type { Family } from '../api/net.ts';

export type Backend = 'nftables' | 'iptables-nft' | 'iptables-legacy';
export type IptablesVariant = 'iptables-nft' | 'iptables-legacy';

/** What the planner needs to know about the host; gathered by facts.ts (I/O), passed in as data. */
export interface HostFacts {
  /** Backend the host already uses (detectBackend); used when the config says `auto`. */
  detectedBackend: Backend;
  /** Variant used when the config says `iptables`. */
  iptablesVariant: IptablesVariant;
}

/** One rule: its text (without comment) and the comment naming its purpose (unique per chain). */
export interface RenderedRule {
  chain: string;
  text: string;
  comment: string;
}

export interface NftPlan {
  family: 'inet';
  table: string;
  /** One `nft -f -` document replacing our whole table in one transaction. */
  document: string;
  sets: string[];
  /** Chain -> comments of its rules in order; what the read-back must find. */
  expected: Record<string, string[]>;
  /** The watchdog's chains (bypass, gate): their contents change at run time, never verified. */
  gateChains: string[];
}

export interface IptablesFamilyPlan {
  family: Family;
  restore: string;
  save: string;
  /** `iptables-restore --noflush` document for the mangle table; it declares (flushes) our chains. */
  document: string;
  chains: string[];
  expected: Record<string, string[]>;
  /** Rule spec (after `-I PREROUTING 1`) of the single hook rule in the builtin chain. */
  hookSpec: string;
  /** The hook's comment: HOOK_COMMENT, plus the owner marker when the owner is known (owner.ts). */
  hookComment: string;
  hookChain: string;
  /** The watchdog's chains (bypass, gate): their contents change at run time, never verified. */
  gateChains: string[];
}

export interface RoutingPlan {
  family: Family;
  mark: number;
  mask: number;
  table: number;
  priority: number;
  ruleAdd: string[];
  ruleDel: string[];
  routeAdd: string[];
  routeDel: string[];
}

/**
 * What the watchdog chains say. pass: intercept. bypass (FailOpen, proxy down): every packet goes
 * direct, even of flows the dead proxy held. drop (FailClosed, proxy down): new connections are
 * dropped. drain (the node is leaving the active set, daemonset/leave.ts): new connections go
 * direct while flows the proxy holds keep reaching it until it has drained.
 */
export type GateMode = 'pass' | 'bypass' | 'drop' | 'drain';

export interface Plan {
  backend: Backend;
  families: Family[];
  failurePolicy: 'FailClosed' | 'FailOpen';
  listenPort: number;
  nft?: NftPlan;
  iptables?: IptablesFamilyPlan[];
  routing: RoutingPlan[];
  requiredBinaries: string[];
}
