"""Cheaper distillation: trajectory distillation, replay timesteps, the replay ratio, compute accounting."""
import contextlib
import dataclasses
import json

import pytest
import torch

from cldiff.model import EpsModel, NoiseSchedule, ddim_sample
from cldiff.strategies import TaskContext, build_strategy

from conftest import step_context
from test_conditional import _Data, cmodel  # noqa: F401  (the conditional model fixture)



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EpsModel("tiny").eval()


def _teacher(name, m, **kw):
    st = build_strategy({"name": name, **kw})
    data = _Data({0: 10, 3: 10}) if m.conditional else None
    st.end_task(m, TaskContext(0, data, [], NoiseSchedule(), torch.device("cpu")))
    return st


class _Count:
    """Counts the calls of a module's forward and the images they carry."""

    def __init__(self, module):
        self.calls, self.images, self._orig = 0, 0, module.forward
        module.forward = self

    def __call__(self, x, *a, **k):
        self.calls += 1
        self.images += len(x)
        return self._orig(x, *a, **k)


def test_trajectory_targets_are_the_teachers_predictions_at_its_states(model):
    S = 3
    st = _teacher("trajectory_distillation", model, teacher_steps=S, states=S)  # every state of 4 trajectories
    ctx = step_context(k=1, b=12, seed=5)
    r = st.replay(ctx)
    assert len(r.x) == 12 and r.teacher_images == S * 4  # 12 pairs from 4 trajectories of 3 forwards
    per = S
    # rows are trajectory by trajectory: rows j, j + S, ... hold every trajectory's state j
    first = r.x[0::per]
    assert torch.all(r.t[0::per] == 999)  # a trajectory starts from pure noise at t = T-1
    assert torch.all(r.t.view(4, S)[:, :-1] >= r.t.view(4, S)[:, 1:])  # then its timesteps descend
    ts = torch.cat([r.t.view(4, S).T, torch.full((1, 4), -1)])
    record = []
    ddim_sample(st.teacher, NoiseSchedule(), first, S, ts=ts, record=record)  # the same trajectories again
    for j, (x_j, t_j, eps_j) in enumerate(record):
        assert torch.equal(r.x[j::per], x_j) and torch.equal(r.t[j::per], t_j)
        assert torch.equal(r.target[j::per], eps_j)  # bit for bit: no fresh noise, no extra forward
        with torch.no_grad():
            assert torch.equal(r.target[j::per], st.teacher(x_j, t_j).float())


def test_trajectory_distillation_calls_the_teacher_s_times_per_replay_batch(model):
    for S, states in ((2, 0), (4, 3), (4, 4)):
        st = _teacher("trajectory_distillation", model, teacher_steps=S, states=states)
        c = _Count(st.teacher)
        r = st.replay(step_context(k=1, b=8))
        assert c.calls == S and r.teacher_images == c.images
    gd = _teacher("generative_distillation", model, teacher_steps=2)
    c = _Count(gd.teacher)
    gd.replay(step_context(k=1, b=8))
    assert c.calls == 3 and c.images == 24  # GD: S generation forwards and one for the targets


CASES = [("generative_replay", {}), ("generative_distillation", {}), ("generative_distillation", {"replay_ratio": 0.5}),
         ("generative_distillation", {"pool_every": 2, "pool_size": 5}), ("partial_generation_distillation", {}),
         ("gaussian_distillation", {}), ("lwf_distillation", {}), ("trajectory_distillation", {}),
         ("trajectory_distillation", {"gd_share": 0.3, "random_times": False}),
         ("trajectory_distillation", {"teacher_steps": 2, "states": 2, "replay_ratio": 0.75}),
         ("trajectory_distillation", {"teacher_steps": 3, "states": 1, "last_time": "uniform"})]


@pytest.mark.parametrize("name,kw", CASES)
def test_teacher_image_counts_match_the_forwards_done(model, cmodel, name, kw):
    for m, cond in ((model, {}), (cmodel, {"teacher_guidance": 2.0})):
        st = _teacher(name, m, **kw, **cond)
        c = _Count(st.teacher)
        ctx = step_context(k=1, b=8, seed=2)
        if m.conditional:
            ctx = dataclasses.replace(ctx, y=torch.tensor([0, 3] * 4), cond_drop=0.3)
        for _ in range(2):  # a pool strategy's second step may draw from its pool
            before = c.images
            r = st.replay(ctx)
            assert r.teacher_images == c.images - before, (name, kw, m.conditional)


def test_replay_ratio_sets_the_replay_batch(model):
    from cldiff.train import train_step
    st = _teacher("generative_distillation", model, replay_ratio=0.25)
    assert len(st.replay(step_context(k=1, b=8)).x) == 2
    student = EpsModel("tiny")
    opt = torch.optim.Adam(student.parameters(), 1e-4)
    x0 = torch.rand(8, 1, 32, 32) * 2 - 1
    r = train_step(student, opt, st, NoiseSchedule(), x0, 1, torch.Generator().manual_seed(0), contextlib.nullcontext,
                   1.0)
    assert r["student_images"] == 10
    with pytest.raises(ValueError, match="replay_ratio"):
        build_strategy({"name": "lwf_distillation", "replay_ratio": 0.5})


def test_snr_timesteps_draw_fewer_nearly_clean_steps(model):
    st = _teacher("generative_distillation", model, replay_timesteps="snr")
    t, w = st.replay_t(step_context(k=1, b=4), 20000)
    assert w is None
    s = NoiseSchedule()
    clean = s.snr(torch.arange(1000)) > 5  # where min-SNR-5 weighs below 1
    share = clean[t].float().mean().item()
    assert share < 0.6 * clean.float().mean().item()


def test_adaptive_timesteps_follow_the_error_and_stay_unbiased(model):
    st = _teacher("generative_distillation", model, replay_timesteps="adaptive")
    ctx = step_context(k=1, b=4)
    t, w = st.replay_t(ctx, 4000)
    torch.testing.assert_close(w, torch.ones_like(w))  # before any measurement: uniform, weight 1
    tt = torch.arange(0, 1000, 10)
    st.observe_replay(tt, torch.where(tt >= 900, 10.0, 0.1))  # the student errs on the noisiest band only
    for _ in range(200):
        st.observe_replay(tt, torch.where(tt >= 950, 10.0, 0.1))
    t, w = st.replay_t(ctx, 20000)
    assert (t >= 950).float().mean() > 0.3  # the noisiest band (5 % of 0..999) is drawn far more often
    k = st.ADAPTIVE_BINS
    band = t * k // 1000
    p = torch.bincount(band, minlength=k).double() / len(t)
    w_band = torch.stack([w[band == b][0] for b in range(k)]).double()
    assert abs((p * w_band).sum().item() - 1.0) < 0.02  # E_p[w] = 1: the loss's expectation is the uniform one
    with pytest.raises(ValueError, match="replay_timesteps"):
        build_strategy({"name": "trajectory_distillation", "replay_timesteps": "snr"})


def test_report_counts_compute(tmp_path):
    from cldiff.report import STUDENT_PASS_FORWARDS, compute_of
    ends = [{"teacher_image_forwards": 10, "student_images": 4}, {"teacher_image_forwards": 0, "student_images": 6}]
    assert compute_of(ends) == 10 + STUDENT_PASS_FORWARDS * 10


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["strategy={name: trajectory_distillation, teacher_steps: 3, gd_share: 0.25, replay_ratio: 0.5}"],
    ["strategy={name: generative_distillation, replay_timesteps: adaptive}"]])  # snr keeps no state of its own
def test_new_options_resume_bit_identically_after_sigkill(fake_fmnist, tmp_path, extra):
    from test_reliability import killed_once_then_resumed
    run = killed_once_then_resumed(fake_fmnist, tmp_path, extra)
    ends = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"task_end"' in x]
    assert ends[-1]["teacher_image_forwards"] > 0


def test_trajectory_last_time_uniform_spreads_the_last_states_over_every_timestep(model):
    s, g = NoiseSchedule(), torch.Generator().manual_seed(0)
    for last_uniform, mean in ((False, 999 / 3), (True, 998 / 2)):  # S = 3: min of 2 draws, or uniform
        ts = s.random_ddim_timesteps(3, 20000, g, "cpu", last_uniform)
        assert torch.all(ts[0] == 999) and torch.all(ts[-1] == -1)
        assert torch.all(ts[:-1] >= ts[1:]) and ts[1:-1].min() >= 0 and ts[1:-1].max() <= 998
        last = ts[-2].double()
        assert abs(last.mean().item() - mean) < 8
        assert abs((last >= 750).double().mean().item() - (0.0625 if not last_uniform else 0.25)) < 0.015
    st = _teacher("trajectory_distillation", model, teacher_steps=3, states=1, last_time="uniform")
    r = st.replay(step_context(k=1, b=400, seed=3))
    assert len(r.t) == 400 and r.teacher_images == 3 * 400 and r.t.float().mean() > 400  # sorted: about 333
    with pytest.raises(ValueError, match="last_time"):
        build_strategy({"name": "trajectory_distillation", "last_time": "uniform", "random_times": False})
    with pytest.raises(ValueError, match="last_time"):
        build_strategy({"name": "trajectory_distillation", "last_time": "middle"})
