import contextlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cldiff.checkpoint import list_checkpoints, load_checkpoint_file, load_latest
from cldiff.config import load_config
from cldiff.train import train

from conftest import CONFIGS, smoke_overrides

SMOKE = CONFIGS / "split_fmnist" / "smoke.yaml"


def _cfg(root, *extra):
    return load_config(SMOKE, smoke_overrides(root) + list(extra))


@pytest.mark.slow
def test_cli_train_on_smoke_writes_the_run_folder(fake_fmnist, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "cldiff", "train", "--config", str(SMOKE), "--out", str(out),
                        "--no-progress", *sum((["--set", s] for s in smoke_overrides(fake_fmnist)), [])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "config.yaml").exists()
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    events = [x["event"] for x in recs]
    assert events[0] == "start" and events[-1] == "done" and events.count("task_end") == 2
    train_lines = [x for x in recs if x["event"] == "train"]
    assert {x["task"] for x in train_lines} == {0, 1}
    for x in train_lines:
        assert {"loss", "loss_real", "loss_replay", "img_per_s", "wall_s", "step"} <= set(x)
    # task 0 has no replay; task 1 replays (GD) and the teacher worked for it
    assert all(x["loss_replay"] == 0 for x in train_lines if x["task"] == 0)
    assert all(x["loss_replay"] > 0 for x in train_lines if x["task"] == 1)
    ends = [x for x in recs if x["event"] == "task_end"]
    assert ends[0]["teacher_image_forwards"] == 0
    assert ends[1]["teacher_image_forwards"] == 3 * ends[1]["images_trained"]  # S=2 steps + 1 target forward
    assert ends[1]["student_images"] == 2 * ends[1]["images_trained"]  # as many replay as real
    metas = list_checkpoints(out)
    assert [m["task"] for m in metas] == [0, 1]
    state, meta = load_checkpoint_file(out / "checkpoints" / "task_01.pt")
    assert "model" in state and "teacher" in state["strategy"] and meta["config"]["strategy"]["name"] == \
        "generative_distillation"
    for k in (0, 1):
        img = Image.open(out / "samples" / f"task_{k:02d}.png")
        assert img.size == (4 * 34 + 2, 4 * 34 + 2)  # 16 samples, 4x4 grid of 32 px with 2 px padding


@pytest.mark.slow
def test_cli_sample_from_a_run(fake_fmnist, tmp_path):
    out = train(_cfg(fake_fmnist, "data.num_tasks=1"), out=str(tmp_path / "r"), progress=False)
    png, npz = tmp_path / "g.png", tmp_path / "g.npz"
    r = subprocess.run([sys.executable, "-m", "cldiff", "sample", str(out), "--n", "9", "--steps", "2", "--out",
                        str(png), "--npz", str(npz)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Image.open(png).size == (3 * 34 + 2, 3 * 34 + 2)
    assert np.load(npz)["images"].shape == (9, 32, 32)
    r = subprocess.run([sys.executable, "-m", "cldiff", "sample", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_train_step_changes_student_not_teacher(fake_fmnist, tmp_path):
    out = train(_cfg(fake_fmnist), out=str(tmp_path / "r"), progress=False)
    s0, _ = load_checkpoint_file(out / "checkpoints" / "task_00.pt")
    s1, _ = load_checkpoint_file(out / "checkpoints" / "task_01.pt")
    # the teacher during task 1 was the end-of-task-0 model (in bf16 under bf16 autocast) and it is unchanged
    t1 = s0["strategy"]["teacher"]
    for k, v in s0["model"].items():
        assert torch.equal(t1[k], v.to(t1[k].dtype))
    # the student moved during task 1
    assert any(not torch.equal(s1["model"][k], v) for k, v in s0["model"].items())


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_resume_after_a_task_equals_the_uninterrupted_run(fake_fmnist, tmp_path):
    cfg = _cfg(fake_fmnist, "train.keep_checkpoints=5")
    full = train(cfg, out=str(tmp_path / "full"), progress=False)
    part = tmp_path / "part"
    shutil.copytree(full, part)
    for suffix in (".json", ".pt"):
        (part / "checkpoints" / f"task_01{suffix}").unlink()
    train(cfg, out=str(part), resume=True, progress=False)
    a, _ = load_latest(full)
    b, _ = load_latest(part)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    la = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [(r["event"], r["task"], r.get("step"), r.get("loss")) for r in rs]
    assert strip(la) == strip(lb)  # same lines, no duplicates


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_and_shared_task_0_on_a_gpu(fake_fmnist, tmp_path):
    # checkpoints are loaded onto the training device; the generator states in them must go back to the CPU
    # (found on an H100: every resume and every train.init_from failed with "RNG state must be a ByteTensor")
    gpu = ["train.device=cuda", "classifier.enabled=true", "classifier.epochs=0.1", "classifier.replay_pool=16"]
    cfg = _cfg(fake_fmnist, *gpu)
    first = train(cfg, out=str(tmp_path / "a"), progress=False, stop_after=1)
    train(cfg, out=str(first), resume=True, progress=False)
    other = train(_cfg(fake_fmnist, *gpu, f"train.init_from={first}", "strategy.name=generative_replay"),
                  out=str(tmp_path / "b"), progress=False)
    assert [m["task"] for m in list_checkpoints(first)] == [0, 1]
    assert [m["task"] for m in list_checkpoints(other)] == [0, 1]
    a0, _ = load_checkpoint_file(first / "checkpoints" / "task_00.pt")
    b0, _ = load_checkpoint_file(other / "checkpoints" / "task_00.pt")
    for k in a0["model"]:
        assert torch.equal(a0["model"][k], b0["model"][k]), k


@pytest.mark.slow
def test_cli_tasks_stops_after_n_tasks_and_resume_continues_as_the_uninterrupted_run(fake_fmnist, tmp_path):
    # both runs in fresh processes with the same thread count (an in-process run would inherit whatever thread
    # count earlier tests left, and bf16 sums differ between thread counts)
    sets = sum((["--set", x] for x in smoke_overrides(fake_fmnist) + ["train.keep_checkpoints=5", "train.threads=1"]),
               [])
    full, part = tmp_path / "full", tmp_path / "part"
    base = [sys.executable, "-m", "cldiff", "train", "--config", str(SMOKE), "--no-progress", *sets]
    r = subprocess.run(base + ["--out", str(full)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cmd = base + ["--out", str(part)]
    r = subprocess.run(cmd + ["--tasks", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "stopped after task 1 of 2" in r.stdout and "--resume" in r.stdout
    assert [m["task"] for m in list_checkpoints(part)] == [0]
    events = [json.loads(x)["event"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert events.count("task_end") == 1 and events[-1] == "stopped" and "done" not in events
    # the stop is not part of the run's settings
    assert (part / "config.yaml").read_text() == (full / "config.yaml").read_text()
    r = subprocess.run(cmd + ["--tasks", "0", "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "at least 1" in r.stderr and "Traceback" not in r.stderr
    assert [m["task"] for m in list_checkpoints(part)] == [0]
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a, _ = load_latest(full)
    b, _ = load_latest(part)
    assert b["model"].keys() == a["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    events = [json.loads(x)["event"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert events.count("task_end") == 2 and events[-1] == "done"

def test_existing_run_needs_resume(fake_fmnist, tmp_path):
    cfg = _cfg(fake_fmnist, "data.num_tasks=1")
    train(cfg, out=str(tmp_path / "r"), progress=False)
    from cldiff.runfolder import RunError
    with pytest.raises(RunError, match="--resume"):
        train(cfg, out=str(tmp_path / "r"), progress=False)


@pytest.mark.parametrize("name", ["naive", "joint", "generative_replay"])
def test_other_core_strategies_run(fake_fmnist, tmp_path, name):
    out = train(_cfg(fake_fmnist, f"strategy={{name: {name}}}"), out=str(tmp_path / name), progress=False)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ends = [r for r in recs if r["event"] == "task_end"]
    replaying = name == "generative_replay"
    assert (ends[1]["teacher_image_forwards"] > 0) == replaying
    if name == "joint":
        assert ends[1]["classes"] == [2, 6, 1, 8]


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_shared_task0_gives_the_same_run_as_training_from_scratch(fake_fmnist, tmp_path):
    gd = train(_cfg(fake_fmnist), out=str(tmp_path / "gd"), progress=False)
    scratch = train(_cfg(fake_fmnist, "strategy={name: generative_replay}"), out=str(tmp_path / "gr"), progress=False)
    shared = train(_cfg(fake_fmnist, "strategy={name: generative_replay}", f"train.init_from={gd}"),
                   out=str(tmp_path / "gr_shared"), progress=False)
    a, _ = load_latest(scratch)
    b, mb = load_latest(shared)
    assert mb["task"] == 1
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    recs = [json.loads(x) for x in (shared / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "shared" for r in recs)
    # a run whose task 0 differs is refused
    from cldiff.runfolder import RunError
    with pytest.raises(RunError, match="train.lr"):
        train(_cfg(fake_fmnist, "train.lr=0.001", f"train.init_from={gd}"), out=str(tmp_path / "x"), progress=False)
    # settings that do not change the computation may differ (mid-task checkpoints, attention kernel, threads,
    # the evaluation's generation batch), but not the evaluation itself (its task-0 metrics are copied)
    train(_cfg(fake_fmnist, "strategy={name: generative_replay}", "train.checkpoint_every=3", "train.threads=1",
               "train.attention=sdpa", "eval.batch_size=3", f"train.init_from={gd}"), out=str(tmp_path / "y"),
          progress=False)
    with pytest.raises(RunError, match="'eval'"):
        train(_cfg(fake_fmnist, "eval.steps=3", f"train.init_from={gd}"), out=str(tmp_path / "v"), progress=False)
    # so may the later tasks' budget, when task 0 has its own (first_task_steps), but not task 0's
    gd2 = train(_cfg(fake_fmnist, "train.first_task_steps=4"), out=str(tmp_path / "gd2"), progress=False)
    train(_cfg(fake_fmnist, "train.first_task_steps=4", "train.steps_per_task=3", f"train.init_from={gd2}"),
          out=str(tmp_path / "z"), progress=False)
    with pytest.raises(RunError, match="task 0's budget"):
        train(_cfg(fake_fmnist, "train.first_task_steps=5", f"train.init_from={gd2}"), out=str(tmp_path / "w"),
              progress=False)


@pytest.mark.parametrize("name", ["generative_distillation", "lwf_distillation", "naive", "ewc"])
def test_micro_batches_give_the_same_step(name):
    """Slicing the student batch (train.micro_batches) changes memory, not the update."""
    import copy

    from cldiff.model import EpsModel, NoiseSchedule
    from cldiff.strategies import TaskContext, build_strategy
    from cldiff.train import train_step
    torch.manual_seed(0)
    model = EpsModel("tiny")
    schedule = NoiseSchedule()
    st = build_strategy({"name": name})
    if name == "ewc":
        class _Data:  # what EWC's end_task reads: the task's training images
            def train(self, classes):
                return torch.rand(16, 1, 32, 32) * 2 - 1, torch.zeros(16, dtype=torch.long)
        st = build_strategy({"name": name, "strength": 1e3})
        st.end_task(model, TaskContext(0, _Data(), [0, 1], schedule, torch.device("cpu")))
        with torch.no_grad():  # move away from the anchor so the penalty has a gradient
            for p in model.parameters():
                p.add_(0.01)
    elif st.uses_teacher:
        st.end_task(model, TaskContext(0, None, [], schedule, torch.device("cpu")))
    x0 = torch.rand(6, 1, 32, 32) * 2 - 1
    results, params = [], []
    for micro in (1, 3):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        r = train_step(m, opt, st, schedule, x0, 1, torch.Generator().manual_seed(5), contextlib.nullcontext,
                       0.0, micro_batches=micro)
        results.append(r)
        params.append([p.detach().clone() for p in m.parameters()])
    assert results[0]["student_images"] == results[1]["student_images"]
    for key in ("loss", "loss_real", "loss_replay"):
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-5, abs=1e-9), key
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert any(not torch.equal(a, p) for a, p in zip(params[0], model.parameters()))  # the step did move them


def test_resume_refuses_settings_that_change_the_computation_and_keeps_the_run(fake_fmnist, tmp_path):
    from cldiff.runfolder import RunError
    out = tmp_path / "r"
    train(_cfg(fake_fmnist, "data.num_tasks=1"), out=str(out), progress=False)
    saved = (out / "config.yaml").read_text()
    # A finished run too: resuming it with another budget must not pass for "already complete".
    with pytest.raises(RunError, match=r"train\.steps_per_task \(run: 6, yours: 9\)"):
        train(_cfg(fake_fmnist, "data.num_tasks=1", "train.steps_per_task=9"), out=str(out), resume=True,
              progress=False)
    with pytest.raises(RunError, match=r"eval\.n_samples"):
        train(_cfg(fake_fmnist, "data.num_tasks=1", "eval.n_samples=7"), out=str(out), resume=True, progress=False)
    assert (out / "config.yaml").read_text() == saved  # nothing rewritten by a refused resume
    # how it runs (threads, checkpointing, logging) may change
    train(_cfg(fake_fmnist, "data.num_tasks=1", "train.threads=1", "train.log_every=3"), out=str(out), resume=True,
          progress=False)


def test_a_resumed_run_keeps_its_evaluator_when_a_newer_one_is_cached(fake_fmnist, tmp_path, monkeypatch):
    # an evaluator trained later (another machine's, copied in) must not score a run's later tasks: FIDs of two
    # evaluators do not compare (docs/results/evaluator_portability/)
    import os
    import time
    from cldiff.evaluate import save_evaluator, train_evaluator
    monkeypatch.setenv("CLDIFF_CACHE", str(tmp_path / "cache"))

    def cached(seed, ahead):
        net, info = train_evaluator("synthetic", epochs=1, verbose=False, max_train=300, seed=seed)
        path = save_evaluator(net, {**info, "dataset": "fashion_mnist"})
        os.utime(path, (time.time() + ahead, time.time() + ahead))  # newest, whatever the clock's resolution
        return path.name.split("-")[-1][:-3]

    first = cached(1, 5)
    cfg = _cfg(fake_fmnist, "eval.enabled=true", "eval.n_samples=20", "eval.steps=2")
    run = train(cfg, out=str(tmp_path / "r"), progress=False, stop_after=1)
    newer = cached(2, 10)
    assert newer != first
    train(cfg, out=str(run), resume=True, progress=False)
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["task"] for e in evals] == [0, 1]
    assert [e["evaluator_sha256"] for e in evals] == [first, first]
    fresh = train(cfg, out=str(tmp_path / "fresh"), progress=False, stop_after=1)  # a new run: the newest
    assert [json.loads(x)["evaluator_sha256"] for x in (fresh / "metrics.jsonl").read_text().splitlines()
            if '"eval"' in x] == [newer]


def test_fused_adam_trains_as_the_default_adam_and_auto_follows_the_cpu(fake_fmnist, tmp_path, monkeypatch):
    """train.fused_adam: true steps with Adam's fused kernel (kept in the optimizer state, logged at the start):
    the same update as torch's default Adam up to float rounding; auto takes it on CPUs with AMX only; other
    values are refused."""
    from cldiff.config import ConfigError
    from cldiff.model import fused_adam_for
    states = {}
    for fused in ("false", "true"):
        cfg = _cfg(fake_fmnist, f"train.fused_adam={fused}", "train.precision=fp32", "eval.enabled=false",
                   "train.steps_per_task=3", "train.threads=1")
        run = train(cfg, out=str(tmp_path / fused), progress=False, stop_after=1)
        meta = list_checkpoints(run)[0]
        states[fused], _ = load_checkpoint_file(meta["path"], meta)
        start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        assert start["event"] == "start" and start["fused_adam"] is (fused == "true")
    assert states["true"]["optimizer"]["param_groups"][0]["fused"] is True
    assert not states["false"]["optimizer"]["param_groups"][0].get("fused")
    for fused in ("false", "true"):  # both took the task's 3 steps (Adam moves each weight by about lr a step)
        assert all(int(s["step"]) == 3 for s in states[fused]["optimizer"]["state"].values())
    for k, v in states["false"]["model"].items():
        torch.testing.assert_close(states["true"]["model"][k], v, rtol=1e-5, atol=1e-6)
    for amx, want in ((True, True), (False, False)):
        monkeypatch.setattr("cldiff.sysmem.cpu_features", lambda amx=amx: {"model": "x", "amx_bf16": amx,
                                                                          "avx512_bf16": True})
        assert fused_adam_for(torch.device("cpu"), "auto") is want
        assert fused_adam_for(torch.device("cpu"), True) is True and fused_adam_for(torch.device("cpu"), False) is False
    with pytest.raises(ConfigError, match=r"train\.fused_adam: must be true, false or auto, got 'maybe'"):
        _cfg(fake_fmnist, "train.fused_adam=maybe")
