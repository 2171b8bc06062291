"""Where one training step's time goes at the level of oneDNN's primitives: the step is run once under oneDNN's
verbose mode, and every primitive it executed (convolutions, matmuls, layout reorders) is summed by kind, with
its arithmetic (from the problem sizes oneDNN prints) and its rate against the bf16 matmul peak measured right
after the step at the same thread count. The rest of the step (GroupNorm, SiLU, additions, casts, softmax, the
optimizer) is what torch runs outside oneDNN.

    python docs/results/bench/onednn_breakdown.py --strategy naive --threads 1
    python docs/results/bench/onednn_breakdown.py --strategy naive --threads 1 --opts channels_last

--opts: any of the --ablation levers' option names (channels_last, fused, ...), comma-separated. The
implementation names say which instruction set each primitive used (avx10_1_512_amx / avx512_core_amx: AMX).
"""
import argparse
import collections
import ctypes
import math
import os
import re
import sys
import tempfile
import time

import torch

from cldiff.bench import _matmul_peak, _setup
from cldiff.train import train_step


def primitive_flops(kind: str, problem: str) -> float:
    """The multiply-adds (x2) of a convolution or matmul from oneDNN's problem descriptor; 0 for other kinds."""
    if kind == "convolution":
        d = {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", problem)}
        return 2.0 * d["mb"] * d["oc"] * d["oh"] * d["ow"] * (d["ic"] // d.get("g", 1)) * d["kh"] * d["kw"]
    if kind == "matmul":  # "AxBxM x K : ... x K x N" as "a0xa1:b0xb1" (batch dims lead)
        src, wei = (list(map(int, s.split("x"))) for s in problem.split(":")[:2])
        return 2.0 * math.prod(src) * wei[-1]
    return 0.0


def summarise(lines):
    """{(kind, propagation): [calls, seconds, flops, {implementations}]} from oneDNN verbose exec lines."""
    agg = collections.defaultdict(lambda: [0, 0.0, 0.0, set()])
    for line in lines:
        if not line.startswith("onednn_verbose,v1,primitive,exec"):
            continue
        f = line.strip().split(",")
        kind, impl, prop, problem, ms = f[5], f[6], f[7], f[-2], float(f[-1])
        row = agg[(kind, prop)]
        row[0] += 1
        row[1] += ms / 1e3
        row[2] += primitive_flops(kind, problem)
        row[3].add(impl)
    return agg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--strategy", default="naive")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--opts", default="", help="comma-separated --ablation levers")
    a = ap.parse_args()
    opts = {k: True for k in a.opts.split(",") if k}
    spec = {"name": a.strategy} if a.strategy == "naive" else {"name": a.strategy, "teacher_steps": 2}
    model, schedule, st, ac, opt, x0 = _setup(a.preset, a.batch, spec, "auto", a.threads, bool(opts.get("fused")),
                                              opts, a.image_size)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        train_step(model, opt, st, schedule, x0, 1, gen, ac, 1.0)
    t0 = time.perf_counter()
    train_step(model, opt, st, schedule, x0, 1, gen, ac, 1.0)
    plain = time.perf_counter() - t0
    # oneDNN writes its verbose lines to the process's stdout (file descriptor 1): catch them in a file
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                t0 = time.perf_counter()
                train_step(model, opt, st, schedule, x0, 1, gen, ac, 1.0)
                traced = time.perf_counter() - t0
        finally:
            ctypes.CDLL(None).fflush(None)  # oneDNN prints through C's buffered stdout
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        agg = summarise(log)
    peak = _matmul_peak("bfloat16", 2048, 1.0, a.threads)["flops_per_s"]
    total_s = sum(r[1] for r in agg.values())
    total_f = sum(r[2] for r in agg.values())
    print(f"{a.strategy}, preset {a.preset}, batch {a.batch}, {a.image_size}px, {a.threads} threads, opts "
          f"{a.opts or 'none'}, torch {torch.__version__}")
    print(f"step {plain:.3f} s (traced {traced:.3f} s); bf16 matmul peak right after {peak / 1e12:.2f} TFLOP/s; "
          f"the step's convolutions and matmuls {total_f / 1e9:.1f} GFLOP = {total_f / plain / peak:.1%} of the peak")
    print(f"oneDNN primitives {total_s:.3f} s = {total_s / traced:.0%} of the traced step; the rest, outside oneDNN, "
          f"{traced - total_s:.3f} s = {(traced - total_s) / traced:.0%}")
    print(f"\n{'primitive':14s} {'propagation':18s} {'calls':>5s} {'ms':>8s} {'of step':>7s} {'GFLOP':>6s} "
          f"{'TFLOP/s':>7s} {'of peak':>7s}  implementations")
    for (kind, prop), (n, s, fl, impls) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        rate = fl / s if s and fl else 0.0
        print(f"{kind:14s} {prop:18s} {n:5d} {s * 1e3:8.1f} {s / traced:7.1%} {fl / 1e9:6.1f} {rate / 1e12:7.3f} "
              f"{rate / peak:7.1%}  {' '.join(sorted(impls))}")


if __name__ == "__main__":
    main()
