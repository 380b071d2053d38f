// Helpers of operator/rbac.apiserver.test.ts: install operator/deploy/rbac.yaml for a test user,
// ask the API server what that user may do, and read what it really asked for from the audit log.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { KubeClient, type KubeObject } from '../kube/client.ts';

export type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
export type RbacDoc = KubeObject & { subjects?: unknown[]; roleRef?: unknown; rules?: Rule[] };

/** The documents of a file in operator/deploy/. */
export function deployDocs<T = RbacDoc>(file: string): T[] {
  return parseAllDocuments(readFileSync(join(import.meta.dirname, 'deploy', file), 'utf8')).map((d) => d.toJS() as T);
}

const COLLECTIONS: Record<string, [string, string]> = {
  ServiceAccount: ['/api/v1', 'serviceaccounts'],
  ClusterRole: ['/apis/rbac.authorization.k8s.io/v1', 'clusterroles'],
  ClusterRoleBinding: ['/apis/rbac.authorization.k8s.io/v1', 'clusterrolebindings'],
  Role: ['/apis/rbac.authorization.k8s.io/v1', 'roles'],
  RoleBinding: ['/apis/rbac.authorization.k8s.io/v1', 'rolebindings'],
};

/**
 * Creates `docs` with every binding's subject swapped for the user `user`, and `resourceNames`
 * renamed per `rename` (the test's objects have other names than the chart's).
 */
export async function installFor(
  admin: KubeClient,
  docs: readonly RbacDoc[],
  user: string,
  rename: Record<string, string> = {},
): Promise<void> {
  for (const doc of structuredClone(docs) as RbacDoc[]) {
    if (doc.subjects) doc.subjects = [{ kind: 'User', name: user, apiGroup: 'rbac.authorization.k8s.io' }];
    for (const r of doc.rules ?? []) if (r.resourceNames) r.resourceNames = r.resourceNames.map((n) => rename[n] ?? n);
    const [base, plural] = COLLECTIONS[doc.kind!]!;
    const ns = doc.metadata.namespace;
    await admin.create(ns ? `${base}/namespaces/${ns}/${plural}` : `${base}/${plural}`, doc);
  }
}

const VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'];

/** The verbs the user of `kubeconfig` may use on `resource` in `namespace` (SelfSubjectAccessReviews). */
export async function grantedVerbs(
  kubeconfig: string,
  resource: string,
  group: string,
  namespace: string,
): Promise<string[]> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const c = new KubeClient(kc, 'rbac-test');
  const out = [];
  for (const verb of VERBS) {
    const r = await c.create<KubeObject & { status: { allowed: boolean } }>(
      '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews',
      {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes: { verb, resource, group, namespace } },
      },
    );
    if (r.status.allowed) out.push(verb);
  }
  return out;
}

/** "group/resource[/subresource] verb", group omitted for the core group. */
export const permissionKey = (group: string, resource: string, verb: string) =>
  `${group ? `${group}/` : ''}${resource} ${verb}`;

/** Every permission key the rules of `docs` grant. */
export const grantedKeys = (docs: readonly RbacDoc[]) => [
  ...new Set(
    docs.flatMap((d) =>
      (d.rules ?? []).flatMap((r) =>
        r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => permissionKey(g, res, v)))),
      ),
    ),
  ),
];

interface AuditEvent {
  stage: string;
  verb: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; apiGroup?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  annotations?: Record<string, string>;
}

/** What `user` asked for (permission keys) and which requests RBAC refused, from a JSON audit log. */
export function auditedUse(logPath: string, user: string): { used: Set<string>; refused: string[] } {
  const used = new Set<string>();
  const refused: string[] = [];
  for (const line of readFileSync(logPath, 'utf8').split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as AuditEvent;
    const r = e.objectRef;
    if (e.user.username !== user || !r?.resource) continue;
    const k = permissionKey(r.apiGroup ?? '', r.subresource ? `${r.resource}/${r.subresource}` : r.resource, e.verb);
    used.add(k);
    // Server-side apply of a missing object is one PATCH answered 201, authorized as create too.
    if (e.verb === 'patch' && e.stage === 'ResponseComplete' && e.responseStatus?.code === 201)
      used.add(permissionKey(r.apiGroup ?? '', r.resource, 'create'));
    if (e.annotations?.['authorization.k8s.io/decision'] === 'forbid')
      refused.push(`${k} ${r.namespace ?? ''}/${r.name ?? ''}`);
  }
  return { used, refused };
}
