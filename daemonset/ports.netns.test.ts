// Privileged: listenPort and metricsPort are checked against the node's live listeners before
// apply (issue 12). A program already listening there (an exporter, a host agent) would make
// the sidecar exit at start and, with FailClosed, the node drop intercepted traffic; apply refuses
// (exit 3, nothing changed) naming the port, the field and the process. The previous sidecar of the
// same object (a rollout's old pod, recorded in the state file) is not a conflict.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { nsExec, nsSpawn, privilegedSkipReason, sh, waitFor } from '../e2e/netns.ts';
import { agent, snapshot, workdir, type Workdir } from './agent.testkit.ts';
import { PORTS_CONFIG } from './traffic.testkit.ts';

const skip = privilegedSkipReason();

describe('apply refuses ports another program listens on', { skip }, () => {
  const ns = `tpfport${process.pid % 100000}`;
  const listeners: ChildProcess[] = [];
  let w: Workdir;
  /** A plain TCP listener in the namespace (as kubelet or an exporter would hold one); resolves once it listens. */
  const listen = async (family: 4 | 6, port: number) => {
    const [fam, host] = family === 4 ? ['AF_INET', '0.0.0.0'] : ['AF_INET6', '::'];
    const child = nsSpawn(ns, [
      'python3',
      '-c',
      `import socket,time\ns=socket.socket(socket.${fam})\ns.bind(("${host}",${port}))\ns.listen()\nprint("up",flush=True)\ntime.sleep(600)`,
    ]);
    listeners.push(child);
    await waitFor(`a listener on ${port}`, async () =>
      /:\d+/.test(await nsExec(ns, ['ss', '-Hltn', `sport = :${port}`])),
    );
    return child;
  };
  const config = (proxy: string) => w.config(`${PORTS_CONFIG('FailClosed')}proxy: {${proxy}}\n`);
  const apply = (file: string) =>
    agent(ns, ['apply', '--backend', 'nftables', '--config', file, '--state-dir', w.stateDir]);

  before(async () => {
    await sh(['ip', 'netns', 'add', ns]);
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    w = workdir();
  });
  after(async () => {
    for (const l of listeners) l.kill('SIGKILL');
    await agent(ns, ['cleanup', '--state-dir', w.stateDir]);
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    w.remove();
  });

  // Kubernetes' own ports (kubelet 10250, ...) are refused by the schema already (api/fields.ts
  // HOST_RESERVED_PORTS); any other program's port only the node can tell.
  test("listenPort on another program's port: refused, naming the field, the port and the process; nothing applied", async () => {
    const exporter = await listen(4, 19250);
    const before = await snapshot(ns);
    const r = await apply(config('listenPort: 19250'));
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `proxy\\.listenPort 19250 is already in use on this node by another program \\(python3 \\(pid ${exporter.pid}\\), uid 0, on 0\\.0\\.0\\.0\\).*spec\\.proxy\\.listenPort`,
      ),
    );
    assert.deepEqual(await snapshot(ns), before, 'nothing applied');
  });

  test('metricsPort on an IPv6 listener: refused the same way', async () => {
    const other = await listen(6, 19100);
    const r = await apply(config('metricsPort: 19100'));
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`proxy\\.metricsPort 19100 is already in use .*python3 \\(pid ${other.pid}\\), uid 0, on ::\\)`),
    );
  });

  test("this object's previous sidecar on the same ports is no conflict; a port changed onto a foreign listener is", async () => {
    const ok = await apply(config('listenPort: 15301, metricsPort: 15390'));
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    // The old pod's sidecar keeps listening during a surge rollout while the new pod's init applies.
    await listen(4, 15301);
    await listen(6, 15390);
    const again = await apply(config('listenPort: 15301, metricsPort: 15390'));
    assert.equal(again.code, 0, again.stdout + again.stderr);
    // Moving the metrics port onto the foreign IPv6 listener of the previous test is refused.
    const moved = await apply(config('listenPort: 15301, metricsPort: 19100'));
    assert.equal(moved.code, 3, moved.stdout + moved.stderr);
    assert.match(moved.stderr, /proxy\.metricsPort 19100 is already in use/);
    assert.doesNotMatch(moved.stderr, /listenPort/);
  });

  test('a process holding both ports is a tpfleet proxy (state lost), not a conflict; the same process on one port is', async () => {
    const both = nsSpawn(ns, [
      'python3',
      '-c',
      'import socket,time\nl=[socket.socket() for _ in range(2)]\nfor s,p in zip(l,(15401,15490)):\n s.bind(("0.0.0.0",p)); s.listen()\ntime.sleep(600)',
    ]);
    listeners.push(both);
    await waitFor('both ports', async () => /:15490/.test(await nsExec(ns, ['ss', '-Hltn', 'sport = :15490'])));
    const fresh = workdir();
    try {
      const run = (proxy: string) =>
        agent(ns, [
          'apply',
          '--backend',
          'nftables',
          '--config',
          fresh.config(`${PORTS_CONFIG('FailOpen')}proxy: {${proxy}}\n`),
          '--state-dir',
          fresh.stateDir,
        ]);
      const oneOnly = await run('listenPort: 15401, metricsPort: 15491');
      assert.equal(oneOnly.code, 3, oneOnly.stdout + oneOnly.stderr);
      assert.match(
        oneOnly.stderr,
        new RegExp(`proxy\\.listenPort 15401 is already in use .*python3 \\(pid ${both.pid}\\)`),
      );
      const r = await run('listenPort: 15401, metricsPort: 15490');
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal((await agent(ns, ['cleanup', '--state-dir', fresh.stateDir])).code, 0);
    } finally {
      fresh.remove();
    }
  });
});
