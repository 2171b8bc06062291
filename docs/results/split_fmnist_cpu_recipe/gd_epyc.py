"""The `cpu` GD preset (lambda 0.75) on seeds 69 and 1714 made on the AMD EPYC and scored by its evaluator
`f60401b1`, the one that scored the rest of the 3-seed `cpu` table, beside the same configuration's runs on the Xeon
with AMX (scored by `48ba056f`); then GD's 3-seed mean against GR's and joint's, all from one evaluator:
    python docs/results/split_fmnist_cpu_recipe/gd_epyc.py runs/sweeps/split_fmnist_cpu 69 1714 --dump docs/results/split_fmnist_cpu_recipe/gd_epyc.json
    python docs/results/split_fmnist_cpu_recipe/gd_epyc.py docs/results/split_fmnist_cpu_recipe/gd_epyc.json
The first form reads the run folders (--dump writes their evaluations and task ends to the committed gd_epyc.json);
the second reads that file. GR's and joint's means come from this folder's results.json (the table's report)."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # docs/results: the shared snapshot helper
from snapshot import read_folder, read_source  # noqa: E402

RUN = "fashion_mnist_generative_distillation_lam0.75_teacher_steps2_small_seed{seed}"
AMX = {69: HERE.parent / "split_fmnist_cpu_lambda/seed69_amx.json",
       1714: HERE.parent / "split_fmnist_cpu_lambda/seed1714_amx.json"}
# Seed 42's lambda-0.75 run was made on the EPYC and scored by f60401b1; its metrics were not kept as JSON, so its
# final figures are the ones printed in ../split_fmnist_cpu_lambda/COMMAND.md's 28x28 table (one decimal).
SEED42 = (533.3, 0.119)
KEEP = ("task", "fid_fmnist", "kld", "class_fid", "evaluator_sha256", "n_samples", "eval_s")
N_TASKS = 5


def collect(root: Path, seeds: list[str]) -> dict:
    folders = (root / RUN.format(seed=s) for s in seeds)
    return {f.name: read_folder(f, KEEP) for f in folders if (f / "metrics.jsonl").is_file()}


def main(argv: list[str]) -> int:
    data = read_source(__doc__, collect, argv, "the sweep folder")
    print("| seed | machine | " + " | ".join(f"after task {k}" for k in range(N_TASKS))
          + " | mean per-class FID after the last | training s per later task | evaluator |")
    print("|---|---|" + "---|" * N_TASKS + "---|---|---|")
    finals = {42: SEED42}
    for seed in (69, 1714):
        name = RUN.format(seed=seed)
        rows = [("EPYC", data[name])] if name in data else []
        if AMX[seed].is_file():
            rows.append(("Xeon, AMX", json.loads(AMX[seed].read_text())[name]))
        for machine, run in rows:
            ev = {e["task"]: e for e in run["evals"]}
            last = ev.get(N_TASKS - 1)  # the 5th task's evaluation, once the run has it
            if last is not None and machine == "EPYC":
                finals[seed] = (last["fid_fmnist"], last["kld"])
            cells = [f"{ev[k]['fid_fmnist']:.1f} / {ev[k]['kld']:.3f}" if k in ev else "-" for k in range(N_TASKS)]
            pc = (f"{sum(last['class_fid'].values()) / len(last['class_fid']):.1f}"
                  if last is not None and "class_fid" in last else "-")
            secs = [t["train_s"] for t in run["task_ends"] if t["task"] > 0]
            span = f"{min(secs):.0f}-{max(secs):.0f}" if secs else "-"
            sha = ",".join(sorted({e.get("evaluator_sha256", "?")[:8] for e in ev.values()})) or "-"
            print(f"| {seed} | {machine} | " + " | ".join(cells) + f" | {pc} | {span} | {sha} |")
    groups = {g["label"].split(" ")[0]: g["final"] for g in json.loads((HERE / "results.json").read_text())}
    print()
    if len(finals) < 3:
        print(f"GD's 5th task is finished on seeds {sorted(finals)} only: no 3-seed mean yet")
        return 0
    fid = sum(f for f, _ in finals.values()) / 3
    kld = sum(k for _, k in finals.values()) / 3
    gr, joint = groups["generative_replay"], groups["joint"]
    print(f"GD (lambda 0.75), mean of seeds 42, 69 and 1714, scored by f60401b1: {fid:.1f} / {kld:.3f}")
    print(f"GR: {gr['fid_fmnist'][0]:.1f} / {gr['kld'][0]:.3f}; joint: {joint['fid_fmnist'][0]:.1f} / "
          f"{joint['kld'][0]:.3f} (results.json, the same evaluator)")
    print(f"GD's FID {fid / gr['fid_fmnist'][0]:.2f}x GR's (target <= 0.33), "
          f"{fid / joint['fid_fmnist'][0]:.2f}x joint's (target <= 1.5); GD's KLD {kld:.3f} (target <= 0.4); "
          f"GR's KLD {gr['kld'][0]:.3f} (target >= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
