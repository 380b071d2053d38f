// Every default of the API, stated once. The NodeConfig schema applies them (api/nodeconfig.ts),
// the TransparentProxy schema documents them (api/transparentproxy.ts: "Default ..." in each
// description, so `kubectl explain` shows the same values), and the operator reads the parsed
// NodeConfig instead of repeating them. Plain data, no zod.

export const DEFAULTS = {
  interception: {
    protocol: 'TCP',
    protocols: ['TCP'],
    ipFamilies: ['IPv4', 'IPv6'],
    backend: 'auto',
    failurePolicy: 'FailClosed',
    mark: 0x2000,
    mask: 0x2000,
    routingTable: 2000,
    rulePriority: 32000,
    localDestinations: false,
  },
  proxy: {
    listenPort: 15101,
    metricsPort: 15190,
    keepClientIp: false,
    workers: 0,
    backlog: 4096,
    maxConnections: 20_000,
    timeouts: { connect: '5s', idle: '1h', drain: '30s' },
    udp: { idleTimeout: '60s', maxFlows: 65_536 },
    logLevel: 'info',
  },
  /** Pod settings of spec.proxy (not part of the NodeConfig document). */
  pod: { imagePullPolicy: 'IfNotPresent' },
  autoscaling: {
    enabled: false,
    minReplicas: 1,
    targetConnectionsPerProxy: 1000,
    scaleDownStabilization: '5m',
    /** The seed's rule (ADR 0022): scale out past 70 % of proxy.maxConnections held for 30 s. */
    utilization: { percent: 70, window: '30s' },
  },
} as const;

/**
 * Where the node agent keeps its state on a node (rule state, tuning snapshot and report): tmpfs,
 * so a reboot, which resets rules and kernel values, also forgets it. The operator mounts a
 * per-object directory below it (`<namespace>.<name>`), the agent's --state-dir defaults to it.
 */
export const NODE_STATE_DIR = '/run/tpfleet';
/**
 * A copy of the rule state outside /run (ADR 0015), tagged with the boot id: cleanup still finds
 * what to remove when /run/tpfleet/<namespace>.<name>/state.json is lost; a copy from an earlier
 * boot is ignored (the reboot removed those rules). Same per-object layout.
 */
export const NODE_STATE_COPY_DIR = '/var/lib/tpfleet';

/** "0x2000": marks and masks are bit patterns, written in hex wherever a person reads them. */
export const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * The interception readiness taint (ADR 0019): a node that should intercept carries it
 * (NoSchedule, no value) until its proxy pod is Ready, i.e. rules applied and verified and the
 * sidecar listening; it is put back when that pod stops being Ready while the node should still
 * intercept. Workloads that must start earlier (CNI, DNS) tolerate it (docs/operator.md).
 */
export const INTERCEPTION_TAINT = 'tpfleet.io/interception-not-ready';
