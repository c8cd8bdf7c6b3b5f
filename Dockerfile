# syntax=docker/dockerfile:1
# The gateway image: mcp-proxy and mcp-worker (release builds) on Debian bookworm slim.
#
#   docker build -t mcp-gateway:dev .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 mcp-gateway:dev
#
# Runs as UID/GID 10001 with a read-only root filesystem in mind: the configuration is read
# from /etc/mcp-gateway (mount a directory there), and the only writable place it needs is
# /var/lib/mcp-gateway (log spool, SQLite), plus /tmp for the graceful-upgrade socket.
# Kubernetes manifests: deploy/kubernetes; notes: docs/deployment.md.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# Pingora's flate2 builds zlib-ng with cmake; clang/gcc come with the rust image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependency layer: the manifests and the lock file with stub sources, built once and
# reused as long as no Cargo.toml and Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY proxy/Cargo.toml proxy/build.rs proxy/
COPY mcp-workers/Cargo.toml mcp-workers/
COPY bench/Cargo.toml bench/
RUN mkdir -p proxy/src proxy/benches mcp-workers/src bench/src migrations \
 && for f in proxy/src/main.rs proxy/src/lib.rs proxy/benches/auth.rs \
             mcp-workers/src/main.rs mcp-workers/src/lib.rs bench/src/main.rs bench/src/lib.rs; do \
      echo 'fn main() {}' > "$f"; \
    done \
 && cargo build --release --locked -p mcp-proxy -p mcp-workers \
 && rm -rf proxy/src mcp-workers/src bench/src proxy/benches

# The sources. Their files keep the build context's times, which can be older than the
# stubs' build: touch the crate roots so cargo rebuilds the project's own crates.
COPY config config
COPY migrations migrations
COPY proxy proxy
COPY mcp-workers mcp-workers
COPY bench bench
RUN touch proxy/src/main.rs proxy/src/lib.rs proxy/build.rs mcp-workers/src/main.rs mcp-workers/src/lib.rs \
 && cargo build --release --locked -p mcp-proxy -p mcp-workers \
 && install -D -m 0755 target/release/mcp-proxy /out/mcp-proxy \
 && install -D -m 0755 target/release/mcp-worker /out/mcp-worker

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: JWKS, OIDC and other HTTPS the gateway fetches.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mcp \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mcp-gateway --shell /usr/sbin/nologin mcp \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/mcp-gateway \
 && install -d -m 0755 /etc/mcp-gateway

COPY --from=builder /out/mcp-proxy /out/mcp-worker /usr/local/bin/
COPY deploy/docker/gateway.yaml /etc/mcp-gateway/gateway.yaml

# Relative paths of the configuration (data/log-spool, sqlite://data/…) land in the volume.
WORKDIR /var/lib/mcp-gateway
VOLUME ["/var/lib/mcp-gateway"]
ENV MCP_PROXY_CONFIG=/etc/mcp-gateway/gateway.yaml \
    RUST_LOG=info
USER 10001:10001

# 8080: MCP listener; 9090: admin listener (/healthz, /readyz, /metrics, admin API).
EXPOSE 8080 9090

# For plain Docker: liveness of the admin listener on 127.0.0.1:9090 (bash's /dev/tcp, no curl
# in the image). Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes.
# A configuration with another admin port needs --health-cmd (or --no-healthcheck).
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/local/bin/mcp-proxy"]
CMD ["run"]
