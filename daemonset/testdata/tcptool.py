#!/usr/bin/env python3
"""Tiny TCP helper for the node-agent netns tests (test-only; stdlib only).

serve PORTS NAME            plain listeners (IPv4 + IPv6) on each comma-separated port; each
                            connection gets "NAME <local ip> <local port>" and is closed.
tproxy PORT HEALTHPORT      a transparent listener (IP_TRANSPARENT / IPV6_TRANSPARENT) on PORT that
                            answers "PROXY <local ip> <local port>" (the original destination under
                            TPROXY), plus GET /healthz -> 200 on 127.0.0.1:HEALTHPORT.
                            The same PORT in UDP: a datagram gets "PROXY <original destination ip>
                            <port>" back from a transparent socket bound to that original destination.
connect HOST PORT TIMEOUT   prints the first line received, or "ERR connect|read <reason>".
udpserve PORTS NAME         UDP on each port (IPv4 + IPv6): a datagram gets "NAME <port>" back (bound to any address).
ask HOST PORT TIMEOUT       sends one UDP datagram, prints "<reply> from <ip> <port>" or "ERR timeout".
udphold ADDRS PORT          transparent UDP sockets bound to each comma-separated ADDR:PORT and never
                            connected (the engine's reply socket between bind() and connect()); prints
                            "HELD <peer>" for each datagram one of them takes.
"""
import http.server
import socket
import sys
import threading

IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75


def listener(family, port, transparent):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if transparent:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    elif transparent:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    s.bind(('::' if family == socket.AF_INET6 else '0.0.0.0', port))
    s.listen(128)
    return s


def accept_loop(s, name):
    while True:
        c, _ = s.accept()
        local = c.getsockname()
        try:
            c.sendall(f'{name} {local[0]} {local[1]}\n'.encode())
        finally:
            c.close()


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == '/healthz' else 404)
        self.send_header('Content-Length', '3')
        self.end_headers()
        self.wfile.write(b'ok\n')

    def log_message(self, *args):
        pass


IP_RECVORIGDSTADDR = 20
IPV6_RECVORIGDSTADDR = 74


def udp_socket(family, addr, transparent):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if transparent:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
    elif transparent:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
    s.bind(addr)
    return s


def orig_dst(family, ancdata):
    """The sockaddr of IP(V6)_ORIGDSTADDR: family(2) port(2, big-endian) then the address."""
    for _level, _type, data in ancdata:
        port = int.from_bytes(data[2:4], 'big')
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, data[4:8]), port
        return socket.inet_ntop(socket.AF_INET6, data[8:24]), port
    return None


def udp_tproxy_loop(s, family):
    while True:
        _data, anc, _flags, peer = s.recvmsg(2048, 256)
        dst = orig_dst(family, anc)
        if dst is None:
            continue
        r = udp_socket(family, dst, True)
        r.sendto(f'PROXY {dst[0]} {dst[1]}'.encode(), peer[:2])
        r.close()


def udp_serve_loop(s, name):
    while True:
        _data, peer = s.recvfrom(2048)
        local = s.getsockname()
        s.sendto(f'{name} {local[1]}'.encode(), peer)


def udp_hold_loop(s):
    while True:
        _data, peer = s.recvfrom(2048)
        print(f'HELD {peer[0]} {peer[1]}', flush=True)


def start(target, *args):
    threading.Thread(target=target, args=args, daemon=True).start()


def run(pairs):
    threads = [threading.Thread(target=accept_loop, args=p, daemon=True) for p in pairs]
    for t in threads:
        t.start()
    print('ready', flush=True)
    for t in threads:
        t.join()


def main():
    mode = sys.argv[1]
    if mode == 'serve':
        ports = [int(p) for p in sys.argv[2].split(',')]
        run([(listener(f, p, False), sys.argv[3]) for p in ports for f in (socket.AF_INET, socket.AF_INET6)])
    elif mode == 'tproxy':
        port, health = int(sys.argv[2]), int(sys.argv[3])
        pairs = [(listener(f, port, True), 'PROXY') for f in (socket.AF_INET, socket.AF_INET6)]
        for f, any_addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
            start(udp_tproxy_loop, udp_socket(f, (any_addr, port), True), f)
        srv = http.server.HTTPServer(('127.0.0.1', health), Health)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        run(pairs)
    elif mode == 'udpserve':
        for p in [int(p) for p in sys.argv[2].split(',')]:
            for f, any_addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
                start(udp_serve_loop, udp_socket(f, (any_addr, p), False), sys.argv[3])
        print('ready', flush=True)
        threading.Event().wait()
    elif mode == 'udphold':
        port = int(sys.argv[3])
        for addr in sys.argv[2].split(','):
            f = socket.AF_INET6 if ':' in addr else socket.AF_INET
            start(udp_hold_loop, udp_socket(f, (addr, port), True))
        print('ready', flush=True)
        threading.Event().wait()
    elif mode == 'ask':
        host, port, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        c = socket.socket(family, socket.SOCK_DGRAM)
        c.settimeout(timeout)
        try:
            c.sendto(b'ask', (host, port))
            data, peer = c.recvfrom(2048)
            print(f'{data.decode()} from {peer[0]} {peer[1]}')
        except OSError as e:
            print(f'ERR {e.__class__.__name__} {e}')
        finally:
            c.close()
    elif mode == 'connect':
        host, port, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        try:
            c = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            print(f'ERR connect {e.__class__.__name__} {e}')
            return
        try:
            print(c.makefile().readline().strip() or 'ERR read empty')
        except OSError as e:
            print(f'ERR read {e.__class__.__name__} {e}')
        finally:
            c.close()
    else:
        sys.exit(f'unknown mode {mode}')


if __name__ == '__main__':
    main()
