// Privileged: the nftables backend in real network namespaces.
import { lifecycleTests } from './suite-lifecycle.ts';

lifecycleTests('nftables');
