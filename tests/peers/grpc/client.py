"""A gRPC agent for credgate's tests: calls the unary and the
server-streaming method of server.py through credgate (CONNECT, via the
`grpc.http_proxy` channel option), trusting credgate's CA, and sending an
`authorization` of its own, which credgate must replace.

Prints one JSON object: for each call its status code, messages, trailing
metadata, and for the stream the seconds after the call at which each
message arrived.

usage: client.py TARGET PROXY_URL CREDGATE_CA
"""

import json
import sys
import time

import grpc

SERVICE = "/credgate.test.Echo/"


def main():
    target, proxy, ca_path = sys.argv[1:4]
    with open(ca_path, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = (("grpc.http_proxy", proxy), ("grpc.enable_http_proxy", 1))
    metadata = (("authorization", "Bearer agent-own-token"),)
    out = {}
    with grpc.secure_channel(target, credentials, options=options) as channel:
        unary = channel.unary_unary(SERVICE + "Unary")
        reply, call = unary.with_call(b"ping", metadata=metadata, timeout=20)
        out["unary"] = {
            "code": call.code().name,
            "message": reply.decode(),
            "trailers": dict(call.trailing_metadata()),
        }

        stream = channel.unary_stream(SERVICE + "Stream")
        started = time.monotonic()
        call = stream(b"go", metadata=metadata, timeout=20)
        messages, arrivals = [], []
        for message in call:
            arrivals.append(time.monotonic() - started)
            messages.append(message.decode())
        out["stream"] = {
            "code": call.code().name,
            "messages": messages,
            "arrivals": arrivals,
            "trailers": dict(call.trailing_metadata()),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
