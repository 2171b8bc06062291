"""Trajectory distillation (S = 3, the last 2 states) against GD on one seed at a time, one machine, one evaluator:
    python docs/results/split_fmnist_cpu_recipe/trajectory_seeds.py runs/sweeps/split_fmnist_cpu 69 1714
    python docs/results/split_fmnist_cpu_recipe/trajectory_seeds.py docs/results/split_fmnist_cpu_recipe/trajectory_amx.json
The first form reads the run folders (and with --dump FILE writes their evaluations and task ends to FILE, the
committed trajectory_amx.json); the second reads such a file. Rows: fid_fmnist / KLD after every task, the teacher
image-forwards of the later tasks, the later tasks' training time, the evaluator that scored the row."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import read_folder, read_source  # noqa: E402

RUNS = {  # label -> run folder name pattern ({seed} filled in)
    "GD, lambda 0.75": "fashion_mnist_generative_distillation_lam0.75_teacher_steps2_small_seed{seed}",
    "GD, lambda 1": "fashion_mnist_generative_distillation_lam1.0_teacher_steps2_small_seed{seed}",
    "trajectory, S = 3, states 2, lambda 1": "fashion_mnist_trajectory_distillation_lam1.0_states2_teacher_steps3_small_seed{seed}",
}
N_TASKS = 5


KEEP = ("task", "fid_fmnist", "kld", "ard", "class_fid", "evaluator_sha256", "n_samples", "eval_s")


def collect(root: Path, seeds: list[str]) -> dict:
    """The evaluations and task ends of every run folder of the seeds, by folder name."""
    folders = (root / pattern.format(seed=seed) for seed in seeds for pattern in RUNS.values())
    return {f.name: read_folder(f, KEEP) for f in folders if (f / "metrics.jsonl").is_file()}


def main(argv: list[str]) -> int:
    data = read_source(__doc__, collect, argv, "the sweep folder")
    seeds = sorted({int(name.rsplit("seed", 1)[1]) for name in data})
    print("| seed | strategy | " + " | ".join(f"after task {k}" for k in range(N_TASKS))
          + " | teacher image-forwards, tasks 1-4 | training s per later task | evaluator |")
    print("|---|---|" + "---|" * N_TASKS + "---|---|---|")
    for seed in seeds:
        for label, pattern in RUNS.items():
            run = data.get(pattern.format(seed=seed))
            if run is None:
                continue
            ev = {e["task"]: e for e in run["evals"]}
            later = [t for t in run["task_ends"] if t["task"] > 0]
            cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(N_TASKS)]
            teacher = sum(t["teacher_image_forwards"] for t in later)
            secs = [t["train_s"] for t in later]
            span = f"{min(secs):.0f}-{max(secs):.0f}" if secs else "-"
            sha = ",".join(sorted({e.get("evaluator_sha256", "?")[:8] for e in ev.values()}))
            print(f"| {seed} | {label} | " + " | ".join(cells) + f" | {teacher:,} | {span} | {sha} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
