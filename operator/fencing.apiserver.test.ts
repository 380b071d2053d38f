// Leader fencing against a real kube-apiserver (issue 17). Replica A reaches the API server through
// an HTTP proxy in this test that can stall its Lease requests (a leader whose renewals hang: a
// paused process, a partition, an overloaded API server) while its watches and writes still pass.
// Past the renew deadline A must stop writing, before the standby B can take over; B then
// reconciles. Writes are counted at the proxy: what reached the API server, not what A meant to do.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as https from 'node:https';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { KubeClient, type KubeObject, type WriteVerb } from '../kube/client.ts';
import { Controller } from './controller.ts';
import { LeaderElector } from './leader.ts';
import { OperatorMetrics } from './metrics.ts';
import { FIELD_MANAGER, names } from './render/names.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { TEST_TENANCY } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

const NS = 'fence';
const LEASE_S = 4;
const DEADLINE_MS = (LEASE_S * 2000) / 3;
type Obj = KubeObject & { spec?: any; status?: any };

let env: TestEnv, admin: KubeClient, proxy: http.Server;
let stallLease = false;
const held: http.ServerResponse[] = [];
/** Non-lease writes that reached the API server through the proxy, with when they were forwarded. */
const forwardedWrites: { at: number; method: string; path: string }[] = [];

before(async () => {
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(admin);
  await createNamespace(admin, NS);
  await createNamespace(admin, 'tpfleet-system');
  for (const [n, zone] of [
    ['n1', 'a'],
    ['n2', 'b'],
    ['n3', 'c'],
  ] as const)
    await createNode(admin, n, { zone, labels: { pool: 'fence' } });
  proxy = http.createServer(async (req, res) => {
    const path = req.url ?? '/';
    if (stallLease && path.includes('/leases/')) {
      held.push(res); // never answered while stalled: the renewal hangs
      return;
    }
    if (req.method !== 'GET' && !path.includes('/leases/'))
      forwardedWrites.push({ at: Date.now(), method: req.method ?? '', path });
    const { host: _host, ...headers } = req.headers;
    const opts: https.RequestOptions = { method: req.method, headers };
    await env.kubeConfig.applyToHTTPSOptions(opts);
    const up = https.request(`${env.server}${path}`, opts, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
});
after(async () => {
  for (const r of held) r.destroy();
  proxy?.closeAllConnections();
  proxy?.close();
  await env?.stop();
});

interface Replica {
  elector: LeaderElector;
  controller: Controller;
  refused: () => number;
  /** When each write this replica let through was decided. */
  permitted: number[];
  lostAt: () => number | undefined;
  ledAt: () => number | undefined;
  stop: () => Promise<void>;
}

/** One operator replica as main.ts wires it: a lease elector, and a controller whose writes are fenced by it. */
async function replica(identity: string, server: 'proxy' | 'direct'): Promise<Replica> {
  const addr = proxy.address() as { port: number };
  const creds =
    server === 'proxy'
      ? { server: `http://127.0.0.1:${addr.port}`, applyToHTTPSOptions: async () => {} }
      : env.kubeConfig;
  let elector: LeaderElector | undefined,
    refused = 0,
    permitted: number[] = [],
    lostAt: number | undefined,
    ledAt: number | undefined;
  const client = new KubeClient(creds, FIELD_MANAGER, (verb: WriteVerb) => {
    if (elector && !elector.holds()) {
      refused++;
      throw new Error(`not leading: ${verb} refused`);
    }
    permitted.push(Date.now());
  });
  const log = pino({ level: process.env.TPFLEET_TEST_LOG ?? 'silent' });
  const controller = new Controller({
    client,
    log,
    metrics: new OperatorMetrics(false),
    settings: { defaultImage: 'registry.example/tpfleet-node:test', cleanupTimeoutMs: 60_000, tenancy: TEST_TENANCY },
  });
  await controller.startCaches();
  elector = new LeaderElector(
    client,
    {
      namespace: 'tpfleet-system',
      name: 'tpfleet-operator',
      identity,
      leaseDurationSec: LEASE_S,
      renewEveryMs: 500,
      onStartedLeading: () => {
        ledAt = Date.now();
        controller.startWorkers();
      },
      onStoppedLeading: () => {
        lostAt = Date.now(); // main.ts exits here; the controller may still be mid-reconcile
      },
    },
    log,
  );
  elector.start();
  return {
    elector,
    controller,
    refused: () => refused,
    permitted,
    lostAt: () => lostAt,
    ledAt: () => ledAt,
    stop: async () => {
      await controller.stop();
      await elector.stop();
    },
  };
}

test('a leader whose renewals hang stops writing at the renew deadline; the standby takes over', async () => {
  const a = await replica('a', 'proxy');
  await waitFor('A leads', async () => a.elector.isLeader);
  await admin.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'edge' },
    spec: { replicas: 1, nodeSelector: { pool: 'fence' } },
  });
  const ds = `/apis/apps/v1/namespaces/${NS}/daemonsets/${names('edge').daemonSet}`;
  await waitFor('A reconciled', async () => (await admin.get<Obj>(tpPath(NS, 'edge')))?.status?.replicas === 1);
  assert.ok(forwardedWrites.length > 0, 'A wrote through the proxy while leading (the count below can see its writes)');
  const b = await replica('b', 'direct');
  try {
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(b.elector.isLeader, false, 'B waits while A renews');

    const stalledAt = Date.now();
    stallLease = true;
    // While A's renewal hangs, keep giving A's (still running) workers something to write.
    let n = 0;
    const churn = setInterval(() => {
      n++;
      void admin.mergePatch(tpPath(NS, 'edge'), { spec: { proxy: { workers: 1 + n } } }).catch(() => undefined);
    }, 300);
    try {
      await waitFor('A stops leading', async () => a.lostAt() !== undefined, 15_000);
      const lostAfter = a.lostAt()! - stalledAt;
      await waitFor('B leads', async () => b.elector.isLeader, 15_000);
      const takeoverAfter = Date.now() - stalledAt;
      process.stdout.write(
        `# renewals stalled: A stopped after ${lostAfter} ms (deadline ${DEADLINE_MS} ms), B led after ${takeoverAfter} ms (lease ${LEASE_S} s)\n`,
      );
      // The renewal that last succeeded was sent before the stall: every write A let through was
      // decided before that renewal's deadline (the fence reads the clock; the callback's timer may run late).
      const afterDeadline = a.permitted.filter((t) => t >= stalledAt + DEADLINE_MS);
      assert.deepEqual(afterDeadline, [], 'A let no write through past its renew deadline');
      assert.ok(b.ledAt()! >= stalledAt + DEADLINE_MS, 'B led only after A fenced itself');
      // The deadline timer ends leadership on time, not the next renewal attempt's timeout (slack: a loaded machine).
      assert.ok(lostAfter <= DEADLINE_MS + 400, `A's leadership ended ${lostAfter} ms after the stall`);
      await new Promise((r) => setTimeout(r, 3000));
    } finally {
      clearInterval(churn);
    }
    // A write that passed the fence just before the deadline may still be on its way (the margin
    // between renew deadline and lease duration is for it); none may arrive once B leads.
    const late = forwardedWrites.filter((w) => w.at > a.lostAt()!);
    process.stdout.write(
      `# A's writes arriving after its deadline: ${late.map((w) => `+${w.at - a.lostAt()!} ms`).join(', ') || 'none'}\n`,
    );
    assert.deepEqual(
      late.filter((w) => w.at >= b.ledAt()!),
      [],
      'no write from A reached the API server once B led',
    );
    assert.ok(
      late.every((w) => w.at - a.lostAt()! < 500),
      'only writes already in flight at the deadline arrive after it',
    );
    assert.ok(a.refused() > 0, `A's workers tried and were refused (${a.refused()} writes)`);
    // B reconciles the last spec (each patch is a new generation and a new rendered config).
    const last = (await admin.get<Obj>(tpPath(NS, 'edge')))!;
    assert.equal(last.spec.proxy.workers, 1 + n);
    await waitFor('B applied the last spec', async () => {
      const t = await admin.get<Obj>(tpPath(NS, 'edge'));
      return t?.status?.observedGeneration === last.metadata.generation;
    });
    assert.ok(await admin.get(ds), 'the fleet DaemonSet is there');
  } finally {
    stallLease = false;
    for (const r of held.splice(0)) r.destroy();
    await a.stop();
    await b.stop();
  }
});
