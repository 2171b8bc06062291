"""torch.compile of the small UNet's training step against the eager step, in one process: the first (compiling)
step's time, then the median and best of 5 steps, for eager, eager with fused Adam, compiled, and the two eager
variants again (to see the machine's drift).

    python docs/results/bench/compile_step.py naive        # or generative_distillation
"""
import sys
import time

import torch

from cldiff.bench import _setup
from cldiff.train import train_step

torch.set_num_threads(2)
strategy = sys.argv[1] if len(sys.argv) > 1 else "naive"
spec = {"name": strategy} if strategy == "naive" else {"name": strategy, "teacher_steps": 2}


def run(opts, n=5):
    model, schedule, st, ac, opt, x0 = _setup("small", 64, spec, "auto", 2, bool(opts.get("fused")), opts, 28)
    net = torch.compile(model) if opts.get("compile") else model
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    train_step(net, opt, st, schedule, x0, 1, gen, ac, 1.0)
    first = time.perf_counter() - t0
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        train_step(net, opt, st, schedule, x0, 1, gen, ac, 1.0)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    print(strategy, opts, f"first {first:.1f} s, median {ts[len(ts) // 2]:.3f} s, min {ts[0]:.3f}", flush=True)


for o in [{}, {"fused": True}, {"compile": True}, {}, {"fused": True}]:
    run(o)
