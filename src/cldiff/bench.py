"""`cldiff bench`: throughput of each strategy's training iteration against this machine's limits.

Every measurement runs in its own child process, so that its peak resident
memory (ru_maxrss) is its own. Reported per strategy: current-task images/s,
student images/s, FLOPs per iteration (torch.utils.flop_counter, fwd + bwd of
the student and every teacher forward), achieved FLOP/s and its fraction of
the bf16 and fp32 matmul peaks measured in the same run; DDIM generation
throughput; and a plain reference (fp32, no autocast, the teacher sampling
through diffusers' DDIMScheduler) for the GD iteration, so speed-ups are ratios
measured in one run on one machine.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time

from .sysmem import cpu_features
from .sysmem import peak_rss_mib as _rss_mib


def _sync(dev) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously: a timer must not stop before it is done)."""
    import torch
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize(dev)


def _matmul_peak(dtype_name: str, n: int, seconds: float, threads: int | None, device: str = "cpu") -> dict:
    import torch
    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    # a peak is the best the machine does: the fastest of several windows, so that a moment of contention
    # (another process, a frequency dip) does not lower it. On a GPU the products are queued in groups of 8 and
    # waited for, so that the clock measures finished work.
    best, windows, group = 0.0, 4, 8 if torch.device(device).type == "cuda" else 1
    for _ in range(windows):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / windows:
            for _ in range(group):
                a @ b
            _sync(device)
            reps += group
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return {"dtype": dtype_name, "n": n, "flops_per_s": best}


def device_info(device: str) -> dict:
    """What the figures were measured on: the CPU's features, and for a GPU its name and torch's CUDA version."""
    import torch
    info = {"device": device, "cpu": cpu_features()}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _setup(preset: str, batch: int, strategy: dict, precision: str, threads: int | None, fused: bool,
           opts: dict | None = None, size: int = 32, device: str = "cpu"):
    import torch

    from .model import EpsModel, NoiseSchedule, autocast_for
    from .strategies import TaskContext, build_strategy

    opts = opts or {}
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    if dev.type == "cuda" and opts.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    model = EpsModel(preset, image_size=size, attention=opts.get("attention", "auto")).to(dev)
    if opts.get("softmax_bf16"):
        softmax_in_autocast_dtype(model)
    schedule = NoiseSchedule(device=dev)
    st = build_strategy(strategy)
    master = opts.get("bf16_master")
    autocast = autocast_for(dev, "fp32" if master else precision)
    if st.uses_teacher:
        st.end_task(model, TaskContext(0, None, [], schedule, dev, autocast))
        if opts.get("softmax_bf16"):  # the teacher is built anew from the preset
            softmax_in_autocast_dtype(st.teacher)
        if opts.get("teacher_fp32"):
            st.teacher.float()
        if master:
            st.teacher.to(torch.bfloat16)
        if opts.get("teacher_compile"):
            st.teacher = compile_frozen(st.teacher, opts.get("compile_mode"))
        if opts.get("teacher_inference_mode"):
            replay = st.replay
            st.replay = lambda ctx: _in_inference_mode(replay, ctx)
    if opts.get("channels_last"):
        model.to(memory_format=torch.channels_last)
        if st.uses_teacher and not opts.get("teacher_compile"):
            st.teacher.to(memory_format=torch.channels_last)
    fused_adam = (fused or opts.get("fused")) or None
    if master:
        opt = MasterWeightAdam(model, lr=2e-4, fused=fused_adam)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=fused_adam)
    x0 = torch.rand(batch, 1, size, size, device=dev) * 2 - 1
    return model, schedule, st, autocast, opt, x0


class MasterWeightAdam:
    """Adam on fp32 master copies of a model whose own weights are bf16 (a speed lever of `--ablation`, not a
    training option): the forward and backward run in bf16 end to end, with no autocast casts; each step
    copies the bf16 gradients to the masters, steps there and rounds the result back into the model."""

    def __init__(self, model, lr: float, fused=None):
        import torch
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in model.parameters() if p.requires_grad]
        model.to(torch.bfloat16)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.masters, lr=lr, fused=fused)

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    def step(self):
        import torch
        for m, p in zip(self.masters, self.params):
            m.grad = None if p.grad is None else p.grad.float()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.masters)


def softmax_in_autocast_dtype(model) -> None:
    """The attention softmax in the activations' dtype (a speed lever of `--ablation`): diffusers' attention
    blocks cast the scores to fp32 before the softmax and the probabilities back after it (upcast_softmax); torch's
    CPU softmax on bf16 accumulates in fp32 by itself, so the two casts and their backward are what this removes."""
    from diffusers.models.attention_processor import Attention
    for m in model.modules():
        if isinstance(m, Attention):
            m.upcast_softmax = False


def _in_inference_mode(fn, *args):
    """The teacher's work under torch.inference_mode instead of no_grad (a speed lever of `--ablation`)."""
    import torch
    with torch.inference_mode():
        return fn(*args)


def compile_frozen(teacher, mode: str | None = None):
    """torch.compile of the frozen teacher for inference, with Inductor's weight freezing (a speed lever of
    `--ablation --compile`; ``mode`` "reduce-overhead" replays it as CUDA graphs on a GPU)."""
    import torch
    import torch._inductor.config as ic
    ic.freezing = True
    return torch.compile(teacher.eval(), mode=mode)


def cuda_graphed(model, st, x0, autocast):
    """CUDA graphs without a compiler (a lever of `--ablation` on a GPU, GD at replay ratio 1): the student's
    forward and backward through torch.cuda.make_graphed_callables at the step's 2B student rows, and the frozen
    teacher's forward captured once at the B replay rows, replayed for every DDIM step and for the target (a
    call of another shape runs eagerly). Returns the student and an autocast factory without autocast's weight
    cache, which graphed callables require."""
    import torch

    from .model import _Autocast

    class NoCache(_Autocast):
        def __call__(self):
            return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False)

    ac = NoCache(autocast.device_type, autocast.dtype) if isinstance(autocast, _Autocast) else autocast
    dev, b = x0.device, len(x0)
    with ac():
        model = torch.cuda.make_graphed_callables(
            model, (torch.zeros(2 * b, *x0.shape[1:], device=dev), torch.zeros(2 * b, dtype=torch.long, device=dev)))
    teacher, orig = st.teacher, st.teacher.forward
    xs, ts = torch.zeros_like(x0), torch.zeros(b, dtype=torch.long, device=dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad(), ac():
        for _ in range(3):
            teacher(xs, ts)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), ac(), torch.cuda.graph(graph):
        out = teacher(xs, ts)

    def forward(x, t, y=None):
        if y is not None or x.shape != xs.shape or x.dtype != xs.dtype or t.shape != ts.shape:
            return orig(x, t, y)
        xs.copy_(x)
        ts.copy_(t)
        graph.replay()
        return out.clone()  # the next replay overwrites `out`

    teacher.forward = forward
    return model, ac


def _strategy_child(preset, batch, strategy, iters, warmup, precision, threads, fused, opts=None, size=32,
                    device="cpu", local_peak_s: float = 0.0) -> dict:
    """One strategy's training iteration, timed. ``local_peak_s`` > 0: after every timed iteration the bf16
    matmul peak is measured for that many seconds (not counted in the iteration's time), and the row gets its
    fraction of the peak measured beside each iteration (the median over the iterations): on a machine whose
    speed drifts (a shared virtual machine), a peak measured once at the start mixes the drift into the figure."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .train import train_step
    model, schedule, st, autocast, opt, x0 = _setup(preset, batch, strategy, precision, threads, fused, opts, size,
                                                    device)
    opts = opts or {}
    gen = torch.Generator(torch.device(device)).manual_seed(0)
    with FlopCounterMode(display=False) as fc:  # counted eagerly, before any compiler or graph hides the work
        train_step(model, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    flops = fc.get_total_flops()
    if getattr(st, "pool_every", 1) > 1:
        # the counted step may or may not have refilled the pool: count the mean teacher work of the timed steps
        # instead (below); here what the counted step did, and one image's forward
        counted = st.teacher_steps * st.generated + len(x0)
        with FlopCounterMode(display=False) as fc1, torch.no_grad():
            model(x0[:1], torch.zeros(1, dtype=torch.long, device=x0.device))
        flops -= fc1.get_total_flops() * counted
        fwd1 = fc1.get_total_flops()
    net = torch.compile(model, mode=opts.get("compile_mode")) if opts.get("compile") else model
    if opts.get("cuda_graphs"):
        net, autocast = cuda_graphed(model, st, x0, autocast)
    for _ in range(warmup):
        train_step(net, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    _sync(device)
    student, teacher, times, peaks = 0, 0, [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        r = train_step(net, opt, st, schedule, x0, 1, gen, autocast, 1.0)
        _sync(device)
        times.append(time.perf_counter() - t0)
        student += r["student_images"]
        teacher += r["teacher_images"]
        if local_peak_s > 0:
            peaks.append(_matmul_peak("bfloat16", _peak_n(device), local_peak_s, None, device)["flops_per_s"])
    dt = sum(times) / iters
    if getattr(st, "pool_every", 1) > 1:
        flops += fwd1 * teacher / iters
    out = {"strategy": strategy["name"], "s_per_iter": dt, "img_per_s": batch / dt,
           "student_img_per_s": student / iters / dt, "flops_per_iter": flops, "flops_per_s": flops / dt,
           "s_per_iter_each": times, "peak_rss_mib": _rss_mib(), **_gpu_mem(device)}
    if peaks:
        out["local_bf16_peaks"] = peaks
        out["frac_local_bf16_peak"] = statistics.median(flops / t / p for t, p in zip(times, peaks))
    return out


def _peak_n(device: str) -> int:
    """The side of the square products that measure the matmul peak: 2048 on a CPU, 8192 on a GPU."""
    return 8192 if device.startswith("cuda") else 2048


# Peaks measured beside one row that differ by more than this factor: the machine's speed moved within the row
# faster than the peak measurements can follow (on a steady machine they agree within a few percent).
DRIFT = 1.25


def _local_peak_note(r: dict) -> str:
    """A row's fraction of the bf16 peak measured beside its iterations (``--local-peak``), and the peaks' range:
    a wide range says the machine's speed drifted while the row ran."""
    if "frac_local_bf16_peak" not in r:
        return ""
    lo, hi = min(r["local_bf16_peaks"]) / 1e12, max(r["local_bf16_peaks"]) / 1e12
    vs = r.get("speedup_vs_defaults_beside_peak")
    return (f"{100 * r['frac_local_bf16_peak']:.1f}% of the peak beside it ({lo:.2f}-{hi:.2f} TFLOP/s)"
            + (f", {vs:.2f}x the defaults beside the peak" if vs is not None else "")
            + (" DRIFTED within the row: compare it in alternation (docs/results/bench/interleaved.py)"
               if hi > DRIFT * lo else ""))


def _gpu_mem(device) -> dict:
    """The GPU memory a child's work took at most (only on a GPU)."""
    import torch
    if torch.device(device).type != "cuda":
        return {}
    return {"peak_gpu_mib": torch.cuda.max_memory_allocated(torch.device(device)) / 2**20}


def _reference_child(preset, batch, teacher_steps, iters, warmup, threads, size=32, device="cpu") -> dict:
    """The GD iteration written the simplest way: fp32, no autocast, diffusers' UNet with its default (SDPA)
    attention, diffusers' scheduler for sampling."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler

    from .model import EpsModel, frozen_copy
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = EpsModel(preset, image_size=size, attention="sdpa").to(dev)
    teacher = frozen_copy(model)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=True)
    abar = sched.alphas_cumprod.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x0 = torch.rand(batch, 1, size, size, device=dev) * 2 - 1

    def step():
        t = torch.randint(0, 1000, (batch,), device=dev)
        eps = torch.randn_like(x0)
        ab = abar[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        with torch.no_grad():
            sched.set_timesteps(teacher_steps)
            x = torch.randn_like(x0)
            for tt in sched.timesteps:
                e = teacher(x, tt.to(dev).expand(batch))
                x = sched.step(e, tt, x, eta=0.0).prev_sample
            t2 = torch.randint(0, 1000, (batch,), device=dev)
            ab2 = abar[t2].view(-1, 1, 1, 1)
            xr = ab2.sqrt() * x + (1 - ab2).sqrt() * torch.randn_like(x0)
            target = teacher(xr, t2)
        out = model(torch.cat([x_t, xr]), torch.cat([t, t2]))
        loss = 0.5 * F.mse_loss(out[:batch], eps) + 0.5 * F.mse_loss(out[batch:], target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(dev)
    dt = (time.perf_counter() - t0) / iters
    return {"strategy": "reference_generative_distillation", "s_per_iter": dt, "img_per_s": batch / dt,
            "student_img_per_s": 2 * batch / dt, "peak_rss_mib": _rss_mib(), **_gpu_mem(device)}


def _generation_child(preset, batch, steps, precision, threads, size=32, device="cpu") -> dict:
    import torch

    from .model import EpsModel, NoiseSchedule, autocast_for, ddim_sample
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    model = EpsModel(preset, image_size=size).to(dev).eval()
    s = NoiseSchedule(device=dev)
    ac = autocast_for(dev, precision)
    z = torch.randn(batch, 1, size, size, device=dev)
    ddim_sample(model, s, z, 1, autocast=ac)  # warm-up at the full batch (a GPU picks its kernels per shape)
    _sync(dev)
    t0 = time.perf_counter()
    ddim_sample(model, s, z, steps, autocast=ac)
    _sync(dev)
    dt = time.perf_counter() - t0
    return {"generation_img_per_s": batch / dt, "forward_img_per_s": batch * steps / dt, "steps": steps,
            "batch": batch, "peak_rss_mib": _rss_mib(), **_gpu_mem(device)}


# `cldiff bench --ablation`: the GD iteration under each speed option, one at a time against the defaults
# (bf16 autocast where supported, attention "auto", a bf16 teacher under bf16 autocast, on-the-fly replay),
# so each option's effect is measured in the same run. The "previous default" rows undo one of today's
# defaults each. The last field says where a row applies: "any" device, only "cpu" (the CPU's own levers and
# choices, left out on a GPU, where device time is scarce) or only "cuda".
ABLATION = [
    ("defaults", {}, {}, "any"),
    ("fp32 (no autocast)", {"precision": "fp32"}, {}, "any"),
    ("sdpa attention (previous default)", {}, {"attention": "sdpa"}, "cpu"),
    ("fused Adam", {}, {"fused": True}, "any"),
    ("channels_last", {}, {"channels_last": True}, "any"),
    ("cudnn.benchmark", {}, {"cudnn_benchmark": True}, "cuda"),
    ("teacher weights fp32 (previous default)", {}, {"teacher_fp32": True}, "cpu"),
    ("teacher under inference_mode", {}, {"teacher_inference_mode": True}, "cpu"),
    ("bf16 weights, fp32 master Adam", {}, {"bf16_master": True}, "cpu"),
    ("bf16 weights + channels_last + fused", {}, {"bf16_master": True, "channels_last": True, "fused": True}, "cpu"),
    ("attention softmax in bf16", {}, {"softmax_bf16": True}, "cpu"),
    ("replay pool: every 4 iters", {"pool_every": 4}, {}, "any"),
    ("CUDA graphs, captured (no compiler)", {}, {"cuda_graphs": True}, "cuda"),
    ("CUDA graphs, captured + fused Adam", {}, {"cuda_graphs": True, "fused": True}, "cuda"),
    ("torch.compile (student + teacher)", {}, {"compile": True, "teacher_compile": True}, "any"),
    ("CUDA graphs (compile reduce-overhead, both)", {},
     {"compile": True, "teacher_compile": True, "compile_mode": "reduce-overhead"}, "cuda"),
    ("compile both + channels_last + fused + cudnn.benchmark", {},
     {"compile": True, "teacher_compile": True, "channels_last": True, "fused": True, "cudnn_benchmark": True}, "cuda"),
    ("torch.compile (student)", {}, {"compile": True}, "cpu"),
    ("torch.compile (teacher, frozen)", {}, {"teacher_compile": True}, "cpu"),
]
# minutes each: only with --compile
COMPILE_ROWS = tuple(label for label, _, opts, _ in ABLATION if opts.get("compile") or opts.get("teacher_compile"))


def ablation_rows(device: str, with_compile: bool) -> list[tuple]:
    """The --ablation rows that apply on ``device`` ("cpu" or "cuda..."), without the compile rows unless asked."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return [row for row in ABLATION if row[3] in ("any", kind) and (with_compile or row[0] not in COMPILE_ROWS)]


def run_ablation(preset: str, batch: int, iters: int, warmup: int, teacher_steps: int, threads: int | None,
                 rows_wanted=None, image_size: int = 32, device: str = "cpu", on_row=None,
                 local_peak_s: float = 0.0) -> list[dict]:
    """Each row in its own child process. A row that fails (a compiler error, say) is kept with its error and
    the others still run; ``on_row(rows)`` is called after each, so that a long run's results are saved as
    they come."""
    rows = []
    for label, over, opts, _ in (rows_wanted if rows_wanted is not None else ablation_rows(device, False)):
        spec = {"name": "generative_distillation", "teacher_steps": teacher_steps}
        precision = over.get("precision", "auto")
        if "pool_every" in over:
            spec["pool_every"] = over["pool_every"]
        try:
            r = _in_child(_strategy_child, preset, batch, spec, iters, warmup, precision, threads, False, opts,
                          image_size, device, local_peak_s)
        except Exception as e:  # noqa: BLE001 - a row's failure is a result, reported beside the others
            r = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
        r["variant"] = label
        rows.append(r)
        ok = [x for x in rows if "error" not in x]
        if ok and ok[0]["variant"] == "defaults":
            d = ok[0]
            for x in ok:
                x["speedup_vs_defaults"] = d["s_per_iter"] / x["s_per_iter"]
                if "frac_local_bf16_peak" in x and "frac_local_bf16_peak" in d:
                    # the same ratio with every iteration's time scaled by the peak measured beside it: what is
                    # left of the option's effect when the machine's speed drifted between the rows
                    x["speedup_vs_defaults_beside_peak"] = ((x["frac_local_bf16_peak"] / x["flops_per_iter"])
                                                           / (d["frac_local_bf16_peak"] / d["flops_per_iter"]))
        if on_row is not None:
            on_row(rows)
    return rows


def _in_child(fn, *args):
    """fn(*args) in a fresh process (its own peak memory, its own compiler and device state). A child that dies
    (a crash in a compiler or a driver) raises BrokenProcessPool here instead of leaving the bench waiting."""
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_bench(preset: str = "small", batch: int = 64, strategies=("naive", "generative_replay", "generative_distillation"),
              iters: int = 5, warmup: int = 2, teacher_steps: int = 2, precision: str = "auto", reference: bool = True,
              gen_batch: int = 256, gen_steps: int = 10, threads: int | None = None, fused: bool = False,
              peak_n: int | None = None, image_size: int = 32, replay_ratio: float = 1.0,
              device: str = "cpu", local_peak_s: float = 0.0) -> dict:
    """``replay_ratio``: replay samples per real image (strategy.replay_ratio) for the strategies that replay.
    ``device``: cpu, or cuda / cuda:N (every figure is then the GPU's; the peak is an 8192-square product).
    ``local_peak_s``: seconds of peak measurement after every timed training iteration (0: none; see
    _strategy_child)."""
    import torch
    out = {"preset": preset, "batch": batch, "image_size": image_size, "precision": precision,
           "replay_ratio": replay_ratio,
           "threads": threads or torch.get_num_threads(),
           "torch": torch.__version__, "fused_adam": fused, "iters": iters,
           **_in_child(device_info, device)}
    n = peak_n or _peak_n(device)
    out["peak"] = {d: _in_child(_matmul_peak, d, n, 3.0, threads, device)["flops_per_s"]
                   for d in ("bfloat16", "float32")}
    import dataclasses

    from .strategies import REGISTRY
    rows = []
    for name in strategies:
        spec = {"name": name}
        fields = {f.name for f in dataclasses.fields(REGISTRY[name])}
        if "teacher_steps" in fields:  # strategies that generate
            spec["teacher_steps"] = teacher_steps
        if replay_ratio != 1.0 and "replay_ratio" in fields and not REGISTRY[name](replay_ratio=replay_ratio).check():
            spec["replay_ratio"] = replay_ratio  # (not where the strategy refuses it: LwF-like has no replay batch)
        r = _in_child(_strategy_child, preset, batch, spec, iters, warmup, precision, threads, fused, None, image_size,
                      device, local_peak_s)
        r["frac_bf16_peak"] = r["flops_per_s"] / out["peak"]["bfloat16"]
        r["frac_fp32_peak"] = r["flops_per_s"] / out["peak"]["float32"]
        rows.append(r)
    if reference:
        ref = _in_child(_reference_child, preset, batch, teacher_steps, max(2, iters // 2), 1, threads, image_size,
                        device)
        rows.append(ref)
        gd = next((r for r in rows if r["strategy"] == "generative_distillation"), None)
        if gd is not None:
            out["gd_speedup_vs_reference"] = ref["s_per_iter"] / gd["s_per_iter"]
    gr = next((r for r in rows if r["strategy"] == "generative_replay"), None)
    gd = next((r for r in rows if r["strategy"] == "generative_distillation"), None)
    if gr and gd:
        out["gd_cost_over_gr"] = gd["s_per_iter"] / gr["s_per_iter"]
    out["strategies"] = rows
    out["generation"] = _in_child(_generation_child, preset, gen_batch, gen_steps, precision, threads, image_size,
                                  device)
    naive = next((r for r in rows if r["strategy"] == "naive"), None)
    if naive and gd:
        out["protocol_estimate"] = protocol_estimate(batch, naive["s_per_iter"], gd["s_per_iter"],
                                                     out["generation"]["generation_img_per_s"], gen_steps)
    return out


# The paper's Split Fashion-MNIST protocol (docs/protocol.md): 5 tasks of 2 classes (12,000 training images
# each), 100 epochs per task, 10,000 samples at 10 DDIM steps for the evaluation after every task.
PROTOCOL = {"tasks": 5, "images_per_task": 12000, "epochs": 100, "eval_samples": 10000, "eval_steps": 10}


def protocol_estimate(batch: int, naive_s: float, gd_s: float, gen_img_per_s: float, gen_steps: int) -> dict:
    """The time the paper's full GD run would take at the measured iterations: task 0 at the naive iteration's
    speed (nothing to replay yet), the later tasks at GD's, ceil(12,000 / batch) iterations per epoch; the
    evaluation's sampling from the generation throughput (only when it was measured at the protocol's 10 steps).
    FID feature extraction, checkpoints and data loading are left out: they are small beside these."""
    import math
    p = PROTOCOL
    iters = math.ceil(p["images_per_task"] / batch) * p["epochs"]
    train_s = iters * naive_s + (p["tasks"] - 1) * iters * gd_s
    eval_s = p["tasks"] * p["eval_samples"] / gen_img_per_s if gen_steps == p["eval_steps"] else None
    return {"iters_per_task": iters, "train_hours": train_s / 3600,
            "eval_hours": None if eval_s is None else eval_s / 3600,
            "total_hours": train_s / 3600 + (eval_s or 0) / 3600, **{k: v for k, v in p.items()}}


def format_table(res: dict) -> str:
    ratio = res.get("replay_ratio", 1.0)
    lines = [f"preset {res['preset']}, batch {res['batch']}, {res.get('image_size', 32)}x{res.get('image_size', 32)} images, "
             + (f"replay ratio {ratio:g}, " if ratio != 1.0 else "") +
             f"precision {res['precision']}, threads {res['threads']}, "
             f"torch {res['torch']}",
             _device_line(res),
             f"matmul peak: bf16 {res['peak']['bfloat16'] / 1e12:.2f} TFLOP/s, fp32 {res['peak']['float32'] / 1e12:.2f} TFLOP/s",
             "",
             f"{'strategy':36s} {'s/iter':>8s} {'img/s':>8s} {'student/s':>10s} {'GFLOP/it':>9s} {'TFLOP/s':>8s} "
             f"{'%bf16pk':>8s} {'RSS MiB':>8s}"]
    for r in res["strategies"]:
        fl = r.get("flops_per_iter")
        lines.append(f"{r['strategy']:36s} {r['s_per_iter']:8.3f} {r['img_per_s']:8.1f} {r['student_img_per_s']:10.1f} "
                     f"{(fl or 0) / 1e9:9.1f} {r.get('flops_per_s', 0) / 1e12:8.3f} "
                     f"{100 * r.get('frac_bf16_peak', 0):7.1f}% {r['peak_rss_mib']:8.0f}")
    beside = [(r["strategy"], _local_peak_note(r)) for r in res["strategies"]]
    if any(note for _, note in beside):
        lines.append("\nthe bf16 matmul peak measured after every timed iteration (--local-peak), each iteration "
                     "against its own (median):")
        lines += [f"  {name:34s} {note}" for name, note in beside if note]
    g = res["generation"]
    lines.append(f"\nDDIM generation ({g['steps']} steps, batch {g['batch']}): {g['generation_img_per_s']:.1f} images/s "
                 f"({g['forward_img_per_s']:.0f} UNet forwards/s), peak RSS {g['peak_rss_mib']:.0f} MiB"
                 + (f", GPU {g['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in g else ""))
    if "gd_speedup_vs_reference" in res:
        lines.append(f"GD iteration vs plain reference: {res['gd_speedup_vs_reference']:.2f}x faster")
    if "gd_cost_over_gr" in res:
        lines.append(f"GD iteration cost / GR iteration cost: {res['gd_cost_over_gr']:.2f}")
    pe = res.get("protocol_estimate")
    if pe:
        ev = f" + {pe['eval_hours']:.2f} h of evaluation sampling" if pe["eval_hours"] is not None else ""
        lines.append(f"The paper's protocol at these speeds ({pe['tasks']} tasks x {pe['epochs']} epochs, "
                     f"{pe['iters_per_task']} iterations per task; task 0 at naive's iteration, the rest at GD's): "
                     f"{pe['train_hours']:.2f} h of training{ev}")
    return "\n".join(lines)


def format_ablation(rows: list[dict], peak_bf16: float | None = None) -> str:
    """``peak_bf16``: the measured bf16 matmul peak, for each row's fraction of it."""
    w = max(len(label) for label, *_ in ABLATION)
    lines = ["", "GD iteration, one option at a time (--ablation):",
             f"{'variant':{w}s} {'s/iter':>8s} {'img/s':>8s} {'vs defaults':>11s} {'%bf16pk':>8s} {'RSS MiB':>8s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['variant']:{w}s} failed: {r['error']}")
            continue
        frac = f"{100 * r['flops_per_s'] / peak_bf16:7.1f}%" if peak_bf16 and "flops_per_s" in r else f"{'-':>8s}"
        vs = f"{r['speedup_vs_defaults']:10.2f}x" if "speedup_vs_defaults" in r else f"{'-':>11s}"
        note = _local_peak_note(r)
        lines.append(f"{r['variant']:{w}s} {r['s_per_iter']:8.3f} {r['img_per_s']:8.1f} {vs} {frac} "
                     f"{r['peak_rss_mib']:8.0f}" + (f"  GPU {r['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in r else "")
                     + (f"  {note}" if note else ""))
    return "\n".join(lines)


def _device_line(res: dict) -> str:
    cpu = _cpu_line(res.get("cpu"))
    if res.get("gpu"):
        return f"device: {res['device']} ({res['gpu']}, CUDA {res.get('cuda')}); host {cpu}"
    return cpu


def _cpu_line(cpu: dict | None) -> str:
    if not cpu:
        return "cpu: not recorded"
    kind = "AMX (amx_bf16)" if cpu["amx_bf16"] else ("avx512_bf16, no AMX" if cpu["avx512_bf16"] else "no bf16 matrix units")
    return f"cpu: {cpu['model']}; {kind}"


def main_bench(args) -> int:
    from .strategies import REGISTRY
    names = tuple(sorted(REGISTRY)) if args.strategies == "all" else tuple(args.strategies.split(","))
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"--strategies: unknown {', '.join(unknown)}; allowed: {', '.join(sorted(REGISTRY))} or all")
    if args.image_size not in (28, 32):
        raise ValueError(f"--image-size must be 28 or 32 (data.image_size), got {args.image_size}")
    if not args.local_peak >= 0:
        raise ValueError(f"--local-peak must be >= 0 (seconds of peak measurement after every timed iteration; "
                         f"0: none), got {args.local_peak}")
    if not args.replay_ratio > 0:
        raise ValueError(f"--replay-ratio must be > 0 (replay samples per real image; 1: as many), got "
                         f"{args.replay_ratio}")
    device = check_device(args.device)
    res = run_bench(args.preset, args.batch, names, args.iters, args.warmup,
                    args.teacher_steps, args.precision, not args.no_reference, threads=args.threads, fused=args.fused,
                    image_size=args.image_size, replay_ratio=args.replay_ratio, device=device,
                    local_peak_s=args.local_peak)
    print(format_table(res), flush=True)

    def save():
        if args.out:
            from pathlib import Path
            tmp = Path(str(args.out) + ".tmp")
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(args.out)

    save()
    if args.ablation:
        res["ablation"] = []

        def on_row(rows):  # each row printed and saved as it comes: a long --compile run keeps what it measured
            res["ablation"] = rows
            save()
            print(format_ablation(rows[-1:], res["peak"]["bfloat16"]).splitlines()[-1], flush=True)

        print(format_ablation([], res["peak"]["bfloat16"]), flush=True)
        run_ablation(args.preset, args.batch, args.iters, args.warmup, args.teacher_steps, args.threads,
                     ablation_rows(device, args.compile), args.image_size, device, on_row, args.local_peak)
        print(format_ablation(res["ablation"], res["peak"]["bfloat16"]))
    if args.out:
        print(f"\nJSON: {args.out}")
    return 0


def check_device(name: str) -> str:
    """``--device``: auto (a GPU where there is one), cpu, cuda or cuda:N; a clear error where it cannot run."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu")
    return name
