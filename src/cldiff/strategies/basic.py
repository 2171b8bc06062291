"""Baselines without replay: naive fine-tuning (lower bound) and joint training (upper bound)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Strategy, register


@register
@dataclass
class Naive(Strategy):
    """Fine-tuning: MSE on the current task's real data only, no weighting."""

    name = "naive"


@register
@dataclass
class Joint(Strategy):
    """Cumulative training on the union of all tasks so far (an upper bound)."""

    name = "joint"

    def train_classes(self, k, tasks):
        return [c for t in tasks[: k + 1] for c in t]
