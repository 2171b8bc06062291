"""COMMAND.md's table from the run folders:
    python docs/results/split_fmnist_cheaper_distillation/table.py [RUNS] [RECIPE_RUNS]
After the 3rd task: fid_fmnist / KLD, and the teacher image-forwards and student images of tasks 1-2 per step."""
import json
import sys
from pathlib import Path

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/split_fmnist_cheaper_distillation")
recipe = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/split_fmnist_quick_recipe")
seeds = [("seed42_paper", "recipe_seed42"), ("seed1714_paper", "recipe_seed1714"), ("seed1_random", "recipe_random_seed1")]
rows = [("GD, S = 2 (the paper)", "gd", True), ("GR, S = 2", "gr", True),
        ("trajectory, S = 4, states 3", "traj_s4_states3", False), ("trajectory, S = 2, states 2", "traj_s2_states2", False),
        ("trajectory, S = 2, states 1", "traj_s2_states1", False), ("GD, replay_ratio 0.5", "gd_ratio0.5", False),
        ("GD, replay_timesteps snr", "gd_snr", False), ("GD, replay_timesteps adaptive", "gd_adaptive", False),
        ("GD, replay pool (pool_every 8)", "gd_pool8", False), ("experience replay (2,000 real images)", "experience_replay", False)]


def read(folder: Path):
    if not (folder / "metrics.jsonl").exists():
        return None
    recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    ev = {r["task"]: r for r in recs if r.get("event") == "eval"}
    ends = [r for r in recs if r.get("event") == "task_end" and r["task"] >= 1]
    if 2 not in ev or len(ends) < 2:
        return None
    steps = sum(e["steps"] for e in ends)
    return (ev[2]["fid_fmnist"], ev[2]["kld"], sum(e["teacher_image_forwards"] for e in ends) / steps,
            sum(e["student_images"] for e in ends) / steps)


print("| strategy | teacher image-forwards per step | student images per step | "
      + " | ".join(s.replace("_", " ") for s, _ in seeds) + " |")
print("|---|---|---|" + "---|" * len(seeds))
for label, key, from_recipe in rows:
    got = [read(recipe / f"{src}_{key}") if from_recipe else read(runs / f"{key}_{s}") for s, src in seeds]
    first = next((g for g in got if g), None)
    if first is None:
        continue
    cells = [f"{g[0]:.1f} / {g[1]:.3f}" if g else "not run" for g in got]
    print(f"| {label} | {first[2]:.0f} | {first[3]:.0f} | " + " | ".join(cells) + " |")
