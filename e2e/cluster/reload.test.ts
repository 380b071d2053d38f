// Reload in place on the local-real cluster (issue 15, ADR 0014): real kubelets and containerd, the
// operator and the DaemonSet as users install them. Under load — 500 long-lived checksummed streams
// from a client pod on the active node through its sidecar, and a prober connecting every 100 ms —
// 20 successive spec changes (exclusion CIDRs, ports, timeouts, limits, log level, routing) are
// each enforced on the node (status.nodes[].configHash) within 5 s, with 0 streams reset, every probe
// answered and the proxy pod never replaced; a change the node refuses (a routing table another owner
// uses there) leaves the previous config in force and is reported in status; the rules after the last
// change are byte-identical to those a new pod's fresh apply of the final config installs, and the one
// image change at the end rolls the pod as before.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildImages } from '../../images/images.ts';
import { activeLabelKey } from '../../operator/render/names.ts';
import { installChart, type Installed } from './install.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { localRealProvider, type LocalRealCluster } from './local-real.ts';
import type { BuiltImage } from './provider.ts';
import { nodeRuleset, pod, startProber, startServer } from './traffic.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');
const TP = 'rl';
const CANDIDATE = 'tpfleet.io/proxy-candidate';
const STREAMS = 500;
/** Long enough for the 20 changes and the refusal on a loaded 2-core machine; the test checks it was. */
const LOAD_SECONDS = 150;

/** Answers each connection with one JSON line, then echoes every byte (half-close honoured). */
const ECHO_JS = `const net=require('net');net.createServer({allowHalfOpen:true},s=>{s.on('error',()=>s.destroy());s.write(JSON.stringify({dst:s.localAddress+':'+s.localPort})+'\\n');s.pipe(s)}).listen(8080,'::');`;
/**
 * $COUNT connections to $TARGET, opened in batches of 50; each writes 512 random bytes every 200 ms
 * (staggered) for $SECONDS, then half-closes and waits for its echo to end; prints one line
 * {connections, ok, reset, mismatch, bytes, errors}: ok = clean end and SHA-256 of the echo equal.
 */
const STREAMS_JS = `const net=require('net'),c=require('crypto');const t=process.env.TARGET,i=t.lastIndexOf(':'),host=t.slice(0,i),port=+t.slice(i+1);const N=+process.env.COUNT,S=+process.env.SECONDS;let stopping=false;const all=[];const open=()=>new Promise((res,rej)=>{const s=net.connect({host,port,allowHalfOpen:true,noDelay:true});const o={s,sent:c.createHash('sha256'),got:c.createHash('sha256'),hdr:false,bytes:0,ended:false,failed:null};const to=setTimeout(()=>rej(new Error('open timeout')),20000);s.on('error',e=>{o.failed=o.failed||e.code||e.message;rej(e)});s.on('data',d=>{let b=d;if(!o.hdr){const n=b.indexOf(10);if(n<0)return;o.hdr=true;b=b.subarray(n+1);clearTimeout(to);res(o)}o.got.update(b);o.bytes+=b.length});s.on('end',()=>{o.ended=true;if(!stopping)o.failed=o.failed||'ended early'});s.on('close',()=>{if(!o.ended)o.failed=o.failed||'closed'})});(async()=>{for(let k=0;k<N;k+=50){const b=await Promise.allSettled(Array.from({length:Math.min(50,N-k)},open));for(const r of b){if(r.status==='rejected'){console.log(JSON.stringify({ready:false,error:String(r.reason&&r.reason.message)}));process.exit(1)}all.push(r.value)}}console.log(JSON.stringify({ready:true,open:all.length}));all.forEach((o,j)=>setTimeout(()=>{const w=()=>{if(stopping||o.failed)return;const b=c.randomBytes(512);o.sent.update(b);o.s.write(b)};w();o.t=setInterval(w,200)},(j*200)/all.length));await new Promise(r=>setTimeout(r,S*1000));stopping=true;for(const o of all){clearInterval(o.t);o.s.end()}const dl=Date.now()+15000;while(all.some(o=>!o.ended&&!o.failed)&&Date.now()<dl)await new Promise(r=>setTimeout(r,50));const errors={};let ok=0,reset=0,mismatch=0,bytes=0;for(const o of all){bytes+=o.bytes;const f=o.failed||(o.ended?null:'no end after half-close');if(f){reset++;errors[f]=(errors[f]||0)+1}else if(o.sent.digest('hex')===o.got.digest('hex'))ok++;else mismatch++;o.s.destroy()}console.log(JSON.stringify({connections:all.length,ok,reset,mismatch,bytes,errors}));process.exit(0)})();`;

interface PodObj {
  metadata: { name: string; uid: string };
  spec: { nodeName?: string };
  status: { phase?: string; conditions?: { type: string; status: string }[] };
}
type Spec = Record<string, any>;
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

function transparentProxy(ns: string, spec: Spec) {
  return { apiVersion: 'tpfleet.io/v1alpha1', kind: 'TransparentProxy', metadata: { name: TP, namespace: ns }, spec };
}

/** Our rules and routing on a node: the tpfleet lines of every backend, and our ip rules. */
async function ours(c: LocalRealCluster, node: string): Promise<string> {
  const rules = (await nodeRuleset(c, node))
    .replace(/counter packets \d+ bytes \d+/g, 'counter')
    .replace(/\[\d+:\d+\]/g, '[]');
  const nft = /table inet tpfleet \{[\s\S]*?\n\}/.exec(rules)?.[0] ?? '';
  const ipt = rules.split('\n').filter((l) => /TPFLEET/.test(l));
  const ipRules = (await c.nodeExec!(node, ['ip', 'rule', 'show'])).split('\n').filter((l) => /fwmark/.test(l));
  return [nft, ...ipt, ...ipRules].join('\n');
}

describe('reload in place on the local-real cluster', { concurrency: false }, async () => {
  const reason = await localRealProvider.unavailable();
  if (reason) {
    it('runs only as root with the local-real prerequisites', (t) => t.skip(reason));
    return;
  }
  let c: LocalRealCluster, inst: Installed, images: { operator: BuiltImage; node: BuiltImage };
  let node = '',
    workload = '';
  before(async () => {
    const built = await buildImages(['operator', 'node']);
    images = {
      operator: built.find((b) => b.ref.includes('operator'))!,
      node: built.find((b) => b.ref.includes('node'))!,
    };
    c = await localRealProvider.create(KIND_CONFIG);
    await c.loadImages([images.operator, images.node]);
    workload = c.nodes.find((n) => n.role === 'worker' && n.labels[CANDIDATE] !== 'true')!.name;
    inst = await installChart(c, images);
  });
  after(async () => {
    await c?.delete();
  });

  const tp = () => kubectlJson(c, ['get', 'transparentproxy', '-n', inst.fleetNamespace, TP]);
  const fleetPods = async () =>
    (
      await kubectlJson<{ items: PodObj[] }>(c, [
        'get',
        'pods',
        '-n',
        inst.fleetNamespace,
        '-l',
        `app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=${TP}`,
      ])
    ).items;
  const nodeStatus = (o: any) => o.status?.nodes?.find((n: { name: string }) => n.name === node);
  const patch = (spec: Spec) =>
    kubectl(c, [
      'patch',
      'transparentproxy',
      TP,
      '-n',
      inst.fleetNamespace,
      '--type=merge',
      '-p',
      JSON.stringify({ spec }),
    ]);
  const cmHash = async () =>
    (await kubectlJson(c, ['get', 'configmap', '-n', inst.fleetNamespace, `${TP}-nodeconfig`])).metadata.annotations[
      'tpfleet.io/config-hash'
    ] as string;
  /** Patches, then waits until the node enforces the new config hash; resolves with the milliseconds. */
  const change = async (spec: Spec, what: string): Promise<number> => {
    const before = await cmHash();
    const t0 = Date.now();
    await patch(spec);
    const hash = await waitFor(
      `${what}: a new config hash`,
      async () => {
        const h = await cmHash();
        return (h !== before && h) || undefined;
      },
      10_000,
      50,
    );
    await waitFor(
      `${what}: ${node} enforces ${hash}`,
      async () => nodeStatus(await tp())?.configHash === hash || undefined,
      10_000,
      50,
    );
    return Date.now() - t0;
  };

  it('20 spec changes under load reload in place; a refused change keeps the config; the image change rolls', async (t) => {
    const ns = inst.fleetNamespace;
    let spec: Spec = {
      nodeSelector: { [CANDIDATE]: 'true' },
      replicas: 1,
      interception: { ports: [{ port: 8080 }], failurePolicy: 'FailClosed' },
      proxy: { metricsPort: 15190, timeouts: { drain: '2s' }, logLevel: 'info' },
      tuning: { sysctls: { profile: 'none', overrides: { 'net.ipv4.tcp_fin_timeout': 19 } } },
    };
    await kubectl(c, ['apply', '-f', '-'], JSON.stringify(transparentProxy(ns, spec)));
    const [first] = await waitFor(
      'one Ready proxy pod whose node reports its config hash',
      async () => {
        const ready = (await fleetPods()).filter((p) =>
          p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True'),
        );
        if (ready.length !== 1) return undefined;
        node = ready[0]!.spec.nodeName!;
        return (nodeStatus(await tp())?.configHash && ready) || undefined;
      },
      180_000,
    );
    const uid = first!.metadata.uid;
    assert.equal((await kubectlJson(c, ['get', 'node', node])).metadata.labels[activeLabelKey(ns, TP)], 'true');

    const proberTarget = `${await startServer(c, 'default', workload, inst.nodeImage, 'tpfleet-rl-server')}:8080`;
    const echoIp = await (async () => {
      await kubectl(
        c,
        ['apply', '-f', '-'],
        JSON.stringify(pod('tpfleet-rl-echo', 'default', workload, inst.nodeImage, ECHO_JS)),
      );
      return waitFor(
        'the echo pod',
        async () => {
          const p = await kubectlJson(c, ['get', 'pod', '-n', 'default', 'tpfleet-rl-echo']);
          return (p.status?.phase === 'Running' && p.status.podIP) || undefined;
        },
        120_000,
      );
    })();
    const streamsPod = pod('tpfleet-rl-streams', 'default', node, inst.nodeImage, STREAMS_JS, {
      TARGET: `${echoIp}:8080`,
      COUNT: String(STREAMS),
      SECONDS: String(LOAD_SECONDS),
    });
    await kubectl(c, ['apply', '-f', '-'], JSON.stringify(streamsPod));
    await waitFor(
      'the streams to be open',
      async () => {
        const log = await kubectl(c, ['logs', '-n', 'default', 'tpfleet-rl-streams']).catch(() => '');
        if (log.includes('"ready":false')) throw new Error(`streams failed to open: ${log}`);
        return log.includes('"ready":true') || undefined;
      },
      120_000,
    );
    const loadStarted = Date.now();
    const prober = await startProber(c, 'default', node, inst.nodeImage, proberTarget, LOAD_SECONDS - 20);

    const I = (o: Spec) => ({ interception: { ...spec.interception, ...o } });
    const P = (o: Spec) => ({ proxy: { ...spec.proxy, ...o } });
    // net.* overrides apply in place (ADR 0020); a profile would add host-wide fs.file-max and roll.
    const T = (overrides: Spec) => ({ tuning: { sysctls: { profile: 'none', overrides } } });
    const sysctl = async (key: string) => (await c.nodeExec!(node, ['cat', `/proc/sys/${key}`])).trim();
    const somaxconnBefore = await sysctl('net/core/somaxconn');
    const changes: [string, Spec][] = [
      ['exclusion CIDR added', I({ destinations: { exclude: ['10.99.0.0/16'] } })],
      ['port added', I({ ports: [{ port: 8080 }, { port: 8081 }] })],
      ['idle timeout', P({ timeouts: { drain: '2s', idle: '600s' } })],
      ['log level debug', P({ logLevel: 'debug' })],
      ['tuning: two net.* sysctls', T({ 'net.core.somaxconn': 8192, 'net.ipv4.tcp_fin_timeout': 21 })],
      ['maxConnections', P({ maxConnections: 20000 })],
      ['second exclusion CIDR', I({ destinations: { exclude: ['10.99.0.0/16', '10.98.0.0/16'] } })],
      ['connect timeout', P({ timeouts: { drain: '2s', idle: '600s', connect: '3s' } })],
      ['local destinations', I({ localDestinations: true })],
      ['local destinations off', I({ localDestinations: false })],
      ['routing table', I({ routingTable: 2001 })],
      ['rule priority', I({ rulePriority: 32001 })],
      ['port range', I({ ports: [{ port: 8080 }, { port: 8081 }, { port: 9000, endPort: 9100 }] })],
      ['exclusion CIDR removed', I({ destinations: { exclude: ['10.98.0.0/16'] } })],
      ['third exclusion CIDR', I({ destinations: { exclude: ['10.98.0.0/16', '10.96.0.0/16'] } })],
      ['log level warn', P({ logLevel: 'warn' })],
      ['idle timeout again', P({ timeouts: { drain: '2s', idle: '300s', connect: '3s' } })],
      ['source exclusion', I({ sources: { exclude: ['10.97.0.0/16'] } })],
      // A merge patch: null removes the key from the spec (its original value comes back).
      ['tuning: one changed, one left the spec', T({ 'net.core.somaxconn': null, 'net.ipv4.tcp_fin_timeout': 25 })],
      ['port removed', I({ ports: [{ port: 8080 }, { port: 9000, endPort: 9100 }] })],
    ];
    const enforced: number[] = [];
    for (const [what, s] of changes) {
      spec = { ...spec, ...s };
      enforced.push(await change(s, what));
    }
    process.stdout.write(
      `local-real reload in place: ${enforced.length} changes, patch to enforced on ${node}: p50 ${pct(enforced, 50)} ms, p99 ${pct(enforced, 99)} ms, max ${Math.max(...enforced)} ms (${enforced.join(', ')})\n`,
    );
    assert.ok(Math.max(...enforced) < 5000, `each change enforced within 5 s: ${enforced.join(', ')}`);
    assert.equal(await sysctl('net/ipv4/tcp_fin_timeout'), '25', 'the tuning changes are enforced on the node');
    assert.equal(await sysctl('net/core/somaxconn'), somaxconnBefore, 'a key that left the spec: as before');

    // Refused: a routing table another owner uses on this node.
    const inForce = await ours(c, node);
    const hash = nodeStatus(await tp()).configHash;
    await c.nodeExec!(node, ['ip', 'route', 'add', 'local', '10.77.0.1', 'dev', 'lo', 'table', '3333']);
    await patch(I({ routingTable: 3333 }));
    const refused = await waitFor(
      'Degraded ConfigRefused',
      async () => {
        const o = await tp();
        const d = o.status?.conditions?.find((x: { type: string }) => x.type === 'Degraded');
        return (d?.reason === 'ConfigRefused' && o) || undefined;
      },
      30_000,
    );
    assert.equal(nodeStatus(refused).configHash, hash, 'the node keeps its last good config');
    assert.match(
      nodeStatus(refused).configRefused,
      /changing interception\.routingTable: [\s\S]*table 3333 already holds a route we did not create/,
    );
    assert.match(
      refused.status.conditions.find((x: { type: string }) => x.type === 'Degraded').message,
      new RegExp(`${node}: changing interception\\.routingTable`),
    );
    assert.equal(await ours(c, node), inForce, 'nothing of the refused change is applied');
    await change(I({ routingTable: 2001 }), 'routing table back');
    await c.nodeExec!(node, ['ip', 'route', 'del', 'local', '10.77.0.1', 'dev', 'lo', 'table', '3333']);
    const changesDoneAfter = Date.now() - loadStarted;
    assert.ok(
      changesDoneAfter < (LOAD_SECONDS - 20) * 1000,
      `the changes ran while the load did (${changesDoneAfter} ms)`,
    );

    const probes = await prober.results();
    await waitFor(
      'the streams to finish',
      async () =>
        (await kubectlJson(c, ['get', 'pod', '-n', 'default', 'tpfleet-rl-streams'])).status?.phase === 'Succeeded' ||
        undefined,
      (LOAD_SECONDS + 60) * 1000,
    );
    const result = JSON.parse(
      (await kubectl(c, ['logs', '-n', 'default', 'tpfleet-rl-streams'])).trim().split('\n').pop()!,
    );
    process.stdout.write(
      `local-real reload: streams ${JSON.stringify(result)}; probes ${probes.length}, failed ${probes.filter((p) => !p.ok).length}\n`,
    );
    assert.equal(result.connections, STREAMS);
    assert.equal(result.reset, 0, `0 established connections reset: ${JSON.stringify(result.errors)}`);
    assert.equal(result.mismatch, 0, 'every stream checksummed equal');
    assert.ok(probes.length > 100, `the prober ran (${probes.length})`);
    assert.equal(probes.filter((p) => !p.ok).length, 0, 'every prober attempt answered');
    const pods = await fleetPods();
    assert.deepEqual(
      pods.map((p) => p.metadata.uid),
      [uid],
      'the proxy pod was never replaced',
    );

    // The image change rolls (a second tag of the same image): the new pod's init applies the final
    // config afresh, and its rules are those the 20 reloads left, byte for byte.
    const reloaded = await ours(c, node);
    const ref2 = `${images.node.ref.slice(0, images.node.ref.lastIndexOf(':'))}:reload-e2e`;
    for (const n of c.real) await n.ctr(['images', 'tag', '--force', images.node.ref, ref2]);
    await patch({ proxy: { ...spec.proxy, image: ref2 } });
    const rolled = await waitFor(
      'the image change rolls the pod',
      async () => {
        const ps = await fleetPods();
        const p = ps.find(
          (x) => x.metadata.uid !== uid && x.status.conditions?.some((k) => k.type === 'Ready' && k.status === 'True'),
        );
        return (ps.length === 1 && p && nodeStatus(await tp())?.configHash && p) || undefined;
      },
      180_000,
    );
    assert.notEqual(rolled.metadata.uid, uid);
    assert.equal(await ours(c, node), reloaded, 'rules after the reloads = a fresh apply of the final config');
    assert.equal(await sysctl('net/ipv4/tcp_fin_timeout'), '25', 'and so is the tuning');
    t.diagnostic(`enforced p50 ${pct(enforced, 50)} ms p99 ${pct(enforced, 99)} ms`);
  });
});
