import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIperf3, parseWrk } from './measure.ts';

const WRK = `Running 10s test @ http://10.1.2.2/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  612.00us  17.80ms   80.11%
    Req/Sec    26.71k     1.92k   31.02k    70.50%
  Latency Distribution
     50%    1.10ms
     75%    1.45ms
     90%    1.90ms
     99%    3.41ms
  531527 requests in 10.00s, 74.02MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:  53145.52
Transfer/sec:      7.40MB
`;

test('wrk output: rps, p99 in ms, errors summed', () => {
  assert.deepEqual(parseWrk(WRK), { rps: 53145.52, p99ms: 3.41, errors: 9, requests: 531527 });
  assert.equal(parseWrk(WRK.replace('3.41ms', '812.00us')).p99ms, 0.812);
  assert.throws(() => parseWrk('unable to connect to 10.1.2.2:80 Connection refused'), /cannot parse/);
});

test('iperf3 JSON: received Gbit/s, errors surface', () => {
  assert.equal(parseIperf3('{"end":{"sum_received":{"bits_per_second":6.5e9}}}'), 6.5);
  assert.throws(() => parseIperf3('{"error":"unable to connect to server: Connection refused"}'), /Connection refused/);
  assert.throws(() => parseIperf3('{"end":{}}'), /no sum_received/);
});
