"""Experience replay: a class-balanced memory of real images from past tasks."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Replay, ReplayStrategy, StepContext, TaskContext, register


@register
@dataclass
class ExperienceReplay(ReplayStrategy):
    """Replays B stored real images per minibatch, noised like real data (target: their fresh noise).

    At the end of each task the memory is rebuilt so that every class seen so
    far keeps memory_size // n_classes images (class-balanced, chosen by a
    fixed-seed shuffle; old images are kept, never replaced by new ones of
    the same class).
    """

    name = "experience_replay"
    memory_size: int = 2000  # images in memory over all past classes
    balanced: bool = True  # equal share per class; false: keep the first images of each task, equal per task

    def __post_init__(self):
        self.memory: dict[int, torch.Tensor] = {}  # class -> images (n, C, H, W)

    def check(self) -> list[str]:
        p = super().check()
        if self.memory_size < 1:
            p.append(f"memory_size: must be >= 1, got {self.memory_size}")
        return p

    def end_task(self, model, ctx: TaskContext) -> None:
        x, y = ctx.data.train(ctx.data.tasks[ctx.task])
        g = torch.Generator().manual_seed(1000 + ctx.task)
        perm = torch.randperm(len(x), generator=g)
        x, y = x[perm], y[perm]
        for c in ctx.data.tasks[ctx.task]:
            self.memory[int(c)] = x[y == c].to(ctx.device)
        classes = sorted(self.memory)
        if self.balanced:
            per = {c: self.memory_size // len(classes) for c in classes}
        else:
            per_task = self.memory_size // (ctx.task + 1)
            per = {c: per_task // len(t) for t in ctx.data.tasks[: ctx.task + 1] for c in t}
        for c in classes:
            self.memory[c] = self.memory[c][: per[c]]

    def _flat(self) -> torch.Tensor:
        return torch.cat([self.memory[c] for c in sorted(self.memory)])

    def _flat_labels(self) -> torch.Tensor:
        return torch.cat([torch.full((len(self.memory[c]),), c, dtype=torch.long) for c in sorted(self.memory)])

    def replay(self, ctx: StepContext) -> Replay | None:
        if not self.memory:
            return None
        mem = self._flat()
        b, dev = self.replay_count(ctx.x0.shape[0]), ctx.x0.device
        idx = torch.randint(0, len(mem), (b,), generator=ctx.generator, device=dev)
        x0 = mem[idx.to(mem.device)].to(dev)
        t = ctx.schedule.sample_timesteps(b, ctx.generator, dev)
        e = torch.randn(x0.shape, generator=ctx.generator, device=dev)
        # a conditional model sees the stored images' own labels (dropped like the real ones)
        y = ctx.student_labels(self._flat_labels()[idx.cpu()].to(dev)) if ctx.y is not None else None
        return Replay(target=e, x=ctx.schedule.add_noise(x0, t, e), t=t, teacher_images=0, y=y)

    def state_dict(self) -> dict:
        return {f"memory_{c}": v for c, v in self.memory.items()}

    def load_state_dict(self, state: dict, model) -> None:
        dev = next(model.parameters()).device
        self.memory = {int(k.split("_")[1]): v.to(dev) for k, v in state.items() if k.startswith("memory_")}
