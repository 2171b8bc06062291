"""Evaluate one task checkpoint of a conditional run at several guidance scales:
    python docs/results/split_fmnist_conditional_quick/guidance.py RUN TASK SCALE [SCALE ...]
(the guidance probe of COMMAND.md: RUN = runs/split_fmnist_conditional_quick_n01/cond_seed42_paper_gd, TASK 0)."""
import sys, json, torch
from cldiff.runfolder import load_model
from cldiff.checkpoint import list_checkpoints
from cldiff.data import ContinualData
from cldiff.evaluate import evaluate_task, get_evaluator
from cldiff.model import autocast_for
torch.set_num_threads(1)
run, task = sys.argv[1], int(sys.argv[2])
meta = [m for m in list_checkpoints(run) if m["task"] == task][0]
dev = torch.device("cpu")
model, sched, cfg, _ = load_model(meta["path"], dev)
ev = get_evaluator(cfg.data.dataset, dev, cfg.data.root)
data = ContinualData.from_config(cfg)
for g in map(float, sys.argv[3:]):
    cfg.eval.guidance = g
    m = evaluate_task(model, sched, data, task, cfg.eval, ev, dev, autocast_for(dev, cfg.train.precision))
    print(json.dumps({"guidance": g, "fid": round(m["fid_fmnist"], 1), "kld": round(m["kld"], 3), "label_acc": m["label_acc"],
                      "class_fid_mean": round(m["class_fid_mean"], 1)}), flush=True)
