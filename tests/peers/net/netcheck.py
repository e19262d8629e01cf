"""Plays both ends of the egress lock-down tests, inside a network namespace.

listen tcp|udp HOST PORT SECONDS   print one line per connection/datagram, for SECONDS
connect tcp|udp HOST PORT          print "ok" or "refused <why>"
https HOST PORT CERT KEY SECONDS   an HTTPS origin (plain HTTP when CERT is "-"): prints
                                   "request HOST PATH auth=ok|other|none" per request,
                                   comparing Authorization to $EXPECT_AUTH (so no credential
                                   is ever printed)
send HOST PORT TEXT                connect, send TEXT, print what comes back (or "closed")
banner HOST PORT SECONDS           a server that speaks first, as SSH does: sends "SSH-2.0-origin",
                                   then echoes each chunk as "echo:CHUNK"; prints "banner PEER"
                                   per connection
chat HOST PORT TEXT                connect, wait for the server to speak first, send TEXT, print
                                   both answers on one line (or "closed")
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


def https(host, port, cert, key, seconds):
    import http.server
    import os
    import ssl
    import threading

    expected = os.environ.get("EXPECT_AUTH", "")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            auth = self.headers.get("Authorization")
            verdict = "none" if auth is None else ("ok" if auth == expected else "other")
            print("request", self.headers.get("Host"), self.path, "auth=" + verdict, flush=True)
            body = b"ok from origin"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = family(host)

    server = Server((host, port), Handler)
    if cert != "-":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Timer(seconds, server.shutdown).start()
    print("listening", flush=True)
    server.serve_forever()


def dial(host, port):
    """A connection to HOST:PORT, or None after printing why there is none."""
    try:
        return socket.create_connection((host, port), timeout=3)
    except OSError as e:
        print("refused", type(e).__name__)
        return None


def send(host, port, text):
    s = dial(host, port)
    if s is None:
        return
    try:
        s.sendall(text.encode())
        s.settimeout(3)
        data = s.recv(200)
        print(data.decode(errors="replace") if data else "closed")
    except ConnectionResetError:
        # Closed with the probe unread: the kernel resets instead.
        print("closed")
    except OSError as e:
        print("error", type(e).__name__)


def banner(host, port, seconds):
    import threading

    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)

    def serve(conn):
        with conn:
            conn.settimeout(5)
            try:
                conn.sendall(b"SSH-2.0-origin\r\n")
                while True:
                    data = conn.recv(200)
                    if not data:
                        return
                    conn.sendall(b"echo:" + data)
            except OSError:
                return

    print("listening", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            conn, peer = s.accept()
        except (socket.timeout, TimeoutError):
            break
        print("banner", peer[0], flush=True)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def chat(host, port, text):
    s = dial(host, port)
    if s is None:
        return
    try:
        s.settimeout(5)
        first = s.recv(200)
        if not first:
            print("closed")
            return
        s.sendall(text.encode())
        second = s.recv(200)
        print((first + second).decode(errors="replace").replace("\r\n", " ").strip())
    except ConnectionResetError:
        print("closed")
    except OSError as e:
        print("error", type(e).__name__)


if __name__ == "__main__":
    op, args = sys.argv[1], sys.argv[2:]
    if op == "https":
        https(args[0], int(args[1]), args[2], args[3], float(args[4]))
    elif op == "send":
        send(args[0], int(args[1]), args[2])
    elif op == "banner":
        banner(args[0], int(args[1]), float(args[2]))
    elif op == "chat":
        chat(args[0], int(args[1]), args[2])
    elif op == "listen":
        listen(args[0], args[1], int(args[2]), float(args[3]))
    else:
        connect(args[0], args[1], int(args[2]))
