"""The lambda table and the selection rule (README: the best mean of the FID rank and the KLD rank after the 5th
task; ties: the lower FID), from the sweep's run folders:
    python docs/results/split_fmnist_cpu_lambda/table.py [SWEEP_FOLDER]
(the 32x32 sweep's folder by default; runs/sweeps/split_fmnist_cpu for the 28x28 one, whose GD runs share the
`cpu` table's folder). Each row: fid_fmnist / KLD after every task, the time of the run's own training and
evaluation (task 0 counted where it was trained; one thread beside other runs: not the speed of a run alone), and
the evaluator that scored it (FIDs of two evaluators do not compare exactly: ../evaluator_portability/)."""
import json
import sys
from pathlib import Path

RULE_SEED = 42  # the seed the rule chooses on; the others confirm its choice
root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweeps/split_fmnist_cpu_lambda")


def read(folder: Path):
    recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    cfg = next((r["config"] for r in recs if r.get("event") == "start" and "config" in r), None)
    ev = {r["task"]: r for r in recs if r.get("event") == "eval"}
    shared = any(r.get("event") == "shared" for r in recs)  # task 0 copied from another run: its time is not ours
    wall = sum(r.get("train_s", 0) for r in recs if r.get("event") == "task_end" and not (shared and r["task"] == 0)) \
        + sum(r.get("eval_s", 0) for r in recs if r.get("event") == "eval" and not (shared and r["task"] == 0))
    sha = ",".join(sorted({r.get("evaluator_sha256", "?")[:8] for r in ev.values()}))
    return cfg, ev, wall, sha


rows = []
for folder in sorted(p for p in root.glob("*generative_distillation_lam*_seed*") if p.is_dir()):
    lam = float(folder.name.split("_lam")[1].split("_")[0])
    seed = int(folder.name.rsplit("seed", 1)[1])
    _, ev, wall, sha = read(folder)
    rows.append((seed, lam, ev, wall, sha))
n_tasks = 5
print("| seed | lambda | " + " | ".join(f"after task {k}" for k in range(n_tasks)) + " | training wall (min) | evaluator |")
print("|---|---|" + "---|" * n_tasks + "---|---|")
for seed, lam, ev, wall, sha in sorted(rows):
    cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(n_tasks)]
    print(f"| {seed} | {lam:g} | " + " | ".join(cells) + f" | {wall / 60:.0f} | {sha} |")
for seed in sorted({r[0] for r in rows}):
    done = [(lam, ev[n_tasks - 1]) for s, lam, ev, _, _ in rows if s == seed and n_tasks - 1 in ev]
    if len(done) < 2:
        continue
    fid_rank = {lam: i + 1 for i, (lam, _) in enumerate(sorted(done, key=lambda d: d[1]["fid_fmnist"]))}
    kld_rank = {lam: i + 1 for i, (lam, _) in enumerate(sorted(done, key=lambda d: d[1]["kld"]))}
    best = min(done, key=lambda d: ((fid_rank[d[0]] + kld_rank[d[0]]) / 2, d[1]["fid_fmnist"]))[0]
    ranks = ", ".join(f"{lam:g}: {(fid_rank[lam] + kld_rank[lam]) / 2:g}" for lam, _ in sorted(done))
    if seed == RULE_SEED:
        print(f"\nseed {seed}: mean rank (FID, KLD) {ranks}; chosen lambda {best:g}"
              + ("" if len(done) == 4 else f" (only {len(done)} of 4 runs finished)"))
    else:  # a confirmation seed: only the rule's choice against the presets' value
        print(f"\nseed {seed} (confirmation): mean rank (FID, KLD) {ranks}; first: lambda {best:g}")
