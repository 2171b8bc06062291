"""The strategy interface: small objects whose fields are their hyperparameters.

A strategy answers at most these questions (DESIGN.md):

- ``train_classes``: which classes does task k train on;
- ``replay``: the extra batch for this step: student inputs, timesteps and
  targets (or targets on the real inputs, for LwF-like), or None;
- ``end_task``: what happens when a task ends (replay families freeze a copy
  of the model as the next task's teacher);
- ``penalty``: an optional regulariser on the parameters (EWC, SI).

Everything else (loss weighting, optimizer, precision, checkpoints,
evaluation) lives in the one training loop, which never asks which strategy
is running.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ..model import NoiseSchedule, autocast_dtype, drop_labels, frozen_copy


@dataclass
class StepContext:
    """What a strategy may look at to build its replay batch (all tensors on the model's device)."""

    task: int  # k, 0-based
    x0: torch.Tensor  # real images (B, C, H, W) in [-1, 1]
    t: torch.Tensor  # their timesteps (B,)
    eps: torch.Tensor  # their noise (B, C, H, W)
    x_t: torch.Tensor  # the noisy real inputs (B, C, H, W)
    schedule: NoiseSchedule
    generator: torch.Generator  # the run's training generator: all replay randomness comes from it
    autocast: Callable = contextlib.nullcontext
    # conditional models (model.conditional) only; None for unconditional ones
    y: torch.Tensor | None = None  # the real images' labels as the student sees them (after label dropout)
    cond_drop: float = 0.0  # the label dropout the student trains with; replay labels get the same

    def student_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The labels the student sees for replay samples of labels ``y``: classifier-free guidance's dropout."""
        return None if y is None else drop_labels(y, self.cond_drop, self.generator)


@dataclass
class TaskContext:
    """What a strategy may use when a task ends."""

    task: int  # k, the task that just ended
    data: object  # cldiff.data.ContinualData
    classes: list  # the classes task k trained on
    schedule: NoiseSchedule
    device: torch.device
    autocast: Callable = contextlib.nullcontext
    # the weights a teacher is frozen from, when not the student's own (train.ema_teacher: the EMA of the weights)
    teacher_source: torch.nn.Module | None = None


@dataclass
class Replay:
    """The replay part of a step.

    ``x`` (N, C, H, W) and ``t`` (N,) are extra student inputs; ``target`` is
    the noise the student's output on them must match. When ``x`` is None the
    target applies to the student's output on the *real* inputs (LwF-like).
    ``teacher_images`` counts teacher forward passes in images, for the compute
    report. With a conditional model ``y`` holds the replay samples' labels.
    """

    target: torch.Tensor
    x: torch.Tensor | None = None
    t: torch.Tensor | None = None
    teacher_images: int = 0
    y: torch.Tensor | None = None  # conditional models: the labels the student sees on ``x`` (NULL_LABEL: none)
    weight: torch.Tensor | None = None  # per-row loss weights of the replay rows (importance sampling), or None


REGISTRY: dict[str, type["Strategy"]] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class Strategy:
    name: ClassVar[str] = ""
    uses_teacher: ClassVar[bool] = False
    # Task 0 is plain diffusion training on tasks[0] (no replay, no penalty, nothing accumulated during it),
    # so its result can be shared between runs of the same seed (config train.init_from).
    shares_first_task: ClassVar[bool] = True
    # Whether the strategy works with a class-conditional model (model.conditional); the config refuses it if not.
    supports_conditional: ClassVar[bool] = True

    def train_classes(self, k: int, tasks: list[tuple[int, ...]]) -> list[int]:
        return list(tasks[k])

    def replay(self, ctx: StepContext) -> Replay | None:
        return None

    def loss_weights(self, k: int, has_replay: bool) -> tuple[float, float]:
        """(weight of the real MSE, weight of the replay MSE): without replay the real MSE alone.

        A strategy that replays derives from :class:`ReplayStrategy`, which declares lambda and the paper's
        weighting; one that returns a replay batch without it is a programming error, said so at once.
        """
        if has_replay:
            raise TypeError(f"strategy '{self.name}' returned a replay batch but does not derive from "
                            "ReplayStrategy, which declares its loss weight lambda")
        return 1.0, 0.0

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        return None

    def after_step(self, model: torch.nn.Module) -> None:
        """Called after every optimizer step (SI accumulates its path integral here)."""

    # Set by a strategy that wants the student's per-row squared error on its replay rows after every forward
    # (observe_replay); the training loop computes it only then.
    wants_replay_errors: ClassVar[bool] = False

    def observe_replay(self, t: torch.Tensor, err: torch.Tensor) -> None:
        """The replay rows' timesteps and the student's mean squared error on each (detached)."""

    def end_task(self, model: torch.nn.Module, ctx: "TaskContext") -> None:
        """Called once when task ``ctx.task`` has finished training."""

    def check(self) -> list[str]:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, model: torch.nn.Module) -> None:
        pass

    def params(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass
class ReplayStrategy(Strategy):
    """A strategy with a replay loss; lambda weighs it (docs/protocol.md, "The loss")."""

    lam: float = 1.0  # lambda: weight of the replay loss (paper: GR 1; GD swept 0.1 .. 3.0, 0.75 on CIFAR-10)
    # replay samples per real image: the replay batch is round(replay_ratio * B) (the paper: 1, as many as the
    # real batch); the loss weights stay the paper's (the replay MSE is a mean over its own rows)
    replay_ratio: float = 1.0

    def replay_count(self, b: int) -> int:
        """The number of replay samples beside b real images."""
        return max(1, int(round(self.replay_ratio * b)))

    def loss_weights(self, k: int, has_replay: bool) -> tuple[float, float]:
        """The paper's weighting with replay: w_k = 1/(k+1); L = w_k MSE(real) + (1 - w_k) lambda MSE(replay)."""
        if not has_replay:
            return 1.0, 0.0
        w = 1.0 / (k + 1)
        return w, (1.0 - w) * float(self.lam)

    def check(self) -> list[str]:
        p = [f"lam: must be >= 0, got {self.lam}"] if self.lam < 0 else []
        if not self.replay_ratio > 0:
            p.append(f"replay_ratio: must be > 0 (replay samples per real image; 1: as many), got {self.replay_ratio}")
        return p


@dataclass
class TeacherStrategy(ReplayStrategy):
    """A replay strategy with a frozen teacher: the model as it was at the end of the previous task.

    With a class-conditional model the teacher's replay samples carry labels over the classes seen so far
    (``replay_labels``), made with classifier-free guidance ``teacher_guidance``; both are ignored otherwise.
    """

    uses_teacher: ClassVar[bool] = True
    # conditional models: the replay's labels, "balanced" (equal counts over the seen classes in every batch,
    # up to one) or "proportional" (drawn in proportion to each seen class's real training images)
    replay_labels: str = "balanced"
    teacher_guidance: float = 1.0  # conditional models: guidance scale of the teacher's replay generation
    # How the replay's timesteps t~ are drawn (docs/cheaper_distillation.md): uniform (the paper) | snr
    # (density proportional to the min-SNR-5 weight: fewer nearly clean timesteps) | adaptive (importance
    # sampling by the student's running error per timestep band, reweighted so the loss's expectation is the
    # uniform one)
    replay_timesteps: str = "uniform"

    ADAPTIVE_BINS: ClassVar[int] = 20  # timestep bands of the adaptive rule
    ADAPTIVE_MIX: ClassVar[float] = 0.25  # share of the uniform density kept in the adaptive one
    ADAPTIVE_DECAY: ClassVar[float] = 0.98  # running mean of each band's error

    def __post_init__(self):
        self.teacher = None
        self.label_classes = None  # conditional models: the classes the teacher knows, and their weights
        self.label_weights = None
        self.band_error = None  # adaptive timesteps: running mean error per band (None: not yet measured)

    @property
    def wants_replay_errors(self) -> bool:  # type: ignore[override]
        return self.replay_timesteps == "adaptive"

    def replay_t(self, ctx: StepContext, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n replay timesteps and their importance weights (None: unweighted), from ctx.generator."""
        dev, T = ctx.x0.device, ctx.schedule.T
        self._T = T
        if self.replay_timesteps == "uniform":
            return ctx.schedule.sample_timesteps(n, ctx.generator, dev), None
        if self.replay_timesteps == "snr":
            p = ctx.schedule.min_snr_weight(torch.arange(T, device=dev), 5.0)
            return torch.multinomial(p / p.sum(), n, replacement=True, generator=ctx.generator), None
        k = self.ADAPTIVE_BINS
        err = self.band_error.to(dev) if self.band_error is not None else torch.ones(k, device=dev)
        p = (1 - self.ADAPTIVE_MIX) * err / err.sum() + self.ADAPTIVE_MIX / k
        band = torch.multinomial(p, n, replacement=True, generator=ctx.generator)
        lo, hi = band * T // k, (band + 1) * T // k
        t = torch.minimum(lo + (torch.rand(n, generator=ctx.generator, device=dev) * (hi - lo)).long(), hi - 1)
        return t, 1.0 / (k * p[band])  # E_p[w L] = the uniform mean of L

    def observe_replay(self, t: torch.Tensor, err: torch.Tensor) -> None:
        if self.replay_timesteps != "adaptive":
            return
        k, T = self.ADAPTIVE_BINS, self._T
        band = (t.long() * k // T).clamp(0, k - 1).cpu()
        err = err.detach().double().cpu()
        if self.band_error is None:
            self.band_error = torch.full((k,), float(err.mean()), dtype=torch.float64)
        for b in band.unique():
            self.band_error[b] = self.ADAPTIVE_DECAY * self.band_error[b] + (1 - self.ADAPTIVE_DECAY) * err[band == b].mean()

    def check(self) -> list[str]:
        p = super().check()
        if self.replay_labels not in ("balanced", "proportional"):
            p.append(f"replay_labels: must be balanced or proportional, got {self.replay_labels!r}")
        if self.teacher_guidance < 0:
            p.append(f"teacher_guidance: must be >= 0 (1: no guidance), got {self.teacher_guidance}")
        if self.replay_timesteps not in ("uniform", "snr", "adaptive"):
            p.append(f"replay_timesteps: must be uniform, snr or adaptive, got {self.replay_timesteps!r}")
        return p

    def guided(self) -> bool:
        """Whether the teacher's generation runs with classifier-free guidance (two forwards per step)."""
        return self.label_classes is not None and self.teacher_guidance != 1.0

    def teacher_labels(self, ctx: StepContext, n: int) -> torch.Tensor | None:
        """n labels for the teacher's replay samples (None for an unconditional model), from ctx.generator."""
        if ctx.y is None:
            return None
        dev = ctx.x0.device
        c = self.label_classes.to(dev)
        if self.replay_labels == "balanced":  # a class cycle from a random start: counts differ by at most one
            start = torch.randint(0, len(c), (1,), generator=ctx.generator, device=dev)
            return c[(torch.arange(n, device=dev) + start) % len(c)]
        pick = torch.multinomial(self.label_weights.to(dev), n, replacement=True, generator=ctx.generator)
        return c[pick]

    def end_task(self, model, ctx) -> None:
        # Refreshed once per task, never during one (docs/protocol.md §3).
        self.band_error = None  # a new teacher: its discrepancies are measured afresh
        if getattr(model, "conditional", False):
            seen = ctx.data.seen_classes(ctx.task)
            _, y = ctx.data.train(seen)
            self.label_classes = torch.as_tensor(sorted(seen), dtype=torch.long)
            self.label_weights = torch.stack([(y == c).sum() for c in self.label_classes]).double()
        self.teacher = frozen_copy(ctx.teacher_source if ctx.teacher_source is not None else model)
        # Under bf16 autocast the teacher keeps bf16 weights: autocast would round its convolution and linear
        # weights to bf16 at every forward anyway; stored once, the casts go (measured with `cldiff bench
        # --ablation`), and the output differs from the fp32-weight teacher's by about as much as autocast's
        # own rounding does (small UNet: mean |diff| 0.0045 vs 0.0041, on outputs of mean magnitude 0.39).
        dtype = autocast_dtype(ctx.autocast)
        if dtype is not None:
            self.teacher.to(dtype)

    def state_dict(self) -> dict:
        s = {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}
        if self.label_classes is not None:
            s["label_classes"], s["label_weights"] = self.label_classes, self.label_weights
        if self.band_error is not None:
            s["band_error"] = self.band_error
        return s

    def load_state_dict(self, state: dict, model) -> None:
        self.label_classes, self.label_weights = state.get("label_classes"), state.get("label_weights")
        self.band_error = state.get("band_error")
        if "teacher" in state:
            self.teacher = frozen_copy(model)
            saved = next((v.dtype for v in state["teacher"].values() if v.is_floating_point()), torch.float32)
            self.teacher.to(saved)  # the dtype it was saved in
            self.teacher.load_state_dict(state["teacher"])


def build_strategy(spec: dict) -> Strategy:
    """A strategy from its config mapping ``{name: ..., field: value}``; raises ValueError listing problems."""
    problems = validate_strategy(spec)
    if problems:
        raise ValueError("; ".join(problems))
    spec = dict(spec)
    cls = REGISTRY[spec.pop("name")]
    return cls(**spec)


def validate_strategy(spec, conditional: bool = False) -> list[str]:
    import typing

    from ..schema import accepts_float, did_you_mean, type_name, type_ok, yaml_float

    if not isinstance(spec, dict) or "name" not in spec:
        return [f"strategy: expected a mapping with a 'name' (one of {', '.join(sorted(REGISTRY))}), got {spec!r}"]
    name = spec["name"]
    if name not in REGISTRY:
        return [f"strategy.name: unknown strategy {name!r}{did_you_mean(str(name), REGISTRY)}; "
                f"allowed: {', '.join(sorted(REGISTRY))}"]
    cls = REGISTRY[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    problems, kwargs = [], {}
    for key, value in spec.items():
        if key == "name":
            continue
        if key in hints and accepts_float(hints[key]):
            value = spec[key] = yaml_float(value)
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            problems.append(f"strategy.{key}: unknown field for '{name}'{did_you_mean(str(key), sorted(fields))}; "
                            f"allowed: {allowed}")
        elif not type_ok(value, hints[key]):
            problems.append(f"strategy.{key}: expected {type_name(hints[key])}, got {value!r}")
        else:
            kwargs[key] = value
    if not problems:
        problems += [f"strategy.{p}" for p in cls(**kwargs).check()]
    if conditional and not cls.supports_conditional:
        ok = sorted(n for n, c in REGISTRY.items() if c.supports_conditional)
        problems.append(f"strategy.name: strategy '{name}' does not support class-conditional models "
                        f"(model.conditional: true); set model.conditional: false, or use one of {', '.join(ok)}")
    return problems
