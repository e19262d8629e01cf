#!/usr/bin/env python3
"""Origin and client of bench/streams.sh: long bodies and server-sent events
over TLS, directly or through a proxy.

  streams.py origin --port P --cert FILE --key FILE --data FILE [--ready FILE]
      A TLS origin on 127.0.0.1:P, one thread per connection, keep-alive:
        GET /echo             a short body echoing the Authorization received
        GET /download?bytes=N N bytes read from --data (cycled; never held
                              whole), with Content-Length
        PUT /upload           reads the body (Content-Length or chunked) and
                              discards it; answers "received N"
        GET /events?count=N&interval_ms=M
                              text/event-stream, chunked: N events M ms apart,
                              each carrying its send time (CLOCK_MONOTONIC, ns)

  streams.py download --url URL --bytes N --ca FILE [--proxy HOST:PORT --auth BASIC]
  streams.py upload   --url URL --bytes N --ca FILE --data FILE [--proxy … --auth …]
  streams.py events   --url URL --count N --interval-ms M --ca FILE [--proxy … --auth …]
      One request, directly or through a CONNECT tunnel (TLS to the origin,
      verified against --ca), then one JSON line: bytes and seconds (download
      and upload: the body is read and discarded, or streamed from --data,
      and the total checked), or each event's latency (arrival minus its send
      time, both CLOCK_MONOTONIC on this machine) for events; the client's
      own CPU seconds.

Only the standard library; every wait is bounded.
"""

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

TIMEOUT = 60.0
PIECE = 1 << 20


# --- origin -------------------------------------------------------------------


class Reader:
    """Buffered reads of a socket: heads, lines, exact lengths."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.scratch = memoryview(bytearray(PIECE))

    def fill(self):
        chunk = self.sock.recv(PIECE)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def until(self, marker, limit=64 * 1024):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ValueError("head too long")
            self.fill()

    def discard(self, n):
        """Reads and drops n bytes; returns n."""
        left = n
        take = min(left, len(self.buf))
        del self.buf[:take]
        left -= take
        view = self.scratch
        while left > 0:
            got = self.sock.recv_into(view, min(left, PIECE))
            if got == 0:
                raise ConnectionError("closed inside a body")
            left -= got
        return n

    def discard_chunked(self):
        """Reads a chunked body to its end; returns the data bytes."""
        total = 0
        while True:
            line = self.until(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.until(b"\r\n") != b"\r\n":
                    pass
                return total
            total += self.discard(size)
            self.until(b"\r\n")


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


def respond(sock, status, body, extra=""):
    sock.sendall(
        (
            f"HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        + body
    )


def read_cycled(f, view):
    """Reads into view from f, starting over at the end of the file."""
    got = f.readinto(view)
    if got == 0:
        f.seek(0)
        got = f.readinto(view)
        if got == 0:
            raise ValueError("the data file is empty")
    return got


def serve_download(sock, n, data_path):
    sock.sendall(
        (
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
            f"content-length: {n}\r\n\r\n"
        ).encode()
    )
    buf = bytearray(PIECE)
    view = memoryview(buf)
    left = n
    with open(data_path, "rb", buffering=0) as f:
        while left > 0:
            got = read_cycled(f, view[: min(left, PIECE)])
            sock.sendall(view[:got])
            left -= got


def serve_events(sock, count, interval_ms):
    sock.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    start = time.monotonic_ns()
    step = interval_ms * 1_000_000
    for i in range(count):
        due = start + (i + 1) * step
        wait = due - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        event = f"id: {i}\ndata: {{\"i\": {i}, \"sent_ns\": {time.monotonic_ns()}}}\n\n".encode()
        sock.sendall(b"%x\r\n%s\r\n" % (len(event), event))
    sock.sendall(b"0\r\n\r\n")


def handle(sock, data_path):
    reader = Reader(sock)
    try:
        while True:
            try:
                head = reader.until(b"\r\n\r\n")
            except ConnectionError:
                return
            (method, target, _), headers = parse_head(head)
            url = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(url.query))
            if method == "PUT" and url.path == "/upload":
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    got = reader.discard_chunked()
                else:
                    got = reader.discard(int(headers.get("content-length", "0")))
                respond(sock, "200 OK", f"received {got}\n".encode())
            elif method == "GET" and url.path == "/download":
                serve_download(sock, int(query.get("bytes", "0")), data_path)
            elif method == "GET" and url.path == "/events":
                serve_events(sock, int(query.get("count", "10")), int(query.get("interval_ms", "10")))
            elif method == "GET" and url.path == "/echo":
                auth = headers.get("authorization", "")
                respond(sock, "200 OK", f"credgate bench stream origin; auth={auth}\n".encode())
            else:
                respond(sock, "404 Not Found", b"not found\n", "connection: close\r\n")
                return
    except (OSError, ValueError) as error:
        print(f"origin: {error}", file=sys.stderr)
    finally:
        sock.close()


def origin(args):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=128)
    if args.ready:
        with open(args.ready, "w", encoding="ascii") as f:
            f.write("listening\n")

    def serve(raw):
        try:
            raw.settimeout(TIMEOUT)
            tls = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ValueError) as error:
            print(f"origin: handshake: {error}", file=sys.stderr)
            raw.close()
            return
        handle(tls, args.data)

    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve, args=(raw,), daemon=True).start()


# --- clients ------------------------------------------------------------------


def open_tls(args):
    """A TLS connection to the URL's origin, through a CONNECT tunnel when
    --proxy is given; returns (socket, request path, authority)."""
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname, url.port or 443
    authority = host if port == 443 else f"{host}:{port}"
    path = url.path + (f"?{url.query}" if url.query else "")
    if args.proxy:
        phost, _, pport = args.proxy.rpartition(":")
        raw = socket.create_connection((phost, int(pport)), timeout=TIMEOUT)
        raw.sendall(
            (
                f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Proxy-Authorization: Basic {args.auth}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            if not chunk:
                raise ConnectionError("proxy closed the CONNECT")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 200" not in status:
            raise ConnectionError(f"CONNECT refused: {status.decode('latin-1')}")
    else:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = ssl.create_default_context(cafile=args.ca)
    return ctx.wrap_socket(raw, server_hostname=host), path, authority


def read_head(reader):
    head = reader.until(b"\r\n\r\n")
    (_, status, *_), headers = parse_head(head)
    return int(status), headers


def cpu_seconds():
    t = os.times()
    return t.user + t.system


def download(args):
    sock, path, authority = open_tls(args)
    reader = Reader(sock)
    start = time.monotonic()
    cpu = cpu_seconds()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    status, headers = read_head(reader)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        got = reader.discard_chunked()
    else:
        got = reader.discard(int(headers.get("content-length", "0")))
    seconds = time.monotonic() - start
    sock.close()
    print(json.dumps({"status": status, "bytes": got, "expected": args.bytes,
                      "seconds": round(seconds, 6), "client_cpu": round(cpu_seconds() - cpu, 3),
                      "framing": "chunked" if "transfer-encoding" in headers else "content-length"}))
    return 0 if status == 200 and got == args.bytes else 1


def upload(args):
    sock, path, authority = open_tls(args)
    reader = Reader(sock)
    start = time.monotonic()
    cpu = cpu_seconds()
    sock.sendall(
        (
            f"PUT {path} HTTP/1.1\r\nHost: {authority}\r\n"
            f"content-type: application/octet-stream\r\ncontent-length: {args.bytes}\r\n\r\n"
        ).encode()
    )
    buf = bytearray(PIECE)
    view = memoryview(buf)
    left = args.bytes
    with open(args.data, "rb", buffering=0) as f:
        while left > 0:
            got = read_cycled(f, view[: min(left, PIECE)])
            sock.sendall(view[:got])
            left -= got
    status, headers = read_head(reader)
    body = bytes(reader.buf) if "content-length" not in headers else b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(reader.buf) < n:
            reader.fill()
        body = bytes(reader.buf[:n])
    seconds = time.monotonic() - start
    sock.close()
    text = body.decode("latin-1").strip()
    received = int(text.split()[1]) if text.startswith("received ") else -1
    print(json.dumps({"status": status, "bytes": args.bytes, "received": received,
                      "seconds": round(seconds, 6), "client_cpu": round(cpu_seconds() - cpu, 3),
                      "answer": text[:200]}))
    return 0 if status == 200 and received == args.bytes else 1


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def events(args):
    sock, path, authority = open_tls(args)
    reader = Reader(sock)
    cpu = cpu_seconds()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {authority}\r\naccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    status, headers = read_head(reader)
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    latencies = []
    seen = set()
    pending = bytearray()
    deadline = time.monotonic() + args.count * args.interval_ms / 1000 + 30
    done = status != 200
    # The head may have come with the first events.
    now = time.monotonic_ns()
    while not done and time.monotonic() < deadline:
        if chunked:
            # Take every whole chunk now buffered; a chunk may hold part of
            # an event, or several.
            while True:
                i = reader.buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(bytes(reader.buf[:i]).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    done = True
                    break
                if len(reader.buf) < i + 2 + size + 2:
                    break
                pending += reader.buf[i + 2 : i + 2 + size]
                del reader.buf[: i + 2 + size + 2]
        else:
            pending += reader.buf
            reader.buf.clear()
        while True:
            end = pending.find(b"\n\n")
            if end < 0:
                break
            event = bytes(pending[:end]).decode("utf-8")
            del pending[: end + 2]
            for line in event.split("\n"):
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    if data["i"] not in seen:
                        seen.add(data["i"])
                        latencies.append((now - data["sent_ns"]) / 1e6)
        if done:
            break
        try:
            reader.fill()
        except ConnectionError:
            break
        now = time.monotonic_ns()
    sock.close()
    latencies.sort()
    print(json.dumps({
        "status": status,
        "events": len(latencies),
        "expected": args.count,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "client_cpu": round(cpu_seconds() - cpu, 3),
    }))
    return 0 if status == 200 and len(latencies) == args.count else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("origin")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--cert", required=True)
    o.add_argument("--key", required=True)
    o.add_argument("--data", required=True)
    o.add_argument("--ready")
    for name in ("download", "upload", "events"):
        c = sub.add_parser(name)
        c.add_argument("--url", required=True)
        c.add_argument("--ca", required=True)
        c.add_argument("--proxy")
        c.add_argument("--auth")
        if name == "events":
            c.add_argument("--count", type=int, required=True)
            c.add_argument("--interval-ms", type=int, required=True)
        else:
            c.add_argument("--bytes", type=int, required=True)
        if name == "upload":
            c.add_argument("--data", required=True)
    args = p.parse_args()
    commands = {"origin": origin, "download": download, "upload": upload, "events": events}
    try:
        return commands[args.cmd](args)
    except (OSError, ValueError) as error:
        print(json.dumps({"error": str(error)}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
