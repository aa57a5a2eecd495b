#!/usr/bin/env bash
# Tests of the example pipelines in examples/, without running them on the cluster:
#
#   e2e/testbed up && e2e/examples/test.sh [FILTER]
#
# 1. Each example's transform runs on every file in its sample/ under zeroflow's exec contract
#    (the input in a fresh private directory as ZEROFLOW_INPUT, an empty ZEROFLOW_OUTPUT_DIR, a
#    clean environment) and must produce exactly the files in sample/expected/<input>/ (an
#    output NAME.gz must be valid gzip and decompress to the expected NAME). Broken inputs must
#    fail with a message on stderr.
# 2. Each example's pipeline.yaml must be accepted by `kubectl apply --dry-run=server` with strict
#    field validation against the real CRD (datapipelines.zeroflow.dev, installed by the caller),
#    in a temporary namespace that is deleted at the end.
#
# FILTER (a bash regex) runs only the tests whose name matches. ZF_VERBOSE=1 also shows the
# output of passing tests. Prints one line per test and last "N passed, M failed"; exits
# non-zero if any failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
examples="$root/examples"
filter="${1:-}"
python="${PYTHON:-python3}"

if [[ -z "${KUBECTL:-}" || -z "${KUBECONFIG:-}" ]]; then
  eval "$("$root/e2e/testbed" env)"
fi

run_id="$(date +%H%M%S)$(printf '%04x' "$RANDOM")"
ns="zfx-$run_id"
work="$(mktemp -d "${TMPDIR:-/tmp}/zeroflow-examples-test.XXXXXX")"

kubectl() { "$KUBECTL" "$@"; }
log() { printf '[examples-test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleaned=""
cleanup_resources() {
  [[ -z "$cleaned" ]] || return 0
  cleaned=1
  set +e
  if kubectl get namespace "$ns" >/dev/null 2>&1; then
    log "deleting namespace $ns"
    kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1
  fi
  rm -rf "$work"
  set -e
}
# shellcheck source=../suite.sh
. "$(dirname "${BASH_SOURCE[0]}")/../suite.sh"

# ---------------------------------------------------------------------------------------------
# Running a transform the way zeroflow-runner does (exec contract)

# run_transform EXAMPLE INPUT OUT_DIR [NAME=VALUE...]: copies INPUT into a fresh private directory,
# runs the example's transform there with a clean environment plus the NAME=VALUEs, outputs in
# OUT_DIR (created empty), stderr in OUT_DIR.stderr. Returns the transform's exit code.
run_transform() {
  local example=$1 input=$2 out=$3; shift 3
  local dir; dir=$(mktemp -d "$work/object.XXXXXX")
  cp "$input" "$dir/$(basename "$input")"
  rm -rf "$out"; mkdir -p "$out"
  local rc=0
  (cd "$dir" && env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 \
    ZEROFLOW_INPUT="$dir/$(basename "$input")" ZEROFLOW_OUTPUT_DIR="$out" "$@" \
    "$python" "$examples/$example/transform.py") 2>"$out.stderr" || rc=$?
  rm -rf "$dir"
  return "$rc"
}

# normalize OUT_DIR NORM_DIR: copies the outputs to NORM_DIR, decompressing NAME.gz to NAME.
normalize() {
  local out=$1 norm=$2 f name
  rm -rf "$norm"; mkdir -p "$norm"
  for f in "$out"/* "$out"/.[!.]*; do
    [[ -e "$f" ]] || continue
    name=$(basename "$f")
    if [[ "$name" == *.gz ]]; then
      gzip -t "$f" 2>&1 || fail "output $name is not valid gzip"
      gzip -dc "$f" >"$norm/${name%.gz}"
    else
      cp "$f" "$norm/$name"
    fi
  done
}

# check_samples EXAMPLE: every file in examples/EXAMPLE/sample/ gives sample/expected/<file>/.
check_samples() {
  local example=$1 sample="$examples/$1/sample" input name n=0
  [[ -d "$sample/expected" ]] || fail "no $sample/expected/"
  for input in "$sample"/*; do
    [[ -f "$input" ]] || continue
    name=$(basename "$input")
    [[ -d "$sample/expected/$name" ]] || fail "no expected outputs for sample/$name (sample/expected/$name/)"
    run_transform "$example" "$input" "$work/out/$name" \
      || { cat "$work/out/$name.stderr"; fail "$example: transform exited non-zero on sample/$name"; }
    normalize "$work/out/$name" "$work/norm/$name"
    diff -ru "$sample/expected/$name" "$work/norm/$name" \
      || fail "$example: outputs for sample/$name differ from sample/expected/$name/ (diff above: - expected, + got)"
    echo "sample/$name: outputs as expected; stderr: $(tail -n 1 "$work/out/$name.stderr")"
    n=$((n + 1))
  done
  ((n >= 2)) || fail "$example: only $n sample inputs in $sample"
  # And no expected outputs for an input that is not there.
  for name in "$sample"/expected/*; do
    [[ -f "$sample/$(basename "$name")" ]] || fail "sample/expected/$(basename "$name") has no input sample/$(basename "$name")"
  done
}

# expect_failure EXAMPLE INPUT STDERR_NEEDLE [NAME=VALUE...]: the transform exits non-zero and
# says why on stderr, without a traceback. Its exit code goes to $work/fail/<input>.rc, its
# outputs (which the runner does not upload after a failure) to $work/fail/<input>/.
expect_failure() {
  local example=$1 input=$2 needle=$3; shift 3
  local out rc=0
  out="$work/fail/$(basename "$input")"
  run_transform "$example" "$input" "$out" "$@" || rc=$?
  ((rc != 0)) || fail "$example: exit code 0 for $(basename "$input"), want a failure"
  local err; err=$(cat "$out.stderr")
  [[ -n "$err" ]] || fail "$example: exit code $rc for $(basename "$input") but nothing on stderr"
  expect_contains "$example stderr for $(basename "$input")" "$err" "$needle"
  ! grep -q '^Traceback' <<<"$err" || { echo "$err"; fail "$example: a traceback instead of a message"; }
  echo "$(basename "$input"): exit $rc, stderr: $err"
  echo "$rc" >"$out.rc"
}

# summary_field DIR EXPR: a value from DIR/summary.json, EXPR a Python expression on `s`.
summary_field() { "$python" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1/summary.json" "$2"; }

# ---------------------------------------------------------------------------------------------
# csv-to-jsonl

test_csv_samples() { check_samples csv-to-jsonl; }

test_csv_broken_input() {
  : >"$work/empty.csv"
  expect_failure csv-to-jsonl "$work/empty.csv" "no CSV header"
}

# ---------------------------------------------------------------------------------------------
# log-filter

test_log_samples() {
  check_samples log-filter
  # The samples cover both kinds of input.
  local gz=0 plain=0 f
  for f in "$examples/log-filter/sample"/*; do
    [[ -f "$f" ]] || continue
    if [[ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' ')" == 1f8b ]]; then gz=$((gz + 1)); else plain=$((plain + 1)); fi
  done
  ((gz >= 1 && plain >= 1)) || fail "samples: $gz gzip'd and $plain plain, want at least one of each"
}

test_log_reproducible() {
  # A retry overwrites the outputs of an earlier attempt: they must be the same bytes, which
  # needs a gzip header without file name and time.
  local input="$examples/log-filter/sample/app-2026-11-27T10.log.gz"
  run_transform log-filter "$input" "$work/a" || { cat "$work/a.stderr"; fail "transform exited non-zero"; }
  sleep 1.1
  run_transform log-filter "$input" "$work/b" || { cat "$work/b.stderr"; fail "transform exited non-zero"; }
  cmp "$work/a/filtered.jsonl.gz" "$work/b/filtered.jsonl.gz" || fail "two runs gave different filtered.jsonl.gz"
  cmp "$work/a/summary.json" "$work/b/summary.json" || fail "two runs gave different summary.json"
  local header; header=$(head -c 8 "$work/a/filtered.jsonl.gz" | od -An -tx1 | tr -d ' \n')
  echo "gzip header: $header"
  expect_eq "gzip magic and method" "${header:0:6}" "1f8b08"
  expect_eq "gzip flags (no FNAME)" "${header:6:2}" "00"
  expect_eq "gzip mtime" "${header:8:8}" "00000000"
}

test_log_malformed_lines() {
  # Every kind of bad line in one plain file, between good ones; the key names the input.
  "$python" - "$work/edge.log" <<'PY'
import sys
lines = [
    b'{"level":"error","service":"api","msg":"crlf line"}\r\n',
    b'{"level":"warn","service":"api","msg":"\xff\xfe not utf-8"}\n',
    b'{"level":"error","service":"api","latency":NaN}\n',
    b'["an", "array"]\n',
    b'{"level":"error","service":"api","pad":"' + b"x" * (2 << 20) + b'"}\n',
    b'not json at all\n',
    b'\n',
    b'{"level":60,"service":{"name":"billing"},"msg":"pino fatal"}\n',
    b'{"level":"info","service":"api"}\n',
    b'{"msg":"no level"}\n',
    b'{"log":{"level":"warn"},"service":{"name":"billing"},"msg":"no newline at the end"}',
]
open(sys.argv[1], "wb").write(b"".join(lines))
PY
  run_transform log-filter "$work/edge.log" "$work/edge" ZEROFLOW_KEY=services/api/edge.log \
    || { cat "$work/edge.stderr"; fail "malformed lines failed the file"; }
  cat "$work/edge.stderr"
  expect_eq "input" "$(summary_field "$work/edge" 's["input"]')" "services/api/edge.log"
  expect_eq "counts" "$(summary_field "$work/edge" '[s[k] for k in ("lines", "blank", "records", "kept", "malformed")]')" \
    "[11, 1, 5, 3, 5]"
  expect_eq "malformed_lines" "$(summary_field "$work/edge" 's["malformed_lines"]')" "[2, 3, 4, 5, 6]"
  expect_eq "by_level" "$(summary_field "$work/edge" 's["by_level"]')" \
    "{'(none)': 1, 'ERROR': 1, 'FATAL': 1, 'INFO': 1, 'WARN': 1}"
  expect_eq "by_service" "$(summary_field "$work/edge" 's["by_service"]')" \
    "{'api': {'ERROR': 1}, 'billing': {'FATAL': 1, 'WARN': 1}}"
  local kept; kept=$(gzip -dc "$work/edge/filtered.jsonl.gz")
  expect_eq "kept lines" "$kept" '{"level":"error","service":"api","msg":"crlf line"}
{"level":60,"service":{"name":"billing"},"msg":"pino fatal"}
{"log":{"level":"warn"},"service":{"name":"billing"},"msg":"no newline at the end"}'
  expect_contains "stderr" "$(cat "$work/edge.stderr")" "line 5: malformed, skipped (longer than 1048576 bytes)"
}

test_log_gzip_members_and_min_level() {
  # Two gzip members in one object (an appended rotation) are one stream.
  "$python" - "$work/rotated.log.gz" <<'PY'
import gzip, sys
with open(sys.argv[1], "wb") as f:
    f.write(gzip.compress(b'{"level":"error","service":"a"}\n{"level":"warn","service":"a"}\n'))
    f.write(gzip.compress(b'{"level":"critical","service":"b"}\n{"level":"debug","service":"b"}\n'))
PY
  run_transform log-filter "$work/rotated.log.gz" "$work/rot" || { cat "$work/rot.stderr"; fail "transform exited non-zero"; }
  expect_eq "records over two members" "$(summary_field "$work/rot" '(s["records"], s["kept"])')" "(4, 3)"
  run_transform log-filter "$work/rotated.log.gz" "$work/rot-err" LOG_FILTER_MIN_LEVEL=error \
    || { cat "$work/rot-err.stderr"; fail "transform exited non-zero with LOG_FILTER_MIN_LEVEL=error"; }
  expect_eq "kept at ERROR" "$(summary_field "$work/rot-err" '(s["min_level"], s["kept"], s["by_service"])')" \
    "('ERROR', 2, {'a': {'ERROR': 1}, 'b': {'FATAL': 1}})"
  expect_failure log-filter "$work/rotated.log.gz" "LOG_FILTER_MIN_LEVEL='LOUD'" LOG_FILTER_MIN_LEVEL=loud
  expect_eq "exit code for a bad level" "$(cat "$work/fail/rotated.log.gz.rc")" "2"
}

test_log_corrupt_gzip() {
  local sample="$examples/log-filter/sample/app-2026-11-27T10.log.gz" size
  size=$(wc -c <"$sample")
  head -c $((size / 2)) "$sample" >"$work/truncated.log.gz"
  # The last 8 bytes are CRC32 and length: flip a CRC bit.
  "$python" -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[-8] ^= 1; open(sys.argv[2], "wb").write(b)' \
    "$sample" "$work/bad-crc.log.gz"
  printf '\x1f\x8bnot really gzip\n' >"$work/fake.log.gz"
  local f
  for f in truncated bad-crc fake; do
    expect_failure log-filter "$work/$f.log.gz" "$f.log.gz: corrupt gzip"
    expect_eq "exit code for $f.log.gz" "$(cat "$work/fail/$f.log.gz.rc")" "1"
    # log-filter removes its partial output, so a local run never leaves a misleading file.
    [[ -z "$(ls -A "$work/fail/$f.log.gz")" ]] || fail "outputs left after a failure: $(ls -A "$work/fail/$f.log.gz")"
  done
}

# ---------------------------------------------------------------------------------------------
# Images and pipelines

test_dockerfiles_match_pipelines() {
  # No container engine here: check that each image holds the script its pipeline runs.
  local dir name script
  for dir in "$examples"/*/; do
    name=$(basename "$dir")
    [[ -f "$dir/pipeline.yaml" ]] || continue
    [[ -f "$dir/Dockerfile" ]] || fail "$name: no Dockerfile"
    script=$(grep -oE 'command: \["python3", "[^"]+"\]' "$dir/pipeline.yaml" | grep -oE '"/[^"]+"' | tr -d '"')
    [[ -n "$script" ]] || fail "$name: no python3 command in pipeline.yaml"
    grep -qE "^COPY transform\.py $script\$" "$dir/Dockerfile" || fail "$name: the Dockerfile does not COPY transform.py to $script"
    grep -qE '^FROM python:3' "$dir/Dockerfile" || fail "$name: not a python base image"
    echo "$name: $script"
  done
  grep -qx 'USER 65532:65532' "$examples/log-filter/Dockerfile" || fail "log-filter: the image does not run as 65532"
}

test_pipelines_dry_run() {
  kubectl get crd datapipelines.zeroflow.dev >/dev/null || fail "the CRD is not installed (kubectl apply --server-side -f crds/)"
  kubectl create namespace "$ns" >/dev/null
  kubectl label namespace "$ns" zeroflow.dev/examples-test="$run_id" >/dev/null
  local f name out n=0
  for f in "$examples"/*/pipeline.yaml; do
    name=$(basename "$(dirname "$f")")
    out=$(kubectl apply -n "$ns" --dry-run=server --validate=strict -f "$f" 2>&1) \
      || { echo "$out"; fail "$name: pipeline.yaml refused"; }
    echo "$name: $out"
    expect_contains "$name" "$out" "created (server dry run)"
    grep -q '^datapipeline\.zeroflow\.dev/' <<<"$out" || fail "$name: no DataPipeline in pipeline.yaml"
    # Nothing was created: it was a dry run.
    [[ -z "$(kubectl get datapipelines,secrets -n "$ns" -o name 2>/dev/null | grep -v '/default-token' || true)" ]] \
      || fail "$name: the dry run created objects"
    n=$((n + 1))
  done
  ((n >= 2)) || fail "only $n examples with a pipeline.yaml"
  # The apiserver's defaults land where the examples' comments say they do.
  out=$(kubectl apply -n "$ns" --dry-run=server -f "$examples/log-filter/pipeline.yaml" \
    -o jsonpath='{range .items[?(@.kind=="DataPipeline")]}{.spec.transform.contract} {.spec.sink.prefix} {.spec.scaling.minReplicas} {.spec.source.backfill}{end}')
  expect_eq "log-filter spec after defaulting" "$out" "exec warn-errors/ 0 true"
}

test_dry_run_bites() {
  # The same check refuses a misspelt field and an invalid value, so a passing dry run means something.
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  local f="$examples/log-filter/pipeline.yaml" out
  sed 's/^    targetPerReplica:/    targetPerReplicas:/' "$f" >"$work/typo.yaml"
  ! cmp -s "$f" "$work/typo.yaml" || fail "the typo was not introduced"
  out=$(kubectl apply -n "$ns" --dry-run=server --validate=strict -f "$work/typo.yaml" 2>&1) && fail "a misspelt field was accepted"
  echo "$out"
  expect_contains "unknown field" "$out" 'unknown field "spec.scaling.targetPerReplicas"'
  sed 's/^    maxReplicas: 20$/    maxReplicas: 0/' "$f" >"$work/invalid.yaml"
  ! cmp -s "$f" "$work/invalid.yaml" || fail "the invalid value was not introduced"
  out=$(kubectl apply -n "$ns" --dry-run=server --validate=strict -f "$work/invalid.yaml" 2>&1) && fail "maxReplicas: 0 was accepted"
  echo "$out"
  expect_contains "invalid value" "$out" "maxReplicas must be between 1 and 1000"
}

t "csv-to-jsonl: transform on sample/* gives sample/expected/" test_csv_samples
t "csv-to-jsonl: an empty file fails with a message on stderr" test_csv_broken_input
t "log-filter: transform on sample/* (gzip and plain) gives sample/expected/" test_log_samples
t "log-filter: same bytes on a retry (gzip header without name or time)" test_log_reproducible
t "log-filter: malformed lines are counted and skipped, not fatal" test_log_malformed_lines
t "log-filter: concatenated gzip members; LOG_FILTER_MIN_LEVEL" test_log_gzip_members_and_min_level
t "log-filter: truncated or corrupt gzip exits 1 with stderr, no outputs" test_log_corrupt_gzip
t "Dockerfiles copy the script each pipeline.yaml runs" test_dockerfiles_match_pipelines
t "pipeline.yaml of every example: kubectl apply --dry-run=server, strict" test_pipelines_dry_run
t "the dry run refuses a misspelt field and an invalid value" test_dry_run_bites

finish
