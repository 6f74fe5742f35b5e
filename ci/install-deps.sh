#!/usr/bin/env bash
# Installs everything jek's build, tests and main job need on a fresh Debian 12 machine of
# this project's kind. Idempotent: a second run installs nothing and takes about a second.
set -euo pipefail

APT_PACKAGES=(
  # kernel build (builder)
  linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio xz-utils lz4 make gcc
  # booting pods and their vTPMs (loader, attestation)
  qemu-system-x86 swtpm swtpm-tools tpm2-tools libtss2-dev libtss2-tcti-swtpm0 pkg-config
  # interop checks
  openssl python3 python3-pip
  # peak-memory assertions in the boundary tests (GNU time -f %M)
  time
  # rendering the generated man pages in the CLI tests
  groff-base
  # OCI distribution: a local registry for the push/pull tests, skopeo for the benchmark
  docker-registry skopeo
  # container images in pods: the tests and the main job make a busybox image from it
  busybox-static
  # the image benchmark's peer: tar --zstd needs the zstd program
  zstd
  # the attestation service: PostgreSQL for the replica tests, Chromium for the fleet page
  postgresql chromium
  # the README tour registers a pod with the verifier over HTTP
  curl
  # the containerd runtime: the shim tests start their own containerd and drive it with ctr
  containerd
  # containerd-client's build script compiles containerd's protobuf API with protoc
  protobuf-compiler
  # the CRI tests give their containerd's CRI plugin a bridge network
  containernetworking-plugins iproute2
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# securesystemslib checks our DSSE envelopes, jsonschema our SLSA provenance, PyJWT our
# signed attestation results.
if ! python3 -c "import securesystemslib.dsse, cryptography, jsonschema, jwt" 2>/dev/null; then
  echo "install-deps: pip securesystemslib jsonschema PyJWT" >&2
  python3 -m pip install -q --disable-pip-version-check "securesystemslib>=1.0,<2" "cryptography>=41" \
    "jsonschema>=4,<5" "PyJWT[crypto]>=2.8,<3" 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
  python3 -c "import securesystemslib.dsse, cryptography, jsonschema, jwt"
fi

if [ "${JEK_SKIP_FUZZ:-0}" != 1 ]; then
  if ! rustup toolchain list | grep -q '^nightly'; then
    echo "install-deps: the nightly Rust toolchain is missing; the fuzz smoke run needs it" >&2
    exit 3
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-fuzz" >&2
    cargo install -q --locked cargo-fuzz
  fi
fi
