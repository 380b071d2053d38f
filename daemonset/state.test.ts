// The state file steers privileged steps (cleanup runs its argv as root): whatever the agent did not
// write itself is refused before anything runs, naming the field (issue 20).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { routingArgv } from './plan.ts';
import { readState, removeState, writeState, type AgentState } from './state.ts';

function good(): AgentState {
  const r = routingArgv('IPv4', 0x2000, 0x2000, 2000, 32000);
  return {
    version: 1,
    backend: 'nftables',
    families: ['IPv4'],
    routing: [
      {
        family: 'IPv4',
        mark: r.mark,
        mask: r.mask,
        table: r.table,
        priority: r.priority,
        ruleDel: r.ruleDel,
        routeDel: r.routeDel,
        ownsRule: true,
        ownsRoute: true,
      },
    ],
    before: { nftMangle: {}, nftPrerouting: {}, legacyMangle: {} },
  };
}

test('a state file the agent wrote reads back as written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-state-'));
  try {
    assert.equal(readState(dir), undefined, 'no file: nothing installed');
    writeState(dir, good());
    assert.deepEqual(readState(dir), good());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tampered or foreign state file is refused naming the field, before any command runs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-state-'));
  const write = (s: unknown) => writeFileSync(join(dir, 'state.json'), JSON.stringify(s));
  const refused = (s: unknown, field: RegExp) => {
    write(s);
    assert.throws(() => readState(dir), field, JSON.stringify(s).slice(0, 200));
  };
  try {
    const s = good();
    refused(
      { ...s, routing: [{ ...s.routing[0], ruleDel: ['sh', '-c', 'reboot'] }] },
      /routing\[0\]\.ruleDel: is not the command tpfleet renders \(ip -4 rule del fwmark 0x2000\/0x2000 lookup 2000 priority 32000\)/,
    );
    refused(
      { ...s, routing: [{ ...s.routing[0], routeDel: ['ip', '-4', 'route', 'flush', 'table', 'main'] }] },
      /routing\[0\]\.routeDel: is not the command/,
    );
    refused({ ...s, routing: [{ ...s.routing[0], table: 254 }] }, /routing\[0\]\.table: tables 253-255/);
    refused({ ...s, routing: [{ ...s.routing[0], mark: 0x4000 }] }, /routing\[0\]\.mark: must lie within mask/);
    refused({ ...s, backend: 'pf' }, /backend:/);
    refused({ ...s, version: 2 }, /version:/);
    refused({ ...s, extra: true }, /not a tpfleet state file/);
    writeFileSync(join(dir, 'state.json'), '{"version": 1,');
    assert.throws(() => readState(dir), /state\.json: not JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a lost state.json is found again in the copy written this boot; a copy from another boot is ignored', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-state-'));
  const [primary, copy] = [join(dir, 'run'), join(dir, 'copy')];
  try {
    writeState(primary, good(), copy);
    rmSync(join(primary, 'state.json'));
    assert.deepEqual(readState(primary, copy), good(), 'the copy stands in for the lost file');
    assert.equal(readState(primary), undefined, 'without a copy directory: nothing installed');
    const stale = JSON.parse(readFileSync(join(copy, 'state.json'), 'utf8'));
    writeFileSync(join(copy, 'state.json'), JSON.stringify({ ...stale, bootId: 'another-boot' }));
    assert.equal(readState(primary, copy), undefined, 'a reboot removed those rules');
    writeFileSync(join(copy, 'state.json'), JSON.stringify({ ...stale, state: { ...good(), backend: 'pf' } }));
    assert.throws(() => readState(primary, copy), /state\.json \(copy\): not a tpfleet state file[\s\S]*backend/);
    removeState(primary, copy);
    assert.equal(readState(primary, copy), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
