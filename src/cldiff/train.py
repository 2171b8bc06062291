"""The one training loop: task by task, one minibatch at a time.

Per step (PROTOCOL.md sections 2-3): draw B real images of the current task,
t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps; ask
the strategy for its replay batch; one student forward on [real ; replay];
loss = w_real MSE(real) + w_replay MSE(replay) (+ the strategy's penalty);
Adam step with gradient-norm clipping. The loop never asks which strategy runs.
"""
from __future__ import annotations

import json
import math
import contextlib
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import list_checkpoints, load_latest, save_checkpoint
from .runfolder import MetricsLog, NullLog, RunError, normalised_config, prepare_run_dir, write_eval_csv
from .config import EXECUTION_ONLY, Config
from .data import ContinualData, save_grid
from .dist import DistEnv, setup as dist_setup, teardown as dist_teardown, wrap as dist_wrap
from .model import EpsModel, NoiseSchedule, autocast_for, ddim_sample, frozen_copy, resolve_device
from .recipe import EMA, lr_at
from .strategies import StepContext, TaskContext, build_strategy
from .sysmem import peak_rss_mib, release_memory


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf (exit status 3)."""


def steps_for_task(cfg: Config, k: int, n_images: int) -> int:
    t = cfg.train
    if k == 0 and t.first_task_steps is not None:
        return t.first_task_steps
    if t.steps_per_task is not None:
        return t.steps_per_task
    # PROTOCOL.md: 12,000 images at batch 128 is 94 iterations per epoch (the last batch is partial).
    return max(1, round(t.epochs_per_task * math.ceil(n_images / t.batch_size)))


def _rank_seed(seed: int, rank: int) -> int:
    """The training generator's seed on ``rank`` (rank 0: the run's seed, as with one process)."""
    return seed if rank == 0 else seed + 1_000_003 * rank


def _rng_state(gen: torch.Generator, data_gen: torch.Generator, env: DistEnv | None = None) -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"train_gen": gen.get_state(), "data_gen": data_gen.get_state(), "torch": torch.get_rng_state(),
             "numpy": json.dumps([name, keys.tolist(), pos, has_gauss, cached]),
             "python": json.dumps(random.getstate())}
    if env is not None and env.active:  # a collective: every rank calls it
        state["train_gen_ranks"] = env.gather_objects(gen.get_state().cpu())
    return state


def _restore_rng(rng: dict, gen: torch.Generator, data_gen: torch.Generator, env: DistEnv | None = None,
                 seed: int = 0, task: int = 0) -> None:
    # generator states are CPU byte tensors, but a checkpoint loaded with map_location=cuda moved them there
    rng = {k: v.cpu() if torch.is_tensor(v) else v for k, v in rng.items()}
    ranks = rng.get("train_gen_ranks")
    if ranks is not None:
        ranks = [r.cpu() for r in ranks]
    if env is not None and env.active:
        if ranks is not None and len(ranks) == env.world:
            gen.set_state(ranks[env.rank])
        elif env.rank == 0:
            gen.set_state(rng["train_gen"])
        else:
            # a checkpoint of one process (a shared task 0) or of another world size: every rank still needs
            # noise of its own; deterministic in (seed, rank, task)
            gen.manual_seed(_rank_seed(seed, env.rank) + 7919 * (task + 1))
    else:
        gen.set_state(rng["train_gen"])
    data_gen.set_state(rng["data_gen"])
    torch.set_rng_state(rng["torch"])
    # numpy's and python's generators are not used by training itself; a state written in another layout
    # (an early version stored numpy's keys only) is skipped rather than failing the resume.
    state = json.loads(rng.get("numpy", "null"))
    if isinstance(state, list) and len(state) == 5 and isinstance(state[1], list) and len(state[1]) == 624:
        name, keys, pos, has_gauss, cached = state
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = json.loads(rng.get("python", "null"))
    if isinstance(py, list) and len(py) == 3 and isinstance(py[1], list):
        random.setstate((py[0], tuple(py[1]), py[2]))


class Interrupted(RuntimeError):
    """Ctrl-C: a checkpoint was written at the current step (exit status 130)."""


class _InterruptFlag:
    """First SIGINT: ask the loop to checkpoint and stop after the current step. Second: stop at once."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt  # second Ctrl-C: leave now (checkpoint writes are atomic)
        self.set = True
        print("\ninterrupt: writing a checkpoint after this step (Ctrl-C again to quit at once)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train(cfg: Config, out: str | None = None, resume: bool = False, progress: bool = True,
          evaluator=None, stop_after: int | None = None) -> Path:
    """Run every task of ``cfg``; returns the run folder. See the module docstring for the maths.

    ``stop_after=N``: stop once the first N tasks are finished (trained, evaluated, checkpointed), for probes
    that need only the first tasks; the run is not changed by it (it is not part of the config), and
    ``resume=True`` without it later continues with task N+1 exactly as an uninterrupted run would."""
    if stop_after is not None and stop_after < 1:
        raise RunError(f"stop after {stop_after} tasks: give a number of tasks of at least 1 (--tasks N)")
    device = resolve_device(cfg.train.device)
    env, device = dist_setup(device)
    try:
        with _InterruptFlag() as flag:
            return _train(cfg, out, resume, progress, evaluator, flag, env, device, stop_after)
    finally:
        dist_teardown(env)


def _train(cfg: Config, out, resume, progress, evaluator, flag, env: DistEnv, device, stop_after=None) -> Path:
    resume = resume or cfg.resume == "auto"
    if cfg.train.batch_size % env.world:
        raise RunError(f"train.batch_size {cfg.train.batch_size} is the global batch and must split evenly over "
                       f"the {env.world} ranks; choose a multiple of {env.world}")
    run_dir = prepare_run_dir(cfg, out, resume, write=env.main)
    env.barrier()
    log = MetricsLog(run_dir / "metrics.jsonl") if env.main else NullLog(run_dir / "metrics.jsonl")
    progress = progress and env.main
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    autocast = autocast_for(device, cfg.train.precision)
    precision = "fp32" if autocast is contextlib.nullcontext else "bf16"

    data = ContinualData.from_config(cfg)
    torch.manual_seed(cfg.seed)
    model = EpsModel(cfg.model.preset, data.spec.channels, cfg.data.image_size, cfg.train.attention).to(device)
    schedule = NoiseSchedule.from_config(cfg.model, device)
    strategy = build_strategy(cfg.strategy)
    gen = torch.Generator(device).manual_seed(_rank_seed(cfg.seed, env.rank))  # timesteps, noise, replay
    data_gen = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
    ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay is not None else None
    opt = None
    start_task, wall_before = 0, 0.0
    mid = None  # the state of an interrupted task, when resuming mid-task
    clf = None
    if cfg.classifier.enabled:
        from .classifier import ContinualClassifier
        clf = ContinualClassifier(cfg.classifier, data.spec.channels, data.spec.num_classes, device, cfg.seed)

    def header():
        log.write({"event": "start", "task": -1, "config_digest": cfg.digest(), "device": str(device),
                   "precision": precision, "params": sum(p.numel() for p in model.parameters()),
                   "tasks": [list(t) for t in data.tasks]})

    if resume:
        found = load_latest(run_dir, map_location=device)
        if found is not None:
            state, meta = found
            model.load_state_dict(state["model"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            strategy.load_state_dict(state.get("strategy", {}), model)
            _restore_rng(state["rng"], gen, data_gen, env, cfg.seed, meta["task"])
            if clf is not None and "classifier" in state:
                clf.load_state_dict(state["classifier"])
            wall_before = float(meta.get("wall_s", 0.0))
            if meta.get("complete", True):
                if not cfg.train.reset_optimizer and state.get("optimizer"):
                    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
                    opt.load_state_dict(state["optimizer"])
                start_task = meta["task"] + 1
                log.truncate_after(meta["task"])
            else:
                opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
                opt.load_state_dict(state["optimizer"])
                start_task = meta["task"]
                mid = {"step": meta["step"], "perm": state["task"]["perm"], "pos": int(state["task"]["pos"]),
                       **meta["task_counters"]}
                log.truncate_after(meta["task"] - 1, keep=lambda r: r.get("task") == meta["task"] and (
                    r["event"] == "classifier_eval" or (r["event"] == "train" and r["step"] <= meta["step"])))
            if start_task >= len(data.tasks):
                if env.main:
                    print(f"{run_dir} is already complete ({len(data.tasks)} tasks)", file=sys.stderr)
                return run_dir
            where = f"task {meta['task']} step {meta['step']}" if mid else f"after task {meta['task']}"
            if env.main:
                print(f"resuming {run_dir} from {where}", file=sys.stderr)
    if start_task == 0 and mid is None and cfg.train.init_from:
        state, meta = _shared_first_task(cfg, Path(cfg.train.init_from), strategy, device)
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _restore_rng(state["rng"], gen, data_gen, env, cfg.seed, 0)
        if clf is not None:
            clf.load_state_dict(state["classifier"])
        # this strategy's own end of task 0 (teacher, memory, importance, ...)
        strategy.end_task(model, TaskContext(0, data, strategy.train_classes(0, data.tasks), schedule, device, autocast,
                                             _teacher_source(cfg, ema)))
        src_lines = [r for r in MetricsLog(Path(cfg.train.init_from) / "metrics.jsonl").read() if r.get("task") == 0]
        if env.main:
            log.path.write_text("")
        header()
        log.write({"event": "shared", "task": 0, "from": str(cfg.train.init_from)})
        for r in src_lines:
            log.write(r)
        src_grid = Path(cfg.train.init_from) / "samples" / "task_00.png"
        if src_grid.exists() and env.main:
            (run_dir / "samples" / "task_00.png").write_bytes(src_grid.read_bytes())
        _save(run_dir, cfg, data, model, strategy, None, clf, gen, data_gen,
              {k: v for k, v in meta.items() if k in ("task", "step", "wall_s")}, {"shared_from": str(cfg.train.init_from)},
              env=env, ema=ema)
        start_task, wall_before = 1, float(meta.get("wall_s", 0.0))
        if cfg.eval.enabled and env.main:
            write_eval_csv(run_dir)
    if start_task == 0 and mid is None:
        if env.main:
            log.path.write_text("")
        header()
    env.barrier()  # every rank has read its checkpoint before rank 0 writes (and prunes) the next one
    net = dist_wrap(model, env, device)  # the student as trained (DDP over ranks); strategies see `model`

    grid_noise = torch.randn((cfg.train.grid_samples, data.spec.channels, cfg.data.image_size, cfg.data.image_size),
                             generator=torch.Generator().manual_seed(cfg.eval.seed)).to(device)
    t_run = time.perf_counter() - wall_before
    scheduled_lr = cfg.train.lr_schedule != "constant" or cfg.train.warmup_steps > 0
    loss_weight = None
    if cfg.train.loss_weighting == "min_snr":
        gamma = cfg.train.min_snr_gamma
        loss_weight = lambda t: schedule.min_snr_weight(t, gamma)  # noqa: E731
    last_task = len(data.tasks) if stop_after is None else min(stop_after, len(data.tasks))
    for k in range(start_task, last_task):
        classes = strategy.train_classes(k, data.tasks)
        x_all, _ = data.train(classes)
        x_all = x_all.to(device)
        n, b = len(x_all), cfg.train.batch_size
        steps = steps_for_task(cfg, k, n)
        if mid is None:
            if clf is not None:
                # the classifier trains first, replaying from the diffusion model as it was at the end of task k-1
                gen_model = frozen_copy(ema.model if ema is not None else model) if k >= 1 else None
                log.write(clf.train_task(k, data, gen_model, schedule, autocast))
                del gen_model
            if opt is None or cfg.train.reset_optimizer:
                opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
            perm, pos = torch.randperm(n, generator=data_gen), 0
            c = {"images": 0, "student_images": 0, "teacher_images": 0, "skipped": 0, "train_s": 0.0,
                 "acc": {"loss": 0.0, "loss_real": 0.0, "loss_replay": 0.0, "n": 0}}
            first_step = 0
        else:
            perm, pos, first_step = mid["perm"], mid["pos"], mid["step"]
            c = {key: mid[key] for key in ("images", "student_images", "teacher_images", "skipped", "train_s", "acc")}
            mid = None
        model.train()
        t_task = t_log = time.perf_counter()
        img_since_log = 0
        bar = tqdm(range(first_step, steps), desc=f"task {k} {tuple(data.tasks[k])}", disable=not progress,
                   mininterval=1.0, file=sys.stderr, dynamic_ncols=True, initial=first_step, total=steps)
        for step in bar:
            if pos + env.world > n:  # (one process: pos >= n) every rank needs at least one image
                perm, pos = torch.randperm(n, generator=data_gen), 0
            idx = perm[pos:pos + b].to(device)
            pos += b
            x0 = x_all[idx]
            if cfg.data.hflip:
                flip = (torch.rand(len(x0), generator=data_gen) < 0.5).to(device).view(-1, 1, 1, 1)
                x0 = torch.where(flip, x0.flip(-1), x0)
            n_global = len(x0)
            if env.active:  # same indices on every rank (one data generator), each its own slice
                x0 = x0[env.rank::env.world]
            if scheduled_lr:
                lr = lr_at(cfg.train.lr, cfg.train.lr_schedule, cfg.train.warmup_steps, step, steps)
                for g in opt.param_groups:
                    g["lr"] = lr
            r = train_step(net, opt, strategy, schedule, x0, k, gen, autocast, cfg.train.grad_clip,
                           cfg.train.nan_policy, run_dir, step, env, cfg.train.micro_batches, loss_weight)
            if r is None:  # non-finite loss skipped (nan_policy: skip)
                c["skipped"] += 1
            else:
                if ema is not None:
                    ema.update(model, step)
                c["images"] += n_global
                img_since_log += n_global
                c["student_images"] += r["student_images"] * env.world
                c["teacher_images"] += r["teacher_images"] * env.world
                for key in ("loss", "loss_real", "loss_replay"):
                    c["acc"][key] += r[key]
                c["acc"]["n"] += 1
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
                now = time.perf_counter()
                m = max(c["acc"].pop("n"), 1)
                ratio = r["student_images"] / len(x0) if r is not None else 1.0  # per rank = global ratio
                rec = {"event": "train", "task": k, "step": step + 1, "steps": steps,
                       **{key: v / m for key, v in c["acc"].items()},
                       "img_per_s": img_since_log / max(now - t_log, 1e-9),
                       "student_img_per_s": img_since_log * ratio / max(now - t_log, 1e-9),
                       "skipped_nonfinite": c["skipped"], "wall_s": now - t_run, "lr": opt.param_groups[0]["lr"]}
                log.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
                c["acc"] = {"loss": 0.0, "loss_real": 0.0, "loss_replay": 0.0, "n": 0}
                t_log, img_since_log = now, 0
            every = cfg.train.checkpoint_every
            stop = env.any(flag.set)  # Ctrl-C on any rank: all ranks checkpoint the same step
            if stop or (every and (step + 1) % every == 0 and step + 1 < steps):
                c_now = {**c, "train_s": c["train_s"] + time.perf_counter() - t_task}
                _save(run_dir, cfg, data, model, strategy, opt, clf, gen, data_gen,
                      {"task": k, "step": step + 1, "wall_s": time.perf_counter() - t_run},
                      {"complete": False, "task_counters": c_now}, task_state={"perm": perm, "pos": torch.tensor(pos)},
                      env=env, ema=ema)
                if stop:
                    bar.close()
                    raise Interrupted(f"interrupted at task {k} step {step + 1}; checkpoint written. "
                                      f"Continue with: cldiff train --config {run_dir / 'config.yaml'} --out {run_dir} --resume")
        bar.close()
        train_s = c["train_s"] + time.perf_counter() - t_task
        release_memory()  # the training steps' freed activations: out of the heap before sampling (sysmem.py)
        model.eval()
        strategy.end_task(model, TaskContext(k, data, classes, schedule, device, autocast, _teacher_source(cfg, ema)))
        shown = ema.model if ema is not None else model  # the weights that are evaluated, drawn and sampled

        if cfg.train.grid_samples > 0 and env.main:
            grid = ddim_sample(shown, schedule, grid_noise, cfg.train.grid_steps, 0.0, None, autocast)
            save_grid(grid, run_dir / "samples" / f"task_{k:02d}.png")
        log.write({"event": "task_end", "task": k, "classes": list(classes), "steps": steps,
                   "images_trained": c["images"], "student_images": c["student_images"],
                   "teacher_image_forwards": c["teacher_images"], "skipped_nonfinite": c["skipped"],
                   "train_s": train_s, "wall_s": time.perf_counter() - t_run, "peak_rss_mib": peak_rss_mib()})
        if cfg.eval.enabled:
            from .evaluate import evaluate_task, get_evaluator

            if evaluator is None:
                if env.main:  # rank 0 trains and caches the evaluator if there is none yet; the others then load it
                    evaluator = get_evaluator(cfg.data.dataset, device, cfg.data.root)
                env.barrier()
                if not env.main:
                    evaluator = get_evaluator(cfg.data.dataset, device, cfg.data.root)
            t_eval = time.perf_counter()
            metrics = evaluate_task(shown, schedule, data, k, cfg.eval, evaluator, device, autocast, env)
            if env.main:
                metrics["eval_s"] = time.perf_counter() - t_eval
                log.write({"event": "eval", "task": k, **metrics})
                write_eval_csv(run_dir)
            release_memory()
        _save(run_dir, cfg, data, model, strategy, opt, clf, gen, data_gen,
              {"task": k, "step": steps, "wall_s": time.perf_counter() - t_run}, {"complete": True}, env=env, ema=ema)
    if last_task < len(data.tasks):  # stopped early on request (stop_after): no "done" line, resumable
        if start_task < last_task:
            log.write({"event": "stopped", "task": last_task - 1, "wall_s": time.perf_counter() - t_run})
        return run_dir
    log.write({"event": "done", "task": len(data.tasks) - 1, "wall_s": time.perf_counter() - t_run,
               "peak_rss_mib": peak_rss_mib()})
    return run_dir


def _teacher_source(cfg: Config, ema):
    """The weights a task's teacher is frozen from: the EMA (train.ema_teacher) or, with None, the student's."""
    return ema.model if ema is not None and cfg.train.ema_teacher else None


def _mse(pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """The mean squared error; with per-sample weights w (N,), the mean over samples of w_i * MSE_i."""
    if w is None:
        return F.mse_loss(pred, target)
    return (w * ((pred - target) ** 2).flatten(1).mean(1)).mean()


def train_step(model, opt, strategy, schedule, x0, k, gen, autocast, grad_clip, nan_policy="stop",
               run_dir=None, step=0, env: DistEnv | None = None, micro_batches: int = 1,
               loss_weight=None) -> dict | None:
    """One optimizer step on real images x0 (B, C, H, W) in [-1, 1]; returns losses and image counts,
    or None when the loss was not finite and nan_policy is 'skip'.

    ``loss_weight``: None (every timestep weighs the same, the paper) or a function of the timesteps (N,)
    giving per-sample weights (train.loss_weighting), applied to the real and the replay MSE alike.

    ``model`` may be the DDP wrapper (it is called once, for the student forward); the strategy's
    penalty and after_step see the module itself.
    """
    device = x0.device
    base = model.module if hasattr(model, "module") else model
    t = schedule.sample_timesteps(len(x0), gen, device)
    eps = torch.randn(x0.shape, generator=gen, device=device)
    x_t = schedule.add_noise(x0, t, eps)
    replay = strategy.replay(StepContext(k, x0, t, eps, x_t, schedule, gen, autocast))
    inputs, tt = x_t, t
    if replay is not None and replay.x is not None:
        inputs, tt = torch.cat([x_t, replay.x]), torch.cat([t, replay.t])
    if micro_batches > 1:
        return _micro_step(model, base, opt, strategy, k, x0, eps, replay, inputs, tt, autocast, grad_clip,
                           nan_policy, run_dir, step, env, micro_batches, loss_weight)
    with autocast():
        out = model(inputs, tt)
    out = out.float()
    w_t = loss_weight(tt) if loss_weight is not None else None
    loss_real = _mse(out[: len(x0)], eps, w_t[: len(x0)] if w_t is not None else None)
    w_real, w_replay = strategy.loss_weights(k, replay is not None)
    loss = w_real * loss_real
    loss_replay = torch.zeros((), device=device)
    if replay is not None:
        on_replay = replay.x is not None
        pred = out[len(x0):] if on_replay else out[: len(x0)]
        w_rep = None if w_t is None else (w_t[len(x0):] if on_replay else w_t[: len(x0)])
        loss_replay = _mse(pred, replay.target, w_rep)
        loss = loss + w_replay * loss_replay
    pen = strategy.penalty(base)
    if pen is not None:
        loss = loss + pen
    return _apply_step(model, base, opt, strategy, loss, loss_real, loss_replay, len(inputs), replay, k, step,
                       run_dir, env, nan_policy, grad_clip, backward=True)


def _apply_step(model, base, opt, strategy, loss, loss_real, loss_replay, n_student, replay, k, step, run_dir, env,
                nan_policy, grad_clip, backward: bool) -> dict | None:
    """The end of a step: a non-finite loss stops or skips (all ranks together); else (backward, when the
    gradients are not there yet), clipping, the optimizer step and the strategy's after_step."""
    bad = not bool(torch.isfinite(loss))
    if env is not None:
        bad = env.any(bad)  # all ranks skip (or stop) together, or DDP's backward would wait forever
    if bad:
        opt.zero_grad(set_to_none=True)
        if nan_policy == "skip":
            return None
        where = f"; the last good checkpoint is in {Path(run_dir) / 'checkpoints'}" if run_dir else ""
        raise TrainingDiverged(
            f"task {k} step {step}: the loss is {loss.item()} (real {loss_real.item()}, replay "
            f"{loss_replay.item()}){where}. Lower train.lr, or set train.nan_policy=skip to skip such batches")
    if backward:
        opt.zero_grad(set_to_none=True)
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    strategy.after_step(base)
    return {"loss": loss.item(), "loss_real": loss_real.item(), "loss_replay": loss_replay.item(),
            "student_images": n_student, "teacher_images": replay.teacher_images if replay is not None else 0}


def _micro_step(model, base, opt, strategy, k, x0, eps, replay, inputs, tt, autocast, grad_clip, nan_policy,
                run_dir, step, env, micro, loss_weight=None) -> dict | None:
    """train_step's forward and backward in `micro` slices of the student batch: the same loss and gradients
    (up to float rounding: GroupNorm has no batch statistics) with the activations of one slice at a time."""
    n_real, n = len(x0), len(inputs)
    w_real, w_replay = strategy.loss_weights(k, replay is not None)
    d = eps[0].numel()
    on_real = replay is not None and replay.x is None  # LwF-like: the replay target applies to the real rows
    opt.zero_grad(set_to_none=True)
    tot_real = torch.zeros((), device=x0.device)
    tot_rep = torch.zeros((), device=x0.device)
    tot_pen = torch.zeros((), device=x0.device)
    cuts = [round(i * n / micro) for i in range(micro + 1)]
    w_t = loss_weight(tt) if loss_weight is not None else None

    def sq(diff: torch.Tensor, lo: int) -> torch.Tensor:
        """Summed squared error of rows lo.. of the student batch (weighted per sample with a loss weighting)."""
        e = diff ** 2
        if w_t is None:
            return e.sum()
        return (w_t[lo:lo + len(e)].view(-1, *([1] * (e.dim() - 1))) * e).sum()

    for i in range(micro):
        a, b = cuts[i], cuts[i + 1]
        if a == b:
            continue
        sync = contextlib.nullcontext() if (i == micro - 1 or not hasattr(model, "no_sync")) else model.no_sync()
        with sync:
            with autocast():
                out = model(inputs[a:b], tt[a:b])
            out = out.float()
            r_end = min(b, n_real)
            part_real = sq(out[: max(0, r_end - a)] - eps[a:r_end], a) / (n_real * d) if a < n_real \
                else out.new_zeros(())
            part_rep = out.new_zeros(())
            if replay is not None:
                if on_real and a < n_real:
                    part_rep = sq(out[: r_end - a] - replay.target[a:r_end], a) / (n_real * d)
                elif not on_real and b > n_real:
                    lo = max(a, n_real)
                    part_rep = sq(out[lo - a:] - replay.target[lo - n_real:b - n_real], lo) / ((n - n_real) * d)
            loss = w_real * part_real + w_replay * part_rep
            if i == 0:
                pen = strategy.penalty(base)
                if pen is not None:
                    loss = loss + pen
                    tot_pen = tot_pen + pen.detach()
            loss.backward()
        tot_real += part_real.detach()
        tot_rep += part_rep.detach()
    total = w_real * tot_real + w_replay * tot_rep + tot_pen
    return _apply_step(model, base, opt, strategy, total, tot_real, tot_rep, n, replay, k, step, run_dir, env,
                       nan_policy, grad_clip, backward=False)


def _save(run_dir, cfg, data, model, strategy, opt, clf, gen, data_gen, where: dict, extra: dict,
          task_state: dict | None = None, env: DistEnv | None = None, ema=None) -> None:
    """Write a checkpoint (rank 0; with several ranks a collective: all call it, all leave together)."""
    rng = _rng_state(gen, data_gen, env)
    if env is not None and not env.main:
        env.barrier()
        return
    state = {"model": model.state_dict(), "strategy": strategy.state_dict(),
             "optimizer": opt.state_dict() if opt is not None else {}, "rng": rng}
    if clf is not None:
        state["classifier"] = clf.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    if task_state is not None:
        state["task"] = task_state
    name = f"task_{where['task']:02d}" if extra.get("complete", True) else \
        f"task_{where['task']:02d}_step_{where['step']:07d}"
    save_checkpoint(run_dir, name, state, {**where, "complete": True, **extra, "config": cfg.to_dict(),
                                           "tasks": [list(t) for t in data.tasks],
                                           "world_size": env.world if env is not None else 1},
                    keep=cfg.train.keep_checkpoints)
    if env is not None:
        env.barrier()


def _task0_budget(t: dict) -> tuple:
    """What decides the length of task 0 (see steps_for_task)."""
    if t.get("first_task_steps") is not None:
        return ("steps", t["first_task_steps"])
    if t.get("steps_per_task") is not None:
        return ("steps", t["steps_per_task"])
    return ("epochs", t.get("epochs_per_task"))


def _shared_first_task(cfg: Config, src: Path, strategy, device) -> tuple[dict, dict]:
    """The verified task-0 checkpoint of another run whose task 0 is identical to this run's."""
    from .checkpoint import load_checkpoint_file
    from .strategies import REGISTRY

    metas = [m for m in list_checkpoints(src) if m.get("task") == 0]
    if not metas:
        raise RunError(f"train.init_from: {src} has no task-0 checkpoint (keep_checkpoints may have pruned it)")
    state, meta = load_checkpoint_file(Path(metas[-1]["path"]), metas[-1], map_location=device)
    theirs, mine = normalised_config(meta["config"]), cfg.to_dict()
    src_strategy = REGISTRY.get(theirs["strategy"]["name"])
    if not (strategy.shares_first_task and src_strategy is not None and src_strategy.shares_first_task):
        raise RunError(f"train.init_from: task 0 of '{theirs['strategy']['name']}' and '{cfg.strategy['name']}' "
                       "are not the same computation; train this run from scratch")
    for key in ("seed", "data", "model", "classifier"):
        if theirs.get(key) != mine.get(key):
            raise RunError(f"train.init_from: {src} differs in '{key}'; task 0 would not be identical")
    skip = EXECUTION_ONLY | {"steps_per_task", "epochs_per_task", "first_task_steps"}
    diff = [k for k in mine["train"] if k not in skip and theirs["train"].get(k) != mine["train"][k]]
    if _task0_budget(theirs["train"]) != _task0_budget(mine["train"]):  # later tasks' budgets may differ
        diff.append("first_task_steps/steps_per_task/epochs_per_task (task 0's budget)")
    if diff:
        raise RunError(f"train.init_from: {src} differs in train.{', train.'.join(diff)}; task 0 would not be identical")
    same_metric = lambda e: {k: v for k, v in (e or {}).items() if k != "batch_size"}  # batch: same noise stream
    if same_metric(theirs.get("eval")) != same_metric(mine.get("eval")):
        raise RunError(f"train.init_from: {src} differs in 'eval'; its task-0 metrics would not be comparable")
    return state, meta
