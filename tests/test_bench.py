"""The benchmark's accounting (not its timings): GD costs GR plus exactly one teacher forward per replay sample."""
import pytest
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


def test_master_weight_adam_follows_fp32_adam():
    """`bf16 weights, fp32 master Adam`: the masters take the steps fp32 Adam would take on the same
    gradients, and the model's bf16 weights are the masters rounded."""
    import torch

    from cldiff.bench import MasterWeightAdam
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    ref = torch.nn.Linear(8, 4)
    ref.load_state_dict(lin.state_dict())
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    opt = MasterWeightAdam(lin, lr=1e-2)
    assert lin.weight.dtype == torch.bfloat16 and opt.masters[0].dtype == torch.float32
    for _ in range(3):
        x = torch.randn(16, 8)
        opt.zero_grad()
        lin(x.bfloat16()).float().pow(2).mean().backward()
        ref_opt.zero_grad()
        ref(x).pow(2).mean().backward()
        for m, p in zip(opt.masters, ref.parameters()):  # the same gradients, up to bf16 rounding
            p.grad = None
        for m, p, q in zip(opt.masters, ref.parameters(), lin.parameters()):
            p.grad = q.grad.float().clone()
        opt.step()
        ref_opt.step()
    for m, p, q in zip(opt.masters, ref.parameters(), lin.parameters()):
        assert torch.allclose(m, p.detach(), atol=1e-6)  # the masters: exactly fp32 Adam's trajectory
        assert torch.equal(q.detach(), m.detach().bfloat16())  # the model: the masters rounded
    assert not torch.equal(opt.masters[0], opt.masters[0].bfloat16().float())  # masters keep fp32 precision


def test_ablation_levers_time_the_same_step():
    """The --ablation rows change how a GD step runs, not what it computes: under inference_mode the teacher's
    replay and the step's losses are bit-identical to the defaults'; bf16 weights with fp32 masters, and the
    attention softmax in bf16, give the same losses up to bf16 rounding."""
    from cldiff.bench import _setup
    from cldiff.train import train_step

    def losses(opts):
        model, schedule, st, autocast, opt, x0 = _setup("tiny", 4, {"name": "generative_distillation",
                                                                   "teacher_steps": 2}, "auto", None, False, opts)
        gen = torch.Generator().manual_seed(0)
        return [train_step(model, opt, st, schedule, x0, 1, gen, autocast, 1.0) for _ in range(2)]

    ref, inf, master = losses(None), losses({"teacher_inference_mode": True}), losses({"bf16_master": True})
    soft = losses({"softmax_bf16": True})
    for a, b, c, d in zip(ref, inf, master, soft):
        assert (a["loss_real"], a["loss_replay"]) == (b["loss_real"], b["loss_replay"])
        for x in (c, d):
            assert abs(a["loss_real"] - x["loss_real"]) < 0.05 * a["loss_real"]
            assert abs(a["loss_replay"] - x["loss_replay"]) < 0.2 * a["loss_replay"] + 1e-4


def test_replay_ratio_halves_the_replay_work_of_the_replaying_strategies_only(monkeypatch):
    from cldiff import bench
    b = 4
    # --replay-ratio reaches the replaying strategies, and not LwF-like, which refuses it (it has no replay batch);
    # in-process here, without the peak timing
    monkeypatch.setattr(bench, "_in_child", lambda fn, *a: {"flops_per_s": 1e12} if fn is bench._matmul_peak
                        else fn(*a))
    res = bench.run_bench("tiny", b, ("generative_distillation", "lwf_distillation"), 1, 0, 2, "fp32",
                          False, gen_batch=2, gen_steps=1, replay_ratio=0.5)
    half = next(r for r in res["strategies"] if r["strategy"] == "generative_distillation")
    assert res["replay_ratio"] == 0.5 and "replay ratio 0.5" in format_table(res)
    gd = _strategy_child("tiny", b, {"name": "generative_distillation", "teacher_steps": 2}, 1, 0, "fp32", None, False)
    assert half["student_img_per_s"] / half["img_per_s"] == pytest.approx(1.5)  # B real + B/2 replay
    assert gd["student_img_per_s"] / gd["img_per_s"] == pytest.approx(2.0)
    m = EpsModel("tiny").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randn(1, 1, 32, 32), torch.zeros(1, dtype=torch.long))
    fwd1 = fc.get_total_flops()  # one image's forward
    train2 = _strategy_child("tiny", 4, {"name": "naive"}, 1, 0, "fp32", None, False)["flops_per_iter"] - \
        _strategy_child("tiny", 2, {"name": "naive"}, 1, 0, "fp32", None, False)["flops_per_iter"]
    # 2 replay images fewer: 3 teacher forwards each (2 DDIM steps + the target) and the student's forward and
    # backward on 2 images (what 2 more real images cost naive)
    assert gd["flops_per_iter"] - half["flops_per_iter"] == 2 * 3 * fwd1 + train2


def test_device_choice_is_checked_before_any_work(monkeypatch):
    from cldiff.bench import check_device
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        check_device("gpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        check_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="use --device cpu"):
        check_device("cuda:0")
    assert check_device("auto") == "cpu" and check_device("cpu") == "cpu"


def test_ablation_rows_follow_the_device_and_compile_choice():
    from cldiff.bench import COMPILE_ROWS, ablation_rows
    cpu = [r[0] for r in ablation_rows("cpu", False)]
    gpu = [r[0] for r in ablation_rows("cuda:1", True)]
    assert cpu[0] == gpu[0] == "defaults"
    assert not set(cpu) & set(COMPILE_ROWS) and "cudnn.benchmark" not in cpu
    assert "bf16 weights, fp32 master Adam" in cpu and "bf16 weights, fp32 master Adam" not in gpu
    assert "CUDA graphs (compile reduce-overhead, both)" in gpu and "cudnn.benchmark" in gpu
    assert "CUDA graphs (compile reduce-overhead, both)" not in [r[0] for r in ablation_rows("cpu", True)]


def test_a_failing_ablation_row_is_reported_and_the_others_still_run(monkeypatch):
    """A compiler crash in one row (a real risk with torch.compile) must not lose the rows before or after it;
    every row reaches the caller as it ends, for a run that may be cut short."""
    from cldiff import bench
    rows = [r for r in bench.ABLATION if r[0] in ("defaults", "fused Adam", "channels_last")]

    def fake(fn, *args):
        opts = args[8]
        if opts.get("fused"):
            raise RuntimeError("inductor exploded\nlong traceback")
        dt = 0.5 if opts.get("channels_last") else 1.0
        return {"s_per_iter": dt, "img_per_s": 4 / dt, "flops_per_s": 1e11 / dt, "peak_rss_mib": 100}

    monkeypatch.setattr(bench, "_in_child", fake)
    seen = []
    out = bench.run_ablation("tiny", 4, 1, 0, 2, None, rows, on_row=lambda rs: seen.append(len(rs)))
    assert seen == [1, 2, 3]
    assert out[1] == {"error": "RuntimeError: inductor exploded", "variant": "fused Adam"}
    assert out[2]["speedup_vs_defaults"] == 2.0 and out[0]["speedup_vs_defaults"] == 1.0
    t = bench.format_ablation(out, 1e12)
    assert "failed: RuntimeError: inductor exploded" in t and "2.00x" in t and "20.0%" in t  # 2e11 of 1e12


def test_protocol_estimate_counts_the_papers_iterations():
    from cldiff.bench import protocol_estimate
    pe = protocol_estimate(128, naive_s=0.1, gd_s=0.3, gen_img_per_s=1000.0, gen_steps=10)
    assert pe["iters_per_task"] == 94 * 100  # ceil(12,000 / 128) iterations per epoch, 100 epochs
    assert pe["train_hours"] == pytest.approx(9400 * (0.1 + 4 * 0.3) / 3600)
    assert pe["eval_hours"] == pytest.approx(5 * 10000 / 1000 / 3600)
    assert protocol_estimate(128, 0.1, 0.3, 1000.0, gen_steps=5)["eval_hours"] is None  # not the protocol's steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphed_gd_step_computes_what_the_eager_step_computes():
    """The CUDA-graph lever replays captured kernels: the same GD step's losses as the eager step, up to the
    rounding of a differently scheduled bf16 computation, and the teacher's replay targets unchanged."""
    from cldiff.bench import _setup, cuda_graphed
    from cldiff.train import train_step

    def losses(graphs):
        model, schedule, st, autocast, opt, x0 = _setup("tiny", 8, {"name": "generative_distillation",
                                                                   "teacher_steps": 2}, "auto", None, False, None,
                                                        32, "cuda")
        if graphs:
            model, autocast = cuda_graphed(model, st, x0, autocast)
        gen = torch.Generator("cuda").manual_seed(0)
        return [train_step(model, opt, st, schedule, x0, 1, gen, autocast, 1.0) for _ in range(3)]

    for a, b in zip(losses(False), losses(True)):
        assert b["loss_real"] == pytest.approx(a["loss_real"], rel=0.05)
        assert b["loss_replay"] == pytest.approx(a["loss_replay"], rel=0.2, abs=1e-4)


def test_local_peak_pairs_every_iteration_with_the_peak_measured_after_it(monkeypatch):
    """--local-peak: each timed iteration is set against the peak measured right after it, and the measuring
    itself is not counted in the iteration's time."""
    import statistics
    import time

    from cldiff import bench
    peaks = iter([1e12, 2e12, 4e12])
    calls, skipped = [], [0.0]
    real_clock = time.perf_counter

    def fake_peak(dtype_name, n, seconds, threads, device="cpu"):  # takes 1,000 s by the bench's clock
        calls.append((dtype_name, n, seconds))
        skipped[0] += 1000.0
        return {"flops_per_s": next(peaks)}

    monkeypatch.setattr(bench, "_matmul_peak", fake_peak)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: real_clock() + skipped[0])
    r = _strategy_child("tiny", 4, {"name": "naive"}, 3, 0, "fp32", None, False, None, 32, "cpu", 1.0)
    assert calls == [("bfloat16", 2048, 1.0)] * 3 and r["local_bf16_peaks"] == [1e12, 2e12, 4e12]
    times = r["s_per_iter_each"]
    assert len(times) == 3 and max(times) < 1000.0  # the peak measurement after each is not in its time
    assert r["s_per_iter"] == pytest.approx(sum(times) / 3)
    fl = r["flops_per_iter"]
    assert r["frac_local_bf16_peak"] == pytest.approx(statistics.median(
        [fl / times[0] / 1e12, fl / times[1] / 2e12, fl / times[2] / 4e12]))
    assert "1.00-4.00 TFLOP/s" in bench._local_peak_note(r) and "DRIFTED" in bench._local_peak_note(r)
    calls.clear()
    plain = _strategy_child("tiny", 4, {"name": "naive"}, 2, 0, "fp32", None, False)
    assert not calls and "frac_local_bf16_peak" not in plain and bench._local_peak_note(plain) == ""


def test_ablation_speedup_beside_the_peak_takes_the_drift_out(monkeypatch):
    """A row measured while the machine ran twice as fast looks 2x faster by the clock; beside the peak measured
    with it, it is level with the defaults."""
    from cldiff import bench
    rows = [r for r in bench.ABLATION if r[0] in ("defaults", "channels_last")]

    def fake(fn, *args):
        fast = args[8].get("channels_last")
        dt, peak = (0.5, 2e12) if fast else (1.0, 1e12)
        return {"s_per_iter": dt, "img_per_s": 4 / dt, "flops_per_iter": 1e11, "flops_per_s": 1e11 / dt,
                "peak_rss_mib": 100, "local_bf16_peaks": [peak], "frac_local_bf16_peak": 1e11 / dt / peak}

    monkeypatch.setattr(bench, "_in_child", fake)
    out = bench.run_ablation("tiny", 4, 1, 0, 2, None, rows, local_peak_s=1.0)
    assert out[1]["speedup_vs_defaults"] == 2.0
    assert out[1]["speedup_vs_defaults_beside_peak"] == pytest.approx(1.0)
    line = bench.format_ablation(out, 1e12).splitlines()[-1]
    assert "2.00x" in line and "1.00x the defaults beside the peak" in line and "2.00-2.00 TFLOP/s" in line
    assert "DRIFTED" not in line  # one steady peak within the row


def test_bench_refuses_a_negative_local_peak(capsys):
    from cldiff.cli import main
    assert main(["bench", "--local-peak", "-1"]) == 2
    assert "--local-peak must be >= 0" in capsys.readouterr().err
