#!/usr/bin/env bash
# zeroflow on the testbed's real node: the Helm chart runs the operator as a pod under a real
# kubelet, a DataPipeline's workers (zeroflow-runner + a busybox transform) really run, scale
# 0 -> 1 -> 0 on MinIO events, write their outputs to the sink bucket, and a busy worker whose
# pod is deleted finishes its object before it exits (SIGTERM through the kubelet).
#
#   e2e/testbed up && e2e/node/test.sh
#
# Starts the node (e2e/testbed node up) if it is not running and stops it again at the end.
# Skips, saying why, only when the machine cannot run a node at all (not root, no overlayfs, no
# network namespaces or veth pairs). Prints one line per check, exits non-zero on failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
testbed="$root/e2e/testbed"

if ! why=$("$testbed" node check); then
  echo "SKIP e2e/node/test.sh: this machine cannot run a real node: $why"
  exit 0
fi
eval "$("$testbed" env)"
started_node=""
if [[ -z "${ZF_NODE_NAME:-}" ]]; then
  "$testbed" node up
  started_node=1
  eval "$("$testbed" env)"
fi

run_id="$(date +%H%M%S)$(printf '%04x' "$RANDOM")"
ns_sys="zfn-$run_id-sys"
ns="zfn-$run_id"
rel="zfn-$run_id"
raw="zfn-$run_id-raw"
out="zfn-$run_id-out"
lease_vip="10.97.0.1"
work="$(mktemp -d "${TMPDIR:-/tmp}/zeroflow-node-test.XXXXXX")"

kubectl() { "$KUBECTL" "$@"; }
mc() { "$MC" "$@"; }
log() { printf '[node-test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
ok() { printf 'ok     %s\n' "$*"; }

diagnostics() {
  echo "--- diagnostics"
  kubectl get nodes -o wide 2>&1
  for n in "$ns_sys" "$ns"; do
    echo "--- namespace $n"
    kubectl -n "$n" get all,dp -o wide 2>&1 | head -n 40
    kubectl -n "$n" get events --sort-by=.lastTimestamp 2>&1 | tail -n 25
  done
  echo "--- pod logs on the node (last lines)"
  local f
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

# wait_until SECONDS WHAT CMD... : polls CMD every 0.2 s.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (not within ${timeout}s)"
    sleep 0.2
  done
}

cleanup() {
  local rc=$?
  set +e
  log "cleaning up ($run_id)"
  "$testbed" node unforward "gateway-$run_id" >/dev/null 2>&1
  "$testbed" node unforward "lease-$run_id" >/dev/null 2>&1
  kubectl delete dp --all -n "$ns" --wait=false >/dev/null 2>&1
  "$HELM" uninstall "$rel" -n "$ns_sys" --wait --timeout 60s >/dev/null 2>&1
  kubectl delete namespace "$ns" "$ns_sys" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1
  kubectl delete clusterrole,clusterrolebinding -l "app.kubernetes.io/instance=$rel" --ignore-not-found >/dev/null 2>&1
  mc rb --force "$ZF_MC_ALIAS/$raw" >/dev/null 2>&1
  mc rb --force "$ZF_MC_ALIAS/$out" >/dev/null 2>&1
  if [[ -n "$started_node" ]]; then "$testbed" node down >/dev/null 2>&1; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
log "building and importing the images"
images_env=$("$here/images.sh") || fail "building the images"
eval "$images_env"
ok "images built from this checkout and imported: $ZF_NODE_OPERATOR_IMAGE $ZF_NODE_RUNNER_IMAGE $ZF_NODE_TRANSFORM_IMAGE"

kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
wait_until 60 "the CRD is Established" kubectl wait --for=condition=Established crd/datapipelines.zeroflow.dev --timeout=5s
for n in "$ns_sys" "$ns"; do
  kubectl create namespace "$n" >/dev/null
  kubectl label namespace "$n" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null
done
kubectl -n "$ns_sys" create secret generic gateway-token --from-literal=token="$ZF_WEBHOOK_TOKEN" >/dev/null
kubectl -n "$ns" create secret generic store-creds --from-literal=accessKeyId="$ZF_S3_ACCESS_KEY" \
  --from-literal=secretAccessKey="$ZF_S3_SECRET_KEY" >/dev/null

# The operator on the real node. No kube-proxy and no DNS on the testbed: workers reach the
# lease API at a fixed address in the node netns that forwards to the operator pod.
cat >"$work/values.yaml" <<YAML
image: {repository: ${ZF_NODE_OPERATOR_IMAGE%:*}, tag: ${ZF_NODE_OPERATOR_IMAGE##*:}, pullPolicy: Never}
runnerImage: {repository: ${ZF_NODE_RUNNER_IMAGE%:*}, tag: ${ZF_NODE_RUNNER_IMAGE##*:}}
watchNamespaces: [$ns]
leaseApiUrl: http://$lease_vip:8081
gatewayToken: {existingSecret: gateway-token, key: token}
crds: {install: false}
nodeSelector: {$ZF_NODE_TAINT: "true"}
tolerations: [{key: $ZF_NODE_TAINT, operator: Exists, effect: NoSchedule}]
YAML
log "helm install (operator pod on node $ZF_NODE_NAME)"
if ! "$HELM" install "$rel" "$root/charts/zeroflow" -n "$ns_sys" -f "$work/values.yaml" --wait --timeout 3m \
  >"$work/helm.out" 2>&1; then
  cat "$work/helm.out"; fail "helm install"
fi
pod=$(kubectl -n "$ns_sys" get pod -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[0].metadata.name}')
pod_ip() { kubectl -n "$ns_sys" get pod "$pod" -o jsonpath='{.status.podIP}'; }
has_pod_ip() { [[ -n "$(pod_ip)" ]]; }
wait_until 60 "the operator pod reports its IP" has_pod_ip
pod_ip=$(pod_ip)
node=$(kubectl -n "$ns_sys" get pod "$pod" -o jsonpath='{.spec.nodeName}')
[[ "$node" == "$ZF_NODE_NAME" ]] || fail "operator pod on node '$node', want $ZF_NODE_NAME"
ok "helm install: operator pod $pod Ready on the real node ($pod_ip)"

"$testbed" node forward "gateway-$run_id" host "$ZF_WEBHOOK_ADDR" "$pod_ip:8080"
"$testbed" node forward "lease-$run_id" node "$lease_vip:8081" "$pod_ip:8081"
ok "forwarders: MinIO webhook $ZF_WEBHOOK_ADDR -> gateway, $lease_vip:8081 (node netns) -> lease API"

mc mb "$ZF_MC_ALIAS/$raw" "$ZF_MC_ALIAS/$out" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: zeroflow.dev/v1alpha1
kind: DataPipeline
metadata: {name: csv, namespace: $ns}
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
  scaling: {maxReplicas: 1, idleTimeout: 3s, scaleDownStabilization: 0s}
YAML
kubectl -n "$ns" wait --for=condition=Ready dp/csv --timeout=60s >/dev/null || fail "DataPipeline Ready"
replicas() { kubectl -n "$ns" get deploy csv-worker -o jsonpath='{.spec.replicas}'; }
replicas_are() { [[ "$(replicas)" == "$1" ]]; }
scaled_up() { [[ "$(replicas)" -ge 1 ]]; }
worker_pods() { kubectl -n "$ns" get pods -l zeroflow.dev/pipeline=csv -o jsonpath='{.items[*].metadata.name}'; }
no_worker_pods() { [[ -z "$(worker_pods)" ]]; }
# worker_running [NODE]: a worker pod is Running (on NODE).
worker_running() {
  kubectl -n "$ns" get pods -l zeroflow.dev/pipeline=csv \
    -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase}{"\n"}{end}' | grep -q "^${1:-.*} Running$"
}
succeeded() { kubectl -n "$ns" get dp csv -o jsonpath='{.status.succeeded}'; }
failed() { kubectl -n "$ns" get dp csv -o jsonpath='{.status.failed}'; }
succeeded_is() { [[ "$(succeeded)" == "$1" ]]; }
pod_gone() { ! kubectl -n "$ns" get pod "$1" >/dev/null 2>&1; }
[[ "$(replicas)" == 0 && -z "$(worker_pods)" ]] || fail "workers before any object: replicas $(replicas), pods '$(worker_pods)'"
ok "DataPipeline Ready, worker Deployment at 0 replicas, no worker pods"

# MinIO binds a bucket to the webhook target once it has seen the endpoint answer.
for _ in $(seq 1 30); do
  mc event add "$ZF_MC_ALIAS/$raw" "$ZF_WEBHOOK_ARN" --event put >/dev/null 2>&1 && break
  sleep 1
done
mc event ls "$ZF_MC_ALIAS/$raw" 2>/dev/null | grep -q ZEROFLOW || fail "mc event add: MinIO did not bind the bucket to the gateway"

# --- 0 -> 1 -> 0 with real work
for i in 1 2 3; do
  printf 'invoice,amount\nINV-%s,%s.50\nINV-%s-b,%s\n' "$i" "$((i * 100))" "$i" "$i" >"$work/invoice-$i.csv"
done
t0=$SECONDS
for i in 1 2 3; do mc cp -q "$work/invoice-$i.csv" "$ZF_MC_ALIAS/$raw/incoming/invoice-$i.csv" >/dev/null; done
wait_until 30 "the first event scales the workers from zero" scaled_up
ok "scaled 0 -> $(replicas) on the first event"
wait_until 60 "a worker pod Running on the real node" worker_running "$ZF_NODE_NAME"
worker=$(worker_pods)
ok "worker pod $worker Running on $ZF_NODE_NAME (runner installed by the init container)"
wait_until 90 "3 objects succeeded" succeeded_is 3
ok "3 objects processed in $((SECONDS - t0)) s after the first upload"
for i in 1 2 3; do
  got=$(mc cat "$ZF_MC_ALIAS/$out/jsonl/incoming/invoice-$i.csv/invoice-$i.jsonl") || fail "output of invoice-$i.csv missing"
  want=$(printf '{"invoice": "INV-%s", "amount": "%s.50"}\n{"invoice": "INV-%s-b", "amount": "%s"}' "$i" "$((i * 100))" "$i" "$i")
  [[ "$got" == "$want" ]] || fail "output of invoice-$i.csv: got '$got', want '$want'"
done
ok "outputs in the sink bucket: jsonl/incoming/invoice-{1,2,3}.csv/invoice-N.jsonl with the converted rows"
wait_until 60 "back to zero replicas when idle" replicas_are 0
wait_until 60 "the idle worker pod exits and is removed" no_worker_pods
[[ "$(failed)" == 0 ]] || fail "failed objects: $(failed)"
ok "scaled back 1 -> 0 when idle; the worker pod terminated"

# --- a busy worker gets SIGTERM from the kubelet and finishes its object first
mc cp -q "$work/invoice-1.csv" "$ZF_MC_ALIAS/$raw/incoming/slow-1.csv" >/dev/null
wait_until 60 "a worker pod Running for the slow object" worker_running
busy=$(worker_pods)
kubectl -n "$ns" logs -f "$busy" -c transform >"$work/busy.log" 2>&1 &
follow=$!
wait_until 30 "the worker leases the slow object" grep -q 'slow object, sleeping' "$work/busy.log"
deleted_at=$SECONDS
kubectl -n "$ns" delete pod "$busy" --wait=false >/dev/null
wait_until 60 "the busy worker's pod is gone" pod_gone "$busy"
took=$((SECONDS - deleted_at))
wait "$follow" 2>/dev/null || true
grep -q 'termination signal: draining' "$work/busy.log" || { cat "$work/busy.log"; fail "the runner never got SIGTERM"; }
grep -q 'completed' "$work/busy.log" || { cat "$work/busy.log"; fail "the busy worker did not complete its object"; }
grep -q 'drained, exiting' "$work/busy.log" || { cat "$work/busy.log"; fail "the runner did not exit after draining"; }
((took >= 3)) || fail "the pod went away after ${took}s, before the 6 s object could finish"
got=$(mc cat "$ZF_MC_ALIAS/$out/jsonl/incoming/slow-1.csv/slow-1.jsonl") || fail "output of slow-1.csv missing"
[[ "$(succeeded)" == 4 && "$(failed)" == 0 ]] || fail "after the slow object: succeeded $(succeeded), failed $(failed)"
ok "pod deleted while busy: SIGTERM, the object finished (${took}s), output written, runner exited"
wait_until 60 "back to zero after the slow object" replicas_are 0
ok "back to zero replicas"

echo "all node tests passed"
