// Privileged: the iptables-legacy backend in real network namespaces.
import { lifecycleTests } from './lifecycle.testkit.ts';
import { trafficTests } from './traffic.testkit.ts';

lifecycleTests('iptables-legacy');
trafficTests('iptables-legacy');
