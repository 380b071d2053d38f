// The real helm (tools/k8s/helm, built on first use by ensureBinaries) for the chart tests.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ensureBinaries } from '../../e2e/testenv/binaries.ts';
import { chartDir } from './chart.ts';

export { chartDir };
export const RELEASE = 'tpfleet';
export const RELEASE_NS = 'tpfleet-system';

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs helm with argv (never a shell); resolves with the exit code instead of throwing. */
export async function runHelm(args: readonly string[]): Promise<HelmResult> {
  const bin = join(await ensureBinaries(['helm']), 'helm');
  return new Promise((resolve, reject) => {
    // An empty HELM_* home: no user repositories, plugins or registry logins leak into the tests.
    execFile(
      bin,
      args,
      {
        maxBuffer: 32 << 20,
        env: {
          ...process.env,
          HELM_CONFIG_HOME: '/nonexistent',
          HELM_DATA_HOME: '/nonexistent',
          HELM_CACHE_HOME: '/nonexistent',
        },
      },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(err);
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
  });
}

/** helm that must succeed: resolves with stdout, rejects with helm's stderr. */
export async function helm(args: readonly string[]): Promise<string> {
  const r = await runHelm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

export interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: any;
}

/** `helm template` of the chart as release tpfleet in tpfleet-system; the text and its documents. */
export async function template(extra: readonly string[] = []): Promise<{ text: string; docs: Doc[] }> {
  const text = await helm(['template', RELEASE, chartDir, '--namespace', RELEASE_NS, ...extra]);
  const docs = parseAllDocuments(text)
    .map((d) => d.toJS() as Doc)
    .filter((d) => d?.kind);
  return { text, docs };
}

export function find(docs: readonly Doc[], kind: string, name?: string): Doc {
  const d = docs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!d)
    throw new Error(
      `no ${kind}${name ? ` ${name}` : ''} rendered (have ${docs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')})`,
    );
  return d;
}
