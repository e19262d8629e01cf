# syntax=docker/dockerfile:1
#
# credgate as a container image: a release build in a Rust image, then only
# the binary and the default configuration on a distroless base that runs as
# an unprivileged user and has no shell.
#
#   docker build -t credgate .
#   docker run --rm -v credgate:/home/nonroot/.credgate credgate ca init
#   docker run --rm -v credgate:/home/nonroot/.credgate \
#     -v "$PWD/credgate.yaml:/etc/credgate/credgate.yaml:ro" credgate
#
# The default configuration listens on 127.0.0.1, which is what a sidecar
# in the agent's pod wants. To serve other containers, mount a configuration
# with `listen: 0.0.0.0:8080` (keep the admin API off the agents' network).
# Relative paths in the configuration (the CA, the admin token, the decision
# log under .credgate/) are relative to /home/nonroot: mount a volume there.
# Programs that `exec` credentials run must be added to the image: it has
# none besides credgate.
#
# `credgate init` (the egress lock-down, a pod's init container) needs nft,
# which the runtime image does not have: the `lockdown` target is the same
# binary on a Debian base with nftables, for that one container.
#
#   docker build --target lockdown -t credgate-lockdown .

# --- build: the same release build as CI (.ci/run), locked dependencies.
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# config/ is compiled in: the default configuration is embedded in the binary.
COPY config ./config
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked

# --- lockdown: the same binary with nft, for `credgate init` only.
FROM debian:bookworm-slim AS lockdown
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/credgate /usr/local/bin/credgate
# Root in the pod's network namespace, with NET_ADMIN: it installs the
# table and exits (examples/kubernetes).
USER 0:0
ENTRYPOINT ["/usr/local/bin/credgate"]
CMD ["init", "--help"]

# --- runtime: glibc and libgcc, CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/credgate /usr/local/bin/credgate
COPY config/credgate.yaml /etc/credgate/credgate.yaml
# The distroless `nonroot` user, by number so that a runtime policy
# (runAsNonRoot) can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /home/nonroot
# 8080: the proxy agents use. 8081: the admin API (tasks), for operators only.
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/credgate"]
CMD ["serve", "--config", "/etc/credgate/credgate.yaml"]
