# shellcheck shell=bash disable=SC2154  # $root and $log_tag are set by the caller
# Shared by e2e/node/test.sh and e2e/bench/real-node-cold-start: zeroflow installed with its Helm
# chart on the testbed's real node, and a DataPipeline whose workers run there. The caller sets
# $root (the checkout) and $log_tag, sources this file, then calls
#
#   zfn_start_node            testbed env; starts the node if it is not running (stopped again on exit)
#   zfn_install_operator      images from this checkout, CRD, namespaces, helm install, forwarders
#   zfn_pipeline SCALING [ARN]  buckets, the DataPipeline "csv" (SCALING: its spec.scaling as flow
#                             YAML), MinIO bucket notifications to the gateway through the webhook
#                             target ARN (default $ZF_WEBHOOK_ARN, the one with a queue dir)
#
# Everything is created under names with a per-run id and removed on exit.

testbed="$root/e2e/testbed"
run_id="$(date +%H%M%S)$(printf '%04x' "$RANDOM")"
ns_sys="zfn-$run_id-sys"
ns="zfn-$run_id"
rel="zfn-$run_id"
raw="zfn-$run_id-raw"
out="zfn-$run_id-out"
pipe=csv
# No kube-proxy and no DNS on the testbed: workers reach the work API at this address in the
# node netns, where a forwarder passes connections on to the operator pod.
lease_vip="10.97.0.1"
work="$(mktemp -d "${TMPDIR:-/tmp}/zeroflow-node.XXXXXX")"
started_node=""

kubectl() { "$KUBECTL" "$@"; }
mc() { "$MC" "$@"; }
log() { printf '[%s %(%H:%M:%S)T] %s\n' "$log_tag" -1 "$*" >&2; }
ok() { printf 'ok     %s\n' "$*"; }

diagnostics() {
  echo "--- diagnostics"
  kubectl get nodes -o wide 2>&1
  local n f
  for n in "$ns_sys" "$ns"; do
    echo "--- namespace $n"
    kubectl -n "$n" get all,dp -o wide 2>&1 | head -n 40
    kubectl -n "$n" get events --sort-by=.lastTimestamp 2>&1 | tail -n 25
  done
  echo "--- pod logs on the node (last lines)"
  for f in "$ZF_TESTBED_STATE"/node/var-log/pods/*"$run_id"*/*/*.log; do
    [[ -f "$f" ]] || continue
    echo "$f:"; tail -n 25 "$f"
  done
  echo "--- kubelet (last errors)"
  grep '^E' "$ZF_TESTBED_STATE/logs/node-kubelet.log" | tail -n 15
}

fail() {
  printf 'FAILED %s\n' "$*"
  diagnostics 2>&1 | sed 's/^/    | /'
  exit 1
}

# wait_until SECONDS WHAT CMD... : polls CMD every 0.2 s; fails the run after SECONDS.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (not within ${timeout}s)"
    sleep 0.2
  done
}

zfn_cleanup() {
  local rc=$?
  set +e
  log "cleaning up ($run_id)"
  "$testbed" node unforward "gateway-$run_id" >/dev/null 2>&1
  "$testbed" node unforward "lease-$run_id" >/dev/null 2>&1
  if [[ -n "${KUBECTL:-}" ]]; then
    kubectl delete dp --all -n "$ns" --wait=false >/dev/null 2>&1
    "$HELM" uninstall "$rel" -n "$ns_sys" --wait --timeout 60s >/dev/null 2>&1
    kubectl delete namespace "$ns" "$ns_sys" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1
    kubectl delete clusterrole,clusterrolebinding -l "app.kubernetes.io/instance=$rel" --ignore-not-found >/dev/null 2>&1
    mc rb --force "$ZF_MC_ALIAS/$raw" >/dev/null 2>&1
    mc rb --force "$ZF_MC_ALIAS/$out" >/dev/null 2>&1
  fi
  if [[ -n "$started_node" ]]; then
    "$testbed" node down >/dev/null 2>&1
    # The node leaves nothing behind: processes, netns, cgroups (named after its netns id).
    local id=${ZF_NODE_NETNS#zfn-} left
    left=$(pgrep -af -- "$ZF_TESTBED_STATE/node";
      ip netns list | grep -F "$ZF_NODE_NETNS"; ls -d /sys/fs/cgroup/*/"zeroflow-node-$id" 2>/dev/null)
    if [[ -n "$left" ]]; then printf 'FAILED node down left behind:\n%s\n' "$left"; rc=1; fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap zfn_cleanup EXIT
trap 'exit 130' INT TERM

zfn_start_node() {
  eval "$("$testbed" env)"
  if [[ -z "${ZF_NODE_NAME:-}" ]]; then
    started_node=1
    "$testbed" node up
    eval "$("$testbed" env)"
  fi
}

zfn_install_operator() {
  log "building and importing the images"
  local images_env
  images_env=$("$root/e2e/node/images.sh") || fail "building the images"
  eval "$images_env"
  ok "images built from this checkout and imported: $ZF_NODE_OPERATOR_IMAGE $ZF_NODE_RUNNER_IMAGE $ZF_NODE_TRANSFORM_IMAGE"

  kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
  wait_until 60 "the CRD is Established" kubectl wait --for=condition=Established crd/datapipelines.zeroflow.dev --timeout=5s
  local n
  for n in "$ns_sys" "$ns"; do
    kubectl create namespace "$n" >/dev/null
    kubectl label namespace "$n" pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/enforce-version=latest >/dev/null
  done
  kubectl -n "$ns_sys" create secret generic gateway-token --from-literal=token="$ZF_WEBHOOK_TOKEN" >/dev/null
  kubectl -n "$ns" create secret generic store-creds --from-literal=accessKeyId="$ZF_S3_ACCESS_KEY" \
    --from-literal=secretAccessKey="$ZF_S3_SECRET_KEY" >/dev/null

  cat >"$work/values.yaml" <<YAML
image: {repository: ${ZF_NODE_OPERATOR_IMAGE%:*}, tag: ${ZF_NODE_OPERATOR_IMAGE##*:}, pullPolicy: Never}
runnerImage: {repository: ${ZF_NODE_RUNNER_IMAGE%:*}, tag: ${ZF_NODE_RUNNER_IMAGE##*:}}
watchNamespaces: [$ns]
workApiUrl: http://$lease_vip:8081
gatewayToken: {existingSecret: gateway-token, key: token}
crds: {install: false}
logFormat: json
nodeSelector: {$ZF_NODE_TAINT: "true"}
tolerations: [{key: $ZF_NODE_TAINT, operator: Exists, effect: NoSchedule}]
YAML
  log "helm install (operator pod on node $ZF_NODE_NAME)"
  if ! "$HELM" install "$rel" "$root/charts/zeroflow" -n "$ns_sys" -f "$work/values.yaml" --wait --timeout 3m \
    >"$work/helm.out" 2>&1; then
    cat "$work/helm.out"; fail "helm install"
  fi
  operator_pod=$(kubectl -n "$ns_sys" get pod -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[0].metadata.name}')
  wait_until 60 "the operator pod reports its IP" zfn_operator_ip
  operator_ip=$(zfn_operator_ip)
  local node; node=$(kubectl -n "$ns_sys" get pod "$operator_pod" -o jsonpath='{.spec.nodeName}')
  [[ "$node" == "$ZF_NODE_NAME" ]] || fail "operator pod on node '$node', want $ZF_NODE_NAME"
  ok "helm install: operator pod $operator_pod Ready on the real node ($operator_ip)"

  "$testbed" node forward "gateway-$run_id" host "$ZF_WEBHOOK_ADDR" "$operator_ip:8080"
  "$testbed" node forward "lease-$run_id" node "$lease_vip:8081" "$operator_ip:8081"
  ok "forwarders: MinIO webhook $ZF_WEBHOOK_ADDR -> gateway, $lease_vip:8081 (node netns) -> work API"
}

zfn_operator_ip() {
  local ip; ip=$(kubectl -n "$ns_sys" get pod "$operator_pod" -o jsonpath='{.status.podIP}')
  [[ -n "$ip" ]] && echo "$ip"
}

zfn_pipeline() {
  local scaling=$1 arn=${2:-$ZF_WEBHOOK_ARN}
  mc mb "$ZF_MC_ALIAS/$raw" "$ZF_MC_ALIAS/$out" >/dev/null
  kubectl apply -f - >/dev/null <<YAML
apiVersion: zeroflow.dev/v1alpha1
kind: DataPipeline
metadata: {name: $pipe, namespace: $ns}
spec:
  source:
    bucket: $raw
    prefix: incoming/
    suffix: .csv
    store: {endpoint: "$ZF_NODE_S3_ENDPOINT", credentialsSecretRef: {name: store-creds}}
  sink: {bucket: $out, prefix: jsonl/}
  transform:
    image: $ZF_NODE_TRANSFORM_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "/app/transform.sh"]
    timeout: 60s
    env: [{name: SLOW_SECONDS, value: "6"}]
    resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
    podTemplate:
      nodeSelector: {$ZF_NODE_TAINT: "true"}
      tolerations: [{key: $ZF_NODE_TAINT, operator: Exists, effect: NoSchedule}]
  scaling: $scaling
YAML
  wait_until 60 "DataPipeline Ready" kubectl -n "$ns" wait --for=condition=Ready "dp/$pipe" --timeout=5s
  # MinIO binds a bucket to the webhook target only once it has seen the endpoint answer.
  local _
  for _ in $(seq 1 30); do
    mc event add "$ZF_MC_ALIAS/$raw" "$arn" --event put >/dev/null 2>&1 && break
    sleep 1
  done
  mc event ls "$ZF_MC_ALIAS/$raw" 2>/dev/null | grep -qF "$arn" || fail "mc event add: MinIO did not bind the bucket to the gateway"
}

replicas() { kubectl -n "$ns" get deploy "$pipe-worker" -o jsonpath='{.spec.replicas}'; }
replicas_are() { [[ "$(replicas)" == "$1" ]]; }
scaled_up() { [[ "$(replicas)" -ge 1 ]]; }
worker_pods() { kubectl -n "$ns" get pods -l "zeroflow.dev/pipeline=$pipe" -o jsonpath='{.items[*].metadata.name}'; }
no_worker_pods() { [[ -z "$(worker_pods)" ]]; }
# worker_running [NODE]: a worker pod is Running (on NODE).
worker_running() {
  kubectl -n "$ns" get pods -l "zeroflow.dev/pipeline=$pipe" \
    -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase}{"\n"}{end}' | grep -q "^${1:-.*} Running$"
}
succeeded() { kubectl -n "$ns" get dp "$pipe" -o jsonpath='{.status.succeeded}'; }
failed() { kubectl -n "$ns" get dp "$pipe" -o jsonpath='{.status.failed}'; }
succeeded_is() { [[ "$(succeeded)" == "$1" ]]; }
pod_gone() { ! kubectl -n "$ns" get pod "$1" >/dev/null 2>&1; }
