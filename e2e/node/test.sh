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
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

rc=0; why=$("$root/e2e/testbed" node check) || rc=$?
if ((rc == 3)); then
  echo "SKIP e2e/node/test.sh: this machine cannot run a real node: $why"
  exit 0
elif ((rc != 0)); then
  echo "FAILED e2e/testbed node check (exit $rc): $why"; exit 1
fi
log_tag="node-test"
. "$root/e2e/node/lib.sh"

zfn_start_node
# The network rule, checked without sending anything: the node netns (and so every pod) has no
# route beyond the harness's own subnets.
[[ -z "$(ip -n "$ZF_NODE_NETNS" route show default)" ]] || fail "the node netns has a default route"
! ip -n "$ZF_NODE_NETNS" route show | grep -vE "^(10\.245\.|172\.30\.)" | grep -q . \
  || fail "the node netns routes beyond the harness's subnets: $(ip -n "$ZF_NODE_NETNS" route show)"
ok "node $ZF_NODE_NAME: its netns routes only the harness's subnets (no default route)"
zfn_install_operator
zfn_pipeline "{maxReplicas: 1, idleTimeout: 3s, scaleDownStabilization: 0s}"
[[ "$(replicas)" == 0 && -z "$(worker_pods)" ]] || fail "workers before any object: replicas $(replicas), pods '$(worker_pods)'"
ok "DataPipeline Ready, worker Deployment at 0 replicas, no worker pods"

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
wait_until 30 "the slow object counted as succeeded" succeeded_is 4
[[ "$(failed)" == 0 ]] || fail "after the slow object: failed $(failed)"
ok "pod deleted while busy: SIGTERM, the object finished (${took}s), output written, runner exited"
wait_until 60 "back to zero after the slow object" replicas_are 0
ok "back to zero replicas"

echo "all node tests passed"
