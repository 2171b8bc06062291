"""Where GD's distance to joint training comes from, class by class, from evaluations already committed (no runs):
    python docs/results/split_fmnist_gd_joint_gap/gap.py [SNAPSHOT.json ...]
Each snapshot maps a run's name (or label) to {"evals": [...]}, as the tables' --dump writes them; without
arguments the committed snapshots listed in DEFAULT are read. Every class has a fid_fmnist after every task (the
samples the evaluator puts in the class against the class's test images). A class's "arrival" score is the one
after the task that brought it, its "final" score the one after the last task. For a class,
    GD final / joint final = (GD arrival / joint arrival) x (GD final / GD arrival) / (joint final / joint arrival),
learning it, then what GD's later tasks do to it (drift), against what joint's later tasks do (joint trains on its
real images again). A class's samples shrink from about 1000 / (2 (k + 1)) after its task k to about 100 after
the last, for GD and joint alike, and FID reads higher on fewer samples (bias.py beside this measures how much on
real images): the drift of each run holds that bias, the comparison of GD's with joint's cancels most of it. The geometric means over the classes of tasks 0-3 (the last task's classes have no later
task) multiply the same way. Part 1: GD and joint of the same snapshot, seed and class order, class by class.
Part 2: the drift of every committed 5-task run that has per-class scores (for GR few classes keep enough
samples to be scored: the count says how many went into the mean)."""
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
DEFAULT = ["split_fmnist_cpu_batch32/runs.json", "split_fmnist_cpu_random_orders/runs.json",
           "split_fmnist_cpu_recipe/gd_epyc.json", "split_fmnist_cpu_lambda/seed69_amx.json",
           "split_fmnist_cpu_lambda/seed1714_amx.json", "split_fmnist_cpu_lambda/seed42_lam2_amx.json",
           "split_fmnist_cheaper_distillation/replay_ratio_amx.json", "split_fmnist_cpu_recipe/trajectory_amx.json",
           "split_fmnist_cpu_conditional/seed69_amx.json"]
NAMES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
N_TASKS = 5


def runs_of(path: Path) -> dict:
    """{name: {task: last eval of that task}} for the 5-task runs of a snapshot whose evaluations score classes."""
    data = json.loads(path.read_text())
    out = {}
    for name, run in data.items() if isinstance(data, dict) else []:
        if not isinstance(run, dict) or not isinstance(run.get("evals"), list):
            continue
        evals = {e["task"]: e for e in run["evals"]}  # a resumed run may have evaluated a task twice: the later counts
        if set(evals) >= set(range(N_TASKS)) and all(e.get("class_fid") is not None for e in evals.values()):
            out[name] = evals
    return out


def classes(evals: dict) -> dict:
    """{class: (task it arrived, arrival FID, final FID)}; a FID is None where too few samples fell in the class."""
    seen = {}
    for t in sorted(evals):
        for c in evals[t]["class_fid"]:
            seen.setdefault(int(c), t)
    last = evals[N_TASKS - 1]["class_fid"]
    return {c: (t, evals[t]["class_fid"].get(str(c)), last.get(str(c))) for c, t in sorted(seen.items(), key=lambda x: (x[1], x[0]))}


def gmean(xs: list[float]) -> float:
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def drift(evals: dict) -> tuple[float, float, int]:
    """A run's geometric-mean arrival FID and final / arrival FID over the classes of tasks 0-3 scored at both,
    and how many such classes there are."""
    kept = [(arr, fin) for t, arr, fin in classes(evals).values() if t < N_TASKS - 1 and arr and fin]
    return gmean([a for a, _ in kept]), gmean([f / a for a, f in kept]), len(kept)


def seed_of(name: str) -> str:
    return name.rsplit("seed", 1)[1].split("_")[0] if "seed" in name else "?"


def pairs(snap: dict) -> list[tuple[str, dict, dict]]:
    gd = {seed_of(n): e for n, e in snap.items() if n.startswith("fashion_mnist_generative_distillation")}
    joint = {seed_of(n): e for n, e in snap.items() if n.startswith("fashion_mnist_joint")}
    return [(s, gd[s], joint[s]) for s in sorted(gd, key=lambda s: int(s) if s.isdigit() else 0) if s in joint]


def counts(evals: dict, c: int, t: int) -> str:
    """How many of the run's samples the evaluator put in class c after task t and after the last task."""
    n = [round(evals[k]["hist_pred"][c] * evals[k]["n_samples"]) for k in (t, N_TASKS - 1)]
    return f"{n[0]} -> {n[1]}"


def part1(label: str, seed: str, gd: dict, joint: dict) -> tuple[float, float, float]:
    a, b = classes(gd), classes(joint)
    if [(c, t) for c, (t, _, _) in a.items()] != [(c, t) for c, (t, _, _) in b.items()]:
        raise SystemExit(f"{label} seed {seed}: GD's and joint's class orders differ")
    print(f"\n{label}, seed {seed}: final fid_fmnist GD {gd[N_TASKS - 1]['fid_fmnist']:.1f}, joint "
          f"{joint[N_TASKS - 1]['fid_fmnist']:.1f} (GD / joint {gd[N_TASKS - 1]['fid_fmnist'] / joint[N_TASKS - 1]['fid_fmnist']:.2f})\n")
    print("| class (task) | GD arrival | joint arrival | GD final | joint final | GD / joint at arrival "
          "| GD final / arrival | joint final / arrival | GD / joint final | samples, GD | samples, joint |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    arr, dg, dj = [], [], []
    for c, (t, ga, gf) in a.items():
        _, ja, jf = b[c]
        vals = (ga, ja, gf, jf)
        cells = [f"{v:.0f}" if v else "-" for v in vals]
        ratios = [ga / ja if ga and ja else None, gf / ga if gf and ga else None, jf / ja if jf and ja else None,
                  gf / jf if gf and jf else None]
        if t == N_TASKS - 1:
            ratios[1] = ratios[2] = None  # arrival is final
        print(f"| {NAMES[c]} ({t}) | " + " | ".join(cells) + " | "
              + " | ".join(f"{r:.2f}" if r else "-" for r in ratios) + f" | {counts(gd, c, t)} | {counts(joint, c, t)} |")
        if t < N_TASKS - 1 and all(vals):
            arr.append(ga / ja), dg.append(gf / ga), dj.append(jf / ja)
    g = gmean(arr), gmean(dg), gmean(dj)
    print(f"| geometric mean, tasks 0-3 ({len(arr)} classes) | | | | | {g[0]:.2f} | {g[1]:.2f} | {g[2]:.2f} "
          f"| {g[0] * g[1] / g[2]:.2f} | | |")
    return g


def main(argv: list[str]) -> int:
    files = [Path(f) for f in argv] or [RESULTS / f for f in DEFAULT]
    snaps = {}
    for f in files:
        if not f.is_file():
            raise SystemExit(f"{f}: no such file (give committed snapshots: runs.json, results.json, ...)")
        snaps[f] = runs_of(f)
    label = lambda f: f.parent.name + "/" + f.name  # noqa: E731
    print("## Part 1: GD against joint, class by class")
    summary = []
    for f, snap in snaps.items():
        for seed, gd, joint in pairs(snap):
            summary.append((label(f), seed, *part1(label(f), seed, gd, joint)))
    if summary:
        print("\n| snapshot | seed | GD / joint at arrival | GD final / arrival | joint final / arrival "
              "| product: GD / joint final |")
        print("|---|---|---|---|---|---|")
        for lab, seed, a, dg, dj in summary:
            print(f"| {lab} | {seed} | {a:.2f} | {dg:.2f} | {dj:.2f} | {a * dg / dj:.2f} |")
    print("\n## Part 2: drift (final / arrival FID, geometric mean over the classes of tasks 0-3 scored at both) "
          "in every committed run\n")
    print("A run in two snapshots is shown once. Arrival FIDs compare only between runs of one class order.\n")
    print("| snapshot | run | final fid_fmnist | arrival FID (geometric mean) | drift | classes |")
    print("|---|---|---|---|---|---|")
    shown = set()
    for f, snap in snaps.items():
        for name, evals in snap.items():
            key = (name, tuple(round(evals[t]["fid_fmnist"], 3) for t in range(N_TASKS)))
            if key in shown:
                continue
            shown.add(key)
            a, d, n = drift(evals)
            short = name.removeprefix("fashion_mnist_").replace("_small", "")
            print(f"| {label(f)} | {short} | {evals[N_TASKS - 1]['fid_fmnist']:.1f} | {a:.0f} | {d:.2f} | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
