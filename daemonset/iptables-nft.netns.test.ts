// Privileged: the iptables-nft backend in real network namespaces.
import { lifecycleTests } from './suite-lifecycle.ts';

lifecycleTests('iptables-nft');
