"""The cheaper replays against GD on one seed at a time, one machine, one evaluator: trajectory distillation
(S = 3, the last 2 states; and the last state alone with replay_ratio 0.5 at 518 steps, its time the smaller
of two uniform draws or, with last_time uniform, uniform) and GD with a smaller
replay batch (replay_ratio 0.5 and 0.6 at 378 steps per later task like GD; 0.5 also at 518 steps, GD's time per
task; 0.25 with S = 3 at 518 and at 614 steps, GD's time per task for it):
    python docs/results/split_fmnist_cpu_recipe/trajectory_seeds.py runs/sweeps/split_fmnist_cpu 69 1714
    python docs/results/split_fmnist_cpu_recipe/trajectory_seeds.py docs/results/split_fmnist_cpu_recipe/trajectory_amx.json \
        docs/results/split_fmnist_cheaper_distillation/replay_ratio_amx.json
The first form reads the run folders (and with --dump FILE writes their evaluations and task ends to FILE, the
committed trajectory_amx.json and replay_ratio_amx.json); the second reads such files. Rows: fid_fmnist / KLD after
every task, the teacher image-forwards and the student's images (forward and backward) of the later tasks, their
compute in image-forward equivalents (cldiff.report.compute_of: teacher forwards + 3 per student image), the later
tasks' training time, the evaluator that scored the row. Then the mean after the last task of each strategy over
the seeds where it ran. --plot FILE draws every run's final FID and KLD against its compute."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import read_folder, read_source  # noqa: E402

from cldiff.report import compute_of  # noqa: E402

RUNS = {  # label -> run folder name pattern ({seed} filled in)
    "GD, lambda 0.75": "fashion_mnist_generative_distillation_lam0.75_teacher_steps2_small_seed{seed}",
    "GD, lambda 1": "fashion_mnist_generative_distillation_lam1.0_teacher_steps2_small_seed{seed}",
    "trajectory, S = 3, states 2, lambda 1": "fashion_mnist_trajectory_distillation_lam1.0_states2_teacher_steps3_small_seed{seed}",
    "GD, lambda 0.75, replay_ratio 0.5": "fashion_mnist_generative_distillation_lam0.75_replay_ratio0.5_teacher_steps2_small_seed{seed}",
    "GD, lambda 0.75, replay_ratio 0.6": "fashion_mnist_generative_distillation_lam0.75_replay_ratio0.6_teacher_steps2_small_seed{seed}",
    "GD, lambda 0.75, replay_ratio 0.5, 518 steps": "fashion_mnist_generative_distillation_lam0.75_replay_ratio0.5_teacher_steps2_small_seed{seed}_train.steps_per_task518",
    "trajectory, S = 3, last state, lambda 0.75, replay_ratio 0.5, 518 steps":
        "fashion_mnist_trajectory_distillation_lam0.75_replay_ratio0.5_states1_teacher_steps3_small_seed{seed}_train.steps_per_task518",
    "trajectory, S = 3, last state at a uniform time, lambda 0.75, replay_ratio 0.5, 518 steps":
        "fashion_mnist_trajectory_distillation_lam0.75_last_timeuniform_replay_ratio0.5_states1_teacher_steps3_small_seed{seed}_train.steps_per_task518",
    "trajectory, S = 3, last state, half the rows GD pairs, lambda 0.75, replay_ratio 0.5, 518 steps":
        "fashion_mnist_trajectory_distillation_gd_share0.5_lam0.75_replay_ratio0.5_states1_teacher_steps3_small_seed{seed}_train.steps_per_task518",
    "GD, S = 3, lambda 0.75, replay_ratio 0.25, 518 steps":
        "fashion_mnist_generative_distillation_lam0.75_replay_ratio0.25_teacher_steps3_small_seed{seed}_train.steps_per_task518",
    "GD, S = 3, lambda 0.75, replay_ratio 0.25, 614 steps":
        "fashion_mnist_generative_distillation_lam0.75_replay_ratio0.25_teacher_steps3_small_seed{seed}_train.steps_per_task614",
}
N_TASKS = 5


KEEP = ("task", "fid_fmnist", "kld", "ard", "class_fid", "evaluator_sha256", "n_samples", "eval_s")


def collect(root: Path, seeds: list[str]) -> dict:
    """The evaluations and task ends of every run folder of the seeds, by folder name."""
    folders = (root / pattern.format(seed=seed) for seed in seeds for pattern in RUNS.values())
    return {f.name: read_folder(f, KEEP) for f in folders if (f / "metrics.jsonl").is_file()}


def main(argv: list[str]) -> int:
    plot = None
    if "--plot" in argv:  # not a snapshot argument: taken out before read_source parses the rest
        i = argv.index("--plot")
        plot, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    data = read_source(__doc__, collect, argv, "the sweep folder")
    seeds = sorted({int(re.search(r"_seed(\d+)", name).group(1)) for name in data})
    print("| seed | strategy | " + " | ".join(f"after task {k}" for k in range(N_TASKS))
          + " | teacher image-forwards, tasks 1-4 | student images, tasks 1-4 | compute, tasks 1-4"
          " | training s per later task | evaluator |")
    print("|---|---|" + "---|" * N_TASKS + "---|---|---|---|---|")
    final = {label: [] for label in RUNS}  # label -> [(seed, fid, kld, compute)] of the runs that finished
    for seed in seeds:
        for label, pattern in RUNS.items():
            run = data.get(pattern.format(seed=seed))
            if run is None:
                continue
            ev = {e["task"]: e for e in run["evals"]}
            later = [t for t in run["task_ends"] if t["task"] > 0]
            cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(N_TASKS)]
            teacher = sum(t["teacher_image_forwards"] for t in later)
            student = sum(t["student_images"] for t in later)
            compute = compute_of(later)
            secs = [t["train_s"] for t in later]
            span = f"{min(secs):.0f}-{max(secs):.0f}" if secs else "-"
            sha = ",".join(sorted({e.get("evaluator_sha256", "?")[:8] for e in ev.values()}))
            print(f"| {seed} | {label} | " + " | ".join(cells)
                  + f" | {teacher:,} | {student:,} | {compute:,} | {span} | {sha} |")
            if N_TASKS - 1 in ev:
                last = ev[N_TASKS - 1]
                final[label].append((seed, last["fid_fmnist"], last["kld"], compute))
    print(f"\n| strategy | seeds | mean after task {N_TASKS - 1} | compute, tasks 1-4 |\n|---|---|---|---|")
    for label, rows in final.items():
        if rows:
            fid, kld = (sum(r[i] for r in rows) / len(rows) for i in (1, 2))
            print(f"| {label} | {', '.join(str(r[0]) for r in rows)} | {fid:.1f} / {kld:.3f} | "
                  f"{sum(r[3] for r in rows) / len(rows):,.0f} |")
    if plot is not None:
        draw(final, plot)
    return 0


def draw(final: dict, path: Path) -> None:
    """Every finished run's final FID and KLD against its compute: one marker per strategy, one colour per seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seeds = sorted({r[0] for rows in final.values() for r in rows})
    colour = {s: f"C{i}" for i, s in enumerate(seeds)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    strategies = []
    markers = "osD^v<>PX*hpd8H"
    if len(final) > len(markers):  # zip would drop the strategies past the last marker without a word
        raise SystemExit(f"{len(final)} strategies to plot and {len(markers)} markers: add markers in draw()")
    for (label, rows), marker in zip(final.items(), markers):
        if rows:
            strategies.append(plt.Line2D([], [], ls="", marker=marker, c="grey", label=label))
        for ax, i in zip(axes, (1, 2)):
            ax.scatter([r[3] / 1e3 for r in rows], [r[i] for r in rows], marker=marker,
                       c=[colour[r[0]] for r in rows])
    for ax, name in zip(axes, ("fid_fmnist", "KLD")):
        ax.set_xlabel("compute of tasks 1-4 (thousand image-forward equivalents)")
        ax.set_ylabel(f"{name} after task {N_TASKS - 1}")
    seed_marks = [plt.Line2D([], [], ls="", marker="o", c=colour[s], label=f"seed {s}") for s in seeds]
    fig.legend(handles=strategies + seed_marks, loc="lower center", ncol=2, fontsize=7,
               title="marker: strategy; colour: seed", title_fontsize=7)  # below the axes: hides no point
    fig.tight_layout(rect=(0, 0.035 * ((len(strategies) + len(seeds) + 1) // 2 + 1), 1, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the long labels may run past the axes' width


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
