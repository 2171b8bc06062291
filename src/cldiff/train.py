"""The one training loop: task by task, one minibatch at a time.

Per step (docs/protocol.md §2-3): draw B real images of the current task,
t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps; ask
the strategy for its replay batch; one student forward on [real ; replay];
loss = w_real MSE(real) + w_replay MSE(replay) (+ the strategy's penalty);
Adam step with gradient-norm clipping. The loop never asks which strategy runs.

A run is a :class:`Run` (model and its EMA, optimizer, strategy, schedule, generators, precision, the
distributed environment, the run folder) taken through named phases by :func:`train`: restore or share task 0;
then per task the classifier phase, training the task, ending it (the strategy's end of task, the sample
grid), evaluation and the checkpoint. The training recipe (EMA, learning-rate schedule, min-SNR weighting) is in
docs/recipe.md.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import list_checkpoints, load_latest, save_checkpoint
from .runfolder import (MetricsLog, NullLog, RunError, RunInUse, RunLock, normalised_config, prepare_run_dir,
                        run_dir_for, run_evaluator_sha, write_eval_csv)
from .config import EXECUTION_ONLY, Config
from .data import ContinualData, save_grid
from .dist import DistEnv, setup as dist_setup, teardown as dist_teardown, wrap as dist_wrap
from .model import (EpsModel, NoiseSchedule, autocast_for, ddim_sample, drop_labels, frozen_copy, fused_adam_for,
                    model_classes, resolve_device)
from .recipe import EMA, lr_at
from .strategies import StepContext, TaskContext, build_strategy
from .sysmem import peak_rss_mib, release_memory, warn_if_cores_busy


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf (exit status 3)."""


def steps_for_task(cfg: Config, k: int, n_images: int) -> int:
    t = cfg.train
    if k == 0 and t.first_task_steps is not None:
        return t.first_task_steps
    if t.steps_per_task is not None:
        return t.steps_per_task
    # docs/protocol.md §2: 12,000 images at batch 128 is 94 iterations per epoch (the last batch is partial).
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
    lock = RunLock(run_dir_for(cfg, out))  # one process trains in a run folder at a time (rank 0 holds it)
    try:
        refused = None
        if env.main:
            try:
                lock.acquire()
            except RunInUse as e:
                refused = e
        if env.any(refused is not None):  # every rank stops, before anything is written
            raise refused or RunInUse(f"{lock.path.parent} is in use by another cldiff process (see rank 0)")
        with _InterruptFlag() as flag:
            return _train(cfg, out, resume, progress, evaluator, flag, env, device, stop_after)
    finally:
        lock.release()
        dist_teardown(env)


@dataclass
class TaskCounters:
    """What one task has done so far (kept in mid-task checkpoints, so that a resumed task counts on)."""

    images: int = 0  # real images trained on (all ranks)
    student_images: int = 0  # student forward+backward images (all ranks)
    teacher_images: int = 0  # teacher forward images (all ranks)
    skipped: int = 0  # steps whose loss was not finite (nan_policy: skip)
    train_s: float = 0.0  # training time before this process took the task over
    # sums of the losses since the last metrics line, and how many steps they hold
    loss: float = 0.0
    loss_real: float = 0.0
    loss_replay: float = 0.0
    n: int = 0

    def add(self, r: dict, n_global: int, world: int) -> None:
        self.images += n_global
        self.student_images += r["student_images"] * world
        self.teacher_images += r["teacher_images"] * world
        self.loss += r["loss"]
        self.loss_real += r["loss_real"]
        self.loss_replay += r["loss_replay"]
        self.n += 1

    def take_means(self) -> dict:
        """The mean losses since the last call, and a fresh start for the next ones."""
        m = max(self.n, 1)
        out = {"loss": self.loss / m, "loss_real": self.loss_real / m, "loss_replay": self.loss_replay / m}
        self.loss = self.loss_real = self.loss_replay = 0.0
        self.n = 0
        return out

    def to_meta(self, train_s: float) -> dict:
        """The checkpoint metadata's layout (unchanged since mid-task resume exists, so old checkpoints resume)."""
        return {"images": self.images, "student_images": self.student_images, "teacher_images": self.teacher_images,
                "skipped": self.skipped, "train_s": train_s,
                "acc": {"loss": self.loss, "loss_real": self.loss_real, "loss_replay": self.loss_replay, "n": self.n}}

    @classmethod
    def from_meta(cls, m: dict) -> "TaskCounters":
        return cls(m["images"], m["student_images"], m["teacher_images"], m["skipped"], m["train_s"], **m["acc"])


@dataclass
class MidTask:
    """Where an interrupted task stands: its step, data order and counters (from a mid-task checkpoint)."""

    step: int
    perm: torch.Tensor
    pos: int
    counters: TaskCounters


class Run:
    """Everything one training run holds: the run folder and log, data, model (and its EMA), optimizer,
    strategy, schedule, generators, precision, the distributed environment and the optional classifier."""

    def __init__(self, cfg: Config, out, resume: bool, progress: bool, evaluator, flag, env: DistEnv, device):
        if cfg.train.batch_size % env.world:
            raise RunError(f"train.batch_size {cfg.train.batch_size} is the global batch and must split evenly over "
                           f"the {env.world} ranks; choose a multiple of {env.world}")
        self.cfg, self.env, self.device, self.flag, self.evaluator = cfg, env, device, flag, evaluator
        self.run_dir = prepare_run_dir(cfg, out, resume, write=env.main)
        env.barrier()
        self.log = MetricsLog(self.run_dir / "metrics.jsonl") if env.main else NullLog(self.run_dir / "metrics.jsonl")
        self.progress = progress and env.main
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        # a multi-threaded CPU run beside other busy work: say how to share the cores (CLDIFF_BUSY_CHECK=0: skip)
        if device.type == "cpu" and env.main and torch.get_num_threads() > 1:  # one thread a rank: no check, as before
            warn_if_cores_busy(torch.get_num_threads() * env.world)
        self.autocast = autocast_for(device, cfg.train.precision)
        self.precision = "fp32" if self.autocast is contextlib.nullcontext else "bf16"
        self.fused_adam = fused_adam_for(device, cfg.train.fused_adam)
        self.data = ContinualData.from_config(cfg)
        torch.manual_seed(cfg.seed)
        self.model = EpsModel(cfg.model.preset, self.data.spec.channels, cfg.data.image_size,
                              cfg.train.attention, model_classes(cfg), cfg.model.label_init_std).to(device)
        self.schedule = NoiseSchedule.from_config(cfg.model, device)
        self.strategy = build_strategy(cfg.strategy)
        self.gen = torch.Generator(device).manual_seed(_rank_seed(cfg.seed, env.rank))  # timesteps, noise, replay
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
        self.ema = EMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay is not None else None
        self.opt = None
        self.net = None  # the student as trained: the model, or its DDP wrapper (set by _train)
        self.clf = None
        if cfg.classifier.enabled:
            from .classifier import ContinualClassifier
            self.clf = ContinualClassifier(cfg.classifier, self.data.spec.channels, self.data.spec.num_classes,
                                           device, cfg.seed)
        self.start_task, self.wall_before = 0, 0.0
        self.mid: MidTask | None = None
        self.loss_weight = None
        if cfg.train.loss_weighting == "min_snr":
            gamma = cfg.train.min_snr_gamma
            self.loss_weight = lambda t: self.schedule.min_snr_weight(t, gamma)  # noqa: E731

    # ------------------------------------------------------------------ before the first task

    def shown_model(self) -> EpsModel:
        """The weights that are evaluated, drawn and sampled: the EMA when the run keeps one."""
        return self.ema.model if self.ema is not None else self.model

    def task_context(self, k: int, classes) -> TaskContext:
        teacher_source = self.ema.model if self.ema is not None and self.cfg.train.ema_teacher else None
        return TaskContext(k, self.data, classes, self.schedule, self.device, self.autocast, teacher_source)

    def write_header(self) -> None:
        self.log.write({"event": "start", "task": -1, "config_digest": self.cfg.digest(), "device": str(self.device),
                        "precision": self.precision, "fused_adam": self.fused_adam,
                        "params": sum(p.numel() for p in self.model.parameters()),
                        "tasks": [list(t) for t in self.data.tasks]})

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def restore(self) -> bool:
        """Continue from the run folder's newest checkpoint, if any; False when the run is already complete."""
        found = load_latest(self.run_dir, map_location=self.device)
        if found is None:
            return True
        state, meta = found
        cfg, env = self.cfg, self.env
        self._load_state(state)
        self.strategy.load_state_dict(state.get("strategy", {}), self.model)
        _restore_rng(state["rng"], self.gen, self.data_gen, env, cfg.seed, meta["task"])
        if self.clf is not None and "classifier" in state:
            self.clf.load_state_dict(state["classifier"])
        self.wall_before = float(meta.get("wall_s", 0.0))
        if meta.get("complete", True):
            if not cfg.train.reset_optimizer and state.get("optimizer"):
                self.opt = self.new_optimizer()
                self.opt.load_state_dict(state["optimizer"])
            self.start_task = meta["task"] + 1
            self.log.truncate_after(meta["task"])
        else:
            self.opt = self.new_optimizer()
            self.opt.load_state_dict(state["optimizer"])
            self.start_task = meta["task"]
            self.mid = MidTask(meta["step"], state["task"]["perm"], int(state["task"]["pos"]),
                               TaskCounters.from_meta(meta["task_counters"]))
            self.log.truncate_after(meta["task"] - 1, keep=lambda r: r.get("task") == meta["task"] and (
                r["event"] == "classifier_eval" or (r["event"] == "train" and r["step"] <= meta["step"])))
        if self.start_task >= len(self.data.tasks):
            if env.main:
                print(f"{self.run_dir} is already complete ({len(self.data.tasks)} tasks)", file=sys.stderr)
            return False
        where = f"task {meta['task']} step {meta['step']}" if self.mid else f"after task {meta['task']}"
        if env.main:
            print(f"resuming {self.run_dir} from {where}", file=sys.stderr)
        return True

    def new_optimizer(self) -> torch.optim.Adam:
        """Adam over the model at train.lr; a conditional model's label embedding in a group of its own at
        model.label_lr_scale times the rate (the group's ``lr_scale``, kept by the schedule) when that is not 1."""
        cfg = self.cfg
        kw = {"fused": True} if self.fused_adam else {}  # unset otherwise: torch's default path, as before the option
        scale = cfg.model.label_lr_scale
        if scale == 1 or not self.model.conditional:
            return torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, **kw)
        label = self.model.unet.class_embedding.weight
        rest = [p for p in self.model.parameters() if p is not label]
        return torch.optim.Adam([{"params": rest, "lr_scale": 1.0},
                                 {"params": [label], "lr": cfg.train.lr * scale, "lr_scale": scale}], lr=cfg.train.lr,
                                **kw)

    def share_first_task(self) -> None:
        """Start from another run's task 0 (train.init_from), checked to be the same computation."""
        cfg, env, src = self.cfg, self.env, Path(self.cfg.train.init_from)
        state, meta = _shared_first_task(cfg, src, self.device)
        self._load_state(state)
        _restore_rng(state["rng"], self.gen, self.data_gen, env, cfg.seed, 0)
        if self.clf is not None:
            self.clf.load_state_dict(state["classifier"])
        # this strategy's own end of task 0 (teacher, memory, importance, ...)
        self.strategy.end_task(self.model, self.task_context(0, self.strategy.train_classes(0, self.data.tasks)))
        src_lines = [r for r in MetricsLog(src / "metrics.jsonl").read() if r.get("task") == 0]
        if env.main:
            self.log.path.write_text("")
        self.write_header()
        self.log.write({"event": "shared", "task": 0, "from": str(cfg.train.init_from)})
        for r in src_lines:
            self.log.write(r)
        src_grid = src / "samples" / "task_00.png"
        if src_grid.exists() and env.main:
            (self.run_dir / "samples" / "task_00.png").write_bytes(src_grid.read_bytes())
        self.save({k: v for k, v in meta.items() if k in ("task", "step", "wall_s")},
                  {"shared_from": str(cfg.train.init_from)})
        self.start_task, self.wall_before = 1, float(meta.get("wall_s", 0.0))
        if cfg.eval.enabled and env.main:
            write_eval_csv(self.run_dir)

    def start_fresh(self) -> None:
        if self.env.main:
            self.log.path.write_text("")
        self.write_header()

    # ------------------------------------------------------------------ one task

    def classifier_phase(self, k: int) -> None:
        """The classifier trains first, replaying from the diffusion model as it was at the end of task k-1."""
        if self.clf is None:
            return
        gen_model = frozen_copy(self.shown_model()) if k >= 1 else None
        self.log.write(self.clf.train_task(k, self.data, gen_model, self.schedule, self.autocast))
        del gen_model

    def train_task(self, k: int, classes, t_run: float) -> tuple[int, TaskCounters]:
        """Train task k (from its first step, or from where an interrupted run stopped); returns its steps and
        counters, with the training time in ``train_s``."""
        cfg, env, device = self.cfg, self.env, self.device
        x_all, y_all = self.data.train(classes)
        x_all = x_all.to(device)
        y_all = y_all.to(device) if cfg.model.conditional else None  # labels reach only a conditional model
        n, b = len(x_all), cfg.train.batch_size
        steps = steps_for_task(cfg, k, n)
        if self.mid is None:
            if self.opt is None or cfg.train.reset_optimizer:
                self.opt = self.new_optimizer()
            perm, pos = torch.randperm(n, generator=self.data_gen), 0
            c, first_step = TaskCounters(), 0
        else:
            perm, pos, first_step, c = self.mid.perm, self.mid.pos, self.mid.step, self.mid.counters
            self.mid = None
        scheduled_lr = cfg.train.lr_schedule != "constant" or cfg.train.warmup_steps > 0
        self.model.train()
        t_task = t_log = time.perf_counter()
        img_since_log = 0
        bar = tqdm(range(first_step, steps), desc=f"task {k} {tuple(self.data.tasks[k])}", disable=not self.progress,
                   mininterval=1.0, file=sys.stderr, dynamic_ncols=True, initial=first_step, total=steps)
        for step in bar:
            if pos + env.world > n:  # (one process: pos >= n) every rank needs at least one image
                perm, pos = torch.randperm(n, generator=self.data_gen), 0
            idx = perm[pos:pos + b].to(device)
            pos += b
            x0 = x_all[idx]
            y0 = y_all[idx] if y_all is not None else None
            if cfg.data.hflip:
                flip = (torch.rand(len(x0), generator=self.data_gen) < 0.5).to(device).view(-1, 1, 1, 1)
                x0 = torch.where(flip, x0.flip(-1), x0)
            n_global = len(x0)
            if env.active:  # same indices on every rank (one data generator), each its own slice
                x0 = x0[env.rank::env.world]
                y0 = y0[env.rank::env.world] if y0 is not None else None
            if scheduled_lr:
                lr = lr_at(cfg.train.lr, cfg.train.lr_schedule, cfg.train.warmup_steps, step, steps)
                for g in self.opt.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
            r = train_step(self.net, self.opt, self.strategy, self.schedule, x0, k, self.gen, self.autocast,
                           cfg.train.grad_clip, cfg.train.nan_policy, self.run_dir, step, env, cfg.train.micro_batches,
                           self.loss_weight, y0, cfg.model.cond_drop)
            if r is None:  # non-finite loss skipped (nan_policy: skip)
                c.skipped += 1
            else:
                if self.ema is not None:
                    self.ema.update(self.model, step)
                c.add(r, n_global, env.world)
                img_since_log += n_global
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
                now = time.perf_counter()
                ratio = r["student_images"] / len(x0) if r is not None else 1.0  # per rank = global ratio
                rec = {"event": "train", "task": k, "step": step + 1, "steps": steps, **c.take_means(),
                       "img_per_s": img_since_log / max(now - t_log, 1e-9),
                       "student_img_per_s": img_since_log * ratio / max(now - t_log, 1e-9),
                       "skipped_nonfinite": c.skipped, "wall_s": now - t_run, "lr": self.opt.param_groups[0]["lr"]}
                self.log.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
                t_log, img_since_log = now, 0
            every = cfg.train.checkpoint_every
            stop = env.any(self.flag.set)  # Ctrl-C on any rank: all ranks checkpoint the same step
            if stop or (every and (step + 1) % every == 0 and step + 1 < steps):
                self.save({"task": k, "step": step + 1, "wall_s": time.perf_counter() - t_run},
                          {"complete": False, "task_counters": c.to_meta(c.train_s + time.perf_counter() - t_task)},
                          task_state={"perm": perm, "pos": torch.tensor(pos)})
                if stop:
                    bar.close()
                    raise Interrupted(f"interrupted at task {k} step {step + 1}; checkpoint written. Continue with: "
                                      f"cldiff train --config {self.run_dir / 'config.yaml'} --out {self.run_dir} --resume")
        bar.close()
        c.train_s += time.perf_counter() - t_task
        return steps, c

    def end_task(self, k: int, classes, steps: int, c: TaskCounters, t_run: float, grid_noise) -> None:
        """The strategy's end of task (a new teacher, a memory, ...), the sample grid and the task_end line."""
        release_memory()  # the training steps' freed activations: out of the heap before sampling (sysmem.py)
        self.model.eval()
        self.strategy.end_task(self.model, self.task_context(k, classes))
        if self.cfg.train.grid_samples > 0 and self.env.main:
            noise, y, nrow = grid_noise, None, None
            if self.cfg.model.conditional:  # one row per seen class, the same noise in every row
                seen = sorted(self.data.seen_classes(k))
                nrow = max(1, min(16, len(grid_noise) // len(seen)))
                noise = grid_noise[:nrow].repeat(len(seen), 1, 1, 1)
                y = torch.as_tensor(seen, dtype=torch.long, device=self.device).repeat_interleave(nrow)
            grid = ddim_sample(self.shown_model(), self.schedule, noise, self.cfg.train.grid_steps, 0.0, None,
                               self.autocast, y=y, guidance=self.cfg.eval.guidance)
            save_grid(grid, self.run_dir / "samples" / f"task_{k:02d}.png", nrow=nrow)
        self.log.write({"event": "task_end", "task": k, "classes": list(classes), "steps": steps,
                        "images_trained": c.images, "student_images": c.student_images,
                        "teacher_image_forwards": c.teacher_images, "skipped_nonfinite": c.skipped,
                        "train_s": c.train_s, "wall_s": time.perf_counter() - t_run, "peak_rss_mib": peak_rss_mib()})

    def evaluate(self, k: int) -> None:
        """FID / KLD / ARD of the shown model after task k (docs/protocol.md §4)."""
        cfg, env = self.cfg, self.env
        if not cfg.eval.enabled:
            return
        from .evaluate import evaluate_task, get_evaluator

        if self.evaluator is None:
            # the evaluator of the run's earlier evaluations (a resumed run, a shared task 0), when there are some
            sha = run_evaluator_sha(self.run_dir)
            if env.main:  # rank 0 trains and caches the evaluator if there is none yet; the others then load it
                self.evaluator = get_evaluator(cfg.data.dataset, self.device, cfg.data.root, sha=sha)
            env.barrier()
            if not env.main:
                self.evaluator = get_evaluator(cfg.data.dataset, self.device, cfg.data.root, sha=sha)
        t_eval = time.perf_counter()
        metrics = evaluate_task(self.shown_model(), self.schedule, self.data, k, cfg.eval, self.evaluator,
                                self.device, self.autocast, env)
        if env.main:
            metrics["eval_s"] = time.perf_counter() - t_eval
            self.log.write({"event": "eval", "task": k, **metrics})
            write_eval_csv(self.run_dir)
        release_memory()

    def save(self, where: dict, extra: dict, task_state: dict | None = None) -> None:
        """Write a checkpoint (rank 0; with several ranks a collective: all call it, all leave together)."""
        env = self.env
        rng = _rng_state(self.gen, self.data_gen, env)
        if not env.main:
            env.barrier()
            return
        state = {"model": self.model.state_dict(), "strategy": self.strategy.state_dict(),
                 "optimizer": self.opt.state_dict() if self.opt is not None else {}, "rng": rng}
        if self.clf is not None:
            state["classifier"] = self.clf.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if task_state is not None:
            state["task"] = task_state
        name = f"task_{where['task']:02d}" if extra.get("complete", True) else \
            f"task_{where['task']:02d}_step_{where['step']:07d}"
        save_checkpoint(self.run_dir, name, state,
                        {**where, "complete": True, **extra, "config": self.cfg.to_dict(),
                         "tasks": [list(t) for t in self.data.tasks], "world_size": env.world},
                        keep=self.cfg.train.keep_checkpoints)
        env.barrier()


def _train(cfg: Config, out, resume, progress, evaluator, flag, env: DistEnv, device, stop_after=None) -> Path:
    resume = resume or cfg.resume == "auto"
    run = Run(cfg, out, resume, progress, evaluator, flag, env, device)
    if resume and not run.restore():
        return run.run_dir
    if run.start_task == 0 and run.mid is None:
        run.share_first_task() if cfg.train.init_from else run.start_fresh()
    env.barrier()  # every rank has read its checkpoint before rank 0 writes (and prunes) the next one
    run.net = dist_wrap(run.model, env, device)  # the student as trained (DDP over ranks); strategies see the module
    grid_noise = torch.randn((cfg.train.grid_samples, run.data.spec.channels, cfg.data.image_size,
                              cfg.data.image_size), generator=torch.Generator().manual_seed(cfg.eval.seed)).to(device)
    t_run = time.perf_counter() - run.wall_before
    last_task = len(run.data.tasks) if stop_after is None else min(stop_after, len(run.data.tasks))
    for k in range(run.start_task, last_task):
        classes = run.strategy.train_classes(k, run.data.tasks)
        if run.mid is None:
            run.classifier_phase(k)
        steps, counters = run.train_task(k, classes, t_run)
        run.end_task(k, classes, steps, counters, t_run, grid_noise)
        run.evaluate(k)
        run.save({"task": k, "step": steps, "wall_s": time.perf_counter() - t_run}, {"complete": True})
    if last_task < len(run.data.tasks):  # stopped early on request (stop_after): no "done" line, resumable
        if run.start_task < last_task:
            run.log.write({"event": "stopped", "task": last_task - 1, "wall_s": time.perf_counter() - t_run})
        return run.run_dir
    run.log.write({"event": "done", "task": len(run.data.tasks) - 1, "wall_s": time.perf_counter() - t_run,
                   "peak_rss_mib": peak_rss_mib()})
    return run.run_dir


def train_step(model, opt, strategy, schedule, x0, k, gen, autocast, grad_clip, nan_policy="stop",
               run_dir=None, step=0, env: DistEnv | None = None, micro_batches: int = 1,
               loss_weight=None, y0=None, cond_drop: float = 0.0) -> dict | None:
    """One optimizer step on real images x0 (B, C, H, W) in [-1, 1]; returns losses and image counts,
    or None when the loss was not finite and nan_policy is 'skip'.

    ``loss_weight``: None (every timestep weighs the same, the paper) or a function of the timesteps (N,)
    giving per-sample weights (train.loss_weighting), applied to the real and the replay MSE alike.

    ``model`` may be the DDP wrapper (it is called once, for the student forward); the strategy's
    penalty and after_step see the module itself.

    ``y0`` (B,): the real images' labels, for a class-conditional model only (None otherwise); each is dropped
    to "no label" with probability ``cond_drop`` (classifier-free guidance), and replay rows carry their own.
    """
    device = x0.device
    base = model.module if hasattr(model, "module") else model
    t = schedule.sample_timesteps(len(x0), gen, device)
    eps = torch.randn(x0.shape, generator=gen, device=device)
    x_t = schedule.add_noise(x0, t, eps)
    y_in = drop_labels(y0, cond_drop, gen) if y0 is not None else None
    replay = strategy.replay(StepContext(k, x0, t, eps, x_t, schedule, gen, autocast, y_in, cond_drop))
    inputs, tt, yy = x_t, t, y_in
    if replay is not None and replay.x is not None:
        inputs, tt = torch.cat([x_t, replay.x]), torch.cat([t, replay.t])
        if y_in is not None:
            if replay.y is None:
                raise TypeError(f"strategy '{strategy.name}' replayed unlabelled samples to a conditional model")
            yy = torch.cat([y_in, replay.y])
    return _forward_backward(model, base, opt, strategy, k, x0, eps, replay, inputs, tt, autocast, grad_clip,
                             nan_policy, run_dir, step, env, max(1, micro_batches), loss_weight, yy)


def _apply_step(model, base, opt, strategy, loss, loss_real, loss_replay, n_student, replay, k, step, run_dir, env,
                nan_policy, grad_clip) -> dict | None:
    """The end of a step (its gradients are there): a non-finite loss stops or skips (all ranks together);
    else clipping, the optimizer step and the strategy's after_step."""
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
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    strategy.after_step(base)
    return {"loss": loss.item(), "loss_real": loss_real.item(), "loss_replay": loss_replay.item(),
            "student_images": n_student, "teacher_images": replay.teacher_images if replay is not None else 0}


def slice_losses(out: torch.Tensor, a: int, b: int, eps: torch.Tensor, replay, w_t: torch.Tensor | None,
                 n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real and replay MSE terms that rows a..b of the student batch contribute (docs/protocol.md §3).

    ``out``: the student's output on those rows; ``eps``: the real rows' noise (B rows); ``n``: the whole
    student batch (B real rows, then the replay rows). Each term is a sum of squared errors divided by the
    element count of its whole branch, so the terms of all slices add up to the branch's mean squared error,
    and one slice (a = 0, b = n) gives the MSE itself. With per-sample loss weights ``w_t`` (n,) each sample's
    squared error is weighted first: the branch's mean of w_i * MSE_i. LwF-like replay (``replay.x`` None)
    puts its target on the real rows.
    """
    n_real, d = len(eps), eps[0].numel()

    def sq(diff: torch.Tensor, lo: int) -> torch.Tensor:
        e = diff ** 2
        if w_t is None:
            return e.sum()
        return (w_t[lo:lo + len(e)].view(-1, *([1] * (e.dim() - 1))) * e).sum()

    r_end = min(b, n_real)
    part_real = sq(out[: max(0, r_end - a)] - eps[a:r_end], a) / (n_real * d) if a < n_real else out.new_zeros(())
    part_rep = out.new_zeros(())
    if replay is not None:
        if replay.x is None and a < n_real:
            part_rep = sq(out[: r_end - a] - replay.target[a:r_end], a) / (n_real * d)
        elif replay.x is not None and b > n_real:
            lo = max(a, n_real)
            part_rep = sq(out[lo - a:] - replay.target[lo - n_real:b - n_real], lo) / ((n - n_real) * d)
    return part_real, part_rep


def _forward_backward(model, base, opt, strategy, k, x0, eps, replay, inputs, tt, autocast, grad_clip, nan_policy,
                      run_dir, step, env, micro, loss_weight=None, yy=None) -> dict | None:
    """The step's forward and backward, the whole student batch at once (micro = 1) or in ``micro`` slices:
    the same loss and gradients (up to float rounding: GroupNorm has no batch statistics) with the
    activations of one slice at a time. One loss function (slice_losses) serves both."""
    n = len(inputs)
    w_real, w_replay = strategy.loss_weights(k, replay is not None)
    opt.zero_grad(set_to_none=True)
    tot_real = torch.zeros((), device=x0.device)
    tot_rep = torch.zeros((), device=x0.device)
    tot_pen = torch.zeros((), device=x0.device)
    cuts = [round(i * n / micro) for i in range(micro + 1)]
    w_t = loss_weight(tt) if loss_weight is not None else None
    n_real = len(eps)
    if replay is not None and replay.x is not None and replay.weight is not None:  # importance-sampled replay
        w_t = torch.ones(n, device=x0.device) if w_t is None else w_t
        w_t = torch.cat([w_t[:n_real], w_t[n_real:] * replay.weight.to(w_t.dtype)])
    observe = strategy.wants_replay_errors and replay is not None and replay.x is not None
    seen_t, seen_err = [], []
    for i in range(micro):
        a, b = cuts[i], cuts[i + 1]
        if a == b:
            continue
        sync = contextlib.nullcontext() if (i == micro - 1 or not hasattr(model, "no_sync")) else model.no_sync()
        with sync:
            with autocast():
                out = model(inputs[a:b], tt[a:b]) if yy is None else model(inputs[a:b], tt[a:b], yy[a:b])
            part_real, part_rep = slice_losses(out.float(), a, b, eps, replay, w_t, n)
            if observe and b > n_real:  # the student's error on this slice's replay rows, for the strategy
                lo = max(a, n_real)
                diff = out[lo - a:].detach().float() - replay.target[lo - n_real:b - n_real]
                seen_t.append(tt[lo:b])
                seen_err.append(diff.pow(2).flatten(1).mean(1))
            loss = w_real * part_real + w_replay * part_rep
            if i == 0:
                pen = strategy.penalty(base)
                if pen is not None:
                    loss = loss + pen
                    tot_pen = tot_pen + pen.detach()
            loss.backward()
        tot_real += part_real.detach()
        tot_rep += part_rep.detach()
    if seen_t:
        strategy.observe_replay(torch.cat(seen_t), torch.cat(seen_err))
    total = w_real * tot_real + w_replay * tot_rep + tot_pen
    return _apply_step(model, base, opt, strategy, total, tot_real, tot_rep, n, replay, k, step, run_dir, env,
                       nan_policy, grad_clip)


def _task0_budget(t: dict) -> tuple:
    """What decides the length of task 0 (see steps_for_task)."""
    if t.get("first_task_steps") is not None:
        return ("steps", t["first_task_steps"])
    if t.get("steps_per_task") is not None:
        return ("steps", t["steps_per_task"])
    return ("epochs", t.get("epochs_per_task"))


def task0_mismatch(theirs: dict, mine: dict, src) -> str | None:
    """Why a run whose task-0 checkpoint was made with the (normalised) config ``theirs`` cannot give its task 0 to
    a run with ``mine`` (the message after 'train.init_from: '), or None when task 0 is the same computation."""
    from .strategies import REGISTRY

    src_strategy, my_strategy = REGISTRY.get(theirs["strategy"]["name"]), REGISTRY.get(mine["strategy"]["name"])
    if not (my_strategy is not None and my_strategy.shares_first_task and src_strategy is not None
            and src_strategy.shares_first_task):
        return (f"task 0 of '{theirs['strategy']['name']}' and '{mine['strategy']['name']}' are not the same "
                "computation; train this run from scratch")
    for key in ("seed", "data", "model", "classifier"):
        if theirs.get(key) != mine.get(key):
            return f"{src} differs in '{key}'; task 0 would not be identical"
    skip = EXECUTION_ONLY | {"steps_per_task", "epochs_per_task", "first_task_steps"}
    diff = [k for k in mine["train"] if k not in skip and theirs["train"].get(k) != mine["train"][k]]
    if _task0_budget(theirs["train"]) != _task0_budget(mine["train"]):  # later tasks' budgets may differ
        diff.append("first_task_steps/steps_per_task/epochs_per_task (task 0's budget)")
    if diff:
        return f"{src} differs in train.{', train.'.join(diff)}; task 0 would not be identical"
    same_metric = lambda e: {k: v for k, v in (e or {}).items() if k != "batch_size"}  # batch: same noise stream
    if same_metric(theirs.get("eval")) != same_metric(mine.get("eval")):
        return f"{src} differs in 'eval'; its task-0 metrics would not be comparable"
    return None


def _shared_first_task(cfg: Config, src: Path, device) -> tuple[dict, dict]:
    """The verified task-0 checkpoint of another run whose task 0 is identical to this run's."""
    from .checkpoint import load_checkpoint_file

    metas = [m for m in list_checkpoints(src) if m.get("task") == 0]
    if not metas:
        raise RunError(f"train.init_from: {src} has no task-0 checkpoint (keep_checkpoints may have pruned it)")
    state, meta = load_checkpoint_file(Path(metas[-1]["path"]), metas[-1], map_location=device)
    why = task0_mismatch(normalised_config(meta["config"]), cfg.to_dict(), src)
    if why:
        raise RunError(f"train.init_from: {why}")
    return state, meta
