// Prometheus metrics of the proxy (prefix tpfleet_proxy_). The engine counts in native memory; this
// renders its counters at scrape time, so nothing is counted per chunk or per connection in
// JavaScript. Every label comes from a small closed set below: no per-connection, per-IP or
// per-destination labels, so cardinality is fixed. prom-client adds its process_* and nodejs_*.
import { collectDefaultMetrics, Registry } from 'prom-client';

export const PREFIX = 'tpfleet_proxy_';

export const CLOSE_RESULTS = ['ok', 'error', 'timeout', 'shed', 'loop', 'denied', 'limited', 'selftest'] as const;
export type CloseResult = (typeof CLOSE_RESULTS)[number];

/** In the order of the engine's err_* counters and its reason codes 1..8 (native/src/stats.h enum err_reason). */
export const ERROR_REASONS = [
  'connect_refused',
  'connect_timeout',
  'connect_unreachable',
  'upstream_reset',
  'client_reset',
  'idle_timeout',
  'other',
  'upstream_proxy',
] as const;
/** The engine's reason codes after the errors: a policy or hook reset, a per-source limit. */
const REASON_DENIED = ERROR_REASONS.length + 1,
  REASON_LIMITED = ERROR_REASONS.length + 2;

/** What a closed connection's reason code means, for logs: undefined when it ended normally. */
export function reasonText(code: number): ErrorReason | 'denied' | 'limited' | undefined {
  if (code === 0) return undefined;
  if (code === REASON_DENIED) return 'denied';
  if (code === REASON_LIMITED) return 'limited';
  return ERROR_REASONS[code - 1] ?? 'other';
}
export type ErrorReason = (typeof ERROR_REASONS)[number];

export const DIRECTIONS = ['client_to_upstream', 'upstream_to_client'] as const;

/** 0.5 ms .. 5 s: loopback/LAN connects are sub-millisecond, a lost SYN costs ~1 s per retry (stats.h CONNECT_BUCKETS_US). */
export const CONNECT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

type Stats = Record<string, number>;
const v = (s: Stats, k: string): number => s[k] ?? 0;

interface Family {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  samples: [labels: string, value: number][];
}

function families(s: Stats, threads: number): Family[] {
  const one = (value: number): [string, number][] => [['', value]];
  return [
    { name: 'connections_active', type: 'gauge', help: 'Open client connections.', samples: one(v(s, 'active')) },
    {
      name: 'connections_accepted_total',
      type: 'counter',
      help: 'Client connections accepted.',
      samples: one(v(s, 'accepted')),
    },
    {
      name: 'connections_closed_total',
      type: 'counter',
      help: 'Client connections closed, by result.',
      samples: CLOSE_RESULTS.map((r) => [`result="${r}"`, v(s, `closed_${r}`)]),
    },
    {
      name: 'connections_shed_total',
      type: 'counter',
      help: 'Connections closed at once because maxConnections was reached.',
      samples: one(v(s, 'shed')),
    },
    {
      name: 'bytes_total',
      type: 'counter',
      help: 'Bytes received from one side and forwarded to the other.',
      samples: [
        ['direction="client_to_upstream"', v(s, 'bytes_up')],
        ['direction="upstream_to_client"', v(s, 'bytes_down')],
      ],
    },
    {
      name: 'errors_total',
      type: 'counter',
      help: 'Forwarding errors, by reason.',
      samples: ERROR_REASONS.map((r) => [`reason="${r}"`, v(s, `err_${r}`)]),
    },
    {
      name: 'relay_bytes_total',
      type: 'counter',
      help: 'Bytes forwarded, by how the engine moved them (copy through user space or splice through a pipe).',
      samples: [
        ['path="copy"', v(s, 'relay_copy_bytes')],
        ['path="splice"', v(s, 'relay_splice_bytes')],
      ],
    },
    {
      name: 'connections_held',
      type: 'gauge',
      help: 'Connections waiting for the decision hook.',
      samples: one(v(s, 'held')),
    },
    {
      name: 'fin_with_data_total',
      type: 'counter',
      help: 'FINs relayed in the same segment as the last data (the peer had already closed).',
      samples: one(v(s, 'fin_with_data')),
    },
    {
      name: 'accept_errors_total',
      type: 'counter',
      help: 'accept() failures (descriptor or memory limits); the connection stays queued and is retried.',
      samples: one(v(s, 'accept_errors')),
    },
    {
      name: 'engine_events_dropped_total',
      type: 'counter',
      help: 'Engine events (connection logs) dropped because the event ring was full.',
      samples: one(v(s, 'events_dropped')),
    },
    {
      name: 'policy_peeked_total',
      type: 'counter',
      help: "Connections whose first bytes were read for a policy rule's TLS SNI or HTTP Host.",
      samples: one(v(s, 'policy_peeked')),
    },
    {
      name: 'policy_no_name_total',
      type: 'counter',
      help: 'Peeked connections with no SNI or Host (other protocols, server-speaks-first, the peek timeout).',
      samples: one(v(s, 'policy_no_name')),
    },
    {
      name: 'audit_lines_total',
      type: 'counter',
      help: 'Audit log lines, written or suppressed by the per-second cap.',
      samples: [
        ['result="written"', v(s, 'audit_written')],
        ['result="suppressed"', v(s, 'audit_suppressed')],
      ],
    },
    { name: 'workers', type: 'gauge', help: 'Engine threads running.', samples: one(threads) },
    ...udpFamilies(s),
  ];
}

/** Why a UDP datagram was dropped (native/src/stats.h udp_drop_*): a closed set. */
export const UDP_DROP_REASONS = ['flow_cap', 'buffer_full', 'no_route', 'expired', 'setup_error'] as const;

function udpFamilies(s: Stats): Family[] {
  const dirs = (up: string, down: string): [string, number][] => [
    ['direction="client_to_upstream"', v(s, up)],
    ['direction="upstream_to_client"', v(s, down)],
  ];
  return [
    { name: 'udp_flows_active', type: 'gauge', help: 'UDP flows open.', samples: [['', v(s, 'udpActive')]] },
    {
      name: 'udp_flows_created_total',
      type: 'counter',
      help: 'UDP flows opened (first datagram of a client towards an original destination).',
      samples: [['', v(s, 'udp_flows_created')]],
    },
    {
      name: 'udp_flows_expired_total',
      type: 'counter',
      help: 'UDP flows closed by udp.idleTimeout.',
      samples: [['', v(s, 'udp_flows_expired')]],
    },
    {
      name: 'udp_datagrams_total',
      type: 'counter',
      help: 'UDP datagrams forwarded.',
      samples: dirs('udp_dgrams_up', 'udp_dgrams_down'),
    },
    {
      name: 'udp_bytes_total',
      type: 'counter',
      help: 'UDP payload bytes.',
      samples: dirs('udp_bytes_up', 'udp_bytes_down'),
    },
    {
      name: 'udp_drops_total',
      type: 'counter',
      help: 'UDP datagrams dropped, by reason (flow_cap: udp.maxFlows reached; expired: queued when its flow expired).',
      samples: UDP_DROP_REASONS.map((r) => [`reason="${r}"`, v(s, `udp_drop_${r}`)]),
    },
    {
      name: 'udp_icmp_errors_total',
      type: 'counter',
      help: 'ICMP errors (port or host unreachable) reported on a UDP flow.',
      samples: [['', v(s, 'udp_icmp_errors')]],
    },
    {
      name: 'udp_gso_sends_total',
      type: 'counter',
      help: 'UDP batches sent as one GSO send (UDP_SEGMENT).',
      samples: [['', v(s, 'udp_gso_sends')]],
    },
  ];
}

function histogram(s: Stats): string[] {
  const name = `${PREFIX}upstream_connect_seconds`;
  const lines = [
    `# HELP ${name} Time to establish an upstream connection (successful connects).`,
    `# TYPE ${name} histogram`,
  ];
  let cum = 0;
  CONNECT_BUCKETS.forEach((le, i) => {
    cum += v(s, `connect_b${i}`);
    lines.push(`${name}_bucket{le="${le}"} ${cum}`);
  });
  lines.push(`${name}_bucket{le="+Inf"} ${cum + v(s, 'connect_binf')}`);
  lines.push(`${name}_sum ${v(s, 'connect_sum_us') / 1e6}`, `${name}_count ${v(s, 'connect_count')}`);
  return lines;
}

/** The proxy's metrics in the Prometheus text format, from one engine stats snapshot. */
export function renderEngineMetrics(s: Stats, threads: number): string {
  const lines: string[] = [];
  for (const f of families(s, threads)) {
    const name = PREFIX + f.name;
    lines.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`);
    for (const [labels, value] of f.samples) lines.push(labels ? `${name}{${labels}} ${value}` : `${name} ${value}`);
  }
  lines.push(...histogram(s));
  return `${lines.join('\n')}\n`;
}

/** prom-client's process and Node.js metrics (unprefixed, as dashboards expect them). */
export function processRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}
