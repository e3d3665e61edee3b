#!/usr/bin/env python3
"""Write models/tests/data/quant_vectors.json: reference vectors for Q8_0, Q4_K
and Q6_K from gguf-py (`pip install gguf numpy`), whose numpy code mirrors
ggml-quants.c.

- Q8_0: random f32 input, gguf-py's quantised bytes (bit-exact with ggml's
  quantize_row_q8_0_ref) and their dequantisation.
- Q4_K / Q6_K: gguf-py only dequantises K-quants, so the vectors are random
  blocks (random bits, with finite fp16 scales) and their dequantisation.
  Our K-quant quantisers are checked by error bounds instead.

f32 values are stored as their u32 bit patterns so the comparison is exact.
"""
import json
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(20260122)
out = {}


def f32_bits(a):
    return [int(v) for v in np.asarray(a, dtype=np.float32).view(np.uint32).ravel()]


# Q8_0: 8 blocks, varied magnitudes, one all-zero block.
x = (rng.standard_normal(8 * 32) * rng.choice([1e-3, 0.02, 1.0, 40.0], 8 * 32)).astype(np.float32)
x[32:64] = 0.0
q = quants.quantize(x, T.Q8_0)
out["Q8_0"] = {
    "n": int(x.size),
    "input_f32_bits": f32_bits(x),
    "bytes_hex": q.tobytes().hex(),
    "dequant_f32_bits": f32_bits(quants.dequantize(q, T.Q8_0)),
}


def random_blocks(n_blocks, block_bytes, half_offsets):
    b = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in half_offsets:
        h = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
        b[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return b


for name, qt, bsize, halves in [("Q4_K", T.Q4_K, 144, [0, 2]), ("Q6_K", T.Q6_K, 210, [208])]:
    blocks = random_blocks(6, bsize, halves)
    deq = quants.dequantize(blocks, qt)
    out[name] = {
        "n": int(deq.size),
        "bytes_hex": blocks.tobytes().hex(),
        "dequant_f32_bits": f32_bits(deq),
    }

path = pathlib.Path(__file__).resolve().parent.parent / "models/tests/data/quant_vectors.json"
path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
print(f"wrote {path} ({path.stat().st_size} bytes)")
