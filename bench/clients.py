#!/usr/bin/env python3
"""Clients for the credgate benchmark that wrk and hey cannot be.

  clients.py tunnels --proxy HOST:PORT --auth BASIC --target HOST:PORT --ca FILE
                     --count N --ready FILE --hold SECONDS [--request]
      Opens N CONNECT tunnels through the proxy, completes the intercepted TLS
      handshake in each (verifying the proxy's CA), with --request sends one
      GET /bench in each, then holds them all idle. Writes "open N" to --ready when they are
      up, and exits after --hold seconds or when the ready file is removed.

  clients.py burst --proxy HOST:PORT --auth BASIC --url URL --count N
                   --secret S [--secret S ...]
      Opens N connections to the proxy, then sends one absolute-form GET on
      each, back to back from one thread, and prints one JSON line: statuses,
      latencies (ms from each request's own send, sorted), how long sending
      took, and whether any response contained one of the secrets.

Only the standard library; every wait is bounded.
"""

import argparse
import json
import os
import selectors
import socket
import ssl
import sys
import time

TIMEOUT = 15.0


def read_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length body; returns (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a chunked body")
            rest += chunk
        return status, rest
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        rest += chunk
    return status, rest[:length]


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def tunnels(args):
    proxy = split_hostport(args.proxy)
    target_host, target_port = split_hostport(args.target)
    authority = target_host if target_port == 443 else args.target
    ctx = ssl.create_default_context(cafile=args.ca)
    held = []
    failures = 0
    deadline = time.monotonic() + args.open_within
    for _ in range(args.count):
        if time.monotonic() > deadline:
            failures += 1
            break
        raw = None
        try:
            raw = socket.create_connection(proxy, timeout=TIMEOUT)
            raw.sendall(
                (
                    f"CONNECT {args.target} HTTP/1.1\r\nHost: {args.target}\r\n"
                    f"Proxy-Authorization: Basic {args.auth}\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = raw.recv(4096)
                if not chunk:
                    raise ConnectionError("proxy closed the CONNECT")
                head += chunk
            if b" 200" not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
            tls = ctx.wrap_socket(raw, server_hostname=target_host)
            if args.request:
                tls.sendall(f"GET /bench HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
                status, _ = read_response(tls)
                if status != 200:
                    raise ConnectionError(f"status {status}")
            held.append(tls)
        except (OSError, ValueError) as error:
            failures += 1
            if raw is not None:
                raw.close()
            print(f"tunnels: {error}", file=sys.stderr)
            if failures > 10:
                break
    with open(args.ready, "w", encoding="ascii") as f:
        f.write(f"open {len(held)} failed {failures}\n")
    end = time.monotonic() + args.hold
    while time.monotonic() < end and os.path.exists(args.ready):
        time.sleep(0.1)
    for s in held:
        s.close()
    return 0 if failures == 0 else 1


def parse_complete(buf):
    """(status, body) when buf holds a whole response, else None."""
    if b"\r\n\r\n" not in buf:
        return None
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        return (status, rest) if rest.endswith(b"0\r\n\r\n") else None
    return (status, rest[:length]) if len(rest) >= length else None


def burst(args):
    """All requests from one thread: connect every socket first, then send
    the requests back to back and time each response from its own send, so
    that the client's scheduling does not land in the latencies."""
    proxy = split_hostport(args.proxy)
    url = args.url
    host = url.split("/")[2]
    request = (
        f"GET {url} HTTP/1.1\r\nHost: {host}\r\n"
        f"Proxy-Authorization: Basic {args.auth}\r\n\r\n"
    ).encode()
    secrets = [s.encode() for s in args.secret]
    socks = [socket.create_connection(proxy, timeout=TIMEOUT) for _ in range(args.count)]
    sel = selectors.DefaultSelector()
    sent = {}
    bufs = {}
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        bufs[i] = b""
    for i, sock in enumerate(socks):
        sent[i] = time.perf_counter()
        sock.send(request)
    results = {}
    deadline = time.monotonic() + TIMEOUT
    while len(results) < args.count and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            i = key.data
            now = time.perf_counter()
            try:
                chunk = key.fileobj.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                results[i] = (0, 0.0, False, False)
                sel.unregister(key.fileobj)
                continue
            bufs[i] += chunk
            done = parse_complete(bufs[i])
            if done is not None:
                status, body = done
                results[i] = (
                    status,
                    (now - sent[i]) * 1000,
                    any(x in body for x in secrets),
                    b"auth=Bearer " in body,
                )
                sel.unregister(key.fileobj)
    for sock in socks:
        sock.close()
    done = list(results.values())
    print(
        json.dumps(
            {
                "ok": sum(1 for r in done if r[0] == 200),
                "count": args.count,
                "send_ms": round((max(sent.values()) - min(sent.values())) * 1000, 3),
                "latencies_ms": sorted(round(r[1], 3) for r in done if r[0] == 200),
                "leaked": sum(1 for r in done if r[2]),
                "injected": sum(1 for r in done if r[3]),
            }
        )
    )
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tunnels")
    t.add_argument("--proxy", required=True)
    t.add_argument("--auth", required=True)
    t.add_argument("--target", required=True)
    t.add_argument("--ca", required=True)
    t.add_argument("--count", type=int, default=1000)
    t.add_argument("--ready", required=True)
    t.add_argument("--hold", type=float, default=60)
    t.add_argument("--open-within", type=float, default=60)
    t.add_argument("--request", action="store_true")
    b = sub.add_parser("burst")
    b.add_argument("--proxy", required=True)
    b.add_argument("--auth", required=True)
    b.add_argument("--url", required=True)
    b.add_argument("--count", type=int, default=100)
    b.add_argument("--secret", action="append", default=[])
    args = p.parse_args()
    return tunnels(args) if args.cmd == "tunnels" else burst(args)


if __name__ == "__main__":
    sys.exit(main())
