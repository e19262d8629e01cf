"""Plays both ends of the egress lock-down tests, inside a network namespace.

listen tcp|udp HOST PORT SECONDS   print one line per connection/datagram, for SECONDS
connect tcp|udp HOST PORT          print "ok" or "refused <why>"
"""
import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(proto, host, port, seconds):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family(host), kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    if proto == "tcp":
        s.listen(16)
    print("listening", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            if proto == "tcp":
                conn, peer = s.accept()
                conn.close()
            else:
                _, peer = s.recvfrom(64)
        except (socket.timeout, TimeoutError):
            break
        print("got", peer[0], flush=True)


def connect(proto, host, port):
    try:
        if proto == "tcp":
            socket.create_connection((host, port), timeout=3).close()
        else:
            s = socket.socket(family(host), socket.SOCK_DGRAM)
            s.sendto(b"probe", (host, port))
        print("ok")
    except OSError as e:
        print("refused", type(e).__name__)


if __name__ == "__main__":
    op, proto, host, port = sys.argv[1:5]
    if op == "listen":
        listen(proto, host, int(port), float(sys.argv[5]))
    else:
        connect(proto, host, int(port))
