"""The `cpu` table's runs, one row per run folder of the sweep (finished or not):
    python docs/results/split_fmnist_cpu_recipe/table.py [SWEEP_FOLDER]
fid_fmnist / KLD after every task the run has evaluated, the teacher's image-forwards over the run, the minutes of
the run's own training and evaluation (task 0 counted where it was trained; one thread beside another run: not the
speed of a run alone), and the classifier's average accuracy after every task it has finished (`cldiff classify`)."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweeps/split_fmnist_cpu")
N_TASKS = 5


def records(path: Path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


print("| run | seed | " + " | ".join(f"after task {k}" for k in range(N_TASKS))
      + " | teacher image-forwards | minutes | classifier average accuracy |")
print("|---|---|" + "---|" * N_TASKS + "---|---|---|")
for folder in sorted(p for p in root.glob("fashion_mnist_*_seed*") if p.is_dir()):
    recs = records(folder / "metrics.jsonl")
    ev = {r["task"]: r for r in recs if r.get("event") == "eval"}
    ends = [r for r in recs if r.get("event") == "task_end"]
    shared = any(r.get("event") == "shared" for r in recs)
    minutes = (sum(r["train_s"] for r in ends if not (shared and r["task"] == 0))
               + sum(r.get("eval_s", 0) for k, r in ev.items() if not (shared and k == 0))) / 60
    teacher = sum(r.get("teacher_image_forwards", 0) for r in ends)
    cls = [r for r in records(folder / "classifier.jsonl") if r.get("event") == "classifier_eval"]
    name = folder.name.removeprefix("fashion_mnist_").rsplit("_small_seed", 1)
    cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(N_TASKS)]
    acc = " ".join(f"{r['avg_acc']:.3f}" for r in cls) or "-"
    print(f"| {name[0]} | {name[1].split('_')[0]} | " + " | ".join(cells) + f" | {teacher:,} | {minutes:.0f} | {acc} |")
