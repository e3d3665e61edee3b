#!/usr/bin/env bash
# Fetch llama.cpp's Qwen3.5 vocabulary test files (ggml-vocab-qwen35.gguf and
# its .inp/.out cases) from the PyPI sdist of llama-cpp-python 0.3.36, which
# vendors llama.cpp, into a gitignored cache (not committed: third-party files).
#
#   scripts/fetch-test-data.sh            # -> .cache/test-data/
#   LUCEBOX_TEST_DATA=/some/dir scripts/fetch-test-data.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${LUCEBOX_TEST_DATA:-$root/.cache/test-data}
version=0.3.36
declare -A sha256=(
  [ggml-vocab-qwen35.gguf]=63ed952ff338996cf0bdf24a7b10015124273f75c6dc9bb427356aa3f67ec62c
  [ggml-vocab-qwen35.gguf.inp]=0fc6547e7876cd5b2ef64a9d319c6e39040eb53986660bd4227ed7ddef017a94
  [ggml-vocab-qwen35.gguf.out]=5efe225820325303857d0a087a8d59216f0d1e9a9e31133e7a5b44c3c4e1e9ca
)

verify() {
  for f in "${!sha256[@]}"; do
    [ -f "$dest/$f" ] || return 1
    echo "${sha256[$f]}  $dest/$f" | sha256sum --check --status || return 1
  done
}

if verify; then
  echo "test data already present in $dest"
  exit 0
fi

mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# --no-binary for this package only: its build dependencies may come as wheels.
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$version" -d "$tmp"
tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$tmp" \
  --wildcards "*/vendor/llama.cpp/models/ggml-vocab-qwen35.gguf*"
for f in "${!sha256[@]}"; do
  cp "$tmp/llama_cpp_python-$version/vendor/llama.cpp/models/$f" "$dest/$f"
done
verify || { echo "checksum mismatch in $dest" >&2; exit 1; }
echo "test data written to $dest"
