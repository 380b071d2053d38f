// The native addon and the two ways its sockets are adopted by Node (listener.ts, dial.ts).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { isRoot, privilegedSkipReason, sh } from '../e2e/netns.ts';
import { transparentDialer } from './dial.ts';
import { adoptListener } from './listener.ts';
import { native, type NativeError } from './native/index.ts';

const openFds = (): number => readdirSync('/proc/self/fd').length;

async function plainServer(onConn: (s: net.Socket) => void = () => {}): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, onConn);
  await new Promise<void>((r) => server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

test('failures throw Node-style system errors (.code, .syscall) and leak no descriptor', async () => {
  const { server, port } = await plainServer();
  try {
    const before = openFds();
    for (let i = 0; i < 50; i++) {
      assert.throws(
        () => native().listenTransparent(4, '127.0.0.1', port, 16),
        (e: NativeError) => {
          // Root gets as far as bind (the port is taken, without SO_REUSEPORT); others fail at
          // IP_TRANSPARENT, which needs CAP_NET_ADMIN.
          const want = isRoot() ? { code: 'EADDRINUSE', syscall: 'bind' } : { code: 'EPERM', syscall: 'setsockopt' };
          assert.equal(e.code, want.code);
          assert.equal(e.syscall, want.syscall);
          assert.ok(e.errno < 0);
          assert.match(e.message, new RegExp(want.code));
          return true;
        },
      );
    }
    assert.equal(openFds(), before);
  } finally {
    server.close();
  }
});

test('bad arguments are type errors, not crashes', () => {
  const n = native();
  assert.throws(() => n.listenTransparent(5 as 4, '0.0.0.0', 1, 16), /family must be 4 or 6/);
  assert.throws(() => n.listenTransparent(4, '::', 1, 16), /invalid address/);
  assert.throws(() => n.listenTransparent(4, '0.0.0.0', 70000, 16), /invalid address, port or backlog/);
  assert.throws(() => n.transparentSocket(6, '10.0.0.1', 0), /not an address of the family/);
  assert.throws(() => n.transparentSocket(4, 42 as unknown as string, 0), /must be a string/);
});

test('a native transparent listener is adopted with its backlog and shares its port (SO_REUSEPORT)', {
  skip: privilegedSkipReason(),
}, async () => {
  const n = native();
  const fds = [n.listenTransparent(4, '127.0.0.1', 0, 16)];
  const servers: net.Server[] = [];
  try {
    const first = new net.Server();
    await adoptListener(first, fds[0]!, 777);
    servers.push(first);
    const port = (first.address() as net.AddressInfo).port;
    const second = new net.Server();
    await adoptListener(second, n.listenTransparent(4, '127.0.0.1', port, 16), 777);
    servers.push(second);
    // Send-Q of a listening socket is its backlog: 777 (ours), not Node's default 511.
    const ss = await sh(['ss', '-ltnH', `sport = :${port}`]);
    const backlogs = ss
      .trim()
      .split('\n')
      .map((l) => Number(l.trim().split(/\s+/)[2]));
    assert.deepEqual(backlogs, [777, 777]);
    const got = new Promise<string>((r) => first.once('connection', () => r('first')));
    const got2 = new Promise<string>((r) => second.once('connection', () => r('second')));
    const clients = Array.from(
      { length: 40 },
      () =>
        new Promise<void>((resolve) => {
          const c = net.connect(port, '127.0.0.1');
          c.on('error', () => resolve());
          c.on('connect', () => c.end());
          c.on('close', () => resolve());
        }),
    );
    for (const srv of servers) srv.on('connection', (s) => s.on('error', () => {}).end());
    await Promise.all(clients);
    assert.deepEqual((await Promise.all([got, got2])).sort(), ['first', 'second'], 'both listeners accept');
  } finally {
    for (const s of servers) s.close();
  }
});

test('the transparent dialer keeps its bound source address and reports connects and refusals', {
  skip: privilegedSkipReason(),
}, async () => {
  const seen: string[] = [];
  const { server, port } = await plainServer((s) => {
    seen.push(s.remoteAddress!);
    s.end('hi');
  });
  try {
    const dial = transparentDialer();
    const results = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) =>
          new Promise<string>((resolve, reject) => {
            const s = dial({ address: '127.0.0.1', port, family: 4 }, `127.0.0.${10 + i}`);
            let data = '';
            s.on('connect', () => (data += `connect:${s.localAddress}|`));
            s.on('data', (d) => (data += d));
            s.on('end', () => s.end());
            s.on('error', reject);
            s.on('close', () => resolve(data));
            // Keep the event loop busy right after dialling: the connect must still use the bound fd.
            const until = Date.now() + 5;
            while (Date.now() < until);
          }),
      ),
    );
    for (const [i, r] of results.entries()) assert.equal(r, `connect:127.0.0.${10 + i}|hi`);
    assert.deepEqual(seen.sort(), Array.from({ length: 20 }, (_, i) => `127.0.0.${10 + i}`).sort());

    const refused = await new Promise<string>((resolve) => {
      const s = dial({ address: '127.0.0.1', port: 1, family: 4 }, null);
      s.on('error', (e: NodeJS.ErrnoException) => resolve(`${e.code}:${e.syscall}`));
    });
    assert.equal(refused, 'ECONNREFUSED:connect');
  } finally {
    server.close();
  }
});

test('setAffinity pins every thread of the process; getAffinity reads it back; failures change nothing', () => {
  const n = native();
  const before = n.getAffinity();
  const threadCpus = (): string[] =>
    readdirSync('/proc/self/task').map(
      (tid) => /^Cpus_allowed_list:\s*(.*)$/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))![1]!,
    );
  const target = before[before.length - 1]!;
  try {
    n.setAffinity([target]);
    assert.deepEqual(n.getAffinity(), [target]);
    const lists = threadCpus();
    assert.ok(lists.length > 1, 'Node runs several threads');
    assert.deepEqual(new Set(lists), new Set([String(target)]), 'V8 and libuv threads are pinned too');
    assert.throws(
      () => n.setAffinity([8191]),
      (e: NativeError) => e.code === 'EINVAL' && e.syscall === 'sched_setaffinity' && e.errno < 0,
    );
    assert.deepEqual(n.getAffinity(), [target], 'a refused list leaves the affinity as it was');
    assert.throws(() => n.setAffinity([]), /non-empty array/);
    assert.throws(() => n.setAffinity([-1]), /integers 0\.\.8191/);
    assert.throws(() => n.setAffinity(['1' as unknown as number]), /integers 0\.\.8191/);
    assert.throws(() => n.setAffinity('0' as unknown as number[]), /non-empty array/);
  } finally {
    n.setAffinity(before);
  }
  assert.deepEqual(n.getAffinity(), before);
  assert.deepEqual(new Set(threadCpus()).size, 1);
});
