"""Speed options timed in alternation, in one process: every variant's model is built first, then each round
times a few iterations of every variant, in an order that turns round by round. On a machine whose speed drifts
(a shared virtual machine), a row-by-row `cldiff bench --ablation` mixes the drift into the ratios; here every
variant sees the same moments.

    python docs/results/bench/interleaved.py --preset paper --batch 128 --rounds 2 --iters 2 \
        --variants defaults,channels_last,teacher_fp32
    python docs/results/bench/interleaved.py --preset small --image-size 28 --strategy naive --batches 32,64,128
    python docs/results/bench/interleaved.py --preset small --image-size 28 --batch 64 --replays 2:1,3:0.25

A variant is an option, or several joined by + (`--variants`), or a batch size (`--batches`, the default
options), or a replay strategy's teacher DDIM steps and replay ratio (`--replays S:r,...`, the default options):
the summary gives each one's images per second (the iteration's real images; a replay strategy trains
replay_ratio times as many replayed ones besides).
The variant `onednn_bf16` is fp32 weights and activations without autocast, with oneDNN doing the convolutions' and
matmuls' arithmetic in bf16 (torch.backends.mkldnn.{conv,matmul}.fp32_precision = "bf16", PyTorch >= 2.9); the
setting is global, so it is switched on only while that variant is timed.
"""
import argparse
import time

import torch

from cldiff.bench import _setup
from cldiff.train import train_step


def onednn_math(variant: str) -> None:
    """oneDNN's internal precision for fp32 convolutions and matmuls: bf16 for the onednn_bf16 variant only."""
    p = "bf16" if variant == "onednn_bf16" else "none"
    torch.backends.mkldnn.conv.fp32_precision = p
    torch.backends.mkldnn.matmul.fp32_precision = p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--strategy", default="generative_distillation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2, help="timed iterations per variant per round")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes to compare instead of options")
    ap.add_argument("--replays", default=None,
                    help="comma-separated S:r pairs (teacher DDIM steps : strategy.replay_ratio) to compare instead "
                         "of options")
    ap.add_argument("--variants", default="defaults,channels_last",
                    help="comma-separated: defaults, onednn_bf16, or --ablation option names (channels_last, fused, "
                         "teacher_fp32, bf16_master, teacher_inference_mode, softmax_bf16, compile, teacher_compile), "
                         "several joined by + for one variant (fused+compile)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.batches and a.replays:
        raise SystemExit("give --batches or --replays, not both")
    if a.replays and a.strategy == "naive":
        raise SystemExit("--replays compares a replay strategy's settings: give --strategy generative_distillation "
                         "(or another replay strategy)")
    runs, batch, specs = {}, {}, {}
    if a.batches:
        variants = [f"batch {b}" for b in a.batches.split(",")]
    elif a.replays:
        for pair in a.replays.split(","):
            steps, _, ratio = pair.partition(":")
            if not (steps.isdigit() and ratio.replace(".", "", 1).isdigit()):
                raise SystemExit(f"--replays takes S:r pairs such as 2:1,3:0.25 (teacher DDIM steps : replay ratio), "
                                 f"got {pair!r}")
            specs[f"S {steps}, r {ratio}"] = {"teacher_steps": int(steps), "replay_ratio": float(ratio)}
        variants = list(specs)
    else:
        variants = a.variants.split(",")
    for v in variants:
        opts = {} if v in ("defaults", "onednn_bf16") or a.batches or a.replays else {k: True for k in v.split("+")}
        batch[v] = int(v.split()[1]) if a.batches else a.batch
        spec = {"name": a.strategy, **({} if a.strategy == "naive" else {"teacher_steps": 2}), **specs.get(v, {})}
        model, schedule, st, ac, opt, x0 = _setup(a.preset, batch[v], spec, "fp32" if v == "onednn_bf16" else "auto",
                                                  a.threads, bool(opts.get("fused")), opts, a.image_size)
        if opts.get("compile"):  # the student's forward and backward compiled (the optimizer stays eager)
            model = torch.compile(model)
        gen = torch.Generator().manual_seed(0)
        onednn_math(v)
        t0 = time.perf_counter()
        train_step(model, opt, st, schedule, x0, 1, gen, ac, 1.0)  # warm-up (and compiling, for a compiled variant)
        print(f"{v}: warm-up iteration {time.perf_counter() - t0:.1f} s", flush=True)
        runs[v] = (model, schedule, st, ac, opt, x0, gen)
    names = list(runs)
    times = {v: [] for v in names}
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for v in order:
            model, schedule, st, ac, opt, x0, gen = runs[v]
            onednn_math(v)
            t0 = time.perf_counter()
            for _ in range(a.iters):
                train_step(model, opt, st, schedule, x0, 1, gen, ac, 1.0)
            times[v].append((time.perf_counter() - t0) / a.iters)
            print(f"round {r} {v}: {times[v][-1]:.3f} s/iter", flush=True)
    base = times[names[0]]
    print(f"\n{a.strategy}, preset {a.preset}, batch {a.batches or a.batch}, {a.image_size}px, {a.threads} threads, "
          f"torch {torch.__version__}")
    for v in names:
        # images per second against the first variant's, round by round (with equal batches: its time / this one's)
        ratios = " ".join(f"{batch[v] * b / (batch[names[0]] * t):.2f}" for b, t in zip(base, times[v]))
        mean = sum(times[v]) / len(times[v])
        print(f"{v:24s} mean {mean:8.3f} s/iter, {batch[v] / mean:7.1f} images/s; throughput vs {names[0]} per round: {ratios}")


if __name__ == "__main__":
    main()
