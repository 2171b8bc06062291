"""The classifier (docs/protocol.md §5) of any run folders, one row each, labelled LABEL:
    python docs/results/split_fmnist_cpu_conditional/classifier.py LABEL=RUN [LABEL=RUN ...] [--dump FILE]
    python docs/results/split_fmnist_cpu_conditional/classifier.py FILE       # the table again, from the dump
Each RUN holds a classifier.jsonl (`cldiff classify RUN ...`; one classifier per folder, so a second variant of
the same run goes to a copy of the folder). Rows: the average accuracy over the tasks seen after each task, and
the accuracy on every task after the last."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import classifier_cells, classifier_records  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", help="LABEL=RUN folders, or one JSON file written by --dump")
    ap.add_argument("--dump", type=Path, help="write the records read to this JSON file")
    args = ap.parse_args(argv)
    if len(args.sources) == 1 and args.sources[0].endswith(".json"):
        data = json.loads(Path(args.sources[0]).read_text())
    else:
        data = {}
        for s in args.sources:
            label, _, run = s.rpartition("=")
            recs = classifier_records(Path(run)) if label else []
            if not recs:
                raise SystemExit(f"classifier.py: '{s}' is not LABEL=RUN with RUN a folder that has a classifier "
                                 "(run `cldiff classify RUN` first)")
            data[label] = recs
    if args.dump is not None:
        args.dump.write_text(json.dumps(data, indent=1) + "\n")
    n = max(len(v) for v in data.values())
    print("| classifier | " + " | ".join(f"after task {k}" for k in range(n)) + " | per task after the last |")
    print("|---|" + "---|" * n + "---|")
    for label, recs in data.items():
        cells, per_task, _ = classifier_cells(recs, n)
        print(f"| {label} | " + " | ".join(cells) + f" | {per_task} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
