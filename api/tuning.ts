// The `tuning` section: sysctl profiles + overrides, and NIC IRQ / RPS / XPS / worker CPU affinity.
// One zod source for both consumers:
//   - TuningSpec: the input shape, JSON-schema friendly (plain objects, enums, pattern strings,
//     int-or-string maps, CEL rules in meta), for the TransparentProxy CRD (`spec.tuning`);
//   - Tuning: TuningSpec with defaults filled in and overrides canonicalised, for NodeConfig
//     (`tuning:`), read by the node agent's tuning engine (daemonset/tuning/).
// Every check that CEL cannot express cheaply (value ranges per key, CPU-list syntax) is a zod
// refinement, so the operator and the agent reject the same documents; errors name the field.
import { z } from 'zod';
import { cel, type CelRule, IFNAME } from './fields.ts';
import { canonicalSysctl, SYSCTLS } from './tuning-sysctls.ts';

export { SYSCTLS } from './tuning-sysctls.ts';

export const PROFILES = ['none', 'throughput', 'latency', 'conntrack-heavy'] as const;
export type ProfileName = (typeof PROFILES)[number];

const MAX_OVERRIDES = 64;
const CPU_LIST = /^\s*(\d+(-\d+)?)(\s*,\s*\d+(-\d+)?)*\s*$/;

/** Checks a kernel-style CPU list ("0-3,8,10-11"): ascending ranges, CPUs 0..8191. */
function cpuListProblem(text: string): string | undefined {
  if (!CPU_LIST.test(text)) return 'must be a CPU list like 0-3,8,10-11';
  for (const part of text.replace(/\s+/g, '').split(',')) {
    const [a, b = a] = part.split('-').map(Number) as [number, number?];
    if (b! < a) return `range ${part} runs backwards`;
    if (b! > 8191) return `CPU ${b} is above 8191`;
  }
  return undefined;
}
const cpuList = (description: string) =>
  z
    .string()
    .max(256)
    .regex(CPU_LIST, 'must be a CPU list like 0-3,8,10-11')
    .superRefine((t, ctx) => {
      const p = cpuListProblem(t);
      if (p && CPU_LIST.test(t)) ctx.addIssue({ code: 'custom', message: p });
    })
    .meta({ description: `${description} Kernel CPU-list syntax: 0-3,8,10-11.` });

const overrideValue = z.union([z.number().int().min(0), z.string().max(128)]).meta({
  'x-kubernetes-int-or-string': true,
  description: 'Integer, or text such as "1024 65535" for multi-value keys.',
});

const allowedKeys = Object.keys(SYSCTLS);

/**
 * CEL mirrors of the per-key type and range checks, one rule per key so the API server's message
 * names the key. Values are int-or-string: int() accepts both (a non-numeric string fails the rule).
 */
function sysctlCelRules(): CelRule[] {
  return Object.entries(SYSCTLS).map(([k, spec]): CelRule => {
    const v = `self['${k}']`,
      absent = `!('${k}' in self)`;
    if (spec.kind === 'int')
      return {
        rule: `${absent} || (int(${v}) >= ${spec.min} && int(${v}) <= ${spec.max})`,
        message: `${k} must be an integer in ${spec.min}..${spec.max}`,
      };
    if (spec.kind === 'word')
      return {
        rule: `${absent} || string(${v}) in [${spec.values.map((w) => `'${w}'`).join(', ')}]`,
        message: `${k} must be one of ${spec.values.join(', ')}`,
      };
    return {
      rule: `${absent} || string(${v}).matches(r'^\\s*[0-9]+(\\s+[0-9]+){${spec.count - 1}}\\s*$')`,
      message: `${k} must be ${spec.count} integers separated by spaces (${spec.min}..${spec.max}, non-decreasing)`,
    };
  });
}
const SysctlsSpec = z
  .object({
    profile: z
      .enum(PROFILES)
      .optional()
      .meta({
        description:
          'Named base profile (values and reasons in docs/tuning.md): none, throughput (many concurrent bulk ' +
          'connections), latency (small request/response), conntrack-heavy (many short connections through conntrack). Default none.',
      }),
    overrides: z
      .record(z.string().max(96), overrideValue)
      .optional()
      .superRefine((m, ctx) => {
        const entries = Object.entries(m ?? {});
        if (entries.length > MAX_OVERRIDES)
          ctx.addIssue({ code: 'custom', message: `at most ${MAX_OVERRIDES} overrides` });
        for (const [k, v] of entries) {
          const r = canonicalSysctl(k, v);
          if ('error' in r) ctx.addIssue({ code: 'custom', path: [k], message: r.error });
        }
      })
      .meta({
        description:
          'Per-key values applied on top of the profile (a key here wins). Only allowlisted keys, each with a ' +
          `type and range (docs/tuning.md): ${allowedKeys.join(', ')}.`,
        maxProperties: MAX_OVERRIDES,
        ...cel(
          {
            rule: `self.all(k, k in [${allowedKeys.map((k) => `'${k}'`).join(', ')}])`,
            message: 'only allowlisted sysctls may be set (docs/tuning.md)',
          },
          ...sysctlCelRules(),
        ),
      }),
  })
  .strict()
  .meta({ description: 'Kernel parameters; every previous value is snapshotted and restored when tuning is removed.' });

const ifname = z
  .string()
  .regex(new RegExp(`^${IFNAME}$`), 'must be an interface name (max 15 characters)')
  .refine((n) => n !== '.' && n !== '..', 'must be an interface name, not . or ..');

const AffinitySpec = z
  .object({
    mode: z
      .enum(['off', 'auto', 'explicit'])
      .optional()
      .meta({
        description:
          "off: leave IRQs, RPS/XPS and workers alone. auto: plan from the node's topology (NUMA node of the NIC, " +
          'physical cores, queues); any CPU list given below overrides that part. explicit: irqCpus and workerCpus are required ' +
          'and used as given. Default off.',
      }),
    interfaces: z.array(ifname).max(16).optional().meta({
      description: 'NICs whose queue IRQs and RPS/XPS are tuned. Default: the interfaces carrying a default route.',
      'x-kubernetes-list-type': 'set',
    }),
    irqCpus: cpuList('CPUs that serve the NIC queue interrupts, queues spread round-robin over them.').optional(),
    irqCpuCount: z
      .number()
      .int()
      .min(1)
      .max(1024)
      .optional()
      .meta({
        description:
          "auto: how many physical cores of the NIC's NUMA node take interrupts. Default: a quarter of them " +
          '(at least 1, at most one per queue).',
      }),
    workerCpus: cpuList("CPUs the sidecar's workers are pinned to; the worker count follows (one per CPU).").optional(),
    maxWorkers: z
      .number()
      .int()
      .min(1)
      .max(64)
      .optional()
      .meta({ description: 'Upper bound on the planned worker count.' }),
    reservedCpus: cpuList('CPUs never used for interrupts, steering or workers (housekeeping, kubelet).').optional(),
    rps: z
      .enum(['auto', 'on', 'off'])
      .optional()
      .meta({
        description:
          'Receive Packet Steering + Receive Flow Steering: auto turns it on when the interrupt CPUs are not the ' +
          'worker CPUs (protocol work then follows the consuming worker). Default auto.',
      }),
    rpsCpus: cpuList('CPUs RPS may steer to (rps_cpus of every rx queue). Default: the worker CPUs.').optional(),
    rpsSockFlowEntries: z
      .number()
      .int()
      .min(0)
      .max(1 << 27)
      .optional()
      .meta({
        description:
          'net.core.rps_sock_flow_entries (RFS table; rounded up to a power of two; each rx queue gets its share as ' +
          'rps_flow_cnt). Default 32768.',
      }),
    xps: z.enum(['auto', 'on', 'off']).optional().meta({
      description:
        'Transmit Packet Steering: each CPU transmits on one tx queue. auto: on for multi-queue NICs. Default auto.',
    }),
    xpsCpus: cpuList('CPUs included in the XPS maps. Default: every online CPU not reserved.').optional(),
    irqbalance: z
      .enum(['coexist', 'ignore', 'defer'])
      .optional()
      .meta({
        description:
          'When irqbalance runs: coexist pins the IRQs and reports the banned IRQs/CPUs irqbalance must be given ' +
          '(a Degraded condition until it is); ignore pins without checking; defer leaves IRQs to irqbalance and only ' +
          'does RPS/XPS and workers. Default coexist.',
      }),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.mode === 'explicit') {
      for (const k of ['irqCpus', 'workerCpus'] as const)
        if (a[k] === undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'required when mode is explicit' });
      if (a.irqCpuCount !== undefined)
        ctx.addIssue({ code: 'custom', path: ['irqCpuCount'], message: 'only used when mode is auto' });
    }
  })
  .meta({
    description: 'NIC interrupt, RPS/XPS and worker CPU placement. Previous values are snapshotted and restored.',
    ...cel(
      {
        rule: "!has(self.mode) || self.mode != 'explicit' || (has(self.irqCpus) && has(self.workerCpus))",
        message: 'irqCpus and workerCpus are required when mode is explicit',
      },
      {
        rule: "!has(self.irqCpuCount) || (has(self.mode) && self.mode == 'auto')",
        message: 'irqCpuCount is only used when mode is auto',
        fieldPath: '.irqCpuCount',
      },
    ),
  });

export const TuningSpec = z
  .object({
    sysctls: SysctlsSpec.optional(),
    affinity: AffinitySpec.optional(),
  })
  .strict()
  .meta({
    description:
      "Node tuning tied to the proxy's lifecycle: applied on active nodes, drift reported, restored on removal.",
  });
export type TuningSpec = z.input<typeof TuningSpec>;

export type RpsMode = 'auto' | 'on' | 'off';

/** The resolved section (defaults filled, overrides canonical): what the agent's engine consumes. */
export interface Tuning {
  sysctls: { profile: ProfileName; overrides: Record<string, string> };
  affinity: {
    mode: 'off' | 'auto' | 'explicit';
    interfaces: string[];
    irqCpus?: string;
    irqCpuCount?: number;
    workerCpus?: string;
    maxWorkers?: number;
    reservedCpus?: string;
    rps: RpsMode;
    rpsCpus?: string;
    rpsSockFlowEntries: number;
    xps: RpsMode;
    xpsCpus?: string;
    irqbalance: 'coexist' | 'ignore' | 'defer';
  };
}

export const DEFAULT_RPS_SOCK_FLOW_ENTRIES = 32768;

function resolve(spec: z.output<typeof TuningSpec> | undefined): Tuning {
  const s = spec?.sysctls,
    a = spec?.affinity;
  const overrides: Record<string, string> = {};
  for (const [k, v] of Object.entries(s?.overrides ?? {})) {
    const r = canonicalSysctl(k, v);
    if ('text' in r) overrides[k] = r.text; // errors were already raised by the schema
  }
  const drop = <T extends object>(o: T): T =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  return {
    sysctls: { profile: s?.profile ?? 'none', overrides },
    affinity: drop({
      ...a,
      mode: a?.mode ?? 'off',
      interfaces: a?.interfaces ?? [],
      rps: a?.rps ?? 'auto',
      rpsSockFlowEntries: a?.rpsSockFlowEntries ?? DEFAULT_RPS_SOCK_FLOW_ENTRIES,
      xps: a?.xps ?? 'auto',
      irqbalance: a?.irqbalance ?? 'coexist',
    }),
  };
}

/** For NodeConfig: `tuning: Tuning` (an omitted section resolves to "change nothing"). */
export const Tuning = TuningSpec.optional().transform((v) => resolve(v));
