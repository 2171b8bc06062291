"""Exact resume after SIGKILL, atomic and verified checkpoints, interrupts, numerical faults."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cldiff.checkpoint import list_checkpoints, load_latest, save_checkpoint
from cldiff.config import load_config
from cldiff.train import TrainingDiverged, train

from conftest import CONFIGS, smoke_overrides

SMOKE = CONFIGS / "split_fmnist" / "smoke.yaml"
SETS = ["train.threads=1", "train.checkpoint_every=2", "train.steps_per_task=8", "train.keep_checkpoints=5"]
CLASSIFIER = ["classifier.enabled=true", "classifier.epochs=0.3", "classifier.batch_size=16",
              "classifier.replay_steps=2"]
# the training recipe (EMA, a cosine learning rate after a warm-up, min-SNR weighting): its state and its
# step-dependent rates must resume as exactly as the rest
RECIPE = ["train.ema_decay=0.99", "train.lr_schedule=cosine", "train.warmup_steps=3", "train.loss_weighting=min_snr"]
FUSED = ["train.fused_adam=true"]  # Adam's fused kernel: its state must resume as exactly as the default's


def _cmd(root, out, extra=()):
    args = [sys.executable, "-m", "cldiff", "train", "--config", str(SMOKE), "--out", str(out), "--no-progress",
            "--resume"]
    for s in smoke_overrides(root) + SETS + list(extra):
        args += ["--set", s]
    return args


def _lines(run):
    recs = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [(r["event"], r["task"], r.get("step"), r.get("loss"), r.get("images_trained")) for r in recs
            if r["event"] in ("train", "task_end", "eval", "classifier_eval")]


def _assert_same_run(a, b):
    sa, _ = load_latest(a)
    sb, _ = load_latest(b)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for k in sa["strategy"].get("teacher", {}):
        assert torch.equal(sa["strategy"]["teacher"][k], sb["strategy"]["teacher"][k]), k
    assert ("ema" in sa) == ("ema" in sb)
    for k in sa.get("ema", {}):
        assert torch.equal(sa["ema"][k], sb["ema"][k]), k
    for k in sa.get("classifier", {}).get("net", {}):
        assert torch.equal(sa["classifier"]["net"][k], sb["classifier"]["net"][k]), k
    assert _lines(a) == _lines(b)


def _wait_for(run, pred, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(pred(m) for m in list_checkpoints(run)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError


def killed_once_then_resumed(root, tmp_path, extra, task=1, step=4):
    """A run of the smoke preset with ``extra`` settings, SIGKILLed at (task, step) and resumed, equals an
    uninterrupted one bit for bit; returns the resumed run's folder."""
    full = tmp_path / "full"
    r = subprocess.run(_cmd(root, full, extra), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "killed"
    p = subprocess.Popen(_cmd(root, run, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(run, lambda m: m["task"] == task and m["step"] == step, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = subprocess.run(_cmd(root, run, extra), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same_run(full, run)
    return run


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_is_bit_identical(fake_fmnist, tmp_path):
    extra = CLASSIFIER + RECIPE + FUSED
    full = tmp_path / "full"
    r = subprocess.run(_cmd(fake_fmnist, full, extra), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "killed"
    # kill points: mid task 0, right after task 0 ended, mid task 1
    kill_points = [lambda m: m["task"] == 0 and m["step"] == 2,
                   lambda m: m["task"] == 0 and m.get("complete") and m["step"] == 8,
                   lambda m: m["task"] == 1 and m["step"] == 4]
    kills = 0
    for pred in kill_points:
        p = subprocess.Popen(_cmd(fake_fmnist, run, extra), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        if _wait_for(run, pred, p):
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills == 3
    r = subprocess.run(_cmd(fake_fmnist, run, extra), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same_run(full, run)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resumes(fake_fmnist, tmp_path):
    full = train(load_config(SMOKE, smoke_overrides(fake_fmnist) + SETS), out=str(tmp_path / "full"), progress=False)
    run = tmp_path / "int"
    p = subprocess.Popen(_cmd(fake_fmnist, run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert _wait_for(run, lambda m: m["task"] == 1 and m["step"] == 2, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (0, 130), err  # 0 if it finished before the signal landed
    if p.returncode == 130:
        assert "--resume" in err and "Traceback" not in err
    r = subprocess.run(_cmd(fake_fmnist, run), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same_run(full, run)


def test_corrupted_latest_checkpoint_falls_back(tmp_path, capsys):
    for k in (0, 1):
        save_checkpoint(tmp_path, f"task_{k:02d}", {"w": torch.full((3,), float(k))}, {"task": k, "step": 5})
    pt = tmp_path / "checkpoints" / "task_01.pt"
    pt.write_bytes(pt.read_bytes()[:-7])  # truncated
    state, meta = load_latest(tmp_path)
    assert meta["task"] == 0 and torch.equal(state["w"], torch.zeros(3))
    err = capsys.readouterr().err
    assert "task_01.pt" in err and "checksum" in err and len(err.strip().splitlines()) == 1


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, "task_00", {"w": torch.ones(2)}, {"task": 0, "step": 1})
    before = (tmp_path / "checkpoints" / "task_00.pt").read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, "task_00", {"w": torch.zeros(2)}, {"task": 0, "step": 2})
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "task_00.pt").read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    state, meta = load_latest(tmp_path)
    assert meta["step"] == 1 and torch.equal(state["w"], torch.ones(2))


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_nan_loss_stops_with_the_last_good_checkpoint(fake_fmnist, tmp_path, monkeypatch):
    from cldiff.strategies.basic import Naive
    calls = {"n": 0}

    def penalty(self, model):
        calls["n"] += 1
        return torch.tensor(float("nan")) if calls["n"] == 10 else None
    monkeypatch.setattr(Naive, "penalty", penalty)
    cfg = load_config(SMOKE, smoke_overrides(fake_fmnist) + SETS + ["strategy={name: naive}"])
    with pytest.raises(TrainingDiverged, match="task 1 step 1"):
        train(cfg, out=str(tmp_path / "stop"), progress=False)
    assert list_checkpoints(tmp_path / "stop")[-1]["task"] == 0  # task 0's checkpoint is intact
    calls["n"] = 0
    cfg = load_config(SMOKE, smoke_overrides(fake_fmnist) + SETS + ["strategy={name: naive}", "train.nan_policy=skip"])
    out = train(cfg, out=str(tmp_path / "skip"), progress=False)
    ends = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"task_end"' in x]
    assert [e["skipped_nonfinite"] for e in ends] == [0, 1]
    # 8 steps over 120 images at batch 16 are 7 x 16 + 8 images; the skipped first batch (16) is not counted
    assert ends[0]["images_trained"] == 120 and ends[1]["images_trained"] == 120 - 16


@pytest.mark.slow
def test_cli_nan_exit_status_3(fake_fmnist, tmp_path):
    args = _cmd(fake_fmnist, tmp_path / "r") + ["--set", "train.lr=1e30", "--set", "train.grad_clip=0"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        pytest.skip("lr 1e30 did not diverge on this machine")
    assert r.returncode == 3 and "Traceback" not in r.stderr and "checkpoint" in r.stderr


def test_every_rng_is_saved_and_restored():
    import random

    import numpy as np

    from cldiff.train import _restore_rng, _rng_state
    g, dg = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    saved = _rng_state(g, dg)
    draws = (torch.rand(2, generator=g), torch.rand(2, generator=dg), torch.rand(2), np.random.rand(2), random.random())
    g2, dg2 = torch.Generator(), torch.Generator()
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    _restore_rng(saved, g2, dg2)
    again = (torch.rand(2, generator=g2), torch.rand(2, generator=dg2), torch.rand(2), np.random.rand(2), random.random())
    for a, b in zip(draws[:3], again[:3]):
        assert torch.equal(a, b)
    assert np.array_equal(draws[3], again[3]) and draws[4] == again[4]


def test_resume_accepts_a_checkpoint_with_an_older_rng_layout():
    # an early version stored numpy's 624 keys only: the resume must go on (numpy's generator is not used by
    # training), with the torch generators, which are, restored exactly
    import json as _json

    import numpy as np

    from cldiff.train import _restore_rng, _rng_state
    g, dg = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    saved = _rng_state(g, dg)
    saved["numpy"] = _json.dumps(np.random.get_state()[1].tolist())
    saved["python"] = _json.dumps([1, 2])
    expect = torch.rand(3, generator=g)
    g2 = torch.Generator()
    _restore_rng(saved, g2, torch.Generator())
    assert torch.equal(torch.rand(3, generator=g2), expect)


def test_rank_generators_follow_the_rank_on_resume():
    from cldiff.dist import DistEnv
    from cldiff.train import _restore_rng
    states = [torch.Generator().manual_seed(s).get_state() for s in (10, 11)]
    rng = {"train_gen": states[0], "data_gen": torch.Generator().get_state(), "torch": torch.get_rng_state(),
           "train_gen_ranks": states}
    for rank in (0, 1):
        g = torch.Generator()
        _restore_rng(rng, g, torch.Generator(), DistEnv(rank, 2))
        assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(10 + rank)))
    # a one-process checkpoint (a shared task 0) on 2 ranks: rank 0 continues it, rank 1 gets noise of its own
    one = {k: v for k, v in rng.items() if k != "train_gen_ranks"}
    g0, g1 = torch.Generator(), torch.Generator()
    _restore_rng(one, g0, torch.Generator(), DistEnv(0, 2), seed=42, task=0)
    _restore_rng(one, g1, torch.Generator(), DistEnv(1, 2), seed=42, task=0)
    assert torch.equal(g0.get_state(), states[0]) and not torch.equal(g1.get_state(), states[0])


def test_config_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    # Under DDP the other ranks read config.yaml while the main rank rewrites it on --resume; a partial file there
    # (or after a crash mid-write) would refuse the resume. The rewrite goes through a temporary file: if it
    # fails, the old config.yaml is whole.
    import cldiff.checkpoint
    from cldiff.runfolder import prepare_run_dir

    cfg = load_config(SMOKE, smoke_overrides(tmp_path / "data"))
    out = tmp_path / "run"
    prepare_run_dir(cfg, str(out), resume=False)
    before = (out / "config.yaml").read_text()
    assert "smoke" in before or "tiny" in before  # the whole config, not an empty file

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cldiff.checkpoint.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        prepare_run_dir(cfg, str(out), resume=True)
    assert (out / "config.yaml").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "samples"]  # no temporary file left


def _hold_lock(run):
    """Another process that holds ``run``'s lock (as a training run there does) until it is killed."""
    code = ("import sys, time; from cldiff.runfolder import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_run_folder_in_use_refuses_a_second_process_and_frees_itself_when_the_holder_dies(
        fake_fmnist, tmp_path, capsys):
    # Two processes training in one folder (two sweeps planning the same run; a resume beside a running run) would
    # both write its checkpoints and metrics. The second is refused before writing anything, with the holder's pid
    # and what to do; a SIGKILLed holder leaves no stale lock.
    from cldiff.cli import main

    run = tmp_path / "run"
    args = ["train", "--config", str(SMOKE), "--out", str(run), "--no-progress", "--resume", "--tasks", "1"]
    for s in smoke_overrides(fake_fmnist) + SETS + ["eval.enabled=false"]:
        args += ["--set", s]
    holder = _hold_lock(run)
    try:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is in use" in err and f"pid {holder.pid}" in err and "Traceback" not in err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no config, metrics or checkpoint written
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0  # the kernel dropped the dead holder's lock
    assert any(m["task"] == 0 for m in list_checkpoints(run))
    from cldiff.runfolder import RunLock
    lock = RunLock(run)
    lock.acquire()  # the finished run released its own lock
    lock.release()


def test_a_sweep_skips_a_run_in_use_reports_it_and_runs_the_others(fake_fmnist, tmp_path, capsys):
    import yaml

    from cldiff import sweep

    sw = tmp_path / "s.yaml"
    sw.write_text(yaml.safe_dump({
        "base": str(SMOKE), "out": str(tmp_path / "out"), "share_first_task": False,
        "set": {"data.root": str(fake_fmnist), "data.verify": False, "train.steps_per_task": 2,
                "train.threads": 1, "data.num_tasks": 1, "eval.enabled": False},
        "grid": {"seed": [42], "strategy": [{"name": "naive"}, {"name": "joint"}]}}))
    (busy, free), _ = sweep.plan(sw)
    holder = _hold_lock(busy.out)
    try:
        with pytest.raises(RuntimeError, match="1 run\\(s\\) failed: .*naive"):
            sweep.run_sweep(sw, progress=False)
        err = capsys.readouterr().err
        assert "is in use" in err and "Traceback" not in err
        assert sweep.is_finished(free.out, 1) and not (busy.out / "checkpoints").exists()
        # the command: the finished run skipped, the busy one named, a message and status 2 (no traceback)
        from cldiff.cli import main
        assert main(["sweep", str(sw), "--no-progress"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert "done" in err and "1 run(s) failed" in err and "run the same command again" in err
    assert "Traceback" not in err
