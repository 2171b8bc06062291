"""The run folder: its metrics log, eval.csv, the checks before a run starts or resumes in it, and its models.

    RUN/config.yaml        the resolved config
    RUN/metrics.jsonl      one JSON object per line (MetricsLog)
    RUN/eval.csv           the eval lines as a table (write_eval_csv)
    RUN/checkpoints/       verified, atomic checkpoints (cldiff.checkpoint)
    RUN/samples/           the per-task sample grids
    RUN/.lock              held by the process that trains in the folder (RunLock)
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import yaml

from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint_file, load_latest
from .config import DISPLAY_ONLY, Config, config_from_dict, config_yaml
from .data import DATASETS
from .model import EpsModel, NoiseSchedule, model_classes


class RunError(RuntimeError):
    """A run that cannot start or go on for a reason the user can fix."""


class RunInUse(RunError):
    """The run folder is being trained in by another process."""


class RunLock:
    """An exclusive lock on a run folder for as long as one process trains in it (RUN/.lock, flock).

    Two processes training in one folder (two sweeps that plan the same run, or a resume beside a running
    run) would both write its checkpoints and metrics. The second one is refused before it writes anything.
    The kernel drops the lock when its process ends, however it ends (SIGKILL too), so it never goes stale.
    The lock file keeps the holder's pid for the message. Without fcntl (not POSIX) there is no lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunInUse(f"{self.path.parent} is in use: another cldiff process (pid {holder}) is training in it. "
                           f"Wait for it to end, or stop it (Ctrl-C there, or kill -INT {holder}: it writes a "
                           "checkpoint) and run your command again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def run_dir_for(cfg: Config, out: str | None) -> Path:
    """The run's folder: ``out``, else out_dir/run name."""
    return Path(out) if out else Path(cfg.out_dir) / cfg.run_name()


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed as it is written."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def truncate_after(self, task: int, keep=None) -> None:
        """Keep records of tasks <= ``task`` and those ``keep(record)`` accepts (on resume: no duplicates).

        A last line cut by a crash is dropped.
        """
        if not self.path.exists():
            return
        out = []
        for ln in self.path.read_text().splitlines():
            try:
                r = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if r.get("task", -1) <= task or (keep is not None and keep(r)):
                out.append(ln)
        atomic_write_bytes(self.path, "".join(ln + "\n" for ln in out).encode())

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]


def run_evaluator_sha(run_dir: Path) -> str | None:
    """The evaluator (SHA-256 prefix) that scored the run's first evaluation, or None before any."""
    return next((r["evaluator_sha256"] for r in MetricsLog(Path(run_dir) / "metrics.jsonl").read()
                 if r.get("event") == "eval" and r.get("evaluator_sha256")), None)


class NullLog(MetricsLog):
    """The log of ranks other than 0: they write nothing."""

    def write(self, record: dict) -> None:
        pass

    def truncate_after(self, task: int, keep=None) -> None:
        pass


def write_eval_csv(run_dir: Path) -> Path:
    """eval.csv from the eval lines of metrics.jsonl (one row per task)."""
    rows = [r for r in MetricsLog(Path(run_dir) / "metrics.jsonl").read() if r.get("event") == "eval"]
    path = Path(run_dir) / "eval.csv"
    if not rows:
        return path
    fid_keys = sorted({k for r in rows for k in r if k.startswith("fid_")})
    n_cls = len(rows[0]["hist_pred"])
    header = ["task", *fid_keys, "kld", "ard", "class_fid_mean", "classes_missing", "label_acc", "n_samples",
              "eval_s"] + [f"pred_{c}" for c in range(n_cls)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow([r["task"], *[r.get(k) for k in fid_keys], r["kld"], r["ard"], r.get("class_fid_mean"),
                    r.get("classes_missing"), r.get("label_acc"), r["n_samples"], r.get("eval_s")] + r["hist_pred"])
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def normalised_config(raw: dict) -> dict:
    """A saved config with today's defaults filled in, so that runs written before a field existed still match."""
    try:
        return config_from_dict(raw).to_dict()
    except Exception:
        return raw


def resume_differences(prev: dict, mine: dict) -> list[str]:
    """The settings of `mine` that differ from the run's `prev` and would change what a resumed run computes
    or evaluates, as 'key (run: X, yours: Y)'."""
    out = []
    for key in ("seed", "data", "model", "strategy", "train", "eval", "classifier"):
        a, b = prev.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "strategy":
            free = DISPLAY_ONLY.get(key, set())
            out += [f"{key}.{k} (run: {a.get(k)!r}, yours: {b.get(k)!r})" for k in sorted(set(a) | set(b))
                    if k not in free and a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key} (run: {a!r}, yours: {b!r})")
    return out


def holds_run(run_dir: Path) -> bool:
    """Whether the folder holds a run: a checkpoint's metadata in its checkpoints/."""
    return (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.json"))


def prepare_run_dir(cfg: Config, out: str | None, resume: bool, write: bool = True) -> Path:
    run_dir = run_dir_for(cfg, out)
    has_ck = holds_run(run_dir)
    if has_ck and not resume:
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another "
                       "folder with --out")
    if resume and has_ck:
        old = run_dir / "config.yaml"
        if old.exists():
            prev = normalised_config(yaml.safe_load(old.read_text()))
            differing = resume_differences(prev, cfg.to_dict())
            if differing:
                raise RunError(f"--resume: the config differs from the run in {run_dir} in "
                               f"{'; '.join(differing)}; resume with the run's settings (its config.yaml), or start "
                               "a new run folder with --out")
    if not write:
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    # atomic: under DDP the other ranks read this file while the main rank rewrites it on --resume, and a crash
    # mid-write must not leave a run that can no longer be resumed
    atomic_write_bytes(run_dir / "config.yaml", config_yaml(cfg).encode())
    return run_dir


def load_model(checkpoint: str | Path, device="cpu") -> tuple[EpsModel, NoiseSchedule, Config, dict]:
    """The model, schedule and config of a checkpoint file (``.pt``) or a run folder (its latest)."""
    p = Path(checkpoint)
    if p.is_dir():
        found = load_latest(p, map_location=device)
        if found is None:
            raise CheckpointError(f"{p}: no usable checkpoint in {p / 'checkpoints'}")
        state, meta = found
    else:
        if not p.exists():
            raise CheckpointError(f"{p}: no such checkpoint file or run folder")
        state, meta = load_checkpoint_file(p, map_location=device)
    cfg = config_from_dict(meta["config"])
    model = EpsModel(cfg.model.preset, DATASETS[cfg.data.dataset].channels, cfg.data.image_size, cfg.train.attention,
                     model_classes(cfg))
    # a run with an EMA (train.ema_decay) is evaluated and sampled with the EMA weights, so they are what it gives
    model.load_state_dict(state["ema"] if "ema" in state else state["model"])
    model.to(device).eval()
    return model, NoiseSchedule.from_config(cfg.model, device), cfg, meta
