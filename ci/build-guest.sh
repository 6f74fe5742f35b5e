#!/usr/bin/env bash
# Builds the guest binaries (jek-init, jek-sample-app) as static executables for the
# initramfs. --target keeps build scripts dynamically linked (see shared FACTS).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build ${CARGO_LOCKED:+--locked} -q --profile guest \
  --target x86_64-unknown-linux-gnu -p jek-init
