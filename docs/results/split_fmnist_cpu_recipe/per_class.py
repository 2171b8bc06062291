"""Per-class FID after every task, from the evaluations the runs wrote (no new samples):
    python docs/results/split_fmnist_cpu_recipe/per_class.py RUN [RUN ...]
One table per run: a row per task, a column per class in the order the classes arrived, each cell the fid_fmnist
of the samples the evaluator puts in that class against the test images of the class ("-": fewer than 10 such
samples), and the task at which the class arrived."""
import sys
from pathlib import Path

from cldiff.data import DATASETS
from cldiff.report import load_run

NAMES = DATASETS["fashion_mnist"].class_names

if len(sys.argv) < 2:
    sys.exit(__doc__)
for run in map(Path, sys.argv[1:]):
    evals = [e for _, e in sorted(load_run(run)["evals"].items())]  # the last record of each task
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
