"""Typed run configuration: dataclasses, YAML loading, validation, run naming.

Every field has a default and a one-line comment. Loading collects *every*
problem (unknown keys with a "did you mean", wrong types, out-of-range values)
and raises one :class:`ConfigError` listing them all, so a user fixes a config
in one round trip. The CLI turns that error into exit status 2, no traceback.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .schema import build


class ConfigError(ValueError):
    """One or more problems in a configuration; ``problems`` lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"  # fashion_mnist | mnist | synthetic (tests only)
    root: str | None = None  # folder with the IDX files; searched first, then $CLDIFF_DATA and system folders
    class_order: Any = "paper"  # "paper" (per-seed orders of the paper), "sorted", or a list of class lists
    num_tasks: int = 5  # number of tasks taken from the class order (the first ones)
    classes_per_task: int = 2  # classes in each task, for "paper" and "sorted"
    max_train_per_task: int | None = None  # cap on training images per task (tests and quick runs); null = all
    image_size: int = 32  # images are resized from 28 to this size (bilinear, antialiased)
    hflip: bool = False  # random horizontal flips of training images (the paper's CIFAR-10 runs; never for evaluation)
    verify: bool = True  # check sizes and SHA-256 of the data files against the official ones


@dataclass
class ModelConfig:
    preset: str = "small"  # UNet preset: paper | small | tiny (see cldiff.model.PRESETS)
    num_train_timesteps: int = 1000  # T of the noise schedule
    beta_start: float = 1e-4  # linear beta schedule start
    beta_end: float = 0.02  # linear beta schedule end
    zero_terminal_snr: bool = True  # rescale betas to zero terminal SNR (Lin et al. 2024, Alg. 1)
    # Class-conditional model (docs/conditional.md): the UNet takes the class label; false keeps the paper's
    # unconditional model. Replay strategies then replay labelled samples (strategy.replay_labels).
    conditional: bool = False
    cond_drop: float = 0.1  # conditional models: share of labels dropped in training (classifier-free guidance)
    # conditional models: the label embedding's start (0: zeros; s > 0: N(0, s^2)) and its learning rate as a
    # multiple of train.lr (docs/conditional.md: with zeros and 1x, a few hundred steps hardly move it)
    label_init_std: float = 0.0
    label_lr_scale: float = 1.0


@dataclass
class TrainConfig:
    batch_size: int = 64  # real images per minibatch (B); replay strategies add B replay samples
    steps_per_task: int | None = None  # optimizer steps per task; overrides epochs_per_task when set
    epochs_per_task: float | None = None  # epochs over the task's training images (paper: 100)
    first_task_steps: int | None = None  # steps for task 0 only (null: same as the others)
    lr: float = 2e-4  # Adam learning rate (paper: 2e-4, no schedule)
    grad_clip: float = 1.0  # gradient-norm clipping (0 disables)
    reset_optimizer: bool = True  # new Adam state at every task, as the paper does
    precision: str = "auto"  # auto (bf16 autocast where the CPU/GPU supports it) | bf16 | fp32
    attention: str = "auto"  # UNet attention kernel: auto (classic on the CPU, sdpa elsewhere) | classic | sdpa
    # Adam's fused kernel (one pass over all parameters; the same update up to float rounding): false (torch's
    # default path) | true | auto (on where it was measured faster: CUDA GPUs and CPUs with AMX, docs/results/bench/)
    fused_adam: bool | str = False
    micro_batches: int = 1  # forward/backward the student batch in this many slices: same gradients, less memory
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads (null: torch's default)
    log_every: int = 20  # steps between metrics.jsonl training lines
    grid_samples: int = 64  # images in the per-task fixed-noise sample grid
    grid_steps: int = 20  # DDIM steps for the sample grid
    keep_checkpoints: int = 2  # end-of-task checkpoints kept on disk (the newest ones)
    checkpoint_every: int | None = None  # also checkpoint every N steps within a task (exact mid-task resume)
    nan_policy: str = "stop"  # stop: a NaN/Inf loss ends the run (exit 3); skip: skip that batch and count it
    init_from: str | None = None  # a run folder (same data, model, seed, training) whose task-0 result this run reuses
    # --- the training recipe (docs/recipe.md; all off in the paper/ presets, which keep the paper's protocol)
    # EMA of the student's weights (null: off). Its decay warms up within every task, min(ema_decay, (1+n)/(10+n))
    # after n steps of the task, so a short task is not dominated by the weights it started from. Evaluation,
    # sample grids, `cldiff sample` and `cldiff classify` use the EMA weights; the student trains on.
    ema_decay: float | None = None
    ema_teacher: bool = True  # with EMA: the frozen teacher at a task's end is the EMA (true) or the raw weights
    lr_schedule: str = "constant"  # constant | cosine (from lr down to 0 over each task's steps, after the warm-up)
    warmup_steps: int = 0  # linear learning-rate warm-up over the first N steps of every task (0: none)
    # Loss weighting over timesteps: none (the paper) | min_snr (Hang et al. 2023, eps-prediction form:
    # w_t = min(SNR_t, gamma) / SNR_t, i.e. 1 where SNR_t <= gamma; the terminal step's SNR of 0 gets weight 1)
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0  # gamma of min_snr


# Training settings that change how a run executes, not what it computes (attention and micro_batches: the same
# function and the same step, tested; init_from only decides where task 0 comes from). A resume may change them,
# and so may the share of task 0 (train.init_from); reports do not tell runs apart by them.
EXECUTION_ONLY = frozenset({"threads", "device", "log_every", "keep_checkpoints", "checkpoint_every", "attention",
                            "micro_batches", "init_from"})
# Settings that are only logged or drawn (the NaN policy, the sample grids, the generation batch): a resume may
# change them too, and they never make two runs' metrics differ.
DISPLAY_ONLY = {"train": EXECUTION_ONLY | {"nan_policy", "grid_samples", "grid_steps"}, "eval": frozenset({"batch_size"})}


# DDIM generation batch for evaluation, classifier replay pools and `cldiff sample` (memory and speed only)
GENERATION_BATCH = 100


@dataclass
class EvalConfig:
    enabled: bool = True  # evaluate FID / KLD / ARD after every task
    n_samples: int = 1000  # generated samples per evaluation (paper: 10,000); same N for every strategy
    steps: int = 10  # DDIM steps for evaluation samples (paper: 10)
    eta: float = 0.0  # DDIM eta for evaluation samples
    seed: int = 1234  # fixed sampling seed, so task-to-task numbers compare like with like
    # conditional models: classifier-free guidance scale of the evaluation samples, which are class-balanced
    # over the seen classes (1: the plain conditional prediction; 0: unconditional)
    guidance: float = 1.0
    # generation batch: only memory and speed (the noise is one fixed stream); measured on the 2-core CPU,
    # small UNet, 500 samples: batch 100 16.4 s and +270 MiB, batch 500 25 s and +600-770 MiB
    batch_size: int = GENERATION_BATCH


@dataclass
class ClassifierConfig:
    enabled: bool = False  # also train a classifier continually, with the diffusion model as its replay generator
    # generative (replay + distillation, docs/protocol.md §5) | naive | joint | real_replay (the same replay and
    # distillation from real images of the earlier tasks, replay_pool of them, default 2000: a perfect generator)
    mode: str = "generative"
    epochs: float = 20  # epochs over the task's images (paper: 20)
    batch_size: int = 128  # real images per iteration; as many replay images are added
    lr: float = 1e-3  # Adam learning rate (paper: 1e-3)
    replay_steps: int = 10  # DDIM steps of the frozen diffusion model for replay images (paper: 10)
    replay_pool: int | None = None  # null: fresh replay every iteration (paper); N: one pool of N images per task
    temperature: float = 2.0  # distillation temperature T
    kd_direction: str = "forward"  # forward: KL(teacher || student); paper: the reference code's reversed form
    # replay targets: soft (the frozen classifier's, distilled; the paper) | hard (the replayed images' own
    # labels, cross-entropy, as in deep generative replay: a conditional generator, or real_replay)
    replay_targets: str = "soft"
    replay_guidance: float = 1.0  # a conditional generator's guidance scale for the replay images


@dataclass
class Config:
    seed: int = 42  # run seed; also picks the paper's class order
    name: str | None = None  # run folder name (null: derived from the settings)
    out_dir: str = "runs"  # parent folder of run folders
    resume: str = "never"  # never | auto (continue from the latest checkpoint when the run folder has one)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: dict = field(default_factory=lambda: {"name": "generative_distillation"})  # name + the strategy's own fields
    eval: EvalConfig = field(default_factory=EvalConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_name(self) -> str:
        """A folder name derived from the settings that distinguish runs."""
        if self.name:
            return self.name
        s = dict(self.strategy)
        parts = [self.data.dataset, str(s.pop("name"))]
        for k in sorted(s):
            parts.append(f"{k}{s[k]}")
        parts.append(self.model.preset)
        parts.append(f"seed{self.seed}")
        return "_".join(str(p).replace("/", "-") for p in parts)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- loading


def _check_ranges(cfg: Config, problems: list[str]) -> None:
    from .data import DATASETS, resolve_class_order
    from .model import PRESETS
    from .strategies import validate_strategy

    def need(cond: bool, msg: str) -> None:
        if not cond:
            problems.append(msg)

    need(cfg.resume in ("never", "auto"), f"resume: must be 'never' or 'auto', got {cfg.resume!r}")
    d = cfg.data
    need(d.dataset in DATASETS, f"data.dataset: unknown dataset {d.dataset!r}; allowed: {', '.join(DATASETS)}")
    need(d.num_tasks >= 1, f"data.num_tasks: must be >= 1, got {d.num_tasks}")
    need(d.classes_per_task >= 1, f"data.classes_per_task: must be >= 1, got {d.classes_per_task}")
    need(d.max_train_per_task is None or d.max_train_per_task >= 1,
         f"data.max_train_per_task: must be >= 1 or null, got {d.max_train_per_task}")
    need(d.image_size in (28, 32), f"data.image_size: must be 28 or 32, got {d.image_size}")
    try:  # checked even when other data fields are wrong, so that every problem is reported at once
        n_classes = DATASETS[d.dataset].num_classes if d.dataset in DATASETS else 10
        resolve_class_order(d.class_order, cfg.seed, max(1, d.num_tasks), max(1, d.classes_per_task), n_classes)
    except ValueError as e:
        problems.append(f"data.class_order: {e}")
    m = cfg.model
    need(m.preset in PRESETS, f"model.preset: unknown preset {m.preset!r}; allowed: {', '.join(PRESETS)}")
    need(m.num_train_timesteps >= 2, f"model.num_train_timesteps: must be >= 2, got {m.num_train_timesteps}")
    need(0 < m.beta_start < m.beta_end < 1,
         f"model.beta_start/beta_end: need 0 < beta_start < beta_end < 1, got {m.beta_start}, {m.beta_end}")
    need(0 <= m.cond_drop < 1, f"model.cond_drop: must be in [0, 1) (share of labels dropped), got {m.cond_drop}")
    need(m.label_init_std >= 0, f"model.label_init_std: must be >= 0 (0: the label embedding starts at zero), "
         f"got {m.label_init_std}")
    need(m.label_lr_scale > 0, f"model.label_lr_scale: must be > 0 (a multiple of train.lr), got {m.label_lr_scale}")
    need(m.conditional or (m.label_init_std == 0 and m.label_lr_scale == 1),
         "model.label_init_std / model.label_lr_scale: only a conditional model has labels; set "
         "model.conditional: true, or leave them at 0 and 1")
    t = cfg.train
    need(t.batch_size >= 1, f"train.batch_size: must be >= 1, got {t.batch_size}")
    need(t.steps_per_task is not None or t.epochs_per_task is not None,
         "train: set steps_per_task or epochs_per_task")
    need(t.steps_per_task is None or t.steps_per_task >= 1, f"train.steps_per_task: must be >= 1, got {t.steps_per_task}")
    need(t.epochs_per_task is None or t.epochs_per_task > 0, f"train.epochs_per_task: must be > 0, got {t.epochs_per_task}")
    need(t.first_task_steps is None or t.first_task_steps >= 1,
         f"train.first_task_steps: must be >= 1 or null, got {t.first_task_steps}")
    need(t.lr > 0, f"train.lr: must be > 0, got {t.lr}")
    need(t.grad_clip >= 0, f"train.grad_clip: must be >= 0 (0 disables), got {t.grad_clip}")
    need(t.precision in ("auto", "bf16", "fp32"), f"train.precision: must be auto, bf16 or fp32, got {t.precision!r}")
    need(t.fused_adam in (True, False, "auto"),
         f"train.fused_adam: must be true, false or auto, got {t.fused_adam!r}")
    need(t.attention in ("auto", "classic", "sdpa"), f"train.attention: must be auto, classic or sdpa, got {t.attention!r}")
    need(isinstance(t.micro_batches, int) and t.micro_batches >= 1,
         f"train.micro_batches: must be an integer >= 1 (1: the whole batch at once), got {t.micro_batches!r}")
    need(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
         f"train.device: must be auto, cpu, cuda or cuda:N, got {t.device!r}")
    need(t.threads is None or t.threads >= 1, f"train.threads: must be >= 1 or null, got {t.threads}")
    need(t.log_every >= 1, f"train.log_every: must be >= 1, got {t.log_every}")
    need(t.grid_samples >= 0, f"train.grid_samples: must be >= 0, got {t.grid_samples}")
    need(t.grid_steps >= 1, f"train.grid_steps: must be >= 1, got {t.grid_steps}")
    need(t.checkpoint_every is None or t.checkpoint_every >= 1,
         f"train.checkpoint_every: must be >= 1 or null, got {t.checkpoint_every}")
    need(t.nan_policy in ("stop", "skip"), f"train.nan_policy: must be stop or skip, got {t.nan_policy!r}")
    need(t.keep_checkpoints >= 1, f"train.keep_checkpoints: must be >= 1, got {t.keep_checkpoints}")
    need(t.ema_decay is None or 0 < t.ema_decay < 1,
         f"train.ema_decay: must be between 0 and 1 (for example 0.999), or null to switch EMA off; got {t.ema_decay}")
    need(t.lr_schedule in ("constant", "cosine"), f"train.lr_schedule: must be constant or cosine, got {t.lr_schedule!r}")
    need(isinstance(t.warmup_steps, int) and t.warmup_steps >= 0,
         f"train.warmup_steps: must be an integer >= 0 (0: no warm-up), got {t.warmup_steps!r}")
    need(t.loss_weighting in ("none", "min_snr"),
         f"train.loss_weighting: must be none or min_snr, got {t.loss_weighting!r}")
    need(t.min_snr_gamma > 0, f"train.min_snr_gamma: must be > 0 (Hang et al. use 5), got {t.min_snr_gamma}")
    e = cfg.eval
    need(e.guidance >= 0, f"eval.guidance: must be >= 0 (1: no guidance), got {e.guidance}")
    need(e.n_samples >= 2, f"eval.n_samples: must be >= 2, got {e.n_samples}")
    need(e.steps >= 1, f"eval.steps: must be >= 1, got {e.steps}")
    need(e.eta >= 0, f"eval.eta: must be >= 0, got {e.eta}")
    need(e.batch_size >= 1, f"eval.batch_size: must be >= 1, got {e.batch_size}")
    c = cfg.classifier
    need(c.mode in ("generative", "naive", "joint", "real_replay"),
         f"classifier.mode: must be generative, naive, joint or real_replay, got {c.mode!r}")
    need(c.epochs > 0, f"classifier.epochs: must be > 0, got {c.epochs}")
    need(c.batch_size >= 1, f"classifier.batch_size: must be >= 1, got {c.batch_size}")
    need(c.lr > 0, f"classifier.lr: must be > 0, got {c.lr}")
    need(c.replay_steps >= 1, f"classifier.replay_steps: must be >= 1, got {c.replay_steps}")
    need(c.replay_pool is None or c.replay_pool >= 1, f"classifier.replay_pool: must be >= 1 or null, got {c.replay_pool}")
    need(c.temperature > 0, f"classifier.temperature: must be > 0, got {c.temperature}")
    need(c.kd_direction in ("forward", "paper"), f"classifier.kd_direction: must be forward or paper, got {c.kd_direction!r}")
    need(c.replay_targets in ("soft", "hard"), f"classifier.replay_targets: must be soft or hard, got {c.replay_targets!r}")
    need(not (c.replay_targets == "hard" and c.mode == "generative" and not m.conditional),
         "classifier.replay_targets: hard needs labelled replay, and an unconditional diffusion model's samples have "
         "no labels; set model.conditional: true, or classifier.mode: real_replay, or replay_targets: soft")
    need(c.replay_guidance >= 0, f"classifier.replay_guidance: must be >= 0 (1: no guidance), got {c.replay_guidance}")
    problems.extend(validate_strategy(cfg.strategy, conditional=m.conditional))


def config_from_dict(raw: Any) -> Config:
    """Build and validate a Config; raise ConfigError listing every problem."""
    problems: list[str] = []
    cfg = build(Config, raw, "", problems)
    _check_ranges(cfg, problems)  # on what did parse: every problem in one report
    if problems:
        raise ConfigError(problems)
    return cfg


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw dict."""
    problems = []
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected key=value, for example train.batch_size=32")
            continue
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {} if node.get(p) is None else node[p]
            node = node[p]
            if not isinstance(node, dict):
                problems.append(f"--set {key}: {p} is not a section")
                break
        else:
            node[parts[-1]] = _parse_value(value)
    if problems:
        raise ConfigError(problems)
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {str(path)!r} does not exist; shipped presets are in configs/"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {e}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(raw).__name__}"])
    base = raw.pop("base", None)
    if base is not None:
        # A preset may name another preset to start from; keys here override it.
        merged = read_yaml(path.parent / base)
        raw = _deep_merge(merged, raw)
    return raw


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "strategy":
            out[k] = _deep_merge(out[k], v)
        elif k == "strategy" and isinstance(v, dict) and isinstance(out.get(k), dict) and v.get("name", out[k].get("name")) == out[k].get("name"):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_yaml(cfg: Config) -> str:
    """The config as the YAML a run folder keeps (``config.yaml``)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
