"""The table of COMMAND.md from the run folders of run.sh (either preset):
    python docs/results/split_fmnist_quick_task0/table.py [RUNS]
    python docs/results/split_fmnist_quick_task0/table.py runs/split_fmnist_cpu_task0
fid_fmnist / KLD after task 0, and the training minutes. Each variant is described by its runs' own settings."""
import csv
import json
import sys
from pathlib import Path

import yaml

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/split_fmnist_quick_task0")
orders = ["seed42_paper", "seed69_paper", "seed1714_paper", "seed1_random", "seed2_random"]


def described(v: str) -> str:
    cfg = next((yaml.safe_load(f.read_text()) for f in sorted(runs.glob(f"{v}_*/config.yaml"))), None)
    if cfg is None:
        return v
    t, size = cfg["train"], cfg["data"]["image_size"]
    return f"{v}: {size}x{size}, batch {t['batch_size']}, {t['first_task_steps']} steps, lr {t['lr']:g}"


variants = sorted({p.name.split("_")[0] for p in runs.glob("*_seed*") if p.is_dir()})
print("| variant | " + " | ".join(o.replace("_", " ") for o in orders) + " |")
print("|---|" + "---|" * len(orders))
for v in variants:
    cells = []
    for o in orders:
        f = runs / f"{v}_{o}" / "eval.csv"
        rows = list(csv.DictReader(f.open())) if f.exists() else []
        if not rows:
            cells.append("not run")
            continue
        ends = [json.loads(x) for x in (f.parent / "metrics.jsonl").read_text().splitlines() if '"task_end"' in x]
        cells.append(f"{float(rows[0]['fid_fmnist']):.1f} / {float(rows[0]['kld']):.3f} ({ends[0]['train_s'] / 60:.1f} min)")
    print(f"| {described(v)} | " + " | ".join(cells) + " |")
