"""Tables of conditional runs' evaluations recomputed by `cldiff evaluate` (at any guidance scale): the metrics,
and where the label accuracy goes class by class: the evaluator's accuracy on the samples asked for each class
(`label_acc_class`), beside its accuracy on the real test images of that class (the ceiling: a sample the
evaluator cannot tell from a real image of c is still scored as the real images of c are).
    cldiff evaluate RUN [--task K] [--guidance G] > FILE.jsonl       # per run and setting
    python docs/results/split_fmnist_cpu_conditional/evaluations.py LABEL=FILE.jsonl ... [--dump F.json]
    python docs/results/split_fmnist_cpu_conditional/evaluations.py F.json      # the tables again, from the dump
With every LABEL written ROW@COLUMN (e.g. "seed 69@guidance 2") the metrics table has a row per ROW and task and a
column per COLUMN, each cell "fid_fmnist / KLD; mean per-class FID; label accuracy".
A class's accuracy is marked * after the task that brought its real images (it was trained on data, not on
replay, in that task), where the file has that task's evaluation and the one before."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import read_labelled  # noqa: E402

KEEP = ("task", "seen_classes", "fid_fmnist", "kld", "class_fid_mean", "label_acc", "label_acc_class",
        "evaluator_sha256")
NAMES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def real_accuracy(sha: str) -> list[float]:
    """The evaluator's accuracy per class on the 10,000 real test images (at its input size, as scored)."""
    from cldiff.data import ContinualData
    from cldiff.evaluate import EVAL_SIZE, get_evaluator
    ev = get_evaluator("fashion_mnist", "cpu", sha=sha)
    data = ContinualData("fashion_mnist", [tuple(range(10))], image_size=EVAL_SIZE)
    x, y = data.test(list(range(10)))
    with torch.no_grad():
        _, pred = ev.run(x)
    y = y.numpy()
    return [float((pred[y == c] == c).mean()) for c in range(10)]


def collect(pairs: list[tuple[str, str]]) -> dict:
    runs = {}
    for label, path in pairs:
        if not label or not Path(path).is_file():
            raise SystemExit(f"evaluations.py: '{label}={path}' is not LABEL=FILE with FILE a `cldiff evaluate` "
                             "output")
        recs = [json.loads(x) for x in Path(path).read_text().splitlines() if x.startswith("{")]
        got = [{k: r[k] for k in KEEP} for r in recs if "label_acc_class" in r]
        runs.setdefault(label, []).extend(got)  # a label may gather several files (tasks evaluated one by one)
        if not got:
            raise SystemExit(f"evaluations.py: {path} has no per-class label accuracy (a conditional run's "
                             "`cldiff evaluate` output is needed)")
    shas = {r["evaluator_sha256"] for rs in runs.values() for r in rs}
    if len(shas) != 1:
        raise SystemExit(f"evaluations.py: the files were scored by different evaluators {sorted(shas)}")
    return {"runs": runs, "real": real_accuracy(shas.pop())}


def metrics(data: dict) -> str:
    rows = ["| run | after task | fid_fmnist / KLD | mean per-class FID | label accuracy |", "|---|---|---|---|---|"]
    for label, recs in data["runs"].items():
        for r in sorted(recs, key=lambda r: r["task"]):
            rows.append(f"| {label} | {r['task']} | {r['fid_fmnist']:.1f} / {r['kld']:.3f} | "
                        f"{r['class_fid_mean']:.1f} | {r['label_acc']:.3f} |")
    return "\n".join(rows)


def pivot(data: dict) -> str:
    """Labels ROW@COLUMN (e.g. "seed 69@guidance 2"): one row per ROW and task, one column per COLUMN."""
    cols = list(dict.fromkeys(label.split("@")[1] for label in data["runs"]))
    cells: dict = {}
    for label, recs in data["runs"].items():
        row, col = label.split("@")
        for r in recs:
            cells.setdefault(f"{row}, after task {r['task']}", {})[col] = (
                f"{r['fid_fmnist']:.1f} / {r['kld']:.3f}; {r['class_fid_mean']:.1f}; {r['label_acc']:.3f}")
    rows = ["| checkpoint | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    rows += [f"| {name} | " + " | ".join(c.get(col, "") for col in cols) + " |" for name, c in cells.items()]
    return "\n".join(rows)


def per_class(data: dict) -> str:
    head = "| run | after task | all | " + " | ".join(NAMES) + " |"
    rows = [head, "|" + "---|" * (len(NAMES) + 3)]
    for label, recs in data["runs"].items():
        seen = {r["task"]: {str(c) for c in r["seen_classes"]} for r in recs}
        for r in sorted(recs, key=lambda r: r["task"]):
            k = r["task"]  # the task's own classes are known when the file has the task before it (or k is 0)
            new = seen[k] - seen[k - 1] if k - 1 in seen else (seen[k] if k == 0 else set())
            cells = []
            for c in range(10):
                a = r["label_acc_class"].get(str(c))
                cells.append("" if a is None else f"{a:.2f}" + ("*" if str(c) in new else ""))
            rows.append(f"| {label.replace('@', ', ')} | {r['task']} | {r['label_acc']:.3f} | " + " | ".join(cells) + " |")
    real = data["real"]
    rows.append(f"| real test images | - | {np.mean(real):.3f} | " + " | ".join(f"{a:.2f}" for a in real) + " |")
    return "\n".join(rows)


def main(argv=None):
    data = read_labelled(__doc__, collect, argv, "LABEL=FILE (`cldiff evaluate` outputs)")
    table = pivot if all("@" in label for label in data["runs"]) else metrics
    print(table(data) + "\n\nLabel accuracy per class asked for:\n\n" + per_class(data))


if __name__ == "__main__":
    main()
