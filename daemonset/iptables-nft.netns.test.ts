// Privileged: the iptables-nft backend in real network namespaces.
import { lifecycleTests } from './suite-lifecycle.ts';
import { trafficTests } from './suite-traffic.ts';

lifecycleTests('iptables-nft');
trafficTests('iptables-nft');
