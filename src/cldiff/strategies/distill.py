"""Distillation variants of docs/protocol.md §3: LwF-like, Gaussian and partial-generation distillation.

With a class-conditional model (docs/conditional.md) Gaussian and partial-generation replay carry labels over
the seen classes, like GD's; the LwF-like target is the teacher's unconditional prediction on the real inputs
(the teacher never saw the new classes' labels).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import NULL_LABEL, ddim_sample, predict_eps
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

    def check(self) -> list[str]:
        p = super().check()
        if self.replay_ratio != 1.0:
            p.append("replay_ratio: lwf_distillation has no replay batch (its targets are on the real inputs); "
                     "leave replay_ratio at 1")
        if self.replay_timesteps != "uniform":
            p.append("replay_timesteps: lwf_distillation uses the real inputs' timesteps; leave it uniform")
        return p

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:
            return None
        # A conditional teacher gives its unconditional prediction: it has never seen the new classes' labels.
        null = None if ctx.y is None else torch.full_like(ctx.y, NULL_LABEL)
        target = predict_eps(self.teacher, ctx.x_t, ctx.t, ctx.autocast, null)
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
        b, dev = self.replay_count(ctx.x0.shape[0]), ctx.x0.device
        z = torch.randn((b, *ctx.x0.shape[1:]), generator=ctx.generator, device=dev)
        t, w = self.replay_t(ctx, b)
        y = ctx.student_labels(self.teacher_labels(ctx, b))
        return Replay(target=predict_eps(self.teacher, z, t, ctx.autocast, y), x=z, t=t, teacher_images=b, y=y,
                      weight=w)


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
        b, dev = self.replay_count(ctx.x0.shape[0]), ctx.x0.device
        z = torch.randn((b, *ctx.x0.shape[1:]), generator=ctx.generator, device=dev)
        t, w = self.replay_t(ctx, b)
        y_gen = self.teacher_labels(ctx, b)
        x = ddim_sample(self.teacher, ctx.schedule, z, self.teacher_steps, self.teacher_eta, ctx.generator,
                        ctx.autocast, t_end=t, y=y_gen, guidance=self.teacher_guidance)
        y = ctx.student_labels(y_gen)
        return Replay(target=predict_eps(self.teacher, x, t, ctx.autocast, y), x=x, t=t, y=y, weight=w,
                      teacher_images=(self.teacher_steps * (2 if self.guided() else 1) + 1) * b)
