#!/usr/bin/env bash
# A/B of two lucebox builds on one GPU, in one run, on the same synthetic
# Qwen3.5-0.8B BF16 checkpoint: `lucebox bench` alternating base and new
# (ROUNDS rounds, so clock or thermal drift hits both), then each build's
# per-phase decode profile and/or per-kernel prefill profile (PROFILES, default
# "decode prefill"; "" for none). Prints the bench and profile summaries last.
# usage: scripts/bench/decode-ab.sh BASE_BIN NEW_BIN [ROUNDS]   (logs under $OUT or ./decode-ab-logs)
set -uo pipefail
BASE=$(realpath "$1")
NEW=$(realpath "$2")
ROUNDS=${3:-2}
BIN=$NEW
root=$(cd "$(dirname "$0")/../.." && pwd)
LOG="${OUT:-$PWD/decode-ab-logs}"
# shellcheck source=scripts/lib/gpu-stages.sh
source "$root/scripts/lib/gpu-stages.sh"
synth_0_8b
for r in $(seq 1 "$ROUNDS"); do
  stage "bench-base-$r" 200 "$BASE" bench --model "$CKPT" --pp 520 --tg 128 --reps 5 --energy-seconds 0
  stage "bench-new-$r" 200 "$NEW" bench --model "$CKPT" --pp 520 --tg 128 --reps 5 --energy-seconds 0
done
for p in ${PROFILES-decode prefill}; do
  [[ $p == decode || $p == prefill ]] || { echo "decode-ab: unknown profile '$p' (decode, prefill)" >&2; status=1; continue; }
  for b in base new; do
    bin=$BASE; [[ $b == new ]] && bin=$NEW
    case $p in
      decode) stage "profile-$b" 200 "$bin" profile --model "$CKPT" --pp 376 --steps 128 --skip 8 ;;
      prefill) stage "prefill-profile-$b" 100 "$bin" profile --prefill --model "$CKPT" --pp 520 --reps 5 ;;
    esac
  done
done
echo
for f in "$LOG"/bench-*.log; do
  echo "== $(basename "$f" .log)"
  grep -E "^(pp|tg)[0-9]|roofline" "$f" | sed 's/^/  /'
done
for f in "$LOG"/prefill-profile-*.log; do
  [[ -e $f ]] || continue
  echo "== $(basename "$f" .log)"
  grep -E "median|^gemm|^gdn|sum" "$f" | sed 's/^/  /'
done
exit $status
