// The one executor: preflight, atomic apply, read-back verification, rollback on any failure,
// state recording and exact cleanup. All host changes go through a Mutator, which in dry-run
// prints the exact argv and stdin document instead of running them.
import type { Logger } from 'pino';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { findBinaries, readIpRules, readPortListeners, readRoutes, readRpSysctls } from './facts.ts';
import {
  iptApply,
  iptCheck,
  iptRemove,
  iptRestore,
  iptVerify,
  iptWriteGate,
  legacyMangleInitialized,
  nftMangleExists,
  nftPreroutingExists,
  readMangle,
  removeNftMangleIfOursAndEmpty,
} from './filter-ipt.ts';
import {
  nftApply,
  nftCapture,
  nftCheck,
  nftRemove,
  nftRestore,
  nftVerify,
  nftWriteGate,
  type Mutator,
} from './filter-nft.ts';
import { markProblems, marksInUse } from './marks.ts';
import { isOurRoute, isOurRule, type SavedTable } from './parse.ts';
import { NFT_TABLE } from './render-nft.ts';
import { binaryProblems, interceptedInterfaces, portProblems, routingProblems, rpFilterProblems } from './preflight.ts';
import { runOk, type Argv } from './run.ts';
import { removeProbeLink } from './selftest.ts';
import { readState, removeState, writeState, type AgentState, type RoutingState } from './state.ts';
import type { GateMode, Plan } from './types.ts';
import { errorMessage } from '../api/errors.ts';

export interface ExecOptions {
  stateDir: string;
  dryRun: boolean;
  pathVar: string;
  out: (text: string) => void;
  log: Logger;
  /** A copy of the state file outside /run (ADR 0015): cleanup still works when state.json is lost. */
  stateCopyDir?: string;
  /** `<namespace>.<name>`: with both state copies lost, cleanup removes what this owner's markers name (owner.ts). */
  owner?: string;
}

export class PreflightError extends Error {
  constructor(readonly problems: string[]) {
    super(`preflight refused to apply (nothing was changed):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'PreflightError';
  }
}

export function mutator(opts: ExecOptions): Mutator {
  if (!opts.dryRun)
    return async (argv: Argv, input?: string) => {
      await runOk(argv, input);
    };
  return async (argv: Argv, input?: string) => {
    opts.out(
      `$ ${argv.join(' ')}${input === undefined ? '' : ' <<EOF'}\n${input === undefined ? '' : `${input}EOF\n`}`,
    );
  };
}

export async function preflight(
  config: NodeConfig,
  plan: Plan,
  pathVar: string,
  previous?: AgentState,
): Promise<string[]> {
  const problems = binaryProblems(plan.requiredBinaries, findBinaries(plan.requiredBinaries, pathVar));
  if (plan.families.includes('IPv4')) {
    const sysctls = readRpSysctls();
    problems.push(
      ...rpFilterProblems(sysctls, interceptedInterfaces(Object.keys(sysctls), config.interception.interfaces)),
    );
  }
  for (const r of plan.routing) {
    const mine = (previous?.routing ?? []).filter((q) => q.family === r.family && q.ownsRule);
    problems.push(...routingProblems(r, await readIpRules(r.family), await readRoutes(r.family, r.table), mine));
  }
  // Marks set or matched by anyone else's rules, in every rule set on the node (marks.ts).
  const mask = plan.routing[0]?.mask;
  if (mask !== undefined) problems.push(...markProblems(await marksInUse(NFT_TABLE), mask));
  // The sidecar's ports, free but for this object's previous sidecar (a rollout's old pod). A state
  // from before the ports were recorded: its install used the same ports as far as we can tell.
  const { listenPort, metricsPort } = config.proxy;
  const ours = previous ? (previous.ports ?? [listenPort, metricsPort]) : [];
  problems.push(...portProblems(config.proxy, readPortListeners([listenPort, metricsPort]), ours));
  if (problems.length > 0) return problems; // tool checks need the binaries
  if (plan.nft) problems.push(...(await nftCheck(plan.nft)));
  for (const p of plan.iptables ?? []) problems.push(...(await iptCheck(p)));
  return problems;
}

// Same backend and families: the new plan replaces the old one in place (routing included, below).
// Another backend: the previous install goes first (a backend change rolls the pod, api/reload.ts).
const sameInstall = (s: AgentState, p: Plan) =>
  s.backend === p.backend && JSON.stringify(s.families) === JSON.stringify(p.families);

export const routeKey = (r: Pick<RoutingState, 'family' | 'mark' | 'mask' | 'table' | 'priority'>) =>
  JSON.stringify([r.family, r.mark, r.mask, r.table, r.priority]);

/** Ownership of a routing entry, read before anything is changed: ours unless it existed already. */
async function routingState(r: Plan['routing'][number]): Promise<RoutingState> {
  return {
    family: r.family,
    mark: r.mark,
    mask: r.mask,
    table: r.table,
    priority: r.priority,
    ruleDel: r.ruleDel,
    routeDel: r.routeDel,
    ownsRule: !(await readIpRules(r.family)).some((x) => isOurRule(x, r)),
    ownsRoute: !(await readRoutes(r.family, r.table)).some((x) => isOurRoute(x, r)),
  };
}

/**
 * The state's routing for this plan: kept entries as they were, new ones as read now. Make before
 * break: a changed mark, table or priority adds the new rule and route beside the old ones, the rules
 * switch in one transaction, and only then are the old entries removed (dropOldRouting).
 */
async function nextRouting(state: AgentState, plan: Plan): Promise<RoutingState[]> {
  const out: RoutingState[] = [];
  for (const r of plan.routing) {
    const kept = state.routing.find((q) => routeKey(q) === routeKey(r));
    if (kept) {
      out.push(kept);
      continue;
    }
    const fresh = await routingState(r);
    // Same table as before (another mark or priority): its route is the one we created, still ours.
    const sameTable = state.routing.find((q) => q.family === r.family && q.table === r.table);
    out.push(sameTable ? { ...fresh, ownsRoute: sameTable.ownsRoute } : fresh);
  }
  return out;
}

async function dropOldRouting(old: RoutingState[], next: RoutingState[], mutate: Mutator): Promise<void> {
  const keep = new Set(next.map(routeKey));
  for (const r of old.filter((q) => !keep.has(routeKey(q)))) {
    const p = { ...r, ruleAdd: [], routeAdd: [] };
    if (r.ownsRule && (await readIpRules(r.family)).some((x) => isOurRule(x, p))) await mutate(r.ruleDel);
    // The table's route only when no kept entry uses the same table.
    if (next.some((q) => q.family === r.family && q.table === r.table)) continue;
    if (r.ownsRoute && (await readRoutes(r.family, r.table)).some((x) => isOurRoute(x, p))) await mutate(r.routeDel);
  }
}

/** What existed before our first apply; recorded before anything is changed. */
async function initialState(plan: Plan): Promise<AgentState> {
  const state: AgentState = {
    version: 1,
    backend: plan.backend,
    families: plan.families,
    routing: [],
    // Recorded before agent-watch creates the link (selftest.ts): cleanup removes it with the rules.
    probeLink: true,
    before: { nftMangle: {}, nftPrerouting: {}, legacyMangle: {} },
  };
  for (const f of plan.families) {
    if (plan.backend === 'iptables-nft') {
      state.before.nftMangle[f] = await nftMangleExists(f);
      state.before.nftPrerouting![f] = await nftPreroutingExists(f);
    }
    if (plan.backend === 'iptables-legacy') state.before.legacyMangle[f] = legacyMangleInitialized(f);
  }
  for (const r of plan.routing) state.routing.push(await routingState(r));
  return state;
}

interface Undo {
  nft?: string | null;
  ipt: Map<number, SavedTable>;
  routing: Argv[];
}

async function verify(plan: Plan): Promise<string[]> {
  const problems: string[] = [];
  if (plan.nft) problems.push(...(await nftVerify(plan.nft)));
  for (const p of plan.iptables ?? []) problems.push(...(await iptVerify(p)));
  for (const r of plan.routing) {
    if (!(await readIpRules(r.family)).some((x) => isOurRule(x, r)))
      problems.push(`read-back: missing ${r.ruleAdd.join(' ')}`);
    if (!(await readRoutes(r.family, r.table)).some((x) => isOurRoute(x, r)))
      problems.push(`read-back: missing ${r.routeAdd.join(' ')}`);
  }
  return problems;
}

async function applyChanges(plan: Plan, mutate: Mutator, undo: Undo): Promise<void> {
  if (plan.nft) {
    undo.nft = await nftCapture();
    await nftApply(plan.nft, mutate);
  }
  for (const [i, p] of (plan.iptables ?? []).entries()) {
    undo.ipt.set(i, await readMangle(p.save));
    await iptApply(p, mutate);
  }
  for (const r of plan.routing) {
    if (!(await readIpRules(r.family)).some((x) => isOurRule(x, r))) {
      await mutate(r.ruleAdd);
      undo.routing.unshift(r.ruleDel);
    }
    if (!(await readRoutes(r.family, r.table)).some((x) => isOurRoute(x, r))) {
      await mutate(r.routeAdd);
      undo.routing.unshift(r.routeDel);
    }
  }
}

/** Rolls back exactly what this run changed; errors are collected, never thrown half-way. */
async function rollback(plan: Plan, undo: Undo, mutate: Mutator, log: Logger): Promise<string[]> {
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      errors.push(`${what}: ${errorMessage(e)}`);
    }
  };
  for (const argv of undo.routing) await attempt(argv.join(' '), () => mutate(argv));
  if (plan.nft && undo.nft !== undefined) await attempt('restore nft table', () => nftRestore(undo.nft!, mutate));
  for (const [i, saved] of undo.ipt) {
    const p = plan.iptables![i]!;
    await attempt(`restore ${p.family} chains`, () => iptRestore(p, saved, mutate));
  }
  log.warn({ errors }, 'rolled back this apply');
  return errors;
}

export async function apply(config: NodeConfig, plan: Plan, opts: ExecOptions): Promise<void> {
  let state = readState(opts.stateDir, opts.stateCopyDir);
  const problems = await preflight(config, plan, opts.pathVar, state);
  if (problems.length > 0) throw new PreflightError(problems);
  const mutate = mutator(opts);
  if (state && !sameInstall(state, plan)) {
    opts.log.info(
      { from: state.backend, to: plan.backend },
      'backend or families changed: removing the previous install first',
    );
    await cleanupState(state, opts);
    state = undefined;
  }
  const fresh = state === undefined;
  const ports = [config.proxy.listenPort, config.proxy.metricsPort];
  if (fresh) {
    state = { ...(await initialState(plan)), ports };
    if (!opts.dryRun) writeState(opts.stateDir, state, opts.stateCopyDir);
  }
  const before = state!;
  const routing = fresh ? before.routing : await nextRouting(before, plan);
  // Recorded before they exist, as a first apply records its state: a crash half-way leaves
  // cleanup knowing every entry that may be ours.
  const added = routing.filter((r) => !before.routing.some((q) => routeKey(q) === routeKey(r)));
  if (added.length > 0 && !opts.dryRun)
    writeState(opts.stateDir, { ...before, routing: [...before.routing, ...added] }, opts.stateCopyDir);
  const undo: Undo = { ipt: new Map(), routing: [] };
  try {
    await applyChanges(plan, mutate, undo);
    if (opts.dryRun) return;
    const mismatch = await verify(plan);
    if (mismatch.length > 0) throw new Error(mismatch.join('\n'));
  } catch (e) {
    const errors = await rollback(plan, undo, mutate, opts.log);
    if (fresh && errors.length === 0 && !opts.dryRun) {
      if (plan.backend === 'iptables-nft') {
        for (const f of plan.families) await removeNftMangleIfOursAndEmpty(f, state!.before, mutate);
      }
      removeState(opts.stateDir, opts.stateCopyDir);
    } else if (!fresh && errors.length === 0 && !opts.dryRun) writeState(opts.stateDir, before, opts.stateCopyDir);
    const tail = errors.length
      ? `\nrollback problems (state kept for cleanup):\n${errors.join('\n')}`
      : '\nrolled back: nothing of this run remains';
    throw new Error(`apply failed: ${errorMessage(e)}${tail}`, { cause: e });
  }
  if (!fresh) {
    // The new rules are in force: the old routing entries no packet is marked for any more go.
    await dropOldRouting(before.routing, routing, mutate);
    // Also a state from before the copy existed gets one here (daemonset/state.ts).
    if (!opts.dryRun) writeState(opts.stateDir, { ...before, routing, ports, probeLink: true }, opts.stateCopyDir);
  }
  opts.log.info({ backend: plan.backend, families: plan.families }, 'applied and verified');
}

async function cleanupState(state: AgentState, opts: ExecOptions): Promise<void> {
  const mutate = mutator(opts);
  if (state.backend === 'nftables') await nftRemove(mutate);
  else {
    for (const f of state.families) await iptRemove(state.backend, f, mutate);
    if (state.backend === 'iptables-nft') {
      for (const f of state.families) await removeNftMangleIfOursAndEmpty(f, state.before, mutate);
    }
  }
  for (const r of state.routing) {
    const plan = { ...r, ruleAdd: [], routeAdd: [] };
    if (r.ownsRule && (await readIpRules(r.family)).some((x) => isOurRule(x, plan))) await mutate(r.ruleDel);
    if (r.ownsRoute && (await readRoutes(r.family, r.table)).some((x) => isOurRoute(x, plan))) await mutate(r.routeDel);
  }
  if (state.probeLink) await removeProbeLink(mutate);
  if (!opts.dryRun) removeState(opts.stateDir, opts.stateCopyDir);
}

/** Removes exactly what the state file says we installed. Idempotent: no state, nothing to do (see recover.ts). */
export async function cleanup(opts: ExecOptions): Promise<boolean> {
  const state = readState(opts.stateDir, opts.stateCopyDir);
  if (!state) return false;
  await cleanupState(state, opts);
  opts.log.info({ backend: state.backend }, 'cleaned up');
  return true;
}

export async function writeGate(state: AgentState, mode: GateMode): Promise<void> {
  if (state.backend === 'nftables') await nftWriteGate(mode);
  else await iptWriteGate(state.backend, state.families, mode);
}
