# syntax=docker/dockerfile:1
# meshops container image: a multi-stage build.
#
#   docker build -t meshops:dev .
#   docker run --rm -p 50051:50051 meshops:dev
#
# Builder and runtime share one Debian release (bookworm) so the binary's
# glibc matches the runtime's. Dependencies are cached in a layer of their
# own (built against a stub main) and in BuildKit cache mounts.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# 1. Dependencies only: manifests, build script, proto and stub sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked
# 2. The real sources; only the meshops crate itself recompiles.
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/meshops /out/meshops

FROM ${RUNTIME_IMAGE} AS runtime
# CA certificates: model providers, Qdrant and MCP servers over HTTPS are
# verified against them (the slim image has none).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed non-root user; Kubernetes' runAsNonRoot checks the numeric id.
RUN groupadd --system --gid 10001 meshops \
    && useradd --system --uid 10001 --gid meshops --home-dir /var/lib/meshops --shell /usr/sbin/nologin meshops \
    && mkdir -p /opt/meshops /var/lib/meshops \
    && chown meshops:meshops /var/lib/meshops
COPY --from=builder /out/meshops /usr/local/bin/meshops
# What researchers edit, baked in as defaults; mount files or folders over
# /opt/meshops/{config,agents,prompts,corpus} to override them.
COPY config /opt/meshops/config
COPY agents /opt/meshops/agents
COPY prompts /opt/meshops/prompts
COPY corpus /opt/meshops/corpus
ENV MESHOPS_ROOT=/opt/meshops \
    MESHOPS__GATEWAY__LISTEN=0.0.0.0:50051 \
    MESHOPS__RETRIEVAL__DATA_DIR=/var/lib/meshops \
    RUST_LOG=info
VOLUME ["/var/lib/meshops"]
WORKDIR /var/lib/meshops
USER 10001:10001
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["meshops"]
CMD ["serve"]
