// Reload in place (issue 15, ADR 0014): which NodeConfig fields need a new process on the node (and
// so roll the proxy pods) and which the running node applies in place; the two hashes the operator
// derives from that split; and the config pod condition, the contract between the node agent, which
// publishes the hash it enforces on its own pod (daemonset/reload.ts), and the operator, which
// copies it into status.nodes[].configHash (operator/pods.ts) and derives Progressing and Degraded.
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import { PROFILES, profileEntries } from './tuning-profiles.ts';
import type { ProfileName } from './tuning.ts';

/** 16 hex digits of SHA-256: config hashes, pod hashes, volume names. */
export function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/**
 * NodeConfig fields that only a new process can change (docs/operator.md, "What reloads in place").
 * Everything else is applied in place: rules (one atomic transaction), routing, and the sidecar's
 * timeouts, limits, log level and egress policy.
 * - listenPort, metricsPort, backlog, workers, ipFamilies: the sidecar's listeners and engine threads
 *   are created once; re-creating a listener would close it (and its accept queue).
 * - keepClientIp: the engine opens upstream sockets with it fixed; tcp_early_demux is tied to it.
 * - timeouts.drain: also the pod's terminationGracePeriodSeconds.
 * - failurePolicy, backend: the watchdog's gate and the installed backend (switching backends removes
 *   one install before the other: never in place under established flows).
 * - tuning.affinity: IRQ, RPS and XPS live in /proc/irq and /sys, which only the privileged init
 *   container writes (ADR 0005), and the sidecar pins and counts its threads at start.
 * The net.* sysctls of `tuning` apply in place (agent-watch writes them through its /proc/sys/net
 * mount, ADR 0020); the host-wide ones (fs.*) a tuning section resolves to roll: see hostWideSysctls.
 */
export const RESTART_FIELDS = [
  'proxy.listenPort',
  'proxy.metricsPort',
  'proxy.backlog',
  'proxy.workers',
  'proxy.keepClientIp',
  'proxy.timeouts.drain',
  'interception.ipFamilies',
  'interception.backend',
  'interception.failurePolicy',
  'tuning.affinity',
] as const;

/** The pseudo-field a change of the host-wide sysctls is reported as (it rolls the pods). */
export const HOST_WIDE_SYSCTLS_FIELD = 'tuning.sysctls (host-wide keys)';

/**
 * The sysctls outside net.* a tuning section resolves to (profile entries, then overrides), key →
 * value. agent-watch can write only /proc/sys/net (ADR 0020), so a change here rolls the pods. Works
 * on the document as written and on a parsed NodeConfig (the profile defaults to none).
 */
export function hostWideSysctls(doc: unknown): Record<string, string> {
  const profile = pick(doc, 'tuning.sysctls.profile') ?? 'none';
  const overrides = pick(doc, 'tuning.sysctls.overrides');
  const out: Record<string, string> = {};
  const known = typeof profile === 'string' && Object.hasOwn(PROFILES, profile);
  if (!known) out['(profile)'] = String(profile); // refused at the API; still changes the hash
  for (const e of known ? profileEntries(profile as ProfileName) : [])
    if (!e.key.startsWith('net.')) out[e.key] = `${e.atLeast ? '>=' : ''}${e.value}`;
  if (overrides && typeof overrides === 'object')
    for (const [k, v] of Object.entries(overrides)) if (!k.startsWith('net.')) out[k] = String(v);
  return out;
}

const pick = (doc: unknown, path: string): unknown =>
  path
    .split('.')
    .reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), doc);

/**
 * The pod hash: over the restart fields as the user wrote them (defaults stay implicit, like the
 * config hash, so an operator upgrade rolls nothing) and whatever else the pod spec carries from the
 * spec (`extra`: the upstream Secrets mounted). It goes into the pod template; the config hash does not.
 */
export function podHash(doc: unknown, extra: readonly string[] = []): string {
  const fields = Object.fromEntries(RESTART_FIELDS.map((f) => [f, pick(doc, f)]).filter(([, v]) => v !== undefined));
  const hostWide = hostWideSysctls(doc);
  if (Object.keys(hostWide).length > 0) fields[HOST_WIDE_SYSCTLS_FIELD] = hostWide;
  return shortHash(stringify({ fields, extra: [...extra].sort() }, { sortMapEntries: true }));
}

/** Leaf paths whose values differ between two parsed configs (for messages naming the field). */
export function changedFields(a: unknown, b: unknown, prefix = ''): string[] {
  const obj = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!obj(a) || !obj(b)) return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix || '(document)'];
  const keys = [...new Set([...Object.keys(a as object), ...Object.keys(b as object)])].sort();
  return keys.flatMap((k) =>
    changedFields((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], prefix ? `${prefix}.${k}` : k),
  );
}

/** The restart fields among changed paths (a changed path under a restart field counts). */
export const restartFieldsIn = (changed: readonly string[]): string[] =>
  changed.filter((c) => RESTART_FIELDS.some((f) => c === f || c.startsWith(`${f}.`)));

/** What cannot change in place between two parsed configs: restart fields and host-wide sysctls. */
export function restartChanges(a: unknown, b: unknown, changed = changedFields(a, b)): string[] {
  const hostWide = JSON.stringify(hostWideSysctls(a)) !== JSON.stringify(hostWideSysctls(b));
  return [...restartFieldsIn(changed), ...(hostWide ? [HOST_WIDE_SYSCTLS_FIELD] : [])];
}

export const CONFIG_CONDITION_TYPE = 'tpfleet.io/Config';
/** The ConfigMap's and the pod template's annotations (the operator writes them, the agent reads them). */
export const CONFIG_HASH_ANNOTATION = 'tpfleet.io/config-hash';
export const POD_HASH_ANNOTATION = 'tpfleet.io/pod-hash';
export const CONFIG_MESSAGE_MAX = 1024;

export type ConfigReason = 'Applied' | 'Refused';
export interface ConfigCondition {
  type: typeof CONFIG_CONDITION_TYPE;
  status: 'True' | 'False';
  reason: ConfigReason;
  message: string;
}
/** What a node reports: the hash it enforces and, after a refusal, the hash and why. */
export interface NodeConfigReport {
  hash: string;
  refused?: { hash: string; message: string };
}

const HASH = /^[0-9a-f]{16}$/;

/**
 * Applied: message "<hash>". Refused: "<hash> enforced; <new hash> refused: <why>" — the node keeps
 * the hash it enforced before, and the message names the field that could not change.
 */
export function configCondition(r: NodeConfigReport): ConfigCondition {
  if (!r.refused) return { type: CONFIG_CONDITION_TYPE, status: 'True', reason: 'Applied', message: r.hash };
  const text = `${r.hash} enforced; ${r.refused.hash} refused: ${r.refused.message}`;
  const message = text.length <= CONFIG_MESSAGE_MAX ? text : `${text.slice(0, CONFIG_MESSAGE_MAX - 1)}…`;
  return { type: CONFIG_CONDITION_TYPE, status: 'False', reason: 'Refused', message };
}

/** The report a condition carries; undefined for anything else (a hand edit is not trusted). */
export function parseConfigCondition(
  c: { reason?: string; message?: string } | undefined,
): NodeConfigReport | undefined {
  const m = c?.message ?? '';
  if (c?.reason === 'Applied') return HASH.test(m) ? { hash: m } : undefined;
  if (c?.reason !== 'Refused') return undefined;
  const r = /^([0-9a-f]{16}) enforced; ([0-9a-f]{16}) refused: ([\s\S]*)$/.exec(m);
  return r ? { hash: r[1]!, refused: { hash: r[2]!, message: r[3]! } } : undefined;
}
