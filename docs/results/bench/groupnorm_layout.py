"""torch's CPU GroupNorm on a contiguous (NCHW) and on a channels_last (NHWC) tensor, at the small UNet's shapes
(batch 64, 28x28 images, 32 groups), with autocast's dtypes (bf16 activations, fp32 weight and bias) and in fp32:
milliseconds for the forward and for the forward and backward, median of 20 after 3 untimed.
``--inductor`` adds GroupNorm compiled by torch.compile (Inductor's own C++ kernel, shapes fixed) on the NHWC
tensor, and its ratio to torch's NCHW kernel.

    python docs/results/bench/groupnorm_layout.py --threads 1
    python docs/results/bench/groupnorm_layout.py --threads 1 --groups 16 --inductor
"""
import argparse
import statistics
import time

import torch


def millis(fn, n: int = 20) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--inductor", action="store_true", help="add GroupNorm compiled by Inductor on NHWC")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"GroupNorm({a.groups} groups), {a.threads} threads, torch {torch.__version__}; ms, median of 20")
    print(f"{'shape':18s} {'activations':11s} {'NCHW fwd':>9s} {'NHWC fwd':>9s} {'ratio':>6s} "
          f"{'NCHW f+b':>9s} {'NHWC f+b':>9s} {'ratio':>6s}"
          + (f" {'compiled NHWC fwd':>18s} {'ratio':>6s} {'f+b':>7s} {'ratio':>6s}" if a.inductor else ""))
    if a.inductor:
        torch._dynamo.config.recompile_limit = 64  # one compilation per shape, dtype and gradient mode
    compiled = torch.compile(torch.nn.functional.group_norm, dynamic=False) if a.inductor else None
    for shape in ((64, 32, 28, 28), (64, 64, 28, 28), (64, 64, 14, 14), (64, 128, 14, 14), (64, 128, 7, 7)):
        for dtype in (torch.bfloat16, torch.float32):
            row = []
            kinds = [(torch.contiguous_format, torch.nn.functional.group_norm),
                     (torch.channels_last, torch.nn.functional.group_norm)]
            for layout, gn in kinds + ([(torch.channels_last, compiled)] if compiled else []):
                x = torch.randn(shape).to(dtype).contiguous(memory_format=layout).requires_grad_(True)
                w = torch.ones(shape[1], requires_grad=True)
                b = torch.zeros(shape[1], requires_grad=True)
                g = torch.randn(shape).to(dtype).contiguous(memory_format=layout)

                def fwd():
                    return gn(x, a.groups, w, b, 1e-5)

                row += [millis(fwd), millis(lambda: torch.autograd.grad(fwd(), (x, w, b), g))]
            print(f"{'x'.join(map(str, shape)):18s} {str(dtype)[6:]:11s} {row[0]:9.2f} {row[2]:9.2f} "
                  f"{row[2] / row[0]:5.1f}x {row[1]:9.2f} {row[3]:9.2f} {row[3] / row[1]:5.1f}x"
                  + (f" {row[4]:18.2f} {row[4] / row[0]:5.1f}x {row[5]:7.2f} {row[5] / row[1]:5.1f}x" if compiled
                     else ""))


if __name__ == "__main__":
    main()
