"""The training recipe (docs/recipe.md): EMA of the weights, the learning-rate schedule, min-SNR weighting."""
import contextlib

import pytest
import torch

from cldiff.checkpoint import load_checkpoint_file
from cldiff.config import ConfigError, load_config
from cldiff.model import EpsModel, NoiseSchedule
from cldiff.recipe import EMA, ema_decay_at, lr_at
from cldiff.runfolder import load_model
from cldiff.train import slice_losses, train, train_step

from conftest import CONFIGS, smoke_overrides

SMOKE = CONFIGS / "split_fmnist" / "smoke.yaml"


def test_lr_schedule_warmup_constant_and_cosine():
    assert [lr_at(1.0, "constant", 0, s, 10) for s in range(10)] == [1.0] * 10
    warm = [lr_at(1.0, "constant", 4, s, 10) for s in range(10)]
    assert warm[:4] == [0.25, 0.5, 0.75, 1.0] and warm[4:] == [1.0] * 6
    cos = [lr_at(2.0, "cosine", 0, s, 100) for s in range(100)]
    assert all(a > b for a, b in zip(cos, cos[1:]))  # strictly decreasing over the task
    assert 1.99 < cos[0] <= 2.0 and 0 < cos[-1] < 0.01  # from the base rate to (almost) 0, never exactly 0
    assert abs(cos[49] - 1.0) < 0.05  # half way: half the rate
    wc = [lr_at(1.0, "cosine", 5, s, 20) for s in range(20)]
    assert wc[:5] == [0.2, 0.4, 0.6, 0.8, 1.0] and all(a > b for a, b in zip(wc[4:], wc[5:]))


def test_ema_decay_warms_up_within_a_task():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 80) == pytest.approx(0.9)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert ema_decay_at(0.5, 20) == 0.5  # the configured decay caps the warm-up


def test_ema_update_is_the_moving_average_and_copies_buffers():
    torch.manual_seed(0)
    m = EpsModel("tiny")
    ema = EMA(m, 0.9)
    p0 = [p.detach().clone() for p in m.parameters()]
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    ema.update(m, n=100)  # decay min(0.9, 101/110) = 0.9
    for e, a in zip(ema.model.parameters(), p0):
        assert torch.allclose(e, 0.9 * a + 0.1 * (a + 1.0), atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())
    ema.update(m, n=0)  # decay 0.1: all but the student's weights
    for e, a in zip(ema.model.parameters(), p0):
        assert torch.allclose(e, 0.1 * (0.9 * a + 0.1 * (a + 1)) + 0.9 * (a + 1), atol=1e-6)


def test_min_snr_weights_under_zero_terminal_snr():
    s = NoiseSchedule(zero_terminal_snr=True)
    t = torch.arange(s.T)
    snr = s.snr(t)
    assert snr[-1] == 0  # zero terminal SNR
    w = s.min_snr_weight(t, 5.0)
    assert torch.isfinite(w).all() and w[-1] == 1.0  # the pure-noise step keeps its full weight
    assert torch.equal(w[snr <= 5.0], torch.ones(int((snr <= 5.0).sum())))
    hi = snr > 5.0
    assert torch.allclose(w[hi], 5.0 / snr[hi])
    assert w[0] < 0.01 and bool((w[1:] >= w[:-1]).all())  # clean steps turned down, weights rise with t


def test_slice_losses_are_the_branch_mses_and_weighted_means():
    from cldiff.strategies import Replay
    g = torch.Generator().manual_seed(1)
    out, eps, target = (torch.randn(n, 1, 3, 3, generator=g) for n in (6, 4, 2))
    replay = Replay(target=target, x=torch.zeros(2, 1, 3, 3), t=torch.zeros(2, dtype=torch.long))
    real, rep = slice_losses(out, 0, 6, eps, replay, None, 6)
    assert torch.allclose(real, torch.nn.functional.mse_loss(out[:4], eps))
    assert torch.allclose(rep, torch.nn.functional.mse_loss(out[4:], target))
    parts = [slice_losses(out[a:b], a, b, eps, replay, None, 6) for a, b in ((0, 3), (3, 5), (5, 6))]
    assert torch.allclose(sum(p[0] for p in parts), real) and torch.allclose(sum(p[1] for p in parts), rep)
    w = torch.tensor([1.0, 0.5, 0.0, 2.0, 3.0, 0.25])
    real_w, rep_w = slice_losses(out, 0, 6, eps, replay, w, 6)
    per = ((out - torch.cat([eps, target])) ** 2).flatten(1).mean(1)
    assert torch.allclose(real_w, (w[:4] * per[:4]).mean()) and torch.allclose(rep_w, (w[4:] * per[4:]).mean())
    lwf = Replay(target=torch.randn(4, 1, 3, 3, generator=g))  # LwF-like: a second target on the real rows
    real_l, rep_l = slice_losses(out[:4], 0, 4, eps, lwf, None, 4)
    assert torch.allclose(rep_l, torch.nn.functional.mse_loss(out[:4], lwf.target))


def _step(weight, micro=1, seed=3):
    from cldiff.strategies import TaskContext, build_strategy
    torch.manual_seed(0)
    m = EpsModel("tiny")
    sch = NoiseSchedule()
    st = build_strategy({"name": "generative_distillation", "teacher_steps": 1})
    st.end_task(m, TaskContext(0, None, [], sch, torch.device("cpu")))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x0 = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    r = train_step(m, opt, st, sch, x0, 1, torch.Generator().manual_seed(seed), contextlib.nullcontext, 0.0,
                   micro_batches=micro, loss_weight=weight)
    return r, [p.detach().clone() for p in m.parameters()]


def test_min_snr_step_whole_and_micro_batched_agree_and_reduce_the_loss():
    sch = NoiseSchedule()
    huge = lambda t: sch.min_snr_weight(t, 1e30)  # noqa: E731  (weight 1 everywhere: the unweighted loss)
    plain, _ = _step(None)
    same, _ = _step(huge)
    assert same["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    w5 = lambda t: sch.min_snr_weight(t, 5.0)  # noqa: E731
    whole, pw = _step(w5)
    micro, pm = _step(w5, micro=3)
    assert micro["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for a, b in zip(pw, pm):
        assert torch.allclose(a, b, atol=1e-6)
    assert whole["loss"] < plain["loss"]  # weights <= 1, some < 1


def test_recipe_fields_are_validated():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["train.ema_decay=1.5", "train.lr_schedule=linear", "train.warmup_steps=-1",
                            "train.loss_weighting=snr", "train.min_snr_gamma=0"])
    msg = str(e.value)
    for field in ("ema_decay", "lr_schedule", "warmup_steps", "loss_weighting", "min_snr_gamma"):
        assert f"train.{field}" in msg


@pytest.mark.slow  # long (tens of seconds), not a process of its own
@pytest.mark.parametrize("ema_teacher", [True, False])
def test_ema_run_evaluates_samples_and_teaches_with_the_ema(fake_fmnist, tmp_path, ema_teacher):
    cfg = load_config(SMOKE, smoke_overrides(fake_fmnist) + [
        "train.ema_decay=0.9", f"train.ema_teacher={str(ema_teacher).lower()}", "train.precision=fp32",
        "train.lr_schedule=cosine", "train.warmup_steps=2", "train.loss_weighting=min_snr"])
    out = train(cfg, out=str(tmp_path / "r"), progress=False)
    s0, _ = load_checkpoint_file(out / "checkpoints" / "task_00.pt")
    s1, _ = load_checkpoint_file(out / "checkpoints" / "task_01.pt")
    assert set(s0["ema"]) == set(s0["model"])
    assert any(not torch.equal(s0["ema"][k], s0["model"][k]) for k in s0["model"])  # a real average
    for s in (s0, s1):  # the teacher frozen at each task's end: from the EMA or from the raw weights
        src = s["ema"] if ema_teacher else s["model"]
        for k, v in s["strategy"]["teacher"].items():
            assert torch.equal(v, src[k]), k
    model, _, _, _ = load_model(out)  # what `cldiff sample` / `classify` / `evaluate` get: the EMA
    for k, v in model.state_dict().items():
        assert torch.equal(v, s1["ema"][k]), k
    import json
    lrs = [json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert lrs[0] == pytest.approx(cfg.train.lr) and lrs[2] < lrs[1]  # step 2 ends the warm-up; cosine after


def test_paper_presets_keep_the_paper_protocol():
    for f in (CONFIGS / "split_fmnist" / "paper").glob("*.yaml"):
        if f.name.startswith("_"):
            continue
        t = load_config(f).train
        assert (t.ema_decay, t.lr_schedule, t.warmup_steps, t.loss_weighting) == (None, "constant", 0, "none"), f
