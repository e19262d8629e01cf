"""An agent using Python requests, httpx or aiohttp through HTTPS_PROXY.

Usage: python3 http_get.py requests|httpx|aiohttp|aiohttp-default METHOD URL [HEADER:VALUE ...]
Prints {"status", "body"} as JSON.

`aiohttp` opens its session with `trust_env=True`, the only way aiohttp reads
HTTPS_PROXY; `aiohttp-default` leaves aiohttp's default (`trust_env=False`).
"""
import json
import sys


async def aiohttp_request(method, url, headers, **session_options):
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout, **session_options) as session:
        async with session.request(method, url, headers=headers) as r:
            return r.status, await r.text()


def main():
    library, method, url, *raw = sys.argv[1:]
    headers = dict(h.split(":", 1) for h in raw)
    headers = {k: v.strip() for k, v in headers.items()}
    if library == "requests":
        import requests

        r = requests.request(method, url, headers=headers, timeout=20)
        status, body = r.status_code, r.text
    elif library == "httpx":
        import httpx

        # httpx reads HTTPS_PROXY and SSL_CERT_FILE from the environment.
        with httpx.Client(trust_env=True, timeout=20) as client:
            r = client.request(method, url, headers=headers)
            status, body = r.status_code, r.text
    elif library in ("aiohttp", "aiohttp-default"):
        import asyncio

        # With trust_env=True aiohttp reads HTTPS_PROXY (the proxy's
        # userinfo becomes Proxy-Authorization on CONNECT); the CA comes
        # from SSL_CERT_FILE through OpenSSL's default paths either way.
        options = {"trust_env": True} if library == "aiohttp" else {}
        status, body = asyncio.run(aiohttp_request(method, url, headers, **options))
    else:
        sys.exit(f"unknown library {library}")
    print(json.dumps({"status": status, "body": body}))


if __name__ == "__main__":
    main()
