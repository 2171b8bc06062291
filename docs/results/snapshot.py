"""Shared by the docs tables' scripts: their data come from run folders, or from a JSON snapshot of what a
script read from them before (its --dump, committed beside the table), so a table can be printed again without
the runs."""
import argparse
import json
from pathlib import Path
from typing import Callable


def read_source(doc: str, collect: Callable[[Path, list[str]], dict], argv: list[str], source_help: str) -> dict:
    """Parse `SOURCE [SEED ...] [--dump FILE]`: SOURCE a folder (collect(SOURCE, seeds) reads it) or a JSON file
    written by --dump; after a JSON file, more JSON files instead of seeds, merged into one (a key of a later file
    replaces the earlier one's). Returns the data; --dump writes what was read to FILE."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("source", type=Path, help=f"{source_help}, or JSON files written by --dump")
    ap.add_argument("seeds", nargs="*", help="seeds to read from the run folders (or more JSON files)")
    ap.add_argument("--dump", type=Path, help="write what was read from the folders to this JSON file")
    args = ap.parse_args(argv)
    if args.source.suffix == ".json":
        data = {}
        for f in [args.source, *map(Path, args.seeds)]:
            if f.suffix != ".json":
                ap.error(f"after a JSON file give only JSON files, not {f}")
            data.update(json.loads(f.read_text()))
    else:
        data = collect(args.source, args.seeds)
    if args.dump is not None:
        args.dump.write_text(json.dumps(data, indent=1) + "\n")
    return data


def read_labelled(doc: str, collect: Callable[[list[tuple[str, str]]], dict], argv: list[str] | None,
                  source_help: str) -> dict:
    """Parse `LABEL=PATH [LABEL=PATH ...] [--dump FILE]` (collect([(label, path), ...]) reads them; the last '='
    splits, so a label may hold one) or `FILE.json` written by --dump. Returns the data; --dump writes it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("sources", nargs="+", help=f"{source_help}, or one JSON file written by --dump")
    ap.add_argument("--dump", type=Path, help="write what was read to this JSON file")
    args = ap.parse_args(argv)
    if len(args.sources) == 1 and args.sources[0].endswith(".json"):
        data = json.loads(Path(args.sources[0]).read_text())
    else:
        data = collect([(label, path) for label, _, path in (s.rpartition("=") for s in args.sources)])
    if args.dump is not None:
        args.dump.write_text(json.dumps(data, indent=1) + "\n")
    return data


def read_folder(folder: Path, keep: tuple[str, ...]) -> dict:
    """A run folder's evaluations (the fields in keep) and task ends, from its metrics.jsonl."""
    recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = [{k: r[k] for k in keep if k in r} for r in recs if r.get("event") == "eval"]
    ends = [{k: v for k, v in r.items() if k != "event"} for r in recs if r.get("event") == "task_end"]
    return {"evals": evals, "task_ends": ends}


def classifier_records(run: Path) -> list[dict]:
    """The classifier_eval records of a run folder's classifier.jsonl (`cldiff classify`); [] if it has none."""
    f = run / "classifier.jsonl"
    if not f.is_file():
        return []
    return [r for r in map(json.loads, f.read_text().splitlines()) if r.get("event") == "classifier_eval"]


def classifier_cells(recs: list[dict], n: int) -> tuple[list[str], str, float | None]:
    """A classifier's table cells: its average accuracy after each of n tasks ("-" where missing), its accuracy
    on every task after the last task it reached, and its final average accuracy (None before task n - 1)."""
    by_task = {r["task"]: r for r in recs}
    cells = [f"{by_task[k]['avg_acc']:.3f}" if k in by_task else "-" for k in range(n)]
    last = by_task[max(by_task)]
    final = last["avg_acc"] if max(by_task) == n - 1 else None
    return cells, " ".join(f"{a:.3f}" for a in last["acc"]), final

