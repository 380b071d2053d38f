import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { AgentCondition, TuningPublisher } from './tuning-publish.ts';
import { trafficTick } from './traffic-publish.ts';

const log = pino({ level: 'silent' });
const metrics = (n: number) => async () =>
  `# TYPE tpfleet_proxy_connections_active gauge\ntpfleet_proxy_connections_active ${n}\n`;

test('a tick publishes the first report and then only significant changes', async () => {
  const sent: AgentCondition[] = [];
  // The publisher's own API behaviour is tested in tuning-publish's API-server tier; here only what is sent.
  const pub = {
    publish: async (c: AgentCondition) => {
      sent.push(c);
      return true;
    },
  } as unknown as TuningPublisher;
  let last = await trafficTick(metrics(100), 'nftables', pub, undefined, log);
  assert.deepEqual(
    sent.map((c) => c.message),
    ['backend=nftables verified=true connections=100 errors=0'],
  );
  last = await trafficTick(metrics(105), 'nftables', pub, last, log);
  assert.equal(sent.length, 1, 'a wobble is not written');
  assert.equal(last?.connections, 100, 'the published value is kept as the reference');
  last = await trafficTick(metrics(200), 'nftables', pub, last, log);
  assert.equal(sent.at(-1)?.message, 'backend=nftables verified=true connections=200 errors=0');
  assert.equal(sent.at(-1)?.type, 'tpfleet.io/Traffic');
  const down = async () => {
    throw new Error('connection refused');
  };
  assert.equal(await trafficTick(down, 'nftables', pub, last, log), last, 'an unreadable sidecar changes nothing');
  assert.equal(await trafficTick(metrics(0), undefined, pub, last, log), last, 'nothing installed: nothing said');
});
