"""At which noise levels a class drifts: each task checkpoint's denoising error on real test images of the class.
    python docs/results/split_fmnist_gd_joint_gap/eps_drift.py LABEL=RUN_FOLDER [LABEL=RUN_FOLDER ...] [--dump F.json]
    python docs/results/split_fmnist_gd_joint_gap/eps_drift.py F.json
For every class of tasks 0-3 and every timestep t of TIMESTEPS: the mean squared error of the model's eps
prediction (its EMA weights, fp32) on N test images of the class, noised to t with fixed noise (the same for
every checkpoint), after the task that brought the class ("arrival") and after the last task ("final"). The
table gives final / arrival per t, geometric mean over the classes, per run: where above 1, the later tasks made
the model denoise the class worse at that noise level. Needs the runs' task checkpoints (train.keep_checkpoints
keeps the task ends) and the data set; on one thread, about a minute per run."""
import json
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # docs/results: the shared snapshot helper
from snapshot import read_labelled  # noqa: E402

from cldiff.checkpoint import list_checkpoints  # noqa: E402
from cldiff.data import DATASETS, ContinualData  # noqa: E402
from cldiff.runfolder import load_model  # noqa: E402

TIMESTEPS = (20, 100, 250, 500, 750, 950)
N = 200
N_TASKS = 5
NAMES = DATASETS["fashion_mnist"].class_names


@torch.no_grad()
def errors(model, schedule, x0: torch.Tensor, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in TIMESTEPS:
        eps = torch.randn(x0.shape, generator=g)
        tt = torch.full((len(x0),), t, dtype=torch.long)
        out.append(float(((model(schedule.add_noise(x0, tt, eps), tt) - eps) ** 2).mean()))
    return out


def collect(sources: list[tuple[str, str]]) -> dict:
    torch.set_num_threads(1)
    data_by_size, out = {}, {}
    for label, folder in sources:
        ends = {m["task"]: m for m in list_checkpoints(Path(folder)) if m.get("complete", True)}
        if set(ends) < set(range(N_TASKS)):
            raise SystemExit(f"{folder}: needs the checkpoints of tasks 0-{N_TASKS - 1}, has {sorted(ends)}")
        loaded = {k: load_model(ends[k]["path"]) for k in range(N_TASKS)}
        models = {k: m[:2] for k, m in loaded.items()}
        cfg = loaded[0][2]
        size = cfg.data.image_size
        if size not in data_by_size:
            data_by_size[size] = ContinualData("fashion_mnist", [tuple(range(10))], image_size=size)
        data = data_by_size[size]
        tasks = ContinualData.from_config(cfg).tasks
        run = {"timesteps": list(TIMESTEPS), "n": N, "classes": {}}
        for k, task in enumerate(tasks[:N_TASKS - 1]):
            for c in task:
                x0 = data.test([c])[0][:N]
                run["classes"][NAMES[c]] = {"task": k, "arrival": errors(*models[k], x0, seed=c),
                                            "final": errors(*models[N_TASKS - 1], x0, seed=c)}
        out[label] = run
        print(f"{label}: done", file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    data = read_labelled(__doc__, collect, argv, "LABEL=RUN_FOLDER pairs")
    print("Final / arrival eps-MSE on real test images, geometric mean over the classes of tasks 0-3, per timestep\n")
    print("| run | " + " | ".join(f"t = {t}" for t in TIMESTEPS) + " |")
    print("|---|" + "---|" * len(TIMESTEPS))
    for label, run in data.items():
        cls = run["classes"].values()
        g = [math.exp(sum(math.log(c["final"][i] / c["arrival"][i]) for c in cls) / len(cls)) for i in range(len(TIMESTEPS))]
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in g) + " |")
    for label, run in data.items():
        print(f"\n{label}: eps-MSE at arrival -> final\n")
        print("| class (task) | " + " | ".join(f"t = {t}" for t in TIMESTEPS) + " |")
        print("|---|" + "---|" * len(TIMESTEPS))
        for name, c in run["classes"].items():
            print(f"| {name} ({c['task']}) | " + " | ".join(f"{a:.4f} -> {f:.4f}" for a, f in zip(c["arrival"], c["final"])) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
