#!/usr/bin/env bash
# Tests of charts/zeroflow, the Argo CD health check and least-privilege RBAC against the testbed.
#
#   e2e/testbed up && e2e/chart/test.sh [FILTER]
#
# FILTER (a bash regex) runs only the tests whose name matches (the RBAC, upgrade and uninstall
# tests need the install test's release). ZF_VERBOSE=1 also shows the output of passing tests.
# Prints one line per test and last "N passed, M failed"; exits non-zero if any failed.
#
# Every test runs in its own namespaces (prefix zfc-<run id>), and everything created is deleted
# at the end, including the cluster-scoped objects of the releases. The real CRD (datapipelines.zeroflow.dev) is never
# modified: install, CRD upgrade and uninstall run with a test copy of the chart whose CRD is
# renamed into a per-run API group, so other suites sharing the testbed are not disturbed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chart="$root/charts/zeroflow"
filter="${1:-}"

if [[ -z "${KUBECTL:-}" || -z "${HELM:-}" || -z "${KUBECONFIG:-}" ]]; then
  eval "$("$root/e2e/testbed" env)"
fi
kube_version="${ZF_KUBE_VERSION:-1.34.4}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
export GOMODCACHE="${GOMODCACHE:-$HOME/.cache/zeroflow-testbed/gomod}" GOCACHE="${GOCACHE:-$HOME/.cache/zeroflow-testbed/gocache}"

run_id="$(date +%H%M%S)$(printf '%04x' "$RANDOM")"
prefix="zfc-$run_id"
work="$(mktemp -d "${TMPDIR:-/tmp}/zeroflow-chart-test.XXXXXX")"
# Namespaces: the cluster-wide release, the limited release, two watched and one unwatched.
ns_sys="$prefix-sys"
ns_lim="$prefix-lim"
ns_a="$prefix-team-a"
ns_b="$prefix-team-b"
ns_other="$prefix-other"
ns_workers="$prefix-workers"
rel="$prefix"          # cluster-wide release; fullname "$rel-zeroflow"
rel_lim="$prefix-lim"  # limited release
test_group="t$run_id.chart-test.zeroflow.dev"
test_crd="datapipelines.$test_group"
adopt_group="a$run_id.chart-test.zeroflow.dev"
adopt_crd="datapipelines.$adopt_group"
ns_adopt="$prefix-adopt"
rel_adopt="$prefix-adopt"

kubectl() { "$KUBECTL" "$@"; }
helm() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

log() { printf '[chart-test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleaned=""
cleanup_resources() {
  [[ -z "$cleaned" ]] || return 0
  cleaned=1
  set +e
  log "cleaning up ($prefix)"
  for r in "$rel:$ns_sys" "$rel_lim:$ns_lim" "$rel_adopt:$ns_adopt"; do
    helm status "${r%%:*}" -n "${r##*:}" >/dev/null 2>&1 && helm uninstall "${r%%:*}" -n "${r##*:}" --wait=false >/dev/null 2>&1
  done
  for r in "$rel" "$rel_lim" "$rel_adopt"; do
    kubectl delete clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding \
      -l "app.kubernetes.io/instance=$r" --ignore-not-found --wait=false >/dev/null 2>&1
  done
  kubectl delete crd "$test_crd" "$adopt_crd" --ignore-not-found --wait=false >/dev/null 2>&1
  kubectl delete namespace "$ns_sys" "$ns_lim" "$ns_a" "$ns_b" "$ns_other" "$ns_workers" "$ns_adopt" \
    --ignore-not-found --wait=false >/dev/null 2>&1
  rm -rf "$work"
  set -e
}
# shellcheck source=../suite.sh
. "$(dirname "${BASH_SOURCE[0]}")/../suite.sh"

dump_ns() {
  local ns
  for ns in "$@"; do
    echo "--- state of namespace $ns"
    kubectl -n "$ns" get all,secrets,serviceaccounts,roles,rolebindings,leases -o wide 2>&1 | head -n 60
    kubectl -n "$ns" get events --sort-by=.lastTimestamp 2>&1 | tail -n 20
  done
}

# crd_kept NAME: the CRD exists and is not being deleted (a deleted CRD lingers while its
# finalizer removes the custom resources).
crd_kept() {
  local ts
  ts=$(kubectl get crd "$1" -o jsonpath='{.metadata.deletionTimestamp}') || fail "CRD $1 was deleted"
  [[ -z "$ts" ]] || fail "CRD $1 is being deleted (since $ts)"
  echo "CRD $1 kept"
}

new_ns() { # new_ns NAME [restricted]
  kubectl create namespace "$1" >/dev/null
  kubectl label namespace "$1" "zeroflow.dev/chart-test=$run_id" >/dev/null
  if [[ "${2:-}" == restricted ]]; then
    kubectl label namespace "$1" pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/enforce-version=latest pod-security.kubernetes.io/warn=restricted \
      pod-security.kubernetes.io/audit=restricted >/dev/null
  fi
}

# A copy of the chart whose CRD is renamed into a per-run API group (short names and categories
# dropped, so `kubectl get dp` of other suites stays unambiguous). $1: directory; $2 (optional):
# "printer-column" to add a column, as a new CRD version of the product would; $3: the group
# (default $test_group).
test_chart() {
  local dir=$1 variant=${2:-} group=${3:-$test_group}
  rm -rf "$dir"; mkdir -p "$dir"
  cp -rL "$chart" "$dir/zeroflow"
  python3 - "$dir/zeroflow/files/datapipelines.zeroflow.dev.yaml" "$group" "$variant" <<'PY'
import re, sys
path, group, variant = sys.argv[1:]
text = open(path).read()
text = text.replace("name: datapipelines.zeroflow.dev", f"name: datapipelines.{group}", 1)
text = text.replace("  group: zeroflow.dev\n", f"  group: {group}\n", 1)
text = re.sub(r"    categories:\n    - zeroflow\n", "", text, count=1)
text = re.sub(r"    shortNames:\n    - dp\n", "", text, count=1)
if variant == "printer-column":
    text = text.replace("  - additionalPrinterColumns:\n",
        "  - additionalPrinterColumns:\n    - jsonPath: .status.inFlight\n      name: InFlight\n      type: integer\n", 1)
assert f"name: datapipelines.{group}" in text and f"group: {group}" in text, "CRD rename failed"
open(path, "w").write(text)
PY
  echo "$dir/zeroflow"
}

sa_cluster="system:serviceaccount:$ns_sys:$rel-zeroflow"
sa_limited="system:serviceaccount:$ns_lim:$rel_lim-zeroflow"
# can AS VERB RESOURCE [can-i flags...] -> prints yes or no
can() { local as=$1; shift; kubectl auth can-i --as "$as" "$@" 2>/dev/null || true; }
expect_can() {
  local as=$1; shift
  local got; got=$(can "$as" "$@")
  [[ "$got" == yes ]] || fail "$as should be allowed to: $* (got '$got')"
  echo "allowed: $*"
}
expect_cannot() {
  local as=$1; shift
  local got; got=$(can "$as" "$@")
  [[ "$got" == no ]] || fail "$as must be refused: $* (got '$got')"
  echo "refused: $*"
}

# ---------------------------------------------------------------------------------------------
# Static checks

test_lint_default() {
  local out; out=$(helm lint --strict "$chart" 2>&1)
  echo "$out"
  expect_contains "lint" "$out" "1 chart(s) linted, 0 chart(s) failed"
  ! grep -E '\[(WARNING|ERROR)\]' <<<"$out" || fail "lint is not clean"
}

test_lint_non_default() {
  local f n=0
  for f in "$here"/values-*.yaml; do
    local out; out=$(helm lint --strict "$chart" -f "$f" 2>&1)
    echo "$out"
    expect_contains "lint $f" "$out" "1 chart(s) linted, 0 chart(s) failed"
    ! grep -E '\[(WARNING|ERROR)\]' <<<"$out" || fail "lint with $f is not clean"
    n=$((n + 1))
  done
  ((n > 0)) || fail "no e2e/chart/values-*.yaml"
}

test_crd_is_the_generated_file() {
  # The chart's CRD is a symlink to the generated file, so it cannot drift; helm follows it when
  # rendering and packaging.
  local link="$chart/files/datapipelines.zeroflow.dev.yaml"
  [[ -L "$link" ]] || fail "$link is not a symlink"
  expect_eq "symlink target" "$(readlink -f "$link")" "$root/crds/datapipelines.zeroflow.dev.yaml"
  helm package "$chart" -d "$work/pkg" >/dev/null
  tar -xzf "$work/pkg/zeroflow-"*.tgz -C "$work/pkg" zeroflow/files/datapipelines.zeroflow.dev.yaml
  cmp "$work/pkg/zeroflow/files/datapipelines.zeroflow.dev.yaml" "$root/crds/datapipelines.zeroflow.dev.yaml" \
    || fail "the packaged chart's CRD differs from crds/"
  # The rendered CRD is the file plus the keep policy and labels, nothing else.
  helm template zf "$chart" -n zeroflow-system --kube-version "$kube_version" --show-only templates/crds.yaml >"$work/crd.yaml"
  diff <(grep -v '^#' "$root/crds/datapipelines.zeroflow.dev.yaml" | sed '/^metadata:$/,/^  name:/d') \
       <(sed '/^metadata:$/,/^  name:/d' "$work/crd.yaml" | grep -v '^---' | grep -v '^# Source' | grep -v '^#') \
    || fail "rendered CRD differs from crds/ beyond metadata"
  expect_contains "keep policy" "$(cat "$work/crd.yaml")" "helm.sh/resource-policy: keep"
  [[ -z "$(helm template zf "$chart" --set crds.install=false --show-only templates/crds.yaml 2>/dev/null)" ]] \
    || fail "crds.install=false still renders the CRD"
  # Extra annotations (Argo CD's Delete=false) are added, and cannot remove the keep policy.
  local out; out=$(helm template zf "$chart" --show-only templates/crds.yaml \
    --set-json 'crds.annotations={"argocd.argoproj.io/sync-options":"Delete=false","helm.sh/resource-policy":"delete"}')
  expect_contains "extra CRD annotation" "$out" "argocd.argoproj.io/sync-options: Delete=false"
  expect_contains "keep policy wins" "$out" "helm.sh/resource-policy: keep"
}

test_render_is_deterministic() {
  # Argo CD renders the chart on every refresh with no cluster access: with an existing token
  # Secret, two renders must be identical, or the Application would never be in sync.
  local a b
  a=$(helm template zeroflow "$chart" -n zeroflow-system --kube-version "$kube_version" -f "$here/values-limited.yaml")
  b=$(helm template zeroflow "$chart" -n zeroflow-system --kube-version "$kube_version" -f "$here/values-limited.yaml")
  [[ "$a" == "$b" ]] || { diff <(echo "$a") <(echo "$b") | head -20; fail "two renders differ"; }
  a=$(helm template zeroflow "$chart" -n zeroflow-system --set gatewayToken.existingSecret=mine)
  b=$(helm template zeroflow "$chart" -n zeroflow-system --set gatewayToken.existingSecret=mine)
  [[ "$a" == "$b" ]] || { diff <(echo "$a") <(echo "$b") | head -20; fail "two renders differ"; }
  # Without it only the generated token differs (what docs/argocd.md warns about).
  a=$(helm template zeroflow "$chart" -n zeroflow-system); b=$(helm template zeroflow "$chart" -n zeroflow-system)
  local changed; changed=$(diff <(echo "$a") <(echo "$b") | grep -c '^[<>]' || true)
  expect_eq "lines that differ between two default renders" "$changed" "2"
}

test_schema_refuses_bad_values() {
  local out
  out=$(helm template zf "$chart" --set replicaCount=-1 2>&1) && fail "replicaCount=-1 was accepted"
  echo "$out"
  expect_contains "negative replicas" "$out" "values don't meet the specifications of the schema"
  expect_contains "negative replicas" "$out" "at '/replicaCount': minimum: got -1, want 0"
  out=$(helm template zf "$chart" --set logFormat=xml 2>&1) && fail "logFormat=xml was accepted"
  echo "$out"
  expect_contains "logFormat xml" "$out" "at '/logFormat': value must be one of 'plain', 'json'"
  out=$(helm template zf "$chart" --set replicaCont=2 2>&1) && fail "a misspelt key was accepted"
  expect_contains "typo" "$out" "additional properties 'replicaCont' not allowed"
  out=$(helm template zf "$chart" --set replicaCount=2 --set leaderElection.enabled=false 2>&1) \
    && fail "2 replicas without leader election were accepted"
  expect_contains "replicas without leader" "$out" "replicaCount > 1 needs leaderElection.enabled=true"
  out=$(helm template zf "$chart" --set defaultStore.endpoint=http://minio:9000 2>&1) \
    && fail "a default store without credentials was accepted"
  expect_contains "default store credentials" "$out" "at '/defaultStore/credentialsSecret': minLength: got 0, want 1"
  out=$(helm template zf "$chart" --set defaultStore.endpoint=http://minio:9000 --set defaultStore.credentialsSecret=s3)
  expect_contains "default store env" "$out" "name: ZEROFLOW_DEFAULT_STORE_SECRET_ACCESS_KEY"
  # helm install refuses the same values before touching the cluster.
  out=$(helm install "$prefix-bad" "$chart" -n default --set logFormat=xml --dry-run=server 2>&1) \
    && fail "helm install accepted logFormat=xml"
  expect_contains "install logFormat xml" "$out" "value must be one of 'plain', 'json'"
}

test_dashboard() {
  local json="$chart/dashboards/zeroflow.json"
  python3 - "$json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = " ".join(t["expr"] for p in d["panels"] for t in p.get("targets", []))
metrics = """zeroflow_reconciles_total zeroflow_reconcile_errors_total zeroflow_reconcile_duration_seconds
zeroflow_leader zeroflow_events_received_total zeroflow_backlog_pending zeroflow_inflight zeroflow_replicas
zeroflow_cold_start_seconds zeroflow_event_to_scale_seconds zeroflow_workapi_completions_total
zeroflow_processing_duration_seconds zeroflow_replica_seconds_total zeroflow_cpu_core_seconds_total
zeroflow_resync_discovered_total zeroflow_resync_duration_seconds""".split()
missing = [m for m in metrics if m not in exprs]
assert not missing, f"dashboard does not chart {missing}"
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
print(f"{len(d['panels'])} panels chart all {len(metrics)} metrics")
PY
  local out; out=$(helm template zf "$chart" --set dashboard.enabled=true --show-only templates/dashboard.yaml)
  expect_contains "dashboard ConfigMap label" "$out" 'grafana_dashboard: "1"'
  expect_contains "dashboard ConfigMap content" "$out" '"uid": "zeroflow-overview"'
  [[ -z "$(helm template zf "$chart" --show-only templates/dashboard.yaml 2>/dev/null)" ]] || fail "dashboard on by default"
}

test_pod_patch_guard_render() {
  local out
  out=$(helm template zf "$chart" -n zeroflow-system --kube-version "$kube_version" --show-only templates/podpatchguard.yaml)
  echo "$out"
  expect_contains "policy" "$out" "kind: ValidatingAdmissionPolicy"
  expect_contains "policy name" "$out" "name: zf-zeroflow-pod-patch-guard"
  expect_contains "binding" "$out" "kind: ValidatingAdmissionPolicyBinding"
  expect_contains "binding denies" "$out" "validationActions: [Deny]"
  expect_contains "only the operator's requests" "$out" \
    "request.userInfo.username == 'system:serviceaccount:zeroflow-system:zf-zeroflow'"
  # The ServiceAccount's name follows serviceAccount.name, its namespace the release's.
  out=$(helm template zf "$chart" -n ops --set serviceAccount.create=false --set serviceAccount.name=mine \
    --show-only templates/podpatchguard.yaml)
  expect_contains "named ServiceAccount" "$out" "request.userInfo.username == 'system:serviceaccount:ops:mine'"
  [[ -z "$(helm template zf "$chart" --set podPatchGuard.enabled=false --show-only templates/podpatchguard.yaml 2>/dev/null)" ]] \
    || fail "podPatchGuard.enabled=false still renders the policy"
  out=$(helm template zf "$chart" --set podPatchGuard.enabled=yes 2>&1) && fail "podPatchGuard.enabled=yes was accepted"
  expect_contains "not a boolean" "$out" "at '/podPatchGuard/enabled': got string, want boolean"
  out=$(helm template zf "$chart" --set podPatchGuard.enable=false 2>&1) && fail "podPatchGuard.enable was accepted"
  expect_contains "typo" "$out" "additional properties 'enable' not allowed"
}

test_argocd_health() {
  cd "$root/argocd/healthtest"
  ZEROFLOW_APP_VALUES="$work/app-values.yaml" go test -count=1 -v ./... >"$work/go-test.out" 2>&1 \
    || { cat "$work/go-test.out"; fail "go test"; }
  local cases; cases=$(grep -c -- '--- PASS: TestHealthChecks/.*/testdata/' "$work/go-test.out")
  echo "$cases health cases passed"
  ((cases >= 10)) || fail "only $cases cases ran"
  grep -q -- '--- PASS: TestExampleApplication' "$work/go-test.out" || fail "TestExampleApplication did not run"
  # The example Application's values are valid for the chart, and render the same every time
  # (no perpetual OutOfSync).
  cat "$work/app-values.yaml"
  local out; out=$(helm lint --strict "$chart" -f "$work/app-values.yaml" 2>&1)
  expect_contains "lint with the Application's values" "$out" "0 chart(s) failed"
  local a b
  a=$(helm template zeroflow "$chart" -n zeroflow-system --kube-version "$kube_version" -f "$work/app-values.yaml")
  b=$(helm template zeroflow "$chart" -n zeroflow-system --kube-version "$kube_version" -f "$work/app-values.yaml")
  [[ "$a" == "$b" ]] || fail "the example Application's render is not deterministic"
}

# ---------------------------------------------------------------------------------------------
# Against the apiserver

test_dry_run_default() {
  new_ns "$ns_sys" restricted
  helm template "$rel" "$chart" -n "$ns_sys" --kube-version "$kube_version" >"$work/default.yaml"
  kubectl apply --dry-run=server -f "$work/default.yaml" 2>&1 | tee "$work/dry.out"
  local kind
  for kind in customresourcedefinition serviceaccount secret clusterrole clusterrolebinding role rolebinding service deployment \
    validatingadmissionpolicy validatingadmissionpolicybinding; do
    grep -q "^${kind}[./]" "$work/dry.out" || fail "no $kind in the default render"
  done
  ! grep -qi 'violate PodSecurity' "$work/dry.out" || fail "PodSecurity warnings"
}

test_dry_run_non_default() {
  new_ns "$ns_lim" restricted; new_ns "$ns_a"; new_ns "$ns_b"
  helm template "$rel_lim" "$chart" -n "$ns_lim" --kube-version "$kube_version" -f "$here/values-limited.yaml" \
    --set "watchNamespaces={$ns_a,$ns_b}" >"$work/limited.yaml"
  # No ServiceMonitor CRD on the testbed: check that one by content, the rest with the apiserver.
  python3 - "$work/limited.yaml" "$work/limited-core.yaml" "$work/servicemonitor.yaml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("\n---\n")
core = [d for d in docs if "kind: ServiceMonitor" not in d]
sm = [d for d in docs if "kind: ServiceMonitor" in d]
assert len(sm) == 1, f"want one ServiceMonitor, got {len(sm)}"
open(sys.argv[2], "w").write("\n---\n".join(core))
open(sys.argv[3], "w").write(sm[0])
PY
  kubectl apply --dry-run=server -f "$work/limited-core.yaml" 2>&1 | tee "$work/dry.out"
  ! grep -qi 'violate PodSecurity' "$work/dry.out" || fail "PodSecurity warnings"
  for kind in "poddisruptionbudget.policy/$rel_lim-zeroflow" "networkpolicy.networking.k8s.io/$rel_lim-zeroflow" \
    "configmap/$rel_lim-zeroflow-dashboard" "role.rbac.authorization.k8s.io/$rel_lim-zeroflow"; do
    expect_contains "dry run" "$(cat "$work/dry.out")" "$kind"
  done
  ! grep -q "clusterrole.rbac.authorization.k8s.io/$rel_lim-zeroflow " "$work/dry.out" \
    || fail "limited mode must not create the workload ClusterRole"
  expect_contains "ServiceMonitor" "$(cat "$work/servicemonitor.yaml")" "port: metrics"
  ! grep -q 'kind: Secret' "$work/limited.yaml" || fail "existingSecret set, yet a Secret is rendered"
  ! grep -q 'kind: CustomResourceDefinition' "$work/limited.yaml" || fail "crds.install=false still renders the CRD"
}

test_install_restricted() {
  kubectl get namespace "$ns_sys" >/dev/null 2>&1 || new_ns "$ns_sys" restricted
  local c; c=$(test_chart "$work/chart-v1")
  helm install "$rel" "$c" -n "$ns_sys" --wait --timeout 3m 2>&1 | tee "$work/install.out" \
    || { dump_ns "$ns_sys"; fail "helm install"; }
  ! grep -qi 'violate PodSecurity' "$work/install.out" || fail "PodSecurity warnings at install"
  expect_contains "NOTES" "$(cat "$work/install.out")" "Send storage events to the gateway"
  kubectl -n "$ns_sys" rollout status "deploy/$rel-zeroflow" --timeout=2m
  kubectl -n "$ns_sys" wait pod -l "app.kubernetes.io/instance=$rel" --for=condition=Ready --timeout=2m
  local phases; phases=$(kubectl -n "$ns_sys" get pods -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[*].status.phase}')
  expect_eq "pod phases" "$phases" "Running"
  # The pods really run with the restricted settings.
  local sc; sc=$(kubectl -n "$ns_sys" get pods -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[0].spec.containers[0].securityContext}')
  for want in '"allowPrivilegeEscalation":false' '"readOnlyRootFilesystem":true' '"runAsNonRoot":true' '"drop":["ALL"]' '"type":"RuntimeDefault"'; do
    expect_contains "securityContext" "$sc" "$want"
  done
  local svc; svc=$(kubectl -n "$ns_sys" get svc "$rel-zeroflow" -o jsonpath='{range .spec.ports[*]}{.name}={.port} {end}')
  expect_eq "service ports" "$svc" "gateway=8080 lease-api=8081 metrics=9090 "
  local url; url=$(kubectl -n "$ns_sys" get deploy "$rel-zeroflow" \
    -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="ZEROFLOW_LEASE_API_URL")].value}')
  expect_eq "lease API URL" "$url" "http://$rel-zeroflow.$ns_sys.svc:8081"
  local token; token=$(kubectl -n "$ns_sys" get secret "$rel-zeroflow-gateway-token" -o jsonpath='{.data.token}' | base64 -d)
  ((${#token} == 48)) || fail "generated gateway token has ${#token} characters, want 48"
  echo "$token" >"$work/token.v1"
  kubectl get crd "$test_crd" -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}' | grep -qx keep \
    || fail "the CRD lacks the keep policy"
}

test_worker_pod_restricted() {
  new_ns "$ns_workers" restricted
  kubectl -n "$ns_workers" create serviceaccount invoices-worker >/dev/null
  kubectl -n "$ns_workers" patch serviceaccount invoices-worker -p '{"automountServiceAccountToken":false}' >/dev/null
  local out; out=$(kubectl -n "$ns_workers" create -f "$here/worker-pod.yaml" 2>&1) || fail "worker pod refused: $out"
  echo "$out"
  ! grep -qi 'violate PodSecurity' <<<"$out" || fail "PodSecurity warnings: $out"
  kubectl -n "$ns_workers" wait pod/invoices-worker-test --for=condition=Ready --timeout=2m
  # And the check bites: the same pod with privilege escalation allowed is refused.
  sed 's/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/; s/name: invoices-worker-test/name: invoices-worker-bad/' \
    "$here/worker-pod.yaml" >"$work/bad-pod.yaml"
  out=$(kubectl -n "$ns_workers" create -f "$work/bad-pod.yaml" 2>&1) && fail "an escalating pod was admitted"
  expect_contains "restricted refusal" "$out" 'violates PodSecurity "restricted:latest"'
}

test_rbac_cluster_wide() {
  local as=$sa_cluster ns=$ns_a
  kubectl get namespace "$ns_a" >/dev/null 2>&1 || new_ns "$ns_a"
  for verb in get list watch; do expect_can "$as" "$verb" datapipelines.zeroflow.dev -n "$ns"; done
  expect_can "$as" list datapipelines.zeroflow.dev --all-namespaces
  expect_can "$as" patch datapipelines.zeroflow.dev --subresource=status -n "$ns"
  for verb in get list watch create patch; do
    expect_can "$as" "$verb" deployments.apps -n "$ns"
    expect_can "$as" "$verb" serviceaccounts -n "$ns"
  done
  expect_can "$as" get secrets -n "$ns"
  for verb in create patch; do expect_can "$as" "$verb" events.events.k8s.io -n "$ns"; done
  for verb in get create patch; do expect_can "$as" "$verb" leases.coordination.k8s.io -n "$ns_sys"; done
  for verb in list patch; do expect_can "$as" "$verb" pods -n "$ns"; done
  # Nothing the operator does not call yet.
  for verb in update delete; do
    expect_cannot "$as" "$verb" deployments.apps -n "$ns"
    expect_cannot "$as" "$verb" serviceaccounts -n "$ns"
  done
  expect_can "$as" patch deployments.apps --subresource=scale -n "$ns"
  expect_cannot "$as" update deployments.apps --subresource=scale -n "$ns"
  expect_cannot "$as" get pods -n "$ns"
  expect_cannot "$as" watch pods -n "$ns"
  expect_cannot "$as" update datapipelines.zeroflow.dev --subresource=status -n "$ns"
  expect_can "$as" create tokenreviews.authentication.k8s.io
  expect_cannot "$as" update leases.coordination.k8s.io -n "$ns_sys"
  # Refused.
  expect_cannot "$as" list secrets -n "$ns"
  expect_cannot "$as" watch secrets -n "$ns"
  expect_cannot "$as" list secrets --all-namespaces
  expect_cannot "$as" create secrets -n "$ns"
  expect_cannot "$as" delete namespaces
  expect_cannot "$as" create clusterroles.rbac.authorization.k8s.io
  expect_cannot "$as" create rolebindings.rbac.authorization.k8s.io -n "$ns"
  expect_cannot "$as" create pods -n "$ns"
  expect_cannot "$as" create pods --subresource=exec -n "$ns"
  expect_cannot "$as" delete pods -n "$ns"
  expect_cannot "$as" create serviceaccounts --subresource=token -n "$ns"
  expect_cannot "$as" patch nodes
  expect_cannot "$as" create datapipelines.zeroflow.dev -n "$ns"
  expect_cannot "$as" delete datapipelines.zeroflow.dev -n "$ns"
  expect_cannot "$as" patch datapipelines.zeroflow.dev -n "$ns"
  expect_cannot "$as" update customresourcedefinitions.apiextensions.k8s.io
  expect_cannot "$as" create leases.coordination.k8s.io -n "$ns"
  expect_cannot "$as" delete leases.coordination.k8s.io -n "$ns_sys"
  expect_cannot "$as" create subjectaccessreviews.authorization.k8s.io
  expect_cannot "$as" get configmaps -n "$ns"
  expect_cannot "$as" create events -n "$ns"
  expect_cannot "$as" impersonate serviceaccounts -n "$ns"
  # Exactly the rules the operator uses: the workload ClusterRole has 8 rules and nothing with '*'.
  local rules; rules=$(kubectl get clusterrole "$rel-zeroflow" -o jsonpath='{range .rules[*]}{.apiGroups}{.resources}{.verbs};{end}')
  echo "$rules"
  ! grep -q '\*' <<<"$rules" || fail "wildcard in the ClusterRole"
  expect_eq "rule count" "$(kubectl get clusterrole "$rel-zeroflow" -o go-template='{{len .rules}}')" "8"
}

# sa_patch POD TYPE PATCH [QUERY]: sends PATCH with the operator's (cluster-wide release) own
# ServiceAccount token to a pod of $ns_workers, as the scaler does (`kubectl patch --as` would GET
# the pod first, which the ServiceAccount may not). TYPE: merge or json. Prints the HTTP status
# and the Status message, if any; the response body is left in $work/patch.out.
sa_patch() {
  local pod=$1 type=$2 patch=$3 query=${4:-}
  if [[ ! -s "$work/sa.token" ]]; then
    kubectl -n "$ns_sys" create token "$rel-zeroflow" --duration 10m >"$work/sa.token"
    local ca; ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
    if [[ -n "$ca" ]]; then
      base64 -d <<<"$ca" >"$work/ca.crt"
    else
      cp "$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" "$work/ca.crt"
    fi
  fi
  local server; server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  local code
  code=$(curl -sS --cacert "$work/ca.crt" -X PATCH -H "Authorization: Bearer $(cat "$work/sa.token")" \
    -H "Content-Type: application/$type-patch+json" --data "$patch" -o "$work/patch.out" -w '%{http_code}' \
    "$server/api/v1/namespaces/$ns_workers/pods/$pod${query:+?$query}")
  printf '%s %s\n' "$code" "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("message", ""))' "$work/patch.out")"
}

# expect_sa_patch WANT-CODE [MESSAGE] -- POD TYPE PATCH: sa_patch answers WANT-CODE (and MESSAGE).
expect_sa_patch() {
  local want=$1 msg=""; shift
  if [[ "$1" != -- ]]; then msg=$1; shift; fi
  shift
  local got; got=$(sa_patch "$@")
  echo "$3 -> $got"
  expect_eq "status of $3 on $1" "${got%% *}" "$want"
  [[ -z "$msg" ]] || expect_contains "message of $3 on $1" "$got" "$msg"
}

test_pod_patch_guard() {
  helm status "$rel" -n "$ns_sys" >/dev/null || fail "needs the release of the install test"
  local worker=invoices-worker-test plain=plain-pod-test
  kubectl -n "$ns_workers" get pod "$worker" >/dev/null || fail "needs the pod of the worker pod test"
  local policy="$rel-zeroflow-pod-patch-guard"
  expect_eq "binding's policy" "$(kubectl get validatingadmissionpolicybinding "$policy" -o jsonpath='{.spec.policyName}')" "$policy"
  # The apiserver type-checks every expression against the Pod schema and reports any warning in
  # the policy's status.
  local deadline=$((SECONDS + 30))
  until [[ "$(kubectl get validatingadmissionpolicy "$policy" -o jsonpath='{.status.observedGeneration}')" == \
           "$(kubectl get validatingadmissionpolicy "$policy" -o jsonpath='{.metadata.generation}')" ]]; do
    ((SECONDS < deadline)) || fail "the policy's status was not updated within 30 s"
    sleep 0.5
  done
  expect_eq "type-checking warnings" \
    "$(kubectl get validatingadmissionpolicy "$policy" -o jsonpath='{.status.typeChecking.expressionWarnings}')" ""
  # The policy applies once the apiserver has loaded it: wait until a dry-run label change by the
  # operator is refused.
  local refusal="the zeroflow operator may only change the controller.kubernetes.io/pod-deletion-cost annotation of zeroflow worker pods"
  local start=$SECONDS
  deadline=$((SECONDS + 30))
  until [[ "$(sa_patch "$worker" merge '{"metadata":{"labels":{"zfc-probe":"x"}}}' dryRun=All)" == "403 "*"$refusal"* ]]; do
    ((SECONDS < deadline)) || { sa_patch "$worker" merge '{"metadata":{"labels":{"zfc-probe":"x"}}}' dryRun=All; fail "the policy did not apply within 30 s"; }
    sleep 0.2
  done
  echo "policy active after $((SECONDS - start)) s"

  # What the scaler sends is allowed (set, changed).
  local cost='{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"%s"}}}'
  expect_sa_patch 200 -- "$worker" merge "$(printf "$cost" 2000)"
  expect_sa_patch 200 -- "$worker" merge "$(printf "$cost" 0)"
  expect_eq "deletion cost" "$(kubectl -n "$ns_workers" get pod "$worker" \
    -o jsonpath='{.metadata.annotations.controller\.kubernetes\.io/pod-deletion-cost}')" 0
  local shape='{.metadata.labels}|{.metadata.annotations}|{.metadata.finalizers}|{.spec}'
  local before; before=$(kubectl -n "$ns_workers" get pod "$worker" -o jsonpath="$shape")

  # Anything else the ServiceAccount could do with `pods: patch` is refused.
  expect_sa_patch 403 "$refusal: labels changed" -- "$worker" merge '{"metadata":{"labels":{"team":"evil"}}}'
  expect_sa_patch 403 "$refusal: labels changed" -- "$worker" merge '{"metadata":{"labels":{"zeroflow.dev/pipeline":null}}}'
  expect_sa_patch 403 "$refusal: another annotation changed" -- "$worker" merge '{"metadata":{"annotations":{"team":"evil"}}}'
  expect_sa_patch 403 "$refusal: another annotation changed" -- "$worker" merge \
    '{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"1000","team":"evil"}}}'
  expect_sa_patch 403 "$refusal: the spec changed" -- "$worker" json \
    '[{"op":"replace","path":"/spec/containers/0/image","value":"ghcr.io/evil/miner:1"}]'
  expect_sa_patch 403 "$refusal: finalizers or ownerReferences changed" -- "$worker" merge '{"metadata":{"finalizers":["evil.example/hold"]}}'
  expect_eq "worker pod after the refusals" "$(kubectl -n "$ns_workers" get pod "$worker" -o jsonpath="$shape")" "$before"

  # A pod without the zeroflow.dev/pipeline label (else worker-shaped) is not the operator's to touch.
  sed "/zeroflow.dev\/pipeline:/d; s/name: $worker/name: $plain/" "$here/worker-pod.yaml" >"$work/plain-pod.yaml"
  ! grep -q 'zeroflow.dev/pipeline' "$work/plain-pod.yaml" || fail "the label is still in $work/plain-pod.yaml"
  kubectl -n "$ns_workers" create -f "$work/plain-pod.yaml"
  expect_sa_patch 403 "$refusal: this pod has no zeroflow.dev/pipeline label" -- "$plain" merge "$(printf "$cost" 1000)"
  expect_eq "non-worker pod's annotations" "$(kubectl -n "$ns_workers" get pod "$plain" -o jsonpath='{.metadata.annotations}')" ""

  # Other users are not matched: an admin still patches a worker pod's labels, after which the
  # operator still sets the cost.
  kubectl -n "$ns_workers" patch pod "$worker" --type merge -p '{"metadata":{"labels":{"team":"finance"}}}'
  expect_eq "admin's label" "$(kubectl -n "$ns_workers" get pod "$worker" -o jsonpath='{.metadata.labels.team}')" finance
  expect_sa_patch 200 -- "$worker" merge "$(printf "$cost" 3000)"
  kubectl -n "$ns_workers" delete pod "$plain" --wait=false
}

test_rbac_limited() {
  kubectl get namespace "$ns_lim" >/dev/null 2>&1 || new_ns "$ns_lim" restricted
  for n in "$ns_a" "$ns_b"; do kubectl get namespace "$n" >/dev/null 2>&1 || new_ns "$n"; done
  new_ns "$ns_other"
  kubectl -n "$ns_lim" create secret generic zeroflow-gateway-token-external --from-literal=bearer=test-token >/dev/null
  # values-limited.yaml as it is, except the ServiceMonitor (no prometheus-operator on the testbed).
  helm install "$rel_lim" "$chart" -n "$ns_lim" -f "$here/values-limited.yaml" --set "watchNamespaces={$ns_a,$ns_b}" \
    --set serviceMonitor.enabled=false --wait --timeout 3m >"$work/install-lim.out" 2>&1 \
    || { cat "$work/install-lim.out"; dump_ns "$ns_lim"; fail "helm install (limited)"; }
  kubectl -n "$ns_lim" wait pod -l "app.kubernetes.io/instance=$rel_lim" --for=condition=Ready --timeout=2m
  # Only the leader is ready on a real node (followers answer 503), so check the value, not readiness.
  expect_eq "replicas" "$(kubectl -n "$ns_lim" get deploy "$rel_lim-zeroflow" -o jsonpath='{.spec.replicas}')" "2"
  expect_eq "ZEROFLOW_NAMESPACES" "$(kubectl -n "$ns_lim" get deploy "$rel_lim-zeroflow" \
    -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="ZEROFLOW_NAMESPACES")].value}')" "$ns_a,$ns_b"
  local as=$sa_limited n
  for n in "$ns_a" "$ns_b"; do
    expect_can "$as" watch datapipelines.zeroflow.dev -n "$n"
    expect_can "$as" patch datapipelines.zeroflow.dev --subresource=status -n "$n"
    expect_can "$as" create deployments.apps -n "$n"
    expect_can "$as" patch serviceaccounts -n "$n"
    expect_can "$as" patch deployments.apps --subresource=scale -n "$n"
    expect_can "$as" get secrets -n "$n"
    expect_can "$as" create events.events.k8s.io -n "$n"
    expect_can "$as" patch pods -n "$n"
    expect_cannot "$as" list secrets -n "$n"
  done
  expect_can "$as" patch leases.coordination.k8s.io -n "$ns_lim"
  expect_can "$as" create tokenreviews.authentication.k8s.io
  # Nothing outside the listed namespaces.
  expect_cannot "$as" get secrets -n "$ns_other"
  expect_cannot "$as" get secrets -n "$ns_sys"
  expect_cannot "$as" list datapipelines.zeroflow.dev -n "$ns_other"
  expect_cannot "$as" list datapipelines.zeroflow.dev --all-namespaces
  expect_cannot "$as" create deployments.apps -n "$ns_other"
  expect_cannot "$as" patch deployments.apps -n "$ns_other"
  expect_cannot "$as" patch pods -n "$ns_other"
  expect_cannot "$as" create leases.coordination.k8s.io -n "$ns_a"
  expect_cannot "$as" delete namespaces
  expect_cannot "$as" create clusterroles.rbac.authorization.k8s.io
  expect_cannot "$as" create pods --subresource=exec -n "$ns_a"
  expect_cannot "$as" create serviceaccounts --subresource=token -n "$ns_a"
  expect_cannot "$as" patch nodes
  # The existing Secret is mounted, none is generated.
  ! kubectl -n "$ns_lim" get secret "$rel_lim-zeroflow-gateway-token" >/dev/null 2>&1 || fail "a token Secret was generated"
  expect_eq "token secret" "$(kubectl -n "$ns_lim" get deploy "$rel_lim-zeroflow" \
    -o jsonpath='{.spec.template.spec.volumes[?(@.name=="gateway-token")].secret.secretName}')" zeroflow-gateway-token-external
}

test_upgrade() {
  helm status "$rel" -n "$ns_sys" >/dev/null || fail "needs the release of the install test"
  local c; c=$(test_chart "$work/chart-v2" printer-column)
  kubectl get crd "$test_crd" -o jsonpath='{.spec.versions[0].additionalPrinterColumns[*].name}' | tee "$work/cols.before"
  ! grep -qw InFlight "$work/cols.before" || fail "the column is there before the upgrade"
  helm upgrade "$rel" "$c" -n "$ns_sys" --reuse-values --set logFormat=json --wait --timeout 3m
  expect_eq "log format" "$(kubectl -n "$ns_sys" get deploy "$rel-zeroflow" \
    -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="ZEROFLOW_LOG_FORMAT")].value}')" json
  kubectl -n "$ns_sys" rollout status "deploy/$rel-zeroflow" --timeout=2m
  local cols; cols=$(kubectl get crd "$test_crd" -o jsonpath='{.spec.versions[0].additionalPrinterColumns[*].name}')
  echo "columns after upgrade: $cols"
  grep -qw InFlight <<<"$cols" || fail "helm upgrade did not upgrade the CRD (columns: $cols)"
  # The generated gateway token survives upgrades (lookup).
  local token; token=$(kubectl -n "$ns_sys" get secret "$rel-zeroflow-gateway-token" -o jsonpath='{.data.token}' | base64 -d)
  expect_eq "gateway token after upgrade" "$token" "$(cat "$work/token.v1")"
  # Turning crds.install off drops the CRD from the release; without the keep policy helm
  # would delete it, and every DataPipeline with it.
  helm upgrade "$rel" "$c" -n "$ns_sys" --reuse-values --set crds.install=false --wait --timeout 3m >"$work/upgrade2.out" 2>&1 \
    || { cat "$work/upgrade2.out"; fail "helm upgrade --set crds.install=false"; }
  crd_kept "$test_crd"
}

test_uninstall_keeps_crd() {
  helm status "$rel" -n "$ns_sys" >/dev/null || fail "needs the release of the install test"
  helm uninstall "$rel" -n "$ns_sys" --wait --timeout 2m
  local left
  left=$(kubectl -n "$ns_sys" get deploy,rs,pods,svc,secrets,serviceaccounts,roles,rolebindings \
    -l "app.kubernetes.io/instance=$rel" -o name 2>&1)
  # Pods of a deleted Deployment go away through the garbage collector; wait for them.
  if [[ -n "$left" ]]; then
    kubectl -n "$ns_sys" wait pod -l "app.kubernetes.io/instance=$rel" --for=delete --timeout=2m
    left=$(kubectl -n "$ns_sys" get deploy,rs,pods,svc,secrets,serviceaccounts,roles,rolebindings \
      -l "app.kubernetes.io/instance=$rel" -o name 2>&1)
  fi
  [[ -z "$left" ]] || fail "left behind: $left"
  left=$(kubectl get clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings \
    -l "app.kubernetes.io/instance=$rel" -o name)
  [[ -z "$left" ]] || fail "left behind: $left"
  crd_kept "$test_crd"
}

test_adopt_kubectl_applied_crd() {
  # The README's quickstart: `kubectl apply --server-side -f crds/`, then `helm install` with
  # the default values. The release installs next to the CRD and leaves it alone (it stays
  # kubectl's, upgrades included) until it is handed over, after which helm upgrades it.
  new_ns "$ns_adopt" restricted
  local c; c=$(test_chart "$work/chart-adopt" "" "$adopt_group")
  kubectl apply --server-side -f "$c/files/datapipelines.zeroflow.dev.yaml"
  helm install "$rel_adopt" "$c" -n "$ns_adopt" --wait --timeout 2m >"$work/adopt.out" 2>&1 \
    || { cat "$work/adopt.out"; fail "helm install next to a kubectl-applied CRD"; }
  # Captured first: under pipefail, `helm ... | grep -q` fails when grep stops reading early.
  local manifest; manifest=$(helm get manifest "$rel_adopt" -n "$ns_adopt")
  ! grep -q '^kind: CustomResourceDefinition' <<<"$manifest" || fail "the release took over the kubectl-applied CRD"
  local managers; managers=$(kubectl get crd "$adopt_crd" -o jsonpath='{.metadata.managedFields[*].manager}')
  ! grep -qw helm <<<"$managers" || fail "helm install wrote to the kubectl-applied CRD (managers: $managers)"
  expect_eq "CRD owner annotation" \
    "$(kubectl get crd "$adopt_crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" ""
  # An upgrade with a changed CRD leaves it alone too.
  c=$(test_chart "$work/chart-adopt" printer-column "$adopt_group")
  helm upgrade "$rel_adopt" "$c" -n "$ns_adopt" --reuse-values --wait --timeout 2m >/dev/null
  local columns='{.spec.versions[0].additionalPrinterColumns[*].name}'
  ! grep -qw InFlight <<<"$(kubectl get crd "$adopt_crd" -o jsonpath="$columns")" \
    || fail "helm upgrade changed a CRD the release does not own"
  echo "kubectl-applied CRD left alone by helm install and helm upgrade"
  # Handed over as the chart README says, the next upgrade upgrades it.
  kubectl annotate crd "$adopt_crd" meta.helm.sh/release-name="$rel_adopt" meta.helm.sh/release-namespace="$ns_adopt"
  kubectl label crd "$adopt_crd" app.kubernetes.io/managed-by=Helm
  helm upgrade "$rel_adopt" "$c" -n "$ns_adopt" --reuse-values --wait --timeout 2m >/dev/null
  grep -qw InFlight <<<"$(kubectl get crd "$adopt_crd" -o jsonpath="$columns")" || fail "the adopted CRD was not upgraded"
  manifest=$(helm get manifest "$rel_adopt" -n "$ns_adopt")
  grep -q '^kind: CustomResourceDefinition' <<<"$manifest" || fail "the adopted CRD is not in the release"
  helm uninstall "$rel_adopt" -n "$ns_adopt" --wait --timeout 2m >/dev/null
  crd_kept "$adopt_crd"
  kubectl delete crd "$adopt_crd" --wait=false
}

t "helm lint: default values" test_lint_default
t "helm lint: e2e/chart/values-*.yaml" test_lint_non_default
t "chart CRD is crds/datapipelines.zeroflow.dev.yaml (symlink, package, render)" test_crd_is_the_generated_file
t "values schema refuses bad values with a readable message" test_schema_refuses_bad_values
t "helm template is deterministic with an existing token Secret (Argo CD)" test_render_is_deterministic
t "Grafana dashboard: valid JSON, every metric, optional ConfigMap" test_dashboard
t "pod patch guard: rendered by default, off by value, schema-checked" test_pod_patch_guard_render
t "Argo CD: health check (gopher-lua, health_test.yaml), example Application" test_argocd_health
t "helm template (default) | kubectl apply --dry-run=server" test_dry_run_default
t "helm template (values-limited) | kubectl apply --dry-run=server" test_dry_run_non_default
t "helm install into a restricted namespace; pods Running" test_install_restricted
t "worker-shaped pod admitted in a restricted namespace" test_worker_pod_restricted
t "RBAC cluster-wide: exactly the needed permissions" test_rbac_cluster_wide
t "pod patch guard: the operator may only set worker pods' deletion cost" test_pod_patch_guard
t "RBAC limited to watchNamespaces; existing token Secret" test_rbac_limited
t "helm upgrade changes values, upgrades the CRD, keeps it when crds.install=false" test_upgrade
t "helm uninstall removes everything but the CRD" test_uninstall_keeps_crd
t "kubectl-applied CRD (README quickstart): left alone by install and upgrade, adoption" test_adopt_kubectl_applied_crd

finish
