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

from ..model import NoiseSchedule, autocast_dtype, frozen_copy


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
    report.
    """

    target: torch.Tensor
    x: torch.Tensor | None = None
    t: torch.Tensor | None = None
    teacher_images: int = 0


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

    def loss_weights(self, k: int, has_replay: bool) -> tuple[float, float]:
        """The paper's weighting with replay: w_k = 1/(k+1); L = w_k MSE(real) + (1 - w_k) lambda MSE(replay)."""
        if not has_replay:
            return 1.0, 0.0
        w = 1.0 / (k + 1)
        return w, (1.0 - w) * float(self.lam)

    def check(self) -> list[str]:
        return [f"lam: must be >= 0, got {self.lam}"] if self.lam < 0 else []


@dataclass
class TeacherStrategy(ReplayStrategy):
    """A replay strategy with a frozen teacher: the model as it was at the end of the previous task."""

    uses_teacher: ClassVar[bool] = True

    def __post_init__(self):
        self.teacher = None

    def end_task(self, model, ctx) -> None:
        # Refreshed once per task, never during one (docs/protocol.md §3).
        self.teacher = frozen_copy(ctx.teacher_source if ctx.teacher_source is not None else model)
        # Under bf16 autocast the teacher keeps bf16 weights: autocast would round its convolution and linear
        # weights to bf16 at every forward anyway; stored once, the casts go (measured with `cldiff bench
        # --ablation`), and the output differs from the fp32-weight teacher's by about as much as autocast's
        # own rounding does (small UNet: mean |diff| 0.0045 vs 0.0041, on outputs of mean magnitude 0.39).
        dtype = autocast_dtype(ctx.autocast)
        if dtype is not None:
            self.teacher.to(dtype)

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_state_dict(self, state: dict, model) -> None:
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


def validate_strategy(spec) -> list[str]:
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
    return problems
