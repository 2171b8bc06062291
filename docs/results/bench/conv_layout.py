"""What torch's CPU convolution does with bf16 activations in each layout, and what that costs a training step.

With bf16 on a CPU with AMX, a convolution on a contiguous (NCHW) tensor runs oneDNN's kernel in the
channels-last (NHWC) layout and then copies its result back to NCHW (``aten::contiguous`` inside
``aten::mkldnn_convolution``); its backward does the same with the gradients. A convolution on an NHWC tensor
makes no such copy. This prints, at the small UNet's shapes (batch 64, 28x28 images):

1. each convolution's forward and forward+backward in milliseconds, NCHW against NHWC, and the number of
   milliseconds of ``aten::copy_`` torch spends inside its forward+backward;
2. one naive training step of the small UNet under torch.profiler: the share of its wall time spent in
   those copies (``aten::copy_`` below a convolution or its backward) and in all ``aten::copy_``.

    python docs/results/bench/conv_layout.py --threads 1
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from groupnorm_layout import millis  # beside this file

CONVS = (  # (input shape, weight shape) of the small UNet's convolutions, batch 64, 28x28
    ((64, 32, 28, 28), (32, 32, 3, 3)),
    ((64, 96, 28, 28), (32, 96, 3, 3)),
    ((64, 64, 14, 14), (64, 64, 3, 3)),
    ((64, 128, 7, 7), (128, 128, 3, 3)),
    ((64, 192, 14, 14), (64, 192, 1, 1)),
)


def copy_millis(fn) -> float:
    """Milliseconds of aten::copy_ (its own time) in one call of fn, the fastest of three."""
    best = float("inf")
    for _ in range(3):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        best = min(best, sum(e.self_cpu_time_total for e in prof.events() if e.name == "aten::copy_") / 1e3)
    return best


def below(event, names) -> bool:
    p = event.cpu_parent
    while p is not None:
        if p.name in names:
            return True
        p = p.cpu_parent
    return False


def step_share(threads: int) -> str:
    from cldiff.bench import _setup
    from cldiff.train import train_step
    model, schedule, st, autocast, opt, x0 = _setup("small", 64, {"name": "naive"}, "auto", threads, False, {},
                                                    28, "cpu")
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        train_step(model, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    wall = time.perf_counter() - t0
    total = wall * 1e6  # microseconds, the profiler's unit
    copies = [e for e in prof.events() if e.name == "aten::copy_"]
    conv = [e for e in copies if below(e, {"aten::mkldnn_convolution", "aten::convolution_backward"})]
    us = lambda es: sum(e.self_cpu_time_total for e in es)  # noqa: E731
    return (f"naive step of the small UNet, batch 64, 28x28, bf16 autocast: {wall:.3f} s under the profiler; "
            f"aten::copy_ {len(copies)} calls, {us(copies) / 1e3:.1f} ms ({100 * us(copies) / total:.1f} % of the "
            f"step); of them below a convolution {len(conv)} calls, {us(conv) / 1e3:.1f} ms "
            f"({100 * us(conv) / total:.1f} %)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"bf16 convolutions, {a.threads} threads, torch {torch.__version__}; ms, median of 15; copies: "
          f"ms of aten::copy_ inside one forward+backward")
    print(f"{'input':16s} {'weight':14s} {'NCHW fwd':>9s} {'NHWC fwd':>9s} {'NCHW f+b':>9s} {'NHWC f+b':>9s} "
          f"{'copies NCHW':>12s} {'copies NHWC':>12s}")
    for xs, ws in CONVS:
        row, cps = [], []
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(xs).bfloat16().contiguous(memory_format=layout).requires_grad_(True)
            w = (torch.randn(ws) * 0.05).bfloat16().requires_grad_(True)
            g = torch.randn(x.shape[0], ws[0], *xs[2:]).bfloat16().contiguous(memory_format=layout)

            def fwd():
                return torch.nn.functional.conv2d(x, w, padding=ws[-1] // 2)

            def fb():
                return torch.autograd.grad(fwd(), (x, w), g)

            row += [millis(fwd, 15), millis(fb, 15)]
            cps.append(copy_millis(fb))
        print(f"{'x'.join(map(str, xs)):16s} {'x'.join(map(str, ws)):14s} {row[0]:9.2f} {row[2]:9.2f} "
              f"{row[1]:9.2f} {row[3]:9.2f} {cps[0]:12.2f} {cps[1]:12.2f}")
    print(step_share(a.threads))


if __name__ == "__main__":
    main()
