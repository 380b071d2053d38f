// Values of the Helm chart charts/tpfleet: the single source of truth for its values.schema.json
// (written by `npm run gen`, draft-07, so `helm install/upgrade/template/lint` refuse a typo or a
// bad value naming the field) and for the values table in docs/helm.md. charts/tpfleet/values.yaml
// holds the defaults and must parse with ChartValues (operator/gen/chart-values.test.ts).
//
// Invariants: every object is strict (additionalProperties: false) except the Kubernetes types
// passed through verbatim (affinity); every field has a description; cross-field rules that JSON
// schema cannot express are zod refinements here *and* `fail` calls in the templates.
import { z } from 'zod';
import {
  boundedDurationText,
  DURATION_BOUNDS,
  type DurationField,
  LOG_LEVELS,
  PULL_POLICIES,
  quantityText,
  RESOURCE_NAMES,
} from './fields.ts';

const duration = (field: DurationField, description: string) =>
  boundedDurationText(field).meta({
    description: `${description} Between ${DURATION_BOUNDS[field].min} and ${DURATION_BOUNDS[field].max}.`,
  });
const stringMap = (description: string) =>
  z.record(z.string().min(1).max(316), z.string().max(4096)).meta({ description });
/** DNS-1123 subdomain: a Secret name. */
const dnsSubdomain = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'must be a DNS-1123 subdomain');
/** DNS-1123 label: a namespace name. */
const dnsLabel = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS-1123 label (lower case, digits, -)');

const Image = (what: string) =>
  z
    .object({
      repository: z
        .string()
        .min(1)
        .max(255)
        // biome-ignore lint/complexity/noUselessEscapeInRegex: the pattern is copied into values.schema.json as written; kept byte-identical
        .regex(/^[a-z0-9]+([._\/:-][a-z0-9]+)*$/, 'must be an image repository like ghcr.io/tpfleet/tpfleet-node')
        .meta({ description: `Repository of the ${what} image.` }),
      tag: z
        .string()
        .max(128)
        .regex(/^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$/, 'must be an image tag (letters, digits, _ . -)')
        .meta({ description: "Image tag; empty means the chart's appVersion." }),
      digest: z
        .string()
        .regex(/^(sha256:[a-f0-9]{64})?$/, 'must be empty or sha256:<64 hex digits>')
        .meta({ description: 'Pin the image by digest (sha256:...); when set it wins over tag.' }),
    })
    .strict();

const quantity = z.union([quantityText, z.number().min(0)]);
const resourceMap = z.partialRecord(z.enum(RESOURCE_NAMES), quantity);
const Resources = z
  .object({
    requests: resourceMap.optional().meta({ description: 'Minimum resources (cpu, memory, ephemeral-storage).' }),
    limits: resourceMap.optional().meta({ description: 'Maximum resources (cpu, memory, ephemeral-storage).' }),
  })
  .strict();

const Toleration = z
  .object({
    key: z.string().max(316).optional(),
    operator: z.enum(['Exists', 'Equal']).optional(),
    value: z.string().max(63).optional(),
    effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
    tolerationSeconds: z.number().int().optional(),
  })
  .strict();

const Monitor = (what: string) => ({
  enabled: z
    .boolean()
    .meta({ description: `Create a ${what} (needs the Prometheus Operator CRDs, monitoring.coreos.com/v1).` }),
  interval: duration('scrape', 'Scrape interval.'),
  scrapeTimeout: duration('scrape', 'Scrape timeout (must not exceed the interval).'),
  labels: stringMap(`Extra labels on the ${what}, e.g. the release label your Prometheus selects.`),
});

export const OperatorValues = z
  .object({
    image: Image('operator')
      .extend({
        pullPolicy: z.enum(PULL_POLICIES).meta({ description: 'imagePullPolicy of the operator container.' }),
      })
      .strict(),
    imagePullSecrets: z
      .array(z.object({ name: dnsSubdomain }).strict())
      .max(16)
      .meta({ description: 'Secrets for pulling the operator image ([{name: ...}]).' }),
    replicas: z.number().int().min(1).max(5).meta({
      description:
        'Operator pods. One leads (Lease in the release namespace), the others stand by; >1 needs leaderElect.',
    }),
    leaderElect: z
      .boolean()
      .meta({ description: 'Leader election (--leader-elect); only turn off with exactly one replica.' }),
    logLevel: z.enum(LOG_LEVELS).meta({ description: 'Operator log level (--log-level).' }),
    cleanupTimeout: duration(
      'cleanupTimeout',
      'How long deletion waits for every node to remove its rules before giving up (--cleanup-timeout).',
    ),
    resync: duration('resync', 'Full re-reconcile period of every TransparentProxy (--resync).'),
    workers: z.number().int().min(1).max(32).meta({ description: 'Concurrent reconciles (--workers).' }),
    port: z
      .number()
      .int()
      .min(1024)
      .max(65535)
      .meta({ description: 'Port of /metrics, /healthz, /readyz (--bind 0.0.0.0:<port>) and of the metrics Service.' }),
    resources: Resources.meta({ description: 'Resources of the operator container.' }),
    nodeSelector: stringMap('Node labels the operator pods require.'),
    tolerations: z.array(Toleration).max(32).meta({ description: 'Tolerations of the operator pods.' }),
    affinity: z
      .record(z.string(), z.unknown())
      .meta({ description: 'Affinity of the operator pods (Kubernetes Affinity, passed through).' }),
    priorityClassName: z
      .string()
      .max(253)
      .meta({ description: 'priorityClassName of the operator pods; empty for none.' }),
    podAnnotations: stringMap('Extra annotations on the operator pods.'),
    podLabels: stringMap('Extra labels on the operator pods.'),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.replicas > 1 && !o.leaderElect)
      ctx.addIssue({ code: 'custom', path: ['leaderElect'], message: 'must be true when replicas > 1' });
  });

export const ChartValues = z
  .object({
    nameOverride: z.string().max(40).meta({ description: 'Replaces the chart name in object names.' }),
    fullnameOverride: z.string().max(40).meta({ description: 'Replaces <release>-<chart> in object names.' }),
    crds: z
      .object({
        enabled: z.boolean().meta({
          description:
            'Install and upgrade the TransparentProxy CRD with the release (a template); false: you apply crds/ yourself.',
        }),
        keep: z.boolean().meta({
          description:
            'Keep the CRD on helm uninstall (helm.sh/resource-policy: keep); false deletes it and every TransparentProxy.',
        }),
      })
      .strict()
      .meta({ description: 'The TransparentProxy CustomResourceDefinition.' }),
    operator: OperatorValues.meta({ description: 'The operator Deployment.' }),
    node: z
      .object({
        image: Image('node').meta({
          description: 'Node image (agent + sidecar) of TransparentProxies that do not set spec.proxy.image (--image).',
        }),
      })
      .strict()
      .meta({ description: 'Defaults for the node pods the operator renders.' }),
    fleetNamespace: z
      .object({
        create: z.boolean().meta({
          description:
            'Create the namespace for TransparentProxies, labelled Pod Security privileged (kept on uninstall).',
        }),
        name: dnsLabel.meta({
          description: 'Its name; must differ from the release namespace (which stays restricted).',
        }),
        labels: stringMap('Extra labels on the fleet namespace.'),
      })
      .strict()
      .meta({ description: 'Where TransparentProxies and their node DaemonSets live (docs/adr/0005).' }),
    janitor: z
      .object({
        enabled: z.boolean().meta({ description: 'Run the node janitor DaemonSet (docs/adr/0015).' }),
        namespace: dnsLabel.meta({
          description: 'Its namespace; must differ from the fleet namespace and the release namespace.',
        }),
        createNamespace: z.boolean().meta({ description: 'Create that namespace, labelled Pod Security privileged.' }),
        intervalSeconds: z
          .number()
          .int()
          .min(1)
          .max(3600)
          .meta({ description: 'Seconds between passes (agent --status-interval).' }),
      })
      .strict()
      .meta({ description: 'Removes what a gone TransparentProxy left on a node (rules, routes, tuning).' }),
    tenancy: z
      .object({
        namespaces: z.array(dnsLabel).max(64).meta({
          description:
            'More namespaces whose TransparentProxies the operator reconciles, besides the fleet namespace (--namespaces); objects elsewhere get InvalidSpec and nothing scheduled.',
        }),
        allowedImages: z.array(z.string().min(1).max(512)).max(32).meta({
          description:
            'Node images spec.proxy.image may name (--allowed-images): exact, or a prefix ending in ":", "@" or "/". Empty: any tag or digest of node.image.repository.',
        }),
        allowControlPlane: z.boolean().meta({
          description:
            'Let TransparentProxies tolerate control-plane taints or select control-plane nodes (--allow-control-plane).',
        }),
      })
      .strict()
      .meta({ description: 'What creating a TransparentProxy may ask for (docs/adr/0016-tenancy-and-admission.md).' }),
    userRoles: z
      .object({
        create: z.boolean().meta({
          description:
            'Create the ClusterRoles tpfleet-view, tpfleet-edit and tpfleet-admin (cluster-wide names: one release per cluster creates them).',
        }),
      })
      .strict()
      .meta({ description: 'The roles users are granted to read or create TransparentProxies (docs/adr/0016).' }),
    webhook: z
      .object({
        port: z
          .number()
          .int()
          .min(1024)
          .max(65535)
          .meta({ description: 'Port the operator serves admission on (--webhook-bind).' }),
        certValidity: duration(
          'certValidity',
          'Lifetime of the serving certificate the operator issues itself; renewed at two thirds.',
        ),
        caValidity: duration('caValidity', 'Lifetime of its CA; a new CA joins the caBundle before it signs anything.'),
      })
      .strict()
      .meta({ description: 'The validating admission webhook for TransparentProxies (failurePolicy Fail).' }),
    metrics: z
      .object({
        serviceMonitor: z
          .object(Monitor("ServiceMonitor for the operator's /metrics"))
          .strict()
          .meta({ description: 'Prometheus Operator ServiceMonitor for the operator.' }),
        podMonitor: z
          .object({
            ...Monitor("PodMonitor for the node sidecars' tpfleet_proxy_* metrics"),
            namespaces: z
              .array(dnsLabel)
              .max(64)
              .meta({ description: 'More namespaces holding TransparentProxies, besides the fleet namespace.' }),
          })
          .strict()
          .meta({ description: 'Prometheus Operator PodMonitor for the node sidecars.' }),
        grafanaDashboard: z
          .object({
            enabled: z.boolean().meta({
              description: "Create a ConfigMap with the fleet's Grafana dashboard (dashboards/tpfleet.json).",
            }),
            namespace: z
              .union([dnsLabel, z.literal('')])
              .meta({ description: "Namespace Grafana's sidecar watches; empty: the release namespace." }),
            labels: stringMap("Labels Grafana's dashboard sidecar selects ConfigMaps by."),
          })
          .strict()
          .meta({ description: "Grafana dashboard ConfigMap for Grafana's dashboard sidecar (off by default)." }),
      })
      .strict()
      .meta({ description: 'Prometheus Operator scrape objects.' }),
  })
  .strict()
  .meta({
    title: 'tpfleet chart values',
    description: 'Values of the tpfleet Helm chart (generated from api/chart-values.ts).',
  });

export type ChartValues = z.output<typeof ChartValues>;
