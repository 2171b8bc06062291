"""How far a trajectory's states are from data: the share of pixels of the teacher's x_0 estimate at +-1 (the
clip's bounds) at each step of S = 3 DDIM trajectories with random times (trajectory distillation's setting), and
the same share for the finished samples and for the real test images:
    python docs/results/split_fmnist_cpu_recipe/first_state.py RUN/checkpoints/task_00.pt
At t = T-1 the estimate divides by sqrt(abar) = 0, so the clip makes it a +-1 image."""
import sys

import torch

from cldiff.data import DATASETS, load_dataset
from cldiff.model import ddim_sample
from cldiff.runfolder import load_model

N, S = 256, 3
model, sched, cfg, _ = load_model(sys.argv[1], torch.device("cpu"))
g = torch.Generator().manual_seed(0)
noise = torch.randn(N, model.channels, model.image_size, model.image_size, generator=g)
record: list = []
final = ddim_sample(model, sched, noise, S, ts=sched.random_ddim_timesteps(S, N, g, "cpu"), record=record)


def at_bounds(x: torch.Tensor) -> float:
    return (x.abs() > 0.999).float().mean().item()


for j, (x, t, eps) in enumerate(record):
    est = sched.predict_x0(x, t, eps, clip=True)
    print(f"step {j} (t = {t.float().mean():.0f} on average): x_0 estimate at +-1: {at_bounds(est):.3f}")
print(f"finished samples at +-1: {at_bounds(final):.3f}")
test_x = load_dataset(DATASETS[cfg.data.dataset])[2]  # uint8; 0 and 255 are the model range's -1 and +1
print(f"real test images at +-1 (pixel 0 or 255): {((test_x == 0) | (test_x == 255)).mean():.3f}")
