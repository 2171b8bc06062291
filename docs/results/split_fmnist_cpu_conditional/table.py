"""Class-conditional against unconditional GD and GR at the `cpu` scale, one seed at a time, one machine, one evaluator:
    python docs/results/split_fmnist_cpu_conditional/table.py runs/sweeps 69 --dump docs/results/split_fmnist_cpu_conditional/seed69_amx.json
    python docs/results/split_fmnist_cpu_conditional/table.py docs/results/split_fmnist_cpu_conditional/seed69_amx.json
The first form reads the run folders under the sweeps folder (the `cpu` table's split_fmnist_cpu/, lambda 1, and
run.sh's split_fmnist_cpu_conditional_labels/; with --dump FILE it writes their evaluations and task ends to FILE); the second reads such a file. Two tables: fid_fmnist / KLD, mean per-class FID (classes missing) and label
accuracy after every task; then the per-class FIDs after the last task."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import read_folder, read_source  # noqa: E402

RUNS = {  # label -> run folder (relative to the sweeps folder), {seed} filled in
    "GD, unconditional": "split_fmnist_cpu/fashion_mnist_generative_distillation_lam1.0_teacher_steps2_small_seed{seed}",
    "GR, unconditional": "split_fmnist_cpu/fashion_mnist_generative_replay_lam1.0_teacher_steps2_small_seed{seed}",
    "GD, conditional, labels from zeros": "split_fmnist_cpu_conditional_labels/gd_zeros_seed{seed}",
    "GD, conditional, labels at 30x rate": "split_fmnist_cpu_conditional_labels/gd_lr30_seed{seed}",
    "GD, conditional, labels from N(0, 0.1^2)": "split_fmnist_cpu_conditional_labels/gd_init0.1_seed{seed}",
    "GR, conditional, labels from N(0, 0.1^2)": "split_fmnist_cpu_conditional_labels/gr_init0.1_seed{seed}",
}
CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
N_TASKS = 5
KEEP = ("task", "fid_fmnist", "kld", "class_fid", "class_fid_mean", "classes_missing", "label_acc",
        "evaluator_sha256", "n_samples")


def collect(root: Path, seeds: list[str]) -> dict:
    """The evaluations and task ends of every run folder of the seeds, keyed by 'label, seed'."""
    out = {}
    for seed in seeds:
        for label, pattern in RUNS.items():
            f = root / pattern.format(seed=seed)
            if (f / "metrics.jsonl").is_file():
                out[f"{label}, seed {seed}"] = read_folder(f, KEEP)
    return out


def main(argv: list[str]) -> int:
    data = read_source(__doc__, collect, argv, "the sweeps folder (runs/sweeps)")
    print("| run | " + " | ".join(f"after task {k}" for k in range(N_TASKS)) + " | evaluator |")
    print("|---|" + "---|" * N_TASKS + "---|")
    for key, run in data.items():
        ev = {e["task"]: e for e in run["evals"]}
        cells = []
        for k in range(N_TASKS):
            e = ev.get(k)
            if e is None:
                cells.append("-")
                continue
            acc = f", acc {e['label_acc']:.2f}" if e.get("label_acc") is not None else ""
            cells.append(f"{e['fid_fmnist']:.1f} / {e['kld']:.3f}; {e['class_fid_mean']:.1f} ({e['classes_missing']}){acc}")
        sha = ",".join(sorted({e.get("evaluator_sha256", "?")[:8] for e in ev.values()}))
        print(f"| {key} | " + " | ".join(cells) + f" | {sha} |")
    print()
    print("| run | after task | " + " | ".join(CLASSES) + " |")
    print("|---|---|" + "---|" * len(CLASSES))
    for key, run in data.items():
        if not run["evals"]:
            continue
        e = run["evals"][-1]
        per = {int(c): v for c, v in (e.get("class_fid") or {}).items()}
        print(f"| {key} | {e['task']} | " + " | ".join(f"{per[c]:.0f}" if c in per else "" for c in range(10)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
