#!/usr/bin/env bash
# Run every GPU check of lucebox on a GPU machine that has the NVIDIA driver
# and CUDA 13 but no Rust toolchain and no network, using a release binary
# built elsewhere (`cargo build --release -p lucebox-cli`).
#
#   scripts/gpu-check.sh [path/to/lucebox] [-- extra `lucebox check` arguments]
#
# Finds NVRTC (CUDA 13) for the binary, then runs `lucebox doctor` and
# `lucebox check` (tables on stdout, JSON next to the logs). Logs go to $OUT/gpu-check/ when
# $OUT is set, else ./gpu-check-logs/. Exit status: 0 when doctor and check
# both pass, 1 otherwise. See docs/gpu-check.md.
set -uo pipefail

BIN="target/release/lucebox"
if [[ $# -gt 0 && "$1" != "--" ]]; then BIN="$1"; shift; fi
[[ "${1:-}" == "--" ]] && shift
CHECK_ARGS=("$@")

if [[ ! -x "$BIN" ]]; then
  echo "gpu-check: no executable lucebox binary at '$BIN' (pass its path as the first argument)" >&2
  exit 2
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

LOG_DIR="${OUT:+$OUT/gpu-check}"
LOG_DIR="${LOG_DIR:-$PWD/gpu-check-logs}"
mkdir -p "$LOG_DIR"

# --- NVRTC: first directory holding libnvrtc.so.13 ----------------------------
has_nvrtc() { compgen -G "$1/libnvrtc.so.13*" >/dev/null 2>&1; }
find_nvrtc_dir() {
  local d
  for d in "${LUCEBOX_CUDA_LIB_DIR:-}" /usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib \
           /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/*/lib /usr/lib/x86_64-linux-gnu; do
    [[ -n "$d" ]] && has_nvrtc "$d" && { echo "$d"; return 0; }
  done
  # pip wheels (nvidia-cuda-nvrtc for CUDA 13 installs nvidia/cu13/lib)
  if command -v python3 >/dev/null; then
    while IFS= read -r d; do
      for sub in nvidia/cu13/lib nvidia/cuda_nvrtc/lib; do
        has_nvrtc "$d/$sub" && { echo "$d/$sub"; return 0; }
      done
    done < <(python3 -c 'import sys; print("\n".join(p for p in sys.path if p))' 2>/dev/null)
  fi
  return 1
}

if NVRTC_DIR="$(find_nvrtc_dir)"; then
  export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "gpu-check: NVRTC from $NVRTC_DIR"
else
  echo "gpu-check: WARNING: libnvrtc.so.13 not found; lucebox will search itself and report" >&2
fi

# Kernel cache inside the log dir unless the caller chose one: a clean,
# writable place whose CUBINs can be inspected afterwards.
export LUCEBOX_CACHE="${LUCEBOX_CACHE:-$LOG_DIR/cache}"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname)"
  echo "binary: $BIN"
  "$BIN" --version
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "LUCEBOX_CACHE=$LUCEBOX_CACHE"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
} > "$LOG_DIR/environment.txt" 2>&1
cat "$LOG_DIR/environment.txt"

status=0
run() { # run NAME CMD...: tee output to $LOG_DIR/NAME.log, remember failures
  local name="$1"; shift
  echo
  echo "=== $name: $* ==="
  "$@" > >(tee "$LOG_DIR/$name.log") 2> >(tee "$LOG_DIR/$name.err" >&2)
  local rc=$?
  wait
  echo "=== $name: exit $rc ==="
  [[ $rc -eq 0 ]] || status=1
}

run doctor "$BIN" doctor --json-out "$LOG_DIR/doctor.json"
run check  "$BIN" check --json-out "$LOG_DIR/check.json" "${CHECK_ARGS[@]}"

echo
if [[ $status -eq 0 ]]; then
  echo "gpu-check: ALL PASSED (logs in $LOG_DIR)"
else
  echo "gpu-check: FAILURES (logs in $LOG_DIR)"
fi
exit $status
