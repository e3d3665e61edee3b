#!/usr/bin/env python3
"""Write cli/tests/assets/tiny-chat-model: a tiny random-weight Qwen3.5 text
checkpoint with a real byte-level BPE tokenizer and a ChatML chat template, so
that `lucebox serve` can be tested end to end on the CPU backend in CI.

Deterministic: a fixed seed gives the same files on every run. Needs only the
`tokenizers` package (bf16 safetensors are written by hand: the format is a
length-prefixed JSON header followed by raw little-endian tensor bytes).

    python scripts/make_tiny_chat_model.py [OUT_DIR]
"""

import json
import math
import os
import random
import struct
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 384
SEED = 20260401

# Text the BPE merges are learnt from: a little English and some chat-shaped text.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello! How can I help you today? I am a small assistant running on lucebox.",
    "You are a helpful assistant. Answer the question briefly and clearly.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea. The sea is wide, the sea is deep, the waves roll in while sailors sleep.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Count from one to ten: one, two, three, four, five, six, seven, eight, nine, ten.",
    "The server streams tokens to the client as they are generated, one after another.",
    "system\nuser\nassistant\n",
    "Thank you very much. You are welcome. Good morning, good evening, good night.",
    "A language model predicts the next token from the tokens before it.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2026 3.14 42",
]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 4
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16
HK, HV, DK, DV = 2, 6, 16, 16  # Hv = 3 Hk exercises the GDN head grouping
CONV_K = 4
MAX_POS = 1024


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok


def bf16_bytes(values):
    out = bytearray()
    for v in values:
        (bits,) = struct.unpack("<I", struct.pack("<f", v))
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        out += struct.pack("<H", bits & 0xFFFF)
    return bytes(out)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = bf16_bytes(values)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def make_weights(vocab, rng):
    def normal(shape, std):
        return (shape, [rng.gauss(0.0, std) for _ in range(math.prod(shape))])

    def const(shape, v):
        return (shape, [v] * math.prod(shape))

    t = {}
    t["model.embed_tokens.weight"] = normal([vocab, HIDDEN], 0.5)
    # An untied head: with tied random embeddings the logit of the last input
    # token dominates and the model repeats it forever. A separate random head
    # (logit spread of a few units) gives varied, context-dependent text, so
    # that stop strings, sampling and streaming tests see real differences.
    t["lm_head.weight"] = normal([vocab, HIDDEN], 0.3)
    t["model.norm.weight"] = const([HIDDEN], 0.0)
    kd, vd = HK * DK, HV * DV
    conv_dim = 2 * kd + vd
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = const([HIDDEN], 0.0)
        t[p + "post_attention_layernorm.weight"] = const([HIDDEN], 0.0)
        t[p + "mlp.gate_proj.weight"] = normal([INTERMEDIATE, HIDDEN], 0.05)
        t[p + "mlp.up_proj.weight"] = normal([INTERMEDIATE, HIDDEN], 0.05)
        t[p + "mlp.down_proj.weight"] = normal([HIDDEN, INTERMEDIATE], 0.05)
        if (i + 1) % 4 == 0:
            a = p + "self_attn."
            t[a + "q_proj.weight"] = normal([2 * HEADS * HEAD_DIM, HIDDEN], 0.05)
            t[a + "k_proj.weight"] = normal([KV_HEADS * HEAD_DIM, HIDDEN], 0.05)
            t[a + "v_proj.weight"] = normal([KV_HEADS * HEAD_DIM, HIDDEN], 0.05)
            t[a + "o_proj.weight"] = normal([HIDDEN, HEADS * HEAD_DIM], 0.05)
            t[a + "q_norm.weight"] = const([HEAD_DIM], 0.0)
            t[a + "k_norm.weight"] = const([HEAD_DIM], 0.0)
        else:
            g = p + "linear_attn."
            t[g + "in_proj_qkv.weight"] = normal([conv_dim, HIDDEN], 0.05)
            t[g + "in_proj_z.weight"] = normal([vd, HIDDEN], 0.05)
            t[g + "in_proj_b.weight"] = normal([HV, HIDDEN], 0.05)
            t[g + "in_proj_a.weight"] = normal([HV, HIDDEN], 0.05)
            t[g + "conv1d.weight"] = normal([conv_dim, 1, CONV_K], 0.3)
            t[g + "dt_bias"] = const([HV], 1.0)
            t[g + "A_log"] = ([HV], [math.log(rng.uniform(1.0, 16.0)) for _ in range(HV)])
            t[g + "norm.weight"] = const([DV], 1.0)
            t[g + "out_proj.weight"] = normal([HIDDEN, vd], 0.05)
    return t


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "cli", "tests", "assets", "tiny-chat-model")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(SEED)

    tok = train_tokenizer()
    vocab = tok.get_vocab_size()
    ids = {s: tok.token_to_id(s) for s in SPECIAL_TOKENS}
    tok.save(os.path.join(out, "tokenizer.json"))

    layer_types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(LAYERS)]
    config = {
        "architectures": ["Qwen3_5ForCausalLM"],
        "model_type": "qwen3_5_text",
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "layer_types": layer_types,
        "full_attention_interval": 4,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "attn_output_gate": True,
        "linear_num_key_heads": HK,
        "linear_num_value_heads": HV,
        "linear_key_head_dim": DK,
        "linear_value_head_dim": DV,
        "linear_conv_kernel_dim": CONV_K,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "max_position_embeddings": MAX_POS,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25},
        "eos_token_id": ids["<|im_end|>"],
        "bos_token_id": None,
        "torch_dtype": "bfloat16",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_POS,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "added_tokens_decoder": {
            str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
            for s, i in ids.items()
        },
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad_token_id": ids["<|endoftext|>"]}, f, indent=2)
        f.write("\n")

    write_safetensors(os.path.join(out, "model.safetensors"), make_weights(vocab, rng))
    print(f"wrote {out}: vocab {vocab}, special ids {ids}")


if __name__ == "__main__":
    main()
