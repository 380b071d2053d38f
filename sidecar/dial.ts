// Upstream sockets. The transparent dialer is the production one; forward.ts takes any Dialer so
// tests can give it a plain one.
import { closeSync } from 'node:fs';
import net from 'node:net';
import type { Endpoint } from './address.ts';
import { native } from './native/index.ts';

/** Opens a connection to `dst`, from `source` when given; returns at once (connect in progress). */
export type Dialer = (dst: Endpoint, source: string | null) => net.Socket;

/**
 * Connects from a native IP_TRANSPARENT socket (bound to `source` when keeping the client IP).
 *
 * Invariant: connect() is called in the same tick as `new net.Socket({ fd })`. The constructor
 * starts reading at once (uv_read_start), and an unconnected TCP socket polls as HUP: if the
 * event loop ran before connect(2) was issued, Node would get ENOTCONN, destroy the socket and
 * connect() would then silently open a fresh, unbound socket (client IP lost). connect() to an IP
 * literal issues connect(2) from process.nextTick, i.e. before the loop polls again. Measured and
 * tested in dial.test.ts; the `readable: false` option is no way out: it ends the stream's
 * readable side for good (docs/adr/0002-native-addon.md).
 */
export function transparentDialer(): Dialer {
  return (dst, source) => {
    // No SO_MARK (mark 0): the divert rule recognises the proxy's own upstream traffic by
    // `socket transparent`, and upstream traffic leaves through OUTPUT, which the TPROXY hook never sees.
    const fd = native().transparentSocket(dst.family, source, 0);
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, allowHalfOpen: true });
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return socket.connect({ host: dst.address, port: dst.port });
  };
}
