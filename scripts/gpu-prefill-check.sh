#!/usr/bin/env bash
# Prefill checks and timings on a GPU machine (no cargo, no network), one call:
#   1. `lucebox check --only prefill` on the committed HF fixtures and on a
#      synthetic Qwen3.5-0.8B bf16 checkpoint: prefill logits vs the CPU
#      reference at T = 1, 2, 3, 4, 63, 64, 65, 130 (and --prefill-max), the
#      prompt in pieces (start > 0: conv window, GDN state, KV cache
#      continued), prefill then decode logits, prefill then 64 greedy tokens;
#   2. compute-sanitizer memcheck of a prefill + decode request;
#   3. `lucebox profile --prefill --pp 520`: median of 5 and per-kernel times;
#   4. `lucebox run` of 520 + 128 tokens (prefill and decode tok/s).
# usage: scripts/gpu-prefill-check.sh path/to/lucebox   (logs under $OUT or ./gpu-prefill-logs)
set -uo pipefail
BIN=$(realpath "${1:-target/release/lucebox}")
root=$(cd "$(dirname "$0")/.." && pwd)
LOG="${OUT:-$PWD/gpu-prefill-logs}"
PREFILL_MAX="${PREFILL_MAX:-130}"
# shellcheck source=scripts/lib/gpu-stages.sh
source "$root/scripts/lib/gpu-stages.sh"
synth_0_8b
stage prefill-fixtures 300 "$BIN" check --only prefill --model "$FIX/tiny-composite-tied" --model "$FIX/tiny-text-untied" --prefill-max 200
stage prefill-0.8b 600 "$BIN" check --only prefill --model "$CKPT" --prefill-max "$PREFILL_MAX" --greedy-steps 64 --logit-positions 16
if command -v compute-sanitizer >/dev/null; then
  ids=$(python3 -c "print(','.join(str(i * 37 % 250 + 3) for i in range(70)))")
  stage prefill-memcheck 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN" run --model "$FIX/tiny-text-untied" --ids "$ids" --max-tokens 4 --backend gpu --output json
fi
stage prefill-profile 300 "$BIN" profile --prefill --model "$CKPT" --pp 520 --reps 5
prompt=$(python3 -c "import random; r=random.Random(7); print(','.join(str(r.randrange(1000, 200000)) for _ in range(520)))")
stage run-520-128 200 "$BIN" run --model "$CKPT" --ids "$prompt" --max-tokens 128 --ignore-eos --backend gpu --output json
echo
grep -hE "^(PASS|FAIL)|ERROR SUMMARY|tok/s|passed," "$LOG"/*.log | sed 's/^/  /'
exit $status
