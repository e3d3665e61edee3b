#!/usr/bin/env python3
"""Compare `lucebox logits --all-positions` JSON with HF transformers on the same checkpoint.

usage: compare_hf_logits.py MODEL_DIR LUCEBOX_JSON [--device cuda]
HF runs in fp32 on the bf16 weights (the oracle's precision). Prints the relative
error (max |diff| / max |HF| per position, worst over positions), argmax agreement,
and exits non-zero past the bf16 tolerance (rel err 2e-2, argmax >= 99%).
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> int:
    model_dir, got_path = sys.argv[1], sys.argv[2]
    device = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--device" else "cuda"
    got = json.load(open(got_path))
    ids = got["ids"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids], device=device)).logits[0].float().cpu()
    worst, agree = 0.0, 0
    for row, pos in zip(got["logits"], got["positions"]):
        g = torch.tensor(row)
        r = ref[pos]
        err = ((g - r).abs().max() / r.abs().max()).item()
        worst = max(worst, err)
        agree += int(g.argmax().item() == r.argmax().item())
    n = len(got["positions"])
    ok = worst < 2e-2 and agree >= 0.99 * n
    print(f"HF transformers vs lucebox GPU: {n} positions, max rel err {worst:.3e}, "
          f"argmax agree {agree}/{n} -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
