// Before a spec that names upstream credentials rolls out, each named Secret must exist in the
// TransparentProxy's namespace (where the DaemonSet and its pods are) and hold usable username and
// password keys: a pod whose Secret volume cannot be built never starts, and a rollout waiting on
// it would leave its node half updated. A problem is an InvalidSpec naming the field; the fleet
// keeps its last valid configuration (reconcile.ts).
//
// One `get` per Secret and reconcile, no Secret informer: list/watch on secrets would hold every
// Secret of the cluster in the operator's memory. The operator looks again on its own requeue
// (RECHECK_MS while a Secret is missing, else the periodic resync). Values are decoded only to
// check their length; they are never logged, stored or copied anywhere.
import { CREDENTIAL_KEYS, CREDENTIAL_MAX_BYTES } from '../api/policy.ts';
import type { TransparentProxySpec } from '../api/transparentproxy.ts';
import type { KubeClient, KubeObject } from '../kube/client.ts';

/** How soon a spec waiting on a Secret is looked at again. */
export const CREDENTIALS_RECHECK_MS = 15_000;

type Secret = KubeObject & { data?: Record<string, string> };

/** "spec.policy.upstreams[N].credentialsSecret: …" for each unusable Secret; [] when all are fine. */
export async function credentialProblems(
  client: KubeClient,
  namespace: string,
  spec: TransparentProxySpec,
): Promise<string[]> {
  const seen = new Map<string, Promise<Secret | undefined>>();
  const problems: string[] = [];
  for (const [n, u] of (spec.policy?.upstreams ?? []).entries()) {
    if (!u.credentialsSecret) continue;
    const name = u.credentialsSecret.name;
    if (!seen.has(name)) seen.set(name, client.get<Secret>(`/api/v1/namespaces/${namespace}/secrets/${name}`));
    const problem = secretProblem(await seen.get(name)!, u.type);
    if (problem) problems.push(`spec.policy.upstreams[${n}].credentialsSecret: Secret ${namespace}/${name} ${problem}`);
  }
  return problems;
}

/** Why a Secret cannot serve as an upstream's credentials, or undefined. Never quotes a value. */
export function secretProblem(secret: Secret | undefined, type: string): string | undefined {
  if (!secret) return 'not found';
  const missing = CREDENTIAL_KEYS.filter((k) => secret.data?.[k] === undefined);
  if (missing.length) return `has no key ${missing.join(' or ')}`;
  for (const k of CREDENTIAL_KEYS) {
    const value = Buffer.from(secret.data![k]!, 'base64');
    if (value.length === 0 || value.length > CREDENTIAL_MAX_BYTES)
      return `key ${k} must hold 1 to ${CREDENTIAL_MAX_BYTES} bytes`;
  }
  if (type === 'HTTPConnect' && Buffer.from(secret.data!.username!, 'base64').includes(':'))
    return 'key username must not contain ":" (HTTP Basic auth)';
  return undefined;
}
