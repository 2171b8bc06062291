"""The classifier (docs/protocol.md §5) of any run folders, one row each, labelled LABEL:
    python docs/results/split_fmnist_cpu_conditional/classifier.py LABEL=RUN [LABEL=RUN ...] [--dump FILE]
    python docs/results/split_fmnist_cpu_conditional/classifier.py FILE       # the table again, from the dump
Each RUN holds a classifier.jsonl (`cldiff classify RUN ...`; one classifier per folder, so a second variant of
the same run goes to a copy of the folder). Rows: the average accuracy over the tasks seen after each task, and
the accuracy on every task after the last. A second table sets what the classifier keeps of its old tasks beside
the generator that replayed them: the run's own evaluation after task k (fid_fmnist; mean per-class FID, at the
run's own guidance scale), then the classifier's mean accuracy on tasks 0..k after task k + 1."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import classifier_cells, classifier_records, read_folder, read_labelled  # noqa: E402

GEN_KEYS = ("task", "fid_fmnist", "class_fid_mean")


def collect(pairs: list[tuple[str, str]]) -> dict:
    data = {}
    for label, run in pairs:
        recs = classifier_records(Path(run)) if label else []
        if not recs:
            raise SystemExit(f"classifier.py: '{label}={run}' is not LABEL=RUN with RUN a folder that has a "
                             "classifier (run `cldiff classify RUN` first)")
        folder = Path(run)
        evals = read_folder(folder, GEN_KEYS)["evals"] if (folder / "metrics.jsonl").is_file() else []
        data[label] = {"classifier": recs, "generator": evals}
    return data


def kept_cells(entry: dict, n: int) -> list[str]:
    """Per task k < n - 1: 'generator FID; per-class FID after task k -> old tasks' mean accuracy after k + 1'."""
    by_task = {r["task"]: r for r in entry["classifier"]}
    gen = {r["task"]: r for r in entry["generator"]}  # the last evaluation of each task
    cells = []
    for k in range(n - 1):
        g, c = gen.get(k), by_task.get(k + 1)
        left = f"{g['fid_fmnist']:.1f}; {g['class_fid_mean']:.1f}" if g and "class_fid_mean" in g else "-"
        right = f"{sum(c['acc'][:k + 1]) / (k + 1):.3f}" if c else "-"
        cells.append(f"{left} -> {right}")
    return cells


def main(argv=None) -> int:
    data = read_labelled(__doc__, collect, argv, "LABEL=RUN folders")
    n = max(len(v["classifier"]) for v in data.values())
    print("| classifier | " + " | ".join(f"after task {k}" for k in range(n)) + " | per task after the last |")
    print("|---|" + "---|" * n + "---|")
    for label, entry in data.items():
        cells, per_task, _ = classifier_cells(entry["classifier"], n)
        print(f"| {label} | " + " | ".join(cells) + f" | {per_task} |")
    print("\nThe generator after task k (fid_fmnist; mean per-class FID) -> the classifier's mean accuracy on tasks "
          "0..k after task k + 1:\n")
    print("| classifier | " + " | ".join(f"task {k} -> {k + 1}" for k in range(n - 1)) + " |")
    print("|---|" + "---|" * (n - 1))
    for label, entry in data.items():
        print(f"| {label} | " + " | ".join(kept_cells(entry, n)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
