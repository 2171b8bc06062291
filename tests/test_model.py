import torch

from cldiff.model import EpsModel, NoiseSchedule, ddim_sample, num_params


def test_trailing_ddim_timesteps():
    s = NoiseSchedule()
    assert s.ddim_timesteps(2)[:, 0].tolist() == [999, 499, -1]
    assert s.ddim_timesteps(10)[:, 0].tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, -1]
    # partial generation: from T-1 down to a per-sample t_end
    ts = s.ddim_timesteps(2, t_end=torch.tensor([99, 500]))
    assert ts[:, 0].tolist() == [999, 549, 99] and ts[:, 1].tolist() == [999, 749, 500]


def test_zero_terminal_snr_schedule():
    s = NoiseSchedule()
    assert s.abar[-1].item() == 0.0  # zero terminal SNR
    assert abs(s.abar[0].item() - (1 - 1e-4)) < 1e-6  # first value unchanged by the rescale
    assert torch.all(s.abar[1:] < s.abar[:-1])
    plain = NoiseSchedule(zero_terminal_snr=False)
    assert plain.abar[-1].item() > 1e-5


def test_add_noise_is_ddpm_eq4():
    s = NoiseSchedule()
    x0, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 500, 999])
    xt = s.add_noise(x0, t, eps)
    for i in range(3):
        ab = s.abar[t[i]]
        assert torch.allclose(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i], atol=1e-6)
    assert torch.allclose(xt[2], eps[2])  # t = T-1: pure noise


def test_predict_x0_inverts_add_noise_and_saturates_at_the_last_step():
    s = NoiseSchedule()
    x0, eps = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 500, 900])
    assert torch.allclose(s.predict_x0(s.add_noise(x0, t, eps), t, eps), x0, atol=1e-4)
    # t = T-1 under zero terminal SNR: x_t is the noise; a wrong eps saturates to +-1 under clip, the right one
    # leaves an exact zero residual, which gives 0 (not NaN)
    last = torch.full((3,), 999)
    x_t = s.add_noise(x0, last, eps)
    est = s.predict_x0(x_t, last, eps + 0.5, clip=True)
    assert torch.equal(est.abs(), torch.ones_like(est))
    assert torch.equal(s.predict_x0(x_t, last, eps), torch.zeros_like(x0))
    # a wrong eps at t = 500 pushes the estimate out of [-1, 1]; clip clamps exactly that
    x_mid = s.add_noise(x0, t, eps)
    raw, clipped = s.predict_x0(x_mid, t, eps - 1.0), s.predict_x0(x_mid, t, eps - 1.0, clip=True)
    assert raw[1].max() > 1 and torch.equal(clipped, raw.clamp(-1, 1))


class Oracle(torch.nn.Module):
    """The exact eps-predictor for a data distribution that is a single image c."""

    def __init__(self, c, s):
        super().__init__()
        self.c, self.s, self.seen = c, s, []

    def forward(self, x, t):
        self.seen.append(t[0].item())
        ab = self.s.abar[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.c) / (1 - ab).sqrt().clamp(min=1e-12)


def test_ddim_with_an_oracle_recovers_the_data_and_visits_the_right_steps():
    s = NoiseSchedule()
    c = torch.rand(1, 1, 8, 8) * 1.6 - 0.8
    oracle = Oracle(c, s)
    out = ddim_sample(oracle, s, torch.randn(4, 1, 8, 8), steps=2)
    assert oracle.seen == [999, 499]
    assert torch.allclose(out, c.expand(4, -1, -1, -1), atol=1e-4)


def test_ddim_is_deterministic_at_eta0_and_clipped():
    torch.manual_seed(0)
    m = EpsModel("tiny").eval()
    s = NoiseSchedule()
    z = torch.randn(2, 1, 32, 32)
    a, b = ddim_sample(m, s, z, 3), ddim_sample(m, s, z, 3)
    assert torch.equal(a, b) and a.abs().max() <= 1.0


def test_paper_unet_size():
    assert abs(num_params(EpsModel("paper")) / 1e6 - 42.9) < 0.1
    assert abs(num_params(EpsModel("small")) / 1e6 - 2.73) < 0.05


def test_attention_kinds_compute_the_same_function():
    import pytest
    from diffusers.models.attention_processor import Attention, AttnProcessor
    torch.manual_seed(0)
    a = EpsModel("tiny", attention="classic")
    b = EpsModel("tiny", attention="sdpa")
    b.load_state_dict(a.state_dict())
    auto = EpsModel("tiny")
    auto.load_state_dict(a.state_dict())
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([0, 500, 999])
    with torch.no_grad():
        ya, yb, yc = a(x, t), b(x, t), auto(x, t)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-4)
    assert torch.equal(ya, yc)  # auto is classic on the CPU
    procs = [type(m.processor) for m in auto.modules() if isinstance(m, Attention)]
    assert procs and all(p is AttnProcessor for p in procs)
    # gradients agree too (the backward is where the fused CPU kernel was slow)
    for m in (a, b):
        m.zero_grad()
        m(x, t).square().mean().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-3, msg=n)
    from cldiff.model import frozen_copy
    assert frozen_copy(b).attention == "sdpa"
    with pytest.raises(ValueError, match="attention"):
        EpsModel("tiny", attention="flash")
