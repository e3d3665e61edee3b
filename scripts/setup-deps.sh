#!/usr/bin/env bash
# Installs what the tests need besides Rust, into .cache/ (gitignored), and
# prints the environment to export. Idempotent: a second run only checks.
#   - NVRTC 13 from the PyPI wheel (compiles generated kernels to CUBIN; no GPU needed)
#   - a Python venv with the HTTP client test dependencies (openai, anthropic, pytest)
#   - third-party test data (llama.cpp's qwen35 vocabulary test) via scripts/fetch-test-data.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache"
venv="$cache/venv"
mkdir -p "$cache"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Pinned so CI is reproducible.
if ! "$venv/bin/python" -c "import openai, anthropic, pytest, httpx" 2>/dev/null \
   || [ ! -e "$venv/nvrtc.ok" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "nvidia-cuda-nvrtc==13.0.88" \
    -r "$root/scripts/requirements-test.txt"
  touch "$venv/nvrtc.ok"
fi
nvrtc_dir=$("$venv/bin/python" - <<'PY'
import os, glob, sys
import nvidia
for base in nvidia.__path__:
    hits = glob.glob(os.path.join(base, "cu13", "lib", "libnvrtc.so.13"))
    if hits:
        print(os.path.dirname(hits[0])); sys.exit(0)
sys.exit("libnvrtc.so.13 not found in the nvidia-cuda-nvrtc wheel")
PY
)
if [ -f "$root/scripts/fetch-test-data.sh" ]; then
  # stdout is eval'd by the caller: progress goes to stderr.
  bash "$root/scripts/fetch-test-data.sh" "$cache/test-data" >&2
fi
echo "export LD_LIBRARY_PATH=$nvrtc_dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export LUCEBOX_CUDA_LIB_DIR=$nvrtc_dir"
echo "export LUCEBOX_TEST_DATA=$cache/test-data"
echo "export LUCEBOX_PYTHON=$venv/bin/python"
