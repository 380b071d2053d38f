// CPU sets in the two textual forms the kernel uses:
//   lists  "0-3,8,10-11" (smp_affinity_list, cpulist, thread_siblings_list; also "0-15:2/4" strides)
//   masks  "ff,ffffffff" (rps_cpus, xps_cpus, smp_affinity): hex, in 32-bit words separated by
//          commas, most significant word first.
// A set is a sorted array of distinct non-negative integers. Pure functions; errors are returned
// as strings so callers can name the field they came from.

/** Highest CPU number accepted (kernel NR_CPUS is at most 8192). */
export const MAX_CPU = 8191;

export type CpuSet = number[];

const norm = (cpus: Iterable<number>): CpuSet => [...new Set(cpus)].sort((a, b) => a - b);

/**
 * Parses a kernel CPU list. Whitespace and a trailing newline are ignored; "" is the empty set.
 * Supports the kernel's stride form "a-b:used/group" (bitmap_parselist).
 */
export function parseCpuList(text: string): CpuSet | string {
  const t = text.replace(/\s+/g, '');
  if (t === '') return [];
  const out: number[] = [];
  for (const part of t.split(',')) {
    const m = /^(\d+)(?:-(\d+)(?::(\d+)\/(\d+))?)?$/.exec(part);
    if (!m) return `"${part}" is not a CPU number or range (expected a list like 0-3,8,10-11)`;
    const a = Number(m[1]),
      b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) return `range ${part} runs backwards`;
    if (b > MAX_CPU) return `CPU ${b} is above ${MAX_CPU}`;
    const used = m[3] === undefined ? 1 : Number(m[3]),
      group = m[4] === undefined ? 1 : Number(m[4]);
    if (used < 1 || group < 1 || used > group) return `stride ${part} is invalid`;
    for (let c = a; c <= b; c++) if ((c - a) % group < used) out.push(c);
  }
  return norm(out);
}

/** Like parseCpuList but throws; for kernel files whose format is trusted. */
export function cpuList(text: string): CpuSet {
  const r = parseCpuList(text);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

/** "0-3,8,10-11"; the empty set is "". */
export function formatCpuList(cpus: Iterable<number>): string {
  const s = norm(cpus);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    parts.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** Parses a kernel hex mask ("3", "00000000,0000000f", "ff,ffffffff"). */
export function parseCpuMask(text: string): CpuSet | string {
  const t = text.replace(/\s+/g, '');
  if (t === '') return [];
  const words = t.split(',');
  const out: number[] = [];
  for (const [i, w] of words.entries()) {
    if (!/^[0-9a-fA-F]{1,8}$/.test(w)) return `"${t}" is not a CPU mask (hex in 32-bit words separated by commas)`;
    const base = (words.length - 1 - i) * 32;
    const v = parseInt(w, 16);
    for (let bit = 0; bit < 32; bit++) if ((v >>> bit) & 1) out.push(base + bit);
  }
  return norm(out);
}

export function cpuMask(text: string): CpuSet {
  const r = parseCpuMask(text);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

/**
 * Formats a mask the way the kernel prints it for `nbits` possible CPUs (nr_cpu_ids): 32-bit words,
 * most significant first, the first word only as wide as its bits need. nbits defaults to just
 * enough for the highest CPU; the empty set is "0".
 */
export function formatCpuMask(cpus: Iterable<number>, nbits?: number): string {
  const s = norm(cpus);
  const top = s.length ? s[s.length - 1]! + 1 : 1;
  const bits = Math.max(nbits ?? top, top);
  const nwords = Math.ceil(bits / 32);
  const words = new Array<number>(nwords).fill(0);
  for (const c of s) words[Math.floor(c / 32)]! |= 1 << (c % 32);
  const firstBits = bits - (nwords - 1) * 32;
  const out: string[] = [];
  for (let i = nwords - 1; i >= 0; i--) {
    const width = i === nwords - 1 ? Math.ceil(firstBits / 4) : 8;
    out.push((words[i]! >>> 0).toString(16).padStart(width, '0'));
  }
  return out.join(',');
}

export const sameCpus = (a: CpuSet, b: CpuSet): boolean => a.length === b.length && a.every((c, i) => c === b[i]);
export const union = (...sets: Iterable<number>[]): CpuSet => norm(sets.flatMap((s) => [...s]));
export const minus = (a: CpuSet, b: Iterable<number>): CpuSet => {
  const drop = new Set(b);
  return a.filter((c) => !drop.has(c));
};
export const intersect = (a: CpuSet, b: Iterable<number>): CpuSet => {
  const keep = new Set(b);
  return a.filter((c) => keep.has(c));
};
