"""Parameter regularisation: EWC (Kirkpatrick et al. 2017) and SI (Zenke et al. 2017) on the UNet.

Both add strength * sum_i Omega_i (theta_i - theta*_i)^2 to the loss, where
theta* are the parameters at the end of the previous task and Omega is an
importance estimate: the diagonal Fisher of the denoising loss for EWC, the
path integral of the loss decrease for SI. No replay; only the student
receives gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Strategy, TaskContext, register


def _params(model):
    m = model.module if hasattr(model, "module") else model
    return {n: p for n, p in m.named_parameters() if p.requires_grad}


@dataclass
class _Regularised(Strategy):
    strength: float = 1.0  # lambda of the quadratic penalty

    def __post_init__(self):
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def check(self) -> list[str]:
        return [f"strength: must be >= 0, got {self.strength}"] if self.strength < 0 else []

    def penalty(self, model):
        if not self.anchor:
            return None
        total = 0.0
        for n, p in _params(model).items():
            total = total + (self.importance[n] * (p - self.anchor[n]) ** 2).sum()
        return self.strength * total

    def state_dict(self) -> dict:
        out = {f"importance.{n}": v for n, v in self.importance.items()}
        out.update({f"anchor.{n}": v for n, v in self.anchor.items()})
        return out

    def load_state_dict(self, state: dict, model) -> None:
        self.importance = {k[len("importance."):]: v for k, v in state.items() if k.startswith("importance.")}
        self.anchor = {k[len("anchor."):]: v for k, v in state.items() if k.startswith("anchor.")}


@register
@dataclass
class EWC(_Regularised):
    """Elastic weight consolidation with the empirical diagonal Fisher of the epsilon-MSE loss.

    Importance is summed over tasks (one penalty whose Fisher accumulates).
    """

    name = "ewc"
    # its Fisher is estimated on unlabelled noisy images (the "no label" branch of a conditional model only)
    supports_conditional: ClassVar[bool] = False
    strength: float = 100.0  # lambda of the penalty
    fisher_batches: int = 8  # minibatches of the finished task used to estimate the Fisher
    fisher_batch_size: int = 32  # images per Fisher minibatch

    def end_task(self, model, ctx: TaskContext) -> None:
        params = _params(model)
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        x, _ = ctx.data.train(ctx.classes)
        g = torch.Generator().manual_seed(2000 + ctx.task)  # own stream: training randomness is untouched
        was_training = model.training
        model.eval()
        for _ in range(self.fisher_batches):
            idx = torch.randint(0, len(x), (self.fisher_batch_size,), generator=g)
            x0 = x[idx].to(ctx.device)
            t = torch.randint(0, ctx.schedule.T, (len(x0),), generator=g).to(ctx.device)
            eps = torch.randn(x0.shape, generator=g).to(ctx.device)
            model.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(ctx.schedule.add_noise(x0, t, eps), t).float(), eps)
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2 / self.fisher_batches
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for n in fisher:
            self.importance[n] = self.importance.get(n, torch.zeros_like(fisher[n])) + fisher[n]
            self.anchor[n] = params[n].detach().clone()

    def check(self) -> list[str]:
        p = super().check()
        if self.fisher_batches < 1 or self.fisher_batch_size < 1:
            p.append("fisher_batches and fisher_batch_size: must be >= 1")
        return p


@register
@dataclass
class SI(_Regularised):
    """Synaptic intelligence: importance from the path integral of -grad * delta-theta along training."""

    name = "si"
    shares_first_task = False  # the path integral is accumulated during task 0 itself
    strength: float = 1.0  # c of the SI paper
    damping: float = 0.1  # xi: keeps the importance finite when a parameter barely moved

    def __post_init__(self):
        super().__post_init__()
        self.omega_run: dict[str, torch.Tensor] = {}
        self.prev: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}

    def after_step(self, model) -> None:
        params = _params(model)
        if not self.prev:
            return
        for n, p in params.items():
            if p.grad is not None:
                delta = p.detach() - self.prev[n]
                self.omega_run[n] += -p.grad.detach() * delta
            self.prev[n] = p.detach().clone()

    def begin(self, model) -> None:
        params = _params(model)
        self.prev = {n: p.detach().clone() for n, p in params.items()}
        self.start = {n: p.detach().clone() for n, p in params.items()}
        self.omega_run = {n: torch.zeros_like(p) for n, p in params.items()}

    def penalty(self, model):
        if not self.prev:  # the first step of a task: remember where the task starts
            self.begin(model)
        return super().penalty(model)

    def end_task(self, model, ctx: TaskContext) -> None:
        params = _params(model)
        if not self.prev:
            self.begin(model)
        for n, p in params.items():
            change = (p.detach() - self.start[n]) ** 2
            omega = self.omega_run[n].clamp(min=0) / (change + self.damping)
            self.importance[n] = self.importance.get(n, torch.zeros_like(omega)) + omega
            self.anchor[n] = p.detach().clone()
        self.prev, self.start, self.omega_run = {}, {}, {}

    def state_dict(self) -> dict:
        out = super().state_dict()
        for name, d in (("prev", self.prev), ("start", self.start), ("omega_run", self.omega_run)):
            out.update({f"{name}.{n}": v for n, v in d.items()})
        return out

    def load_state_dict(self, state: dict, model) -> None:
        super().load_state_dict(state, model)
        for name in ("prev", "start", "omega_run"):
            setattr(self, name, {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
