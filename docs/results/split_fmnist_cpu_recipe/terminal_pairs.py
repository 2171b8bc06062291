"""What a distillation pair at the pure-noise start t = T-1 carries: the teacher's prediction there against its
input, beside the teacher's own denoising error on real test images at other timesteps.
    python docs/results/split_fmnist_cpu_recipe/terminal_pairs.py CHECKPOINT.pt
Under the zero-terminal-SNR schedule x_{T-1} is the noise itself (abar = 0), so the ideal eps prediction there is
the input: a pair (x_{T-1}, T-1, eps_T(x_{T-1})) asks the student for the identity map, which training on real
images teaches it too. Trajectory distillation with S = 2 and both states puts half of its pairs there."""
import sys

import torch

from cldiff.data import ContinualData
from cldiff.model import predict_eps
from cldiff.runfolder import load_model

torch.set_num_threads(1)
model, sched, cfg, meta = load_model(sys.argv[1])
data = ContinualData.from_config(cfg)
x0, _ = data.test(meta["tasks"][meta["task"]])
x0 = x0[:512]
g = torch.Generator().manual_seed(0)
eps = torch.randn(x0.shape, generator=g)
T = sched.T
print(f"{sys.argv[1]}: task {meta['task']} classes {meta['tasks'][meta['task']]}, {len(x0)} test images")
print("| t | abar_t | teacher's eps error on real images, relative MSE | teacher's prediction against its input |")
print("|---|---|---|---|")
with torch.no_grad():
    for t in (T - 1, T - 50, T // 2, T // 10, 10):
        tt = torch.full((len(x0),), t, dtype=torch.long)
        x = sched.add_noise(x0, tt, eps)
        e = predict_eps(model, x, tt).float()
        err = float(((e - eps) ** 2).mean() / (eps ** 2).mean())
        ident = float(((e - x) ** 2).mean() / (x ** 2).mean())
        print(f"| {t} | {float(sched.abar[t]):.2e} | {err:.4f} | {ident:.4f} |")
