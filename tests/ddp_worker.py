"""Run by tests/test_ddp.py under torchrun: `cldiff train` with per-rank instrumentation.

Usage: torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py RECORD_DIR -- <cldiff train args>

Records, per rank, the student's parameters at every checkpoint and the first
replay batch of task 1, so the test can compare ranks.
"""
import os
import sys
from pathlib import Path

import torch

import cldiff.train as tr
from cldiff.cli import main
from cldiff.strategies.replay import GenerativeDistillation

rec = Path(sys.argv[1])
args = sys.argv[sys.argv.index("--") + 1:]
rank = int(os.environ["RANK"])
rec.mkdir(parents=True, exist_ok=True)

_save = tr.Run.save


def save(self, where, *a, **kw):
    _save(self, where, *a, **kw)
    torch.save(self.model.state_dict(), rec / f"params_rank{rank}_task{where['task']}_step{where['step']}.pt")


tr.Run.save = save
_replay = GenerativeDistillation.replay


def replay(self, ctx):
    r = _replay(self, ctx)
    path = rec / f"replay_rank{rank}_task{ctx.task}.pt"
    if r is not None and not path.exists():
        torch.save({"x": r.x, "real": ctx.x0}, path)
    return r


GenerativeDistillation.replay = replay
sys.exit(main(["train", *args]))
