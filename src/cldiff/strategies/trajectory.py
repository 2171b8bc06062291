"""Trajectory distillation: distil on the teacher's own DDIM trajectory (docs/cheaper_distillation.md).

Generative distillation spends S teacher forwards to make a replay image x~0, then re-noises it and spends one
more forward for the target. But every DDIM step already evaluates the teacher at a noisy input x_t and gives
its prediction eps_T(x_t, t) there. Trajectory distillation keeps those (x_t, t, eps_T) triples and uses them
as the student's replay inputs and targets: no fresh noise and no extra forward. One trajectory of S steps gives
up to S pairs, so a replay batch of B pairs needs about B / states trajectories and S B / states teacher
image-forwards, against (S + 1) B for GD.

Options: ``states``, how many of each trajectory's states become pairs (the last ones, nearest to the data;
0: all but the first, pure-noise state, at least one); ``random_times``, each trajectory's intermediate
timesteps drawn at random (so the distilled timesteps cover 0..T-1, where the fixed trailing grid visits only
S timesteps); ``last_time``, with random times, how the last intermediate timestep is drawn ("sorted": the
smallest of the S - 1 sorted draws, mean about T / S; "uniform": uniform over 0..T-2, the earlier ones drawn
above it, so that with ``states`` 1 the pairs' timesteps are uniform as GD's); ``gd_share``, a share of the
replay rows that get ordinary GD targets on the trajectories' final samples (one extra forward each).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model import ddim_sample, predict_eps
from .base import Replay, StepContext, TeacherStrategy, register


@register
@dataclass
class TrajectoryDistillation(TeacherStrategy):
    """The student matches the teacher's predictions at the states of the teacher's own DDIM trajectories."""

    name = "trajectory_distillation"
    teacher_steps: int = 4  # S: DDIM steps of each teacher trajectory
    states: int = 0  # pairs per trajectory, its last states (0: S - 1, all but the pure-noise start; at least 1)
    random_times: bool = True  # random intermediate timesteps per trajectory (false: the trailing grid)
    last_time: str = "sorted"  # random times: the last intermediate timestep "sorted" (smallest draw) | "uniform"
    gd_share: float = 0.0  # share of replay rows with GD targets on the final samples (one extra forward each)

    def check(self) -> list[str]:
        p = super().check()
        if self.teacher_steps < 1:
            p.append(f"teacher_steps: strategy '{self.name}' needs teacher_steps >= 1, got {self.teacher_steps}")
        if not 0 <= self.states <= self.teacher_steps:
            p.append(f"states: must be between 0 (S - 1) and teacher_steps ({self.teacher_steps}), got {self.states}")
        if not 0 <= self.gd_share <= 1:
            p.append(f"gd_share: must be in [0, 1], got {self.gd_share}")
        if self.last_time not in ("sorted", "uniform"):
            p.append(f"last_time: must be 'sorted' or 'uniform', got {self.last_time!r}")
        elif self.last_time == "uniform" and not self.random_times:
            p.append("last_time: 'uniform' draws random timesteps; it needs random_times: true")
        if self.replay_timesteps != "uniform":
            p.append("replay_timesteps: trajectory_distillation takes its timesteps from the trajectories "
                     "(random_times); leave it uniform")
        return p

    def pairs_per_trajectory(self) -> int:
        return self.states or max(1, self.teacher_steps - 1)

    def replay(self, ctx: StepContext) -> Replay | None:
        if self.teacher is None:
            return None
        b, dev = self.replay_count(ctx.x0.shape[0]), ctx.x0.device
        S, shape, per = self.teacher_steps, ctx.x0.shape[1:], self.pairs_per_trajectory()
        n_gd = int(round(self.gd_share * b))
        n_pairs = b - n_gd
        n_traj = max(math.ceil(n_pairs / per), 1 if n_gd else 0)
        z = torch.randn((n_traj, *shape), generator=ctx.generator, device=dev)
        y_gen = self.teacher_labels(ctx, n_traj)
        ts = (ctx.schedule.random_ddim_timesteps(S, n_traj, ctx.generator, dev, self.last_time == "uniform")
              if self.random_times else None)
        record: list = []
        x_end = ddim_sample(self.teacher, ctx.schedule, z, S, 0.0, ctx.generator, ctx.autocast, y=y_gen,
                            guidance=self.teacher_guidance, ts=ts, record=record)
        cost = S * n_traj * (2 if self.guided() else 1)
        # the pairs: the last `per` states of every trajectory, trajectory by trajectory, the first n_pairs
        kept = record[S - per:]
        x = torch.stack([r[0] for r in kept], 1).flatten(0, 1)[:n_pairs]
        t = torch.stack([r[1] for r in kept], 1).flatten(0, 1)[:n_pairs]
        target = torch.stack([r[2] for r in kept], 1).flatten(0, 1)[:n_pairs]
        y = y_gen.repeat_interleave(per)[:n_pairs] if y_gen is not None else None
        if n_gd:  # ordinary GD rows: the trajectories' final samples, re-noised at a uniform timestep
            pick = torch.arange(n_gd, device=dev) % n_traj
            t_gd = ctx.schedule.sample_timesteps(n_gd, ctx.generator, dev)
            e_gd = torch.randn((n_gd, *shape), generator=ctx.generator, device=dev)
            x, t = torch.cat([x, ctx.schedule.add_noise(x_end[pick], t_gd, e_gd)]), torch.cat([t, t_gd])
            y = torch.cat([y, y_gen[pick]]) if y is not None else None
        y_s = ctx.student_labels(y)  # conditional models: the labels the student sees (some dropped)
        # Rows whose target is not yet the teacher's plain prediction for the student's label: the GD rows;
        # with guidance every trajectory row (the recorded prediction is the guided one); rows whose label was
        # dropped. Each costs one more forward.
        redo = torch.zeros(len(x), dtype=torch.bool, device=dev)
        redo[n_pairs:] = True
        if self.guided():
            redo[:] = True
        if y is not None:
            redo |= y_s != y
        if redo.any():
            full = torch.empty_like(x)
            full[:n_pairs] = target
            full[redo] = predict_eps(self.teacher, x[redo], t[redo], ctx.autocast, y_s[redo] if y_s is not None else None)
            target = full
            cost += int(redo.sum())
        return Replay(target=target, x=x, t=t, y=y_s, teacher_images=cost)
