"""Strategy registry. Importing this package registers every shipped strategy."""
from .base import REGISTRY, Replay, ReplayStrategy, StepContext, Strategy, TaskContext, TeacherStrategy, build_strategy, register, validate_strategy
from . import basic, distill, memory, regularize, replay, trajectory  # noqa: F401  (registration)

__all__ = ["REGISTRY", "Replay", "ReplayStrategy", "StepContext", "Strategy", "TaskContext", "TeacherStrategy", "build_strategy", "register",
           "validate_strategy"]
