"""COMMAND.md's table: python docs/results/split_fmnist_conditional_quick/table.py [RUNS] [UNCOND_JSONL]
After the 3rd task: fid_fmnist / KLD, mean per-class FID (classes missing), label accuracy."""
import json
import sys
from pathlib import Path

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/split_fmnist_conditional_quick")
unc = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/results/split_fmnist_conditional_quick/unconditional_per_class.jsonl")
uncond = {Path(r["run"]).name: r for r in map(json.loads, unc.read_text().splitlines())} if unc.exists() else {}
orders = [("seed42_paper", "recipe_seed42"), ("seed1714_paper", "recipe_seed1714"), ("seed1_random", "recipe_random_seed1")]


def last_eval(folder: Path):
    f = folder / "metrics.jsonl"
    if not f.exists():
        return None
    ev = [json.loads(x) for x in f.read_text().splitlines() if '"eval"' in x]
    return ev[-1] if ev and ev[-1]["task"] == 2 else None


def cells(r, cond):
    if r is None:
        return ["not run"] * 3
    acc = f"{r['label_acc']:.3f}" if cond else "—"
    return [f"{r['fid_fmnist']:.1f} / {r['kld']:.3f}", f"{r['class_fid_mean']:.1f} ({r['classes_missing']})", acc]


print("| class order | strategy | model | fid_fmnist / KLD | mean per-class FID (classes missing) | label accuracy |")
print("|---|---|---|---|---|---|")
for o, src in orders:
    for s in ("gd", "gr"):
        for model, cond, r in (("unconditional", False, uncond.get(f"{src}_{s}")),
                               ("conditional", True, last_eval(runs / f"cond_{o}_{s}")),
                               ("conditional, labels from N(0, 0.1^2)", True, last_eval(runs / f"cond_{o}_init0.1_{s}"))):
            if r is None and "0.1" in model:
                continue  # labels.sh ran on two orders only
            print(f"| {o.replace('_', ' ')} | {s.upper()} | {model} | " + " | ".join(cells(r, cond)) + " |")
