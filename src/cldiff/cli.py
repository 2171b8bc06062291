"""The `cldiff` command: parse arguments -> Config -> one library call per subcommand.

User errors (bad config, missing data, damaged checkpoint) print one clear
message and exit with status 2, no traceback; a diverged run exits with 3.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  cldiff train --config configs/split_fmnist/cpu/generative_distillation.yaml
  cldiff train --config configs/split_fmnist/smoke.yaml --set strategy.name=generative_replay --out runs/smoke_gr
  cldiff sample runs/RUN --n 64 --steps 10 --out grid.png
  cldiff sample runs/RUN_CONDITIONAL --class 3 --out dresses.png
  cldiff evaluate runs/RUN
  cldiff classify runs/RUN --set classifier.epochs=5 --set classifier.replay_pool=2000
  cldiff fid fmnist:test:classes=0,1 fmnist:train:classes=0,1
  cldiff report runs/* --out reports/mine
  cldiff sweep configs/sweeps/split_fmnist_cpu.yaml
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cldiff", description="Continual learning of diffusion models "
                                "(generative distillation, generative replay and baselines) with offline evaluation.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    p.add_argument("--version", action="version", version=f"cldiff {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    t = sub.add_parser("train", help="train a diffusion model task by task", description="Train a diffusion model "
                       "task by task with a continual-learning strategy; writes a run folder (config.yaml, "
                       "metrics.jsonl, eval.csv, checkpoints/, samples/).")
    t.add_argument("--config", required=True, help="a YAML preset, e.g. configs/split_fmnist/cpu/generative_distillation.yaml")
    t.add_argument("--out", help="run folder (default: <out_dir>/<name derived from the settings>)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set strategy.lam=0.5 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in the folder from its latest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--nan-policy", choices=["stop", "skip"], help="what a NaN/Inf loss does (default: stop, exit 3)")
    t.add_argument("--tasks", type=int, metavar="N", help="stop once the first N tasks are finished (trained, "
                   "evaluated, checkpointed), e.g. a probe after one replay task: --tasks 2; continue later "
                   "with --resume (without --tasks)")

    s = sub.add_parser("sample", help="draw a sample grid from a checkpoint",
                       description="Draw samples from a checkpoint (.pt) or the latest checkpoint of a run folder.")
    s.add_argument("checkpoint", help="a checkpoint .pt file or a run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--steps", type=int, default=10, help="DDIM steps (default 10)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0)")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    s.add_argument("--out", default="samples.png", help="output PNG grid (default samples.png)")
    s.add_argument("--npz", help="also save the samples as uint8 in this .npz (for `cldiff fid`)")
    s.add_argument("--class", dest="classes", type=int, nargs="+", metavar="C",
                   help="conditional models: sample these classes (several: in turn, one grid row each); "
                        "default: unconditional samples")
    s.add_argument("--per-class", action="store_true",
                   help="conditional models: one grid row per class the checkpoint has seen (--n per class)")
    s.add_argument("--guidance", type=float,
                   help="conditional models: classifier-free guidance scale (default: the run's eval.guidance)")
    s.add_argument("--threads", type=int, help="torch threads (default: PyTorch's choice)")

    e = sub.add_parser("evaluate", help="recompute the metrics of a run's checkpoints",
                       description="Recompute FID / KLD / ARD of a run's checkpoint(s) with the run's eval settings.")
    e.add_argument("run", help="a run folder")
    e.add_argument("--task", type=int, help="only this task's checkpoint (default: every kept checkpoint)")
    e.add_argument("--n", type=int, help="override eval.n_samples")
    e.add_argument("--steps", type=int, help="override eval.steps (DDIM steps per sample; the run's metrics files "
                   "are not changed, the figures are printed)")
    e.add_argument("--guidance", type=float, help="override eval.guidance, the classifier-free guidance scale of a "
                   "class-conditional model's samples (1: none)")
    e.add_argument("--threads", type=int, help="torch threads (default: PyTorch's choice; beside a training run, "
                   "give each its share of the cores)")

    c = sub.add_parser("classify", help="train the continual classifier on a finished run (its checkpoints "
                       "as replay generators)", description="Train the classifier of docs/protocol.md §5 after the "
                       "fact: task k replays from the run's end-of-task checkpoint k-1. Writes RUN/classifier.jsonl "
                       "(read by `cldiff report`); rerun the same command after an interruption to continue.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s)")
    c.add_argument("--set", action="append", default=[], metavar="classifier.KEY=VALUE",
                   help="classifier settings, e.g. --set classifier.mode=joint --set classifier.epochs=5 "
                   "(default: the run's config)")
    c.add_argument("--threads", type=int, help="torch threads (default: PyTorch's choice)")
    c.add_argument("--restart", action="store_true", help="discard an earlier classifier of the run and start again")
    c.add_argument("--tasks", type=int, help="train on the first TASKS tasks only (default: every task the run "
                   "finished; one more is allowed, since task k replays from checkpoint k-1)")

    f = sub.add_parser("fid", help="FID between two image sets (offline, our evaluator's features)",
                       description="FID on the evaluator's features between two image sets. Each set is a folder of "
                       "PNGs, an .npz/.npy array (uint8 [0,255] or float [-1,1]) or a data set spec such as "
                       "fmnist:test:classes=0,1.")
    f.add_argument("a")
    f.add_argument("b")
    f.add_argument("--dataset", default="fashion_mnist", help="whose evaluator extracts features (default fashion_mnist)")
    f.add_argument("--inception-weights", metavar="FILE", help="also Inception FID (torchmetrics) from this local "
                   "weights file; nothing is downloaded")

    r = sub.add_parser("report", help="tables, curves and sample grids from run folders",
                       description="Group run folders by strategy and settings (seeds as repeats) and write "
                       "report.md, results.json, results.csv and PNG plots.")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", required=True, help="report folder")
    r.add_argument("--no-reference", action="store_true",
                   help="leave out the reference points (real and noise image sets scored like the runs)")

    sw = sub.add_parser("sweep", help="run a grid of runs (strategies x fields x seeds), then the report",
                        description="Run every run of a sweep file; finished runs are skipped, interrupted ones "
                        "resumed, task 0 shared between runs of the same seed; then write the report.")
    sw.add_argument("file", help="a sweep file, e.g. configs/sweeps/split_fmnist_cpu.yaml")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and their status only")
    sw.add_argument("--no-progress", action="store_true", help="no progress bars")
    sw.add_argument("--jobs", type=int, default=1,
                    help="runs at once, each its own process with its share of the cores as train.threads (unless "
                         "the sweep sets it) and its output in <run folder>.log (default 1: one after the other)")

    b = sub.add_parser("bench", help="training and sampling throughput against this machine's peak",
                       description="Measure each strategy's training iteration (images/s, FLOP/s, fraction of the "
                       "measured matmul peak, peak memory), DDIM generation, and a plain fp32 reference, in one run.")
    b.add_argument("--preset", default="small", help="UNet preset (default small)")
    b.add_argument("--batch", type=int, default=64, help="real images per iteration (default 64)")
    b.add_argument("--image-size", type=int, default=32, help="image side, 28 or 32 (data.image_size; default 32)")
    b.add_argument("--strategies", default="naive,generative_replay,generative_distillation",
                   help="comma-separated strategies, or 'all' for every registered one")
    b.add_argument("--iters", type=int, default=5, help="timed iterations per strategy (default 5)")
    b.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    b.add_argument("--teacher-steps", type=int, default=2, help="DDIM steps of replay generation (default 2)")
    b.add_argument("--replay-ratio", type=float, default=1.0,
                   help="replay samples per real image for the strategies that replay (strategy.replay_ratio; "
                        "default 1, the paper)")
    b.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    b.add_argument("--ablation", action="store_true",
                   help="also time the GD iteration under each speed option, one at a time")
    b.add_argument("--compile", action="store_true", help="include torch.compile in --ablation (minutes to compile)")
    b.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    b.add_argument("--fused", action="store_true", help="fused Adam")
    b.add_argument("--no-reference", action="store_true", help="skip the plain fp32 reference")
    b.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, cuda:N, or auto (a GPU where there is one)")
    b.add_argument("--local-peak", type=float, default=0.0, metavar="SECONDS",
                   help="after every timed iteration, measure the bf16 matmul peak for this long (1 is enough) and "
                        "give each row's fraction of the peak measured beside it: for a machine whose speed drifts, "
                        "where the peak measured once at the start mixes the drift into the figure (default 0: off)")
    b.add_argument("--out", help="also write the results as JSON here (rewritten as each --ablation row ends)")

    ev = sub.add_parser("evaluator", help="the evaluator network behind FID / KLD", description="Manage the "
                        "evaluator network (a classifier trained on the data set; its features give our FID).")
    evs = ev.add_subparsers(dest="evcmd", metavar="ACTION")
    evt = evs.add_parser("train", help="train and cache the evaluator (deterministic)")
    evt.add_argument("--dataset", default="fashion_mnist")
    evt.add_argument("--epochs", type=int, default=6)
    evt.add_argument("--root", help="data folder")
    evs.add_parser("info", help="where the cached evaluator is and how good it is")
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError

    parser = _parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return 2
    try:
        return _dispatch(args, parser)
    except ConfigError as e:
        print(f"cldiff: {e}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"cldiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cldiff: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # RunError / TrainingDiverged have their own codes
        from .runfolder import RunError
        from .train import Interrupted, TrainingDiverged
        if isinstance(e, Interrupted):
            print(f"cldiff: {e}", file=sys.stderr)
            return 130
        if isinstance(e, RunError):
            print(f"cldiff: error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, TrainingDiverged):
            print(f"cldiff: training stopped: {e}", file=sys.stderr)
            return 3
        raise


def _dispatch(args, parser) -> int:
    if args.cmd == "train":
        from .config import load_config
        from .train import train
        cfg = load_config(args.config, args.set + ([f"train.nan_policy={args.nan_policy}"] if args.nan_policy else []))
        run_dir = train(cfg, out=args.out, resume=args.resume, progress=not args.no_progress, stop_after=args.tasks)
        print(f"run folder: {run_dir}")
        if args.tasks is not None and args.tasks < cfg.data.num_tasks:
            print(f"stopped after task {args.tasks} of {cfg.data.num_tasks} (--tasks {args.tasks}); continue with: "
                  f"cldiff train --config {run_dir}/config.yaml --out {run_dir} --resume")
        return 0
    if args.cmd == "sample":
        return _sample(args)
    if args.cmd == "evaluate":
        return _evaluate(args)
    if args.cmd == "classify":
        from .classify import classify_run
        for run in args.runs:
            out = classify_run(run, args.set, args.threads, args.restart,
                               log=lambda m, r=run: print(f"{r}: {m}", flush=True), tasks=args.tasks)
            print(f"classifier results: {out}")
        return 0
    if args.cmd == "fid":
        from .data import load_image_set
        from .evaluate import feature_stats, frechet_distance, get_evaluator, inception_fid
        if args.inception_weights and not Path(args.inception_weights).is_file():
            inception_fid(None, None, args.inception_weights)  # raises the clear error before any work
        ev = get_evaluator(args.dataset)
        sets = [load_image_set(s) for s in (args.a, args.b)]
        stats = [feature_stats(ev.run(x)[0]) for x, _, _ in sets]
        out = {ev.fid_key: frechet_distance(*stats[0], *stats[1]), "n_a": len(sets[0][0]), "n_b": len(sets[1][0]),
               "extractor": f"{ev.tag}-evaluator-{ev.sha256[:16]}"}
        if args.inception_weights:
            out["fid_inception"] = inception_fid(sets[0][0], sets[1][0], args.inception_weights)
        print(json.dumps(out))
        return 0
    if args.cmd == "report":
        from .report import make_report
        out = make_report([Path(r) for r in args.runs], Path(args.out), reference=not args.no_reference)
        print(f"report: {out / 'report.md'}")
        return 0
    if args.cmd == "bench":
        from .bench import main_bench
        return main_bench(args)
    if args.cmd == "sweep":
        from .sweep import run_sweep
        out = run_sweep(args.file, dry_run=args.dry_run, progress=not args.no_progress, jobs=args.jobs)
        print(f"sweep folder: {out}")
        return 0
    if args.cmd == "evaluator":
        from .evaluate import find_evaluator, load_evaluator, save_evaluator, train_evaluator
        if args.evcmd == "train":
            net, info = train_evaluator(args.dataset, args.root, epochs=args.epochs)
            path = save_evaluator(net, info)
            print(json.dumps({"path": str(path), **info}))
            return 0
        if args.evcmd == "info":
            path = find_evaluator()
            if path is None:
                print("no evaluator cached yet; `cldiff evaluator train` trains one")
                return 1
            ev = load_evaluator(path)
            print(json.dumps({"path": str(path), "sha256": ev.sha256, **ev.meta}))
            return 0
        parser.parse_args(["evaluator", "--help"])
    parser.print_help()
    return 2


def _sample(args) -> int:
    import numpy as np
    import torch

    from .config import GENERATION_BATCH
    from .data import save_grid, to_uint8
    from .model import autocast_for, generate
    from .runfolder import load_model
    from .sysmem import use_threads

    if args.n < 1 or args.steps < 1:
        raise ValueError(f"--n and --steps must be >= 1, got {args.n} and {args.steps}")
    use_threads(args.threads)
    dev = torch.device("cpu")
    model, schedule, cfg, meta = load_model(args.checkpoint, dev)
    labels, nrow, guidance = _sample_labels(args, model, cfg, meta)
    shape = (model.channels, model.image_size, model.image_size)
    n = len(labels) if labels is not None else args.n
    x = generate(model, schedule, n, args.steps, args.eta, args.seed, GENERATION_BATCH, dev,
                 autocast_for(dev, cfg.train.precision), shape, labels=labels, guidance=guidance)
    save_grid(x, Path(args.out), nrow=nrow)
    if args.npz:
        extra = {"labels": labels.numpy()} if labels is not None else {}
        np.savez_compressed(args.npz, images=to_uint8(x)[..., 0] if x.shape[1] == 1 else to_uint8(x), **extra)
    what = f"classes {' '.join(map(str, sorted(set(labels.tolist()))))}" if labels is not None else "unconditional"
    print(f"{n} samples ({what}) of task {meta.get('task')} checkpoint -> {args.out}")
    return 0


def _sample_labels(args, model, cfg, meta):
    """(labels or None, grid row length or None, guidance) for `cldiff sample`'s class options."""
    import torch

    guidance = cfg.eval.guidance if args.guidance is None else args.guidance
    if guidance < 0:
        raise ValueError(f"--guidance must be >= 0 (1: no guidance), got {guidance}")
    if not (args.classes or args.per_class):
        return None, None, guidance
    if not model.conditional:
        raise ValueError("--class and --per-class need a class-conditional model (model.conditional: true); "
                         "this run's model is unconditional")
    if args.classes and args.per_class:
        raise ValueError("give --class or --per-class, not both")
    seen = sorted(c for t in meta.get("tasks", [])[: meta.get("task", -1) + 1] for c in t)
    classes = args.per_class and seen or args.classes
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise ValueError(f"--class {' '.join(map(str, bad))}: the model knows classes 0..{model.num_classes - 1}")
    unseen = [c for c in classes if seen and c not in seen]
    if unseen:
        print(f"note: class(es) {' '.join(map(str, unseen))} not trained yet at this checkpoint (seen: "
              f"{' '.join(map(str, seen))})", file=sys.stderr)
    if len(classes) == 1:
        return torch.full((args.n,), classes[0], dtype=torch.long), None, guidance
    return torch.as_tensor(classes, dtype=torch.long).repeat_interleave(args.n), args.n, guidance


def _evaluate(args) -> int:
    import torch

    from .checkpoint import list_checkpoints
    from .data import ContinualData
    from .evaluate import evaluate_task, get_evaluator
    from .model import autocast_for
    from .runfolder import load_model, run_evaluator_sha
    from .sysmem import use_threads

    if args.steps is not None and args.steps < 1:  # before any checkpoint is loaded
        raise ValueError(f"--steps {args.steps}: the number of DDIM steps must be at least 1")
    if args.guidance is not None and not args.guidance >= 0:
        raise ValueError(f"--guidance {args.guidance}: the guidance scale must be >= 0 (1: no guidance)")
    use_threads(args.threads)
    run = Path(args.run)
    metas = [m for m in list_checkpoints(run) if args.task is None or m.get("task") == args.task]
    if not metas:
        raise ValueError(f"{run}: no checkpoint" + (f" for task {args.task}" if args.task is not None else "")
                         + " (only the newest train.keep_checkpoints are kept)")
    dev = torch.device("cpu")
    ev = None
    for meta in metas:
        model, schedule, cfg, _ = load_model(meta["path"], dev)
        if args.n:
            cfg.eval.n_samples = args.n
        if args.steps is not None:
            cfg.eval.steps = args.steps
        if args.guidance is not None:
            if not cfg.model.conditional:
                raise ValueError(f"--guidance: {run} is an unconditional model; guidance needs a class-conditional "
                                 "one (model.conditional: true)")
            cfg.eval.guidance = args.guidance
        ev = ev or get_evaluator(cfg.data.dataset, dev, cfg.data.root, sha=run_evaluator_sha(run))
        data = ContinualData.from_config(cfg)
        m = evaluate_task(model, schedule, data, meta["task"], cfg.eval, ev, dev, autocast_for(dev, cfg.train.precision))
        how = {"steps": cfg.eval.steps, **({"guidance": cfg.eval.guidance} if cfg.model.conditional else {})}
        print(json.dumps({"task": meta["task"], **how, **m}))
    return 0
