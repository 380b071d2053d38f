// Privileged: the iptables-legacy backend in real network namespaces.
import { lifecycleTests } from './suite-lifecycle.ts';

lifecycleTests('iptables-legacy');
