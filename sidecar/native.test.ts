// The native addon's own contract: the engine starts or fails like a Node system call (and leaves
// nothing behind), refuses bad arguments with type errors, reports its counters and heartbeats,
// and stops; CPU pinning of the calling process.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { isRoot, privilegedSkipReason } from '../e2e/netns.ts';
import { native, type NativeError, type StartOptions } from './native/index.ts';

/** This process's descriptors and what each points to (socket:[inode], anon_inode:[eventpoll], ...). */
const openFds = (): Set<string> =>
  new Set(
    readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        const target = readlinkSync(`/proc/self/fd/${fd}`);
        return /^\/proc\/\d+\/fd$/.test(target) ? [] : [`${fd} ${target}`]; // the listing's own descriptor
      } catch {
        return []; // the listing's own descriptor, already closed again
      }
    }),
  );
/** Descriptors open now that were not open at `before`: what a call left behind. */
const leaked = (before: Set<string>): string[] => [...openFds()].filter((f) => !before.has(f));
const threadsNamed = (re: RegExp): number =>
  readdirSync('/proc/self/task').filter((tid) => re.test(readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()))
    .length;

const options = (over: Partial<StartOptions> = {}): StartOptions => ({
  threads: 2,
  listenPort: 0,
  backlog: 16,
  ipv4: true,
  ipv6: false,
  keepClientIp: false,
  cpus: null,
  connectTimeoutMs: 1000,
  idleTimeoutMs: 60_000,
  holdTimeoutMs: 1000,
  maxConnections: 10,
  hook: false,
  peek: false,
  logConnections: false,
  splice: true,
  audit: false,
  auditPerSecond: 100,
  udp: false,
  udpIdleTimeoutMs: 60_000,
  udpMaxFlows: 1000,
  faultKind: 0,
  faultAfterMs: 0,
  ...over,
});

async function plainServer(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen({ port: 0, host: '0.0.0.0', exclusive: true }, r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

test('a start that fails throws a Node-style system error (.code, .syscall) and leaks no descriptor or thread', async () => {
  const { server, port } = await plainServer();
  try {
    const fds = openFds(),
      threads = threadsNamed(/^tpf-engine/);
    for (let i = 0; i < 20; i++) {
      assert.throws(
        () => native().engineStart(options({ listenPort: port }), () => {}),
        (e: NativeError) => {
          // Root gets as far as bind (the port is taken, without SO_REUSEPORT); others fail at
          // IP_TRANSPARENT, which needs CAP_NET_RAW or CAP_NET_ADMIN.
          const want = isRoot()
            ? { code: 'EADDRINUSE', syscall: 'bind' }
            : { code: 'EPERM', syscall: 'setsockopt(IP_TRANSPARENT)' };
          assert.equal(e.code, want.code);
          assert.equal(e.syscall, want.syscall);
          assert.ok(e.errno < 0);
          assert.match(e.message, new RegExp(want.code));
          return true;
        },
      );
    }
    assert.deepEqual(leaked(fds), []);
    assert.equal(threadsNamed(/^tpf-engine/), threads);
  } finally {
    await new Promise((r) => server.close(r)); // before the next test counts descriptors
  }
});

test('bad arguments are type errors naming the field, not crashes', () => {
  const n = native();
  assert.throws(() => n.engineStart(options({ threads: 0 }), () => {}), /threads must be an integer 1\.\.64/);
  assert.throws(
    () => n.engineStart(options({ connectTimeoutMs: 2 ** 31 }), () => {}),
    /connectTimeoutMs must be an integer 1\.\.2147483647/,
  );
  assert.throws(() => n.engineStart(options({ ipv4: false, ipv6: false }), () => {}), /at least one of ipv4 and ipv6/);
  assert.throws(() => n.engineStart(options({ cpus: [0] }), () => {}), /one CPU per thread/);
  assert.throws(
    () => n.engineStart({ ...options(), hook: 'yes' } as unknown as StartOptions, () => {}),
    /hook has the wrong type/,
  );
  assert.throws(
    () => n.engineStart(options(), 'not a function' as unknown as () => void),
    /onEvents must be a function/,
  );
  assert.throws(() => n.engineStats({} as never), /not an engine handle/);
});

test('a started engine: its threads, counters at zero, heartbeats that move, options changed in place, a clean stop', {
  skip: privilegedSkipReason(),
}, async () => {
  const n = native();
  const fds = openFds();
  const { handle, threads } = n.engineStart(options({ threads: 2 }), () => {});
  try {
    assert.deepEqual(threads, [
      { cpu: -1, pinned: true },
      { cpu: -1, pinned: true },
    ]);
    assert.equal(threadsNamed(/^tpf-engine-[01]$/), 2);
    const names = n.statNames();
    for (const s of [
      'accepted',
      'closed_ok',
      'err_other',
      'bytes_up',
      'relay_splice_bytes',
      'connect_b0',
      'connect_binf',
    ])
      assert.ok(names.includes(s), s);
    const stats = n.engineStats(handle);
    assert.equal(stats.length, names.length + 2, 'the counters, then open connections and UDP flows');
    assert.deepEqual([...stats], new Array(names.length + 2).fill(0));
    const b0 = [...n.engineHeartbeats(handle)];
    await new Promise((r) => setTimeout(r, 1300));
    const b1 = [...n.engineHeartbeats(handle)];
    for (const [i, b] of b1.entries()) assert.ok(b > b0[i]!, `thread ${i} turned (${b0[i]} -> ${b})`);
    n.engineSetOptions(handle, { maxConnections: 5, idleTimeoutMs: 1000 });
    assert.throws(() => n.engineSetOptions(handle, { maxConnections: 5, idleTimeoutMs: -1 }), /idleTimeoutMs/);
    assert.throws(() => n.engineDecide(handle, 1 as unknown as bigint, 0), /id must be a bigint/);
    assert.throws(() => n.engineDecide(handle, 1n, 9 as 0), /verdict must be 0\.\.3/);
    n.engineDecide(handle, 1n, 0); // no such held connection: ignored by its thread
  } finally {
    n.engineStop(handle);
  }
  assert.equal(threadsNamed(/^tpf-engine/), 0, 'every engine thread joined');
  assert.deepEqual(leaked(fds), [], 'listeners, epoll and eventfds closed');
  assert.throws(() => n.engineStats(handle), /the engine is stopped/);
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
