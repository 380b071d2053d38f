// Privileged: the iptables-legacy backend in real network namespaces.
import { lifecycleTests } from './suite-lifecycle.ts';
import { trafficTests } from './suite-traffic.ts';

lifecycleTests('iptables-legacy');
trafficTests('iptables-legacy');
