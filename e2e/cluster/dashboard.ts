// The chart's Grafana dashboard (charts/tpfleet/dashboards/tpfleet.json) as PromQL a test can run:
// every panel target with Grafana's variables filled in as a user viewing one fleet has them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHART } from './install.ts';
import { waitFor } from './kube.ts';
import type { PromSample } from './local-monitoring.ts';

export interface PanelQuery {
  title: string;
  expr: string;
}

export function dashboardQueries(vars: {
  namespace: string;
  proxy: string;
  rateInterval: string;
  maxConnections: number;
}): PanelQuery[] {
  const dash = JSON.parse(readFileSync(join(CHART, 'dashboards', 'tpfleet.json'), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
  };
  const expand = (e: string) =>
    e
      .replaceAll('$namespace', vars.namespace)
      .replaceAll('$proxy', vars.proxy)
      .replaceAll('$__rate_interval', vars.rateInterval)
      .replaceAll('$maxConnections', String(vars.maxConnections));
  return dash.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: expand(t.expr) })));
}

/**
 * Waits until `q` returns at least one sample, every value a finite number (no NaN from an empty
 * rate), and `until` holds (a counter's increase reaches Prometheus one scrape later).
 */
export function panelData(
  query: (expr: string) => Promise<PromSample[]>,
  q: PanelQuery,
  until: (r: PromSample[]) => boolean = () => true,
): Promise<PromSample[]> {
  return waitFor(
    `panel "${q.title}" to return data: ${q.expr}`,
    async () => {
      const r = await query(q.expr);
      if (!r.length || !r.every((s) => Number.isFinite(Number(s.value[1]))) || !until(r))
        throw new Error(`got ${JSON.stringify(r)}`);
      return r;
    },
    60_000,
    2000,
  );
}
