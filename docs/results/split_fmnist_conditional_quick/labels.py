"""How much the label matters after task 0, per label-embedding setting (labels.sh, run.sh, and the N(0, 1) start
measured before, in RUNS_N01):
    python docs/results/split_fmnist_conditional_quick/labels.py [RUNS] [RUNS_N01]
Per run: fid_fmnist / KLD and the evaluator's accuracy on the labels asked for (eval after task 0); the label
embedding's mean norm over the seen classes against the timestep embedding's (t = 500), and how far the
predicted clean image moves between the task's two labels a and b: ||x0^(x, t, a) - x0^(x, t, b)|| / ||x0^(x, t, a)||,
x0^ = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t), on 64 noised test images of the task at t = 800 (mostly noise:
where the label should decide most) and t = 500 (0: the labels are ignored)."""
import json
import sys
from pathlib import Path

import torch

from cldiff.data import ContinualData
from cldiff.runfolder import load_model

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/split_fmnist_conditional_quick")
n01 = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/split_fmnist_conditional_quick_n01")
variants = [("zeros, 1x (the preset)", runs, ""), ("N(0, 0.1^2), 1x", runs, "_init0.1"),
            ("zeros, 30x", runs, "_lr30"), ("N(0, 1), 1x (diffusers' default)", n01, "")]


@torch.no_grad()
def label_effect(ckpt: Path):
    model, schedule, cfg, _ = load_model(ckpt)
    data = ContinualData.from_config(cfg)
    a, b = data.tasks[0]
    x0 = data.test(data.tasks[0])[0][torch.randperm(2000, generator=torch.Generator().manual_seed(1))[:64]]
    moved = []
    for step in (800, 500):
        g = torch.Generator().manual_seed(0)
        t = torch.full((len(x0),), step)
        x = schedule.add_noise(x0, t, torch.randn(x0.shape, generator=g))
        ab = schedule.abar[t].view(-1, 1, 1, 1)
        x0_hat = {c: (x - (1 - ab).sqrt() * model(x, t, torch.full_like(t, c))) / ab.sqrt() for c in (a, b)}
        moved.append(((x0_hat[a] - x0_hat[b]).norm() / x0_hat[a].norm()).item())
    u = model.unet
    temb = u.time_embedding(u.time_proj(t[:1]).to(u.dtype)).norm().item()
    cemb = u.class_embedding(torch.tensor([a, b])).norm(dim=1).mean().item()
    return moved, cemb, temb


print("| label embedding | seed | fid_fmnist / KLD | label accuracy | label / time embedding norm | "
      "predicted x0 moved between the two labels, t = 800 / 500 |")
print("|---|---|---|---|---|---|")
for label, root, suffix in variants:
    for seed in ("seed42_paper", "seed1714_paper"):
        run = root / f"cond_{seed}{suffix}_gd"
        ck = run / "checkpoints" / "task_00.pt"
        if not ck.exists():
            continue
        ev = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x)
        moved, cemb, temb = label_effect(ck)
        print(f"| {label} | {seed.replace('_', ' ')} | {ev['fid_fmnist']:.1f} / {ev['kld']:.3f} | "
              f"{ev['label_acc']:.3f} | {cemb:.2f} / {temb:.2f} | {100 * moved[0]:.2f} % / {100 * moved[1]:.2f} % |")
