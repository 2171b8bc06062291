"""`cldiff classify`: the classifier protocol on a finished run, replaying from its end-of-task checkpoints."""
import json
import subprocess
import sys

import pytest
import torch

from cldiff.classify import classify_run
from cldiff.checkpoint import CheckpointError
from cldiff.config import ConfigError, load_config
from cldiff.train import train

from conftest import CONFIGS, smoke_overrides

CLF = ["classifier.epochs=0.5", "classifier.batch_size=16", "classifier.replay_steps=2"]


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A finished 3-task GD smoke run (tiny UNet, synthetic IDX files)."""
    from conftest import write_fake_fmnist
    root = write_fake_fmnist(tmp_path_factory.mktemp("fm"))
    cfg = load_config(CONFIGS / "split_fmnist" / "smoke.yaml", smoke_overrides(root) + ["data.num_tasks=3",
                                                                                        "train.steps_per_task=3"])
    return train(cfg, out=str(tmp_path_factory.mktemp("runs") / "gd"), progress=False)


def _evals(run):
    return [json.loads(x) for x in (run / "classifier.jsonl").read_text().splitlines()]


def test_classify_replays_from_the_previous_tasks_checkpoint(run3, monkeypatch):
    import cldiff.classifier as C
    import cldiff.runfolder as T
    loaded = []
    orig_load = T.load_model

    def spy_load(path, device="cpu"):
        loaded.append(path)
        return orig_load(path, device)
    monkeypatch.setattr(T, "load_model", spy_load)
    used = []
    orig_train = C.ContinualClassifier.train_task

    def spy_train(self, k, data, gen_model, *a):
        used.append((k, None if gen_model is None else {n: p.clone() for n, p in gen_model.state_dict().items()}))
        return orig_train(self, k, data, gen_model, *a)
    monkeypatch.setattr(C.ContinualClassifier, "train_task", spy_train)
    out = classify_run(run3, CLF + ["classifier.replay_pool=32"], log=lambda m: None)
    recs = _evals(run3)
    assert recs[0]["event"] == "classifier_start" and recs[0]["posthoc"] and recs[0]["mode"] == "generative"
    ev = [r for r in recs if r["event"] == "classifier_eval"]
    assert [r["task"] for r in ev] == [0, 1, 2] and [len(r["acc"]) for r in ev] == [1, 2, 3]
    assert ev[0]["forgetting"] is None and ev[2]["forgetting"] is not None
    # task k replays from the end-of-task k-1 checkpoint, exactly as it was saved
    assert used[0][1] is None
    assert [p.endswith(f"task_{k:02d}.pt") for k, p in zip((0, 1), loaded)] == [True, True]
    for k in (1, 2):
        saved = torch.load(run3 / "checkpoints" / f"task_{k - 1:02d}.pt", weights_only=True)["model"]
        assert all(torch.equal(saved[n], v) for n, v in used[k][1].items())
    assert out == run3 / "classifier.jsonl"


def test_classify_resumes_with_the_next_task_and_matches_an_uninterrupted_run(run3):
    classify_run(run3, CLF, restart=True, log=lambda m: None)
    full = [r["acc"] for r in _evals(run3) if r["event"] == "classifier_eval"]
    w_full = torch.load(run3 / "classifier_state.pt", weights_only=True)["classifier"]["net"]

    class Stop(Exception):
        pass

    def stop_after_first(msg):
        raise Stop(msg)
    with pytest.raises(Stop):
        classify_run(run3, CLF, restart=True, log=stop_after_first)  # dies right after task 0 is saved
    assert [r["task"] for r in _evals(run3) if r["event"] == "classifier_eval"] == [0]
    msgs = []
    classify_run(run3, CLF, log=msgs.append)
    assert msgs[0].startswith("task 1:")  # continued, did not redo task 0
    again = [r["acc"] for r in _evals(run3) if r["event"] == "classifier_eval"]
    assert again == full
    w = torch.load(run3 / "classifier_state.pt", weights_only=True)["classifier"]["net"]
    assert all(torch.equal(w[n], w_full[n]) for n in w)
    # the report reads classifier.jsonl when metrics.jsonl has no in-run classifier
    from cldiff.report import make_report
    md = (make_report([run3], run3.parent / "rep") / "report.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| generative_distillation") and "| generative |" in ln)
    assert f"| 3 | 42 | {sum(full[-1]) / 3:.3f} |" in row  # after task 3, seed 42
    # nothing left: says so, changes nothing
    classify_run(run3, CLF, log=msgs.append)
    assert "already" in msgs[-1] and [r["acc"] for r in _evals(run3) if r["event"] == "classifier_eval"] == full
    # other settings on top of an existing classifier: refused, with the way out
    with pytest.raises(ValueError, match="--restart"):
        classify_run(run3, CLF[:-1] + ["classifier.replay_steps=3"], log=lambda m: None)


def test_classify_joint_mode_uses_no_generator_and_sees_all_classes(run3, monkeypatch):
    import cldiff.classifier as C
    import cldiff.model as M
    calls = []
    monkeypatch.setattr(C, "generate", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(M, "ddim_sample", lambda *a, **k: calls.append(a))
    classify_run(run3, CLF + ["classifier.mode=joint", "classifier.replay_pool=32"], restart=True, log=lambda m: None)
    ev = [r for r in _evals(run3) if r["event"] == "classifier_eval"]
    assert [r["mode"] for r in ev] == ["joint"] * 3 and not calls
    n0 = ev[0]["iters"]
    assert ev[2]["iters"] == pytest.approx(3 * n0, abs=1)  # 3 tasks of data in task 2


def test_classify_real_replay_distills_on_real_images_of_earlier_tasks(run3, monkeypatch):
    import cldiff.classifier as C
    import cldiff.model as M
    from cldiff.data import ContinualData
    calls, seen = [], []
    monkeypatch.setattr(C, "generate", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(M, "ddim_sample", lambda *a, **k: calls.append(a))
    orig = C.ContinualClassifier.train_task

    def spy(self, k, *a):
        if self.prev is not None:  # record what the frozen teacher classifier is shown
            inner = self.prev
            self.prev = lambda x: (seen.append((k, x.clone())), inner(x))[1]
        return orig(self, k, *a)
    monkeypatch.setattr(C.ContinualClassifier, "train_task", spy)
    classify_run(run3, CLF + ["classifier.mode=real_replay", "classifier.replay_pool=24"], restart=True,
                 log=lambda m: None)
    assert not calls and {k for k, _ in seen} == {1, 2}
    cfg = load_config(run3 / "config.yaml")
    data = ContinualData.from_config(cfg)
    for k, xr in seen:
        earlier, _ = data.train([c for t in data.tasks[:k] for c in t])
        later, _ = data.train([c for t in data.tasks[k:] for c in t])
        flat = earlier.flatten(1)
        assert all((flat == row).all(1).any() for row in xr.flatten(1))  # every replayed image: an earlier task's
        assert not any((later.flatten(1) == row).all(1).any() for row in xr.flatten(1))


def test_classify_tasks_goes_one_task_past_the_last_checkpoint_and_matches_the_full_run(run3, tmp_path):
    import shutil
    classify_run(run3, CLF, restart=True, log=lambda m: None)
    full = [r["acc"] for r in _evals(run3) if r["event"] == "classifier_eval"]
    first = tmp_path / "first"  # the same run, stopped after task 0
    shutil.copytree(run3, first)
    for f in (first / "classifier.jsonl", first / "classifier_state.pt", *(first / "checkpoints").glob("task_0[12]*")):
        f.unlink()
    classify_run(first, CLF, log=lambda m: None)  # default: the finished tasks only
    assert [r["acc"] for r in _evals(first) if r["event"] == "classifier_eval"] == full[:1]
    msgs = []
    classify_run(first, CLF, log=msgs.append, tasks=2)  # task 1 replays from task 0's checkpoint: continues
    assert msgs[0].startswith("task 1:")
    assert [r["acc"] for r in _evals(first) if r["event"] == "classifier_eval"] == full[:2]
    with pytest.raises(ValueError, match=r"--tasks 3: must be between 1 and 2 .*checkpoint k-1"):
        classify_run(first, CLF, log=lambda m: None, tasks=3)  # task 2 would need task 1's model
    # modes without a generator need only the data: every task of the run
    classify_run(first, CLF + ["classifier.mode=joint"], restart=True, log=lambda m: None, tasks=3)
    assert [r["task"] for r in _evals(first) if r["event"] == "classifier_eval"] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"--tasks 4: must be between 1 and 3"):
        classify_run(first, CLF + ["classifier.mode=joint"], log=lambda m: None, tasks=4)


@pytest.mark.slow
def test_classify_refuses_run_settings_and_pruned_checkpoints(run3, tmp_path):
    with pytest.raises(ConfigError, match="only classifier"):
        classify_run(run3, ["train.lr=0.1"])
    import shutil
    pruned = tmp_path / "pruned"
    shutil.copytree(run3, pruned)
    for f in (pruned / "checkpoints").glob("task_01.*"):
        f.unlink()
    # task 1's checkpoint gone: task 2's replay generator is missing (joint mode needs none)
    with pytest.raises(CheckpointError, match=r"tasks \[1\] were pruned"):
        classify_run(pruned, CLF, restart=True, log=lambda m: None)
    classify_run(pruned, CLF + ["classifier.mode=joint"], restart=True, log=lambda m: None)
    assert [r["task"] for r in _evals(pruned) if r["event"] == "classifier_eval"] == [0, 1, 2]
    for f in (pruned / "checkpoints").glob("*"):
        f.unlink()
    r = subprocess.run([sys.executable, "-m", "cldiff", "classify", str(pruned), "--restart"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no end-of-task checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "cldiff", "classify", str(run3), "--set", "seed=1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "only classifier" in r.stderr and "Traceback" not in r.stderr


def test_classifier_modes_are_objects_the_config_knows():
    from cldiff.classifier import MODES
    from cldiff.config import ConfigError, load_config
    from conftest import CONFIGS
    tasks = [(2, 6), (1, 8), (4, 5)]
    assert MODES["joint"].classes(2, tasks) == [2, 6, 1, 8, 4, 5] and MODES["naive"].classes(2, tasks) == [4, 5]
    assert [m for m in MODES if MODES[m].uses_generator] == ["generative"]
    assert not MODES["generative"].replays(1, None) and MODES["generative"].replays(1, object())
    assert MODES["real_replay"].replays(1, None) and not MODES["naive"].replays(3, object())
    for name in MODES:  # every mode loads; an unknown one is refused, naming the allowed ones
        load_config(CONFIGS / "split_fmnist" / "smoke.yaml", [f"classifier.mode={name}"])
    with pytest.raises(ConfigError, match="classifier.mode"):
        load_config(CONFIGS / "split_fmnist" / "smoke.yaml", ["classifier.mode=hybrid"])
