// A kernel value tpfleet sets: one file below /proc or /sys, the value, and how to compare what the
// kernel reads back. The pure planners produce them (host/affinity.ts for IRQ/RPS/XPS, the node
// agent's sysctl plan); the node agent's engine (daemonset/tuning/owned.ts) snapshots, writes,
// verifies and restores them. Plain data, no I/O.

/** How two texts of a file are compared: whitespace-separated words, CPU lists or CPU masks. */
export type Compare = 'words' | 'cpulist' | 'cpumask';

export interface Write {
  /** Stable id used in reports and the state: a sysctl key, or "irq/38/smp_affinity_list", "eth0/rx-0/rps_cpus". */
  key: string;
  /** Kernel path (absolute, without the root prefix). */
  path: string;
  value: string;
  compare: Compare;
  /** Only raise: integers component-wise max(current, value). */
  atLeast?: boolean;
  group: 'sysctl' | 'affinity';
  /**
   * A path that must exist for `path` to still mean the same thing, e.g. /proc/irq/38/virtio2-input.0:
   * IRQ numbers are reassigned when a driver reloads, and an original must never be restored onto
   * another device's interrupt. Gone = the value counts as missing.
   */
  guard?: string;
}
