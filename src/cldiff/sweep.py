"""Sweeps: a base config times a grid of strategies, their fields and seeds; then one report.

Sweep file (YAML)::

    base: ../split_fmnist/cpu/_base.yaml   # relative to the sweep file
    out: runs/sweeps/split_fmnist_cpu       # parent of the run folders and of report/
    share_first_task: true                   # reuse task 0 between runs of the same seed (also a run folder
                                             # of another sweep file in out/ whose task 0 is identical)
    set: {classifier.enabled: true}          # optional overrides for every run
    grid:
      seed: [42, 69, 1714]
      strategy:
        - {name: naive}
        - {name: generative_distillation, lam: [0.5, 1.0], teacher_steps: 2}
        - {name: joint, set: {train.steps_per_task: 600}}   # overrides for this entry's runs only

A list value inside a strategy entry is a grid axis. An entry's `set` applies
after the sweep's `set`, and its settings are added to the run folder's name
(the sweep's `set` is not: a folder that holds a run made with other settings
is refused, not reported as this sweep's). Each run gets a folder named from
its settings; finished runs are skipped, interrupted ones resume. ``jobs`` > 1
(``cldiff sweep --jobs N``) runs that many at once, each in its own process
(results as one at a time).
"""
from __future__ import annotations

import itertools
from collections import Counter
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError, apply_overrides, config_from_dict, read_yaml

SWEEP_KEYS = {"base", "out", "grid", "set", "share_first_task"}


@dataclass
class PlannedRun:
    cfg: object
    out: Path


def _expand_strategy(entry: dict) -> list[dict]:
    keys = [k for k, v in entry.items() if isinstance(v, list)]
    if not keys:
        return [dict(entry)]
    out = []
    for values in itertools.product(*(entry[k] for k in keys)):
        out.append({**entry, **dict(zip(keys, values))})
    return out


def plan(path: str | Path) -> tuple[list[PlannedRun], dict]:
    """Every run of the sweep, validated (all problems of all runs reported together)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"sweep file {str(path)!r} does not exist; shipped sweeps are in configs/sweeps/"])
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise ConfigError([f"sweep: unknown key(s) {sorted(unknown)}; allowed: {sorted(SWEEP_KEYS)}"])
    if "base" not in spec or "grid" not in spec:
        raise ConfigError(["sweep: needs 'base' (a config file) and 'grid'"])
    base = read_yaml(path.parent / spec["base"])
    grid = spec["grid"]
    seeds = grid.get("seed", [base.get("seed", 42)])
    strategies = [s for e in grid.get("strategy", [base.get("strategy", {"name": "generative_distillation"})])
                  for s in _expand_strategy(e)]
    out = Path(spec.get("out", "runs/sweep"))
    sets = _overrides(spec.get("set"), "sweep: 'set'")
    runs, problems = [], []
    for seed, strat in itertools.product(seeds, strategies):
        strat = dict(strat)
        entry_set = strat.pop("set", None)
        raw = yaml.safe_load(yaml.safe_dump(base))
        try:
            own = _overrides(entry_set, f"sweep: strategy {strat.get('name')!r}: 'set'")
            raw = apply_overrides(raw, sets + own)
            raw["seed"], raw["strategy"] = seed, strat
            cfg = config_from_dict(raw)
        except ConfigError as e:
            problems += [f"run seed={seed} strategy={strat}: {p}" for p in e.problems]
            continue
        name = cfg.run_name()
        if entry_set:
            name += "".join(f"_{k}{v}" for k, v in sorted(entry_set.items())).replace("/", "-")
        runs.append(PlannedRun(cfg, out / name))
    problems += [f"sweep: {n} runs would share the folder {str(d)!r}; give their strategy entries different "
                 "settings (or a different 'set')" for d, n in Counter(r.out for r in runs).items() if n > 1]
    if problems:
        raise ConfigError(problems)
    return runs, spec


def _overrides(mapping, where: str) -> list[str]:
    """A sweep's `set` mapping ({dotted.key: value}) as `--set` strings."""
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise ConfigError([f"{where} must be a mapping of dotted keys to values, e.g. "
                           "{train.steps_per_task: 600}; got " + repr(mapping)])
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in mapping.items()]


def is_finished(run_dir: Path, num_tasks: int) -> bool:
    """Whether the run ended its last task: a task-end checkpoint of that task. A mid-task checkpoint of it (a run
    interrupted in its last task) is not an end: such a run resumes."""
    from .checkpoint import list_checkpoints
    return any(m.get("task") == num_tasks - 1 and m.get("complete", True) for m in list_checkpoints(run_dir))


def _status(r: PlannedRun) -> str:
    """done (its last task checkpointed), resume (some checkpoints) or new."""
    if is_finished(r.out, r.cfg.data.num_tasks):
        return "done"
    return "resume" if (r.out / "checkpoints").is_dir() else "new"


def check_folders(runs: list[PlannedRun]) -> None:
    """Refuse a sweep whose run folder already holds a run made with other settings. The folder's name carries
    the strategy, the seed and the entry's `set`, not the sweep's `set`: a sweep that changed that would
    otherwise call the other run "done" and report it as its own."""
    from .runfolder import holds_run, normalised_config, resume_differences

    problems = []
    for r in runs:
        made = r.out / "config.yaml"
        if not (made.is_file() and holds_run(r.out)):
            continue
        differing = resume_differences(normalised_config(yaml.safe_load(made.read_text())), r.cfg.to_dict())
        if differing:
            problems.append(f"sweep: {r.out} holds a run made with other settings ({'; '.join(differing)}); "
                            "give the sweep another 'out', or move the setting into the strategy entry's 'set' "
                            "(its settings are added to the folder's name)")
    if problems:
        raise ConfigError(problems)


def run_sweep(path: str | Path, dry_run: bool = False, progress: bool = True, jobs: int = 1) -> Path:
    """Run the sweep's runs (``jobs`` > 1: that many at once, each in its own process), then write its report."""
    from .report import make_report
    from .strategies import REGISTRY
    from .runfolder import RunError
    from .train import Interrupted, train

    runs, spec = plan(path)
    check_folders(runs)
    out = Path(spec.get("out", "runs/sweep"))
    share = bool(spec.get("share_first_task", True))
    if jobs < 1:
        raise ConfigError([f"--jobs must be at least 1, got {jobs}"])
    if jobs > 1 and not dry_run:
        failed = _run_parallel(runs, share, jobs, out)
        return _finish(runs, out, failed, make_report)
    failed = []
    task0_source = {seed: r.out for seed, r in _task0_sources(runs, share, out).items() if _has_task0(r.out)}
    for i, r in enumerate(runs):
        status = _status(r)
        print(f"[{i + 1}/{len(runs)}] {r.out.name}: {status}", file=sys.stderr)
        if dry_run:
            continue
        if status != "done":
            src = task0_source.get(r.cfg.seed)
            if (share and status == "new" and src is not None and REGISTRY[r.cfg.strategy["name"]].shares_first_task):
                r.cfg.train.init_from = str(src)
            try:
                train(r.cfg, out=str(r.out), resume=True, progress=progress)
            except Interrupted:  # Ctrl-C: the run wrote a checkpoint; the sweep stops (not the next run)
                raise Interrupted(_STOPPED) from None
            except Exception as e:  # one broken run does not stop the sweep; it is reported at the end
                print(f"run {r.out} failed: {e}", file=sys.stderr)
                if not isinstance(e, RunError):  # a user-fixable cause (e.g. the folder in use) needs no traceback
                    traceback.print_exc()
                failed.append(str(r.out))
                continue
        if REGISTRY[r.cfg.strategy["name"]].shares_first_task and r.cfg.seed not in task0_source:
            task0_source[r.cfg.seed] = r.out
    if dry_run:
        return out
    return _finish(runs, out, failed, make_report)


def _finish(runs, out: Path, failed: list, make_report) -> Path:
    """The report of the finished runs; then, if some failed (each was reported as it failed), a RunError that
    names them: the command ends with a message and exit status 2, not a traceback."""
    from .runfolder import RunError
    done = [r.out for r in runs if is_finished(r.out, r.cfg.data.num_tasks)]
    if done:
        make_report(done, out / "report")
        print(f"report: {out / 'report' / 'report.md'}", file=sys.stderr)
    if failed:
        raise RunError(f"{len(failed)} run(s) failed: {', '.join(failed)}. Each one's cause is above (with "
                       "--jobs > 1 in <run folder>.log); fix it and run the same command again: the finished runs "
                       "are skipped and the interrupted ones resume.")
    return out


def _task0_sources(runs: list[PlannedRun], share: bool, out: Path | None = None) -> dict:
    """Per seed, the run whose task 0 the seed's other new runs start from: a run of the sweep that has its task 0
    already (finished, or made by another sweep file that shares the folder), else another run folder in ``out``
    with a task 0 identical to this sweep's (train.task0_mismatch: same seed, data, model, task-0 training and
    evaluation), else the seed's first sharing run in the sweep's order, which trains it. {} without sharing."""
    from .strategies import REGISTRY
    if not share:
        return {}
    sharing = [r for r in runs if REGISTRY[r.cfg.strategy["name"]].shares_first_task]
    found = {}
    for r in sharing:
        if r.cfg.seed not in found and _has_task0(r.out):
            found[r.cfg.seed] = r
    if out is not None:
        planned, tried = {p.out for p in runs}, set()
        for r in sharing:  # once per seed that has no task 0 yet: the folder's other runs
            if r.cfg.seed not in found and r.cfg.seed not in tried:
                tried.add(r.cfg.seed)
                other = _foreign_task0(r, out, planned)
                if other is not None:
                    found[r.cfg.seed] = other
    for r in sharing:
        found.setdefault(r.cfg.seed, r)
    return found


def _foreign_task0(r: PlannedRun, out: Path, planned: set) -> PlannedRun | None:
    """A run folder in ``out`` that this sweep does not plan (a run of another sweep file, or of the same file
    before its grid changed) whose task-0 checkpoint ``r`` can start from; None if there is none."""
    from .checkpoint import list_checkpoints
    from .runfolder import normalised_config
    from .train import task0_mismatch

    mine = r.cfg.to_dict()
    for d in sorted(p for p in out.glob("*") if p.is_dir() and p not in planned) if out.is_dir() else []:
        metas = [m for m in list_checkpoints(d) if m.get("task") == 0 and m.get("complete", True)]
        if metas and "config" in metas[-1] and task0_mismatch(normalised_config(metas[-1]["config"]), mine, d) is None:
            return PlannedRun(None, d)
    return None


def _has_task0(run_dir: Path) -> bool:
    from .checkpoint import list_checkpoints
    return any(m.get("task") == 0 and m.get("complete", True) for m in list_checkpoints(run_dir))


_STOPPED = "sweep interrupted: the running runs wrote a checkpoint and stopped; run the same command again to resume"
INTERRUPTED_EXIT = 130  # a parallel sweep's run that was interrupted (it wrote a checkpoint)


def _child(cfg_dict: dict, out: str, log: str, parent: int) -> None:
    """One run of a parallel sweep, in its own process; its output goes to ``log``. Interrupted (SIGINT): it
    writes a checkpoint and exits with INTERRUPTED_EXIT, which stops the sweep; a second SIGINT stops it at once
    (its last checkpoint stays), with the same status. It runs in its own process group, so that a Ctrl-C reaches
    it once, through the sweep's parent (_run_parallel), not also straight from the terminal; on Linux it gets a
    SIGINT if the parent dies, so that no run goes on alone."""
    import os
    import signal
    os.setpgrp()
    _interrupt_when_parent_dies(parent)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from .config import config_from_dict
    from .runfolder import RunError
    from .train import Interrupted, train
    try:
        train(config_from_dict(cfg_dict), out=out, resume=True, progress=False)
    except Interrupted as e:
        print(f"cldiff: {e}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)
    except KeyboardInterrupt:  # the second SIGINT, or one before train() took over the signal
        print("cldiff: stopped at once; the run resumes from its last checkpoint", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)
    except RunError as e:  # a cause the user can fix (e.g. the folder in use): the message, not a traceback
        print(f"cldiff: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late forwarded signal must not turn the exit into a traceback


def _interrupt_when_parent_dies(parent: int) -> None:
    """Linux: ask the kernel to send this process SIGINT when its parent ends (prctl PR_SET_PDEATHSIG), and send
    it now if the parent has already gone. Elsewhere nothing (a killed sweep's runs then finish on their own)."""
    import os
    import signal
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGINT)


def _run_parallel(runs: list[PlannedRun], share: bool, jobs: int, out: Path | None = None,
                  poll_s: float = 2.0) -> list[str]:
    """Up to ``jobs`` runs at once, each a process with its share of the cores (train.threads, unless the sweep
    sets it). With task-0 sharing, a run of each seed that has its task 0 already, else the seed's first run,
    is the source: the seed's other new runs start from its task-0 checkpoint as soon as that exists (if that run
    fails, they train their own task 0).
    Each run's output goes to ``<run folder>.log``. Ctrl-C, or SIGINT or SIGTERM to this process alone: every
    running run writes a checkpoint and stops, and no further run starts; a second one stops them at once."""
    import multiprocessing as mp
    import os
    import signal
    import threading
    import time

    from .evaluate import get_evaluator
    from .strategies import REGISTRY
    from .train import Interrupted

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    todo, source = [], _task0_sources(runs, share, out)
    for i, r in enumerate(runs):
        shares = share and REGISTRY[r.cfg.strategy["name"]].shares_first_task
        status = _status(r)
        print(f"[{i + 1}/{len(runs)}] {r.out.name}: {status}", file=sys.stderr)
        if status == "done":
            continue
        if not r.cfg.train.threads and r.cfg.train.device in ("cpu", "auto"):
            r.cfg.train.threads = max(1, cores // jobs)  # execution only: the run's results do not depend on it
        src = source.get(r.cfg.seed) if shares and status == "new" else None
        todo.append((r, src if src is not r else None))
    for data in {(r.cfg.data.dataset, r.cfg.data.root) for r, _ in todo if r.cfg.eval.enabled}:
        get_evaluator(data[0], root=data[1])  # cached once here, not trained by several runs at once
    ctx = mp.get_context("spawn")
    running, failed, broken, interrupted = {}, [], set(), False
    signals, passed_on = [], 0  # SIGINT and SIGTERM received, and how many of them the runs were sent

    # installed even where SIGINT was ignored (a sweep started with `&` in a script): the runs never ignored it
    # before they had their own process group, and `kill -INT` must still stop the sweep
    previous = ({s: signal.signal(s, lambda signum, frame: signals.append(signum))
                 for s in (signal.SIGINT, signal.SIGTERM)}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        while todo or running:
            while passed_on < len(signals):  # each signal once to every run: the first checkpoints, a second quits
                if not passed_on:
                    print(f"sweep: {signal.Signals(signals[0]).name}: the running runs write a checkpoint and stop "
                          "(again: at once)", file=sys.stderr)
                todo.clear()
                for _, p in running.values():
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGINT)
                passed_on += 1
            for key, (r, p) in list(running.items()):
                if not p.is_alive():
                    p.join()
                    del running[key]
                    if p.exitcode == INTERRUPTED_EXIT:  # a run was interrupted (passed on from here, or a SIGINT
                        interrupted = True              # sent to the run alone)
                        todo.clear()
                        print(f"run {r.out}: interrupted; checkpoint written", file=sys.stderr)
                    elif p.exitcode != 0:
                        failed.append(str(r.out))
                        broken.add(r.out)
                        print(f"run {r.out} failed (exit code {p.exitcode}); its output: {r.out}.log", file=sys.stderr)
                    else:
                        print(f"run {r.out}: done", file=sys.stderr)
            for item in list(todo):
                if len(running) >= jobs or len(signals) > passed_on:  # a signal came: pass it on first
                    break
                r, src = item
                if src is not None and src.out not in broken and not _has_task0(src.out):
                    continue  # waits for the seed's task 0
                if src is not None and src.out not in broken:
                    r.cfg.train.init_from = str(src.out)
                todo.remove(item)
                r.out.parent.mkdir(parents=True, exist_ok=True)
                p = ctx.Process(target=_child, args=(r.cfg.to_dict(), str(r.out), f"{r.out}.log", os.getpid()),
                                daemon=False)
                p.start()
                running[r.out] = (r, p)
                print(f"run {r.out}: started ({r.cfg.train.threads or 'default'} threads, log {r.out}.log)",
                      file=sys.stderr)
            if (interrupted or signals) and not running:
                raise Interrupted(_STOPPED)
            if todo and not running:  # every waiting run's task-0 source has ended without a task 0: cannot happen
                raise RuntimeError(f"sweep: {len(todo)} run(s) wait for a task 0 that no run is training")
            time.sleep(poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return failed
