#!/usr/bin/env bash
# Byte-exact reference vectors for our Q4_K / Q6_K / Q8_0 *quantisers*:
# compiles ggml's own ggml-quants.c (from the llama-cpp-python 0.3.36 sdist,
# which vendors llama.cpp) with a tiny harness, quantises a fixed random input
# and writes models/tests/data/kquant_vectors.json. gguf-py cannot serve here:
# it only dequantises K-quants. Needs gcc, python3 + numpy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==0.3.36" -d "$tmp"
tar -xzf "$tmp/llama_cpp_python-0.3.36.tar.gz" -C "$tmp" --wildcards "*/vendor/llama.cpp/ggml/*"
g="$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml"
# No FMA contraction: the reference arithmetic must round like plain C (and Rust).
gcc -O2 -ffp-contract=off -I "$g/include" -I "$g/src" -c "$g/src/ggml-quants.c" -o "$tmp/q.o"
gcc -O2 -I "$g/include" "$root/scripts/kquant/qref.c" "$root/scripts/kquant/stubs.c" "$tmp/q.o" -o "$tmp/qref" -lm
QREF="$tmp/qref" OUT="$root/models/tests/data/kquant_vectors.json" python3 - <<'PY'
import json, os, subprocess
import numpy as np
rng = np.random.default_rng(20260122)
x = (rng.standard_normal(256 * 4) * 0.03).astype(np.float32)
x[:256] *= 100.0      # a block with large values
x[256:512] = 0.0      # an all-zero block
x[512:768] = np.abs(x[512:768])  # all positive (min = 0 path)
out = {"n": int(x.size), "input_f32_bits": [int(v) for v in x.view(np.uint32)]}
for name, arg in [("Q4_K", "q4"), ("Q6_K", "q6"), ("Q8_0", "q8")]:
    b = subprocess.run([os.environ["QREF"], arg, str(x.size)], input=x.tobytes(), capture_output=True, check=True).stdout
    out[name] = b.hex()
open(os.environ["OUT"], "w").write(json.dumps(out, separators=(",", ":")) + "\n")
print("wrote", os.environ["OUT"])
PY
