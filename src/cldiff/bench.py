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
import time

from .sysmem import peak_rss_mib as _rss_mib


def _matmul_peak(dtype_name: str, n: int, seconds: float, threads: int | None) -> dict:
    import torch
    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    # a peak is the best the machine does: the fastest of several windows, so that a moment of contention
    # (another process, a frequency dip) does not lower it
    best, windows = 0.0, 4
    for _ in range(windows):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / windows:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return {"dtype": dtype_name, "n": n, "flops_per_s": best}


def cpu_features(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and the matrix features that decide bf16 speed (amx_bf16, avx512_bf16), from
    /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model or "unknown", "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def _setup(preset: str, batch: int, strategy: dict, precision: str, threads: int | None, fused: bool,
           opts: dict | None = None, size: int = 32):
    import torch

    from .model import EpsModel, NoiseSchedule, autocast_for
    from .strategies import TaskContext, build_strategy

    opts = opts or {}
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device("cpu")
    model = EpsModel(preset, image_size=size, attention=opts.get("attention", "auto"))
    schedule = NoiseSchedule()
    st = build_strategy(strategy)
    master = opts.get("bf16_master")
    autocast = autocast_for(dev, "fp32" if master else precision)
    if st.uses_teacher:
        st.end_task(model, TaskContext(0, None, [], schedule, dev, autocast))
        if opts.get("teacher_fp32"):
            st.teacher.float()
        if master:
            st.teacher.to(torch.bfloat16)
        if opts.get("teacher_compile"):
            st.teacher = compile_frozen(st.teacher)
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
    x0 = torch.rand(batch, 1, size, size) * 2 - 1
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


def _in_inference_mode(fn, *args):
    """The teacher's work under torch.inference_mode instead of no_grad (a speed lever of `--ablation`)."""
    import torch
    with torch.inference_mode():
        return fn(*args)


def compile_frozen(teacher):
    """torch.compile of the frozen teacher for inference, with Inductor's weight freezing (a speed lever of
    `--ablation --compile`)."""
    import torch
    import torch._inductor.config as ic
    ic.freezing = True
    return torch.compile(teacher.eval())


def _strategy_child(preset, batch, strategy, iters, warmup, precision, threads, fused, opts=None, size=32) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .train import train_step
    model, schedule, st, autocast, opt, x0 = _setup(preset, batch, strategy, precision, threads, fused, opts, size)
    net = torch.compile(model) if (opts or {}).get("compile") else model
    gen = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        train_step(net, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    student, teacher, t0 = 0, 0, time.perf_counter()
    for _ in range(iters):
        r = train_step(net, opt, st, schedule, x0, 1, gen, autocast, 1.0)
        student += r["student_images"]
        teacher += r["teacher_images"]
    dt = (time.perf_counter() - t0) / iters
    with FlopCounterMode(display=False) as fc:
        train_step(model, opt, st, schedule, x0, 1, gen, autocast, 1.0)
    flops = fc.get_total_flops()
    if getattr(st, "pool_every", 1) > 1:
        # the counted step may or may not refill the pool: count the mean teacher work of the timed steps instead
        counted = st.teacher_steps * st.generated + len(x0)
        with FlopCounterMode(display=False) as fc1, torch.no_grad():
            model(x0[:1], torch.zeros(1, dtype=torch.long))
        flops += fc1.get_total_flops() * (teacher / iters - counted)
    return {"strategy": strategy["name"], "s_per_iter": dt, "img_per_s": batch / dt,
            "student_img_per_s": student / iters / dt, "flops_per_iter": flops, "flops_per_s": flops / dt,
            "peak_rss_mib": _rss_mib()}


def _reference_child(preset, batch, teacher_steps, iters, warmup, threads, size=32) -> dict:
    """The GD iteration written the simplest way: fp32, no autocast, diffusers' UNet with its default (SDPA)
    attention, diffusers' scheduler for sampling."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler

    from .model import EpsModel, frozen_copy
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EpsModel(preset, image_size=size, attention="sdpa")
    teacher = frozen_copy(model)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=True)
    abar = sched.alphas_cumprod
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x0 = torch.rand(batch, 1, size, size) * 2 - 1

    def step():
        t = torch.randint(0, 1000, (batch,))
        eps = torch.randn_like(x0)
        ab = abar[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        with torch.no_grad():
            sched.set_timesteps(teacher_steps)
            x = torch.randn_like(x0)
            for tt in sched.timesteps:
                e = teacher(x, tt.expand(batch))
                x = sched.step(e, tt, x, eta=0.0).prev_sample
            t2 = torch.randint(0, 1000, (batch,))
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
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = (time.perf_counter() - t0) / iters
    return {"strategy": "reference_generative_distillation", "s_per_iter": dt, "img_per_s": batch / dt,
            "student_img_per_s": 2 * batch / dt, "peak_rss_mib": _rss_mib()}


def _generation_child(preset, batch, steps, precision, threads, size=32) -> dict:
    import torch

    from .model import EpsModel, NoiseSchedule, autocast_for, ddim_sample
    if threads:
        torch.set_num_threads(threads)
    model = EpsModel(preset, image_size=size).eval()
    s = NoiseSchedule()
    ac = autocast_for(torch.device("cpu"), precision)
    z = torch.randn(batch, 1, size, size)
    ddim_sample(model, s, z[:8], 1, autocast=ac)
    t0 = time.perf_counter()
    ddim_sample(model, s, z, steps, autocast=ac)
    dt = time.perf_counter() - t0
    return {"generation_img_per_s": batch / dt, "forward_img_per_s": batch * steps / dt, "steps": steps,
            "batch": batch, "peak_rss_mib": _rss_mib()}


# `cldiff bench --ablation`: the GD iteration under each speed option, one at a time against the defaults
# (bf16 autocast where supported, attention "auto", a bf16 teacher under bf16 autocast, on-the-fly replay),
# so each option's effect is measured in the same run. The "previous default" rows undo one of today's
# defaults each.
ABLATION = [
    ("defaults", {}, {}),
    ("fp32 (no autocast)", {"precision": "fp32"}, {}),
    ("sdpa attention (previous default)", {}, {"attention": "sdpa"}),
    ("fused Adam", {}, {"fused": True}),
    ("channels_last", {}, {"channels_last": True}),
    ("teacher weights fp32 (previous default)", {}, {"teacher_fp32": True}),
    ("torch.compile (student)", {}, {"compile": True}),
    ("torch.compile (teacher, frozen)", {}, {"teacher_compile": True}),
    ("teacher under inference_mode", {}, {"teacher_inference_mode": True}),
    ("bf16 weights, fp32 master Adam", {}, {"bf16_master": True}),
    ("bf16 weights + channels_last + fused", {}, {"bf16_master": True, "channels_last": True, "fused": True}),
    ("replay pool: every 4 iters", {"pool_every": 4}, {}),
]
COMPILE_ROWS = ("torch.compile (student)", "torch.compile (teacher, frozen)")  # minutes each: only with --compile


def run_ablation(preset: str, batch: int, iters: int, warmup: int, teacher_steps: int, threads: int | None,
                 skip=COMPILE_ROWS, image_size: int = 32) -> list[dict]:
    rows = []
    for label, over, opts in ABLATION:
        if label in skip:
            continue
        spec = {"name": "generative_distillation", "teacher_steps": teacher_steps}
        precision = over.get("precision", "auto")
        if "pool_every" in over:
            spec["pool_every"] = over["pool_every"]
        r = _in_child(_strategy_child, preset, batch, spec, iters, warmup, precision, threads, False, opts,
                      image_size)
        r["variant"] = label
        rows.append(r)
    base = rows[0]["s_per_iter"]
    for r in rows:
        r["speedup_vs_defaults"] = base / r["s_per_iter"]
    return rows


def _in_child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def run_bench(preset: str = "small", batch: int = 64, strategies=("naive", "generative_replay", "generative_distillation"),
              iters: int = 5, warmup: int = 2, teacher_steps: int = 2, precision: str = "auto", reference: bool = True,
              gen_batch: int = 256, gen_steps: int = 10, threads: int | None = None, fused: bool = False,
              peak_n: int = 2048, image_size: int = 32, replay_ratio: float = 1.0) -> dict:
    """``replay_ratio``: replay samples per real image (strategy.replay_ratio) for the strategies that replay."""
    import torch
    out = {"preset": preset, "batch": batch, "image_size": image_size, "precision": precision,
           "replay_ratio": replay_ratio,
           "threads": threads or torch.get_num_threads(),
           "torch": torch.__version__, "fused_adam": fused, "iters": iters, "cpu": cpu_features()}
    out["peak"] = {d: _in_child(_matmul_peak, d, peak_n, 3.0, threads)["flops_per_s"] for d in ("bfloat16", "float32")}
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
        r = _in_child(_strategy_child, preset, batch, spec, iters, warmup, precision, threads, fused, None, image_size)
        r["frac_bf16_peak"] = r["flops_per_s"] / out["peak"]["bfloat16"]
        r["frac_fp32_peak"] = r["flops_per_s"] / out["peak"]["float32"]
        rows.append(r)
    if reference:
        ref = _in_child(_reference_child, preset, batch, teacher_steps, max(2, iters // 2), 1, threads, image_size)
        rows.append(ref)
        gd = next((r for r in rows if r["strategy"] == "generative_distillation"), None)
        if gd is not None:
            out["gd_speedup_vs_reference"] = ref["s_per_iter"] / gd["s_per_iter"]
    gr = next((r for r in rows if r["strategy"] == "generative_replay"), None)
    gd = next((r for r in rows if r["strategy"] == "generative_distillation"), None)
    if gr and gd:
        out["gd_cost_over_gr"] = gd["s_per_iter"] / gr["s_per_iter"]
    out["strategies"] = rows
    out["generation"] = _in_child(_generation_child, preset, gen_batch, gen_steps, precision, threads, image_size)
    return out


def format_table(res: dict) -> str:
    ratio = res.get("replay_ratio", 1.0)
    lines = [f"preset {res['preset']}, batch {res['batch']}, {res.get('image_size', 32)}x{res.get('image_size', 32)} images, "
             + (f"replay ratio {ratio:g}, " if ratio != 1.0 else "") +
             f"precision {res['precision']}, threads {res['threads']}, "
             f"torch {res['torch']}",
             _cpu_line(res.get("cpu")),
             f"matmul peak: bf16 {res['peak']['bfloat16'] / 1e12:.2f} TFLOP/s, fp32 {res['peak']['float32'] / 1e12:.2f} TFLOP/s",
             "",
             f"{'strategy':36s} {'s/iter':>8s} {'img/s':>8s} {'student/s':>10s} {'GFLOP/it':>9s} {'TFLOP/s':>8s} "
             f"{'%bf16pk':>8s} {'RSS MiB':>8s}"]
    for r in res["strategies"]:
        fl = r.get("flops_per_iter")
        lines.append(f"{r['strategy']:36s} {r['s_per_iter']:8.3f} {r['img_per_s']:8.1f} {r['student_img_per_s']:10.1f} "
                     f"{(fl or 0) / 1e9:9.1f} {r.get('flops_per_s', 0) / 1e12:8.3f} "
                     f"{100 * r.get('frac_bf16_peak', 0):7.1f}% {r['peak_rss_mib']:8.0f}")
    g = res["generation"]
    lines.append(f"\nDDIM generation ({g['steps']} steps, batch {g['batch']}): {g['generation_img_per_s']:.1f} images/s "
                 f"({g['forward_img_per_s']:.0f} UNet forwards/s), peak RSS {g['peak_rss_mib']:.0f} MiB")
    if "gd_speedup_vs_reference" in res:
        lines.append(f"GD iteration vs plain reference: {res['gd_speedup_vs_reference']:.2f}x faster")
    if "gd_cost_over_gr" in res:
        lines.append(f"GD iteration cost / GR iteration cost: {res['gd_cost_over_gr']:.2f}")
    return "\n".join(lines)


def format_ablation(rows: list[dict]) -> str:
    lines = ["", "GD iteration, one option at a time (--ablation):",
             f"{'variant':36s} {'s/iter':>8s} {'img/s':>8s} {'vs defaults':>11s} {'RSS MiB':>8s}"]
    for r in rows:
        lines.append(f"{r['variant']:36s} {r['s_per_iter']:8.3f} {r['img_per_s']:8.1f} "
                     f"{r['speedup_vs_defaults']:10.2f}x {r['peak_rss_mib']:8.0f}")
    return "\n".join(lines)


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
    if not args.replay_ratio > 0:
        raise ValueError(f"--replay-ratio must be > 0 (replay samples per real image; 1: as many), got "
                         f"{args.replay_ratio}")
    res = run_bench(args.preset, args.batch, names, args.iters, args.warmup,
                    args.teacher_steps, args.precision, not args.no_reference, threads=args.threads, fused=args.fused,
                    image_size=args.image_size, replay_ratio=args.replay_ratio)
    if args.ablation:
        skip = () if args.compile else COMPILE_ROWS
        res["ablation"] = run_ablation(args.preset, args.batch, args.iters, args.warmup, args.teacher_steps,
                                       args.threads, skip, args.image_size)
    print(format_table(res))
    if args.ablation:
        print(format_ablation(res["ablation"]))
    if args.out:
        from pathlib import Path
        Path(args.out).write_text(json.dumps(res, indent=1))
        print(f"\nJSON: {args.out}")
    return 0
