"""Reports from run folders only: tables (mean +- SEM over seeds), per-task curves, histograms, sample grids.

Runs are grouped by everything that distinguishes them except the seed
(strategy and its fields, model preset, data set, tasks, training budget), so
seeds are the repeats of a group.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from .checkpoint import atomic_write_bytes

# docs/protocol.md §4: Split Fashion-MNIST after the 5th task, Inception FID, teacher with 2 DDIM steps.
PAPER_RESULTS = {
    "generative_replay": {"fid": 211.8, "kld": 3.39},
    "generative_distillation": {"fid": 23.5, "kld": 0.25},
}


def _paper_numbers(run: dict, last: int) -> dict | None:
    """The paper's headline numbers where they belong beside the run: Split Fashion-MNIST after its 5th task,
    with the paper's 2 teacher steps (a 10-step teacher is another experiment)."""
    cfg = run["config"]
    if cfg["data"]["dataset"] != "fashion_mnist" or run["num_tasks"] != 5 or last != 4:
        return None
    if cfg["strategy"].get("teacher_steps", 2) != 2:
        return None
    return PAPER_RESULTS.get(run["strategy"])


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for ln in path.read_text().splitlines():
        if ln.strip():
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                pass  # a line cut by a crash: skip it, the report reads what is whole
    return out


def load_run(run_dir: Path) -> dict:
    """What a report needs from one run folder."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise ValueError(f"{run_dir}: not a cldiff run folder (no config.yaml)")
    cfg = yaml.safe_load(cfg_path.read_text())
    recs = _read_jsonl(run_dir / "metrics.jsonl")
    evals = {r["task"]: r for r in recs if r.get("event") == "eval"}
    ends = {r["task"]: r for r in recs if r.get("event") == "task_end"}
    walls = [r.get("wall_s", 0.0) for r in recs if "wall_s" in r]
    strat = dict(cfg["strategy"])
    name = strat.pop("name")
    label = name + "".join(f" {k}={v}" for k, v in sorted(strat.items()))
    if (cfg.get("model") or {}).get("conditional"):
        label += " (conditional)"
    group = json.dumps(_group_key(cfg), sort_keys=True)
    return {"dir": run_dir, "config": cfg, "seed": cfg["seed"], "strategy": name, "label": label, "group": group,
            "evals": evals, "task_ends": ends, "num_tasks": cfg["data"]["num_tasks"],
            "wall_s": max(walls) if walls else 0.0,
            "images_trained": sum(e.get("images_trained", 0) for e in ends.values()),
            "teacher_image_forwards": sum(e.get("teacher_image_forwards", 0) for e in ends.values()),
            "student_images": sum(e.get("student_images", 0) for e in ends.values()),
            "compute": compute_of(ends.values()),
            "classifier": [r for r in recs if r.get("event") == "classifier_eval"]
            or [r for r in _read_jsonl(run_dir / "classifier.jsonl") if r.get("event") == "classifier_eval"],
            "shared_from": next((r["from"] for r in recs if r.get("event") == "shared"), None)}


# A student image's forward and backward pass costs about three forwards (the backward about two), so the
# compute of a run is counted in image-forward equivalents: teacher image-forwards + 3 x student images.
STUDENT_PASS_FORWARDS = 3


def compute_of(task_ends) -> int:
    """A run's training compute in image-forward equivalents (teacher forwards + student forward-backwards)."""
    return sum(e.get("teacher_image_forwards", 0) + STUDENT_PASS_FORWARDS * e.get("student_images", 0)
               for e in task_ends)


def _group_key(cfg: dict) -> dict:
    """What makes two runs the same experiment (their seeds then are repeats): every setting that changes what a
    run computes or how it is evaluated, with today's defaults filled in for fields a run's config predates.
    Left out: the seed, names and folders, the settings that only change how a run executes or what it draws
    (config.DISPLAY_ONLY), and the classifier's (it has random streams of its own and leaves the diffusion model
    as it is, so a run with the classifier repeats one without it)."""
    from .config import DISPLAY_ONLY, config_from_dict
    try:
        full = config_from_dict(cfg).to_dict()
    except Exception:  # a config of another version that no longer loads: group it by what it says
        full = cfg
    train = {k: v for k, v in full.get("train", {}).items() if k not in DISPLAY_ONLY["train"]}
    if train.get("steps_per_task") is not None:  # steps override epochs: epochs then change nothing
        train["epochs_per_task"] = None
    data = {k: v for k, v in full.get("data", {}).items() if k not in ("root", "verify")}
    return {"strategy": full.get("strategy"), "model": full.get("model"), "data": data, "train": train,
            "eval": {k: v for k, v in full.get("eval", {}).items() if k not in DISPLAY_ONLY["eval"]}}


def class_names(dataset: str | None, n: int) -> list[str]:
    """The names of a data set's classes ('T-shirt', 'trouser', ...), or their numbers when it has none."""
    from .data import DATASETS
    spec = DATASETS.get(dataset)
    names = list(spec.class_names) if spec is not None and spec.class_names else []
    return [f"{i} {names[i]}" if i < len(names) else str(i) for i in range(n)]


def mean_sem(values) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (std with ddof=1 over sqrt(n)); SEM is None for n < 2."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None
    m = float(np.mean(v))
    return m, (float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None)


def _fmt(m, s, digits=2) -> str:
    if m is None:
        return "—"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


PER_CLASS = ("class_fid_mean", "classes_missing", "label_acc")


def _compute_lines(groups: list[dict], fid_key: str) -> list[str]:
    """Quality against training compute, for the groups with teacher or student counts."""
    have = [g for g in groups if g["compute"][0]]
    if not have:
        return []
    lines = ["", "## Quality against compute", "",
             "Training compute of the runs of each row, in image-forward equivalents: the teacher's image-forwards "
             f"(replay generation and targets) plus {STUDENT_PASS_FORWARDS} per student image (a forward and a "
             "backward pass). Plot: `compute.png`.", "",
             f"| strategy | after task | teacher image-forwards | student images | compute | {fid_key} | KLD |",
             "|---|---|---|---|---|---|---|"]
    for g in have:
        f = g["final"]
        lines.append(f"| {g['label']} | {g['final_task'] + 1} | {g['teacher_image_forwards'][0] or 0:,.0f} | "
                     f"{g['student_images'][0] or 0:,.0f} | {g['compute'][0]:,.0f} | {_fmt(*f[fid_key])} | "
                     f"{_fmt(*f['kld'], 3)} |")
    return lines


def _per_class_lines(groups: list[dict], fid_key: str) -> list[str]:
    """The per-class FID table, for the groups whose runs have per-class FIDs."""
    have = [g for g in groups if g["per_class"]["class_fid_mean"][0] is not None]
    if not have:
        return []
    lines = ["", "## Per-class FID after the last task", "",
             f"For each seen class c: the {fid_key} of the samples of class c against the test images of class c. A "
             "conditional model's samples are grouped by the class they were asked for (equal shares), an "
             "unconditional model's by the evaluator's predicted class; a class with fewer than 10 samples is "
             "missing (not scored; the mean is over the others). FID's small-sample bias is large at these "
             "sample counts, and larger for classes with few samples: compare runs with the same samples per class. "
             "Label accuracy: the share of a conditional model's samples that the evaluator puts in the class asked for.",
             "", "| strategy | after task | mean per-class FID | classes missing | label accuracy | per class |",
             "|---|---|---|---|---|---|"]
    for g in have:
        pc = g["per_class"]
        each = ", ".join(f"{c}: {_fmt(m, None, 0)}" for c, (m, _) in sorted(g["class_fid"].items(), key=lambda x: int(x[0])))
        lines.append(f"| {g['label']} | {g['final_task'] + 1} | {_fmt(*pc['class_fid_mean'])} | "
                     f"{_fmt(*pc['classes_missing'], 1)} | {_fmt(*pc['label_acc'], 3)} | {each} |")
    return lines


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r)
    out = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        fid_key = next((k for r in rs for e in r["evals"].values() for k in e if k.startswith("fid_")), "fid")
        # the last task any run of the group has finished: the mean over the seeds that reached it (seeds still
        # going are named, with the task they are at, instead of holding the whole group back)
        reached = [max(r["evals"], default=-1) for r in rs]
        last = max(reached)
        finals = [r["evals"].get(last) for r in rs]
        done = [f for f in finals if f is not None]
        row_runs = [r for r, f in zip(rs, finals) if f is not None]  # the runs of the row
        per_task = {}
        for k in range(rs[0]["num_tasks"]):
            rows = [r["evals"][k] for r in rs if k in r["evals"]]
            if rows:
                per_task[k] = {m: mean_sem([row.get(m) for row in rows]) for m in (fid_key, "kld", "ard")}
        g = {"label": rs[0]["label"], "strategy": rs[0]["strategy"], "seeds": [r["seed"] for r in rs],
             "config": (row_runs or rs)[0]["config"],
             "dataset": rs[0]["config"].get("data", {}).get("dataset"),
             "complete_seeds": [r["seed"] for r in row_runs], "fid_key": fid_key,
             "behind": {str(r["seed"]): k + 1 for r, k in zip(rs, reached) if k < last},  # seed -> tasks done
             "final_task": last, "num_tasks": rs[0]["num_tasks"], "runs": [str(r["dir"]) for r in rs],
             "final": {m: mean_sem([f.get(m) for f in done]) for m in (fid_key, "kld", "ard")},
             # per-class FIDs (absent from runs made before they existed), the conditional label accuracy
             "per_class": {m: mean_sem([f.get(m) for f in done]) for m in PER_CLASS},
             "class_fid": {c: mean_sem([(f.get("class_fid") or {}).get(c) for f in done])
                           for c in (done[0].get("class_fid") or {} if done else {})},
             "class_source": done[0].get("class_source") if done else None,
             "per_task": per_task,
             "hist_pred": np.mean([f["hist_pred"] for f in done], 0).tolist() if done else None,
             "hist_true": done[0]["hist_true"] if done else None,
             # cost columns: the runs of the row (those that reached the last task)
             **{c: mean_sem([r[c] for r in row_runs])
                for c in ("wall_s", "images_trained", "teacher_image_forwards", "student_images", "compute")},
             "classifier": _classifier_summary(rs),
             # the evaluators (SHA-256, 16 hex digits) that scored the group's evaluations: one, unless runs were
             # scored on different machines (evaluate.get_evaluator)
             "evaluators": sorted({e["evaluator_sha256"] for r in rs for e in r["evals"].values()
                                   if e.get("evaluator_sha256")}),
             "paper": _paper_numbers(rs[0], last)}
        out.append(g)
    _disambiguate(out, groups)
    order = ["naive", "joint", "generative_replay", "generative_distillation"]
    return sorted(out, key=lambda g: (order.index(g["strategy"]) if g["strategy"] in order else 99, g["label"]))


def _evaluator_lines(groups: list[dict]) -> list[str]:
    """Which evaluator scored the report's runs; a warning when there were several (their FIDs do not compare)."""
    shas = sorted({s for g in groups for s in g.get("evaluators", [])})
    if len(shas) <= 1:
        return [f"Evaluator: `{shas[0]}` (the first 16 hex digits of its weights' SHA-256), for every evaluation.",
                ""] if shas else []
    who = "; ".join(f"{g['label']}: {', '.join(f'`{s}`' for s in g['evaluators'])}" for g in groups
                    if g.get("evaluators"))
    return [f"**Warning: {len(shas)} evaluators scored these runs** ({who}). An evaluator trained on another "
            "machine has other weights, and FIDs from different evaluators do not compare exactly: copy one "
            "evaluator file to every machine (`~/.cache/cldiff/evaluator/`) before the runs.", ""]


def _incomplete_lines(groups: list[dict]) -> list[str]:
    """The report's note on groups that have not finished every task with every seed."""
    notes = []
    for g in groups:
        parts = []
        if g["final_task"] < g["num_tasks"] - 1:
            parts.append(f"after task {g['final_task'] + 1} of {g['num_tasks']}")
        parts += [f"seed {s} after task {n}" if n else f"seed {s} has no evaluation yet"
                  for s, n in g.get("behind", {}).items()]
        if parts:
            notes.append(f"{g['label']} ({'; '.join(parts)})")
    if not notes:
        return []
    return [f"**Incomplete**: {', '.join(notes)}; the paper's numbers (after 5 tasks) are shown only for groups "
            "that reached the 5th task.", ""]


def _disambiguate(out: list[dict], groups: dict[str, list[dict]]) -> None:
    """Groups of the same strategy label that differ elsewhere (budget, model, data, evaluation) get the
    differing settings appended to their label, e.g. "joint [train.steps_per_task=600]"."""
    by_label: dict[str, list[tuple[dict, dict]]] = {}
    for g, key in zip(out, groups):
        by_label.setdefault(g["label"], []).append((g, json.loads(key)))
    for same in by_label.values():
        if len(same) < 2:
            continue
        flat = [{f"{a}.{b}" if isinstance(v, dict) else a: (v[b] if isinstance(v, dict) else v)
                 for a, v in k.items() if a != "strategy" for b in (v if isinstance(v, dict) else [None])}
                for _, k in same]
        differing = sorted({f for d in flat for f in d if len({json.dumps(x.get(f)) for x in flat}) > 1})
        for (g, _), d in zip(same, flat):
            g["label"] += " [" + ", ".join(f"{f}={d.get(f)}" for f in differing) + "]"


def _classifier_summary(rs: list[dict]) -> dict | None:
    """The classifier's numbers of a group: like the main table, at the last task any seed's classifier has
    finished, as the mean over the seeds that reached it (seeds still behind are named with the tasks done)."""
    with_cls = [r for r in rs if r["classifier"]]
    if not with_cls:
        return None
    last = max(r["classifier"][-1]["task"] for r in with_cls)
    finals = {r["seed"]: r["classifier"][-1] for r in with_cls if r["classifier"][-1]["task"] == last}
    per_task = {}
    for r in with_cls:
        for c in r["classifier"]:
            per_task.setdefault(c["task"], []).append(c.get("avg_acc"))
    return {"mode": "/".join(sorted({str(f.get("mode", "generative")) for f in finals.values()})),
            "after_task": last + 1,
            "seeds": sorted(finals),
            "behind": {str(r["seed"]): (r["classifier"][-1]["task"] + 1 if r["classifier"] else 0)
                       for r in rs if r["seed"] not in finals},
            "avg_acc": mean_sem([f.get("avg_acc") for f in finals.values()]),
            "forgetting": mean_sem([f.get("forgetting") for f in finals.values()]),
            "acc_matrix_first_seed": [c["acc"] for c in with_cls[0]["classifier"]],
            "per_task": {k: mean_sem(v) for k, v in sorted(per_task.items())}}


def _plots(groups: list[dict], out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fid_key = groups[0]["fid_key"] if groups else "fid"
    have = [g for g in groups if g["compute"][0] and g["final"][fid_key][0] is not None]
    if have:  # final FID and KLD against training compute, one point per group (error bars: SEM over seeds)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric in zip(axes, (fid_key, "kld")):
            for g in have:
                m, e = g["final"][metric]
                ax.errorbar([g["compute"][0]], [m], yerr=[e or 0.0], marker="o", capsize=3, label=g["label"])
            ax.set_xlabel("training compute (image-forward equivalents)")
            ax.set_ylabel(f"{metric} after the last task (lower is better)")
            ax.set_xscale("log")
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "compute.png", dpi=110)
        plt.close(fig)
        made.append("compute.png")
    for metric, fname, title in ((fid_key, "fid_per_task.png", f"{fid_key} (lower is better)"),
                                 ("kld", "kld_per_task.png", "KLD(p_true || p_pred) (lower is better)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for g in groups:
            ks = sorted(g["per_task"])
            if not ks:
                continue
            m = np.array([g["per_task"][k][metric][0] for k in ks], float)
            s = np.array([g["per_task"][k][metric][1] or 0.0 for k in ks], float)
            ax.plot([k + 1 for k in ks], m, marker="o", label=g["label"])
            ax.fill_between([k + 1 for k in ks], m - s, m + s, alpha=0.2)
        ax.set_xlabel("after task")
        ax.set_xticks(range(1, max(g["num_tasks"] for g in groups) + 1))
        ax.set_ylabel(metric)
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made.append(fname)
    cls = [g for g in groups if g["classifier"]]
    if cls:
        fig, ax = plt.subplots(figsize=(6, 4))
        for g in cls:
            ks = sorted(g["classifier"]["per_task"])
            m = np.array([g["classifier"]["per_task"][k][0] for k in ks], float)
            s_ = np.array([g["classifier"]["per_task"][k][1] or 0.0 for k in ks], float)
            ax.plot([k + 1 for k in ks], m, marker="o", label=g["label"])
            ax.fill_between([k + 1 for k in ks], m - s_, m + s_, alpha=0.2)
        ax.set_xlabel("after task")
        ax.set_ylabel("average accuracy on tasks seen so far")
        ax.set_title("classifier trained with replay from the diffusion model")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "classifier_accuracy.png", dpi=110)
        plt.close(fig)
        made.append("classifier_accuracy.png")
    hs = [g for g in groups if g["hist_pred"] is not None]
    if hs:
        fig, axes = plt.subplots(1, len(hs), figsize=(3.2 * len(hs), 3), squeeze=False)
        for ax, g in zip(axes[0], hs):
            c = np.arange(len(g["hist_true"]))
            ax.bar(c - 0.2, g["hist_true"], 0.4, label="true")
            ax.bar(c + 0.2, g["hist_pred"], 0.4, label="predicted")
            ax.set_title(g["label"], fontsize=7)
            names = class_names(g.get("dataset"), len(c))
            ax.set_xticks(c, names, rotation=60 if len(max(names, key=len)) > 2 else 0, fontsize=7, ha="right"
                          if len(max(names, key=len)) > 2 else "center")
            ax.set_xlabel("class (evaluator's label of each sample)")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "class_histograms.png", dpi=110)
        plt.close(fig)
        made.append("class_histograms.png")
    return made


def _slug(label: str, limit: int = 180) -> str:
    """A file-name form of a group label. Long labels (many differing settings) are cut to `limit` characters
    and given a hash of the whole label, so that names stay distinct and within the file system's 255 bytes."""
    slug = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "_" for ch in label)
    if len(slug) <= limit:
        return slug
    return slug[:limit] + "_" + hashlib.sha256(label.encode()).hexdigest()[:10]


REFERENCE_SEED = 0


def _real_with_mix(x: torch.Tensor, y: np.ndarray, hist, n: int, rng) -> torch.Tensor:
    """n real images drawn (without replacement within a class) with the class shares ``hist``."""
    hist = np.asarray(hist, float)
    counts = rng.multinomial(n, hist / hist.sum())
    idx = [rng.choice(np.flatnonzero(y == c), size=k, replace=k > int((y == c).sum()))
           for c, k in enumerate(counts) if k]
    return x[torch.from_numpy(np.concatenate(idx))]


def reference_points(groups: list[dict], evaluator=None) -> tuple[list[tuple[str, dict]], str | None]:
    """Image sets scored exactly as each group's last evaluation is (the same evaluator, sample count and seen
    classes), so a reader can place its FID: real training images of the seen classes in equal shares, real
    training images in the group's own class mix (what its class balance alone costs), and clipped noise.

    Returns (rows of (what, metrics)), and a reason when there are none (no cached evaluator, no data)."""
    from .config import ConfigError, config_from_dict
    from .data import ContinualData, DataError
    from .evaluate import find_evaluator, load_evaluator, score_samples

    rows, done, loaded = [], set(), {}
    for g in groups:
        if g.get("hist_pred") is None:
            continue
        runs_sha = g.get("evaluators") or []
        if len(runs_sha) > 1:
            return [], f"{g['label']} was scored by {len(runs_sha)} evaluators, so no reference points"
        try:
            cfg = config_from_dict(g["config"])
        except ConfigError as e:
            return [], f"the config of {g['label']} does not load with this version ({e.problems[0]})"
        if (evaluator is None or evaluator.dataset != cfg.data.dataset
                or (runs_sha and not evaluator.sha256.startswith(runs_sha[0]))):
            path = find_evaluator(cfg.data.dataset, sha=runs_sha[0] if runs_sha else None)
            if path is None:
                return [], (f"the evaluator that scored the runs ({runs_sha[0]}) is not cached here, so no reference "
                            "points" if runs_sha else f"no cached evaluator for {cfg.data.dataset} "
                            "(`cldiff evaluator train` makes it), so no reference points")
            evaluator = load_evaluator(path)
        data_key = json.dumps([cfg.seed, dataclasses.asdict(cfg.data)], sort_keys=True)  # seed: the class order
        if data_key not in loaded:  # the groups of one report mostly share their data: read it once
            try:
                data = ContinualData.from_config(cfg)
                x, y = data.train(list(range(data.spec.num_classes)))
            except DataError as e:
                return [], f"the data set is not here ({str(e).splitlines()[0]}), so no reference points"
            loaded[data_key] = (data, x, y.numpy())
        data, x, y = loaded[data_key]
        classes = sorted({c for t in data.tasks[: g["final_task"] + 1] for c in t})
        n = cfg.eval.n_samples
        rng = np.random.default_rng(REFERENCE_SEED)
        key = (cfg.data.dataset, tuple(classes), n)
        sets = []
        if key not in done:
            done.add(key)
            names = class_names(cfg.data.dataset, data.spec.num_classes)
            uniform = [1.0 if c in classes else 0.0 for c in range(data.spec.num_classes)]
            sets.append((f"real training images of the seen classes ({', '.join(names[c] for c in classes)}), "
                         f"equal shares, {n}", _real_with_mix(x, y, uniform, n, rng)))
            noise = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(REFERENCE_SEED))
            sets.append((f"Gaussian noise N(0, 1) clipped to [-1, 1], {n}", noise.clamp(-1, 1)))
        sets.append((f"real training images in the class mix of {g['label']}'s samples, {n}",
                     _real_with_mix(x, y, g["hist_pred"], n, rng)))
        for what, imgs in sets:
            rows.append((what, score_samples(imgs, evaluator, cfg.data.dataset, classes, data=data)))
    return rows, None


def make_report(run_dirs: list[Path], out: Path, reference: bool = True, evaluator=None) -> Path:
    """Write report.md, results.json, results.csv, plots and sample grids into ``out``.

    ``reference``: add reference points to the results table (real and noise image sets scored like the runs;
    needs the cached evaluator and the data set, and is left out with a note where either is missing)."""
    runs = [load_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ValueError("no run folders given")
    out.mkdir(parents=True, exist_ok=True)
    groups = summarise(runs)
    plots = _plots(groups, out)
    fid_key = groups[0]["fid_key"]

    # sample grids: each group's first seed, after every task
    grids = {}
    (out / "samples").mkdir(exist_ok=True)
    for old in (out / "samples").glob("*_task_[0-9][0-9].png"):  # an earlier report's grids: groups may differ now
        old.unlink()
    for g in groups:
        src = Path(g["runs"][0]) / "samples"
        for png in sorted(src.glob("task_*.png")):
            dst = out / "samples" / f"{_slug(g['label'])}_{png.name}"
            shutil.copyfile(png, dst)
            grids.setdefault(g["label"], []).append(dst.name)

    lines = ["# cldiff report", "",
             f"Runs: {len(runs)} in {len(groups)} groups (seeds are repeats; ± is the standard error of the mean).",
             "",
             f"**What our FID is.** `{fid_key}` is the Fréchet distance between features of our own evaluator "
             "network (a CNN trained on the data set, 256-d penultimate layer) for generated samples and for the "
             "test images of all classes seen so far. It is *not* Inception FID: its scale differs, so compare "
             "our numbers with each other, and the paper's only by ordering and ratio. As in the paper, the "
             "real set grows with the number of tasks (2,000 test images per task) while the generated set has a "
             "fixed size, so the FID's small-sample bias changes from task to task.", "",
             *_evaluator_lines(groups),
             "## Results after the last task each group has reached", "",
             "Each row is the mean over the seeds that reached that task (the seeds column names them; seeds "
             "still behind are listed after \"of\").", "",
             *_incomplete_lines(groups),
             f"| strategy | after task | seeds | {fid_key} | KLD | ARD | paper FID (Inception) | paper KLD | wall time (min) | images trained | teacher image-forwards |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        f = g["final"]
        paper = g["paper"] or {}
        w = g["wall_s"][0]
        lines.append(
            f"| {g['label']} | {g['final_task'] + 1} | {','.join(map(str, g['complete_seeds']))}"
            f"{'' if len(g['complete_seeds']) == len(g['seeds']) else ' (of ' + ','.join(map(str, g['seeds'])) + ')'} | "
            f"{_fmt(*f[fid_key])} | {_fmt(*f['kld'], 3)} | {_fmt(*f['ard'], 3)} | {paper.get('fid', '—')} | "
            f"{paper.get('kld', '—')} | {w / 60 if w else 0:.1f} | {g['images_trained'][0] or 0:,.0f} | "
            f"{g['teacher_image_forwards'][0] or 0:,.0f} |")
    if reference:
        refs, why = reference_points(groups, evaluator)
        if refs:
            lines += ["", "Reference points, scored exactly like the runs above (same evaluator, same number of images, "
                      "against the same test images); not runs:", "",
                      f"| image set | {fid_key} | KLD | ARD |", "|---|---|---|---|"]
            lines += [f"| {what} | {m.get(fid_key, float('nan')):.2f} | {m['kld']:.3f} | {m['ard']:.3f} |"
                      for what, m in refs]
        elif why:
            lines += ["", f"(Reference points: {why}.)"]
    lines += _compute_lines(groups, fid_key)
    lines += _per_class_lines(groups, fid_key)
    if any(g["classifier"] for g in groups):
        lines += ["", "## Classifier trained with the diffusion model as its replay generator", "",
                  "Classifier mode: generative = replay from this run's diffusion model (docs/protocol.md §5); "
                  "joint = trained on the real images of every class seen so far; naive = fine-tuned on each task's "
                  "images only; real_replay = the generative protocol with real images of the earlier tasks as the "
                  "replay (a perfect generator). The last three do not use the diffusion model (their row is the classifier's baseline).",
                  "",
                  "Each row is the mean over the seeds whose classifier reached that task; seeds behind are named "
                  "with the number of tasks their classifier has finished (0: not started).", "",
                  "| strategy | classifier mode | after task | seeds | average accuracy | forgetting | "
                  "accuracy matrix (first seed with a classifier; row = after task k) |",
                  "|---|---|---|---|---|---|---|"]
        for g in groups:
            if g["classifier"]:
                c = g["classifier"]
                mat = "<br>".join(" ".join(f"{a:.2f}" for a in row) for row in c["acc_matrix_first_seed"])
                behind = "".join(f"; seed {s_} after {n}" for s_, n in c["behind"].items())
                lines.append(f"| {g['label']} | {c['mode']} | {c['after_task']} | "
                             f"{','.join(map(str, c['seeds']))}{behind} | {_fmt(*c['avg_acc'], 3)} | "
                             f"{_fmt(*c['forgetting'], 3)} | {mat} |")
    lines += ["", "## Per task", "", f"| strategy | task | {fid_key} | KLD | ARD |", "|---|---|---|---|---|"]
    for g in groups:
        for k in sorted(g["per_task"]):
            p = g["per_task"][k]
            lines.append(f"| {g['label']} | {k + 1} | {_fmt(*p[fid_key])} | {_fmt(*p['kld'], 3)} | {_fmt(*p['ard'], 3)} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Samples (first seed of each group, fixed noise)", ""]
    for label, names in grids.items():
        lines.append(f"**{label}**: " + " ".join(f"[task {n[-6:-4]}](samples/{n})" for n in names))
        lines.append("")
        lines.append(f"![{label} last task](samples/{names[-1]})")
        lines.append("")
    lines += ["## Runs", ""] + [f"- `{r['dir']}` (seed {r['seed']})" + (
        f"; task 0 shared from `{r['shared_from']}` (the same computation: no strategy replays in task 0)"
        if r["shared_from"] else "") for r in runs]
    atomic_write_bytes(out / "report.md", ("\n".join(lines) + "\n").encode())

    atomic_write_bytes(out / "results.json", json.dumps(groups, indent=1).encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["strategy", "seeds", f"{fid_key}_mean", f"{fid_key}_sem", "kld_mean", "kld_sem", "ard_mean", "ard_sem",
                "wall_s_mean", "images_trained", "teacher_image_forwards", "class_fid_mean", "class_fid_sem",
                "label_acc_mean", "student_images", "compute"])
    for g in groups:
        f = g["final"]
        w.writerow([g["label"], " ".join(map(str, g["complete_seeds"])), *f[fid_key], *f["kld"], *f["ard"],
                    g["wall_s"][0], g["images_trained"][0], g["teacher_image_forwards"][0],
                    *g["per_class"]["class_fid_mean"], g["per_class"]["label_acc"][0], g["student_images"][0],
                    g["compute"][0]])
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    return out
