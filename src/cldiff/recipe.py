"""The training recipe beyond the paper's protocol: EMA of the weights and a learning-rate schedule.

Both are off by default and in the ``paper/`` presets (docs/recipe.md says what each buys at CPU scale).
Both depend only on the step number within the task, so a run resumed mid-task continues exactly.
"""
from __future__ import annotations

import math

import torch

from .model import frozen_copy

# The warm-up of the EMA decay: after n optimizer steps of a task the decay is min(ema_decay, (1+n)/(10+n)).
# At the first step of a task it is 0.1 (the EMA all but jumps to the student), 0.9 after 80 steps, 0.99 after
# 890: a task of a few hundred steps is averaged over its own later steps, not over the weights it started with.
EMA_WARMUP = 10


def ema_decay_at(decay: float, n: int) -> float:
    """The EMA decay used for the update after step n (0-based) of a task."""
    return min(decay, (1.0 + n) / (EMA_WARMUP + n))


class EMA:
    """An exponential moving average of a model's weights, kept in float32 as a frozen model of its own.

    ``update`` after every optimizer step: ema <- d * ema + (1 - d) * student for the parameters (d from
    :func:`ema_decay_at`), buffers copied as they are.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = frozen_copy(model)
        self._params = list(self.model.parameters())
        self._buffers = list(self.model.buffers())

    @torch.no_grad()
    def update(self, model: torch.nn.Module, n: int) -> None:
        src = model.module if hasattr(model, "module") else model
        d = ema_decay_at(self.decay, n)
        torch._foreach_lerp_(self._params, [p.detach() for p in src.parameters()], 1.0 - d)
        for b_e, b_s in zip(self._buffers, src.buffers()):
            b_e.copy_(b_s)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def lr_at(base_lr: float, schedule: str, warmup: int, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of a task of ``steps`` steps.

    Linear warm-up from base_lr / warmup to base_lr over the first ``warmup`` steps; then ``constant`` keeps
    base_lr and ``cosine`` decays it as base_lr * (1 + cos(pi * s)) / 2 with s going from 0 at the end of the
    warm-up to 1 at the task's last step (which then trains at a small but non-zero rate).
    """
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    span = steps - warmup
    s = (step - warmup + 1) / (span + 1) if span > 0 else 1.0
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * s))
