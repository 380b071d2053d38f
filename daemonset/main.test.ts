// The CLI without privileges: usage and config errors exit 2 naming the problem; plan prints
// the rendered plan without touching the host.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { run } from './run.ts';
import { MAIN, workdir } from './agent.testkit.ts';

const cli = (args: string[]) => run([process.execPath, '--import', 'tsx', MAIN, ...args]);

test('an invalid config exits 2 and names every bad field', async () => {
  const w = workdir();
  try {
    const file = w.config('interception: {ports: [{port: 90, endPort: 80}], mark: 3, mask: 1}\n');
    for (const cmd of ['plan', 'apply', 'watch']) {
      const r = await cli([cmd, '--config', file, '--state-dir', w.stateDir]);
      assert.equal(r.code, 2, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /interception\.ports\[0\]\.endPort: must be >= port/);
      assert.match(r.stderr, /interception\.mark: must lie within mask/);
    }
  } finally {
    w.remove();
  }
});

test('usage errors exit 2, each with its own message', async () => {
  const usage = /usage: main\.ts <plan\|apply\|cleanup\|watch\|reload\|selftest\|janitor> --config FILE/;
  const cases: [string[], RegExp[]][] = [
    [[], [/^tpfleet-agent: usage: /, usage]],
    [['frobnicate'], [/^tpfleet-agent: usage: /, usage]],
    [['apply'], [/^tpfleet-agent: --config is required for apply$/m, usage]],
    [['plan', '--config', 'x', '--bogus'], [/^tpfleet-agent: Unknown option '--bogus'/]],
    [['plan', '--config', 'x', '--backend', 'pf'], [/^tpfleet-agent: --backend: unknown backend pf$/m]],
    [['reload', '--config', 'x'], [/^tpfleet-agent: reload: --live-dir is required$/m]],
    [['apply', '--config', 'x', '--configmap', 'y'], [/^tpfleet-agent: --configmap: with watch and --live-dir only$/m]],
    [['apply', '--config', 'x', '--owner', 'Fleet/web'], [/^tpfleet-agent: --owner: must be <namespace>\.<name>/m]],
    [
      ['watch', '--config', 'x', '--selftest-interval', '0'],
      [/^tpfleet-agent: --selftest-interval: must be an integer/m],
    ],
    [['selftest'], [/^tpfleet-agent: --config is required for selftest$/m]],
  ];
  for (const [args, want] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    for (const re of want) assert.match(r.stderr, re, `${args.join(' ') || '(no arguments)'}`);
  }
});

test('plan prints the documents and routing argv for the chosen backend', async () => {
  const w = workdir();
  try {
    const file = w.config('interception: {ipFamilies: [IPv4], failurePolicy: FailOpen}\n');
    const r = await cli(['plan', '--config', file, '--backend', 'iptables-legacy']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^# backend: iptables-legacy; families: IPv4; failurePolicy: FailOpen$/m);
    assert.match(r.stdout, /^# iptables-legacy-restore --noflush$/m);
    assert.doesNotMatch(r.stdout, /ip6tables/);
    assert.match(r.stdout, /^ip -4 route add local 0\.0\.0\.0\/0 dev lo table 2000$/m);
  } finally {
    w.remove();
  }
});

test('--wait-port is refused outside cleanup or out of range, and a bad --wait-timeout too, before anything runs', async () => {
  const w = workdir();
  try {
    const cfg = w.config('interception: {ports: [{port: 8080}]}\n');
    const port = /^tpfleet-agent: --wait-port: a port number 1-65535, with cleanup only$/m;
    const cases: [string[], RegExp][] = [
      [['apply', '--config', cfg, '--wait-port', '15190'], port],
      [['cleanup', '--wait-port', '70000'], port],
      [
        ['cleanup', '--wait-port', '1', '--wait-timeout', 'x'],
        /^tpfleet-agent: --wait-timeout: must be an integer number of seconds, 0-3610$/m,
      ],
    ];
    for (const [args, want] of cases) {
      const r = await cli([...args, '--state-dir', w.stateDir]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, want, args.join(' '));
    }
  } finally {
    w.remove();
  }
});
