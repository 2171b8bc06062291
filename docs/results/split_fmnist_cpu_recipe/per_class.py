"""Per-class FID after every task, from the evaluations the runs wrote (no new samples):
    python docs/results/split_fmnist_cpu_recipe/per_class.py RUN [RUN ...]
One table per run: a row per task, a column per class in the order the classes arrived, each cell the fid_fmnist
of the samples the evaluator puts in that class against the test images of the class ("-": fewer than 10 such
samples), and the task at which the class arrived."""
import json
import sys
from pathlib import Path

NAMES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")

if len(sys.argv) < 2:
    sys.exit(__doc__)
for run in map(Path, sys.argv[1:]):
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"event": "eval"' in x]
    evals = sorted({e["task"]: e for e in evals}.values(), key=lambda e: e["task"])  # the last record of a task
    arrived: dict[int, int] = {}
    for e in evals:
        for c in e["seen_classes"]:
            arrived.setdefault(int(c), e["task"])
    order = sorted(arrived, key=lambda c: (arrived[c], c))
    print(f"\n{run.name}\n")
    print("| after task | " + " | ".join(f"{NAMES[c]} (task {arrived[c]})" for c in order) + " |")
    print("|---|" + "---|" * len(order))
    for e in evals:
        fids = e.get("class_fid") or {}
        cells = [f"{fids[str(c)]:.0f}" if fids.get(str(c)) is not None else ("-" if str(c) in fids else "")
                 for c in order]
        print(f"| {e['task']} | " + " | ".join(cells) + " |")
