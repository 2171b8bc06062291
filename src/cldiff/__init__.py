"""cldiff: continual learning of diffusion models (generative distillation, generative replay, baselines)."""

__version__ = "0.1.0"
