#!/usr/bin/env python3
"""Runs a command and records the GPU's energy over it (NVML total-energy
counter, through ctypes) plus its wall time, as JSON in --out. Exits with the
command's status. Used for llama-bench, whose output has no energy: two runs
that differ only in repetitions give energy per token by difference.

Usage: nvml_run.py --out FILE [--gpu 0] -- CMD ARGS...
"""

import argparse
import json
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from hf_bench import Nvml  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--stdout", default=None, help="write the command's stdout here")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        sys.exit("no command")
    try:
        nvml = Nvml(index=a.gpu)
    except Exception as e:  # noqa: BLE001 - still run the command
        nvml, err = None, str(e)
    e0 = nvml.energy_mj() if nvml else None
    t0 = time.perf_counter()
    out = open(a.stdout, "w") if a.stdout else None
    rc = subprocess.call(cmd, stdout=out)
    secs = time.perf_counter() - t0
    e1 = nvml.energy_mj() if nvml else None
    rec = {"command": cmd, "rc": rc, "seconds": secs}
    if nvml:
        rec["joules"] = (e1 - e0) / 1e3
    else:
        rec["error"] = err
    with open(a.out, "w") as f:
        json.dump(rec, f)
    sys.exit(rc)


if __name__ == "__main__":
    main()
