"""Data-parallel training under torchrun (2 CPU ranks, gloo, tiny model, synthetic data)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cldiff.checkpoint import list_checkpoints, load_latest

from conftest import CONFIGS, child_pids, pid_alive, smoke_overrides

SMOKE = CONFIGS / "split_fmnist" / "smoke.yaml"
WORKER = Path(__file__).with_name("ddp_worker.py")
SETS = ["train.threads=1", "train.steps_per_task=8", "train.checkpoint_every=2", "train.keep_checkpoints=5",
        "train.batch_size=16", "eval.enabled=true", "eval.n_samples=40", "eval.batch_size=8", "eval.steps=2",
        "train.precision=fp32"]


def _train_args(root, out, extra=()):
    args = ["--config", str(SMOKE), "--out", str(out), "--no-progress", "--resume"]
    for s in smoke_overrides(root) + SETS + list(extra):
        args += ["--set", s]
    return args


def _torchrun(script_args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script_args]


@pytest.fixture
def fmnist_evaluator():
    """A small evaluator cached under the fashion_mnist tag, so runs find it instead of training one."""
    from cldiff.evaluate import find_evaluator, load_evaluator, save_evaluator, train_evaluator
    path = find_evaluator("fashion_mnist")
    if path is None:
        net, info = train_evaluator("synthetic", epochs=1, verbose=False, max_train=300)
        path = save_evaluator(net, {**info, "dataset": "fashion_mnist"})
    return load_evaluator(path)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_ranks_stay_identical_replay_differs_eval_gathered(fake_fmnist, tmp_path, fmnist_evaluator):
    rec, run = tmp_path / "rec", tmp_path / "run"
    r = subprocess.run(_torchrun([str(WORKER), str(rec), "--", *_train_args(fake_fmnist, run)]),
                       capture_output=True, text=True, timeout=400, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    # parameters identical across ranks at every checkpoint (mid-task ones included), and equal to rank 0's file
    saved = sorted(rec.glob("params_rank0_*.pt"))
    assert len(saved) >= 6
    for p0 in saved:
        a, b = torch.load(p0), torch.load(str(p0).replace("rank0", "rank1"))
        for k in a:
            assert torch.equal(a[k], b[k]), (p0.name, k)
    final, _ = load_latest(run)
    last = torch.load(rec / "params_rank0_task1_step8.pt")
    assert all(torch.equal(final["model"][k], last[k]) for k in last)
    # each rank its own slice of the real batch and its own replay noise
    r0, r1 = torch.load(rec / "replay_rank0_task1.pt"), torch.load(rec / "replay_rank1_task1.pt")
    assert r0["x"].shape == r1["x"].shape == (8, 1, 32, 32)  # global batch 16 = 2 x 8
    assert not torch.allclose(r0["x"], r1["x"])
    assert not torch.equal(r0["real"], r1["real"])
    # the sharded evaluation gathered every sample, and equals a one-process evaluation of the same model
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["task"] for e in evals] == [0, 1]
    assert all(e["n_samples"] == 40 and e["ranks"] == 2 for e in evals)

    from cldiff.data import ContinualData
    from cldiff.evaluate import evaluate_task
    from cldiff.runfolder import load_model
    model, schedule, cfg, _ = load_model(run)
    one = evaluate_task(model, schedule, ContinualData.from_config(cfg), 1, cfg.eval, fmnist_evaluator, "cpu",
                        __import__("contextlib").nullcontext)
    assert one["n_samples"] == 40
    assert one["hist_pred"] == evals[1]["hist_pred"]
    assert one["fid_fmnist"] == pytest.approx(evals[1]["fid_fmnist"], rel=1e-6)
    # one metrics file, written by rank 0 only: no duplicated lines
    steps = [(json.loads(x)["task"], json.loads(x)["step"]) for x in (run / "metrics.jsonl").read_text().splitlines()
             if '"train"' in x]
    assert len(steps) == len(set(steps)) == 8


@pytest.mark.slow
def test_two_ranks_killed_and_resumed_equal_uninterrupted(fake_fmnist, tmp_path, fmnist_evaluator):
    full, run = tmp_path / "full", tmp_path / "killed"
    longer = ["train.steps_per_task=30"]  # time for the kill to land mid task 1
    cmd = lambda out: _torchrun(["-m", "cldiff", "train", *_train_args(fake_fmnist, out, longer)])
    r = subprocess.run(cmd(full), capture_output=True, text=True, timeout=400, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.Popen(cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                         start_new_session=True)
    t0 = time.time()
    while not any(m.get("task") == 1 and not m.get("complete", True) for m in list_checkpoints(run)):
        assert p.poll() is None and time.time() - t0 < 300, "the run ended before it could be killed"
        time.sleep(0.05)
    ranks = child_pids(p.pid)
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGKILL)  # one rank dies mid task 1: torchrun stops the other and fails
    assert p.wait(timeout=120) != 0
    assert not any(pid_alive(r) for r in ranks)
    r = subprocess.run(cmd(run), capture_output=True, text=True, timeout=400, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    a, _ = load_latest(full)
    b, _ = load_latest(run)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["rng"]["train_gen_ranks"][1].shape == b["rng"]["train_gen_ranks"][1].shape

    def lines(d):
        recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["event"], r["task"], r.get("step"), r.get("loss"), r.get("fid_fmnist")) for r in recs
                if r["event"] in ("train", "task_end", "eval")]
    assert lines(full) == lines(run)


@pytest.mark.slow
def test_batch_must_split_over_ranks(fake_fmnist, tmp_path):
    r = subprocess.run(_torchrun(["-m", "cldiff", "train", *_train_args(fake_fmnist, tmp_path / "r",
                                                                        ["train.batch_size=15"])]),
                       capture_output=True, text=True, timeout=200, env=_env())
    assert r.returncode != 0
    # one line from each rank; torchrun then prints its own launcher traceback, but none comes from cldiff
    assert r.stderr.count("cldiff: error: train.batch_size 15 is the global batch") == 2
    assert "cldiff/train.py" not in r.stderr and "cldiff/cli.py" not in r.stderr
