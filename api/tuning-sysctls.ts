// The sysctls tpfleet may set on a node: the only keys a TransparentProxy's tuning (profile or
// overrides) can touch. Each entry has a value type and range; values outside it are rejected
// at the API (zod in the operator, the key list also as CEL) and again by the node agent, which
// parses the same table. Ranges are what is sensible for a proxy node, never wider than the kernel
// accepts; lower bounds refuse settings that would break a busy node (e.g. a 10-entry conntrack table)
// and, for host-wide keys, anything that would starve the rest of the node (HOST_SAFE_MIN).
//
// Scope: net.* keys are per network namespace on current kernels (some, like
// net.core.netdev_max_backlog or net.netfilter.nf_conntrack_max, exist or are writable only in the
// initial netns); fs.* keys are host-wide. The agent writes in its own netns (the host's, with
// hostNetwork) and reports a key the kernel lacks instead of failing.

export type SysctlSpec =
  | { kind: 'int'; min: number; max: number; doc: string }
  /** Whitespace-separated integers, e.g. "4096 131072 6291456"; `ordered`: non-decreasing. */
  | {
      kind: 'ints';
      count: number;
      min: number;
      max: number;
      ordered: boolean;
      /** Smallest last-minus-first (a port range with room for the host's own connections). */
      minSpan?: number;
      doc: string;
    }
  | { kind: 'word'; values: readonly string[]; doc: string };

const GiB = 1 << 30;
const int = (min: number, max: number, doc: string): SysctlSpec => ({ kind: 'int', min, max, doc });
const bool = (doc: string): SysctlSpec => int(0, 1, doc);
const ints = (count: number, min: number, max: number, doc: string): SysctlSpec => ({
  kind: 'ints',
  count,
  min,
  max,
  ordered: true,
  doc,
});

/**
 * Floors of host-wide settings (issue 12): below them a tuning spec could deny service to the whole
 * node (kubelet and every pod included), not just slow the proxy. tcp_mem in 4 KiB pages: 64 MiB,
 * the kernel's own default on a ~1 GiB node; fs.file-max as fs.nr_open's default; at least 4096
 * ephemeral ports.
 */
export const HOST_SAFE_MIN = { tcpMemPages: 16_384, fileMax: 1_048_576, ephemeralPorts: 4096 } as const;

export const SYSCTLS: Readonly<Record<string, SysctlSpec>> = {
  'net.core.somaxconn': int(128, 1 << 20, 'Cap on any listen() backlog (accept queue per listener).'),
  'net.core.netdev_max_backlog': int(
    1000,
    1 << 20,
    'Per-CPU input queue of packets not yet processed by the stack (RPS, virtio, veth).',
  ),
  'net.core.netdev_budget': int(300, 100_000, 'Packets one NAPI softirq round may process.'),
  'net.core.netdev_budget_usecs': int(2000, 100_000, 'Microseconds one NAPI softirq round may run.'),
  'net.core.rmem_max': int(212_992, GiB, 'Largest receive buffer SO_RCVBUF may request (bytes).'),
  'net.core.wmem_max': int(212_992, GiB, 'Largest send buffer SO_SNDBUF may request (bytes).'),
  'net.core.rmem_default': int(4096, GiB, 'Default receive buffer of non-TCP sockets (bytes).'),
  'net.core.wmem_default': int(4096, GiB, 'Default send buffer of non-TCP sockets (bytes).'),
  'net.core.optmem_max': int(10_240, 1 << 24, 'Ancillary buffer per socket (bytes).'),
  'net.core.busy_poll': int(0, 1_000_000, 'Microseconds poll/epoll busy-wait on a device queue (burns CPU; 0 = off).'),
  'net.core.busy_read': int(0, 1_000_000, 'Microseconds a blocking read busy-waits (0 = off).'),
  'net.core.default_qdisc': {
    kind: 'word',
    values: ['pfifo_fast', 'fq', 'fq_codel', 'cake'],
    doc: 'Queueing discipline of new interfaces.',
  },
  'net.ipv4.tcp_max_syn_backlog': int(128, 1 << 24, 'Half-open (SYN_RECV) connections remembered per listener.'),
  'net.ipv4.tcp_syncookies': int(0, 2, 'SYN cookies when the SYN queue overflows (1), always (2), never (0).'),
  'net.ipv4.tcp_abort_on_overflow': bool('Reset instead of dropping the final ACK when the accept queue is full.'),
  'net.ipv4.tcp_tw_reuse': int(0, 2, 'Reuse TIME_WAIT sockets for new outgoing connections (2 = loopback only).'),
  'net.ipv4.tcp_max_tw_buckets': int(1024, 1 << 24, 'TIME_WAIT sockets kept before new ones are destroyed early.'),
  'net.ipv4.tcp_fin_timeout': int(1, 600, 'Seconds an orphaned socket stays in FIN_WAIT_2.'),
  'net.ipv4.tcp_migrate_req': bool(
    'Move pending connections of a closing SO_REUSEPORT listener to another listener of its group (kernel 5.14+).',
  ),
  'net.ipv4.tcp_max_orphans': int(1024, 1 << 24, 'Sockets not attached to any process kept before resetting them.'),
  'net.ipv4.tcp_keepalive_time': int(
    1,
    32_767,
    'Idle seconds before the first keepalive probe (sockets with SO_KEEPALIVE).',
  ),
  'net.ipv4.tcp_keepalive_intvl': int(1, 32_767, 'Seconds between keepalive probes.'),
  'net.ipv4.tcp_keepalive_probes': int(1, 127, 'Unanswered probes before the connection is dropped.'),
  'net.ipv4.tcp_syn_retries': int(1, 127, 'SYN retransmissions of an outgoing connect before it fails.'),
  'net.ipv4.tcp_synack_retries': int(1, 127, 'SYN-ACK retransmissions for an incoming connection.'),
  'net.ipv4.tcp_retries2': int(3, 30, 'Retransmissions before an established connection is given up.'),
  'net.ipv4.tcp_rmem': ints(3, 4096, GiB, 'TCP receive buffer min, default, max (bytes; autotuned between).'),
  'net.ipv4.tcp_wmem': ints(3, 4096, GiB, 'TCP send buffer min, default, max (bytes; autotuned between).'),
  // Host-wide: "1 1 1" would put every TCP socket of the node under memory pressure at once.
  'net.ipv4.tcp_mem': ints(
    3,
    HOST_SAFE_MIN.tcpMemPages,
    2 ** 40,
    'TCP memory low, pressure, high for the whole host (pages).',
  ),
  'net.ipv4.tcp_slow_start_after_idle': bool(
    'Restart slow start after an idle period (0 keeps the window of long-lived connections).',
  ),
  'net.ipv4.tcp_notsent_lowat': int(
    1,
    4_294_967_295,
    'Unsent bytes a socket may queue before it stops being writable.',
  ),
  'net.ipv4.tcp_fastopen': int(0, 0x7ff, 'TCP Fast Open flags (1 client, 2 server).'),
  'net.ipv4.tcp_mtu_probing': int(
    0,
    2,
    'Packetization-layer path MTU discovery (1 after an ICMP black hole, 2 always).',
  ),
  'net.ipv4.tcp_no_metrics_save': bool('Do not cache per-destination metrics of closed connections.'),
  'net.ipv4.tcp_autocorking': bool('Coalesce small writes while the device queue is busy.'),
  'net.ipv4.tcp_congestion_control': {
    kind: 'word',
    values: ['cubic', 'bbr', 'reno', 'htcp', 'dctcp', 'westwood', 'illinois', 'vegas'],
    doc: 'Congestion control of new connections (the module must be available on the node).',
  },
  'net.ipv4.ip_local_port_range': {
    kind: 'ints',
    count: 2,
    min: 1024,
    max: 65_535,
    ordered: true,
    minSpan: HOST_SAFE_MIN.ephemeralPorts - 1,
    doc: 'Ephemeral ports for outgoing connections (first last).',
  },
  'net.ipv4.neigh.default.gc_thresh1': int(128, 1 << 20, 'Neighbour entries below which none are garbage collected.'),
  'net.ipv4.neigh.default.gc_thresh2': int(512, 1 << 20, 'Soft limit of neighbour entries.'),
  'net.ipv4.neigh.default.gc_thresh3': int(1024, 1 << 20, 'Hard limit of neighbour entries.'),
  'net.netfilter.nf_conntrack_max': int(
    65_536,
    1 << 28,
    'Connection-tracking entries (each intercepted connection uses two with keepClientIp).',
  ),
  'net.netfilter.nf_conntrack_buckets': int(
    16_384,
    1 << 26,
    'Conntrack hash buckets (writable in the initial netns only).',
  ),
  'net.netfilter.nf_conntrack_tcp_timeout_established': int(
    60,
    1_209_600,
    'Seconds an idle established TCP flow stays tracked.',
  ),
  'net.netfilter.nf_conntrack_tcp_timeout_time_wait': int(1, 600, 'Seconds a TIME_WAIT flow stays tracked.'),
  'net.netfilter.nf_conntrack_tcp_timeout_close_wait': int(1, 3600, 'Seconds a CLOSE_WAIT flow stays tracked.'),
  'net.netfilter.nf_conntrack_tcp_timeout_fin_wait': int(1, 600, 'Seconds a FIN_WAIT flow stays tracked.'),
  'net.netfilter.nf_conntrack_tcp_timeout_syn_sent': int(1, 600, 'Seconds an unanswered outgoing SYN stays tracked.'),
  'net.netfilter.nf_conntrack_tcp_timeout_syn_recv': int(1, 600, 'Seconds a SYN_RECV flow stays tracked.'),
  'net.netfilter.nf_conntrack_tcp_loose': bool('Pick up already established flows (e.g. after a conntrack flush).'),
  'net.netfilter.nf_conntrack_tcp_be_liberal': bool(
    'Only mark out-of-window RSTs invalid (tolerates window tracking quirks).',
  ),
  'net.netfilter.nf_conntrack_udp_timeout': int(1, 3600, 'Seconds a one-way UDP flow stays tracked.'),
  'net.netfilter.nf_conntrack_udp_timeout_stream': int(1, 86_400, 'Seconds a two-way UDP flow stays tracked.'),
  'net.netfilter.nf_conntrack_generic_timeout': int(1, 86_400, 'Seconds a flow of another protocol stays tracked.'),
  'net.netfilter.nf_conntrack_expect_max': int(256, 1 << 20, 'Expectations (related flows of helpers).'),
  // Host-wide: the kubelet, the runtime and every pod share it; 65536 starves a busy node (ENFILE).
  'fs.file-max': int(HOST_SAFE_MIN.fileMax, Number.MAX_SAFE_INTEGER, 'File handles the whole host may open.'),
  'fs.nr_open': int(
    1_048_576,
    1_073_741_816,
    'Highest RLIMIT_NOFILE any process may get (never below the kernel default).',
  ),
};

/** Keys that are owned by another part of the tuning spec and cannot be overridden directly. */
export const SYSCTLS_OWNED_ELSEWHERE: Readonly<Record<string, string>> = {
  'net.core.rps_sock_flow_entries': 'set it through tuning.affinity.rpsSockFlowEntries',
};

/**
 * Parses a value for `key` into the canonical text written to /proc/sys (integers separated by one
 * space). Returns an error message naming the key when the key is not allowed or the value is
 * out of range.
 */
export function canonicalSysctl(key: string, value: string | number): { text: string } | { error: string } {
  const owned = Object.hasOwn(SYSCTLS_OWNED_ELSEWHERE, key) ? SYSCTLS_OWNED_ELSEWHERE[key] : undefined;
  if (owned) return { error: `${key} is not settable here: ${owned}` };
  const spec = Object.hasOwn(SYSCTLS, key) ? SYSCTLS[key] : undefined;
  if (!spec) return { error: `${key} is not an allowed sysctl (see docs/tuning.md for the allowlist)` };
  const raw = String(value).trim();
  if (spec.kind === 'word') {
    return spec.values.includes(raw)
      ? { text: raw }
      : { error: `${key} must be one of ${spec.values.join(', ')} (got "${raw}")` };
  }
  const parts = raw === '' ? [] : raw.split(/\s+/);
  const count = spec.kind === 'int' ? 1 : spec.count;
  if (parts.length !== count)
    return {
      error: `${key} needs ${count === 1 ? 'one integer' : `${count} integers separated by spaces`} (got "${raw}")`,
    };
  const nums: number[] = [];
  for (const p of parts) {
    if (!/^\d+$/.test(p)) return { error: `${key}: "${p}" is not a non-negative integer` };
    const n = Number(p);
    if (!Number.isSafeInteger(n) || n < spec.min || n > spec.max)
      return { error: `${key}: ${p} is out of range ${spec.min}..${spec.max}` };
    nums.push(n);
  }
  if (spec.kind === 'ints' && spec.ordered && nums.some((n, i) => i > 0 && n < nums[i - 1]!)) {
    return { error: `${key}: values must not decrease (got "${raw}")` };
  }
  if (spec.kind === 'ints' && spec.minSpan !== undefined && nums[nums.length - 1]! - nums[0]! < spec.minSpan) {
    return { error: `${key}: must span at least ${spec.minSpan + 1} values (got "${raw}")` };
  }
  return { text: nums.join(' ') };
}
