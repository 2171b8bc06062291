"""`cldiff classify`: the classifier of docs/protocol.md §5, trained after the fact on a finished run.

Within task k the in-run classifier (``classifier.enabled``) trains before the diffusion model, replaying
from the diffusion model as it was at the end of task k-1. That model is exactly the run's end-of-task
checkpoint ``task_{k-1}``, so the same protocol can run later, on any run whose end-of-task checkpoints are
kept, without training the diffusion model again. The classifier's own random streams (initialisation,
minibatch order, replay noise, dropout) are seeded from the run's seed as in-run; they are not interleaved
with the diffusion model's training here, so the numbers are a second draw of the same protocol, not a
bit-for-bit copy of an in-run classifier.

Writes ``RUN/classifier.jsonl`` (a ``classifier_start`` line with the settings, then one ``classifier_eval``
line per task, the records that in-run training writes to metrics.jsonl) and ``RUN/classifier_state.pt``
(written atomically after every task), so an interrupted command continues with the next task.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import torch

from .checkpoint import CheckpointError, atomic_write_bytes, list_checkpoints
from .config import ConfigError, apply_overrides, config_from_dict
from .sysmem import release_memory, use_threads


def _run_config(run_dir: Path, overrides: list[str]):
    import yaml

    p = run_dir / "config.yaml"
    if not p.exists():
        raise ValueError(f"{run_dir}: not a cldiff run folder (no config.yaml)")
    bad = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("classifier.")]
    if bad:
        raise ConfigError([f"--set {o!r}: only classifier.* settings can be chosen after training "
                           "(the rest belongs to the run)" for o in bad])
    return config_from_dict(apply_overrides(yaml.safe_load(p.read_text()), list(overrides)))


def _complete_tasks(run_dir: Path) -> dict[int, dict]:
    """task -> metadata of its end-of-task checkpoint."""
    return {m["task"]: m for m in list_checkpoints(run_dir) if m.get("complete", True)}


def classify_run(run_dir: str | Path, overrides: list[str] | None = None, threads: int | None = None,
                 restart: bool = False, log=print, tasks: int | None = None) -> Path:
    """Train the classifier over the run's finished tasks, or over its first ``tasks`` tasks; returns the path of
    classifier.jsonl. Task k replays from the end-of-task checkpoint k-1 only, so ``tasks`` may be one more than
    the run has finished: a run stopped after task 0 gives the classifier's tasks 0 and 1 (how the classifier
    depends on the task-0 generator, without training the diffusion model on task 1)."""
    from .classifier import MODES, ContinualClassifier
    from .data import ContinualData
    from .model import NoiseSchedule, autocast_for
    from .runfolder import load_model

    run_dir = Path(run_dir)
    cfg = _run_config(run_dir, overrides or [])
    c = cfg.classifier
    use_threads(threads)
    done = _complete_tasks(run_dir)
    if not done:
        raise CheckpointError(f"{run_dir}: no end-of-task checkpoint; finish at least one task first")
    n_tasks = max(done) + 1  # the tasks the run has finished
    if tasks is not None:
        limit = min(n_tasks + 1, cfg.data.num_tasks) if MODES[c.mode].uses_generator else cfg.data.num_tasks
        if not 1 <= tasks <= limit:
            why = (f"the run has finished {n_tasks} task(s), and task k needs its end-of-task checkpoint k-1"
                   if MODES[c.mode].uses_generator else f"the run has {cfg.data.num_tasks} tasks")
            raise ValueError(f"--tasks {tasks}: must be between 1 and {limit} for {run_dir} ({why})")
        n_tasks = tasks
    if MODES[c.mode].uses_generator:
        # task k replays from the model of task k-1; the last finished task's own model is not needed
        missing = [j for j in range(n_tasks - 1) if j not in done]
        if missing:
            raise CheckpointError(f"{run_dir}: the end-of-task checkpoints of tasks {missing} were pruned "
                                  "(train.keep_checkpoints); generative replay needs every one of them")
    device = torch.device("cpu")
    autocast = autocast_for(device, cfg.train.precision)
    data = ContinualData.from_config(cfg)
    settings = {k: getattr(c, k) for k in ("mode", "epochs", "batch_size", "lr", "replay_steps", "replay_pool",
                                           "temperature", "kd_direction")}
    out = run_dir / "classifier.jsonl"
    state_path = run_dir / "classifier_state.pt"
    schedule = NoiseSchedule.from_config(cfg.model, device)
    clf = ContinualClassifier(c, data.spec.channels, data.spec.num_classes, device, cfg.seed)
    start = 0
    if state_path.exists() and not restart:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if json.loads(st["settings"]) != settings:
            raise ValueError(f"{state_path} was made with other classifier settings ({st['settings']}); pass "
                             "--restart to train this classifier from the start (the old results are replaced)")
        clf.load_state_dict(st["classifier"])
        torch.set_rng_state(st["torch_rng"])
        start = len(clf.acc_rows)
        recs = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
        out.write_text("".join(json.dumps(r) + "\n" for r in recs
                               if r.get("event") != "classifier_eval" or r["task"] < start))
    else:
        out.write_text(json.dumps({"event": "classifier_start", "posthoc": True, **settings,
                                   "precision": cfg.train.precision}) + "\n")
    if start >= n_tasks:
        log(f"{run_dir}: the classifier has already seen all {n_tasks} finished tasks")
        return out
    for k in range(start, n_tasks):
        t0 = time.perf_counter()
        gen_model = None
        if MODES[c.mode].uses_generator and k >= 1:
            gen_model, _, _, _ = load_model(done[k - 1]["path"], device)
            gen_model.requires_grad_(False)
        rec = clf.train_task(k, data, gen_model, schedule, autocast)
        rec["wall_s"] = time.perf_counter() - t0
        del gen_model
        buf = io.BytesIO()
        torch.save({"classifier": clf.state_dict(), "torch_rng": torch.get_rng_state(),
                    "settings": json.dumps(settings)}, buf)
        with out.open("a") as f:  # the record first: a state ahead of its record would lose a line on resume
            f.write(json.dumps(rec) + "\n")
        atomic_write_bytes(state_path, buf.getvalue())
        release_memory()
        acc = " ".join(f"{a:.3f}" for a in rec["acc"])
        log(f"task {k}: accuracy per task {acc}; average {rec['avg_acc']:.3f} ({rec['wall_s']:.0f} s)")
    return out
