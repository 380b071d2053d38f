// Privileged: the nftables backend in real network namespaces.
import { lifecycleTests } from './suite-lifecycle.ts';
import { trafficTests } from './suite-traffic.ts';

lifecycleTests('nftables');
trafficTests('nftables');
