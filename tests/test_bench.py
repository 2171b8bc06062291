"""The benchmark's accounting (not its timings): GD costs GR plus exactly one teacher forward per replay sample."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from cldiff.bench import _strategy_child, format_table
from cldiff.model import EpsModel


def test_gd_flops_are_gr_flops_plus_one_teacher_forward():
    b = 4
    gr = _strategy_child("tiny", b, {"name": "generative_replay", "teacher_steps": 2}, 1, 0, "fp32", None, False)
    gd = _strategy_child("tiny", b, {"name": "generative_distillation", "teacher_steps": 2}, 1, 0, "fp32", None, False)
    naive = _strategy_child("tiny", b, {"name": "naive"}, 1, 0, "fp32", None, False)
    m = EpsModel("tiny").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randn(b, 1, 32, 32), torch.zeros(b, dtype=torch.long))
    fwd = fc.get_total_flops()
    assert gd["flops_per_iter"] - gr["flops_per_iter"] == fwd
    # GR: student fwd+bwd on 2B (2x naive's B) plus S=2 teacher forwards of B
    assert gr["flops_per_iter"] == 2 * naive["flops_per_iter"] + 2 * fwd
    assert gd["student_img_per_s"] / gd["img_per_s"] == 2.0


def test_table_mentions_every_strategy():
    from cldiff.strategies import REGISTRY
    rows = [{"strategy": name, "s_per_iter": 0.1 * (i + 1), "img_per_s": 40, "student_img_per_s": 40,
             "flops_per_iter": 1e9, "flops_per_s": 1e10, "frac_bf16_peak": 0.01, "peak_rss_mib": 300}
            for i, name in enumerate(sorted(REGISTRY))]
    res = {"preset": "tiny", "batch": 4, "precision": "fp32", "threads": 1, "torch": "x",
           "peak": {"bfloat16": 1e12, "float32": 5e11}, "strategies": rows,
           "generation": {"steps": 10, "batch": 8, "generation_img_per_s": 5, "forward_img_per_s": 50,
                          "peak_rss_mib": 300}, "gd_cost_over_gr": 1.1}
    t = format_table(res)
    lines = t.splitlines()
    for row in rows:  # one line per strategy, with its own time per iteration
        assert any(row["strategy"] in ln and f"{row['s_per_iter']:.2f}" in ln for ln in lines), row["strategy"]
    assert "1.00 TFLOP/s" in t and "1.10" in t


def test_replay_pool_flops_count_the_amortised_generation():
    b = 4
    gd = _strategy_child("tiny", b, {"name": "generative_distillation", "teacher_steps": 2}, 4, 0, "fp32", None, False)
    pool = _strategy_child("tiny", b, {"name": "generative_distillation", "teacher_steps": 2, "pool_every": 4},
                           4, 0, "fp32", None, False)
    m = EpsModel("tiny").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randn(b, 1, 32, 32), torch.zeros(b, dtype=torch.long))
    fwd = fc.get_total_flops()
    # 4 timed iterations, one pool refill of B images (2 DDIM steps): 2 of the 2 x 4 generation forwards remain
    assert gd["flops_per_iter"] - pool["flops_per_iter"] == 2 * fwd * 3 / 4


def test_cpu_features_tell_amx_from_avx512_bf16():
    from cldiff.bench import _cpu_line, cpu_features
    amx = cpu_features("processor : 0\nmodel name : Xeon X\nflags : fpu avx512_bf16 amx_bf16 amx_tile\n")
    plain = cpu_features("model name : EPYC Y\nflags : fpu avx512f avx512_bf16\n")
    assert amx == {"model": "Xeon X", "amx_bf16": True, "avx512_bf16": True}
    assert plain == {"model": "EPYC Y", "amx_bf16": False, "avx512_bf16": True}
    assert "AMX" in _cpu_line(amx) and "no AMX" in _cpu_line(plain)
    assert cpu_features("")["model"] == "unknown"


def test_28px_images_cost_the_pixels_fewer():
    """`--image-size 28` times the 28x28 model the quick presets train: its step does fewer FLOPs, by about the
    pixel ratio (28/32)^2 = 0.77 (convolutions scale with pixels; attention at the lowest resolution a bit more)."""
    spec = {"name": "naive"}
    f32 = _strategy_child("tiny", 4, spec, 1, 0, "fp32", None, False, None, 32)["flops_per_iter"]
    f28 = _strategy_child("tiny", 4, spec, 1, 0, "fp32", None, False, None, 28)["flops_per_iter"]
    assert 0.70 < f28 / f32 < 0.80
