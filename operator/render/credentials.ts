// The upstream proxies' credentials in the fleet's pod template (issue 13). Pure rendering.
import { CREDENTIAL_KEYS, CREDENTIALS_DIR } from '../../api/policy.ts';
import type { TransparentProxySpec } from '../../api/transparentproxy.ts';
import { shortHash } from './names.ts';

/** The distinct Secrets spec.policy.upstreams[].credentialsSecret name, sorted. */
export function credentialSecrets(spec: TransparentProxySpec): string[] {
  const names = (spec.policy?.upstreams ?? []).flatMap((u) => (u.credentialsSecret ? [u.credentialsSecret.name] : []));
  return [...new Set(names)].sort();
}

/**
 * One Secret volume per distinct spec.policy.upstreams[].credentialsSecret, mounted read-only into
 * the sidecar alone at CREDENTIALS_DIR/<secret>/ (files username and password). A whole-Secret
 * volume with items, not subPath: the kubelet refreshes such a volume in place when the Secret
 * changes, so a rotated password reaches the sidecar (which re-reads the files) without a restart.
 * Only the Secret's name enters the template, never its contents: adding an upstream rolls the
 * pods, rotating its Secret does not. Mode 0444: the files belong to root and the sidecar runs as
 * 65532; no other container mounts them. The operator checks each Secret before it rolls a spec
 * out (operator/credentials.ts), so a pod never waits on a missing one.
 */
export function credentials(spec: TransparentProxySpec) {
  return credentialSecrets(spec).map((secretName) => {
    // Secret names run to 253 characters, volume names to 63: a hash keeps them apart.
    const name = `creds-${shortHash(secretName)}`;
    return {
      volume: {
        name,
        secret: { secretName, items: CREDENTIAL_KEYS.map((key) => ({ key, path: key })), defaultMode: 0o444 },
      },
      mount: { name, mountPath: `${CREDENTIALS_DIR}/${secretName}`, readOnly: true },
    };
  });
}
