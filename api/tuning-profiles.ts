// Named sysctl profiles. Every value carries the reason it is there (docs/tuning.md renders the
// same reasons). Two kinds of entry:
//   - exact: the key is set to this value;
//   - atLeast: a capacity (table size, queue length, limit) that is only RAISED: a node whose
//     kernel default is already larger (big machines scale some defaults with RAM) keeps its value.
//     Multi-value keys are raised component-wise.
// Overrides in the spec are always exact and win over the profile.
import type { ProfileName } from './tuning.ts';

export interface ProfileEntry {
  key: string;
  value: string;
  atLeast: boolean;
  why: string;
}

const exact = (key: string, value: string | number, why: string): ProfileEntry => ({
  key,
  value: String(value),
  atLeast: false,
  why,
});
const atLeast = (key: string, value: string | number, why: string): ProfileEntry => ({
  key,
  value: String(value),
  atLeast: true,
  why,
});

/** Keys every non-empty profile sets: a proxy node opens, accepts and closes many connections. */
const CONNECTION_CHURN: ProfileEntry[] = [
  atLeast(
    'net.core.somaxconn',
    65535,
    'The kernel silently caps every listen() backlog at somaxconn; a burst of new ' +
      'connections beyond it is dropped and the client retries its SYN after 1 s (then 3 s). The proxy asks for backlog 4096+.',
  ),
  atLeast(
    'net.ipv4.tcp_max_syn_backlog',
    65535,
    'Half-open connections per listener. When full, SYN cookies take over ' +
      "(or SYNs are dropped), which loses TCP options on some paths; one intercepting listener takes the whole node's SYNs.",
  ),
  exact(
    'net.ipv4.tcp_tw_reuse',
    1,
    'The proxy opens the upstream leg of every connection from the node; TIME_WAIT ' +
      'sockets pile up per destination. 1 lets a new outgoing connection reuse one when timestamps make it safe (the ' +
      'default 2 allows it on loopback only). Port exhaustion shows as connect() burning CPU in sys (dataplane pitfall 5).',
  ),
  exact(
    'net.ipv4.ip_local_port_range',
    '10240 65535',
    'Ephemeral ports for the upstream leg: 55,296 instead of 28,232 ' +
      'per destination address and port. Starts at 10240 to stay clear of common low service ports; first/last of ' +
      'different parity as the kernel prefers. NodePorts (30000-32767) may coincide: reserve them with ' +
      'net.ipv4.ip_local_reserved_ports if the node also hosts NodePort listeners.',
  ),
  exact(
    'net.ipv4.tcp_fin_timeout',
    15,
    'Orphaned sockets in FIN_WAIT_2 (peer never closes its side) hold memory and a ' +
      'port for 60 s by default; 15 s is ample for a live peer to send its FIN.',
  ),
  exact(
    'net.ipv4.tcp_migrate_req',
    1,
    'During a rollout the old and the new sidecar share the listening port (SO_REUSEPORT); ' +
      'when the old one closes its listener, connections in its accept queue (and half-open ones) move to the new one ' +
      'instead of being reset. Kernel 5.14+; older kernels report the key as missing.',
  ),
  exact(
    'net.ipv4.tcp_mtu_probing',
    1,
    'Detects PMTU black holes (ICMP filtered somewhere on the path) instead of ' +
      'letting the connection stall on full-size segments; only active after a black hole is suspected.',
  ),
];

const THROUGHPUT: ProfileEntry[] = [
  ...CONNECTION_CHURN,
  atLeast(
    'net.core.netdev_max_backlog',
    16384,
    'Per-CPU queue of received packets waiting for the stack (RPS, veth, ' +
      'virtio, GRO flush). 1000 overflows during a short softirq stall at 10 Gbit/s+; drops show in column 2 of ' +
      '/proc/net/softnet_stat.',
  ),
  atLeast(
    'net.core.netdev_budget',
    600,
    'Packets one NET_RX softirq round may process before yielding to ksoftirqd ' +
      '(default 300); fewer "time squeezes" (softnet_stat column 3) under load.',
  ),
  atLeast(
    'net.core.netdev_budget_usecs',
    8000,
    'Time budget of that softirq round (default 2000 us), raised with the packet budget so the larger budget can be used.',
  ),
  atLeast(
    'net.core.rmem_max',
    33554432,
    'Ceiling for SO_RCVBUF (32 MiB): bandwidth-delay product of 10 Gbit/s at 25 ms.',
  ),
  atLeast(
    'net.core.wmem_max',
    33554432,
    "Ceiling for SO_SNDBUF (32 MiB), the send-side twin of rmem_max: a proxy that sets its buffers explicitly is not capped below the path's bandwidth-delay product.",
  ),
  atLeast(
    'net.ipv4.tcp_rmem',
    '4096 131072 33554432',
    'Receive autotuning may grow to 32 MiB for long fat paths ' +
      '(older kernels stop at 6 MiB); memory is only used by connections that need it.',
  ),
  atLeast(
    'net.ipv4.tcp_wmem',
    '4096 16384 33554432',
    'Send autotuning up to 32 MiB, so one fast upstream can fill a ' +
      'long path without the proxy blocking every few milliseconds.',
  ),
  exact(
    'net.ipv4.tcp_slow_start_after_idle',
    0,
    'Keep-alive connections keep their congestion window after an idle ' +
      'pause instead of restarting slow start (a full RTT ramp per burst).',
  ),
  atLeast(
    'net.ipv4.tcp_max_tw_buckets',
    1048576,
    'TIME_WAIT sockets (about 200 bytes each) kept before the kernel ' +
      'destroys them early and logs "time wait bucket table overflow"; two legs per proxied connection double them.',
  ),
  atLeast(
    'net.ipv4.neigh.default.gc_thresh1',
    4096,
    'A proxy node talks to many pod and service IPs directly; ' +
      'the default neighbour table (gc_thresh3 1024) overflows in large flat clusters ("neighbour table overflow").',
  ),
  atLeast(
    'net.ipv4.neigh.default.gc_thresh2',
    8192,
    'Soft neighbour limit: above it, entries older than 5 s are garbage-collected; raised with gc_thresh1/3.',
  ),
  atLeast(
    'net.ipv4.neigh.default.gc_thresh3',
    16384,
    'Hard neighbour limit: beyond it new neighbours are refused and packets to them dropped.',
  ),
  atLeast(
    'fs.file-max',
    1048576,
    "Two file descriptors per proxied connection plus the node's own; never lowers a " + 'RAM-scaled default.',
  ),
];

const LATENCY: ProfileEntry[] = [
  ...CONNECTION_CHURN,
  atLeast(
    'net.core.netdev_max_backlog',
    8192,
    'A dropped packet costs a retransmission timeout (200 ms+), far more ' +
      'than a few microseconds of queueing: no drops under short bursts.',
  ),
  exact(
    'net.ipv4.tcp_slow_start_after_idle',
    0,
    'Request/response traffic is bursty over idle keep-alive connections: ' +
      'keep the congestion window so a response after a pause goes out at full rate.',
  ),
  exact(
    'net.ipv4.tcp_notsent_lowat',
    16384,
    'A socket reports writable only while less than 16 KiB is unsent: the ' +
      'proxy forwards into a short kernel queue instead of megabytes of buffer, so new data (and the next response on the ' +
      'connection) is not stuck behind it; throughput is unaffected as long as the process keeps up.',
  ),
  atLeast('fs.file-max', 1048576, 'As throughput: two descriptors per proxied connection.'),
];

const CONNTRACK_HEAVY: ProfileEntry[] = [
  ...THROUGHPUT,
  atLeast(
    'net.netfilter.nf_conntrack_max',
    2097152,
    'Each intercepted connection has two tracked flows (client->node ' +
      'and node->server); closed ones stay tracked in TIME_WAIT. At 10k new connections/s x 30 s TIME_WAIT x 2 legs ' +
      'that is 600k entries plus the open ones; a full table drops new connections ("nf_conntrack: table full"). ' +
      'Entries (~320 bytes) are allocated on demand: 2M cost about 640 MiB only when all are in use.',
  ),
  atLeast(
    'net.netfilter.nf_conntrack_buckets',
    1048576,
    'Hash buckets (8 bytes each, allocated up front: 8 MiB): an ' +
      'average chain of 2 at a full table keeps lookups per packet cheap. Writable only in the initial network namespace.',
  ),
  exact(
    'net.netfilter.nf_conntrack_tcp_timeout_time_wait',
    30,
    'Default 120 s. TIME_WAIT entries dominate the table ' +
      'under churn; the endpoints keep their own TIME_WAIT state (60 s), conntrack only needs to outlive stray segments.',
  ),
  exact(
    'net.netfilter.nf_conntrack_tcp_timeout_fin_wait',
    30,
    'Default 120 s; half-closed flows free their entries sooner.',
  ),
  exact(
    'net.netfilter.nf_conntrack_tcp_timeout_established',
    86400,
    'Default 5 days: flows whose peers vanished without ' +
      "FIN/RST pin entries for that long. One day is still far above the proxy's idle timeout (1 h) and typical keepalives.",
  ),
  atLeast('fs.nr_open', 2097152, 'Ceiling for RLIMIT_NOFILE: one proxy with 1M connections needs 2M descriptors.'),
  atLeast('fs.file-max', 4194304, 'Host-wide descriptors for that many connections (overrides the throughput value).'),
];

export const PROFILES: Readonly<Record<ProfileName, readonly ProfileEntry[]>> = {
  none: [],
  throughput: THROUGHPUT,
  latency: LATENCY,
  'conntrack-heavy': CONNTRACK_HEAVY,
};

/** A profile's entries with later entries for the same key replacing earlier ones. */
export function profileEntries(name: ProfileName): ProfileEntry[] {
  const byKey = new Map<string, ProfileEntry>();
  for (const e of PROFILES[name]) byKey.set(e.key, e);
  return [...byKey.values()];
}
