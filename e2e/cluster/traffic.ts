// Traffic checks on clusters with a real data path (kind, local-real): a server pod on the
// workload node reports what it saw, a client pod on an active proxy node connects to it, and the
// sidecar's counters say whether it carried the connection. Pod scripts are fixed strings (no
// input is ever spliced into a shell or a script): addresses reach them through env vars.
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import type { Cluster } from './provider.ts';

type Kube = Pick<Cluster, 'kubeconfigPath'>;

/**
 * Listens on 8080 (intercepted) and 9090 (not): answers each connection with {"src","dst"}. A
 * socket error (a peer's reset: a sidecar killed mid-connection) is ignored: unhandled, it ended the
 * server, after which every connection is refused: the likely end of owner.test.ts run 1 (2026-12-03),
 * where from path 5 on every connection to it was reset or refused.
 */
const SERVER_JS = `const net=require('net');for(const p of [8080,9090])net.createServer(s=>{s.on('error',()=>{});s.end(JSON.stringify({src:s.remoteAddress+':'+s.remotePort,dst:s.localAddress+':'+s.localPort})+'\\n')}).listen(p,'::');`;
/** Connects to $TARGET (host:port), prints the server's line, exits non-zero on failure. */
const CLIENT_JS = `const net=require('net');const t=process.env.TARGET;const i=t.lastIndexOf(':');const s=net.connect(+t.slice(i+1),t.slice(0,i));let d='';s.setTimeout(10000,()=>{console.log(JSON.stringify({error:'timeout'}));process.exit(1)});s.on('data',b=>d+=b);s.on('end',()=>{console.log(d.trim());process.exit(0)});s.on('error',e=>{console.log(JSON.stringify({error:e.code}));process.exit(1)});`;

export interface Saw {
  src: string;
  dst: string;
}

/**
 * Connects to $TARGET every 100 ms for $SECONDS (each attempt times out after 1 s, so attempts
 * overlap) and prints one JSON line per attempt: start time (ms) and whether the server answered.
 */
const PROBER_JS = `const net=require('net');const t=process.env.TARGET;const i=t.lastIndexOf(':');const end=Date.now()+1000*+process.env.SECONDS;let open=0;const one=()=>{const at=Date.now();open++;const s=net.connect(+t.slice(i+1),t.slice(0,i));let d='';const done=ok=>{if(s.done)return;s.done=1;s.destroy();console.log(JSON.stringify({at,ok}));if(--open===0&&Date.now()>=end)process.exit(0)};s.setTimeout(1000,()=>done(false));s.on('data',b=>d+=b);s.on('end',()=>done(d.includes('dst')));s.on('error',()=>done(false))};const tick=()=>{if(Date.now()>=end)return;one();setTimeout(tick,100)};tick();`;

export interface Prober {
  name: string;
  results(): Promise<{ at: number; ok: boolean }[]>;
  /** The attempts finished so far (the pod keeps running). */
  sofar(): Promise<{ at: number; ok: boolean }[]>;
  /** Deletes the pod, finished or not. */
  remove(): Promise<void>;
}

const parseAttempts = (log: string) =>
  log
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { at: number; ok: boolean })
    .sort((a, b) => a.at - b.at);

/** Starts a prober pod on `node` (runs `seconds`); results() waits for it to finish and parses its log. */
export async function startProber(
  c: Kube,
  ns: string,
  node: string,
  image: string,
  target: string,
  seconds: number,
  name = 'tpfleet-e2e-prober',
): Promise<Prober> {
  await kubectl(
    c,
    ['apply', '-f', '-'],
    JSON.stringify(pod(name, ns, node, image, PROBER_JS, { TARGET: target, SECONDS: String(seconds) })),
  );
  await waitFor(
    'the prober pod to run',
    async () => (await kubectlJson(c, ['get', 'pod', '-n', ns, name])).status?.phase === 'Running' || undefined,
    120_000,
  );
  return {
    name,
    async results() {
      await waitFor(
        'the prober to finish',
        async () => (await kubectlJson(c, ['get', 'pod', '-n', ns, name])).status?.phase === 'Succeeded' || undefined,
        (seconds + 60) * 1000,
      );
      const log = await kubectl(c, ['logs', '-n', ns, name]);
      await kubectl(c, ['delete', 'pod', '-n', ns, name, '--wait=false']);
      return parseAttempts(log);
    },
    sofar: async () => parseAttempts(await kubectl(c, ['logs', '-n', ns, name])),
    remove: async () => {
      await kubectl(c, ['delete', 'pod', '-n', ns, name, '--wait=false', '--ignore-not-found']);
    },
  };
}

/**
 * When traffic flows again after `t0` (ms after it): the start of the first answered attempt after
 * the last unanswered one; undefined while the last attempt failed or none started after t0.
 */
export function flowingSince(results: { at: number; ok: boolean }[], t0: number): number | undefined {
  const after = results.filter((r) => r.at >= t0);
  const lastFail = after.findLastIndex((r) => !r.ok);
  const first = after[lastFail + 1];
  return first ? first.at - t0 : undefined;
}

/**
 * The longest time (ms) without an answered attempt: between the starts of two consecutive answered
 * attempts, and from the first or to the last attempt (a run that never recovers is one long gap).
 */
export function longestGap(results: { at: number; ok: boolean }[]): number {
  if (results.length === 0) return Infinity;
  const marks = [results[0]!.at, ...results.filter((r) => r.ok).map((r) => r.at), results.at(-1)!.at];
  let gap = 0;
  for (let k = 1; k < marks.length; k++) gap = Math.max(gap, marks[k]! - marks[k - 1]!);
  return gap;
}

/** Per second since `t0`: answered/attempted, for failure messages ("+3s 9/10"). */
export function timeline(results: { at: number; ok: boolean }[], t0: number): string {
  const bins = new Map<number, [number, number]>();
  for (const r of results) {
    const b = Math.floor((r.at - t0) / 1000),
      v = bins.get(b) ?? [0, 0];
    bins.set(b, [v[0] + (r.ok ? 1 : 0), v[1] + 1]);
  }
  return [...bins].map(([s, [ok, all]]) => `${s >= 0 ? '+' : ''}${s}s ${ok}/${all}`).join(', ');
}

/** A one-container pod running `node -e js` as 65532 on `node` (scripts are fixed strings; input only through env). */
export function pod(
  name: string,
  ns: string,
  node: string,
  image: string,
  js: string,
  env: Record<string, string> = {},
) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: name } },
    spec: {
      nodeName: node,
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'main',
          image,
          imagePullPolicy: 'IfNotPresent',
          command: ['node', '-e', js],
          env: Object.entries(env).map(([k, value]) => ({ name: k, value })),
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            allowPrivilegeEscalation: false,
            capabilities: { drop: ['ALL'] },
          },
        },
      ],
    },
  };
}

/** Starts the server pod on `node`; resolves with its pod IP once it is Running. */
export async function startServer(
  c: Kube,
  ns: string,
  node: string,
  image: string,
  name = 'tpfleet-e2e-server',
): Promise<string> {
  await kubectl(c, ['apply', '-f', '-'], JSON.stringify(pod(name, ns, node, image, SERVER_JS)));
  return waitFor(
    `the server pod ${name} to run`,
    async () => {
      const p = await kubectlJson(c, ['get', 'pod', '-n', ns, name]);
      return p.status?.phase === 'Running' && p.status.podIP ? (p.status.podIP as string) : undefined;
    },
    120_000,
  );
}

/** Runs one client pod on `node` against `target` and returns what the server saw (or throws). */
export async function probe(
  c: Kube,
  ns: string,
  node: string,
  image: string,
  target: string,
  id: string,
): Promise<Saw & { clientIp: string }> {
  const r = await connectOnce(c, ns, node, image, target, id);
  if ('error' in r) throw new Error(`client tpfleet-e2e-client-${id} → ${target} failed: ${r.line}`);
  return r;
}

/**
 * One client pod on `node` against `target`: what the server saw, or the client's error (its
 * socket error code: ECONNRESET for a reset, "timeout", or "closed" when the connection ended with
 * no answer).
 */
export async function connectOnce(
  c: Kube,
  ns: string,
  node: string,
  image: string,
  target: string,
  id: string,
): Promise<(Saw & { clientIp: string }) | { error: string; line: string }> {
  const name = `tpfleet-e2e-client-${id}`;
  await kubectl(c, ['apply', '-f', '-'], JSON.stringify(pod(name, ns, node, image, CLIENT_JS, { TARGET: target })));
  try {
    const p = await waitFor(
      `client pod ${name} to finish`,
      async () => {
        const o = await kubectlJson(c, ['get', 'pod', '-n', ns, name]);
        return ['Succeeded', 'Failed'].includes(o.status?.phase) ? o : undefined;
      },
      120_000,
    );
    const line = (await kubectl(c, ['logs', '-n', ns, name])).trim().split('\n').pop() ?? '';
    if (line === '') return { error: 'closed', line };
    const saw = JSON.parse(line) as Saw & { error?: string };
    if (p.status.phase !== 'Succeeded' || saw.error) return { error: saw.error ?? `pod ${p.status.phase}`, line };
    // The server listens on '::', so IPv4 peers read as IPv4-mapped IPv6 (::ffff:a.b.c.d).
    const v4 = (a: string) => a.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+:\d+)$/, '$1');
    return { src: v4(saw.src), dst: v4(saw.dst), clientIp: p.status.podIP as string };
  } finally {
    await kubectl(c, ['delete', 'pod', '-n', ns, name, '--wait=false']).catch(() => undefined);
  }
}

/** The sidecar's tpfleet_proxy_policy_decisions_total{rule,action} on `pod` (0 when not yet counted). */
export async function policyDecisions(
  c: Kube,
  ns: string,
  pod: string,
  metricsPort: number,
  rule: string,
  action: string,
): Promise<number> {
  const text = await kubectl(c, ['get', '--raw', `/api/v1/namespaces/${ns}/pods/${pod}:${metricsPort}/proxy/metrics`]);
  if (!/^# TYPE tpfleet_proxy_policy_decisions_total counter$/m.test(text))
    throw new Error(`no tpfleet_proxy_policy_decisions_total in the metrics of ${pod}`);
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`tpfleet_proxy_policy_decisions_total{rule="${rule}",action="${action}"} `));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

/** Connections the sidecar on `pod` accepted (its /metrics through the API server's pod proxy). */
export async function sidecarAccepted(c: Kube, ns: string, pod: string, metricsPort: number): Promise<number> {
  const text = await kubectl(c, ['get', '--raw', `/api/v1/namespaces/${ns}/pods/${pod}:${metricsPort}/proxy/metrics`]);
  const m = /^tpfleet_proxy_connections_accepted_total(?:\{[^}]*\})? (\d+(?:\.\d+)?)$/m.exec(text);
  if (!m) throw new Error(`no tpfleet_proxy_connections_accepted_total in the metrics of ${pod}`);
  return Number(m[1]);
}

/**
 * Sysctls the suite's TransparentProxy tunes (per network namespace, so per node here), and the
 * values it sets. tcp_migrate_req: the old sidecar's pending connections move to the new one when
 * it closes its listener during a rollout (docs/operator.md, "Rollouts").
 */
export const TUNED_SYSCTLS: Readonly<Record<string, number>> = {
  'net.core.somaxconn': 8192,
  'net.ipv4.tcp_fin_timeout': 17,
  'net.ipv4.tcp_migrate_req': 1,
};

/**
 * A node's firewall rules in every backend: the nft ruleset (iptables-nft included) and the
 * iptables-legacy tables, which nft cannot see. kind nodes on podman run iptables-legacy (kind's
 * entrypoint picks legacy when the node has no rules yet), so kubelet, kube-proxy and the agent
 * (backend auto follows the node) write there. Listing legacy tables never creates one.
 */
export async function nodeRuleset(c: Cluster, node: string): Promise<string> {
  if (!c.nodeExec) throw new Error(`${c.provider}: nodeExec is not available`);
  const legacy = (argv: string[]) =>
    c.nodeExec!(node, argv).catch((e: Error) => `(${argv[0]}: ${e.message.split('\n')[0]})`);
  const parts = await Promise.all([
    c.nodeExec(node, ['nft', 'list', 'ruleset']),
    legacy(['iptables-legacy-save']),
    legacy(['ip6tables-legacy-save']),
  ]);
  return parts.join('\n---\n');
}

/**
 * kube-proxy's per-Service rules (KUBE-SVC-, KUBE-SEP-, ... chains and the rules that jump to them,
 * "has no endpoints" rejects), in iptables-save and nft listing form: they follow the cluster's
 * Services and endpoints (the chart's own Service comes with the install), not the agent.
 */
export function withoutServiceRules(text: string): string {
  const svc = /KUBE-(SVC|SEP|EXT|FW|SVL|XLB)-[A-Z0-9]+|has no endpoints/;
  const out: string[] = [];
  let skipping = false,
    justSkipped = false;
  for (const line of text.split('\n')) {
    if (skipping) {
      if (/^\s*}\s*$/.test(line)) {
        skipping = false;
        justSkipped = true;
      }
      continue;
    }
    // nft separates chains with one empty line: it goes with the chain left out.
    if (justSkipped && line.trim() === '') {
      justSkipped = false;
      continue;
    }
    justSkipped = false;
    if (/^\s*chain KUBE-(SVC|SEP|EXT|FW|SVL|XLB)-[A-Z0-9]+ \{\s*$/.test(line)) {
      skipping = true;
      continue;
    }
    if (!svc.test(line)) out.push(line);
  }
  return out.join('\n');
}

/** The lines only in `before` (-) and only in `now` (+), order kept: what a "still differs" failure shows. */
export function stateDiff(before: string, now: string, max = 40): string {
  const b = new Set(before.split('\n'));
  const n = new Set(now.split('\n'));
  const lines = [
    ...before
      .split('\n')
      .filter((l) => !n.has(l))
      .map((l) => `- ${l}`),
    ...now
      .split('\n')
      .filter((l) => !b.has(l))
      .map((l) => `+ ${l}`),
  ];
  if (lines.length > max) lines.splice(max, lines.length - max, `... ${lines.length - max} more`);
  return lines.join('\n');
}

/** A node's interception and tuning state: its rules (every backend), ip rules, the routes of every table, TUNED_SYSCTLS. */
export async function nodeNetState(c: Cluster, node: string): Promise<string> {
  if (!c.nodeExec) throw new Error(`${c.provider}: nodeExec is not available`);
  const parts = await Promise.all([
    nodeRuleset(c, node),
    c.nodeExec(node, ['ip', 'rule', 'show']),
    c.nodeExec(node, ['ip', '-6', 'rule', 'show']),
    c.nodeExec(node, ['ip', 'route', 'show', 'table', 'all']),
    c.nodeExec(node, ['sysctl', ...Object.keys(TUNED_SYSCTLS)]),
  ]);
  // Compared before install and after delete: packet counters of the node's other rules move
  // with any traffic, iptables-save stamps its output, pod veths (the operator's or the test's
  // own pods) come and go with their pods, and kube-proxy follows Services; none of it is state
  // the agent owns.
  return withoutServiceRules(parts.join('\n---\n'))
    .replace(/counter packets \d+ bytes \d+/g, 'counter')
    .replace(/\[\d+:\d+\]/g, '[]')
    .split('\n')
    .filter((l) => !/\bdev veth[0-9a-f]+\b/.test(l) && !/^# (Generated|Completed) /.test(l))
    .join('\n');
}
