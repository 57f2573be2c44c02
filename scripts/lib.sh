# Shared helpers of the project's scripts; sourced, not run.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages the Rust build needs: a C toolchain and zlib for the bundled
# librdkafka, pkg-config to find them. Installed only when missing.
ensure_build_deps() {
  local missing=()
  local pkg
  for pkg in build-essential pkg-config zlib1g-dev curl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing build packages: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || {
    echo "cargo is not on PATH: this machine needs Rust installed by rustup (see README)" >&2
    exit 1
  }
}

# Release builds of the services (what the images ship and the benchmarks
# measure): statically linked (glibc, zlib and librdkafka inside the binary)
# and not position-independent, so a process maps no shared library, only
# the parts of glibc it calls: about 1.8 MiB less resident memory per
# service (see "Memory" in the README). glibc's "files" and "dns" name
# services are built into its static library, so name lookups need nothing
# at run time. The flags go to the target only (`--target`), since the
# procedural macros the build loads must stay shared objects.
RELEASE_TARGET=x86_64-unknown-linux-gnu
# shellcheck disable=SC2034 # used by the scripts that source this file
RELEASE_DIR=$ROOT/target/$RELEASE_TARGET/release
build_release() {
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    LIBZ_SYS_STATIC=1 cargo build --release --target "$RELEASE_TARGET" "$@"
}

# Whether all three local servers already answer (then a script that finds
# them running leaves them running when it ends).
infra_running() {
  local port
  for port in "${TRAMITA_PG_PORT:-54320}" "${TRAMITA_KAFKA_PORT:-9092}" "${TRAMITA_MONGO_PORT:-27017}"; do
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
  done
}

# Starts the local servers (or uses those named in the environment) and
# exports their locations.
infra_up() {
  "$ROOT/scripts/infra" up
  # shellcheck disable=SC1091
  source "$ROOT/.local/infra/env"
}
