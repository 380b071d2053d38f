// The datapath self-test (ADR 0021): the one statement of its fixed names, addresses and reply, shared
// by the renderers (the probe rule), the node agent (the probe link and the probe) and the sidecar
// (which answers a connection to the probe destination itself instead of dialling it). Nothing here
// comes from user input: no name or address is built from a spec field.

/** The pod condition agent-watch publishes; the proxy pods' readiness gate (operator/render/daemonset.ts). */
export const DATAPATH_CONDITION_TYPE = 'tpfleet.io/DatapathReady';

/** The veth pair, both ends in the node's netns: the probe leaves by PROBE_OUT and arrives on PROBE_IN. */
export const PROBE_OUT = 'tpfprobe0';
export const PROBE_IN = 'tpfprobe1';
/** Fixed, locally administered MACs: PROBE_OUT's permanent neighbour entry names PROBE_IN's. */
export const PROBE_MAC = { out: '02:74:70:66:00:00', in: '02:74:70:66:00:01' } as const;

/**
 * Per family: the probe's source (an address of PROBE_IN, so the reverse-path check of the arriving
 * SYN finds it on the interface it came in on) and its destination (TEST-NET-2 / the documentation
 * prefix: never a real peer), reached by a /32 (/128) route out of PROBE_OUT.
 */
export const PROBE_ADDR = {
  IPv4: { src: '198.51.100.1', dst: '198.51.100.2', prefix: 32 },
  IPv6: { src: '2001:db8:7470::1', dst: '2001:db8:7470::2', prefix: 128 },
} as const;

/** The destination port of the probe (discard); the probe rule does not look at it, the sidecar neither. */
export const PROBE_PORT = 9;

/** What the sidecar writes on a probe connection before it closes it; only the sidecar sends these bytes. */
export const PROBE_REPLY = 'tpfleet-selftest ok\n';

/** How long one probe may take (connect + reply), and how often agent-watch repeats it. */
export const PROBE_TIMEOUT_MS = 2000;
export const PROBE_INTERVAL_MS = 30_000;

export const DATAPATH_REASONS = {
  Passed: 'a probe sent through the rules in force reached the sidecar',
  ProbeFailed: 'a probe sent through the rules in force did not reach the sidecar',
  ProbeSetupFailed: 'the probe interface could not be set up',
  ProxyDown: 'the watchdog found the sidecar down (fail policy in force); probing resumes when it is back',
} as const;
export type DatapathReason = keyof typeof DATAPATH_REASONS;

export interface DatapathCondition {
  type: typeof DATAPATH_CONDITION_TYPE;
  status: 'True' | 'False';
  reason: DatapathReason;
  message: string;
}

export const DATAPATH_MESSAGE_MAX = 1024;

export function datapathCondition(reason: DatapathReason, detail: string): DatapathCondition {
  const text = `${DATAPATH_REASONS[reason]}: ${detail}`;
  return {
    type: DATAPATH_CONDITION_TYPE,
    status: reason === 'Passed' ? 'True' : 'False',
    reason,
    message: text.length <= DATAPATH_MESSAGE_MAX ? text : `${text.slice(0, DATAPATH_MESSAGE_MAX - 1)}…`,
  };
}
