# shellcheck shell=bash disable=SC2154  # $root is set by the caller
# The real node's lifecycle, shared by e2e/demo, e2e/node/operator (which e2e/tests/node.rs
# runs) and e2e/bench/real-node-cold-start: building zeroflow's binaries and images, starting
# the node, installing the operator with its Helm chart as a pod on the node, and removing it
# all again. No checks of zeroflow's behaviour live here (those are Rust tests); a lifecycle
# step that fails ends the caller with a message saying which.
#
# Source it after setting $root (the checkout), under `set -euo pipefail`:
#
#   zf_build                        the static release binaries everything runs -> $zf_bin
#   zfn_start_node                  testbed env; starts the node unless one runs (zfn_started_node=1)
#   zfn_stop_node                   stops the node if zfn_start_node started it
#   zfn_install_operator REL NS WATCH [EXAMPLE]
#                                   images (and EXAMPLE's transform image), the CRD with kubectl,
#                                   `helm install REL` into NS watching WATCH, forwarders; sets
#                                   zfn_operator_pod, zfn_operator_ip and the ZF_NODE_*_IMAGE variables
#   zfn_upgrade_operator REL NS K=V...  helm upgrade --reuse-values --set K=V; waits for the new
#                                   operator pod and re-points the forwarders at it
#   zfn_uninstall_operator REL NS   helm uninstall, forwarders and NS removed

zfn_log() { printf '[node %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
zfn_die() { zfn_log "FAILED: $*"; exit 1; }

# No kube-proxy and no DNS on the testbed: workers reach the work API at this address in the
# node netns, where a forwarder passes connections on to the operator pod.
zfn_work_vip="10.97.0.1"
zf_target=x86_64-unknown-linux-gnu
zfn_started_node=""

# The release binaries of the operator, the runner and the e2e tools (zeroflow-demo,
# zeroflow-host-workers), all in one cargo invocation so none is left stale, linked statically
# (-C target-feature=+crt-static for x86_64-unknown-linux-gnu: the runner is copied into any
# transform image and must not need its libc; no extra rustup target). With --target, only the
# target's crates get the flag: build scripts and proc macros stay host builds.
zf_build() {
  zf_bin="${CARGO_TARGET_DIR:-$HOME/.cache/zeroflow-target}/$zf_target/release"
  local started=$SECONDS b
  zfn_log "cargo build --release --target $zf_target (static): operator, runner, e2e tools"
  (zf_build_cargo 2>&1 | { grep -vE '^\s*(Compiling|Fresh)' >&2 || true; }) || zfn_die "cargo build"
  for b in zeroflow-operator zeroflow-runner zeroflow-demo zeroflow-host-workers; do
    [[ -x "$zf_bin/$b" ]] || zfn_die "cargo build did not produce $zf_bin/$b"
    if grep -q '=>' <<<"$(ldd "$zf_bin/$b" 2>&1)"; then ldd "$zf_bin/$b" >&2; zfn_die "$zf_bin/$b is dynamically linked"; fi
  done
  zfn_log "binaries ready in $((SECONDS - started)) s ($zf_bin)"
}

# The cargo invocation of zf_build alone (e2e/test-all starts it early in the background; cargo's
# lock on the build directory makes a later zf_build wait for it, then find it done).
zf_build_cargo() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/zeroflow-target}"
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
  (cd "$root" && CARGO_TERM_COLOR=never cargo build --release --locked --target "$zf_target" \
    -p zeroflow-operator -p zeroflow-runner -p zeroflow-e2e --bins)
}

zfn_start_node() {
  eval "$("$root/e2e/testbed" env)"
  if [[ -z "${ZF_NODE_NAME:-}" ]]; then
    "$root/e2e/testbed" node up || zfn_die "e2e/testbed node up"
    zfn_started_node=1
    eval "$("$root/e2e/testbed" env)"
  fi
}

zfn_stop_node() {
  if [[ -n "$zfn_started_node" ]]; then
    "$root/e2e/testbed" node down || zfn_die "e2e/testbed node down"
    zfn_started_node=""
  fi
}

zfn_kubectl() { "$KUBECTL" "$@"; }

# zfn_install_operator RELEASE NAMESPACE WATCH_NAMESPACE [EXAMPLE_DIR]
zfn_install_operator() {
  local rel=$1 ns=$2 watch=$3 example=${4:-} images_env n
  images_env=$("$root/e2e/node/images.sh" ${example:+--example "$example"}) || zfn_die "building the images"
  eval "$images_env"

  # The README's quickstart: the CRD with kubectl, then helm install with the chart's defaults
  # (the chart leaves a CRD it does not own alone).
  zfn_kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null || zfn_die "kubectl apply -f crds/"
  # Retried: on a CRD created a moment ago, `kubectl wait` can fail on its not-yet-set conditions.
  for _ in $(seq 1 60); do
    zfn_kubectl wait --for=condition=Established crd/datapipelines.zeroflow.dev --timeout=5s >/dev/null 2>&1 && break
    sleep 1
  done
  for n in "$ns" "$watch"; do
    zfn_kubectl create namespace "$n" --dry-run=client -o yaml | zfn_kubectl apply -f - >/dev/null
    zfn_kubectl label namespace "$n" --overwrite pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/enforce-version=latest >/dev/null
  done
  zfn_kubectl -n "$ns" create secret generic "$rel-gateway-token" --from-literal=token="$ZF_WEBHOOK_TOKEN" \
    --dry-run=client -o yaml | zfn_kubectl apply -f - >/dev/null

  local values; values=$(mktemp)
  cat >"$values" <<YAML
image: {repository: ${ZF_NODE_OPERATOR_IMAGE%:*}, tag: ${ZF_NODE_OPERATOR_IMAGE##*:}, pullPolicy: Never}
runnerImage: {repository: ${ZF_NODE_RUNNER_IMAGE%:*}, tag: ${ZF_NODE_RUNNER_IMAGE##*:}}
watchNamespaces: [$watch]
workApiUrl: http://$zfn_work_vip:8081
gatewayToken: {existingSecret: $rel-gateway-token, key: token}
logFormat: json
nodeSelector: {$ZF_NODE_TAINT: "true"}
tolerations: [{key: $ZF_NODE_TAINT, operator: Exists, effect: NoSchedule}]
YAML
  zfn_log "helm install $rel -n $ns (operator pod on node $ZF_NODE_NAME)"
  local out; out=$(mktemp)
  if ! "$HELM" install "$rel" "$root/charts/zeroflow" -n "$ns" -f "$values" --wait --timeout 3m >"$out" 2>&1; then
    cat "$out" >&2; rm -f "$values" "$out"; zfn_die "helm install $rel"
  fi
  rm -f "$values" "$out"
  zfn_operator_pod=$(zfn_kubectl -n "$ns" get pod -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[0].metadata.name}')
  # `helm install --wait` does not wait for this pod: the chart's maxUnavailable of 100% (only
  # the leader is ever Ready) makes helm count the Deployment ready with none available.
  zfn_kubectl -n "$ns" wait --for=condition=Ready "pod/$zfn_operator_pod" --timeout=120s >/dev/null \
    || zfn_die "the operator pod $zfn_operator_pod is not Ready"
  zfn_operator_ip=$(zfn_kubectl -n "$ns" get pod "$zfn_operator_pod" -o jsonpath='{.status.podIP}')
  [[ -n "$zfn_operator_ip" ]] || zfn_die "the operator pod $zfn_operator_pod has no IP"

  zfn_forward_to_operator "$rel"
  zfn_log "operator $zfn_operator_pod ($zfn_operator_ip): MinIO webhook $ZF_WEBHOOK_ADDR -> gateway, $zfn_work_vip:8081 (node netns) -> work API"
}

# zfn_forward_to_operator RELEASE: MinIO's webhook address (host) and the work API's address in
# the node netns forwarded to $zfn_operator_ip, as a Service would (the testbed has no
# kube-proxy); a forwarder of the same name is replaced.
zfn_forward_to_operator() {
  local rel=$1
  "$root/e2e/testbed" node forward "gateway-$rel" host "$ZF_WEBHOOK_ADDR" "$zfn_operator_ip:8080" \
    || zfn_die "forwarder MinIO webhook -> gateway"
  "$root/e2e/testbed" node forward "lease-$rel" node "$zfn_work_vip:8081" "$zfn_operator_ip:8081" \
    || zfn_die "forwarder work API"
}

# zfn_upgrade_operator RELEASE NAMESPACE KEY=VALUE...: `helm upgrade --reuse-values --set ...`,
# which rolls the operator pod when a value reaches its template; waits for the new pod to be
# Ready (only the leader is) and points the forwarders at it, as a Service would (the testbed
# has no kube-proxy). Sets zfn_operator_pod and zfn_operator_ip to the new pod's.
zfn_upgrade_operator() {
  local rel=$1 ns=$2 old_pod set=() kv out pod="" _
  shift 2
  for kv in "$@"; do set+=(--set "$kv"); done
  old_pod=$(zfn_kubectl -n "$ns" get pod -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[0].metadata.name}')
  zfn_log "helm upgrade $rel -n $ns ${*} (operator pod $old_pod is replaced)"
  out=$(mktemp)
  if ! "$HELM" upgrade "$rel" "$root/charts/zeroflow" -n "$ns" --reuse-values "${set[@]}" --timeout 3m >"$out" 2>&1; then
    cat "$out" >&2; rm -f "$out"; zfn_die "helm upgrade $rel"
  fi
  rm -f "$out"
  local name ready listing
  for _ in $(seq 1 240); do
    listing=$(zfn_kubectl -n "$ns" get pod -l "app.kubernetes.io/instance=$rel" \
      -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
    while read -r name ready; do
      [[ "$name" != "$old_pod" && "$ready" == True ]] && pod=$name
    done <<<"$listing"
    [[ -n "$pod" ]] && break
    sleep 0.5
  done
  [[ -n "$pod" ]] || zfn_die "no new operator pod Ready within 120 s of helm upgrade $rel"
  zfn_operator_pod=$pod
  zfn_operator_ip=$(zfn_kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.podIP}')
  [[ -n "$zfn_operator_ip" ]] || zfn_die "the operator pod $pod has no IP"
  zfn_forward_to_operator "$rel"
  zfn_log "operator $pod ($zfn_operator_ip) is the leader after the upgrade; forwarders follow it"
}

# zfn_uninstall_operator RELEASE NAMESPACE: everything zfn_install_operator made, except the CRD
# (kept, as the chart's keep policy does) and the watched namespace (the caller's).
zfn_uninstall_operator() {
  local rel=$1 ns=$2
  "$root/e2e/testbed" node unforward "gateway-$rel" >/dev/null 2>&1 || true
  "$root/e2e/testbed" node unforward "lease-$rel" >/dev/null 2>&1 || true
  if "$HELM" status "$rel" -n "$ns" >/dev/null 2>&1; then
    "$HELM" uninstall "$rel" -n "$ns" --wait --timeout 90s >/dev/null || zfn_die "helm uninstall $rel"
  fi
  zfn_kubectl delete namespace "$ns" --ignore-not-found --wait=true --timeout=90s >/dev/null || zfn_die "deleting namespace $ns"
}
