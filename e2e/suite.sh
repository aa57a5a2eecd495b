# Shared by the shell test suites (e2e/*/test.sh): source it after defining `work` (a scratch
# directory), `filter` (a regex of test names to run, or empty) and `cleanup_resources` (what to
# remove however the suite ends).
#
#   t NAME FUNCTION            runs one test
#   fail / expect_eq / expect_contains   assertions inside a test
#   finish                     cleans up, prints the summary, fails when a test failed
# shellcheck shell=bash disable=SC2154  # work, filter: set by the sourcing suite

cleanup() {
  local rc=$?
  cleanup_resources
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0 failed=0
failures=()
# t NAME FUNCTION: runs FUNCTION in a subshell with errexit in force, output to a log shown on failure.
t() {
  local name=$1 fn=$2 rc
  if [[ -n "$filter" && ! "$name" =~ $filter ]]; then return 0; fi
  local out="$work/log.$((passed + failed))"
  local start=$SECONDS
  set +e
  (set -euo pipefail; "$fn") >"$out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1)); printf 'ok     %-70s %3ds\n' "$name" $((SECONDS - start))
    if [[ -n "${ZF_VERBOSE:-}" ]]; then sed 's/^/    | /' "$out"; fi
  else
    failed=$((failed + 1)); failures+=("$name")
    printf 'FAILED %-70s %3ds\n' "$name" $((SECONDS - start))
    sed 's/^/    | /' "$out" | tail -n 60
  fi
}

fail() { echo "FAIL: $*" >&2; return 1; }
# expect_eq WHAT GOT WANT
expect_eq() { [[ "$2" == "$3" ]] || fail "$1: got '$2', want '$3'"; }
# expect_contains WHAT TEXT NEEDLE
expect_contains() { grep -qF -- "$3" <<<"$2" || { echo "$2" | tail -n 20 >&2; fail "$1: no '$3' in the output above"; }; }

finish() {
  cleanup_resources
  if ((failed > 0)); then
    printf 'failed: %s\n' "${failures[@]}"
  fi
  echo "$passed passed, $failed failed"
  ((failed == 0))
}
