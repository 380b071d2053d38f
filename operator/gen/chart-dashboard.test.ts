// The chart's Grafana dashboard (metrics.grafanaDashboard, ADR 0022) with the real helm: off by
// default, a ConfigMap labelled for Grafana's dashboard sidecar when on, and every panel reads a
// series the sidecar really exports (names read from sidecar/metrics.ts as text: this test must not
// import another binary's folder). That each query returns data is e2e/cluster/autoscale.test.ts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { find, template } from './helm.testkit.ts';

const root = join(import.meta.dirname, '..', '..');
const sidecarMetrics = new Set(
  [...readFileSync(join(root, 'sidecar', 'metrics.ts'), 'utf8').matchAll(/(?:name: '|\$\{PREFIX\})([a-z_]+)/g)].map(
    (m) => `tpfleet_proxy_${m[1]}`,
  ),
);

interface Panel {
  title: string;
  targets: { expr: string }[];
}

test('the Grafana dashboard is off by default', async () => {
  const { docs } = await template();
  assert.equal(
    docs.filter((d) => d.kind === 'ConfigMap' && d.metadata.name.endsWith('-dashboard')).length,
    0,
    'no dashboard ConfigMap unless metrics.grafanaDashboard.enabled',
  );
});

test("the Grafana dashboard: a ConfigMap for Grafana's sidecar; its panels read the sidecar's real series", async () => {
  const { docs } = await template([
    '--set',
    'metrics.grafanaDashboard.enabled=true',
    '--set',
    'metrics.grafanaDashboard.namespace=monitoring',
  ]);
  const cm = find(docs, 'ConfigMap', 'tpfleet-dashboard');
  assert.equal(cm.metadata.namespace, 'monitoring');
  assert.equal(cm.metadata.labels?.grafana_dashboard, '1', "kube-prometheus-stack's sidecar label by default");
  const dash = JSON.parse(cm.data['tpfleet.json']) as { uid: string; panels: Panel[] };
  assert.equal(dash.uid, 'tpfleet-fleet');
  const titles = dash.panels.map((p) => p.title).join('\n');
  for (const want of [
    /connections per node/i,
    /accepts/i,
    /by result/i,
    /by reason/i,
    /bytes/i,
    /latency/i,
    /replicas/i,
  ])
    assert.match(titles, want);
  const used = new Set(
    dash.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/tpfleet_proxy_[a-z_]+/g) ?? [])),
  );
  assert.ok(used.size >= 6, `panels use ${[...used].join(', ')}`);
  for (const m of used) {
    const base = m.replace(/_(bucket|sum|count)$/, '');
    assert.ok(sidecarMetrics.has(m) || sidecarMetrics.has(base), `${m} is exported by the sidecar`);
  }
});
