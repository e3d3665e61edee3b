# shellcheck shell=bash disable=SC2034,SC2154  # sets FIX/CKPT for the caller; root, BIN and LOG come from it
# Shared by scripts/gpu-decode-check.sh and scripts/gpu-prefill-check.sh (sourced, not run):
# NVRTC on the library path, a kernel cache in /tmp, the synthetic 0.8B checkpoint and the
# fixtures, and `stage NAME SECONDS CMD...`, which runs CMD time-boxed, tees its output to
# $LOG/NAME.log and sets status=1 when it fails. Expects BIN, root and LOG to be set.
for d in "${LUCEBOX_CUDA_LIB_DIR:-}" /usr/local/cuda/lib64; do
  [[ -n "$d" && -e "$d/libnvrtc.so.13" ]] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
done
export LUCEBOX_CACHE="${LUCEBOX_CACHE:-/tmp/lucebox-cache}"
CKPT="${CKPT:-/tmp/qwen35-0.8b-synth}"
FIX="$root/models/tests/fixtures"
status=0
mkdir -p "$LOG"
stage() { # stage NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "=== $name"
  timeout "$secs" "$@" > >(tee "$LOG/$name.log") 2>&1
  local rc=$?; wait
  echo "=== $name: exit $rc"
  [[ $rc -eq 0 ]] || status=1
}
synth_0_8b() { # the synthetic Qwen3.5-0.8B BF16 checkpoint both scripts check, once
  [[ -d "$CKPT" ]] || stage synth 120 "$BIN" synth --config qwen3.5-0.8b --format safetensors --quant bf16 --out "$CKPT" --seed 1
}
