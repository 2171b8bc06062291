"""The table of COMMAND.md from the run folders: python docs/results/split_fmnist_quick_task0/table.py [RUNS]"""
import csv
import json
import sys
from pathlib import Path

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/split_fmnist_quick_task0")
orders = ["seed42_paper", "seed69_paper", "seed1714_paper", "seed1_random", "seed2_random"]
variants = {"a": "32x32, 200 steps (the preset before)", "b": "28x28, 270 steps (the same time)",
            "c": "28x28, 270 steps, lr 2e-3", "d": "32x32, 400 steps (twice the time)"}
print("| variant | " + " | ".join(o.replace("_", " ") for o in orders) + " |")
print("|---|" + "---|" * len(orders))
for v, what in variants.items():
    cells = []
    for o in orders:
        f = runs / f"{v}_{o}" / "eval.csv"
        rows = list(csv.DictReader(f.open())) if f.exists() else []
        if not rows:
            cells.append("not run")
            continue
        ends = [json.loads(x) for x in (f.parent / "metrics.jsonl").read_text().splitlines() if '"task_end"' in x]
        cells.append(f"{float(rows[0]['fid_fmnist']):.1f} / {float(rows[0]['kld']):.3f} ({ends[0]['train_s'] / 60:.1f} min)")
    print(f"| {v}: {what} | " + " | ".join(cells) + " |")
