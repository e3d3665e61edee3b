#!/usr/bin/env bash
# Decode megakernel checks on a GPU machine (no cargo, no network), one call:
#   1. `lucebox check` decode checks on the committed HF fixtures and on a
#      synthetic Qwen3.5-0.8B bf16 checkpoint (GPU vs CPU reference: logits and
#      64 greedy tokens);
#   2. GPU logits vs HF transformers on that same 0.8B checkpoint;
#   3. compute-sanitizer memcheck and racecheck on a short run;
#   4. a decode timing (`lucebox run`, 128 tokens after a 520-token prompt);
#   5. the per-phase decode breakdown (`lucebox profile`, profiling build).
# usage: scripts/gpu-decode-check.sh path/to/lucebox   (logs under $OUT or ./gpu-decode-logs)
set -uo pipefail
BIN=$(realpath "${1:-target/release/lucebox}")
root=$(cd "$(dirname "$0")/.." && pwd)
LOG="${OUT:-$PWD/gpu-decode-logs}"
# shellcheck source=scripts/lib/gpu-stages.sh
source "$root/scripts/lib/gpu-stages.sh"
synth_0_8b
stage check-fixtures 300 "$BIN" check --only decode --model "$FIX/tiny-composite-tied" --model "$FIX/tiny-text-untied" --json-out "$LOG/check-fixtures.json"
stage check-0.8b 400 "$BIN" check --only decode --model "$CKPT" --logit-positions 24 --greedy-steps 64 --json-out "$LOG/check-0.8b.json"
ids=$(python3 -c "import random; r=random.Random(5); print(','.join(str(r.randrange(1000, 200000)) for _ in range(24)))")
stage gpu-logits 120 bash -c "'$BIN' logits --model '$CKPT' --ids $ids --all-positions --backend gpu > '$LOG/gpu-logits.json'"
stage hf-compare 300 python3 "$root/scripts/compare_hf_logits.py" "$CKPT" "$LOG/gpu-logits.json"
if command -v compute-sanitizer >/dev/null; then
  stage memcheck 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN" run --model "$FIX/tiny-text-untied" --ids 1,2,3,4 --max-tokens 6 --backend gpu --output json
  # -lineinfo (a separate cache entry) so hazards name source lines of the generated kernel.
  stage racecheck 400 env LUCEBOX_NVRTC_FLAGS=-lineinfo compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 "$BIN" run --model "$FIX/tiny-text-untied" --ids 1,2,3 --max-tokens 2 --backend gpu --output json
fi
prompt=$(python3 -c "import random; r=random.Random(7); print(','.join(str(r.randrange(1000, 200000)) for _ in range(520)))")
stage decode-timing 200 "$BIN" run --model "$CKPT" --ids "$prompt" --max-tokens 128 --ignore-eos --backend gpu --output json
stage decode-profile 200 "$BIN" profile --model "$CKPT" --pp 32 --steps 128 --skip 8
stage decode-profile-json 200 bash -c "'$BIN' profile --model '$CKPT' --pp 32 --steps 128 --skip 8 --json > '$LOG/decode-profile.json'"
echo
grep -hE "^(PASS|FAIL)|HF transformers vs|ERROR SUMMARY|tok/s" "$LOG"/*.log | sed 's/^/  /'
exit $status
