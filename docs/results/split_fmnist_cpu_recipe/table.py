"""The `cpu` table's runs, one row per run folder of the sweep (finished or not):
    python docs/results/split_fmnist_cpu_recipe/table.py [SWEEP_FOLDER]
fid_fmnist / KLD after every task the run has evaluated, the teacher's image-forwards over the run, the minutes of
the run's own training and evaluation (task 0 counted where it was trained; one thread beside another run: not the
speed of a run alone), and the classifier's average accuracy after every task it has finished (`cldiff classify`)."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweeps/split_fmnist_cpu")
N_TASKS = 5
final = {}  # run name (settings) -> seed -> (fid, kld, classifier accuracy) after the last task


def records(path: Path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


print("| run | seed | " + " | ".join(f"after task {k}" for k in range(N_TASKS))
      + " | teacher image-forwards | minutes | classifier average accuracy |")
print("|---|---|" + "---|" * N_TASKS + "---|---|---|")
LAMBDA_SWEEP = "generative_distillation_lam"  # GD with lambda != 1: the lambda sweep's (../split_fmnist_cpu_lambda/)
for folder in sorted(p for p in root.glob("fashion_mnist_*_seed*") if p.is_dir()
                     and not (LAMBDA_SWEEP in p.name and f"{LAMBDA_SWEEP}1.0_" not in p.name)):
    recs = records(folder / "metrics.jsonl")
    ev = {r["task"]: r for r in recs if r.get("event") == "eval"}
    ends = [r for r in recs if r.get("event") == "task_end"]
    shared = any(r.get("event") == "shared" for r in recs)
    minutes = (sum(r["train_s"] for r in ends if not (shared and r["task"] == 0))
               + sum(r.get("eval_s", 0) for k, r in ev.items() if not (shared and k == 0))) / 60
    teacher = sum(r.get("teacher_image_forwards", 0) for r in ends)
    cls = [r for r in records(folder / "classifier.jsonl") if r.get("event") == "classifier_eval"]
    name = folder.name.removeprefix("fashion_mnist_").rsplit("_small_seed", 1)
    cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(N_TASKS)]
    acc = " ".join(f"{r['avg_acc']:.3f}" for r in cls) or "-"
    print(f"| {name[0]} | {name[1].split('_')[0]} | " + " | ".join(cells) + f" | {teacher:,} | {minutes:.0f} | {acc} |")
    if N_TASKS - 1 in ev:
        final.setdefault(name[0], {})[int(name[1].split("_")[0])] = (
            ev[N_TASKS - 1]["fid_fmnist"], ev[N_TASKS - 1]["kld"], cls[-1]["avg_acc"] if len(cls) == N_TASKS else None)

# After the last task: means over the seeds that finished, and the quality issue's targets on them.

def mean_sd(xs):
    """(mean, "mean ± sd" text) of the values present; sd only with two or more."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, "-"
    m = sum(xs) / len(xs)
    fmt = "{:.3f}" if m < 10 else "{:.1f}"
    text = fmt.format(m)
    if len(xs) > 1:
        text += " ± " + fmt.format((sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5)
    return m, text


def paired(a, b, col_a, col_b=None):
    """The seeds where both strategies have the value, and the two means over exactly those seeds."""
    col_b = col_a if col_b is None else col_b
    by_a, by_b = final.get(a, {}), final.get(b, {})
    seeds = sorted(x for x in by_a if x in by_b and by_a[x][col_a] is not None and by_b[x][col_b] is not None)
    if not seeds:
        return seeds, None, None
    return seeds, (sum(by_a[x][col_a] for x in seeds) / len(seeds)), (sum(by_b[x][col_b] for x in seeds) / len(seeds))


if final:
    print("\nAfter the last task, mean ± sd over the seeds finished (the classifier: over the seeds whose classifier "
          "finished):\n")
    print("| strategy | seeds | fid_fmnist | KLD | classifier average accuracy | classifier seeds |")
    print("|---|---|---|---|---|---|")
    for strat, by_seed in sorted(final.items()):
        cols = list(zip(*by_seed.values()))
        cls_seeds = [x for x in sorted(by_seed) if by_seed[x][2] is not None]
        print(f"| {strat} | {', '.join(map(str, sorted(by_seed)))} | "
              + " | ".join(mean_sd(c)[1] for c in cols) + f" | {', '.join(map(str, cls_seeds)) or '-'} |")
    # the table's own settings of each strategy (configs/sweeps/split_fmnist_cpu.yaml); every comparison between
    # two strategies is over the seeds that both have finished
    GD, GR, JT = ("generative_distillation_lam1.0_teacher_steps2", "generative_replay_lam1.0_teacher_steps2", "joint")
    print("\n| target | seeds | value | |\n|---|---|---|---|")

    def row(text, seeds, value, met):
        if seeds:
            print(f"| {text} | {', '.join(map(str, seeds))} | {value} | {'met' if met else 'missed'} |")

    seeds, gd, gr = paired(GD, GR, 0)
    row("GD's FID <= 1/3 of GR's", seeds, f"{gd / gr:.2f}x" if seeds else "", seeds and gd <= gr / 3)
    for strat, text, ok in ((GD, "GD's KLD <= 0.4", lambda v: v <= 0.4), (GR, "GR's KLD >= 1.5", lambda v: v >= 1.5)):
        seeds, v, _ = paired(strat, strat, 1)
        row(text, seeds, f"{v:.3f}" if seeds else "", seeds and ok(v))
    seeds, jt, _ = paired(JT, JT, 0)
    row("joint's FID <= 250", seeds, f"{jt:.1f}" if seeds else "", seeds and jt <= 250)
    seeds, gd, jt = paired(GD, JT, 0)
    row("GD's FID within 1.5x of joint's", seeds, f"{gd / jt:.2f}x" if seeds else "", seeds and gd <= 1.5 * jt)
    seeds, gd, jt = paired(GD, JT, 2)
    gap = 100 * (jt - gd) if seeds else 0
    row("classifier with GD replay within 15 points of joint's (`classifier.mode=joint` on the joint run)", seeds,
        f"{gap:.1f} points below", seeds and gap <= 15)
