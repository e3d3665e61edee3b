#!/usr/bin/env bash
# Downloads, on a machine WITH network, the wheels that scripts/bench/gpu-bench.sh
# installs on the GPU machine (no network) for the "HF transformers +
# flash-linear-attention" row: flash-linear-attention and fla-core (pure
# Python + Triton; torch, triton, transformers and einops are already on that
# machine). Target: CPython 3.12, manylinux x86-64. Output: .whl/ (gitignored).
#
# Usage: scripts/bench/fetch-wheels.sh [FLA_VERSION]   (default 0.6.0, the anchors' version)
set -euo pipefail
ver=${1:-0.6.0}
root=$(cd "$(dirname "$0")/../.." && pwd)
dest="$root/.whl"
mkdir -p "$dest"
py=${PYTHON:-python3}
"$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$dest" "flash-linear-attention==$ver" "fla-core==$ver"
# Every declared dependency of the downloaded wheels, for the reader to check
# against what the GPU machine has (torch, transformers, einops, triton).
for w in "$dest"/*.whl; do
  echo "== $(basename "$w")"
  "$py" - "$w" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            print("  ", line)
PY
done
du -sh "$dest"
