"""A `cpu`-scale sweep of GD, GR and joint (one run of each per seed): every task's scores, each seed against #19's
targets, and per-class FID after the last task:
    python docs/results/split_fmnist_cpu_random_orders/table.py runs/sweeps/split_fmnist_cpu_random 1 2 --dump docs/results/split_fmnist_cpu_random_orders/runs.json
    python docs/results/split_fmnist_cpu_random_orders/table.py docs/results/split_fmnist_cpu_random_orders/runs.json
The first form reads the run folders of a sweep (here configs/sweeps/split_fmnist_cpu_random_orders.yaml; --dump
writes their evaluations, task ends and class orders to the committed runs.json); the second reads that file. Joint's
folder is found whatever its steps per task (the sweeps set them in its name). A run that has not reached its last
task shows what it has."""
import json
import sys
from fnmatch import fnmatch
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # docs/results: the shared snapshot helper
from snapshot import read_folder, read_source  # noqa: E402

from cldiff.data import DATASETS  # noqa: E402

RUNS = {"GD": "fashion_mnist_generative_distillation_lam0.75_teacher_steps2_small_seed{seed}",
        "GR": "fashion_mnist_generative_replay_lam1.0_teacher_steps2_small_seed{seed}",
        "joint": "fashion_mnist_joint_small_seed{seed}_train.steps_per_task*"}
KEEP = ("task", "fid_fmnist", "kld", "class_fid", "class_fid_mean", "classes_missing", "hist_pred", "evaluator_sha256",
        "n_samples", "eval_s", "seen_classes")
NAMES = DATASETS["fashion_mnist"].class_names
N_TASKS = 5


def collect(root: Path, seeds: list[str]) -> dict:
    data = {}
    for seed in seeds:
        for kind, pattern in RUNS.items():
            found = [f for f in sorted(root.glob(pattern.format(seed=seed))) if (f / "metrics.jsonl").is_file()]
            if len(found) > 1:
                raise SystemExit(f"{root}: {len(found)} {kind} runs of seed {seed} ({', '.join(f.name for f in found)}); "
                                 "keep one, or give a folder that holds one")
            if not found:
                continue
            f = found[0]
            run = read_folder(f, KEEP)
            with open(f / "metrics.jsonl") as fh:
                start = json.loads(fh.readline())  # a run's log opens with its start record, which has the order
            run["tasks"] = start["tasks"]
            data[f.name] = run
    return data


def seed_of(name: str) -> int:
    return int(name.rsplit("seed", 1)[1].split("_")[0])


def find(data: dict, kind: str, seed: int) -> dict | None:
    """The run of this kind and seed, matched by RUNS' pattern (joint's has a wildcard)."""
    hits = [run for name, run in data.items() if fnmatch(name, RUNS[kind].format(seed=seed))]
    return hits[0] if hits else None


def last_evals(run: dict) -> dict:
    """Each task's last evaluation (a resumed run may have evaluated a task twice: the later one counts)."""
    return {e["task"]: e for e in run["evals"]}


def main(argv: list[str]) -> int:
    data = read_source(__doc__, collect, argv, "the sweep folder")
    seeds = sorted({seed_of(name) for name in data})
    task0 = {seed_of(name): t["train_s"] / 60 for name, run in data.items() for t in run["task_ends"] if t["task"] == 0}
    print("fid_fmnist / KLD after every task; training minutes of tasks 1-4 (task 0 is shared by a seed's runs: "
          + ", ".join(f"seed {s} {m:.0f} min" for s, m in sorted(task0.items())) + ")\n")
    print("| seed | order | run | " + " | ".join(f"after task {k}" for k in range(N_TASKS))
          + " | mean per-class FID after the last (classes too rare to score) | training min, tasks 1-4 | evaluator |")
    print("|---|---|---|" + "---|" * N_TASKS + "---|---|---|")
    finals = {}
    for seed in seeds:
        for kind in RUNS:
            run = find(data, kind, seed)
            if run is None:
                continue
            ev = last_evals(run)
            order = " ".join("(" + ",".join(map(str, t)) + ")" for t in run["tasks"])
            cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(N_TASKS)]
            last = ev.get(N_TASKS - 1)
            if last is not None:
                finals[(seed, kind)] = last
            pc = "-"  # the run's own mean over the classes with samples, and how many had too few to score
            if last is not None and last.get("class_fid_mean") is not None:
                pc = f"{last['class_fid_mean']:.1f}" + (f" ({last['classes_missing']} missing)"
                                                         if last["classes_missing"] else "")
            later = [t["train_s"] for t in run["task_ends"] if t["task"] > 0]
            minutes = f"{sum(later) / 60:.0f}" if later else "-"
            sha = ",".join(sorted({e.get("evaluator_sha256", "?")[:8] for e in ev.values()})) or "-"
            print(f"| {seed} | {order} | {kind} | " + " | ".join(cells) + f" | {pc} | {minutes} | {sha} |")
    print("\nEach order against #19's targets (after the 5th task)\n")
    print("| seed | GD's FID / GR's (<= 0.33) | GD's FID / joint's (<= 1.5) | GD's KLD (<= 0.4) | GR's KLD (>= 1.5) "
          "| joint's FID (<= 250) |")
    print("|---|---|---|---|---|---|")
    for seed in seeds:
        gd, gr, joint = (finals.get((seed, k)) for k in RUNS)
        cells = [f"{gd['fid_fmnist'] / gr['fid_fmnist']:.2f}" if gd and gr else "-",
                 f"{gd['fid_fmnist'] / joint['fid_fmnist']:.2f}" if gd and joint else "-",
                 f"{gd['kld']:.3f}" if gd else "-", f"{gr['kld']:.3f}" if gr else "-",
                 f"{joint['fid_fmnist']:.1f}" if joint else "-"]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print("\nPer-class fid_fmnist after the 5th task (samples grouped by the evaluator's predicted class; classes in "
          "the order they arrived)\n")
    for seed in seeds:
        runs = [(k, finals[(seed, k)]) for k in RUNS if (seed, k) in finals]
        if not runs:
            continue
        tasks = find(data, runs[0][0], seed)["tasks"]
        order = [(c, i) for i, t in enumerate(tasks) for c in t]
        print(f"seed {seed}\n")
        print("| run | " + " | ".join(f"{NAMES[c]} (task {i})" for c, i in order) + " |")
        print("|---|" + "---|" * len(order))
        for kind, e in runs:
            fids = e.get("class_fid") or {}
            print(f"| {kind} | " + " | ".join(f"{fids[str(c)]:.0f}" if fids.get(str(c)) is not None else "-"
                                             for c, _ in order) + " |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
