"""Reference points for reading our evaluator FID after the 5th task of Split Fashion-MNIST.

Scores, exactly as an evaluation after task 4 does (1,000 images against the test images of all 10 classes):
real training images with a uniform class mix, real training images with the class mix that a run's samples
had (its hist_pred after the last task, from RUN/metrics.jsonl), Gaussian noise and a flat grey image.
Real images with a run's class mix tell how much of that run's FID its class imbalance alone explains.

    .venv/bin/python docs/results/split_fmnist_cpu/probes/fid_reference_points.py runs/split_fmnist_cpu/generative_distillation_seed42 ...
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cldiff.config import load_config
from cldiff.data import ContinualData
from cldiff.evaluate import get_evaluator, score_samples
from cldiff.report import _real_with_mix

N = 1000


def real_with_mix(x, y, hist, rng):
    return _real_with_mix(x, y, hist, N, rng)  # what `cldiff report`'s reference points draw


def main(runs):
    cfg = load_config(Path(__file__).resolve().parents[4] / "configs/split_fmnist/cpu/generative_distillation.yaml")
    data = ContinualData.from_config(cfg)
    ev = get_evaluator(cfg.data.dataset, torch.device("cpu"), cfg.data.root)
    classes = list(range(10))
    x, y = data.train(classes)
    y = y.numpy()
    rng = np.random.default_rng(0)
    sets = {"real train images, uniform class mix": real_with_mix(x, y, [1] * 10, rng)}
    for run in runs:
        last = [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in last if r.get("event") == "eval"][-1]
        sets[f"real train images, class mix of {Path(run).name} after task {last['task']} "
             f"(its own FID {last['fid_fmnist']:.1f}, KLD {last['kld']:.3f})"] = real_with_mix(x, y, last["hist_pred"], rng)
    g = torch.Generator().manual_seed(0)
    sets["Gaussian noise N(0, 1), clipped to [-1, 1]"] = torch.randn((N, 1, 32, 32), generator=g).clamp(-1, 1)
    sets["flat grey (all pixels 0)"] = torch.zeros((N, 1, 32, 32))
    for name, imgs in sets.items():
        m = score_samples(imgs, ev, cfg.data.dataset, classes, data=data)
        print(f"{m['fid_fmnist']:9.1f}  KLD {m['kld']:6.3f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
