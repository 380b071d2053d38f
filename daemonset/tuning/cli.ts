// Stand-alone driver of the tuning engine (ops debugging, and the netns tests run it inside a
// namespace). Prints one JSON document. The node agent uses index.ts directly.
//   cli.ts facts   [--root /]
//   cli.ts plan    --spec tuning.yaml [--root /]
//   cli.ts apply   --spec tuning.yaml [--state-dir /run/tpfleet] [--dry-run] [--overwrite-drift]
//   cli.ts drift   [--state-dir ...]
//   cli.ts restore [--state-dir ...] [--dry-run] [--overwrite-drift]
// --spec holds the `tuning:` section (YAML or JSON); it is validated like NodeConfig's.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { formatIssues } from '../../api/load.ts';
import { Tuning } from '../../api/tuning.ts';
import { NODE_STATE_DIR } from '../../api/defaults.ts';
import { applyTuning, checkDrift, planTuning, readNodeFacts, restoreTuning } from './index.ts';
import { errorMessage } from '../../api/errors.ts';

function loadSpec(path: string | undefined): Tuning {
  if (!path) throw new Error('--spec is required');
  const r = Tuning.safeParse(parseYaml(readFileSync(path, 'utf8')));
  if (!r.success)
    throw new Error(
      `invalid tuning spec ${path}:\n${formatIssues(r.error)
        .map((p) => `  - tuning.${p}`)
        .join('\n')}`,
    );
  return r.data;
}

function main(argv: string[]): unknown {
  const { positionals, values: v } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      spec: { type: 'string' },
      'state-dir': { type: 'string', default: NODE_STATE_DIR },
      root: { type: 'string', default: '/' },
      'dry-run': { type: 'boolean', default: false },
      'overwrite-drift': { type: 'boolean', default: false },
    },
  });
  const o = { stateDir: v['state-dir']!, root: v.root!, dryRun: v['dry-run']!, overwriteDrift: v['overwrite-drift']! };
  switch (positionals[0]) {
    case 'facts':
      return readNodeFacts(o.root);
    case 'plan': {
      const t = loadSpec(v.spec);
      return planTuning(t, readNodeFacts(o.root, t.affinity.interfaces));
    }
    case 'apply': {
      const t = loadSpec(v.spec);
      const plan = planTuning(t, readNodeFacts(o.root, t.affinity.interfaces));
      return { plan, report: applyTuning(plan, o) };
    }
    case 'drift':
      return checkDrift(o);
    case 'restore':
      return restoreTuning(o);
    default:
      throw new Error(
        'usage: cli.ts facts|plan|apply|drift|restore [--spec file] [--state-dir dir] [--root dir] [--dry-run] [--overwrite-drift]',
      );
  }
}

try {
  process.stdout.write(`${JSON.stringify(main(process.argv.slice(2)), null, 2)}\n`);
} catch (e) {
  process.stderr.write(`${errorMessage(e)}\n`);
  process.exitCode = 1;
}
