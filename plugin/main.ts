// kubectl-tpfleet: the `kubectl tpfleet` plugin (kubectl runs any `kubectl-<name>` on the PATH).
// Read-only: it only gets and lists, through the API server with the user's kubeconfig.
//   kubectl tpfleet status [-n NS]            fleets, nodes, state, backend, connections, last error
//   kubectl tpfleet rules NODE                the rule set and routing the node enforces
//   kubectl tpfleet why POD [-n NS] [--to IP:PORT]   is this pod's traffic intercepted, where, by what
// Built into one file by `npm run build:plugin` (esbuild, plugin/build.ts); docs/kubectl-plugin.md.
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { errorMessage } from '../api/errors.ts';
import { parseNodeConfigText } from '../api/load.ts';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { fleetsOnNode, rules } from './rules.ts';
import { formatStatus, type Fleet } from './status.ts';
import { explain, parseTarget, type FleetFacts, type PodFacts } from './why.ts';

const USAGE = `usage: kubectl tpfleet status [-n NAMESPACE | -A]
       kubectl tpfleet rules NODE
       kubectl tpfleet why POD [-n NAMESPACE] [--to IP:PORT]
flags: --kubeconfig FILE, --context NAME (default: $KUBECONFIG or ~/.kube/config, as kubectl)`;

class UsageError extends Error {}

function client(kubeconfig: string | undefined, context: string | undefined): KubeClient {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else kc.loadFromDefault();
  if (context) kc.setCurrentContext(context);
  return new KubeClient(kc, 'kubectl-tpfleet');
}

type Pod = KubeObject & {
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { podIPs?: { ip: string }[]; podIP?: string };
};
type DaemonSet = KubeObject & {
  spec?: { template?: { spec?: { volumes?: { name: string; configMap?: { name: string } }[] } } };
};

/** The NodeConfig of the fleet active on a node, from its ConfigMap (named by its DaemonSet's config volume). */
async function fleetOn(c: KubeClient, node: string): Promise<FleetFacts | undefined> {
  const f = (await fleetsOnNode(c, node)).find((x) => x.state === 'Active');
  if (!f?.selector) return undefined;
  const ds = (await c.list(`/apis/apps/v1/namespaces/${f.namespace}/daemonsets`, { labelSelector: f.selector }))
    .items as DaemonSet[];
  const cm = ds.flatMap((d) => d.spec?.template?.spec?.volumes ?? []).find((v) => v.name === 'config' && v.configMap)
    ?.configMap?.name;
  if (!cm) throw new Error(`fleet ${f.namespace}/${f.name}: no DaemonSet with a config volume`);
  const map = await c.get<KubeObject & { data?: Record<string, string> }>(
    `/api/v1/namespaces/${f.namespace}/configmaps/${cm}`,
  );
  const text = map?.data?.['nodeconfig.yaml'];
  if (!text) throw new Error(`fleet ${f.namespace}/${f.name}: ConfigMap ${cm} has no nodeconfig.yaml`);
  const config = parseNodeConfigText(text, `ConfigMap ${f.namespace}/${cm}`);
  return { name: `${f.namespace}/${f.name}`, interception: config.interception, listenPort: config.proxy.listenPort };
}

async function why(c: KubeClient, namespace: string, name: string, to: string | undefined): Promise<string> {
  const target = to === undefined ? undefined : parseTarget(to);
  if (typeof target === 'string') throw new UsageError(target);
  const pod = await c.get<Pod>(`/api/v1/namespaces/${namespace}/pods/${name}`);
  if (!pod) throw new Error(`pod ${namespace}/${name} not found`);
  const facts: PodFacts = {
    namespace,
    name,
    nodeName: pod.spec?.nodeName,
    hostNetwork: pod.spec?.hostNetwork,
    podIPs: pod.status?.podIPs?.map((p) => p.ip) ?? (pod.status?.podIP ? [pod.status.podIP] : []),
  };
  const fleet = facts.nodeName && !facts.hostNetwork ? await fleetOn(c, facts.nodeName) : undefined;
  return `${explain(facts, fleet, target).lines.join('\n')}\n`;
}

export async function run(argv: string[]): Promise<string> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      namespace: { type: 'string', short: 'n' },
      'all-namespaces': { type: 'boolean', short: 'A' },
      kubeconfig: { type: 'string' },
      context: { type: 'string' },
      to: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [cmd, arg, ...extra] = positionals;
  if (values.help) return `${USAGE}\n`;
  if (!cmd) throw new UsageError(USAGE);
  if (extra.length) throw new UsageError(`unexpected arguments: ${extra.join(' ')}\n${USAGE}`);
  const c = client(values.kubeconfig, values.context);
  if (cmd === 'status') {
    const path =
      values.namespace && !values['all-namespaces']
        ? `/apis/tpfleet.io/v1alpha1/namespaces/${values.namespace}/transparentproxies`
        : '/apis/tpfleet.io/v1alpha1/transparentproxies';
    return formatStatus((await c.list(path)).items as unknown as Fleet[]);
  }
  if (cmd === 'rules') {
    if (!arg) throw new UsageError(`rules: which NODE?\n${USAGE}`);
    return rules(c, arg);
  }
  if (cmd === 'why') {
    if (!arg) throw new UsageError(`why: which POD?\n${USAGE}`);
    return why(c, values.namespace ?? 'default', arg, values.to);
  }
  throw new UsageError(`unknown command "${cmd}"\n${USAGE}`);
}

/** Exit codes: 0 ok, 1 the API answered an error, 2 usage. */
export async function main(argv: string[]): Promise<number> {
  try {
    process.stdout.write(await run(argv));
    return 0;
  } catch (e) {
    process.stderr.write(`kubectl-tpfleet: ${errorMessage(e)}\n`);
    return e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1;
  }
}

if (import.meta.filename === process.argv[1] || process.argv[1]?.endsWith('kubectl-tpfleet'))
  process.exitCode = await main(process.argv.slice(2));
