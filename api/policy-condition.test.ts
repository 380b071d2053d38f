// The policy-decisions condition: totals from the sidecar's metrics text, and the message both ways.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decisionsMessage, parseDecisionsMessage, totalsFromMetrics } from './policy-condition.ts';

// As sidecar/egress.ts writes it (one sample per rule and action).
const METRICS = `# HELP tpfleet_proxy_connections_accepted_total x
tpfleet_proxy_connections_accepted_total 40
# HELP tpfleet_proxy_policy_decisions_total Connections decided, by policy rule (its name, or default) and action.
# TYPE tpfleet_proxy_policy_decisions_total counter
tpfleet_proxy_policy_decisions_total{rule="deny-one",action="allow"} 0
tpfleet_proxy_policy_decisions_total{rule="deny-one",action="deny"} 3
tpfleet_proxy_policy_decisions_total{rule="default",action="allow"} 30
tpfleet_proxy_policy_decisions_total{rule="allow-other",action="allow"} 5
tpfleet_proxy_policy_decisions_total{rule="via",action="forward"} 1
tpfleet_proxy_policy_decisions_total{rule="via",action="limited"} 2
tpfleet_proxy_policy_decisions_total{rule="x",action="bogus"} 99
`;

test('totals per action over every rule; none when the sidecar has no policy metric', () => {
  assert.deepEqual(totalsFromMetrics(METRICS), { allow: 35, deny: 3, forward: 1, limited: 2 });
  assert.equal(totalsFromMetrics('tpfleet_proxy_connections_accepted_total 4\n'), undefined);
});

test('the message carries the totals and nothing else parses', () => {
  const t = { allow: 35, deny: 3, forward: 1, limited: 2 };
  assert.equal(decisionsMessage(t), 'allow=35 deny=3 forward=1 limited=2');
  assert.deepEqual(parseDecisionsMessage(decisionsMessage(t)), t);
  for (const bad of [
    undefined,
    '',
    'allow=1 deny=2',
    'allow=-1 deny=0 forward=0 limited=0',
    'allow=1 deny=2 forward=3 limited=4 x',
  ])
    assert.equal(parseDecisionsMessage(bad), undefined, String(bad));
});
