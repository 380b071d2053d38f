// Status of a TransparentProxy, written only by the operator (status subresource). Kept beside
// the spec so the CRD's status schema comes from the same zod source.
import { z } from 'zod';
import { NodeTraffic } from './traffic-condition.ts';
import { TUNING_CONDITION_TYPE, TUNING_MESSAGE_MAX, TUNING_REASON_MAX, TUNING_REASONS } from './tuning-condition.ts';

const reasons = Object.entries(TUNING_REASONS)
  .map(([r, why]) => (why ? `${r} (${why})` : r))
  .join(', ');

export const CONDITION_TYPES = ['Ready', 'Progressing', 'Degraded', 'InvalidSpec'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

export const Condition = z
  .object({
    type: z.string().max(64).meta({ description: 'Ready, Progressing, Degraded or InvalidSpec.' }),
    status: z.enum(['True', 'False', 'Unknown']),
    reason: z.string().max(128).meta({ description: 'CamelCase reason for the last transition.' }),
    message: z
      .string()
      .max(4096)
      .optional()
      .meta({ description: 'Human-readable detail; for InvalidSpec it names the field.' }),
    lastTransitionTime: z.string().meta({ description: 'When status last changed.', format: 'date-time' }),
    observedGeneration: z
      .number()
      .int()
      .min(0)
      .optional()
      .meta({ description: 'metadata.generation this condition was computed from.' }),
  })
  .strict();
export type Condition = z.output<typeof Condition>;

export const NodeTuning = z
  .object({
    reason: z
      .string()
      .max(TUNING_REASON_MAX)
      .meta({ description: `${reasons}.` }),
    message: z.string().max(TUNING_MESSAGE_MAX).meta({
      description:
        'What was applied, or the keys that drifted, were refused or are missing, as the node agent reported it.',
    }),
  })
  .strict()
  .meta({
    description: `The node agent's tuning report (pod condition ${TUNING_CONDITION_TYPE}); absent until the agent reported.`,
  });
export type NodeTuning = z.output<typeof NodeTuning>;

const count = (what: string) => z.number().int().min(0).meta({ description: what });
export const NodeDecisions = z
  .object({
    allow: count('Connections allowed (a rule or the default).'),
    deny: count('Connections reset by a Deny rule or a Deny default.'),
    forward: count('Connections sent through an upstream.'),
    limited: count("Connections reset by a rule's limits."),
  })
  .strict()
  .meta({
    description:
      "Egress policy decisions of this node's sidecar since it started, summed over rules (per rule: its /metrics, tpfleet_proxy_policy_decisions_total); published by the node agent at most once a minute.",
  });

export const NodeSummary = z
  .object({
    name: z.string().max(253),
    zone: z.string().max(253).optional().meta({ description: 'topology.kubernetes.io/zone of the node.' }),
    state: z
      .enum(['Active', 'Draining'])
      .meta({ description: 'Active intercepts; Draining is leaving after a scale-in.' }),
    ready: z.boolean().meta({ description: 'The proxy pod on this node is Ready.' }),
    tuning: NodeTuning.optional(),
    policy: NodeDecisions.optional(),
    configHash: z.string().max(64).optional().meta({
      description:
        "The config hash this node's agent reports it enforces (absent until it reported); status.configHash once it applied the current spec.",
    }),
    configRefused: z.string().max(1024).optional().meta({
      description:
        'Why this node refused the current config (it keeps the configHash above in force), naming the field.',
    }),
    traffic: NodeTraffic.optional(),
  })
  .strict();
export type NodeSummary = z.output<typeof NodeSummary>;

const Invalid = (what: string) =>
  z
    .object({
      name: z
        .string()
        .max(253)
        .meta({ description: `The ${what}'s name as the spec gives it.` }),
      message: z.string().max(1024).meta({ description: 'What is wrong, naming the field.' }),
    })
    .strict();

export const PolicyStatus = z
  .object({
    rules: z
      .number()
      .int()
      .min(0)
      .meta({ description: 'Rules in the configuration rolled out (status.configHash); 0 without a policy.' }),
    upstreams: z.number().int().min(0).meta({ description: 'Upstream proxies in that configuration.' }),
    defaultAction: z
      .enum(['Allow', 'Deny'])
      .meta({ description: 'What that configuration does with connections no rule matches.' }),
    invalidRule: Invalid('rule').optional().meta({
      description: 'The first rule of the rejected spec that is wrong (InvalidSpec); the nodes keep the rules above.',
    }),
    invalidUpstream: Invalid('upstream').optional().meta({
      description: 'The first upstream of the rejected spec that is wrong, e.g. its Secret is missing or lacks a key.',
    }),
  })
  .strict()
  .meta({ description: 'The egress policy in force (spec.policy, docs/egress.md).' });
export type PolicyStatus = z.output<typeof PolicyStatus>;

/**
 * Above this many active and draining nodes, status.nodes lists only the nodes that need attention
 * (at most this many) and status.nodeCounts counts all of them: an object is limited to about
 * 1.5 MiB, and a full list of 5,000 nodes with their reports would exceed it (issue 17).
 */
export const NODES_LISTED_MAX = 100;

export const NodeCounts = z
  .object({
    active: count('Active nodes (status.replicas).'),
    ready: count('Active nodes whose proxy pod is Ready (status.readyReplicas).'),
    notReady: count('Active nodes whose proxy pod is not Ready.'),
    draining: count('Nodes leaving the active set whose restore has not finished.'),
    configRefused: count('Active nodes refusing the current config (status.configHash).'),
    tuningDegraded: count('Active nodes reporting a degrading tuning problem.'),
    omitted: count('Nodes left out of status.nodes (Active, Ready and without a problem, or past the cap).'),
  })
  .strict()
  .meta({
    description: `Present when the fleet has more than ${NODES_LISTED_MAX} active and draining nodes: status.nodes then lists only nodes that are not ready, draining, refusing the config or degraded by tuning, at most ${NODES_LISTED_MAX}.`,
  });
export type NodeCounts = z.output<typeof NodeCounts>;

export const TransparentProxyStatus = z
  .object({
    observedGeneration: z
      .number()
      .int()
      .min(0)
      .optional()
      .meta({ description: 'Last metadata.generation the operator acted on.' }),
    conditions: z
      .array(Condition)
      .max(16)
      .optional()
      .meta({
        description: 'Ready, Progressing, Degraded, InvalidSpec.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['type'],
      }),
    replicas: z.number().int().min(0).optional().meta({ description: 'Active nodes (the /scale status replicas).' }),
    readyReplicas: z.number().int().min(0).optional().meta({ description: 'Active nodes whose proxy pod is Ready.' }),
    candidates: z
      .number()
      .int()
      .min(0)
      .optional()
      .meta({ description: 'Nodes eligible to be active (selected, Ready, taints tolerated).' }),
    selector: z
      .string()
      .max(1024)
      .optional()
      .meta({ description: 'Label selector of the proxy pods, serialized (used by /scale and the HPA).' }),
    configHash: z.string().max(64).optional().meta({
      description:
        'Hash of the current rendered NodeConfig (the ConfigMap). Nodes apply most changes in place and report the hash they enforce in nodes[].configHash; Progressing stays True until every active node enforces this one.',
    }),
    policy: PolicyStatus.optional(),
    nodes: z
      .array(NodeSummary)
      .max(NODES_LISTED_MAX)
      .optional()
      .meta({
        description: `Per-node summary of the active and draining nodes; above ${NODES_LISTED_MAX} of them, only those that need attention (status.nodeCounts counts all).`,
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
    nodeCounts: NodeCounts.optional(),
  })
  .strict()
  .meta({ description: 'Observed state, written by the operator.' });
export type TransparentProxyStatus = z.output<typeof TransparentProxyStatus>;
