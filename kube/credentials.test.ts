// The lean credentials the operator and the node agent use instead of client-node's KubeConfig:
// which kubeconfig is picked, and an exec credential plugin (a real script) whose token reaches a
// real HTTP server, reused until it nears its expiry.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { KubeClient } from './client.ts';
import { defaultKubeconfig, kubeconfigCredentials } from './credentials.ts';
import { execCredentials } from './kubeconfig-exec.ts';

function kubeconfig(dir: string, server: string, user: Record<string, unknown>): string {
  const file = path.join(dir, 'config');
  writeFileSync(
    file,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server } }],
      users: [{ name: 'u', user }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'x',
    }),
  );
  return file;
}

/** A server answering every request with the Authorization header it got. */
async function echoAuth(): Promise<{ url: string; close: () => void }> {
  const srv = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ metadata: { name: req.headers.authorization ?? '' } }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, close: () => srv.close() };
}

test('defaultKubeconfig: $KUBECONFIG, else ~/.kube/config when it exists, else in-cluster; several files refused', () => {
  const home = mkdtempSync(path.join(tmpdir(), 'tpfleet-home-'));
  try {
    assert.equal(defaultKubeconfig('/x/kc', home), '/x/kc');
    assert.equal(defaultKubeconfig(undefined, home), undefined);
    assert.equal(defaultKubeconfig('', home), undefined);
    mkdirSync(path.join(home, '.kube'));
    const file = kubeconfig(path.join(home, '.kube'), 'https://h', {});
    assert.equal(defaultKubeconfig(undefined, home), file);
    assert.equal(defaultKubeconfig('/x/kc', home), '/x/kc', '$KUBECONFIG first');
    assert.throws(() => defaultKubeconfig('/a:/b', home), /lists 2 files/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('an exec plugin: its token is sent, reused until 10 s before expiry, then the plugin runs again', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tpfleet-exec-'));
  const srv = await echoAuth();
  try {
    // The plugin counts its runs in a file and prints a token naming the run and its args/env.
    const plugin = path.join(dir, 'plugin.sh');
    writeFileSync(
      plugin,
      `#!/bin/sh
n=$(($(cat "${dir}/runs" 2>/dev/null || echo 0) + 1)); echo $n > "${dir}/runs"
case "$KUBERNETES_EXEC_INFO" in *ExecCredential*) ;; *) exit 3 ;; esac
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t%s-%s-%s","expirationTimestamp":"%s"}}' "$n" "$1" "$REGION" "$EXPIRY"
`,
    );
    chmodSync(plugin, 0o755);
    let now = Date.parse('2026-12-03T12:00:00Z');
    process.env.EXPIRY = '2026-12-03T12:01:00Z';
    const file = kubeconfig(dir, srv.url, {
      exec: {
        apiVersion: 'client.authentication.k8s.io/v1',
        command: './plugin.sh',
        args: ['a1'],
        env: [{ name: 'REGION', value: 'eu' }],
      },
    });
    assert.throws(() => kubeconfigCredentials(file), /user\.exec is not supported by the node agent/);
    const parsed = parse(readFileSync(file, 'utf8'));
    const get = execCredentials(parsed.users[0].user.exec, dir, file, () => now);
    assert.equal((await get()).token, 't1-a1-eu');
    now += 49_000;
    assert.equal((await get()).token, 't1-a1-eu', 'reused while more than 10 s remain');
    now += 2_000;
    assert.equal((await get()).token, 't2-a1-eu', 'run again 10 s before expiry');
    // Through the operator's path: kubeconfigCredentials with exec, a real request.
    const client = new KubeClient(kubeconfigCredentials(file, { exec: true }), 'test');
    const seen = await client.get('/api/v1/namespaces/x');
    assert.match(seen?.metadata.name ?? '', /^Bearer t3-a1-eu$/);
  } finally {
    delete process.env.EXPIRY;
    srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an exec plugin that fails, or prints no credential, fails the request with its message', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tpfleet-exec-'));
  try {
    const bad = path.join(dir, 'bad.sh');
    writeFileSync(bad, '#!/bin/sh\necho "no login" >&2; exit 1\n');
    const empty = path.join(dir, 'empty.sh');
    writeFileSync(empty, `#!/bin/sh\necho '{"kind":"ExecCredential","status":{}}'\n`);
    for (const f of [bad, empty]) chmodSync(f, 0o755);
    const file = kubeconfig(dir, 'http://127.0.0.1:1', { exec: { command: bad } });
    const c = kubeconfigCredentials(file, { exec: true });
    await assert.rejects(c.applyToHTTPSOptions({}), /exec plugin .*bad\.sh failed \(1\): no login$/);
    const file2 = kubeconfig(dir, 'http://127.0.0.1:1', { exec: { command: empty } });
    await assert.rejects(
      kubeconfigCredentials(file2, { exec: true }).applyToHTTPSOptions({}),
      /neither a token nor a client certificate/,
    );
    const file3 = kubeconfig(dir, 'http://127.0.0.1:1', { 'auth-provider': { name: 'oidc' } });
    assert.throws(() => kubeconfigCredentials(file3, { exec: true }), /user\.auth-provider is not supported/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
