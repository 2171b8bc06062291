"""Generative replay (GR) and generative distillation (GD), docs/protocol.md §3.

Both draw B replay samples every minibatch, generated on the fly by the frozen
teacher with S DDIM steps (eta configurable, 0 by default):

    x~0 = DDIM_S(teacher, z),  z ~ N(0, I)
    x~  = sqrt(abar_t~) x~0 + sqrt(1 - abar_t~) e',   t~ ~ U{0..T-1},  e' ~ N(0, I)

GR trains the student to predict the fresh noise e' on x~ (the replayed image
is treated as data); GD trains it to match the teacher's own prediction
eps_T(x~, t~), which distils the whole reverse process at the cost of one
extra teacher forward (Masip et al. 2024, eq. 5).

With a class-conditional model (docs/conditional.md) z comes with a label y over the seen classes, x~0 is
generated for y, the student sees (x~, t~, y) (y dropped to "no label" at the rate model.cond_drop), and
GD's target is the teacher's prediction given that same label.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import ddim_sample, predict_eps
from .base import Replay, StepContext, TeacherStrategy, register


@dataclass
class _TeacherReplay(TeacherStrategy):
    teacher_steps: int = 2  # S: DDIM steps the teacher takes to generate replay (paper: 2; also 10, 100)
    teacher_eta: float = 0.0  # DDIM eta of replay generation (paper: 0)
    # Amortised replay (not the paper's; off by default): every `pool_every` iterations the teacher generates
    # `pool_size` images (0: as many as the batch), and each minibatch draws its B replay images from that pool
    # with replacement, noised afresh. 1 = on the fly, a new x~0 for every replay sample (the paper).
    pool_every: int = 1
    pool_size: int = 0

    def __post_init__(self):
        super().__post_init__()
        self._pool, self._pool_y, self._pool_age = None, None, 0
        self.generated = 0  # replay images the teacher generated in the last step (0: all drawn from the pool)

    def check(self) -> list[str]:
        p = super().check()
        if self.pool_every < 1:
            p.append(f"pool_every: must be >= 1 (1 = replay generated on the fly), got {self.pool_every}")
        if self.pool_size < 0:
            p.append(f"pool_size: must be >= 0 (0 = the batch size), got {self.pool_size}")
        if self.teacher_steps < 1:
            p.append(f"teacher_steps: strategy '{self.name}' needs teacher_steps >= 1, got {self.teacher_steps}")
        if self.teacher_eta < 0:
            p.append(f"teacher_eta: must be >= 0, got {self.teacher_eta}")
        return p

    def _generate(self, ctx: StepContext, n: int):
        """n teacher samples x~0 and their labels (None for an unconditional model)."""
        z = torch.randn((n, *ctx.x0.shape[1:]), generator=ctx.generator, device=ctx.x0.device)
        y = self.teacher_labels(ctx, n)
        return ddim_sample(self.teacher, ctx.schedule, z, self.teacher_steps, self.teacher_eta, ctx.generator,
                           ctx.autocast, y=y, guidance=self.teacher_guidance), y

    def _replay_inputs(self, ctx: StepContext):
        """(x~, t~, e', labels the student sees) for B replay samples; all randomness from ctx.generator."""
        b, dev = self.replay_count(ctx.x0.shape[0]), ctx.x0.device
        shape = (b, *ctx.x0.shape[1:])
        if self.pool_every == 1:
            x0_tilde, y = self._generate(ctx, b)
            self.generated = b
        else:
            self.generated = 0
            if self._pool is None or self._pool_age >= self.pool_every:
                n = self.pool_size or b
                self._pool, self._pool_y = self._generate(ctx, n)
                self._pool_age, self.generated = 0, n
            self._pool_age += 1
            pick = torch.randint(0, len(self._pool), (b,), generator=ctx.generator, device=dev)
            x0_tilde = self._pool[pick]
            y = self._pool_y[pick] if self._pool_y is not None else None
        t_tilde, self._weight = self.replay_t(ctx, b)
        e_prime = torch.randn(shape, generator=ctx.generator, device=dev)
        return ctx.schedule.add_noise(x0_tilde, t_tilde, e_prime), t_tilde, e_prime, ctx.student_labels(y)

    def _generation_images(self) -> int:
        """Teacher image-forwards of the last generation (guidance doubles every forward's batch)."""
        return self.teacher_steps * self.generated * (2 if self.guided() else 1)

    def end_task(self, model, ctx) -> None:
        super().end_task(model, ctx)
        self._pool, self._pool_y, self._pool_age = None, None, 0  # a new teacher: its pool is made afresh

    def state_dict(self) -> dict:
        s = super().state_dict()
        if self._pool is not None:
            s["pool"], s["pool_age"] = self._pool, self._pool_age
        if self._pool_y is not None:
            s["pool_labels"] = self._pool_y
        return s

    def load_state_dict(self, state: dict, model) -> None:
        super().load_state_dict(state, model)
        self._pool, self._pool_age = state.get("pool"), int(state.get("pool_age", 0))
        self._pool_y = state.get("pool_labels")


@register
@dataclass
class GenerativeReplay(_TeacherReplay):
    """GR: target is the fresh noise e' (the replayed image is treated as data)."""

    name = "generative_replay"

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:  # task 0 never replays
            return None
        x, t, e, y = self._replay_inputs(ctx)
        return Replay(target=e, x=x, t=t, teacher_images=self._generation_images(), y=y, weight=self._weight)


@register
@dataclass
class GenerativeDistillation(_TeacherReplay):
    """GD, the paper's method: target is the teacher's noise prediction on the same input."""

    name = "generative_distillation"

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:
            return None
        x, t, _, y = self._replay_inputs(ctx)
        target = predict_eps(self.teacher, x, t, ctx.autocast, y)  # given the label the student sees
        return Replay(target=target, x=x, t=t, teacher_images=self._generation_images() + x.shape[0], y=y,
                      weight=self._weight)
