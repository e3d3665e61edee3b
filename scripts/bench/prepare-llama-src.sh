#!/usr/bin/env bash
# Prepares, on a machine WITH network, the llama.cpp source that
# scripts/bench/gpu-bench.sh builds on the GPU machine (which has none).
#
# The source is the llama.cpp vendored in the PyPI sdist of
# llama-cpp-python==0.3.36 (the version the anchors were measured with). The
# sdist is 76 MB, over the 64 MiB a device call can carry, so this keeps only
# vendor/llama.cpp minus what building `llama-bench` does not read (test
# models, docs, examples, tests, the web UI, other backends) and packs it as
# .bench/llama.cpp-src.tar.xz (about 4 MB).
#
# `pip download llama-cpp-python==0.3.36` would try to build the package
# metadata (a full CMake build) and hangs, so the sdist URL is read from the
# PyPI simple index and fetched with curl; its sha256 from the index is checked.
#
# Usage: scripts/bench/prepare-llama-src.sh [--sdist PATH] [--out FILE]
set -euo pipefail

version=0.3.36
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.bench/llama.cpp-src.tar.xz"
sdist=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sdist) sdist=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

name="llama_cpp_python-$version.tar.gz"
cache="$root/.cache/bench"
mkdir -p "$cache" "$(dirname "$out")"

if [ -z "$sdist" ]; then
  for c in "$cache/$name" "/tmp/llsdist/$name"; do
    if [ -f "$c" ]; then sdist=$c; break; fi
  done
fi

index_line() {
  curl -fsSL --retry 3 https://pypi.org/simple/llama-cpp-python/ | grep -o "href=\"[^\"]*${name}[^\"]*\"" | head -n1
}

if [ -z "$sdist" ]; then
  href=$(index_line | sed -e 's/^href="//' -e 's/"$//')
  [ -n "$href" ] || { echo "error: $name not found on the PyPI simple index" >&2; exit 1; }
  url=${href%%#*}
  want=${href##*#sha256=}
  echo "downloading $url" >&2
  curl -fL --retry 3 -o "$cache/$name.part" "$url"
  got=$(sha256sum "$cache/$name.part" | cut -d' ' -f1)
  if [ "$href" != "$url" ] && [ "$got" != "$want" ]; then
    echo "error: sha256 mismatch for $name: got $got, index says $want" >&2
    exit 1
  fi
  mv "$cache/$name.part" "$cache/$name"
  sdist="$cache/$name"
fi
echo "sdist: $sdist ($(du -h "$sdist" | cut -f1))" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
top="llama_cpp_python-$version/vendor/llama.cpp"
tar -xzf "$sdist" -C "$work" "$top"
src="$work/$top"

# Keep the Qwen3.5 vocabulary: `lucebox synth --vocab-from` gives the GGUF a
# real tokenizer from it.
mv "$src/models/ggml-vocab-qwen35.gguf" "$work/vocab.gguf"
# What building llama-bench (CUDA + CPU backends) does not read.
rm -rf "${src:?}"/{models,docs,media,examples,pocs,tests,benches,gguf-py,conversion,scripts,skills,requirements,grammars,app,ci,licenses,.devops,.github}
rm -rf "$src"/.git "$src"/.gitmodules
rm -rf "$src"/.git "$src"/.gitmodules
rm -f "$src"/*.py "$src"/flake.nix "$src"/build-xcframework.sh
find "$src/tools" -mindepth 1 -maxdepth 1 ! -name llama-bench ! -name CMakeLists.txt -exec rm -rf {} +
rm -rf "$src/vendor/miniaudio" "$src/vendor/stb"
for b in blas cann et hexagon hip metal musa opencl openvino rpc sycl virtgpu vulkan webgpu zdnn zendnn; do
  rm -rf "$src/ggml/src/ggml-$b"
done
find "$src" -name '*.gguf' -delete
mkdir -p "$src/models"
mv "$work/vocab.gguf" "$src/models/ggml-vocab-qwen35.gguf"

# Only llama-bench under tools/, and no vendored libraries that only mtmd uses.
cat > "$src/tools/CMakeLists.txt" <<'CMAKE'
# Trimmed by lucebox scripts/bench/prepare-llama-src.sh: only llama-bench.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
CMAKE
sed -i -e '/add_subdirectory(miniaudio)/d' -e '/add_subdirectory(stb)/d' "$src/vendor/CMakeLists.txt"
cat > "$src/LUCEBOX-TRIMMED.txt" <<TXT
llama.cpp vendored in the PyPI sdist llama-cpp-python==$version ($(basename "$sdist"),
sha256 $(sha256sum "$sdist" | cut -d' ' -f1)), trimmed by lucebox
scripts/bench/prepare-llama-src.sh to what building llama-bench needs.
TXT

mv "$src" "$work/llama.cpp"
tar -C "$work" -cf - llama.cpp | xz -T2 -9 > "$out.part"
mv "$out.part" "$out"
echo "wrote $out ($(du -h "$out" | cut -f1), $(tar -tJf "$out" | wc -l) entries)"
