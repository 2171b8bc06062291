import json
from pathlib import Path

import pytest
import torch
import yaml

from cldiff.classifier import ContinualClassifier, forgetting, kd_loss
from cldiff.config import ClassifierConfig, ConfigError, load_config
from cldiff.data import ContinualData
from cldiff.model import EpsModel, NoiseSchedule

from conftest import CONFIGS, child_pids, pid_alive, smoke_overrides


def test_kd_directions():
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 1.0, 0.5]])
    T = 2.0
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    assert kd_loss(s, t, T) == pytest.approx(float((pt * (pt.log() - ps.log())).sum()), rel=1e-5)
    assert kd_loss(s, t, T, "paper") == pytest.approx(float(-(ps * pt.log()).sum()), rel=1e-5)
    assert kd_loss(t, t, T) == pytest.approx(0.0, abs=1e-7)


def test_forgetting_from_the_accuracy_matrix():
    assert forgetting([[0.9]]) is None
    assert forgetting([[0.9], [0.5, 0.8]]) == pytest.approx(0.4)
    assert forgetting([[0.9], [0.7, 0.8], [0.6, 0.8, 0.9]]) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.8)) / 2)


def test_replay_uses_frozen_copies_and_as_many_replay_as_real(monkeypatch):
    data = ContinualData("synthetic", [(0, 1), (2, 3)])
    ccfg = ClassifierConfig(enabled=True, epochs=0.1, batch_size=16, replay_steps=2)
    clf = ContinualClassifier(ccfg, 1, 10, torch.device("cpu"), seed=0)
    r0 = clf.train_task(0, data, None, NoiseSchedule(), __import__("contextlib").nullcontext)
    assert len(r0["acc"]) == 1 and r0["forgetting"] is None
    prev_state = {k: v.clone() for k, v in clf.prev.state_dict().items()}
    assert all(not p.requires_grad for p in clf.prev.parameters())
    gen_model = EpsModel("tiny").eval()
    calls = []
    import cldiff.model as model_mod
    orig = model_mod.ddim_sample

    def spy(model, schedule, noise, steps, *a, **k):
        calls.append((model, len(noise), steps))
        return orig(model, schedule, noise, steps, *a, **k)
    monkeypatch.setattr(model_mod, "ddim_sample", spy)
    generated, soft_inputs = [], []
    orig_spy = model_mod.ddim_sample

    def recording_spy(*a, **k):
        out = orig_spy(*a, **k)
        generated.append(out)
        return out
    monkeypatch.setattr(model_mod, "ddim_sample", recording_spy)

    class Recorder(torch.nn.Module):  # stands in for the frozen previous classifier and records its inputs
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            soft_inputs.append(x)
            return self.inner(x)
    rec = clf.prev = Recorder(clf.prev)
    r1 = clf.train_task(1, data, gen_model, NoiseSchedule(), __import__("contextlib").nullcontext)
    assert calls and all(m is gen_model and n == 16 and s == 2 for m, n, s in calls)  # replay count = real batch
    # soft targets: the frozen previous classifier, evaluated on exactly the replayed images
    assert len(soft_inputs) == len(generated) and all(a is b for a, b in zip(soft_inputs, generated))
    for k, v in rec.inner.state_dict().items():  # and it was not trained
        assert torch.equal(prev_state[k], v), k
    assert len(r1["acc"]) == 2 and r1["forgetting"] is not None
    # the soft-target teacher during task 1 was the end-of-task-0 classifier, unchanged by task 1
    assert any(not torch.equal(prev_state[k], v) for k, v in clf.net.state_dict().items())


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_run_with_classifier_logs_accuracy_matrix(fake_fmnist, tmp_path):
    from cldiff.train import train
    cfg = load_config(CONFIGS / "split_fmnist" / "smoke.yaml", smoke_overrides(fake_fmnist) + [
        "classifier.enabled=true", "classifier.epochs=0.5", "classifier.batch_size=16", "classifier.replay_steps=2"])
    out = train(cfg, out=str(tmp_path / "r"), progress=False)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ce = [r for r in recs if r["event"] == "classifier_eval"]
    assert [len(r["acc"]) for r in ce] == [1, 2]
    order = [r["event"] for r in recs if r.get("task") == 1 and r["event"] in ("classifier_eval", "train")]
    assert order[0] == "classifier_eval"  # the classifier trains first within a task


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_sweep_expands_grid_and_skips_finished_runs(fake_fmnist, tmp_path, monkeypatch):
    from cldiff import sweep
    sw = tmp_path / "s.yaml"
    sw.write_text(yaml.safe_dump({
        "base": str(CONFIGS / "split_fmnist" / "smoke.yaml"), "out": str(tmp_path / "out"),
        "set": {"data.root": str(fake_fmnist), "data.verify": False, "train.steps_per_task": 2},
        "grid": {"seed": [42, 69], "strategy": [{"name": "naive"},
                                                  {"name": "generative_distillation", "lam": [0.5, 1.0]}]}}))
    runs, _ = sweep.plan(sw)
    assert len(runs) == 6 and len({r.out for r in runs}) == 6
    assert {r.cfg.strategy.get("lam") for r in runs} == {None, 0.5, 1.0}
    sweep.run_sweep(sw, progress=False)
    assert (tmp_path / "out" / "report" / "report.md").exists()
    # the second run of each seed reused the first one's task 0
    shared = [r for r in runs if '"shared"' in (r.out / "metrics.jsonl").read_text()]
    assert len(shared) == 4
    calls = []
    monkeypatch.setattr("cldiff.train.train", lambda *a, **k: calls.append(1))
    sweep.run_sweep(sw, progress=False)
    assert calls == []  # everything finished: nothing rerun
    # the sweep's own `set` is not in the folder names: changed, the finished runs are not this sweep's results
    report = (tmp_path / "out" / "report" / "report.md").stat().st_mtime_ns
    spec = yaml.safe_load(sw.read_text())
    spec["set"]["train.steps_per_task"] = 3
    sw.write_text(yaml.safe_dump(spec))
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=r"holds a run made with other settings \(train.steps_per_task "
                                              r"\(run: 2, yours: 3\)\)") as e:
            sweep.run_sweep(sw, dry_run=dry_run, progress=False)
        assert len(e.value.problems) == 6  # every folder named, all at once
    assert calls == [] and (tmp_path / "out" / "report" / "report.md").stat().st_mtime_ns == report  # not rewritten


@pytest.mark.slow  # tens of seconds: two runs, twice
def test_parallel_sweep_gives_the_sequential_results(fake_fmnist, tmp_path):
    """`cldiff sweep --jobs 2`: the same runs as one after the other, metric for metric; the seed's later runs
    start from the first run's task 0 once it exists; each run's output in its own log."""
    import json

    from cldiff import sweep

    def write(name):
        sw = tmp_path / f"{name}.yaml"
        sw.write_text(yaml.safe_dump({
            "base": str(CONFIGS / "split_fmnist" / "smoke.yaml"), "out": str(tmp_path / name),
            "set": {"data.root": str(fake_fmnist), "data.verify": False, "train.steps_per_task": 2,
                    "train.threads": 1},
            "grid": {"seed": [42], "strategy": [{"name": "naive"}, {"name": "generative_distillation"}]}}))
        return sw

    def losses(run_dir):
        return [(r["task"], r["step"], r["loss"], r["loss_replay"]) for r in map(json.loads, (
            run_dir / "metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]

    def weights(run_dir):
        from cldiff.checkpoint import list_checkpoints, load_checkpoint_file
        last = list_checkpoints(run_dir)[-1]
        return load_checkpoint_file(Path(last["path"]), last)[0]["model"]

    seq, par = write("seq"), write("par")
    sweep.run_sweep(seq, progress=False)
    sweep.run_sweep(par, progress=False, jobs=2)
    runs_seq, _ = sweep.plan(seq)
    runs_par, _ = sweep.plan(par)
    assert [r.out.name for r in runs_seq] == [r.out.name for r in runs_par]
    for a, b in zip(runs_seq, runs_par):
        assert losses(a.out) and losses(a.out) == losses(b.out), a.out.name
        wa, wb = weights(a.out), weights(b.out)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), a.out.name
        assert (b.out.parent / f"{b.out.name}.log").exists()
    first, *later = runs_par
    assert '"shared"' not in (first.out / "metrics.jsonl").read_text()
    for r in later:  # started from the first run's task 0, not trained again
        shared = [json.loads(x) for x in (r.out / "metrics.jsonl").read_text().splitlines() if '"shared"' in x]
        assert [s["from"] for s in shared] == [str(first.out)]
    assert (tmp_path / "par" / "report" / "report.md").exists()
    with pytest.raises(Exception, match="--jobs must be at least 1"):
        sweep.run_sweep(par, progress=False, jobs=0)


def test_interrupted_run_stops_a_sequential_sweep(fake_fmnist, tmp_path, monkeypatch):
    """Ctrl-C in a sweep: the run writes its checkpoint and the sweep stops; it does not go on to the next run."""
    from cldiff import sweep
    from cldiff.train import Interrupted

    sw = tmp_path / "sw.yaml"
    sw.write_text(yaml.safe_dump({
        "base": str(CONFIGS / "split_fmnist" / "smoke.yaml"), "out": str(tmp_path / "out"),
        "set": {"data.root": str(fake_fmnist), "data.verify": False},
        "grid": {"seed": [42, 69], "strategy": [{"name": "naive"}]}}))
    calls = []

    def interrupted(cfg, **kw):
        calls.append(cfg.seed)
        raise Interrupted("interrupted at task 0 step 3; checkpoint written")

    monkeypatch.setattr("cldiff.train.train", interrupted)
    with pytest.raises(Interrupted, match="sweep interrupted"):
        sweep.run_sweep(sw, progress=False)
    assert calls == [42]


@pytest.mark.slow  # about half a minute: two runs in their own processes, interrupted
@pytest.mark.parametrize("target", ["runs", "SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_run_stops_a_parallel_sweep(fake_fmnist, tmp_path, target):
    """A parallel sweep, started as `cmd &` in a script would be (SIGINT ignored), stops cleanly however it is
    signalled: a SIGINT to its runs alone ("runs"); a SIGINT or SIGTERM to its parent process alone, which passes
    it on to the runs (before, the runs went on training, and a SIGTERM left them behind the dead parent); or a
    SIGKILL of the parent, after which the runs stop on their own (Linux). Every run writes a checkpoint inside its
    task and ends, the sweep starts no further run, and its parent exits with 130 (but for SIGKILL)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from cldiff.checkpoint import list_checkpoints

    sw = tmp_path / "sw.yaml"
    out = tmp_path / "out"
    sw.write_text(yaml.safe_dump({
        "base": str(CONFIGS / "split_fmnist" / "smoke.yaml"), "out": str(out),
        "set": {"data.root": str(fake_fmnist), "data.verify": False, "train.steps_per_task": 3000,
                "train.threads": 1, "train.log_every": 1},
        "grid": {"seed": [42, 69, 1714], "strategy": [{"name": "naive"}]}}))
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  (as `cmd &` in a script)
    p = subprocess.Popen([sys.executable, "-m", "cldiff", "sweep", str(sw), "--jobs", "2"], preexec_fn=ignore_sigint,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    runs = []
    try:
        t0 = time.time()
        logs = lambda: [m for m in out.glob("*/metrics.jsonl") if '"train"' in m.read_text()]  # noqa: E731
        while len(logs()) < 2:
            assert p.poll() is None and time.time() - t0 < 240, "the runs ended before they could be interrupted"
            time.sleep(0.2)
        runs = [c for c in child_pids(p.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(runs) == 2
        if target == "runs":
            for pid in runs:
                os.kill(pid, signal.SIGINT)
        else:
            os.kill(p.pid, getattr(signal, target))
        _, err = p.communicate(timeout=240)
        while any(map(pid_alive, runs)):
            assert time.time() - t0 < 300, "the runs went on after their sweep was killed"
            time.sleep(0.2)
    finally:  # a failing test leaves no run behind
        for pid in [p.pid, *runs]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()
    if target == "SIGKILL":
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == 130, err[-2000:]
        assert "sweep interrupted" in err
    folders = sorted(d for d in out.iterdir() if d.is_dir() and d.name != "report")
    assert len(folders) == 2  # the third run was never started
    for d in folders:
        assert any(not m.get("complete", True) for m in list_checkpoints(d)), f"{d}: no mid-task checkpoint"
        assert "interrupted at task 0" in Path(f"{d}.log").read_text()  # one SIGINT each: a checkpoint, not a quit


def test_sweep_starts_new_runs_from_a_task_0_that_exists_whatever_the_order(fake_fmnist, tmp_path):
    """A second sweep file in the same folder lists a new run before the finished one: the new run starts from
    the finished run's task 0 instead of training its own."""
    import json

    from cldiff import sweep

    def write(name, strategies, **extra):
        sw = tmp_path / f"{name}.yaml"
        sw.write_text(yaml.safe_dump({
            "base": str(CONFIGS / "split_fmnist" / "smoke.yaml"), "out": str(tmp_path / "out"),
            "set": {"data.root": str(fake_fmnist), "data.verify": False, "train.steps_per_task": 2,
                    "train.threads": 1, **extra},
            "grid": {"seed": [42], "strategy": strategies}}))
        return sw

    gd = {"name": "generative_distillation"}
    first = write("first", [gd])
    sweep.run_sweep(first, progress=False)
    (done,), _ = sweep.plan(first)
    later = write("later", [{"name": "naive"}, gd])
    runs, _ = sweep.plan(later)
    assert sweep._task0_sources(runs, True)[42].out == done.out  # not the first run in the file
    assert sweep._task0_sources(runs, False) == {}
    # a file that does not plan the finished run at all still finds it in the folder, if its task 0 is identical
    # (later tasks' budgets may differ); one whose task 0 would differ (another model) trains its own
    alone, _ = sweep.plan(write("alone", [{"name": "naive", "set": {"train.steps_per_task": 3}}],
                                **{"train.first_task_steps": 2}))
    assert alone[0].out != runs[0].out and not alone[0].out.exists()
    assert sweep._task0_sources(alone, True, tmp_path / "out")[42].out == done.out
    assert sweep._task0_sources(alone, True)[42] is alone[0]  # without the folder: as before
    sweep.run_sweep(tmp_path / "alone.yaml", progress=False)
    shared = [json.loads(x) for x in (alone[0].out / "metrics.jsonl").read_text().splitlines() if '"shared"' in x]
    assert [s["from"] for s in shared] == [str(done.out)]
    other, _ = sweep.plan(write("other", [{"name": "naive"}], **{"train.lr": 5e-4}))
    assert sweep._task0_sources(other, True, tmp_path / "out")[42] is other[0]
    sweep.run_sweep(later, progress=False)
    naive = runs[0].out
    shared = [json.loads(x) for x in (naive / "metrics.jsonl").read_text().splitlines() if '"shared"' in x]
    assert [s["from"] for s in shared] == [str(done.out)]
