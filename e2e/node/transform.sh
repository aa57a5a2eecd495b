#!/bin/sh
# The node tests' transform (busybox sh and awk): CSV to JSON Lines under zeroflow's exec
# contract, like examples/csv-to-jsonl but without Python. The input is $ZEROFLOW_INPUT; every
# file written to $ZEROFLOW_OUTPUT_DIR is an output. Keys containing "slow-" take
# $SLOW_SECONDS (default 8) first, so a test can stop a worker while it is busy.
set -eu
name=$(basename "$ZEROFLOW_INPUT")
case "$ZEROFLOW_KEY" in
  *slow-*) echo "$name: slow object, sleeping ${SLOW_SECONDS:-8}s" >&2; sleep "${SLOW_SECONDS:-8}" ;;
esac
out="$ZEROFLOW_OUTPUT_DIR/${name%.*}.jsonl"
awk -F, '
  NR == 1 { n = NF; for (i = 1; i <= NF; i++) h[i] = $i; next }
  { line = "{"; for (i = 1; i <= n; i++) line = line (i > 1 ? ", " : "") "\"" h[i] "\": \"" $i "\""; print line "}" }
' "$ZEROFLOW_INPUT" >"$out"
echo "$name: $(wc -l <"$out") rows" >&2
