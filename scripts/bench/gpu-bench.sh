#!/usr/bin/env bash
# Stage commands are single-quoted on purpose (they expand inside `bash -c`):
# shellcheck disable=SC2016
# One-shot benchmark on the GPU machine (no network, no cargo): lucebox, HF
# transformers (plain and + flash-linear-attention) and llama.cpp (BF16 and
# Q4_K_M) on the SAME synthetic Qwen3.5-0.8B checkpoint, one table at the end.
# See docs/benchmarking.md for the protocol and what each column means.
#
# Usage: scripts/bench/gpu-bench.sh LUCEBOX_BIN WORK_DIR [--stages LIST] [--reps N]
#   LUCEBOX_BIN  release `lucebox` binary
#   WORK_DIR     checkpoints, llama.cpp build, fla install (reused by later calls:
#                keep it on a path that survives between calls, e.g. .bench-work)
#   --stages     comma list of: synth,build,lucebox,hf,hf-fla,llama-bf16,llama-q4km
#                (default: all; `--stages build,synth` prepares a later full run)
# Inputs found relative to the repository root (carried in, gitignored):
#   .bench/llama.cpp-src.tar.xz  from scripts/bench/prepare-llama-src.sh
#   .whl/                        from scripts/bench/fetch-wheels.sh
# Environment: OUT (results and logs written under $OUT/bench when set), REPS (5),
#   WARMUP (1), BUDGET (570 s: every stage limit is clamped to end by then),
#   LLAMA_BUILD_TIMEOUT (300 s, or the whole budget when no timed stage is asked
#   for; an unfinished build resumes on the next call), CUDA_ARCH (90), PYTHON (python3),
#   SEED (0), SYNTH_CONFIG (qwen3.5-0.8b), SYNTH_ARGS (extra synth flags).
# Every stage is time-boxed and independent: a failing stage prints FAILED and
# its log tail, and the others still run. Timed stages never overlap the build.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
t_start=$(date +%s)

if [ $# -lt 2 ]; then
  sed -n '4,24p' "$0"
  exit 2
fi
bin=$(realpath "$1")
work=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2
stages="synth,build,lucebox,hf,hf-fla,llama-bf16,llama-q4km"
REPS=${REPS:-5}
while [ $# -gt 0 ]; do
  case "$1" in
    --stages) stages=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
WARMUP=${WARMUP:-1}
SEED=${SEED:-0}
PP=${PP:-520}
TG=${TG:-128}
# BENCH_DEVICE=cpu: a dry run of the script's plumbing on a machine without a
# GPU (lucebox's CPU reference, HF on the CPU; use a tiny SYNTH_CONFIG).
BENCH_DEVICE=${BENCH_DEVICE:-gpu}
if [ "$BENCH_DEVICE" = cpu ]; then LUCEBOX_BACKEND=cpu HF_DEVICE=cpu; else LUCEBOX_BACKEND=gpu HF_DEVICE=cuda; fi
CUDA_ARCH=${CUDA_ARCH:-90}
BUDGET=${BUDGET:-570}
# A call that only builds (and synthesises) may spend its whole budget on the
# build; one that also measures leaves the measurements about 4 minutes.
case ",$stages," in
  *,lucebox,*|*,hf,*|*,hf-fla,*|*,llama-bf16,*|*,llama-q4km,*) LLAMA_BUILD_TIMEOUT=${LLAMA_BUILD_TIMEOUT:-300} ;;
  *) LLAMA_BUILD_TIMEOUT=${LLAMA_BUILD_TIMEOUT:-$(( BUDGET - 30 ))} ;;
esac
PYTHON=${PYTHON:-python3}
export PATH="/usr/local/cuda/bin:$PATH"

# Under $OUT when set, so that a call cut off by its time limit still returns
# what finished.
res="${OUT:-$work}/bench/results"
logs="${OUT:-$work}/bench/logs"
rm -rf "$res" "$logs"
mkdir -p "$res" "$logs"
ckpt="$work/ckpt"
st_dir="$ckpt/qwen3.5-0.8b-bf16"
gguf_bf16="$ckpt/qwen3.5-0.8b-bf16.gguf"
gguf_q4="$ckpt/qwen3.5-0.8b-q4_k_m.gguf"
llama_src="$work/llama.cpp"
llama_build="$work/llama-build"
llama_bench="$llama_build/bin/llama-bench"
fla_site="$work/fla-site"

want() { case ",$stages," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
elapsed() { echo $(( $(date +%s) - t_start )); }
declare -A status

# stage NAME TIMEOUT_S CMD...: runs CMD with its output in logs/NAME.log,
# its limit clamped so that the whole script ends within BUDGET seconds.
stage() {
  local name=$1 limit=$2
  shift 2
  local t0 rc left
  left=$(( BUDGET - 15 - $(elapsed) ))
  if [ "$left" -lt 20 ]; then
    status[$name]="SKIPPED (out of the ${BUDGET}s budget; run again, finished stages are reused)"
    echo "== [$(elapsed)s] $name ${status[$name]}"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s)
  echo "== [$(elapsed)s] $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    status[$name]="ok ($(( $(date +%s) - t0 ))s)"
    echo "   ok in $(( $(date +%s) - t0 ))s"
  else
    [ $rc -eq 124 ] && status[$name]="FAILED (timed out after ${limit}s)" || status[$name]="FAILED (exit $rc)"
    echo "   ${status[$name]}; last lines of $logs/$name.log:"
    tail -n 25 "$logs/$name.log" | sed 's/^/   | /'
  fi
  return $rc
}

# --- system facts ----------------------------------------------------------
{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host=$(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv,noheader 2>&1 | sed 's/^/gpu=/'
  nvcc --version 2>&1 | tail -n 2 | sed 's/^/nvcc=/'
  cmake --version 2>&1 | head -n 1 | sed 's/^/cmake=/'
  "$PYTHON" -c 'import sys, torch, transformers; print(f"python={sys.version.split()[0]}\ntorch={torch.__version__}\ntorch_cuda={torch.version.cuda}\ntransformers={transformers.__version__}")' 2>&1
  "$bin" --version 2>&1 | sed 's/^/lucebox=/'
  echo "lucebox_sha256=$(sha256sum "$bin" | cut -d' ' -f1)"
  echo "llama_src=$(tar -xJOf "$root/.bench/llama.cpp-src.tar.xz" llama.cpp/LUCEBOX-TRIMMED.txt 2>/dev/null | head -n 2 | tr '\n' ' ')"
  echo "reps=$REPS warmup=$WARMUP pp=$PP tg=$TG seed=$SEED"
} >"$res/system.txt" 2>&1
cat "$res/system.txt"

# --- llama.cpp build (background; CPU only, untimed) -------------------------
build_llama() {
  local tarball="$root/.bench/llama.cpp-src.tar.xz"
  [ -f "$tarball" ] || { echo "missing $tarball (run scripts/bench/prepare-llama-src.sh and carry .bench)"; return 1; }
  local sum
  sum=$(sha256sum "$tarball" | cut -d' ' -f1)
  if [ -x "$llama_bench" ] && [ "$(cat "$llama_build/.src-sha256" 2>/dev/null)" = "$sum" ]; then
    echo "llama-bench already built from this source ($llama_bench)"
    return 0
  fi
  if [ "$(cat "$llama_src/.src-sha256" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$llama_src" "$llama_build"
    mkdir -p "$llama_src"
    tar -xJf "$tarball" -C "$llama_src" --strip-components=1 || return 1
    echo "$sum" >"$llama_src/.src-sha256"
  fi
  # Re-running resumes a build that an earlier call's time box cut off.
  cmake -S "$llama_src" -B "$llama_build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DGGML_CUDA_FA_ALL_QUANTS=OFF \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_COMMIT=llama-cpp-python-0.3.36 -DLLAMA_BUILD_NUMBER=0 || return 1
  ninja -C "$llama_build" -j "$(nproc)" llama-bench || return 1
  echo "$sum" >"$llama_build/.src-sha256"
}

# Stages run under `timeout bash -c`, so what they use is exported.
export root here bin res logs ckpt st_dir gguf_bf16 gguf_q4 llama_src llama_build llama_bench fla_site \
  PP TG REPS WARMUP SEED CUDA_ARCH PYTHON HF_DEVICE
export -f build_llama
build_pid=""
if want build; then
  echo "== [$(elapsed)s] build: llama.cpp llama-bench (CUDA sm_$CUDA_ARCH) in the background, limit ${LLAMA_BUILD_TIMEOUT}s"
  ( stage build "$LLAMA_BUILD_TIMEOUT" bash -c build_llama >"$logs/build.stage" 2>&1
    echo $? >"$logs/build.rc" ) &
  build_pid=$!
fi

# --- synthetic checkpoints ---------------------------------------------------
synth_all() {
  mkdir -p "$ckpt"
  # llama.cpp's Qwen3.5 vocabulary (kept in the source tarball) for the GGUF
  # tokenizer section; without it synth writes a byte-level vocabulary.
  local vocab=()
  if tar -xJf "$root/.bench/llama.cpp-src.tar.xz" -C "$ckpt" --strip-components=2 \
      llama.cpp/models/ggml-vocab-qwen35.gguf 2>/dev/null; then
    vocab=(--vocab-from "$ckpt/ggml-vocab-qwen35.gguf")
  fi
  # SYNTH_ARGS: extra `lucebox synth` flags; word-split on purpose.
  # shellcheck disable=SC2206
  local common=(--config "${SYNTH_CONFIG:-qwen3.5-0.8b}" --seed "$SEED" --force "${vocab[@]}" ${SYNTH_ARGS:-})
  # A checkpoint is reused only when written by this binary with these flags.
  local stamp
  stamp="$(sha256sum "$bin" | cut -d' ' -f1) ${common[*]}"
  if [ "$(cat "$st_dir.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$st_dir"
    "$bin" synth "${common[@]}" --format safetensors --quant bf16 --out "$st_dir" || return 1
    echo "$stamp" >"$st_dir.stamp"
  fi
  if [ "$(cat "$gguf_bf16.stamp" 2>/dev/null)" != "$stamp" ]; then
    "$bin" synth "${common[@]}" --format gguf --quant bf16 --out "$gguf_bf16" || return 1
    echo "$stamp" >"$gguf_bf16.stamp"
  fi
  if [ "$(cat "$gguf_q4.stamp" 2>/dev/null)" != "$stamp" ]; then
    "$bin" synth "${common[@]}" --format gguf --quant q4_k_m --out "$gguf_q4" || return 1
    echo "$stamp" >"$gguf_q4.stamp"
  fi
  ls -la "$ckpt" "$st_dir"
}
export -f synth_all
if want synth; then
  stage synth 240 bash -c synth_all
fi

# flash-linear-attention from the carried wheels, into its own directory so
# that the plain HF row cannot pick it up.
install_fla() {
  [ -d "$root/.whl" ] || { echo "missing $root/.whl (run scripts/bench/fetch-wheels.sh and carry .whl)"; return 1; }
  rm -rf "$fla_site"
  "$PYTHON" -m pip install --no-index --no-deps --find-links "$root/.whl" --target "$fla_site" \
    flash-linear-attention fla-core
}
export -f install_fla
if want hf-fla; then
  stage fla-install 120 bash -c install_fla
fi

if [ -n "$build_pid" ]; then
  echo "== [$(elapsed)s] waiting for the llama.cpp build (timed stages never overlap it)"
  wait "$build_pid"
  cat "$logs/build.stage"
  line=$(grep -E '^   (ok in|FAILED)' "$logs/build.stage" | head -n 1 | sed 's/^   //; s/;.*//')
  if [ "$(cat "$logs/build.rc" 2>/dev/null)" = 0 ]; then status[build]=${line:-ok}; else status[build]=${line:-FAILED}; fi
fi

# --- timed stages --------------------------------------------------------------
if want lucebox; then
  stage lucebox 240 bash -c '"$0" bench --model "$1" --pp "$2" --tg "$3" --reps "$4" --warmup "$5" --seed "$6" --backend "$8" --energy-seconds 2 --json >"$7"' \
    "$bin" "$st_dir" "$PP" "$TG" "$REPS" "$WARMUP" "$SEED" "$res/lucebox.json" "$LUCEBOX_BACKEND"
fi
hf() {
  local out=$1 expect=$2
  "$PYTHON" "$here/hf_bench.py" --model "$st_dir" --pp "$PP" --tg "$TG" --reps "$REPS" --warmup "$WARMUP" \
    --seed "$SEED" --device "$HF_DEVICE" --expect-fla "$expect" --out "$out"
}
export -f hf
if want hf; then
  stage hf 240 env -u PYTHONPATH bash -c 'hf "$0" no' "$res/hf.json"
fi
if want hf-fla; then
  stage hf-fla 300 env PYTHONPATH="$fla_site" bash -c 'hf "$0" yes' "$res/hf-fla.json"
fi

# llama-bench: the anchors' command, then two pairs of runs that differ only
# in repetitions, for energy per token by difference (load and warm-up cancel).
llama() {
  local name=$1 model=$2
  [ -x "$llama_bench" ] || { echo "llama-bench not built"; return 1; }
  local lb=("$llama_bench" -m "$model" -ngl 99 -fa 1 -o json)
  "${lb[@]}" -p "$PP" -n "$TG" -r "$REPS" >"$res/$name.json" || return 1
  local e=("$PYTHON" "$here/nvml_run.py")
  "${e[@]}" --out "$res/$name.energy-pp-lo.json" --stdout /dev/null -- "${lb[@]}" -p "$PP" -n 0 -r 5 &&
  "${e[@]}" --out "$res/$name.energy-pp-hi.json" --stdout /dev/null -- "${lb[@]}" -p "$PP" -n 0 -r 105 &&
  "${e[@]}" --out "$res/$name.energy-tg-lo.json" --stdout /dev/null -- "${lb[@]}" -p 0 -n "$TG" -r 5 &&
  "${e[@]}" --out "$res/$name.energy-tg-hi.json" --stdout /dev/null -- "${lb[@]}" -p 0 -n "$TG" -r 25 ||
    echo "energy runs failed (the speed result stands)"
  cat "$res/$name.json"
}
export -f llama
if want llama-bf16; then
  stage llama-bf16 150 bash -c 'llama llama-bf16 "$0"' "$gguf_bf16"
fi
if want llama-q4km; then
  stage llama-q4km 150 bash -c 'llama llama-q4km "$0"' "$gguf_q4"
fi

# --- report ------------------------------------------------------------------
{
  for s in "${!status[@]}"; do echo "$s: ${status[$s]}"; done | sort
} >"$res/stages.txt"
echo
echo "== stages"
cat "$res/stages.txt"
echo
"$PYTHON" "$here/results-to-md.py" "$res" | tee "$res/RESULTS.md"
echo "total $(elapsed)s; results in $res, logs in $logs"
