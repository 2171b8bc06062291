"""Class-conditional against unconditional GD, and conditional GR, after the 5th task, seed by seed, with #20's targets:
    python docs/results/split_fmnist_cpu_conditional/seeds.py runs/sweeps 69 1714 42 --dump docs/results/split_fmnist_cpu_conditional/seeds_amx.json
    python docs/results/split_fmnist_cpu_conditional/seeds.py docs/results/split_fmnist_cpu_conditional/seeds_amx.json
The first form reads the run folders under the sweeps folder: the unconditional GD runs of split_fmnist_cpu/
(lambda 1, the conditional runs' lambda, and 0.75, the `cpu` preset's), and run.sh's conditional GD and GR in
split_fmnist_cpu_conditional_labels/, their own evaluation at guidance 1 and guidance.sh's at 1.5
(evaluate/RUN_task4_g1.5.jsonl). A seed is read as far as its runs have got; a missing cell prints "-". Per-class FID
groups a conditional model's samples by the class asked for, an unconditional model's by the evaluator's
predicted class; the targets table also divides the conditional samples grouped by predicted class
(class_fid_pred_mean, in evaluations made since it exists), like for like. The
targets table adds the mean over the seeds (of the per-seed ratios and differences; "-" unless every seed has one).
The classifier column is the final average accuracy of `cldiff classify` in each folder (soft targets; "hard, g2"
is the copy folder RUN_hard_g2 of COMMAND.md). Every figure must come from one evaluator: the script stops
if the folders were scored by several."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import classifier_cells, classifier_records, read_folder, read_source  # noqa: E402

LAST = 4  # the 5th task
UNCOND = "split_fmnist_cpu/fashion_mnist_generative_distillation_lam{lam}_teacher_steps2_small_seed{seed}"
COND = "split_fmnist_cpu_conditional_labels/{run}_init0.1_seed{seed}"
ROWS = {  # label -> (folder pattern, fields for pattern, guidance scale or None for the run's own evaluation)
    "GD, unconditional, lambda 1": (UNCOND, {"lam": "1.0"}, None),
    "GD, unconditional, lambda 0.75": (UNCOND, {"lam": "0.75"}, None),
    "GD, conditional, guidance 1": (COND, {"run": "gd"}, None),
    "GD, conditional, guidance 1.5": (COND, {"run": "gd"}, "1.5"),
    "GR, conditional, guidance 1": (COND, {"run": "gr"}, None),
    "GR, conditional, guidance 1.5": (COND, {"run": "gr"}, "1.5"),
}
KEEP = ("task", "fid_fmnist", "kld", "class_fid_mean", "class_fid_pred_mean", "label_acc", "evaluator_sha256")


def final_eval(folder: Path, guidance: str | None) -> dict | None:
    """The evaluation after the last task: the run's own (metrics.jsonl) or guidance.sh's file at that scale."""
    if guidance is None:
        evals = read_folder(folder, KEEP)["evals"] if (folder / "metrics.jsonl").is_file() else []
        recs = [r for r in evals if r.get("task") == LAST]
    else:
        f = folder.parent / "evaluate" / f"{folder.name}_task{LAST}_g{guidance}.jsonl"
        lines = f.read_text().splitlines() if f.is_file() else []
        recs = [r for r in map(json.loads, (x for x in lines if x.startswith("{"))) if r.get("task") == LAST]
    return {k: recs[-1].get(k) for k in KEEP} if recs else None


def final_classifier(folder: Path) -> float | None:
    recs = classifier_records(folder)
    return classifier_cells(recs, LAST + 1)[2] if recs else None


def collect(root: Path, seeds: list[str]) -> dict:
    if not seeds:
        raise SystemExit("seeds.py: name the seeds to read, e.g. `seeds.py runs/sweeps 69 1714 42`")
    data = {}
    for seed in seeds:
        rows = {}
        for label, (pattern, fields, guidance) in ROWS.items():
            folder = root / pattern.format(seed=seed, **fields)
            rows[label] = {"eval": final_eval(folder, guidance),
                           "classifier": final_classifier(folder) if guidance is None else None}
        hard = root / (COND.format(run="gd", seed=seed) + "_hard_g2")
        rows["GD, conditional, guidance 1"]["classifier_hard_g2"] = final_classifier(hard)
        data[seed] = rows
    shas = {r["eval"]["evaluator_sha256"] for rows in data.values() for r in rows.values() if r["eval"]}
    if len(shas) > 1:
        raise SystemExit(f"seeds.py: the folders were scored by different evaluators {sorted(shas)}; compare "
                         "runs of one machine only")
    return data


def cell(e: dict | None) -> str:
    if e is None:
        return "-"
    acc = f"; {e['label_acc']:.3f}" if e.get("label_acc") is not None else ""
    return f"{e['fid_fmnist']:.1f} / {e['kld']:.3f}; {e['class_fid_mean']:.1f}{acc}"


def ratio(a: dict | None, b: dict | None, key: str, key_b: str | None = None) -> float | None:
    """a[key] / b[key_b or key]; None where either evaluation or figure is missing (older evaluations lack
    class_fid_pred_mean)."""
    x, y = (a or {}).get(key), (b or {}).get(key_b or key)
    return x / y if x and y else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def targets(rows: dict) -> dict:
    """#20's targets on one seed, at guidance 1.5 (the presets' scale) and 1."""
    gd15, gd1 = rows["GD, conditional, guidance 1.5"]["eval"], rows["GD, conditional, guidance 1"]["eval"]
    gr15 = rows["GR, conditional, guidance 1.5"]["eval"]
    un1 = rows["GD, unconditional, lambda 1"]
    un075 = rows["GD, unconditional, lambda 0.75"]
    cond_clf = rows["GD, conditional, guidance 1"]["classifier"]
    return {
        "kld_gd_1.5": gd15["kld"] if gd15 else None,
        "class_fid_gd_1.5_over_uncond_lam1": ratio(gd15, un1["eval"], "class_fid_mean"),
        "class_fid_gd_1.5_over_uncond_lam0.75": ratio(gd15, un075["eval"], "class_fid_mean"),
        "class_fid_gd_1_over_uncond_lam1": ratio(gd1, un1["eval"], "class_fid_mean"),
        # like for like: the conditional samples grouped by the evaluator's predicted class, as unconditional GD's
        "class_fid_pred_gd_1.5_over_uncond_lam1": ratio(gd15, un1["eval"], "class_fid_pred_mean", "class_fid_mean"),
        "class_fid_gr_over_gd_1.5": ratio(gr15, gd15, "class_fid_mean"),
        "class_fid_pred_gr_over_gd_1.5": ratio(gr15, gd15, "class_fid_pred_mean"),
        "classifier_cond_minus_uncond_lam1": (cond_clf - un1["classifier"]
                                              if cond_clf is not None and un1["classifier"] is not None else None),
    }


def main(argv: list[str]) -> int:
    data = read_source(__doc__, collect, argv, "the sweeps folder (runs/sweeps)")
    seeds = list(data)
    print("After the 5th task: fid_fmnist / KLD; mean per-class FID; label accuracy (conditional runs)\n")
    print("| run | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for label in ROWS:
        print(f"| {label} | " + " | ".join(cell(data[s][label]["eval"]) for s in seeds) + " |")
    print("\nThe classifier's final average accuracy (docs/protocol.md §5; joint 0.910, three seeds):\n")
    print("| replay generator | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for label in ("GD, unconditional, lambda 1", "GD, unconditional, lambda 0.75", "GD, conditional, guidance 1"):
        name = label.replace(", guidance 1", ", soft targets")
        print(f"| {name} | " + " | ".join(fmt(data[s][label]["classifier"], ".3f") for s in seeds) + " |")
    print("| GD, conditional, hard labels at replay guidance 2 | "
          + " | ".join(fmt(data[s]["GD, conditional, guidance 1"].get("classifier_hard_g2"), ".3f") for s in seeds)
          + " |")
    print("\n#20's targets, seed by seed:\n")
    print("| target | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---|" + "---|" * (len(seeds) + 1))
    checks = [
        ("conditional GD's KLD at guidance 1.5 (<= 0.1)", "kld_gd_1.5", ".3f"),
        ("its mean per-class FID / unconditional GD's, lambda 1 (<= 0.5)", "class_fid_gd_1.5_over_uncond_lam1", ".3f"),
        ("... / unconditional GD's, lambda 0.75", "class_fid_gd_1.5_over_uncond_lam0.75", ".3f"),
        ("the same at guidance 1, against lambda 1", "class_fid_gd_1_over_uncond_lam1", ".3f"),
        ("at 1.5, conditional samples grouped by predicted class, against lambda 1",
         "class_fid_pred_gd_1.5_over_uncond_lam1", ".3f"),
        ("conditional GR's mean per-class FID / GD's, both at 1.5 (>= 3)", "class_fid_gr_over_gd_1.5", ".2f"),
        ("the same, both grouped by predicted class", "class_fid_pred_gr_over_gd_1.5", ".2f"),
        ("classifier: conditional GD soft minus unconditional lambda 1 (> 0)", "classifier_cond_minus_uncond_lam1",
         "+.3f"),
    ]
    t = {s: targets(data[s]) for s in seeds}
    for name, key, spec in checks:
        print(f"| {name} | " + " | ".join(fmt(t[s][key], spec) for s in seeds) + f" | {fmt(mean(t, key), spec)} |")
    return 0


def mean(t: dict, key: str) -> float | None:
    """The mean over the seeds of one target's figure; None unless every seed has it."""
    xs = [v[key] for v in t.values()]
    return None if any(x is None for x in xs) else sum(xs) / len(xs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
