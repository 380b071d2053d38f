// Connection load for the autoscaling tests (issue 16): a server pod that holds every connection
// open, and a client pod that opens a bounded number of long-lived connections through the node
// it runs on and keeps them until the pod is deleted. Fixed scripts; parameters only through env
// (traffic.ts's rule). The client logs one JSON line per change: {"open":n,"failed":m}.
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { pod } from './traffic.ts';

type Kube = { kubeconfigPath: string };
/** Upper bound on the connections one load pod opens (each costs a socket on both ends and in the sidecar). */
export const MAX_LOAD = 1000;

/** Listens on $PORT; answers each connection with {"src","dst"} and keeps it open until the client closes. */
const HOLD_SERVER_JS = `const net=require('net');net.createServer(s=>{s.on('error',()=>{});s.write(JSON.stringify({src:s.remoteAddress+':'+s.remotePort,dst:s.localAddress+':'+s.localPort})+'\\n')}).listen(+process.env.PORT,'::');`;
/**
 * Opens $COUNT connections to $TARGET, 20 in flight at a time; a connection counts as open once
 * the server's line arrived (so it crossed the proxy both ways). Logs open/failed counts when they
 * change (at most every 200 ms) and keeps every socket until the pod ends.
 */
const LOAD_CLIENT_JS = `const net=require('net');const t=process.env.TARGET;const i=t.lastIndexOf(':');const n=+process.env.COUNT;let open=0,failed=0,started=0,last='';const report=()=>{const l=JSON.stringify({open,failed});if(l!==last){last=l;console.log(l)}};setInterval(report,200);const one=()=>{if(started>=n)return;started++;const s=net.connect(+t.slice(i+1),t.slice(0,i));let ok=false;s.setTimeout(10000,()=>{if(!ok)s.destroy(new Error('timeout'))});s.on('data',()=>{if(!ok){ok=true;open++;s.setTimeout(0);one()}});s.on('error',()=>{});s.on('close',()=>{if(ok)open--;else{failed++;one()}})};for(let k=0;k<20;k++)one();`;

export async function startHoldServer(c: Kube, ns: string, node: string, image: string, port: number) {
  const name = 'tpfleet-e2e-hold';
  await kubectl(
    c,
    ['apply', '-f', '-'],
    JSON.stringify(pod(name, ns, node, image, HOLD_SERVER_JS, { PORT: String(port) })),
  );
  return waitFor(
    'the hold server to run',
    async () => {
      const p = await kubectlJson(c, ['get', 'pod', '-n', ns, name]);
      return p.status?.phase === 'Running' && p.status.podIP ? (p.status.podIP as string) : undefined;
    },
    120_000,
  );
}

export interface Load {
  name: string;
  /** Waits until `want` connections are open (throws on failures or timeout); returns when. */
  allOpen(timeoutMs?: number): Promise<number>;
  /** Deletes the pod: every connection closes. */
  close(): Promise<void>;
}

export async function startLoad(
  c: Kube,
  ns: string,
  node: string,
  image: string,
  target: string,
  count: number,
  name = 'tpfleet-e2e-load',
): Promise<Load> {
  if (!Number.isInteger(count) || count < 1 || count > MAX_LOAD)
    throw new Error(`load: count ${count} not in 1..${MAX_LOAD}`);
  await kubectl(
    c,
    ['apply', '-f', '-'],
    JSON.stringify(pod(name, ns, node, image, LOAD_CLIENT_JS, { TARGET: target, COUNT: String(count) })),
  );
  return {
    name,
    allOpen: (timeoutMs = 180_000) =>
      waitFor(
        `${count} connections open from ${name}`,
        async () => {
          const p = await kubectlJson(c, ['get', 'pod', '-n', ns, name]);
          if (['Succeeded', 'Failed'].includes(p.status?.phase)) throw new Error(`${name} ended: ${p.status.phase}`);
          if (p.status?.phase !== 'Running') throw new Error(`${name}: ${p.status?.phase}`);
          const last = (await kubectl(c, ['logs', '-n', ns, name])).trim().split('\n').pop() || '{}';
          const s = JSON.parse(last) as { open?: number; failed?: number };
          if ((s.failed ?? 0) > 0) throw new Error(`${name}: ${s.failed} connections failed (${last})`);
          if (s.open !== count) throw new Error(`${name}: ${last}`);
          return Date.now();
        },
        timeoutMs,
        1000,
      ),
    close: async () => {
      await kubectl(c, ['delete', 'pod', '-n', ns, name, '--wait=true', '--timeout=60s']);
    },
  };
}
