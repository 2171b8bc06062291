import pytest
import torch

from cldiff.model import EpsModel, NoiseSchedule, ddim_sample
from cldiff.strategies import REGISTRY, TaskContext, build_strategy

from conftest import step_context


_ctx = step_context


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EpsModel("tiny").eval()


def _with_teacher(name, model, **kw):
    st = build_strategy({"name": name, **kw})
    st.end_task(model, TaskContext(0, None, [], NoiseSchedule(), torch.device("cpu")))
    return st


def test_task0_never_replays(model):
    for name in ("generative_replay", "generative_distillation"):
        assert build_strategy({"name": name}).replay(_ctx(k=0)) is None


def test_gd_target_is_the_teacher_prediction_on_the_same_input(model):
    st = _with_teacher("generative_distillation", model, teacher_steps=2)
    ctx = _ctx()
    r = st.replay(ctx)
    assert r.x.shape == ctx.x0.shape and r.t.shape == ctx.t.shape  # as many replay samples as real ones
    with torch.no_grad():
        expected = st.teacher(r.x, r.t)
    torch.testing.assert_close(r.target, expected, atol=1e-5, rtol=1e-4)
    assert r.teacher_images == 3 * len(ctx.x0)  # S DDIM steps + one target forward


def test_gr_target_is_the_fresh_noise(model):
    st = _with_teacher("generative_replay", model, teacher_steps=2)
    ctx = _ctx(seed=3)
    g = torch.Generator().manual_seed(0)
    g.set_state(ctx.generator.get_state())
    r = st.replay(ctx)
    # redo the draws in the same order: z, (DDIM), t~, e'
    z = torch.randn(ctx.x0.shape, generator=g)
    x0_tilde = ddim_sample(st.teacher, ctx.schedule, z, 2, 0.0, g)
    t_tilde = ctx.schedule.sample_timesteps(len(z), g, "cpu")
    e_prime = torch.randn(z.shape, generator=g)
    assert torch.equal(r.t, t_tilde)
    torch.testing.assert_close(r.target, e_prime)
    torch.testing.assert_close(r.x, ctx.schedule.add_noise(x0_tilde, t_tilde, e_prime))
    assert not torch.allclose(r.target, st.teacher(r.x, r.t))  # GR is not distillation
    assert r.teacher_images == 2 * len(z)


def test_gr_and_gd_share_the_replay_inputs(model):
    gr = _with_teacher("generative_replay", model)
    gd = _with_teacher("generative_distillation", model)
    a, b = gr.replay(_ctx(seed=5)), gd.replay(_ctx(seed=5))
    torch.testing.assert_close(a.x, b.x)
    assert torch.equal(a.t, b.t)


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if c.uses_teacher))
def test_teacher_is_a_frozen_copy(model, name):
    st = _with_teacher(name, model)
    assert all(not p.requires_grad for p in st.teacher.parameters()) and not st.teacher.training
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(st.teacher.parameters(), model.parameters()))
    torch.testing.assert_close(st.teacher.state_dict(), model.state_dict())


def test_loss_weights_follow_the_paper():
    gd = build_strategy({"name": "generative_distillation", "lam": 2.0})
    assert gd.loss_weights(0, False) == (1.0, 0.0)
    assert gd.loss_weights(1, True) == (0.5, 1.0)  # w_1 = 1/2; (1 - w) * lambda
    w, r = gd.loss_weights(4, True)
    assert w == pytest.approx(0.2) and r == pytest.approx(0.8 * 2.0)
    assert build_strategy({"name": "naive"}).loss_weights(3, False) == (1.0, 0.0)


def test_joint_trains_on_the_union():
    tasks = [(2, 6), (1, 8), (4, 5)]
    assert build_strategy({"name": "joint"}).train_classes(2, tasks) == [2, 6, 1, 8, 4, 5]
    assert build_strategy({"name": "naive"}).train_classes(2, tasks) == [4, 5]


def test_strategy_config_errors_teach():
    from cldiff.strategies import validate_strategy
    p = validate_strategy({"name": "generative_distillation", "teacher_steps": 0, "lam": -1.0})
    assert any("teacher_steps >= 1, got 0" in x for x in p) and any("lam" in x for x in p)
    assert "did you mean 'generative_replay'" in validate_strategy({"name": "generative_replya"})[0]
    assert "did you mean 'teacher_steps'" in validate_strategy({"name": "generative_replay", "teacher_step": 2})[0]


def test_registry_has_the_core_strategies():
    assert {"naive", "joint", "generative_replay", "generative_distillation"} <= set(REGISTRY)


def test_replay_pool_amortises_generation_and_resumes_exactly(model):
    st = _with_teacher("generative_distillation", model, teacher_steps=2, pool_every=3, pool_size=6)
    b = 4
    counts, pools = [], []
    for i in range(4):
        r = st.replay(_ctx(b=b, seed=10 + i))
        counts.append(r.teacher_images)
        pools.append(st._pool.clone())
    # the teacher generates 6 images (2 DDIM steps each) once per 3 iterations; the GD target forward every time
    assert counts == [2 * 6 + b, b, b, 2 * 6 + b]
    assert torch.equal(pools[0], pools[2]) and not torch.equal(pools[2], pools[3])
    # every replay input is a pooled image, noised afresh: at t~ = 0 it is (almost) the pooled image itself
    ctx = _ctx(b=b, seed=20)
    g = torch.Generator().manual_seed(0)
    g.set_state(ctx.generator.get_state())
    r = st.replay(ctx)
    pick = torch.randint(0, 6, (b,), generator=g)
    t = ctx.schedule.sample_timesteps(b, g, "cpu")
    e = torch.randn((b, 1, 32, 32), generator=g)
    torch.testing.assert_close(r.x, ctx.schedule.add_noise(pools[3][pick], t, e))
    # the pool and its age are part of the state: a restored strategy continues identically
    st2 = build_strategy({"name": "generative_distillation", "teacher_steps": 2, "pool_every": 3, "pool_size": 6})
    st2.load_state_dict(st.state_dict(), model)
    a, c = st.replay(_ctx(b=b, seed=30)), st2.replay(_ctx(b=b, seed=30))
    assert torch.equal(a.x, c.x) and a.teacher_images == c.teacher_images == b
    # a new teacher starts a new pool
    st.end_task(model, TaskContext(1, None, [], NoiseSchedule(), torch.device("cpu")))
    assert st._pool is None
    with pytest.raises(ValueError, match="pool_every"):
        build_strategy({"name": "generative_replay", "pool_every": 0})


def test_teacher_is_bf16_under_bf16_autocast_and_resumes_in_its_dtype(model):
    from cldiff.model import autocast_for
    ac = autocast_for(torch.device("cpu"), "bf16")
    st = build_strategy({"name": "generative_distillation"})
    st.end_task(model, TaskContext(0, None, [], NoiseSchedule(), torch.device("cpu"), ac))
    assert all(p.dtype == torch.bfloat16 for p in st.teacher.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the student is untouched
    st2 = build_strategy({"name": "generative_distillation"})
    st2.load_state_dict(st.state_dict(), model)
    assert all(p.dtype == torch.bfloat16 for p in st2.teacher.parameters())
    a, b = st.replay(_ctx(seed=1)), st2.replay(_ctx(seed=1))  # called outside autocast, it still runs
    assert torch.equal(a.target, b.target) and a.target.dtype == torch.float32
    ctx1, ctx2 = _ctx(seed=2), _ctx(seed=2)
    ctx1.autocast = ctx2.autocast = ac
    assert torch.equal(st.replay(ctx1).target, st2.replay(ctx2).target)
    # full precision keeps an fp32 teacher
    st.end_task(model, TaskContext(0, None, [], NoiseSchedule(), torch.device("cpu")))
    assert all(p.dtype == torch.float32 for p in st.teacher.parameters())


def test_every_replaying_strategy_declares_lambda_and_the_loss_uses_it():
    from cldiff.strategies import REGISTRY, ReplayStrategy, validate_strategy
    replaying = [n for n, c in REGISTRY.items() if issubclass(c, ReplayStrategy)]
    assert set(replaying) >= {"generative_replay", "generative_distillation", "lwf_distillation",
                              "gaussian_distillation", "partial_generation_distillation", "experience_replay"}
    for name in replaying:
        assert any("lam: must be >= 0" in p for p in validate_strategy({"name": name, "lam": -1.0})), name
        st = build_strategy({"name": name, "lam": 3.0})
        w_real, w_replay = st.loss_weights(2, True)
        assert (w_real, w_replay) == (pytest.approx(1 / 3), pytest.approx(2 / 3 * 3.0)), name
        assert st.loss_weights(2, False) == (1.0, 0.0)
    for name in set(REGISTRY) - set(replaying):  # no lambda to set, and replaying without one is an error
        assert any("unknown field" in p for p in validate_strategy({"name": name, "lam": 1.0})), name
        with pytest.raises(TypeError, match="ReplayStrategy"):
            build_strategy({"name": name}).loss_weights(1, True)
