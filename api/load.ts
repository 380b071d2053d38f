// Reading a NodeConfig document: YAML → zod → typed value, or a ConfigError whose message names
// every offending field (e.g. "interception.ports[0].endPort: must be >= port").
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { NodeConfig } from './nodeconfig.ts';
import { errorMessage } from './errors.ts';

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
    options?: ErrorOptions,
  ) {
    super(`invalid config ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`, options);
    this.name = 'ConfigError';
  }
}

/** "a.b[0].c" from a zod issue path. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) out += typeof k === 'number' ? `[${k}]` : `${out ? '.' : ''}${String(k)}`;
  return out || '(document)';
}

export function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`);
}

export function parseNodeConfig(doc: unknown, source = '(inline)'): NodeConfig {
  const r = NodeConfig.safeParse(doc);
  if (!r.success) throw new ConfigError(source, formatIssues(r.error));
  return r.data;
}

export function parseNodeConfigText(text: string, source = '(inline)'): NodeConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(source, [`not valid YAML: ${errorMessage(e)}`], { cause: e });
  }
  return parseNodeConfig(doc, source);
}

export function loadNodeConfig(path: string): NodeConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(path, [`cannot read: ${errorMessage(e)}`], { cause: e });
  }
  return parseNodeConfigText(text, path);
}
