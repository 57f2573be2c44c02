# syntax=docker/dockerfile:1.7
#
# One image per Tramita service, from one Dockerfile:
#
#   docker build --build-arg SERVICE=files --target service -t tramita-files .
#   docker build --build-arg SERVICE=gateway --target gateway -t tramita-gateway .
#
# `scripts/images build|push [service...]` is the way in (it passes the
# toolchain of rust-toolchain.toml, the commit and the right target).
#
# - Dependencies are compiled in their own layer (cargo-chef), shared by the
#   six images: a change to the code of one service rebuilds only that crate
#   and the ones that depend on it.
# - The binaries are linked statically (glibc, zlib and librdkafka, built
#   from source with rdkafka's default features, are inside them) and are
#   not position-independent: a process maps no shared library, only the
#   parts of glibc it calls, about 1.8 MiB less resident memory per service
#   (see "Memory" in the README; scripts/lib.sh builds the benchmarks' and
#   scripts/run's release binaries the same way). glibc's "files" and "dns"
#   name services are built into its static library. The flags apply to the
#   build's target only (--target), since the procedural macros the compiler
#   loads must stay shared objects.
# - The run-time image is distroless (no shell, no package manager) and runs
#   as an unprivileged user (65532). Health checks in docker-compose use the
#   bundled `tramita-healthcheck` probe; Kubernetes probes over HTTP itself.
# - The gateway's image also carries the web app (web/dist), served from
#   /srv/web (GATEWAY_STATIC_DIR).

# Kept equal to rust-toolchain.toml by scripts/check-deploy.
ARG RUST_VERSION=1.95.0
ARG NODE_VERSION=22
ARG CARGO_CHEF_VERSION=0.1.78

# ------------------------------------------------------------------ toolchain
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG RUST_VERSION
ARG CARGO_CHEF_VERSION
# The image already has the toolchain of rust-toolchain.toml; naming it here
# keeps rustup from fetching rust-toolchain.toml's extra components
# (rustfmt, clippy), which a release build does not use.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    LIBZ_SYS_STATIC=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian packages are not pinned: the security updates of the release are
# wanted, and the base image's tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
 && rm -rf /usr/local/cargo/registry
WORKDIR /src

# ------------------------------------------------------------------ recipe
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ------------------------------------------------------------------ build
FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Static and not position-independent (see above). They replace the linker
# flags of .cargo/config.toml, which concern position-independent binaries.
ENV RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
COPY --from=planner /src/recipe.json recipe.json
# The dependencies of every service binary, once, before the sources: this
# layer is reused until Cargo.toml or Cargo.lock change. The target is the
# builder's own platform, named so that RUSTFLAGS reach only the binaries.
RUN rustc -vV | sed -n 's/^host: //p' > /target-triple \
 && cargo chef cook --release --locked --target "$(cat /target-triple)" --recipe-path recipe.json \
      --bin tramita-gateway --bin tramita-auth --bin tramita-files \
      --bin tramita-index --bin tramita-docs --bin tramita-bpm \
      --bin tramita-healthcheck
COPY . .
ARG SERVICE
# Fails when a binary came out dynamically linked.
RUN test -n "${SERVICE}" || { echo "--build-arg SERVICE=<gateway|auth|files|index|docs|bpm> is required" >&2; exit 1; } \
 && target="$(cat /target-triple)" \
 && cargo build --release --locked --target "${target}" --bin "tramita-${SERVICE}" --bin tramita-healthcheck \
 && mkdir -p /out/usr/local/bin \
 && cp "target/${target}/release/tramita-${SERVICE}" "target/${target}/release/tramita-healthcheck" /out/usr/local/bin/ \
 && ln -s "tramita-${SERVICE}" /out/usr/local/bin/tramita \
 && for binary in /out/usr/local/bin/tramita-*; do \
      if ldd "${binary}" >/dev/null 2>&1; then echo "${binary} is dynamically linked" >&2; exit 1; fi; \
    done

# ------------------------------------------------------------------ web app
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# ------------------------------------------------------------------ run time
FROM gcr.io/distroless/static-debian12:nonroot AS service
ARG SERVICE
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tramita-${SERVICE}" \
      org.opencontainers.image.description="Tramita ${SERVICE} service" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="EUPL-1.2"
COPY --from=builder /out/ /
# Logs are JSON on stdout. The listen address (<SERVICE>_HOST, 127.0.0.1 by
# default) and everything else come from the environment: docker-compose.yml
# and the Kubernetes ConfigMaps set them. MIMALLOC_PURGE_DELAY=0: the
# allocator gives freed pages back to the system at once, not after a delay
# that only the freeing thread's next allocation would notice (auth kept each
# sign-in's 19 MiB Argon2 block for good; see "Memory" in the README).
# MALLOC_ARENA_MAX=2: the C code (librdkafka's threads) allocates with glibc's
# malloc, which would otherwise give each of those threads an arena of its own.
ENV RUST_LOG=info \
    MIMALLOC_PURGE_DELAY=0 \
    MALLOC_ARENA_MAX=2
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tramita"]

FROM service AS gateway
COPY --from=web /web/dist/ /srv/web/
ENV GATEWAY_STATIC_DIR=/srv/web
