#!/usr/bin/env bash
# Builds zeroflow's container images for the testbed's real node from this checkout, without a
# container engine, and imports them into the node's containerd:
#
#   zeroflow.local/zeroflow-operator:testbed   the operator (static), entrypoint /zeroflow-operator
#   zeroflow.local/zeroflow-runner:testbed     the runner (static), entrypoint /zeroflow-runner
#   zeroflow.local/csv-to-jsonl-sh:testbed     busybox + e2e/node/transform.sh (/app/transform.sh)
#
# The Rust binaries are built for x86_64-unknown-linux-gnu with a static C runtime
# (-C target-feature=+crt-static): the runner is copied into any transform image, so it must not
# need a libc there. Output: `export` lines naming the images (eval them).
#
#   eval "$(e2e/testbed env)"; eval "$(e2e/node/images.sh)"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[[ -n "${ZF_NODE_NAME:-}" ]] || eval "$("$root/e2e/testbed" env)"
[[ -n "${ZF_NODE_NAME:-}" ]] || { echo "no real node: run e2e/testbed node up" >&2; exit 1; }

log() { printf '[node images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/zeroflow-target}"
export CARGO_TERM_COLOR=never
# Only the target's crates get the flag (with --target, build scripts and proc macros are host
# builds), so the host build cache is untouched.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
started=$SECONDS
log "cargo build --release --target $target (static) -p zeroflow-operator -p zeroflow-runner"
(cd "$root" && cargo build --release --locked --target "$target" -p zeroflow-operator -p zeroflow-runner 2>&1 |
  { grep -vE '^\s*(Compiling|Fresh)' >&2 || true; }) || { log "cargo build failed"; exit 1; }
bin="$CARGO_TARGET_DIR/$target/release"
for b in zeroflow-operator zeroflow-runner; do
  if ldd "$bin/$b" 2>&1 | grep -q '=>'; then
    log "$bin/$b is dynamically linked:"; ldd "$bin/$b" >&2; exit 1
  fi
done
log "binaries ready in $((SECONDS - started)) s"

out="$ZF_TESTBED_STATE/node/images"
mkdir -p "$out"
mkimage() { python3 "$root/e2e/oci/mkimage.py" "$@"; }
OPERATOR_IMAGE=zeroflow.local/zeroflow-operator:testbed
RUNNER_IMAGE=zeroflow.local/zeroflow-runner:testbed
TRANSFORM_IMAGE=zeroflow.local/csv-to-jsonl-sh:testbed
# The operator's S3 client (object_store) loads the system's CA certificates and refuses to build
# without any, so the image carries the host's bundle (as distroless/cc does).
mkimage --name "$OPERATOR_IMAGE" --out "$out/operator.tar" --file "$bin/zeroflow-operator:/zeroflow-operator" \
  --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:644 --dir tmp:1777 --user 65532:65532 --entrypoint '["/zeroflow-operator"]'
mkimage --name "$RUNNER_IMAGE" --out "$out/runner.tar" --file "$bin/zeroflow-runner:/zeroflow-runner" \
  --user 65532:65532 --entrypoint '["/zeroflow-runner"]'
# zeroflow-runner (reqwest 0.13 with rustls-platform-verifier) refuses to start in an image
# without system CA certificates ("No CA certificates were loaded from the system"), even for
# plain http; until it falls back to built-in roots, the transform image carries the host's bundle.
links=()
for a in $(/bin/busybox --list); do [[ "$a" == busybox ]] || links+=(--symlink "bin/$a:busybox"); done
mkimage --name "$TRANSFORM_IMAGE" --out "$out/transform.tar" --file /bin/busybox:/bin/busybox "${links[@]}" \
  --file "$here/transform.sh:/app/transform.sh:755" --dir tmp:1777 \
  --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:644 --user 65532:65532 \
  --entrypoint '["/bin/sh", "/app/transform.sh"]'
"$root/e2e/testbed" node import "$out/operator.tar" "$out/runner.tar" "$out/transform.tar"
log "imported into the node's containerd"
cat <<ENV
export ZF_NODE_OPERATOR_IMAGE='$OPERATOR_IMAGE'
export ZF_NODE_RUNNER_IMAGE='$RUNNER_IMAGE'
export ZF_NODE_TRANSFORM_IMAGE='$TRANSFORM_IMAGE'
ENV
