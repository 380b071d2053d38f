// status.policy (issue 13): how many rules and upstreams the rolled-out configuration holds, and,
// when a spec is rejected, the first rule and upstream at fault. Pure; the problems are the
// InvalidSpec texts ("spec.policy.rules[3].match.serverNames[0]: …"), so the same check that
// refused the spec names the rule.
import { POLICY_DEFAULTS } from '../api/policy.ts';
import type { TransparentProxySpec } from '../api/transparentproxy.ts';
import type { PolicyStatus } from '../api/transparentproxy-status.ts';

/** status.policy of a spec that rolls out; undefined without spec.policy. */
export function policyInForce(spec: TransparentProxySpec): PolicyStatus | undefined {
  const p = spec.policy;
  if (!p) return undefined;
  return {
    rules: p.rules?.length ?? 0,
    upstreams: p.upstreams?.length ?? 0,
    defaultAction: p.defaultAction ?? POLICY_DEFAULTS.defaultAction,
  };
}

const AT = /^spec\.policy\.(rules|upstreams)\[(\d+)\][^:]*: /;

/**
 * status.policy of a rejected spec: the nodes keep the last valid configuration, so the counts
 * stay those of `prev`; the first rule and upstream the problems name are added. rawSpec is the
 * spec as stored (it did not parse, so its entries are read defensively).
 */
export function policyRejected(
  prev: PolicyStatus | undefined,
  problems: readonly string[],
  rawSpec: unknown,
): PolicyStatus | undefined {
  const first = (list: 'rules' | 'upstreams') => {
    for (const p of problems) {
      const m = AT.exec(p);
      if (m?.[1] !== list) continue;
      const entries = (rawSpec as { policy?: Record<string, unknown> } | undefined)?.policy?.[list];
      const entry = Array.isArray(entries) ? (entries[Number(m[2])] as { name?: unknown } | undefined) : undefined;
      const name = typeof entry?.name === 'string' ? entry.name.slice(0, 253) : `[${m[2]}]`;
      return { name, message: p.length <= 1024 ? p : `${p.slice(0, 1023)}…` };
    }
    return undefined;
  };
  const invalidRule = first('rules'),
    invalidUpstream = first('upstreams');
  const inForce = prev && { rules: prev.rules, upstreams: prev.upstreams, defaultAction: prev.defaultAction };
  if (!invalidRule && !invalidUpstream) return inForce;
  return {
    ...(inForce ?? { rules: 0, upstreams: 0, defaultAction: POLICY_DEFAULTS.defaultAction }),
    ...(invalidRule ? { invalidRule } : {}),
    ...(invalidUpstream ? { invalidUpstream } : {}),
  };
}
