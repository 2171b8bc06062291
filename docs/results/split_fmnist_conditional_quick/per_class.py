"""Score run folders' final checkpoints again, with today's metrics (per-class FID), as their runs evaluated them.

    python docs/results/split_fmnist_conditional_quick/per_class.py RUN [RUN ...] [--out FILE.jsonl]

For each run: the newest end-of-task checkpoint, evaluated with the run's own eval settings (the same samples
as the run's last eval line: fixed noise, same model), one JSON line per run.
"""
import argparse
import json
import sys

import torch

from cldiff.checkpoint import list_checkpoints
from cldiff.data import ContinualData
from cldiff.evaluate import evaluate_task, get_evaluator
from cldiff.model import autocast_for
from cldiff.runfolder import load_model


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev, ev, lines = torch.device("cpu"), None, []
    for run in a.runs:
        metas = [m for m in list_checkpoints(run) if m.get("complete", True) and "step" in m]
        meta = max(metas, key=lambda m: m["task"])
        model, schedule, cfg, _ = load_model(meta["path"], dev)
        ev = ev or get_evaluator(cfg.data.dataset, dev, cfg.data.root)
        data = ContinualData.from_config(cfg)
        m = evaluate_task(model, schedule, data, meta["task"], cfg.eval, ev, dev, autocast_for(dev, cfg.train.precision))
        rec = {"run": run, "task": meta["task"], **{k: m[k] for k in ("fid_fmnist", "kld", "class_fid_mean",
                                                                      "classes_missing", "class_fid", "class_source")}}
        print(json.dumps(rec), flush=True)
        lines.append(rec)
    if a.out:
        with open(a.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
