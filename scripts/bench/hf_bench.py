#!/usr/bin/env python3
"""HF transformers baseline with the protocol of `lucebox bench`.

Prompt: exactly --pp token ids drawn with SplitMix64 from --seed (the same ids
`lucebox bench --seed` uses). Each repetition: a fresh DynamicCache, one
forward over the prompt (timed as prefill, with the greedy argmax of the last
position), then exactly --tg single-token forwards, each followed by a greedy
argmax on the GPU (timed as decode; EOS ignored, no host sync inside the loop).
CUDA events time both phases. --warmup repetitions first, not counted.

Energy (CUDA only, NVML through ctypes, no extra package): prefill-only
forwards back to back for at least --energy-seconds (tok/J = pp * runs / J);
decode energy is read around the decode loops of the timed repetitions (plus
untimed ones until at least --energy-seconds of decode was measured).

--expect-fla yes|no checks which gated-delta-rule kernels transformers bound
(flash-linear-attention or its torch fallback) and fails on a mismatch, so a
row labelled "+ fla" cannot silently be the fallback, nor the reverse.

Writes one JSON object to --out (and stdout). Needs torch, transformers >= 5.
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time

MASK64 = (1 << 64) - 1


def splitmix64(seed):
    state = seed & MASK64
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        yield z ^ (z >> 31)


def random_prompt(n, vocab, seed):
    g = splitmix64(seed)
    return [next(g) % vocab for _ in range(n)]


def spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


class Nvml:
    """The NVML calls this needs, through ctypes (no pynvml on the GPU machine)."""

    def __init__(self, pci_bus_id=None, index=0):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        self._check(self.lib.nvmlInit_v2(), "nvmlInit")
        self.handle = ctypes.c_void_p()
        rc = 1
        if pci_bus_id:
            rc = self.lib.nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id.encode(), ctypes.byref(self.handle))
        if rc != 0:
            self._check(self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(self.handle)), "handle")
        self.energy_mj()  # fails here when the board has no energy counter

    @staticmethod
    def _check(rc, what):
        if rc != 0:
            raise RuntimeError(f"NVML {what} failed with code {rc}")

    def energy_mj(self):
        v = ctypes.c_ulonglong()
        self._check(self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle, ctypes.byref(v)), "energy")
        return v.value

    def driver_version(self):
        buf = ctypes.create_string_buffer(96)
        self._check(self.lib.nvmlSystemGetDriverVersion(buf, 96), "driver version")
        return buf.value.decode()

    def clocks_mhz(self):
        out = {}
        for name, kind in (("sm_clock_mhz", 1), ("mem_clock_mhz", 2)):
            v = ctypes.c_uint()
            if self.lib.nvmlDeviceGetClockInfo(self.handle, kind, ctypes.byref(v)) == 0:
                out[name] = v.value
        return out


def resolved_kernel(fn):
    """Module of the implementation transformers bound behind `fn` (its
    hub-kernel wrapper keeps it in the closure cell `implementation`)."""
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is not None:
        env = dict(zip(code.co_freevars, (c.cell_contents for c in cells)))
        impl = env.get("implementation")
        if impl is not None:
            return f"{getattr(impl, '__module__', '?')}.{getattr(impl, '__name__', '?')}"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', '?')}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF model directory (config.json + safetensors)")
    ap.add_argument("--pp", type=int, default=520)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--energy-seconds", type=float, default=2.0, help="0 skips energy")
    ap.add_argument("--expect-fla", choices=["yes", "no", "any"], default="any")
    ap.add_argument("--label", default=None, help="system name in the results table")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import DynamicCache, Qwen3_5ForCausalLM
    from transformers.models.qwen3_5 import modeling_qwen3_5 as mq

    kernels = {
        name: resolved_kernel(getattr(mq, name))
        for name in (
            "torch_chunk_gated_delta_rule",
            "torch_recurrent_gated_delta_rule",
            "causal_conv1d_fn",
            "causal_conv1d_update",
        )
        if hasattr(mq, name)
    }
    uses_fla = any(v.startswith("fla.") for v in kernels.values())
    try:
        import fla  # noqa: F401

        fla_version = getattr(fla, "__version__", "?")
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        fla_version = None
    if args.expect_fla == "yes" and not uses_fla:
        sys.exit(f"error: --expect-fla yes, but transformers bound {kernels} (fla import: {fla_version})")
    if args.expect_fla == "no" and uses_fla:
        sys.exit(f"error: --expect-fla no, but transformers bound {kernels}")
    label = args.label or ("HF transformers + fla" if uses_fla else "HF transformers")

    dev = torch.device(args.device)
    on_cuda = dev.type == "cuda"
    dtype = getattr(torch, args.dtype)
    t_load = time.perf_counter()
    model = Qwen3_5ForCausalLM.from_pretrained(args.model, dtype=dtype).to(dev).eval()
    load_s = time.perf_counter() - t_load
    cfg = model.config
    vocab = cfg.vocab_size
    prompt = random_prompt(args.pp, vocab, args.seed)
    ids = torch.tensor([prompt], dtype=torch.long, device=dev)

    def sync():
        if on_cuda:
            torch.cuda.synchronize(dev)

    class Clock:
        """CUDA events on the GPU, perf_counter on the CPU."""

        def __init__(self):
            self.ev = torch.cuda.Event(enable_timing=True) if on_cuda else None
            self.t = None

        def mark(self):
            if on_cuda:
                self.ev.record()
            else:
                self.t = time.perf_counter()

        def seconds_to(self, other):
            if on_cuda:
                return self.ev.elapsed_time(other.ev) / 1e3
            return other.t - self.t

    def prefill(cache):
        out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def decode(cache, tok, steps):
        for _ in range(steps):
            out = model(tok, past_key_values=cache, use_cache=True)
            tok = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        return tok

    nvml = None
    energy_note = None
    if on_cuda and args.energy_seconds > 0:
        try:
            props = torch.cuda.get_device_properties(dev)
            bus = getattr(props, "pci_bus_id", None)
            if isinstance(bus, int) or bus is None:
                bus = None
            nvml = Nvml(pci_bus_id=bus, index=dev.index or 0)
        except Exception as e:  # noqa: BLE001 - energy is optional
            energy_note = f"energy not measured: {e}"

    def rep(measure_decode_energy):
        cache = DynamicCache(config=cfg)
        c0, c1, c2, c3 = Clock(), Clock(), Clock(), Clock()
        sync()
        c0.mark()
        tok = prefill(cache)
        c1.mark()
        e1 = None
        if measure_decode_energy:
            sync()
            e1 = nvml.energy_mj()
        c2.mark()  # decode starts here (after the energy read, if any)
        decode(cache, tok, args.tg)
        c3.mark()
        sync()
        e2 = nvml.energy_mj() if measure_decode_energy else None
        dj = (e2 - e1) / 1e3 if measure_decode_energy else None
        return c0.seconds_to(c1), c2.seconds_to(c3), dj

    with torch.inference_mode():
        for _ in range(args.warmup):
            rep(False)
        timed = [rep(nvml is not None) for _ in range(args.reps)]
        prefill_s = [t[0] for t in timed]
        decode_s = [t[1] for t in timed]

        energy = {"prefill": None, "decode": None}
        if nvml is not None:
            # Decode: the timed loops, topped up with untimed ones.
            dj = sum(t[2] for t in timed)
            ds = sum(decode_s)
            runs = len(timed)
            while ds < args.energy_seconds:
                _, s, j = rep(True)
                dj, ds, runs = dj + j, ds + s, runs + 1
            energy["decode"] = {
                "tokens": args.tg * runs,
                "joules": dj,
                "tok_per_joule": args.tg * runs / dj if dj > 0 else None,
                "mean_watts": dj / ds,
                "runs": runs,
                "method": "nvml total-energy counter around each decode loop",
            }
            # Prefill: prefill-only forwards back to back.
            runs = 0
            sync()
            e0, t0 = nvml.energy_mj(), time.perf_counter()
            while runs < 2 or time.perf_counter() - t0 < args.energy_seconds:
                prefill(DynamicCache(config=cfg))
                runs += 1
            sync()
            pj, ps = (nvml.energy_mj() - e0) / 1e3, time.perf_counter() - t0
            energy["prefill"] = {
                "tokens": args.pp * runs,
                "joules": pj,
                "tok_per_joule": args.pp * runs / pj if pj > 0 else None,
                "mean_watts": pj / ps,
                "runs": runs,
                "method": "nvml total-energy counter around back-to-back prefills",
            }

    def phase(tokens, secs, en):
        rates = [tokens / s for s in secs]
        return {
            "tokens": tokens,
            "tok_per_s": spread(rates),
            "ms_per_token": statistics.median(secs) * 1e3 / tokens,
            "seconds": secs,
            "energy": en,
        }

    device = {"name": platform.processor() or platform.machine(), "kind": "cpu"}
    if on_cuda:
        p = torch.cuda.get_device_properties(dev)
        device = {
            "name": p.name,
            "compute_capability": f"{p.major}{p.minor}",
            "sm_count": p.multi_processor_count,
            "kind": "cuda",
        }
        if nvml is not None:
            device["driver"] = nvml.driver_version()
            device.update(nvml.clocks_mhz())
    notes = [energy_note] if energy_note else []
    result = {
        "schema": "lucebox-bench-hf/1",
        "system": label,
        "engine": f"transformers {transformers.__version__} Qwen3_5ForCausalLM ({args.dtype}, {kernels.get('torch_chunk_gated_delta_rule')})",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "flash_linear_attention": fla_version,
        },
        "kernels": kernels,
        "uses_fla": uses_fla,
        "command": [sys.executable] + sys.argv,
        "unix_time": int(time.time()),
        "model": {"path": os.path.abspath(args.model), "vocab_size": vocab, "load_seconds": load_s},
        "protocol": {"pp": args.pp, "tg": args.tg, "reps": args.reps, "warmup": args.warmup, "seed": args.seed},
        "prefill": phase(args.pp, prefill_s, energy["prefill"]),
        "decode": phase(args.tg, decode_s, energy["decode"]),
        "device": device,
        "notes": notes,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
