"""UNet presets, the noise schedule and our DDIM sampling loop.

Symbols follow DDPM (Ho et al. 2020) and DDIM (Song et al. 2021):
``abar[t]`` is alpha-bar_t = prod_{s<=t} (1 - beta_s); the forward process is
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4); the model predicts eps.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class UNetPreset:
    block_out_channels: tuple
    down_block_types: tuple
    up_block_types: tuple
    norm_num_groups: int
    layers_per_block: int = 1
    note: str = ""


D, AD, U, AU = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"

PRESETS = {
    # docs/protocol.md §2: 64-128-256-512, attention at the lowest resolution, ~42.9 M parameters.
    "paper": UNetPreset((64, 128, 256, 512), (D, D, D, AD), (AU, U, U, U), 32,
                        note="the paper's Fashion-MNIST UNet"),
    # The CPU-scale model of shared/calibration (2.7 M parameters).
    "small": UNetPreset((32, 64, 128), (D, D, AD), (AU, U, U), 16, note="CPU scale"),
    # For tests: a small UNet that still has every block type. Three levels, so that its attention runs at 8x8
    # (64 tokens) as the small preset's does: with two levels it ran at 16x16 and took over half of a training
    # step (bf16, batch 16, one thread: 360 ms a step, 163 ms with three levels).
    "tiny": UNetPreset((16, 32, 32), (D, D, AD), (AU, U, U), 8, note="tests only"),
    # The paper's CIFAR-10 model: 128-256-256-256, two layers per block, attention at 16x16.
    "cifar": UNetPreset((128, 256, 256, 256), (D, AD, D, D), (U, U, AU, U), 32, layers_per_block=2,
                        note="the paper's CIFAR-10 UNet"),
}


# How the UNet's attention blocks compute softmax(QK^T/sqrt(d))V. "sdpa": torch's scaled_dot_product_attention
# (diffusers' default; on CUDA a fused kernel). "classic": explicit baddbmm + softmax + bmm (diffusers'
# AttnProcessor). On the CPU the fused SDPA kernel is slow for these short sequences (8x8 or 4x4 tokens):
# measured with a GD step of the small UNet, batch 64, bf16, 2 threads: 2.46-2.64 s with sdpa, 1.80 s with
# classic; its backward alone took a quarter of the step. "auto" picks classic on the CPU, sdpa elsewhere.
ATTENTION_KINDS = ("auto", "classic", "sdpa")


class EpsModel(nn.Module):
    """A UNet that maps (x_t, t) to a prediction of eps.

    x: (N, C, S, S) float; t: (N,) int64 in [0, T-1]. Returns (N, C, S, S).
    """

    def __init__(self, preset: str = "small", channels: int = 1, image_size: int = 32, attention: str = "auto",
                 num_classes: int | None = None, label_init_std: float = 0.0):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {attention!r}; allowed: {', '.join(ATTENTION_KINDS)}")
        from diffusers import UNet2DModel

        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; allowed: {', '.join(PRESETS)}")
        p = PRESETS[preset]
        self.preset, self.channels, self.image_size = preset, channels, image_size
        # A class-conditional model (model.conditional) has num_classes + 1 label embeddings, added to the
        # timestep embedding (diffusers' class embedding); the last one is the "no label" of classifier-free
        # guidance. An unconditional model has none and is built exactly as before.
        self.num_classes = num_classes
        extra = {"num_class_embeds": num_classes + 1} if num_classes else {}
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels,
            layers_per_block=p.layers_per_block, block_out_channels=p.block_out_channels,
            down_block_types=p.down_block_types, up_block_types=p.up_block_types,
            norm_num_groups=p.norm_num_groups, **extra,
        )

        if num_classes:
            # The label embedding starts at zero, so a new conditional model predicts exactly as it would without
            # labels and learns them from there. Measured against diffusers' default N(0, 1) start on the
            # `quick_conditional` task 0 (200 steps; docs/results/split_fmnist_conditional_quick/): seed 42
            # fid_fmnist 464.1 against 520.5, label accuracy 0.404 against 0.298; seed 1714 1259.7 against
            # 1358.3, 0.044 against 0.008.
            # model.label_init_std > 0 starts it at N(0, std^2) instead (docs/conditional.md: how fast labels are learnt).
            with torch.no_grad():
                self.unet.class_embedding.weight.zero_()
                if label_init_std > 0:
                    self.unet.class_embedding.weight.normal_(0.0, label_init_std)
        self.attention = attention
        self._attn_active = None

    @property
    def conditional(self) -> bool:
        return bool(self.num_classes)

    def _use_attention(self, kind: str) -> None:
        from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
        for m in self.unet.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor() if kind == "classic" else AttnProcessor2_0())
        self._attn_active = kind

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x, t) of an unconditional model, eps(x, t, y) of a conditional one: y (N,) class labels, where
        NULL_LABEL (-1) asks for the unconditional prediction; y None means no label for every sample."""
        if y is not None and not self.conditional:
            raise ValueError("this model is unconditional (model.conditional: false): it takes no class labels")
        kind = self.attention if self.attention != "auto" else ("classic" if x.device.type == "cpu" else "sdpa")
        if kind != self._attn_active:
            self._use_attention(kind)
        w = self.unet.conv_in.weight.dtype
        if x.dtype != w and not torch.is_autocast_enabled(x.device.type):
            x = x.to(w)  # a reduced-precision copy (the bf16 teacher) called outside autocast
        if not self.conditional:
            return self.unet(x, t, return_dict=False)[0]
        null = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        labels = null if y is None else torch.where(y < 0, null, y.to(x.device).long())
        return self.unet(x, t, class_labels=labels, return_dict=False)[0]


def model_classes(cfg) -> int | None:
    """The number of class labels a run's model takes: the data set's classes if model.conditional, else None."""
    if not cfg.model.conditional:
        return None
    from .data import DATASETS
    return DATASETS[cfg.data.dataset].num_classes


NULL_LABEL = -1  # the label that asks a conditional model for its unconditional prediction


def drop_labels(y: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Classifier-free guidance's label dropout: each label becomes NULL_LABEL with probability p."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p
    return torch.where(drop, torch.full_like(y, NULL_LABEL), y)


def eps_of(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
           guidance: float = 1.0) -> torch.Tensor:
    """The model's noise prediction: plain (y None: unconditional models, or a conditional one's "no label"),
    conditional on y, or with classifier-free guidance (Ho & Salimans 2022) at scale ``guidance``:
    eps(x, t, none) + guidance (eps(x, t, y) - eps(x, t, none)), in one forward of the doubled batch.
    Guidance 1 is the conditional prediction itself, with no second forward. Rows whose y is NULL_LABEL get
    the unconditional prediction whatever the scale."""
    if y is None:
        return model(x, t)
    if guidance == 1.0:
        return model(x, t, y)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, NULL_LABEL)]))
    cond, uncond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def balanced_labels(classes, n: int, offset: int = 0) -> torch.Tensor:
    """n labels cycling through ``classes`` from position ``offset``: every class gets n // len(classes) or
    one more, in a fixed order (evaluation samples, grids)."""
    c = torch.as_tensor(list(classes), dtype=torch.long)
    return c[(torch.arange(n) + offset) % len(c)]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def frozen_copy(model: EpsModel) -> EpsModel:
    """A new module with the same weights, in eval mode, with no gradients.

    Built from the preset and a state dict (not deepcopy), so it never shares
    storage or hooks with the student (DDP wrappers included).
    """
    src = model.module if hasattr(model, "module") else model
    teacher = EpsModel(src.preset, src.channels, src.image_size, src.attention, src.num_classes)
    teacher.load_state_dict(src.state_dict())
    dev = next(src.parameters()).device
    return teacher.to(dev).eval().requires_grad_(False)


# --------------------------------------------------------------------------- precision


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but no CUDA device is available; use device: cpu or auto")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fused_adam_for(device: torch.device, setting: bool | str = False) -> bool:
    """Whether Adam takes its fused kernel (train.fused_adam): as set, or with "auto" on CUDA GPUs and on CPUs with
    AMX, where it was measured faster (docs/results/bench/); off on other CPUs, where it was not."""
    if setting != "auto":
        return bool(setting)
    from .sysmem import cpu_features
    return device.type == "cuda" or (device.type == "cpu" and cpu_features()["amx_bf16"])


def autocast_for(device: torch.device, precision: str = "auto"):
    """A zero-argument factory of the autocast context for this device and precision."""
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use_bf16:
        return contextlib.nullcontext
    return _Autocast(device.type, torch.bfloat16)


class _Autocast:
    """``torch.autocast(device_type, dtype)`` as a factory that says its dtype (``autocast_dtype``)."""

    def __init__(self, device_type: str, dtype: torch.dtype):
        self.device_type, self.dtype = device_type, dtype

    def __call__(self):
        return torch.autocast(self.device_type, dtype=self.dtype)


def autocast_dtype(autocast) -> torch.dtype | None:
    """The reduced precision of an autocast factory from :func:`autocast_for` (None: full precision)."""
    return getattr(autocast, "dtype", None)


# --------------------------------------------------------------------------- schedule


class NoiseSchedule:
    """Linear betas, optionally rescaled to zero terminal SNR; epsilon prediction.

    ``abar`` is a float32 tensor of shape (T,), on ``device``.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 zero_terminal_snr: bool = True, device: torch.device | str = "cpu"):
        T = num_train_timesteps
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        abar = torch.cumprod(1.0 - betas, 0)
        if zero_terminal_snr:
            # Lin et al. 2024 ("Common diffusion noise schedules and sample steps are flawed"), Alg. 1:
            # shift sqrt(abar) so that sqrt(abar_T) = 0, scale so that sqrt(abar_0) is unchanged.
            s = abar.sqrt()
            s0, sT = s[0].clone(), s[-1].clone()
            s = (s - sT) * s0 / (s0 - sT)
            abar = s**2
        self.T = T
        self.abar = abar.float().to(device)

    @classmethod
    def from_config(cls, m, device="cpu") -> "NoiseSchedule":
        return cls(m.num_train_timesteps, m.beta_start, m.beta_end, m.zero_terminal_snr, device)

    def _ab(self, t: torch.Tensor) -> torch.Tensor:
        return self.abar[t].view(-1, 1, 1, 1)

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM eq. 4). Shapes (N, C, H, W); t (N,)."""
        ab = self._ab(t)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """The x_0 estimate of an eps-prediction, (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (DDIM eq. 12's
        "predicted x_0"); ``clip`` clamps it to [-1, 1]. Shapes (N, C, H, W); t (N,).

        Under zero terminal SNR abar is 0 at t = T-1 and the estimate is undefined; as in diffusers'
        DDIMScheduler (which the paper used) it saturates, and with ``clip`` it lands on +-1. The division is by a
        tiny floor instead of 0, so that an exact zero residual gives 0, never NaN.
        """
        ab = self._ab(t)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt().clamp(min=1e-12)
        return x0.clamp(-1.0, 1.0) if clip else x0

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR_t = abar_t / (1 - abar_t), shape (N,). Under zero terminal SNR it is exactly 0 at t = T-1."""
        ab = self.abar[t]
        return ab / (1.0 - ab).clamp(min=1e-20)

    def min_snr_weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-gamma loss weights for eps-prediction (Hang et al. 2023, eq. 12 with eps targets), shape (N,).

        The x_0-loss weight min(SNR_t, gamma) becomes min(SNR_t, gamma) / SNR_t on the eps-loss, since
        ||x_0 - x^_0||^2 = ||eps - eps^||^2 / SNR_t. It is 1 wherever SNR_t <= gamma and gamma / SNR_t above,
        so only the nearly clean timesteps (small t, huge SNR) are turned down. Under zero terminal SNR the
        last step t = T-1 has SNR 0 and the formula reads 0 / 0; its limit from the right is 1 (the weight is
        1 for every SNR below gamma), and 1 is what it gets: that step is pure noise, whose eps-loss is the
        one the sampler's first step depends on, so it must not be switched off. Computed as
        gamma / max(SNR_t, gamma), which is exactly that, with no division by zero.
        """
        return gamma / self.snr(t).clamp(min=gamma)

    def sample_timesteps(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        """Timesteps drawn uniformly from 0..T-1 (docs/protocol.md §2)."""
        return torch.randint(0, self.T, (n,), generator=generator, device=device)

    def ddim_timesteps(self, steps: int, t_end: torch.Tensor | None = None, n: int = 1) -> torch.Tensor:
        """Per-sample DDIM timesteps with "trailing" spacing, shape (steps + 1, n).

        Row j < steps is the timestep of step j; the last row is where sampling
        ends: -1 (x_0, abar = 1) by default, or the per-sample ``t_end``
        (partial generation). For t_end = -1 and T = 1000, steps = 2 gives
        999 and 499 (Lin et al. 2024, Table 2).
        """
        if steps < 1:
            raise ValueError(f"DDIM needs steps >= 1, got {steps}")
        if t_end is None:
            t_end = torch.full((n,), -1, dtype=torch.long, device=self.abar.device)
        j = torch.arange(steps + 1, device=t_end.device, dtype=torch.float64).view(-1, 1)
        span = (self.T - 1 - t_end).double().view(1, -1)
        ts = torch.round(t_end.double().view(1, -1) + 1 + span * (steps - j) / steps) - 1
        return ts.long()

    def random_ddim_timesteps(self, steps: int, n: int, generator: torch.Generator | None, device,
                              last_uniform: bool = False) -> torch.Tensor:
        """Per-sample DDIM timesteps from T-1 to x_0 with random intermediate steps, shape (steps + 1, n).

        Row 0 is T-1 (the trajectory starts from pure noise), rows 1..steps-1 are steps-1 timesteps drawn
        uniformly from 0..T-2 and sorted in descending order, the last row is -1 (x_0). Over many trajectories
        the intermediate timesteps cover 0..T-2 uniformly, where the trailing grid visits only its own steps;
        but the last intermediate one, the smallest of steps-1 draws, leans towards 0 (mean about
        (T-1) / steps). ``last_uniform``: that last one is itself uniform over 0..T-2, and the others are drawn
        uniformly between it and T-2.
        """
        if last_uniform and steps > 1:
            last = torch.randint(0, self.T - 1, (1, n), generator=generator, device=device)
            u = torch.rand((steps - 2, n), generator=generator, device=device)
            above = last + (u * (self.T - 1 - last)).long()  # uniform over last..T-2
            inner = torch.cat([above, last])
        else:
            inner = torch.randint(0, self.T - 1, (steps - 1, n), generator=generator, device=device)
        inner = inner.sort(dim=0, descending=True).values
        top = torch.full((1, n), self.T - 1, dtype=torch.long, device=device)
        return torch.cat([top, inner, torch.full((1, n), -1, dtype=torch.long, device=device)])


@torch.no_grad()
def ddim_sample(model: nn.Module, schedule: NoiseSchedule, noise: torch.Tensor, steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, autocast=contextlib.nullcontext,
                t_end: torch.Tensor | None = None, clip: bool = True, y: torch.Tensor | None = None,
                guidance: float = 1.0, ts: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) from x_T = ``noise``.

    ``ts`` (steps + 1, N): each sample's own timesteps (:meth:`NoiseSchedule.random_ddim_timesteps`) instead
    of the trailing grid. ``record``: a list that receives (x_t, t, eps) of every step, the model's input and
    its prediction there (trajectory distillation uses them as inputs and targets).

    A conditional model samples the classes ``y`` (N,), with classifier-free guidance ``guidance``
    (:func:`eps_of`); without ``y`` every model samples unconditionally.

    noise: (N, C, H, W) standard normal. Returns x at ``t_end`` (default: x_0,
    in [-1, 1]) as float32. With eta = 0 the sampler is deterministic. The
    predicted x_0 is clipped to [-1, 1] at every step, as in the paper
    (:meth:`NoiseSchedule.predict_x0`, which says what happens at t = T-1
    under zero terminal SNR).
    """
    n = noise.shape[0]
    if ts is None:
        ts = schedule.ddim_timesteps(steps, t_end.to(noise.device) if t_end is not None else None, n)
    ts = ts.to(noise.device)
    x = noise.float()
    for j in range(steps):
        t, t_prev = ts[j], ts[j + 1]
        with autocast():
            eps = eps_of(model, x, t, y, guidance).float()
        if record is not None:
            record.append((x, t, eps))
        a_t = schedule.abar[t].view(-1, 1, 1, 1)
        a_prev = torch.where(t_prev >= 0, schedule.abar[t_prev.clamp(min=0)], torch.ones_like(t_prev, dtype=torch.float32)).view(-1, 1, 1, 1)
        x0 = schedule.predict_x0(x, t, eps, clip)
        sigma = eta * ((1 - a_prev) / (1 - a_t)).clamp(min=0).sqrt() * (1 - a_t / a_prev).clamp(min=0).sqrt()
        x_new = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x_new = x_new + sigma * torch.randn(x.shape, generator=generator, device=x.device)
        # a sample whose end point is its current timestep (partial generation to t = T-1) stays as it is
        x = torch.where((t_prev == t).view(-1, 1, 1, 1), x, x_new)
    return x


def generate(model, schedule, n: int, steps: int, eta: float, seed: int, batch: int, device, autocast,
             shape=(1, 32, 32), shard: tuple[int, int] | None = None, labels: torch.Tensor | None = None,
             guidance: float = 1.0):
    """n samples (n, C, H, W) in [-1, 1] from fixed-seed noise (CPU generator: same noise on every device).

    ``labels`` (n,): the class of every sample, for a conditional model (guidance: :func:`eps_of`).

    ``shard=(rank, world)``: generate only the batches ``rank, rank + world, ...`` and return
    ``(indices, samples)``. Every rank draws every batch's starting noise, so with eta = 0 the union of
    the shards is exactly the unsharded set; the eta > 0 noise then comes from a per-rank generator.
    """
    gen = torch.Generator().manual_seed(seed)
    gen_eta = gen if shard is None else torch.Generator().manual_seed(seed + 1 + shard[0])
    out, idx = [], []
    for j, i in enumerate(range(0, n, batch)):
        m = min(batch, n - i)
        z = torch.randn((m, *shape), generator=gen)
        if shard is not None and j % shard[1] != shard[0]:
            continue
        y = labels[i:i + m].to(device) if labels is not None else None
        out.append(ddim_sample(model, schedule, z.to(device), steps, eta, gen_eta, autocast, y=y,
                               guidance=guidance).cpu())
        idx.append(torch.arange(i, i + m))
    samples = torch.cat(out) if out else torch.zeros((0, *shape))
    if shard is None:
        return samples
    return (torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)), samples


def predict_eps(model: nn.Module, x: torch.Tensor, t: torch.Tensor, autocast=contextlib.nullcontext,
                y: torch.Tensor | None = None) -> torch.Tensor:
    """A no-grad eps prediction in float32 (used for teacher targets); ``y``: labels of a conditional model."""
    with torch.no_grad(), autocast():
        return (model(x, t) if y is None else model(x, t, y)).float()
