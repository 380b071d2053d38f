// Adopting a listening socket made by native code into a net.Server, in a cluster worker.
import { closeSync } from 'node:fs';
import net from 'node:net';

/**
 * Makes `server` accept on the listening socket `fd`, re-issuing listen(2) with `backlog`.
 *
 * Adopted through a Socket wrapping the fd ("a socket (anything with an underlying _handle
 * member)" in the server.listen(handle) docs), not server.listen({ fd }): the { fd } form ignores
 * `exclusive`, so in a cluster worker Node sends the fd *number* to the primary, which then
 * listens on an unrelated descriptor of its own (bind EINVAL, measured on Node 24.21). The handle
 * form always listens locally. The wrapping Socket is readable/writable false so it never reads
 * the listener. `backlog` goes as the positional argument: Node re-issues listen(2) with it
 * (511 when missing) and ignores a `backlog` property there. Closes `fd` if adoption fails.
 */
export function adoptListener(server: net.Server, fd: number, backlog: number): Promise<void> {
  let holder: net.Socket;
  try {
    holder = new net.Socket({ fd, readable: false, writable: false });
  } catch (e) {
    closeSync(fd);
    return Promise.reject(e);
  }
  return new Promise((resolve, reject) => {
    const failed = (e: Error): void => {
      holder.destroy();
      reject(e);
    };
    server.once('error', failed);
    server.listen(holder, backlog, () => {
      server.off('error', failed);
      resolve();
    });
  });
}
