"""How much the label matters after task 0, per label-embedding setting (labels.sh, run.sh, and the N(0, 1) start
measured before, in RUNS_N01):
    python docs/results/split_fmnist_conditional_quick/labels.py [RUNS] [RUNS_N01]
Per run: fid_fmnist / KLD and the evaluator's accuracy on the labels asked for (eval after task 0); the label
embedding's mean norm over the seen classes against the timestep embedding's (t = 500), and how far the
predicted clean image moves between the task's two labels a and b: ||x0^(x, t, a) - x0^(x, t, b)|| / ||x0^(x, t, a)||,
x0^ = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t), on 64 noised test images of the task at t = 800 (mostly noise:
where the label should decide most) and t = 500 (0: the labels are ignored).
Other run folders (any scale), one row each, labelled LABEL:
    python docs/results/split_fmnist_conditional_quick/labels.py --folders LABEL=RUN [LABEL=RUN ...]"""
import argparse
import json
import sys
from pathlib import Path

import torch

from cldiff.data import ContinualData
from cldiff.runfolder import load_model


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
        x0_hat = {c: schedule.predict_x0(x, t, model(x, t, torch.full_like(t, c))) for c in (a, b)}
        moved.append(((x0_hat[a] - x0_hat[b]).norm() / x0_hat[a].norm()).item())
    u = model.unet
    temb = u.time_embedding(u.time_proj(t[:1]).to(u.dtype)).norm().item()
    cemb = u.class_embedding(torch.tensor([a, b])).norm(dim=1).mean().item()
    return moved, cemb, temb, cfg.seed


def row(label: str, name: str | None, run: Path) -> str | None:
    """One table row for the run folder's task-0 checkpoint and its first evaluation (name None: 'seed N' from
    the checkpoint); None if it has none."""
    ck = run / "checkpoints" / "task_00.pt"
    if not ck.exists():
        return None
    ev = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x)
    moved, cemb, temb, seed = label_effect(ck)
    name = name or f"seed {seed}"
    return (f"| {label} | {name} | {ev['fid_fmnist']:.1f} / {ev['kld']:.3f} | {ev['label_acc']:.3f} | "
            f"{cemb:.2f} / {temb:.2f} | {100 * moved[0]:.2f} % / {100 * moved[1]:.2f} % |")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="how much a conditional model uses its labels after task 0")
    ap.add_argument("runs", nargs="?", type=Path, default=Path("runs/split_fmnist_conditional_quick"))
    ap.add_argument("runs_n01", nargs="?", type=Path, default=Path("runs/split_fmnist_conditional_quick_n01"))
    ap.add_argument("--folders", nargs="+", metavar="LABEL=RUN", help="score these run folders instead")
    a = ap.parse_args(argv)
    print("| label embedding | seed | fid_fmnist / KLD | label accuracy | label / time embedding norm | "
          "predicted x0 moved between the two labels, t = 800 / 500 |")
    print("|---|---|---|---|---|---|")
    if a.folders:
        for item in a.folders:
            label, sep, folder = item.partition("=")
            if not sep:
                ap.error(f"--folders takes LABEL=RUN pairs, got {item!r}")
            run = Path(folder)
            line = row(label, None, run)
            print(line if line else f"| {label} | no task-0 checkpoint in {run} | | | | |")
        return 0
    variants = [("zeros, 1x (the preset)", a.runs, ""), ("N(0, 0.1^2), 1x", a.runs, "_init0.1"),
                ("zeros, 30x", a.runs, "_lr30"), ("N(0, 1), 1x (diffusers' default)", a.runs_n01, "")]
    for label, root, suffix in variants:
        for seed in ("seed42_paper", "seed1714_paper"):
            line = row(label, seed.replace("_", " "), root / f"cond_{seed}{suffix}_gd")
            if line:
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
