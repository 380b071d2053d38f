// The cluster e2e suite drives a Kubernetes cluster through this small interface, so the same
// assertions run on kind (users' path, needs Docker), `local` (real control plane + kwok nodes,
// runs here) and `local-real` (real kubelets in network namespaces, a later issue).
// Invariant: a provider never touches anything it did not create; delete() removes all of it.
import type { BuiltImage } from '../../images/images.ts';

/** Container images the suite installs (images/images.ts builds them). */
export type { BuiltImage };

/** What a cluster's nodes can really do; the suite asserts only what the cluster can show. */
export interface Capabilities {
  /** Pods really run (the operator runs as its Deployment, the DaemonSet's containers start). */
  runsPods: boolean;
  /** Nodes have a real data path: interception rules and traffic can be checked. */
  realDataPath: boolean;
  /** The HPA's custom metric can be set by the test (a test adapter serves it). */
  settableMetrics: boolean;
}

export interface ClusterNode {
  name: string;
  role: 'control-plane' | 'worker';
  labels: Record<string, string>;
}

export interface Cluster {
  readonly provider: string;
  readonly kubeconfigPath: string;
  readonly capabilities: Capabilities;
  /** The nodes as kind-config.yaml declares them, with the names the cluster gave them. */
  readonly nodes: readonly ClusterNode[];
  /** Makes the images pullable by the nodes with imagePullPolicy IfNotPresent/Never. */
  loadImages(images: readonly BuiltImage[]): Promise<void>;
  /**
   * Sets a custom metric (custom.metrics.k8s.io, resource pods) for one pod; only when
   * capabilities.settableMetrics. Real clusters get it from the sidecars through an adapter.
   */
  setPodMetric?(namespace: string, pod: string, metric: string, value: number): Promise<void>;
  /**
   * Runs argv on a node's host (its network namespace and root), e.g. `nft list ruleset`; only
   * when capabilities.realDataPath. argv is never joined into a shell string.
   */
  nodeExec?(node: string, argv: readonly string[]): Promise<string>;
  /** Removes the cluster and everything the provider made for it. Idempotent. */
  delete(): Promise<void>;
}

export interface Provider {
  readonly name: 'kind' | 'local' | 'local-real';
  /** null when the provider can run here, else one line saying why not (the suite prints it and skips). */
  unavailable(): Promise<string | null>;
  /** Creates the cluster described by kind-config.yaml (path given). */
  create(kindConfigPath: string): Promise<Cluster>;
}
