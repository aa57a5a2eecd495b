#!/usr/bin/env bash
# Builds zeroflow's container images for the testbed's real node from this checkout, without a
# container engine, and imports them into the node's containerd:
#
#   zeroflow.local/zeroflow-operator:testbed   the operator (static), entrypoint /zeroflow-operator
#   zeroflow.local/zeroflow-runner:testbed     the runner (static), entrypoint /zeroflow-runner
#   zeroflow.local/csv-to-jsonl-sh:testbed     busybox + e2e/node/transform.sh (/app/transform.sh)
#
# With --example DIR (a directory with a Python transform.py, like examples/csv-to-jsonl), also
#
#   zeroflow.local/<DIR's name>:testbed        Debian's python3 + DIR/transform.py at /app/transform.py
#
# the example's Dockerfile (python:3.12-slim + transform.py) rebuilt from this machine's Debian
# python3 packages, since there is no registry to pull python:3.12-slim from. That image is
# cached in $ZF_CACHE/images/ under a key of everything it is made of.
#
# Output: `export` lines naming the images (eval them).
#
#   eval "$(e2e/testbed env)"; eval "$(e2e/node/images.sh [--example examples/csv-to-jsonl])"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
example=""
if [[ "${1:-}" == --example ]]; then example=$(cd "$2" && pwd); fi
[[ -n "${ZF_NODE_NAME:-}" ]] || eval "$("$root/e2e/testbed" env)"
[[ -n "${ZF_NODE_NAME:-}" ]] || { echo "no real node: run e2e/testbed node up" >&2; exit 1; }
# shellcheck source=e2e/node/lib.sh
. "$here/lib.sh"

log() { printf '[node images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

zf_build

out="$ZF_TESTBED_STATE/node/images"
mkdir -p "$out"
mkimage() { python3 "$root/e2e/oci/mkimage.py" "$@"; }
OPERATOR_IMAGE=zeroflow.local/zeroflow-operator:testbed
RUNNER_IMAGE=zeroflow.local/zeroflow-runner:testbed
TRANSFORM_IMAGE=zeroflow.local/csv-to-jsonl-sh:testbed
# The operator's S3 client (object_store) loads the system's CA certificates and refuses to build
# without any, so the image carries the host's bundle (as distroless/cc does).
mkimage --name "$OPERATOR_IMAGE" --out "$out/operator.tar" --file "$zf_bin/zeroflow-operator:/zeroflow-operator" \
  --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:644 --dir tmp:1777 --user 65532:65532 --entrypoint '["/zeroflow-operator"]'
mkimage --name "$RUNNER_IMAGE" --out "$out/runner.tar" --file "$zf_bin/zeroflow-runner:/zeroflow-runner" \
  --user 65532:65532 --entrypoint '["/zeroflow-runner"]'
links=()
for a in $(/bin/busybox --list); do [[ "$a" == busybox ]] || links+=(--symlink "bin/$a:busybox"); done
mkimage --name "$TRANSFORM_IMAGE" --out "$out/transform.tar" --file /bin/busybox:/bin/busybox "${links[@]}" \
  --file "$here/transform.sh:/app/transform.sh:755" --dir tmp:1777 --user 65532:65532 \
  --entrypoint '["/bin/sh", "/app/transform.sh"]'
archives=("$out/operator.tar" "$out/runner.tar" "$out/transform.tar")

if [[ -n "$example" ]]; then
  EXAMPLE_IMAGE="zeroflow.local/$(basename "$example"):testbed"
  [[ -f "$example/transform.py" ]] || { log "$example has no transform.py"; exit 1; }
  # Debian's interpreter (not whatever python3 comes first on PATH), its standard library and
  # the shared libraries it and its extension modules load.
  python=$(readlink -f /usr/bin/python3)
  if ! [[ -x "$python" ]] || ! dpkg -S "$python" >/dev/null 2>&1; then
    log "Debian's python3 is missing: apt-get install python3"; exit 1
  fi
  version=$(basename "$python")
  stdlib="/usr/lib/$version"
  python_args=(--file "$python:/usr/bin/$version" --symlink "usr/bin/python3:$version" --libs-of "$python"
    --tree "$stdlib:$stdlib" --exclude test --exclude 'config-*' --exclude idlelib --exclude tkinter
    --exclude turtledemo --exclude ensurepip --exclude lib2to3 --exclude pydoc_data --exclude site-packages
    --exclude dist-packages --exclude venv --exclude '*__pycache__/*.opt-?.pyc')
  for so in "$stdlib"/lib-dynload/*.so; do python_args+=(--libs-of "$so"); done
  python_args+=(--file "$example/transform.py:/app/transform.py:644" --dir tmp:1777 --cmd '["python3"]')
  key=$( { cat "$root/e2e/oci/mkimage.py" "$example/transform.py"; echo "$EXAMPLE_IMAGE ${python_args[*]}";
    dpkg-query -W -f='${Package} ${Version}\n' "lib$version-stdlib" "$version-minimal" 2>/dev/null; } | sha256sum | cut -c1-16)
  cache="${ZF_CACHE:-$HOME/.cache/zeroflow-testbed}/images"
  archive="$cache/$(basename "$example")-$key.tar"
  if [[ ! -f "$archive" ]]; then
    mkdir -p "$cache"
    log "building $EXAMPLE_IMAGE ($version from Debian's packages + $example/transform.py)"
    mkimage --name "$EXAMPLE_IMAGE" --out "$archive.tmp" "${python_args[@]}"
    mv "$archive.tmp" "$archive"
  fi
  archives+=("$archive")
fi

"$root/e2e/testbed" node import "${archives[@]}"
log "imported into the node's containerd"
cat <<ENV
export ZF_NODE_OPERATOR_IMAGE='$OPERATOR_IMAGE'
export ZF_NODE_RUNNER_IMAGE='$RUNNER_IMAGE'
export ZF_NODE_TRANSFORM_IMAGE='$TRANSFORM_IMAGE'
ENV
if [[ -n "$example" ]]; then echo "export ZF_NODE_EXAMPLE_IMAGE='$EXAMPLE_IMAGE'"; fi
