// Where the kubelet probes a proxy pod's own sidecar. During a surge rollout two pods' sidecars
// share the status port on the node (SO_REUSEPORT), and the kernel hands a connection to the shared
// port to either of them; a probe answered by the other pod's sidecar made the old pod unready
// (the DaemonSet controller then deletes it before the new one is Ready) or could make the new pod
// Ready early. So each sidecar also listens on a loopback address of its own, derived from its pod
// template token, and the pod's probes name that address (httpGet.host): on Linux all of
// 127.0.0.0/8 is local, so no address needs to be configured. Both the operator (rendering) and
// the sidecar (listening) derive it from the token with this one function.

/** 127.a.b.c from the first 24 bits of the token; a is kept in 1..254, so never 127.0.0.1 (others' loopback services). */
export function probeAddress(token: string): string {
  if (!/^[0-9a-f]{6,}$/.test(token))
    throw new Error(`probeAddress: a token of at least 6 lowercase hex digits is needed, got ${JSON.stringify(token)}`);
  const byte = (k: number) => parseInt(token.slice(2 * k, 2 * k + 2), 16);
  return `127.${1 + (byte(0) % 254)}.${byte(1)}.${byte(2)}`;
}
