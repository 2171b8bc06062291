"""bf16 and fp32 matrix products of three sizes, 1.5 s each: the CPU's matmul rate now (to see whether a
machine's speed has drifted between two measurements).   python docs/results/bench/matmul_peak.py [THREADS]"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
for n in (1024, 2048, 4096):
    for dt in (torch.bfloat16, torch.float32):
        a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
        for _ in range(2):
            a @ b
        t0, r = time.perf_counter(), 0
        while time.perf_counter() - t0 < 1.5:
            a @ b
            r += 1
        print(n, dt, f"{2 * n**3 * r / (time.perf_counter() - t0) / 1e12:.3f} TFLOP/s", flush=True)
