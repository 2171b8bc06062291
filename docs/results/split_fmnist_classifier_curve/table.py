"""The classifier after task 1 against the task-0 generator it replays from (run.sh makes the runs):
    python docs/results/split_fmnist_classifier_curve/table.py [RUNS_FOLDER]
Prints the markdown table and writes curve.png beside this file."""
import json
import re
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/split_fmnist_classifier_curve")


def records(path: Path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


rows = []
for folder in sorted(root.glob("*_seed*")):
    m = re.fullmatch(r"(steps(\d+)|joint|real_replay)_seed(\d+)", folder.name)
    if not m:
        continue
    ev = [r for r in records(folder / "classifier.jsonl") if r.get("event") == "classifier_eval" and r["task"] == 1]
    if not ev:
        continue
    gen = next((r for r in records(folder / "metrics.jsonl") if r.get("event") == "eval" and r["task"] == 0), None)
    steps = int(m.group(2)) if m.group(2) else None
    rows.append({"what": f"generator, task 0 trained {steps} steps" if steps else f"{m.group(1)} (no generator)",
                 "steps": steps, "seed": int(m.group(3)), "fid": gen["fid_fmnist"] if steps else None,
                 "kld": gen["kld"] if steps else None, "acc": ev[0]["acc"], "avg": ev[0]["avg_acc"]})
rows.sort(key=lambda r: (r["seed"], r["steps"] is None, -(r["steps"] or 0)))
print("| replay from | seed | generator fid_fmnist / KLD after task 0 | accuracy on task 0 | on task 1 | average |")
print("|---|---|---|---|---|---|")
for r in rows:
    gen = f"{r['fid']:.1f} / {r['kld']:.3f}" if r["fid"] is not None else "-"
    print(f"| {r['what']} | {r['seed']} | {gen} | {r['acc'][0]:.3f} | {r['acc'][1]:.3f} | {r['avg']:.3f} |")

if rows:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed in sorted({r["seed"] for r in rows}):
        g = sorted((r for r in rows if r["seed"] == seed and r["fid"] is not None), key=lambda r: r["fid"])
        line, = ax.plot([r["fid"] for r in g], [r["acc"][0] for r in g], "o-", label=f"generator (seed {seed})")
        for r in g:
            ax.annotate(f"{r['steps']}", (r["fid"], r["acc"][0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for r, ls in ((next((r for r in rows if r["seed"] == seed and r["what"].startswith(n)), None), s)
                      for n, s in (("joint", "--"), ("real_replay", ":"))):
            if r:
                ax.axhline(r["acc"][0], ls=ls, color=line.get_color(), lw=1,
                           label=f"{r['what'].split(' ')[0]} (seed {seed})")
    ax.set_xlabel("task-0 generator's fid_fmnist (steps annotated)")
    ax.set_ylabel("classifier's accuracy on task 0 after task 1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(__file__).parent / "curve.png", dpi=120)
