"""Class-conditional models (model.conditional): labels, guidance, labelled replay, per-class metrics."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cldiff.config import ConfigError, load_config
from cldiff.data import ContinualData
from cldiff.model import NULL_LABEL, EpsModel, NoiseSchedule, eps_of, predict_eps
from cldiff.strategies import TaskContext, build_strategy
from cldiff.train import train

from conftest import CONFIGS, smoke_overrides, step_context

SMOKE = CONFIGS / "split_fmnist" / "smoke.yaml"


@pytest.fixture(scope="module")
def cmodel():
    torch.manual_seed(0)
    m = EpsModel("tiny", num_classes=10).eval()
    with torch.no_grad():  # a trained-looking label embedding (diffusers initialises it like any embedding)
        m.unet.class_embedding.weight.normal_(0, 1.0)
    return m


def _xt(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 1000, (n,), generator=g)


def test_the_label_reaches_the_unet(cmodel):
    x, t = _xt()
    with torch.no_grad():
        a = cmodel(x, t, torch.full((6,), 3))
        b = cmodel(x, t, torch.full((6,), 5))
        none = cmodel(x, t)
        null = cmodel(x, t, torch.full((6,), NULL_LABEL))
    assert (a - b).abs().mean() > 1e-3  # another label, another prediction
    assert torch.equal(none, null)  # no label at all is the "no label" embedding
    with pytest.raises(ValueError, match="unconditional"):
        EpsModel("tiny")(x, t, torch.zeros(6, dtype=torch.long))


def test_a_new_conditional_model_predicts_the_same_for_every_label():
    """The label embedding starts at zero: before training, labels change nothing (they are learnt from there)."""
    torch.manual_seed(0)
    m = EpsModel("tiny", num_classes=10).eval()
    x, t = _xt()
    with torch.no_grad():
        ref = m(x, t)
        for c in (0, 4, 9):
            assert torch.equal(m(x, t, torch.full((6,), c)), ref)


def test_unconditional_model_is_built_as_before():
    """The conditional option adds the label embedding and nothing else; unconditional weights are unchanged."""
    torch.manual_seed(0)
    plain = EpsModel("tiny").state_dict()
    from diffusers import UNet2DModel
    from cldiff.model import PRESETS
    p = PRESETS["tiny"]
    torch.manual_seed(0)
    direct = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, layers_per_block=1,
                         block_out_channels=p.block_out_channels, down_block_types=p.down_block_types,
                         up_block_types=p.up_block_types, norm_num_groups=p.norm_num_groups).state_dict()
    assert list(plain) == [f"unet.{k}" for k in direct]
    assert all(torch.equal(plain[f"unet.{k}"], v) for k, v in direct.items())
    cond = EpsModel("tiny", num_classes=10).state_dict()
    assert set(cond) - set(plain) == {"unet.class_embedding.weight"}
    assert cond["unet.class_embedding.weight"].shape[0] == 11  # ten classes and "no label"


def test_guidance_one_is_the_conditional_prediction_and_the_scale_mixes_linearly(cmodel):
    x, t = _xt()
    y = torch.tensor([0, 1, 2, 3, NULL_LABEL, 9])
    with torch.no_grad():
        cond, uncond = cmodel(x, t, y), cmodel(x, t)
        assert torch.equal(eps_of(cmodel, x, t, y, 1.0), cond)
        g3 = eps_of(cmodel, x, t, y, 3.0)
        g0 = eps_of(cmodel, x, t, y, 0.0)
    torch.testing.assert_close(g3, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g0, uncond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g3[4], uncond[4], atol=1e-5, rtol=1e-5)  # a NULL_LABEL row stays unconditional


class _Data:
    """The part of ContinualData a teacher strategy reads at a task's end."""

    def __init__(self, counts):  # class -> number of training images
        self.counts = counts
        self.tasks = [tuple(counts)]

    def seen_classes(self, k):
        return list(self.counts)

    def train(self, classes):
        y = torch.cat([torch.full((self.counts[c],), c) for c in classes])
        return torch.zeros(len(y), 1, 32, 32), y


def _conditional_teacher(name, cmodel, counts, **kw):
    st = build_strategy({"name": name, **kw})
    st.end_task(cmodel, TaskContext(0, _Data(counts), list(counts), NoiseSchedule(), torch.device("cpu")))
    return st


def _cctx(b=12, seed=0, cond_drop=0.0):
    ctx = step_context(k=1, b=b, seed=seed)
    return dataclasses.replace(ctx, y=torch.full((b,), 7), cond_drop=cond_drop)


def test_replay_labels_are_balanced_over_the_seen_classes(cmodel):
    st = _conditional_teacher("generative_replay", cmodel, {1: 50, 4: 50, 6: 50, 8: 50, 9: 50}, teacher_steps=1)
    for seed in range(4):
        r = st.replay(_cctx(b=12, seed=seed))
        counts = torch.bincount(r.y, minlength=10)
        assert set(r.y.tolist()) == {1, 4, 6, 8, 9}
        assert counts[[1, 4, 6, 8, 9]].max() - counts[[1, 4, 6, 8, 9]].min() <= 1  # 12 over 5: 2 or 3 each


def test_proportional_replay_labels_follow_the_real_class_sizes(cmodel):
    st = _conditional_teacher("generative_replay", cmodel, {2: 300, 5: 100}, teacher_steps=1,
                              replay_labels="proportional")
    ys = torch.cat([st.teacher_labels(_cctx(b=200, seed=s), 200) for s in range(5)])
    share = (ys == 2).float().mean().item()
    assert set(ys.tolist()) == {2, 5} and 0.70 < share < 0.80  # 3:1 -> 0.75 (1,000 draws: sd 0.014)


def test_gd_target_is_the_teacher_prediction_with_the_same_label(cmodel):
    st = _conditional_teacher("generative_distillation", cmodel, {0: 10, 3: 10, 5: 10}, teacher_steps=2,
                              teacher_guidance=2.0)
    r = st.replay(_cctx(b=16, cond_drop=0.5))
    assert (r.y == NULL_LABEL).any() and (r.y >= 0).any()  # some labels dropped, as the student trains
    assert torch.equal(r.target, predict_eps(st.teacher, r.x, r.t, y=r.y))
    # with guidance the generation costs two forwards per DDIM step, plus the target's one
    assert r.teacher_images == (2 * 2 + 1) * 16


def test_lwf_on_a_conditional_model_distils_the_unconditional_prediction(cmodel):
    st = _conditional_teacher("lwf_distillation", cmodel, {0: 10, 3: 10})
    ctx = _cctx(b=6)
    r = st.replay(ctx)
    assert torch.equal(r.target, predict_eps(st.teacher, ctx.x_t, ctx.t))


def test_conditional_config_is_refused_by_strategies_without_it():
    with pytest.raises(ConfigError, match="'ewc' does not support class-conditional models"):
        load_config(SMOKE, ["model.conditional=true", "strategy={name: ewc}"])
    with pytest.raises(ConfigError, match="model.cond_drop"):
        load_config(SMOKE, ["model.conditional=true", "model.cond_drop=1.5"])
    with pytest.raises(ConfigError, match="replay_labels"):
        load_config(SMOKE, ["model.conditional=true", "strategy.replay_labels=uniform"])


def test_per_class_fid_is_small_for_the_right_class_and_large_for_another(fake_fmnist, synthetic_evaluator):
    from cldiff.evaluate import score_samples

    data = ContinualData("fashion_mnist", [(0, 1)], str(fake_fmnist), verify=False)
    x0, _ = data.train([0])
    x1, _ = data.train([1])
    ev = dataclasses.replace(synthetic_evaluator, dataset="fashion_mnist")
    n = 40
    right = score_samples(torch.cat([x0[:n], x1[:n]]), ev, "fashion_mnist", [0, 1], data=data,
                          labels=torch.tensor([0] * n + [1] * n))
    swapped = score_samples(torch.cat([x1[:n], x0[:n]]), ev, "fashion_mnist", [0, 1], data=data,
                            labels=torch.tensor([0] * n + [1] * n))
    for c in ("0", "1"):
        assert right["class_fid"][c] * 5 < swapped["class_fid"][c]
    assert right["label_acc"] > 0.9 and swapped["label_acc"] < 0.1
    # per class: class 0's samples right and class 1's swapped gives each class its own share
    half = score_samples(torch.cat([x0[:n], x0[:n]]), ev, "fashion_mnist", [0, 1], data=data,
                         labels=torch.tensor([0] * n + [1] * n))
    assert half["label_acc_class"]["0"] > 0.9 and half["label_acc_class"]["1"] < 0.1
    assert half["label_acc"] == pytest.approx(np.mean(list(half["label_acc_class"].values())))
    assert right["classes_missing"] == 0
    # an unconditional model's samples are grouped by the evaluator's predicted class; a class with fewer
    # than MIN_CLASS_SAMPLES samples is missing, not scored
    only0 = score_samples(x0[:n], ev, "fashion_mnist", [0, 1], data=data)
    assert only0["class_source"] == "predicted" and only0["classes_missing"] == 1
    assert only0["class_fid"]["1"] is None and only0["class_fid_mean"] == pytest.approx(only0["class_fid"]["0"])
    assert "label_acc" not in only0 and "label_acc_class" not in only0
    assert "class_fid_pred" not in only0
    # a conditional model's samples grouped by predicted class as well: the swapped labels change the per-label
    # figures but not the per-prediction ones, which equal the unconditional grouping of the same images
    unlabelled = score_samples(torch.cat([x1[:n], x0[:n]]), ev, "fashion_mnist", [0, 1], data=data)
    assert swapped["class_fid_pred"] == pytest.approx(unlabelled["class_fid"])
    assert swapped["class_fid_pred_mean"] == pytest.approx(unlabelled["class_fid_mean"])
    assert swapped["class_fid_pred_mean"] * 5 < swapped["class_fid_mean"]


def _cond_run(fake_fmnist, extra=()):
    return load_config(SMOKE, smoke_overrides(fake_fmnist) + [
        "model.conditional=true", "train.threads=1", "eval.enabled=true", "eval.n_samples=40", "eval.steps=2",
        "eval.guidance=2.0", "train.grid_samples=8", *extra])


def test_conditional_run_evaluates_balanced_classes_and_draws_a_row_per_class(fake_fmnist, tmp_path,
                                                                            synthetic_evaluator, monkeypatch,
                                                                            capsys):
    from PIL import Image

    import cldiff.evaluate
    from cldiff.cli import main
    ev = dataclasses.replace(synthetic_evaluator, dataset="fashion_mnist")
    run = train(_cond_run(fake_fmnist), out=str(tmp_path / "c"), progress=False, evaluator=ev)
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["seen_classes"] for e in evals] == [[2, 6], [1, 2, 6, 8]]
    assert all(e["class_source"] == "label" and 0 <= e["label_acc"] <= 1 for e in evals)
    assert evals[1]["classes_missing"] == 0 and set(evals[1]["class_fid"]) == {"1", "2", "6", "8"}
    assert set(evals[1]["label_acc_class"]) == {"1", "2", "6", "8"}  # 10 samples asked for each class
    assert evals[1]["label_acc"] == pytest.approx(np.mean(list(evals[1]["label_acc_class"].values())))
    w, h = Image.open(run / "samples" / "task_01.png").size
    assert (w, h) == (2 + 2 * 34, 2 + 4 * 34)  # 8 grid samples over 4 classes: 4 rows of 2

    # `cldiff evaluate --guidance`: the run's own scale (2) recomputes its figures, another scale changes them
    monkeypatch.setattr(cldiff.evaluate, "get_evaluator", lambda *a, **k: ev)

    def evaluate(*args):
        capsys.readouterr()
        rc = main(["evaluate", str(run), "--task", "1", *args])
        o = capsys.readouterr()
        return rc, (json.loads(o.out.splitlines()[-1]) if rc == 0 else o.err)

    rc, own = evaluate("--guidance", "2")
    k = ev.fid_key
    assert rc == 0 and own[k] == pytest.approx(evals[1][k], rel=1e-6) and own["label_acc"] == evals[1]["label_acc"]
    rc, plain = evaluate("--guidance", "1")
    assert rc == 0 and plain[k] != pytest.approx(own[k], rel=1e-6)
    assert (own["guidance"], plain["guidance"], plain["steps"]) == (2.0, 1.0, 2)  # what each line was made with
    rc, err = evaluate("--guidance", "-1")
    assert rc == 2 and "--guidance -1" in err and ">= 0" in err


def test_cli_sample_by_class(fake_fmnist, tmp_path, synthetic_evaluator):
    run = train(_cond_run(fake_fmnist, ["eval.enabled=false"]), out=str(tmp_path / "c"), progress=False)
    out = tmp_path / "s.npz"
    r = subprocess.run([sys.executable, "-m", "cldiff", "sample", str(run), "--class", "2", "8", "--n", "3",
                        "--steps", "2", "--out", str(tmp_path / "s.png"), "--npz", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.load(out)["labels"].tolist() == [2, 2, 2, 8, 8, 8]
    r = subprocess.run([sys.executable, "-m", "cldiff", "sample", str(run), "--class", "10"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "classes 0..9" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_conditional_gd_with_a_pool_resumes_bit_identically_after_sigkill(fake_fmnist, tmp_path):
    from test_reliability import killed_once_then_resumed
    killed_once_then_resumed(fake_fmnist, tmp_path, [
        "model.conditional=true", "strategy.pool_every=3", "strategy.pool_size=8",
        "strategy.replay_labels=proportional", "strategy.teacher_guidance=1.5"])


def test_classifier_replay_labels_are_the_earlier_classes_in_equal_shares(cmodel):
    from types import SimpleNamespace
    from cldiff.classifier import ContinualClassifier
    from cldiff.config import ClassifierConfig
    clf = ContinualClassifier(ClassifierConfig(), 1, 10, torch.device("cpu"), 0)
    data = SimpleNamespace(tasks=[(2, 6), (1, 8), (4, 5)])
    y = clf.replay_labels(2, data, cmodel, 13)
    assert set(y.tolist()) == {1, 2, 6, 8} and torch.bincount(y).max() - torch.bincount(y)[[1, 2, 6, 8]].min() <= 1
    assert clf.replay_labels(2, data, EpsModel("tiny"), 13) is None  # an unconditional generator gives none


def test_hard_replay_targets_need_labelled_replay():
    with pytest.raises(ConfigError, match="replay_targets: hard needs labelled replay"):
        load_config(SMOKE, ["classifier.enabled=true", "classifier.replay_targets=hard"])
    ok = load_config(SMOKE, ["classifier.enabled=true", "classifier.replay_targets=hard", "model.conditional=true"])
    assert ok.classifier.replay_targets == "hard"


@pytest.mark.slow
def test_hard_replay_targets_teach_the_replayed_labels(fake_fmnist, tmp_path):
    """Real replay with hard targets: the replayed images' own labels keep task 0's classes; naive forgets them.
    In fp32: under bf16 autocast the outcome depended on the CPU's bf16 kernels (0.65 with AMX's, above 0.8
    without); in fp32 replay keeps 1.0 on both."""
    accs = {}
    for mode, extra in (("naive", []), ("real_replay", ["classifier.replay_targets=hard"])):
        cfg = load_config(SMOKE, smoke_overrides(fake_fmnist) + [
            "train.threads=1", "train.precision=fp32", "train.steps_per_task=1", "classifier.enabled=true",
            f"classifier.mode={mode}",
            "classifier.epochs=15", "classifier.batch_size=32", "classifier.lr=3e-3", "classifier.replay_pool=200",
            *extra])
        run = train(cfg, out=str(tmp_path / mode), progress=False)
        evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "classifier_eval" in x]
        assert evals[-1]["replay_targets"] == ("hard" if extra else "soft")
        accs[mode] = evals[-1]["acc"][0]  # accuracy on task 0's classes after task 1
    assert accs["naive"] < 0.2 and accs["real_replay"] > 0.8, accs


def test_report_has_per_class_and_compute_tables(fake_fmnist, tmp_path, synthetic_evaluator):
    from cldiff.report import make_report
    ev = dataclasses.replace(synthetic_evaluator, dataset="fashion_mnist")
    cond = train(_cond_run(fake_fmnist), out=str(tmp_path / "cond"), progress=False, evaluator=ev)
    plain = train(_cond_run(fake_fmnist, ["model.conditional=false"]), out=str(tmp_path / "plain"), progress=False,
                  evaluator=ev)
    out = make_report([cond, plain], tmp_path / "rep", reference=False)
    md = (out / "report.md").read_text()
    table = md.split("## Per-class FID after the last task")[1].split("##")[0]
    rows = [r for r in table.splitlines() if r.startswith("| generative_distillation")]
    assert len(rows) == 2
    cond_row = next(r for r in rows if "(conditional)" in r)
    plain_row = next(r for r in rows if "(conditional)" not in r)
    ends = [json.loads(x) for x in (cond / "metrics.jsonl").read_text().splitlines() if '"task_end"' in x]
    last = [json.loads(x) for x in (cond / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    assert f"{last['label_acc']:.3f}" in cond_row and f"{last['class_fid_mean']:.2f}" in cond_row
    assert plain_row.split("|")[5].strip() == "—"  # no label accuracy without labels
    compute = md.split("## Quality against compute")[1].split("##")[0]
    teacher = sum(e["teacher_image_forwards"] for e in ends)
    student = sum(e["student_images"] for e in ends)
    assert f"| {teacher:,} | {student:,} | {teacher + 3 * student:,} |" in compute
    assert (out / "compute.png").exists()


def test_label_embedding_start_and_learning_rate(fake_fmnist, tmp_path):
    """model.label_init_std starts the label embedding at N(0, std^2); model.label_lr_scale trains it in an Adam
    group of its own at that multiple of the rate, kept through the schedule; neither is allowed on an
    unconditional model."""
    from cldiff.checkpoint import list_checkpoints, load_checkpoint_file
    torch.manual_seed(0)
    w = EpsModel("tiny", num_classes=10, label_init_std=0.1).unet.class_embedding.weight
    assert 0.08 < w.std().item() < 0.12

    def label_step(scale, schedule):
        cfg = _cond_run(fake_fmnist, [f"model.label_lr_scale={scale}", f"train.lr_schedule={schedule}",
                                      "eval.enabled=false", "train.steps_per_task=3"])
        run = train(cfg, out=str(tmp_path / f"s{scale}{schedule}"), progress=False, stop_after=1)
        meta = list_checkpoints(run)[0]
        state, _ = load_checkpoint_file(meta["path"], meta)
        groups = state["optimizer"]["param_groups"]
        emb = state["model"]["unet.class_embedding.weight"]
        return groups, emb.abs().max().item()

    groups, big = label_step(30, "cosine")
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(30 * groups[0]["lr"])
    assert len(groups[1]["params"]) == 1
    groups, small = label_step(1, "cosine")
    assert len(groups) == 1  # 1x: one group, as before
    assert 10 < big / small < 40  # Adam's first steps move each weight by about its rate
    with pytest.raises(ConfigError, match="only a conditional model"):
        load_config(SMOKE, ["model.label_lr_scale=30"])
