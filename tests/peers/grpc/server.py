"""A gRPC upstream for credgate's tests: TLS with a test CA's certificate,
a unary and a server-streaming method, no generated code (generic handlers
with bytes in and out).

Both methods answer with the `authorization` metadata they received, in a
message and in a trailer, so the test sees the injected credential come
back (masked). Each received `authorization` is also appended to SEEN_FILE,
for the test to check what the upstream really got.

usage: server.py CERT KEY PORT_FILE SEEN_FILE
"""

import os
import sys
import time
from concurrent import futures

import grpc

SERVICE = "credgate.test.Echo"
# The pause between two messages of a stream: the client must get each one
# when it is sent, not all of them at the end.
PAUSE = 0.3
MESSAGES = 4


def main():
    cert_path, key_path, port_file, seen_file = sys.argv[1:5]

    def seen_authorization(context):
        value = dict(context.invocation_metadata()).get("authorization", "")
        with open(seen_file, "a") as seen:
            seen.write(value + "\n")
        return value

    def unary(request, context):
        authorization = seen_authorization(context)
        context.set_trailing_metadata((("x-seen-authorization", authorization),))
        return b"unary got " + request + b"; authorization " + authorization.encode() + b" end."

    def stream(request, context):
        authorization = seen_authorization(context)
        context.set_trailing_metadata((("x-seen-authorization", authorization),))
        for i in range(MESSAGES):
            if i > 0:
                time.sleep(PAUSE)
            # Each message ends in '.', which cannot begin any form of a
            # secret, so the scrubber has no reason to hold any of it back.
            yield b"message %d; authorization %s end." % (i, authorization.encode())

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    with open(cert_path, "rb") as f:
        cert = f.read()
    with open(key_path, "rb") as f:
        key = f.read()
    credentials = grpc.ssl_server_credentials(((key, cert),))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    # Written whole, then renamed: the test never reads half a port.
    os.rename(port_file + ".tmp", port_file)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
