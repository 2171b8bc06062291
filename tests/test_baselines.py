"""Replay inputs, targets and gradients of the strategies beyond GR / GD (docs/protocol.md §3)."""
import pytest
import torch

from cldiff.data import ContinualData
from cldiff.model import EpsModel, NoiseSchedule, ddim_sample
from cldiff.strategies import TaskContext, build_strategy

from conftest import step_context


_ctx = step_context


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EpsModel("tiny").eval()


@pytest.fixture(scope="module")
def data():
    return ContinualData("synthetic", [(0, 1), (2, 3), (4, 5)])


def _ended(name, model, data=None, k=0, **kw):
    st = build_strategy({"name": name, **kw})
    classes = list(data.tasks[k]) if data is not None else []
    st.end_task(model, TaskContext(k, data, classes, NoiseSchedule(), torch.device("cpu")))
    return st


def test_lwf_targets_the_teacher_on_the_real_inputs(model):
    st = _ended("lwf_distillation", model)
    ctx = _ctx()
    r = st.replay(ctx)
    assert r.x is None and r.t is None  # no extra student inputs: student batch stays B
    with torch.no_grad():
        torch.testing.assert_close(r.target, st.teacher(ctx.x_t, ctx.t), atol=1e-5, rtol=1e-4)
    assert r.teacher_images == len(ctx.x0)


def test_gaussian_replay_is_pure_noise_with_teacher_targets(model):
    st = _ended("gaussian_distillation", model)
    ctx = _ctx(seed=2)
    g = torch.Generator()
    g.set_state(ctx.generator.get_state())
    r = st.replay(ctx)
    z = torch.randn(ctx.x0.shape, generator=g)
    t = torch.randint(0, 1000, (len(z),), generator=g)
    torch.testing.assert_close(r.x, z)
    assert torch.equal(r.t, t)
    with torch.no_grad():
        torch.testing.assert_close(r.target, st.teacher(z, t), atol=1e-5, rtol=1e-4)
    assert r.teacher_images == len(z)


def test_partial_generation_stops_at_each_samples_timestep(model):
    st = _ended("partial_generation_distillation", model, teacher_steps=2)
    ctx = _ctx(seed=4)
    g = torch.Generator()
    g.set_state(ctx.generator.get_state())
    r = st.replay(ctx)
    z = torch.randn(ctx.x0.shape, generator=g)
    t = torch.randint(0, 1000, (len(z),), generator=g)
    x = ddim_sample(st.teacher, ctx.schedule, z, 2, 0.0, g, t_end=t)
    assert torch.equal(r.t, t)
    torch.testing.assert_close(r.x, x)
    with torch.no_grad():
        torch.testing.assert_close(r.target, st.teacher(x, t), atol=1e-5, rtol=1e-4)
    assert r.teacher_images == 3 * len(z)


def test_experience_replay_memory_is_balanced_and_replayed_like_real_data(data):
    st = _ended("experience_replay", None, data, k=0, memory_size=10)
    assert {c: len(v) for c, v in st.memory.items()} == {0: 5, 1: 5}
    st.end_task(None, TaskContext(1, data, [2, 3], NoiseSchedule(), torch.device("cpu")))
    assert {c: len(v) for c, v in st.memory.items()} == {0: 2, 1: 2, 2: 2, 3: 2}
    ctx = _ctx(b=6, seed=1)
    g = torch.Generator()
    g.set_state(ctx.generator.get_state())
    r = st.replay(ctx)
    mem = torch.cat([st.memory[c] for c in sorted(st.memory)])
    idx = torch.randint(0, len(mem), (6,), generator=g)
    t = torch.randint(0, 1000, (6,), generator=g)
    e = torch.randn((6, 1, 32, 32), generator=g)
    assert torch.equal(r.t, t) and r.x.shape == ctx.x0.shape
    torch.testing.assert_close(r.target, e)
    torch.testing.assert_close(r.x, ctx.schedule.add_noise(mem[idx], t, e))
    assert st.replay(_ctx()) is not None and build_strategy({"name": "experience_replay"}).replay(_ctx()) is None


@pytest.mark.parametrize("name", ["ewc", "si"])
def test_penalty_is_zero_at_the_anchor_and_grows_away(name, data):
    torch.manual_seed(0)
    m = EpsModel("tiny")
    st = build_strategy({"name": name})
    ctx = TaskContext(0, data, [0, 1], NoiseSchedule(), torch.device("cpu"))
    if name == "si":  # a few real steps so that the path integral is not empty
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        x, _ = data.train([0, 1])
        for i in range(3):
            assert st.penalty(m) is None
            t = torch.randint(0, 1000, (8,))
            e = torch.randn(8, 1, 32, 32)
            loss = ((m(NoiseSchedule().add_noise(x[:8], t, e), t) - e) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            st.after_step(m)
    st.end_task(m, ctx)
    assert sum(v.sum() for v in st.importance.values()) > 0
    p0 = st.penalty(m)
    assert float(p0) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    p1 = float(st.penalty(m))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    p2 = float(st.penalty(m))
    assert 0 < p1 < p2 and p2 == pytest.approx(4 * p1, rel=1e-3)  # quadratic


def test_only_the_student_gets_gradients(model):
    student = EpsModel("tiny")
    for name in ("generative_distillation", "lwf_distillation", "gaussian_distillation",
                 "partial_generation_distillation", "generative_replay"):
        st = _ended(name, model)
        ctx = _ctx()
        r = st.replay(ctx)
        assert not r.target.requires_grad and (r.x is None or not r.x.requires_grad)
        x = ctx.x_t if r.x is None else r.x
        t = ctx.t if r.t is None else r.t
        loss = ((student(x, t) - r.target) ** 2).mean()
        loss.backward()
        assert all(p.grad is None for p in st.teacher.parameters())
        assert any(p.grad is not None for p in student.parameters())
        student.zero_grad()
