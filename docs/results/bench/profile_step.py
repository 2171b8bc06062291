"""Where a training iteration's time goes: torch.profiler over a few GD iterations of `cldiff bench`'s setup,
the operators sorted by their own (self) time on the device that does the work.

    python docs/results/bench/profile_step.py --preset paper --batch 128 --device cpu --threads 2
    python docs/results/bench/profile_step.py --preset paper --batch 128 --device cuda --opts compile,fused

--opts: any of the --ablation levers' option names (channels_last, fused, bf16_master, compile, teacher_compile,
cudnn_benchmark, teacher_inference_mode), comma-separated. Prints the table and writes it to --out if given.
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from cldiff.bench import _setup, _sync
from cldiff.train import train_step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--strategy", default="generative_distillation")
    ap.add_argument("--opts", default="", help="comma-separated --ablation levers")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--iters", type=int, default=2, help="profiled iterations (after 2 untimed ones)")
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--out")
    a = ap.parse_args()
    opts = {k: True for k in a.opts.split(",") if k}
    spec = {"name": a.strategy}
    if a.strategy in ("generative_distillation", "generative_replay"):
        spec["teacher_steps"] = 2
    model, schedule, st, autocast, opt, x0 = _setup(a.preset, a.batch, spec, a.precision, a.threads,
                                                    bool(opts.get("fused")), opts, a.image_size, a.device)
    net = torch.compile(model) if opts.get("compile") else model
    gen = torch.Generator(torch.device(a.device)).manual_seed(0)
    for _ in range(2):
        train_step(net, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    _sync(a.device)
    gpu = a.device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(a.iters):
            train_step(net, opt, st, schedule, x0, 1, gen, autocast, 1.0)
        _sync(a.device)
    dt = (time.perf_counter() - t0) / a.iters
    key = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=a.rows)
    head = (f"{a.strategy}, preset {a.preset}, batch {a.batch}, {a.image_size}px, device {a.device}, opts "
            f"{a.opts or 'none'}, threads {torch.get_num_threads()}, torch {torch.__version__}: "
            f"{dt:.3f} s per iteration under the profiler ({a.iters} iterations)")
    print(head)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(head + "\n" + table + "\n")


if __name__ == "__main__":
    main()
