#!/usr/bin/env python3
"""Build tiny random Qwen3.5 checkpoints and HF transformers reference outputs.

Writes, per fixture, under models/tests/fixtures/<name>/:
  config.json           HF config (composite `qwen3_5` or text-only `qwen3_5_text`)
  model.safetensors     bf16 weights (composite: `model.language_model.*` plus a
                        few `model.visual.*` / `mtp.*` tensors that loaders must ignore;
                        text-only: `model.*`)
  reference.json        prompt, greedy tokens, shapes, versions, and where each
                        logits block lives in reference.f32
  reference.f32         little-endian float32 logits, blocks back to back:
                        prompt_logits [T, V]   one forward over the whole prompt (chunked GDN)
                        greedy_logits [G, V]   the logits each greedy step was chosen from
                                               (prefill, then one cached token per step)
                        split_logits  [T-S, V] prompt[:S] with a cache, then prompt[S:] as one
                                               multi-token cached call (needs transformers >= 5.7)

HF runs in fp32 with the bf16-rounded weights (what the bf16 file holds), with the
torch fallbacks of the GDN kernels (no fla / causal-conv1d).

Usage: python scripts/make_hf_fixtures.py [--out models/tests/fixtures]
Needs: torch, transformers >= 5.7, safetensors, numpy.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

PROMPT_LEN = 80  # > one 64-token chunk
SPLIT_AT = 70
GREEDY_STEPS = 16


def text_config(tie: bool, theta: float, vocab: int) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        full_attention_interval=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        linear_num_key_heads=2,
        linear_num_value_heads=6,  # Hv = 3 Hk: exercises v-head -> k-head grouping
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        linear_conv_kernel_dim=4,
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
        tie_word_embeddings=tie,
        hidden_act="silu",
        attention_bias=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": theta,
            "partial_rotary_factor": 0.25,  # rotary dim 8 of 32
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
        },
        eos_token_id=vocab - 1,
    )


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter random, then rounded to bf16 (the file's precision)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape

            def normal(std, mean=0.0):
                return torch.randn(shape, generator=gen) * std + mean

            if name.endswith("linear_attn.norm.weight"):
                v = normal(0.2, 1.0)  # gated norm: plain w, around 1
            elif "norm" in name:
                v = normal(0.2)  # zero-centred norms: (1 + w)
            elif name.endswith("A_log"):
                v = torch.log(torch.rand(shape, generator=gen) * 7.5 + 0.5)
            elif name.endswith("dt_bias"):
                v = normal(0.5)
            elif "conv1d" in name:
                v = normal(0.3)
            elif "embed_tokens" in name:
                v = normal(0.25)
            elif name == "lm_head.weight":
                v = normal(0.15)
            else:
                v = normal(1.0 / math.sqrt(shape[-1]))
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def build(name: str, out_dir: str, composite: bool, tie: bool, theta: float, vocab: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    tcfg = text_config(tie, theta, vocab)
    config = Qwen3_5TextConfig(**tcfg)
    config._attn_implementation = "eager"
    model = Qwen3_5ForCausalLM(config).to(torch.float32).eval()
    randomise(model, gen)
    if tie:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)

    # Weights: canonical HF names under the scheme of this fixture.
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if tie:
        state.pop("lm_head.weight", None)
    tensors = {}
    for k, v in state.items():
        if composite and k.startswith("model."):
            k = "model.language_model." + k[len("model.") :]
        tensors[k] = v
    if composite:
        # Extra tensors of real checkpoints that text loaders must ignore.
        tensors["model.visual.patch_embed.proj.weight"] = torch.randn(8, 3, 2, 2, generator=gen).to(torch.bfloat16)
        tensors["mtp.fc.weight"] = torch.randn(64, 128, generator=gen).to(torch.bfloat16)
        tensors["mtp.layers.0.input_layernorm.weight"] = torch.zeros(64, dtype=torch.bfloat16)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    if composite:
        cfg_json = {
            "architectures": ["Qwen3_5ForConditionalGeneration"],
            "model_type": "qwen3_5",
            "tie_word_embeddings": tie,
            "text_config": {"model_type": "qwen3_5_text", **tcfg},
            "vision_config": {"model_type": "qwen3_5", "depth": 1, "hidden_size": 8},
        }
    else:
        cfg_json = {"architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text", **tcfg}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)

    # Reference outputs.
    prompt = torch.randint(0, vocab - 1, (PROMPT_LEN,), generator=gen).tolist()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        prompt_logits = model(ids).logits[0].float()

        # An explicit all-ones mask: otherwise generate() derives one from
        # pad_token_id and silently masks prompt tokens equal to it.
        gen_out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=GREEDY_STEPS,
            min_new_tokens=GREEDY_STEPS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            eos_token_id=None,
            pad_token_id=0,
        )
        greedy = gen_out.sequences[0, PROMPT_LEN:].tolist()
        greedy_logits = torch.stack([l[0].float() for l in gen_out.logits])

        # Multi-token forward on top of a cache (speculative verify shape).
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        model(ids[:, :SPLIT_AT], past_key_values=cache, use_cache=True)
        split_logits = model(
            ids[:, SPLIT_AT:],
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(SPLIT_AT, PROMPT_LEN),
        ).logits[0].float()
    # Consistency of HF with itself: the cached split equals the one-shot forward.
    split_diff = (split_logits - prompt_logits[SPLIT_AT:]).abs().max().item()
    assert split_diff < 1e-3, f"HF multi-token cached forward disagrees with one-shot ({split_diff}); transformers < 5.7?"
    first_step_diff = (greedy_logits[0] - prompt_logits[-1]).abs().max().item()
    assert first_step_diff < 1e-3, f"HF generate's first step disagrees with the one-shot forward ({first_step_diff})"

    blocks = [
        ("prompt_logits", prompt_logits),
        ("greedy_logits", greedy_logits),
        ("split_logits", split_logits),
    ]
    layout = {}
    offset = 0
    with open(os.path.join(d, "reference.f32"), "wb") as f:
        for bname, t in blocks:
            arr = t.numpy().astype("<f4")
            f.write(arr.tobytes())
            layout[bname] = {"offset_floats": offset, "shape": list(arr.shape)}
            offset += arr.size
    meta = {
        "name": name,
        "scheme": "model.language_model.*" if composite else "model.*",
        "tied": tie,
        "prompt": prompt,
        "split_at": SPLIT_AT,
        "greedy_tokens": greedy,
        "blocks": layout,
        "hf_split_vs_oneshot_max_abs_diff": split_diff,
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "note": "HF fp32 forward with bf16-rounded weights; GDN via torch fallbacks; eager attention",
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)

    # The written checkpoint must load back in HF and give the same logits.
    try:
        from transformers import AutoModelForCausalLM

        back = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            again = back(ids).logits[0].float()
        reload_diff = (again - prompt_logits).abs().max().item()
        meta["hf_reload_max_abs_diff"] = reload_diff
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(f"{name}: reload max abs diff {reload_diff:.3g}")
    except Exception as e:  # noqa: BLE001 - report, the fixture itself is still valid
        print(f"{name}: HF could not reload the written checkpoint: {e}")
    print(f"{name}: greedy {greedy}; logits |max| {prompt_logits.abs().max().item():.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models", "tests", "fixtures"))
    args = ap.parse_args()
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) < (5, 7):
        sys.exit(f"transformers >= 5.7 needed (multi-token cached GDN), found {transformers.__version__}")
    torch.set_num_threads(2)
    build("tiny-composite-tied", args.out, composite=True, tie=True, theta=1e7, vocab=256, seed=1)
    build("tiny-text-untied", args.out, composite=False, tie=False, theta=1e4, vocab=256, seed=2)


if __name__ == "__main__":
    main()
