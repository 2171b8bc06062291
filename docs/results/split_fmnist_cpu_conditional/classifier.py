"""The classifier (docs/protocol.md §5) of any run folders, one row each, labelled LABEL:
    python docs/results/split_fmnist_cpu_conditional/classifier.py LABEL=RUN [LABEL=RUN ...] [--dump FILE]
    python docs/results/split_fmnist_cpu_conditional/classifier.py FILE       # the table again, from the dump
Each RUN holds a classifier.jsonl (`cldiff classify RUN ...`; one classifier per folder, so a second variant of
the same run goes to a copy of the folder). Rows: the average accuracy over the tasks seen after each task, and
the accuracy on every task after the last."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import classifier_cells, classifier_records, read_labelled  # noqa: E402


def collect(pairs: list[tuple[str, str]]) -> dict:
    data = {}
    for label, run in pairs:
        recs = classifier_records(Path(run)) if label else []
        if not recs:
            raise SystemExit(f"classifier.py: '{label}={run}' is not LABEL=RUN with RUN a folder that has a "
                             "classifier (run `cldiff classify RUN` first)")
        data[label] = recs
    return data


def main(argv=None) -> int:
    data = read_labelled(__doc__, collect, argv, "LABEL=RUN folders")
    n = max(len(v) for v in data.values())
    print("| classifier | " + " | ".join(f"after task {k}" for k in range(n)) + " | per task after the last |")
    print("|---|" + "---|" * n + "---|")
    for label, recs in data.items():
        cells, per_task, _ = classifier_cells(recs, n)
        print(f"| {label} | " + " | ".join(cells) + f" | {per_task} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
