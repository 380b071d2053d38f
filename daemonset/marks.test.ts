// The pure fwmark collision parsers over what iptables-save and `nft -j` print.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { iptablesLineBits, iptablesMarkUses, knownOwner, markProblems, nftMarkUses, nftRuleBits } from './marks.ts';

test('iptables: bits of MARK, mark matches, TPROXY and CONNMARK --restore-mark', () => {
  assert.equal(iptablesLineBits('-A OUTPUT -j MARK --set-xmark 0x1/0xffffffff'), 0xffffffff, '--set-mark 0x1');
  assert.equal(iptablesLineBits('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000'), 0x4000, '--or-mark');
  assert.equal(iptablesLineBits('-A X -j MARK --set-xmark 0x4000/0x0'), 0x4000, '--xor-mark');
  assert.equal(iptablesLineBits('-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN'), 0x4000);
  assert.equal(iptablesLineBits('-A X -m mark --mark 0x1 -j ACCEPT'), 0xffffffff);
  assert.equal(iptablesLineBits('-A X -p tcp -j TPROXY --on-port 1 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100'), 0x100);
  assert.equal(iptablesLineBits('-A X -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff'), 0xff);
  assert.equal(iptablesLineBits('-A X -j CONNMARK --set-xmark 0x1/0x1'), 0, 'connection mark, not the packet mark');
  assert.equal(iptablesLineBits('-A X -s 10.0.0.0/8 -j ACCEPT'), 0);
});

test('iptables: our own chains are skipped; tables and chains are named', () => {
  const save = [
    '*mangle',
    ':TPFLEET-DIVERT - [0:0]',
    '-A TPFLEET-DIVERT -j MARK --set-xmark 0x2000/0x2000',
    'COMMIT',
    '*nat',
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    'COMMIT',
  ].join('\n');
  assert.deepEqual(iptablesMarkUses(save, 'iptables-nft'), [
    {
      source: 'iptables-nft',
      table: 'nat',
      chain: 'KUBE-MARK-MASQ',
      bits: 0x4000,
      text: '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    },
  ]);
});

test('nft: meta mark set (constant, |, &) and meta mark matches; our table is skipped', () => {
  const meta = { meta: { key: 'mark' } };
  assert.equal(nftRuleBits([{ mangle: { key: meta, value: 8 } }]), 0xffffffff, 'meta mark set 0x8');
  assert.equal(nftRuleBits([{ mangle: { key: meta, value: { '|': [meta, 0x4000] } } }]), 0x4000);
  assert.equal(nftRuleBits([{ mangle: { key: meta, value: { '&': [meta, 0xffff3fff] } } }]), 0xc000);
  assert.equal(nftRuleBits([{ match: { op: '==', left: { '&': [meta, 0x4000] }, right: 0 } }]), 0x4000);
  assert.equal(nftRuleBits([{ match: { op: '==', left: meta, right: 1 } }]), 0xffffffff);
  assert.equal(nftRuleBits([{ mangle: { key: { ct: { key: 'mark' } }, value: 1 } }]), 0, 'ct mark');
  const ruleset = JSON.stringify({
    nftables: [
      { rule: { family: 'inet', table: 'tpfleet', chain: 'divert', expr: [{ mangle: { key: meta, value: 1 } }] } },
      { rule: { family: 'ip', table: 'other', chain: 'out', expr: [{ mangle: { key: meta, value: 8 } }] } },
    ],
  });
  assert.deepEqual(
    nftMarkUses(ruleset, 'tpfleet').map((u) => [u.table, u.chain, u.bits]),
    [['ip other', 'out', 0xffffffff]],
  );
});

test('a refusal names the bits, the rule, its place and a known owner', () => {
  assert.equal(knownOwner('KUBE-MARK-DROP'), 'kube-proxy');
  assert.equal(knownOwner('cali-PREROUTING'), 'Calico');
  assert.equal(knownOwner('CILIUM_PRE_mangle'), 'Cilium');
  assert.equal(knownOwner('OUTPUT'), undefined);
  const uses = [
    { source: 'iptables-nft', table: 'nat', chain: 'KUBE-MARK-MASQ', bits: 0x4000, text: '-A KUBE-MARK-MASQ ...' },
    { source: 'nftables', table: 'ip other', chain: 'out', bits: 0xffffffff, text: '[...]' },
  ];
  assert.deepEqual(markProblems(uses, 0x2000), [
    'fwmark bits 0x2000 of our mask 0x2000 are used by a foreign rule (nftables, table ip other, chain out): [...]; choose interception.mark/mask outside 0xffffffff',
  ]);
  assert.match(
    markProblems(uses, 0x6000)[0] ?? '',
    /^fwmark bits 0x4000 of our mask 0x6000 are used by kube-proxy's rule/,
  );
});
