// Privileged, with a real kube-apiserver: the node janitor (ADR 0015) removes exactly what a gone
// TransparentProxy left on a node, and nothing of a live one. The node is a network namespace with
// real rules; the janitor runs inside it and reaches the API server over a veth (the server binds
// that address). This is paths 1, 2 and 5 of issue 20 at the node: the object is gone (finalizer
// removed by hand while the operator is down, or its namespace deleted) and no cleanup pod ran.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import { createTopology, nsExec, nsSpawn, privilegedSkipReason, sh, waitFor, type Topology } from '../e2e/netns.ts';
import { createNamespace, installCrd, tpPath } from '../e2e/testenv/fixtures.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';
import { KubeClient } from '../kube/client.ts';
import { agent, MAIN, snapshot, workdir, type Workdir } from './agent.testkit.ts';
import { PORTS_CONFIG } from './traffic.testkit.ts';

const skip = privilegedSkipReason();
let t: Topology, env: TestEnv, c: KubeClient, w: Workdir;
const HOST_IF = `tpj${process.pid % 10000}`;
const octet = 1 + (process.pid % 250);
const HOST_ADDR = `198.18.${octet}.1`;

before(async () => {
  if (skip) return;
  t = await createTopology('jn');
  // A veth from this host into the node's namespace: the API server listens on the host end.
  await sh(['ip', 'link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'to-api', 'netns', t.proxy.ns]);
  await sh(['ip', 'addr', 'add', `${HOST_ADDR}/30`, 'dev', HOST_IF]);
  await sh(['ip', 'link', 'set', HOST_IF, 'up']);
  await nsExec(t.proxy.ns, ['ip', 'addr', 'add', `198.18.${octet}.2/30`, 'dev', 'to-api']);
  await nsExec(t.proxy.ns, ['ip', 'link', 'set', 'to-api', 'up']);
  env = await startTestEnv({ bindAddress: HOST_ADDR });
  c = new KubeClient(env.kubeConfig, 'janitor-test');
  await installCrd(c);
  await createNamespace(c, 'fleet');
  w = workdir();
});
after(async () => {
  await env?.stop();
  await sh(['ip', 'link', 'del', HOST_IF], { allowFail: true });
  await t?.destroy();
  w?.remove();
});

const janitor = () =>
  agent(t.proxy.ns, ['janitor', '--once', '--state-dir', w.stateDir, '--kubeconfig', env.kubeconfigPath]);
async function install(owner: string): Promise<string> {
  const dir = join(w.stateDir, owner);
  mkdirSync(dir, { recursive: true });
  const r = await agent(t.proxy.ns, ['apply', '--config', w.config(PORTS_CONFIG('FailClosed')), '--state-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  return dir;
}

test('a live TransparentProxy keeps its node state; once it is gone the janitor restores the node exactly', {
  skip,
}, async () => {
  const before = await snapshot(t.proxy.ns);
  await c.create(tpPath('fleet'), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'web' },
    spec: {},
  });
  const dir = await install('fleet.web');
  const installed = await snapshot(t.proxy.ns);
  assert.notDeepEqual(installed, before);
  const kept = await janitor();
  assert.equal(kept.code, 0, kept.stderr);
  assert.match(kept.stdout, /janitor: nothing to clean/);
  assert.deepEqual(await snapshot(t.proxy.ns), installed, 'a live owner is never touched');
  // The object goes with nobody cleaning up (no operator runs here, so no finalizer holds it).
  await c.delete(tpPath('fleet', 'web'));
  const started = Date.now();
  const r = await janitor();
  const ms = Date.now() - started;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /janitor: cleaned fleet\.web/);
  assert.deepEqual(await snapshot(t.proxy.ns), before, 'byte-identical to before the install');
  // The directory stays (a new pod of that name may have mounted it); its state is gone.
  assert.equal(existsSync(join(dir, 'state.json')), false);
  process.stdout.write(`# janitor pass that restored the node: ${ms} ms (plus up to one interval, 30 s default)\n`);
});

test('a TransparentProxy whose namespace was deleted: its state is an orphan like any other', { skip }, async () => {
  const before = await snapshot(t.proxy.ns);
  await install('gone-ns.egress'); // the namespace "gone-ns" does not exist (any more)
  const r = await janitor();
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /janitor: cleaned gone-ns\.egress/);
  assert.deepEqual(await snapshot(t.proxy.ns), before);
});

test('when the API server cannot be asked, nothing is removed', { skip }, async () => {
  const installed = await install('fleet.unknown');
  const snap = await snapshot(t.proxy.ns);
  await nsExec(t.proxy.ns, ['ip', 'link', 'set', 'to-api', 'down']);
  try {
    const r = await janitor();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /janitor: nothing to clean/);
    assert.deepEqual(await snapshot(t.proxy.ns), snap);
    assert.equal(existsSync(join(installed, 'state.json')), true);
  } finally {
    await nsExec(t.proxy.ns, ['ip', 'link', 'set', 'to-api', 'up']);
  }
  assert.match((await janitor()).stdout, /janitor: cleaned fleet\.unknown/);
});

/** Objects of another tool with our name prefix: a marker-led cleanup must leave them alone. */
async function addForeign(backend: string): Promise<void> {
  const ns = t.proxy.ns;
  if (backend === 'nftables') {
    await nsExec(ns, ['nft', 'add', 'table', 'inet', 'tpfleet-other']);
    await nsExec(ns, ['nft', 'add', 'chain', 'inet', 'tpfleet-other', 'TPFLEET-X']);
    return;
  }
  // Both families: a marker-led cleanup does not know whether the mangle table or its PREROUTING
  // chain existed before (the state said so); here another tool's rules make them exist.
  for (const bin of backend === 'iptables-nft'
    ? ['iptables-nft', 'ip6tables-nft']
    : ['iptables-legacy', 'ip6tables-legacy']) {
    await nsExec(ns, [bin, '-t', 'mangle', '-N', 'TPFLEET-X']);
    await nsExec(ns, [bin, '-t', 'mangle', '-A', 'PREROUTING', '-p', 'udp', '-j', 'TPFLEET-X']);
  }
}

for (const backend of ['nftables', 'iptables-nft', 'iptables-legacy'] as const) {
  test(`${backend}: both state copies and the directories lost, the owner markers still lead the janitor to exactly ours`, {
    skip,
  }, async () => {
    await addForeign(backend);
    const before = await snapshot(t.proxy.ns);
    const owner = `fleet.marked-${backend}`;
    const name = `marked-${backend}`;
    await c.create(tpPath('fleet'), {
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name },
      spec: {},
    });
    const dir = join(w.stateDir, owner),
      copy = join(w.dir, 'copies', owner);
    mkdirSync(dir, { recursive: true });
    const cfg = w.config(PORTS_CONFIG('FailClosed'));
    const r = await agent(t.proxy.ns, [
      'apply',
      ...['--config', cfg, '--state-dir', dir, '--state-copy-dir', copy, '--owner', owner, '--backend', backend],
    ]);
    assert.equal(r.code, 0, r.stderr);
    const installed = await snapshot(t.proxy.ns);
    // Both copies gone, and their directories with them: only the markers on the node remain.
    rmSync(dir, { recursive: true });
    rmSync(copy, { recursive: true });
    const kept = await janitor();
    assert.match(kept.stdout, /janitor: nothing to clean/, 'a live owner is never touched');
    assert.deepEqual(await snapshot(t.proxy.ns), installed);
    await c.delete(tpPath('fleet', name));
    const gone = await janitor();
    assert.equal(gone.code, 0, gone.stderr);
    assert.match(gone.stdout, new RegExp(`janitor: cleaned ${owner.replace('.', '\\.')}`));
    assert.deepEqual(await snapshot(t.proxy.ns), before, 'ours removed, routing included; the foreign objects kept');
    const again = await janitor();
    assert.match(again.stdout, /janitor: nothing to clean/);
  });
}

test('cleanup --owner with no state removes what that owner marked, and no other owner', { skip }, async () => {
  const before = await snapshot(t.proxy.ns);
  const dir = join(w.stateDir, 'fleet.solo');
  mkdirSync(dir, { recursive: true });
  const cfg = w.config(PORTS_CONFIG('FailOpen'));
  const base = ['--state-dir', dir, '--backend', 'nftables'];
  assert.equal((await agent(t.proxy.ns, ['apply', '--config', cfg, ...base, '--owner', 'fleet.solo'])).code, 0);
  rmSync(join(dir, 'state.json'));
  const installed = await snapshot(t.proxy.ns);
  const other = await agent(t.proxy.ns, ['cleanup', ...base, '--owner', 'fleet.someone-else']);
  assert.equal(other.code, 0, other.stderr);
  assert.deepEqual(await snapshot(t.proxy.ns), installed, "another owner's markers are not ours");
  const mine = await agent(t.proxy.ns, ['cleanup', ...base, '--owner', 'fleet.solo']);
  assert.equal(mine.code, 0, mine.stderr);
  assert.deepEqual(await snapshot(t.proxy.ns), before);
});

test('iptables-nft on a node without a mangle table: cleanup from the markers alone leaves it byte-identical', {
  skip,
}, async () => {
  // A namespace of its own: the shared one holds the other tests' foreign mangle rules, and the case
  // here is a node where iptables-nft's mangle table and PREROUTING chain exist only because our
  // hook rule created them (a local-real node, issue 20's path 5b).
  const node = await createTopology('jm');
  const dir = join(w.dir, 'fleet.bare');
  try {
    const before = await snapshot(node.proxy.ns);
    assert.doesNotMatch(before['nft list ruleset']!, /table ip mangle/);
    const cfg = w.config(PORTS_CONFIG('FailClosed'), 'bare.yaml');
    const base = ['--state-dir', dir, '--backend', 'iptables-nft', '--owner', 'fleet.bare'];
    const r = await agent(node.proxy.ns, ['apply', '--config', cfg, ...base]);
    assert.equal(r.code, 0, r.stderr);
    rmSync(join(dir, 'state.json'));
    const c = await agent(node.proxy.ns, ['cleanup', ...base]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await snapshot(node.proxy.ns), before);
  } finally {
    await node.destroy();
  }
});

/** Collects a child's output; resolves its exit code. */
function collect(p: ChildProcess): { text: () => string; exit: Promise<number | null> } {
  let buf = '';
  p.stdout?.on('data', (d: Buffer) => (buf += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (buf += d.toString()));
  return { text: () => buf, exit: new Promise((r) => p.once('exit', (code) => r(code))) };
}

test('a janitor pass cannot remove what an apply in progress writes: it waits for the lock, then sees the new owner', {
  skip,
}, async () => {
  const owner = 'fleet.again';
  const before = await snapshot(t.proxy.ns);
  // An object of this name existed, was deleted with nobody cleaning up: its state is an orphan.
  const dir = await install(owner);
  const cfg = w.config(PORTS_CONFIG('FailOpen'), 'again.yaml');
  // A new object of the same name: its pod's apply holds the lock (held 6 s here, test knob) ...
  const applying = collect(
    nsSpawn(t.proxy.ns, [process.execPath, '--import', 'tsx', MAIN, 'apply', '--config', cfg, '--state-dir', dir], {
      env: { ...process.env, TPFLEET_TEST_LOCK_DELAY_MS: '6000' },
    }),
  );
  await waitFor(
    'the apply to hold the lock',
    async () => applying.text().includes('holding the state directory lock'),
    15_000,
  );
  // ... while a janitor pass sees the old directory and a LIST without the new object.
  const pass = collect(
    nsSpawn(t.proxy.ns, [
      process.execPath,
      '--import',
      'tsx',
      MAIN,
      'janitor',
      '--once',
      '--state-dir',
      w.stateDir,
      '--kubeconfig',
      env.kubeconfigPath,
    ]),
  );
  await waitFor(
    'the janitor to wait for the lock',
    async () => pass.text().includes('waiting for the state directory lock'),
    15_000,
  );
  await c.create(tpPath('fleet'), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'again' },
    spec: {},
  });
  assert.equal(await applying.exit, 0, applying.text());
  assert.equal(await pass.exit, 0, pass.text());
  assert.match(pass.text(), /janitor: nothing to clean/);
  const installed = await snapshot(t.proxy.ns);
  assert.notDeepEqual(installed, before);
  assert.equal(existsSync(join(dir, 'state.json')), true, "the new apply's state survived the pass");
  // The new apply's rules are in force (FailOpen: no final drop), not removed and not the old ones.
  // (Whichever backend auto chose: the foreign chains of the earlier tests make this node an iptables one.)
  const rules = Object.values(installed).join('\n');
  assert.match(rules, /tproxy to :15101|--on-port 15101/);
  assert.doesNotMatch(rules, /FailClosed: drop/);
  // Once that object is gone too, the next pass restores the node.
  await c.delete(tpPath('fleet', 'again'));
  assert.match((await janitor()).stdout, /janitor: cleaned fleet\.again/);
  assert.deepEqual(await snapshot(t.proxy.ns), before);
});
