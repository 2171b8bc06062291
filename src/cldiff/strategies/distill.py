"""Distillation variants of docs/protocol.md §3: LwF-like, Gaussian and partial-generation distillation."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import ddim_sample, predict_eps
from .base import Replay, StepContext, TeacherStrategy, register


@dataclass
class _Distill(TeacherStrategy):
    """Distillation from the teacher on inputs other than GD's (lambda, ``lam``: weight of the distillation loss)."""


@register
@dataclass
class LwFDistillation(_Distill):
    """LwF-like: no replay inputs; the teacher is evaluated on the same noisy real inputs.

    One student output, two targets: w_k MSE(eps_S(x_t), eps) + (1 - w_k) lambda MSE(eps_S(x_t), eps_T(x_t, t)).
    The student batch stays B (paper grid: lambda 0.1 .. 1.75; 1.25 carried to CIFAR-10).
    """

    name = "lwf_distillation"

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:
            return None
        target = predict_eps(self.teacher, ctx.x_t, ctx.t, ctx.autocast)
        return Replay(target=target, x=None, t=None, teacher_images=len(ctx.x_t))


@register
@dataclass
class GaussianDistillation(_Distill):
    """Replay inputs are pure noise z ~ N(0, I) at t~ ~ U{0..T-1}; target eps_T(z, t~).

    Paper grid: lambda 1, 4, 8 ... 28; 8 carried to CIFAR-10.
    """

    name = "gaussian_distillation"

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:
            return None
        b, dev = ctx.x0.shape[0], ctx.x0.device
        z = torch.randn(ctx.x0.shape, generator=ctx.generator, device=dev)
        t = ctx.schedule.sample_timesteps(b, ctx.generator, dev)
        return Replay(target=predict_eps(self.teacher, z, t, ctx.autocast), x=z, t=t, teacher_images=b)


@register
@dataclass
class PartialGenerationDistillation(_Distill):
    """The teacher denoises from noise down to a per-sample t~ with S DDIM steps (no fresh noise is
    added); the student matches eps_T(x~, t~) there."""

    name = "partial_generation_distillation"
    teacher_steps: int = 2  # S: DDIM steps from T-1 down to t~
    teacher_eta: float = 0.0  # DDIM eta

    def check(self) -> list[str]:
        p = super().check()
        if self.teacher_steps < 1:
            p.append(f"teacher_steps: strategy '{self.name}' needs teacher_steps >= 1, got {self.teacher_steps}")
        if self.teacher_eta < 0:
            p.append(f"teacher_eta: must be >= 0, got {self.teacher_eta}")
        return p

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:
            return None
        b, dev = ctx.x0.shape[0], ctx.x0.device
        z = torch.randn(ctx.x0.shape, generator=ctx.generator, device=dev)
        t = ctx.schedule.sample_timesteps(b, ctx.generator, dev)
        x = ddim_sample(self.teacher, ctx.schedule, z, self.teacher_steps, self.teacher_eta, ctx.generator,
                        ctx.autocast, t_end=t)
        return Replay(target=predict_eps(self.teacher, x, t, ctx.autocast), x=x, t=t,
                      teacher_images=(self.teacher_steps + 1) * b)
