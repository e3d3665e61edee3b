#!/usr/bin/env python3
"""Turns the raw outputs of scripts/bench/gpu-bench.sh (one results directory)
into the RESULTS.md table: one row per system with pp and tg tok/s (median
[min-max]) and tok/J, then the device, driver, versions, date and the exact
commands. Missing or failed systems get a row saying so.

Usage: results-to-md.py RESULTS_DIR [> RESULTS.md]
"""

import json
import os
import re
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_rate(s):
    if not s:
        return "–"
    med, lo, hi = s["median"], s["min"], s["max"]
    digits = 0 if med >= 100 else 1
    return f"{med:,.{digits}f} [{lo:,.{digits}f}–{hi:,.{digits}f}]"


def fmt_tpj(e):
    if not e or not e.get("tok_per_joule"):
        return "–"
    v = e["tok_per_joule"]
    return f"{v:,.1f}" if v >= 10 else f"{v:.2f}"


def own_row(name, r):
    """lucebox and HF rows share the lucebox-bench JSON layout."""
    return {
        "system": name,
        "pp": r["prefill"]["tok_per_s"],
        "tg": r["decode"]["tok_per_s"],
        "pp_e": r["prefill"].get("energy"),
        "tg_e": r["decode"].get("energy"),
        "pp_tokens": r["prefill"]["tokens"],
        "tg_tokens": r["decode"]["tokens"],
    }


def reps_of(cmd):
    for i, a in enumerate(cmd):
        if a in ("-r", "--repetitions") and i + 1 < len(cmd):
            return int(cmd[i + 1])
    return None


def llama_energy(res, name, phase, tokens_per_rep):
    lo, hi = load(os.path.join(res, f"{name}.energy-{phase}-lo.json")), load(
        os.path.join(res, f"{name}.energy-{phase}-hi.json")
    )
    if not lo or not hi or "joules" not in lo or "joules" not in hi or lo["rc"] or hi["rc"]:
        return None
    extra = reps_of(hi["command"]) - reps_of(lo["command"])
    joules = hi["joules"] - lo["joules"]
    if extra <= 0 or joules <= 0:
        return None
    return {"tok_per_joule": extra * tokens_per_rep / joules, "joules": joules, "tokens": extra * tokens_per_rep}


def llama_row(res, name, label):
    runs = load(os.path.join(res, f"{name}.json"))
    if not isinstance(runs, list):
        return None
    row = {"system": label, "pp": None, "tg": None, "pp_e": None, "tg_e": None, "meta": runs[0] if runs else {}}
    for t in runs:
        ts = t.get("samples_ts") or []
        if not ts:
            continue
        s = {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "runs": len(ts)}
        if t.get("n_gen", 0) == 0 and t.get("n_prompt", 0) > 0:
            row["pp"], row["pp_tokens"] = s, t["n_prompt"]
            row["pp_e"] = llama_energy(res, name, "pp", t["n_prompt"])
        elif t.get("n_prompt", 0) == 0 and t.get("n_gen", 0) > 0:
            row["tg"], row["tg_tokens"] = s, t["n_gen"]
            row["tg_e"] = llama_energy(res, name, "tg", t["n_gen"])
    return row


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    res = sys.argv[1]
    system = {}
    try:
        with open(os.path.join(res, "system.txt")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                system.setdefault(k, v)
    except OSError:
        pass
    stages = ""
    try:
        with open(os.path.join(res, "stages.txt")) as f:
            stages = f.read()
    except OSError:
        pass
    failed = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+): ((?:FAILED|SKIPPED).*)$", stages, re.M)}

    rows, jsons = [], {}
    for fname, label, stage in (
        ("lucebox.json", "lucebox", "lucebox"),
        ("hf.json", "HF transformers (torch fallbacks)", "hf"),
        ("hf-fla.json", "HF transformers + flash-linear-attention", "hf-fla"),
    ):
        r = load(os.path.join(res, fname))
        jsons[stage] = r
        if r:
            if stage.startswith("hf") and r.get("versions", {}).get("flash_linear_attention") and r.get("uses_fla"):
                label = f"HF transformers + flash-linear-attention {r['versions']['flash_linear_attention']}"
            rows.append(own_row(label, r))
        else:
            rows.append({"system": label, "missing": failed.get(stage, "no result")})
    for name, label in (("llama-bf16", "llama.cpp BF16, FA on"), ("llama-q4km", "llama.cpp Q4_K_M, FA on")):
        r = llama_row(res, name, label)
        jsons[name] = r
        rows.append(r if r else {"system": label, "missing": failed.get(name, failed.get("build", "no result"))})

    # Token counts for the header: from the first system that ran.
    n_pp, n_tg = None, None
    for key in ("lucebox", "hf", "hf-fla"):
        proto = (jsons.get(key) or {}).get("protocol") or {}
        n_pp, n_tg = n_pp or proto.get("pp"), n_tg or proto.get("tg")
    for r in rows:
        n_pp, n_tg = n_pp or r.get("pp_tokens"), n_tg or r.get("tg_tokens")
    n_pp, n_tg = n_pp or 520, n_tg or 128
    out = []
    out.append(f"| system | pp{n_pp} tok/s median [min–max] | tg{n_tg} tok/s median [min–max] | pp tok/J | tg tok/J |")
    out.append("|---|---:|---:|---:|---:|")
    for r in rows:
        if "missing" in r:
            out.append(f"| {r['system']} | {r['missing']} | | | |")
        else:
            out.append(
                f"| {r['system']} | {fmt_rate(r['pp'])} | {fmt_rate(r['tg'])} | {fmt_tpj(r['pp_e'])} | {fmt_tpj(r['tg_e'])} |"
            )
    out.append("")
    lb = jsons.get("lucebox")
    if lb and lb.get("roofline"):
        rf = lb["roofline"]
        out.append(
            f"lucebox decode reaches {rf['percent']:.1f}% of the decode roofline: "
            f"{rf['bytes_per_token'] / 1e9:.3f} GB of parameters per token over {rf['read_bandwidth_gbps']:,.0f} GB/s "
            f"read bandwidth measured in the same run = {rf['roofline_tok_per_s']:,.0f} tok/s."
        )
        out.append("")
    dev = (lb or {}).get("device") or (jsons.get("hf") or {}).get("device") or {}
    out.append("## Setup")
    out.append("")
    out.append(f"- Date (UTC): {system.get('date_utc', '?')}")
    out.append(f"- GPU (nvidia-smi: name, driver, memory, max SM clock, max memory clock, power limit): {system.get('gpu', '?')}")
    if dev:
        extra = ", ".join(f"{k} {v}" for k, v in dev.items() if k not in ("name",))
        out.append(f"- Device as lucebox/torch saw it: {dev.get('name', '?')} ({extra})")
    out.append(f"- CUDA toolkit: {system.get('nvcc', '?')}; CMake: {system.get('cmake', '?')}")
    out.append(
        f"- Python {system.get('python', '?')}, torch {system.get('torch', '?')} (CUDA {system.get('torch_cuda', '?')}), "
        f"transformers {system.get('transformers', '?')}"
    )
    out.append(f"- lucebox: {system.get('lucebox', '?')} (binary sha256 {system.get('lucebox_sha256', '?')[:16]}…)")
    if lb:
        out.append(f"- lucebox engine: {lb.get('engine', '?')}")
    meta = (jsons.get("llama-bf16") or {}).get("meta") or {}
    out.append(
        f"- llama.cpp: {system.get('llama_src', '?').strip()}; build {meta.get('build_commit', '?')}, backends {meta.get('backends', '?')}, "
        f"gpu_info {meta.get('gpu_info', '?')}"
    )
    out.append(f"- Protocol: reps={system.get('reps', '?')}")
    out.append("")
    out.append("## Commands")
    out.append("")
    out.append("```")
    for key in ("lucebox", "hf", "hf-fla"):
        r = jsons.get(key)
        if r and r.get("command"):
            out.append(" ".join(r["command"]))
    for name in ("llama-bf16", "llama-q4km"):
        if jsons.get(name):
            m = jsons[name]["meta"]
            out.append(
                f"llama-bench -m {m.get('model_filename', '?')} -p {n_pp} -n {n_tg} -ngl {m.get('n_gpu_layers', '?')} "
                f"-fa 1 -r {system.get('reps', '5').split()[0]} -o json"
            )
    out.append("```")
    if stages:
        out.append("")
        out.append("Stages: " + "; ".join(line for line in stages.splitlines() if line))
    notes = []
    for key in ("lucebox", "hf", "hf-fla"):
        for n in (jsons.get(key) or {}).get("notes") or []:
            notes.append(f"{key}: {n}")
    if notes:
        out.append("")
        out.extend(f"- {n}" for n in notes)
    print("\n".join(out))


if __name__ == "__main__":
    main()
