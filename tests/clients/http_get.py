"""An agent using Python requests or httpx through HTTPS_PROXY.

Usage: python3 http_get.py requests|httpx METHOD URL [HEADER:VALUE ...]
Prints {"status", "body"} as JSON.
"""
import json
import sys


def main():
    library, method, url, *raw = sys.argv[1:]
    headers = dict(h.split(":", 1) for h in raw)
    headers = {k: v.strip() for k, v in headers.items()}
    if library == "requests":
        import requests

        r = requests.request(method, url, headers=headers, timeout=20)
        status, body = r.status_code, r.text
    else:
        import httpx

        # httpx reads HTTPS_PROXY and SSL_CERT_FILE from the environment.
        with httpx.Client(trust_env=True, timeout=20) as client:
            r = client.request(method, url, headers=headers)
            status, body = r.status_code, r.text
    print(json.dumps({"status": status, "body": body}))


if __name__ == "__main__":
    main()
