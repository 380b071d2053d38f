// zod → CustomResourceDefinition. Pure: returns the CRD object and its YAML text; main.ts writes
// them and gen.test.ts compares them with the committed crds/.
//
// zod's JSON schema is not a Kubernetes *structural* schema, so it is post-processed:
//  - no $schema, no additionalProperties:false beside properties (unknown fields are pruned instead),
//    no propertyNames on maps, no $ref/definitions (zod inlines when nothing is reused by id);
//  - `x-kubernetes-int-or-string` nodes replace zod's anyOf(string, number) (keeping a string pattern);
//  - zod's ±2^53 bounds on .int() are dropped (int64 fields need none);
//  - every node keeps its description, so `kubectl explain` documents each field.
import { stringify } from 'yaml';
import { z } from 'zod';
import { GROUP, KIND, PLURAL, TransparentProxy, VERSION } from '../../api/transparentproxy.ts';

type Json = { [k: string]: unknown };
const SAFE = Number.MAX_SAFE_INTEGER;

export function structural(node: Json): Json {
  if (node['x-kubernetes-int-or-string']) {
    const out: Json = { 'x-kubernetes-int-or-string': true };
    if (node.description) out.description = node.description;
    // A string member's pattern (quantities) holds for strings only, as controller-gen writes it.
    const pattern = (node.anyOf as Json[] | undefined)?.find((m) => m.type === 'string')?.pattern;
    if (pattern) Object.assign(out, { anyOf: [{ type: 'integer' }, { type: 'string' }], pattern });
    return out;
  }
  if (node.$ref || node.definitions || node.$defs)
    throw new Error(`structural schema cannot hold $ref: ${JSON.stringify(node).slice(0, 200)}`);
  if (node.anyOf || node.oneOf || node.allOf)
    throw new Error(`structural schema needs one type per node: ${JSON.stringify(node).slice(0, 200)}`);
  const out: Json = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === '$schema' || k === 'propertyNames' || k === 'default' || k === 'id') continue;
    if (k === 'additionalProperties' && v === false) continue;
    if ((k === 'minimum' && v === -SAFE) || (k === 'maximum' && v === SAFE)) continue;
    if (k === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(v as Record<string, Json>).map(([p, s]) => [p, structural(s)]),
      );
    } else if (k === 'items' || (k === 'additionalProperties' && typeof v === 'object')) {
      out[k] = structural(v as Json);
    } else if (k === 'const') {
      out.enum = [v];
    } else {
      out[k] = v;
    }
  }
  if (out.properties && !out.type) out.type = 'object';
  if (Array.isArray(out.required) && out.required.length === 0) delete out.required;
  return out;
}

export function openApiSchema(): Json {
  const raw = z.toJSONSchema(TransparentProxy, { io: 'input', unrepresentable: 'throw' }) as Json;
  const schema = structural(raw);
  // metadata is validated by the API server itself; the schema only declares it.
  (schema.properties as Json).metadata = { type: 'object' };
  return schema;
}

export function transparentProxyCrd(): Json {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${PLURAL}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: 'transparentproxy',
        shortNames: ['tproxy'],
        categories: ['tpfleet'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: openApiSchema() },
          subresources: {
            status: {},
            scale: {
              specReplicasPath: '.spec.replicas',
              statusReplicasPath: '.status.replicas',
              labelSelectorPath: '.status.selector',
            },
          },
          additionalPrinterColumns: [
            {
              name: 'Ready',
              type: 'string',
              jsonPath: '.status.conditions[?(@.type=="Ready")].status',
              description: 'Every active node has a Ready proxy.',
            },
            {
              name: 'Active',
              type: 'integer',
              jsonPath: '.status.replicas',
              description: 'Active (intercepting) nodes.',
            },
            {
              name: 'Ready-Nodes',
              type: 'integer',
              jsonPath: '.status.readyReplicas',
              priority: 1,
              description: 'Active nodes with a Ready proxy.',
            },
            {
              name: 'Replicas',
              type: 'integer',
              jsonPath: '.spec.replicas',
              description: 'Requested active nodes (empty: every candidate).',
            },
            {
              name: 'Rules',
              type: 'integer',
              jsonPath: '.status.policy.rules',
              priority: 1,
              description: 'Egress policy rules in force (empty: no policy).',
            },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
        },
      ],
    },
  };
}

const HEADER = '# Generated by `npm run gen` from api/transparentproxy.ts. Do not edit; CI fails on a diff.\n';

/** File name (relative to crds/) → YAML text. */
export function renderCrdFiles(): Map<string, string> {
  return new Map([[`${GROUP}_${PLURAL}.yaml`, HEADER + stringify(transparentProxyCrd(), { lineWidth: 0 })]]);
}

/** Where `npm run gen` writes the CRD as a Helm template (relative to the chart). */
export const CRD_TEMPLATE = 'templates/crds/transparentproxies.yaml';

const TEMPLATE_HEADER = `{{- /*
Generated by \`npm run gen\` from api/transparentproxy.ts (the same CRD as crds/ at the repository root).
Do not edit; CI fails on a diff.
A template, not the chart's crds/ folder: Helm installs crds/ before it validates values (a bad value
then fails after the CRD exists) and never upgrades it. As a template the CRD is validated with the
rest and upgraded by \`helm upgrade\`. helm.sh/resource-policy: keep (crds.keep) leaves it on
\`helm uninstall\`: deleting the CRD deletes every TransparentProxy while no operator is left to clean
their nodes. Users who manage CRDs themselves set crds.enabled=false and apply crds/ (docs/helm.md).
*/ -}}
{{- if .Values.crds.enabled }}
`;

/**
 * The CRD as a chart template: the generated object, with the release labels and the keep
 * annotation templated into metadata. The CRD text is copied verbatim, so it must hold no
 * template delimiters (a CEL rule or description containing one would be evaluated by Helm).
 */
export function renderCrdTemplate(crd: Json = transparentProxyCrd()): string {
  const { apiVersion, kind, metadata, spec, ...other } = crd as Json & { metadata: { name: string } };
  if (Object.keys(other).length) throw new Error(`unexpected top-level CRD fields: ${Object.keys(other).join(', ')}`);
  const body = stringify({ spec }, { lineWidth: 0 });
  if (body.includes('{{') || body.includes('}}')) throw new Error('the CRD text holds a Helm template delimiter');
  const head = [
    `apiVersion: ${String(apiVersion)}`,
    `kind: ${String(kind)}`,
    'metadata:',
    `  name: ${metadata.name}`,
    '  labels:',
    '    {{- include "tpfleet.labels" . | nindent 4 }}',
    '  {{- if .Values.crds.keep }}',
    '  annotations:',
    '    helm.sh/resource-policy: keep',
    '  {{- end }}',
  ];
  return `${TEMPLATE_HEADER}${head.join('\n')}\n${body.trimEnd()}\n{{- end }}\n`;
}
