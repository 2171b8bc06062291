"""Offline evaluation: our own evaluator network, FID on its features, KLD / ARD of class histograms.

docs/protocol.md §4. Inception-v3 weights cannot be downloaded here, so FID
uses the penultimate features (256-d) of a classifier trained on the data
set itself; every output names it after its extractor (``fid_fmnist``) so it
is never mistaken for Inception FID. The numbers are comparable between runs
of cldiff that use the same evaluator (its SHA-256 is recorded), not with the
paper's Inception FID.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import atomic_write_bytes
from .model import autocast_for, balanced_labels, generate

EVAL_SIZE = 32  # the evaluator network's input size
PREPROCESS_VERSION = "resize32-bilinear-aa-v1"  # bump when to_model_range changes
TAGS = {"fashion_mnist": "fmnist", "synthetic": "synthetic", "mnist": "mnist", "cifar10": "cifar10"}


# --------------------------------------------------------------------------- the evaluator network


class EvaluatorNet(nn.Module):
    """A CNN classifier on (N, C, 32, 32) images in [-1, 1]; ``features`` are its 256-d penultimate layer."""

    feature_dim = 256

    def __init__(self, channels: int = 1, num_classes: int = 10):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(channels, 32), *block(32, 64), *block(64, 128))  # 32 -> 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 4 * 4, self.feature_dim),
                                nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class Evaluator:
    net: EvaluatorNet
    dataset: str
    sha256: str  # of the weights file: identifies the extractor in caches and reports
    meta: dict

    @property
    def tag(self) -> str:
        return TAGS.get(self.dataset, self.dataset)

    @property
    def fid_key(self) -> str:
        return f"fid_{self.tag}"

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
        """(features float64 (N, 256), predicted class (N,)) for images (N, C, S, S) in [-1, 1].

        The network sees 32x32 images; other sizes (a model trained at data.image_size 28) are resized to 32 the
        way the data loader resizes real images (bilinear, antialiased), so their FID compares with everyone's.
        """
        dev = next(self.net.parameters()).device
        feats, preds = [], []
        self.net.eval()
        for i in range(0, len(images), batch):
            x = images[i:i + batch].to(dev).float()
            if x.shape[-1] != EVAL_SIZE or x.shape[-2] != EVAL_SIZE:
                x = F.interpolate(x, size=(EVAL_SIZE, EVAL_SIZE), mode="bilinear", antialias=True,
                                  align_corners=False).clamp_(-1.0, 1.0)
            f = self.net.features(x)
            feats.append(f.double().cpu().numpy())
            preds.append(self.net.head(f).argmax(1).cpu().numpy())
        if not feats:
            return np.zeros((0, self.net.feature_dim)), np.zeros(0, np.int64)
        return np.concatenate(feats), np.concatenate(preds)


def cache_dir() -> Path:
    """$CLDIFF_CACHE, else $XDG_CACHE_HOME/cldiff, else ~/.cache/cldiff."""
    if os.environ.get("CLDIFF_CACHE"):
        return Path(os.environ["CLDIFF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cldiff"


def train_evaluator(dataset: str = "fashion_mnist", root: str | None = None, epochs: int = 6, seed: int = 0,
                    batch: int = 128, lr: float = 2e-3, verbose: bool = True, max_train: int | None = None,
                    device="cpu") -> tuple[EvaluatorNet, dict]:
    """Train the evaluator deterministically on the full training split; returns (net, info)."""
    from .data import DATASETS, ContinualData

    spec = DATASETS[dataset]
    classes = list(range(spec.num_classes))
    data = ContinualData(dataset, [tuple(classes)], root)
    x, y = data.train(classes)
    if max_train is not None:
        x, y = x[:max_train], y[:max_train]
    xt, yt = data.test(classes)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = EvaluatorNet(spec.channels, spec.num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    autocast = autocast_for(torch.device(device), "auto")
    t0 = time.perf_counter()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            xb = x[idx].to(device)
            # light augmentation: random shifts by up to 2 pixels, from the seeded generator
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            with autocast():
                loss = F.cross_entropy(net(xb).float(), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if verbose:
            acc = evaluator_accuracy(net, xt, yt)
            print(f"evaluator epoch {ep + 1}/{epochs}: loss {loss.item():.3f}, test accuracy {acc:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    net.eval()
    info = {"dataset": dataset, "test_accuracy": evaluator_accuracy(net, xt, yt), "train_s": time.perf_counter() - t0,
            "epochs": epochs, "seed": seed, "train_images": len(x), "preprocess": PREPROCESS_VERSION}
    return net.cpu(), info


@torch.no_grad()
def evaluator_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    dev = next(net.parameters()).device
    correct = sum((net(x[i:i + 2000].to(dev)).argmax(1).cpu() == y[i:i + 2000]).sum().item()
                  for i in range(0, len(x), 2000))
    net.train()
    return correct / max(1, len(x))


def save_evaluator(net: EvaluatorNet, info: dict, directory: Path | None = None) -> Path:
    """Save under a name carrying the SHA-256 of the weights file: ``<tag>-evaluator-<sha16>.pt``."""
    directory = Path(directory or cache_dir() / "evaluator")
    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "channels": net.body[0].in_channels,
                "num_classes": net.head[-1].out_features}, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    tag = TAGS.get(info["dataset"], info["dataset"])
    path = directory / f"{tag}-evaluator-{sha[:16]}.pt"
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps({**info, "sha256": sha}, indent=1).encode())
    return path


def load_evaluator(path: Path, device="cpu") -> Evaluator:
    path = Path(path)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if f"-evaluator-{sha[:16]}" not in path.name:
        raise ValueError(f"{path}: its SHA-256 ({sha[:16]}...) does not match its name; the file is damaged. "
                         "Delete it and the evaluator will be trained again")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = EvaluatorNet(state["channels"], state["num_classes"])
    net.load_state_dict(state["net"])
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    dataset = meta.get("dataset") or {v: k for k, v in TAGS.items()}.get(path.name.split("-evaluator-")[0], "?")
    return Evaluator(net.to(device).eval(), dataset, sha, meta)


def find_evaluator(dataset: str = "fashion_mnist", directory: Path | None = None, sha: str | None = None) -> Path | None:
    """The cached evaluator of ``dataset`` whose weights have this SHA-256 (its first 16 hex digits suffice);
    without ``sha``, the newest one."""
    directory = Path(directory or cache_dir() / "evaluator")
    tag = TAGS.get(dataset, dataset)
    found = sorted(directory.glob(f"{tag}-evaluator-{sha[:16] if sha else ''}*.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# The evaluator's weights depend on the CPU that trained it: training runs under bf16 autocast, whose kernels
# differ between CPUs with AMX and without (measured: docs/results/evaluator_portability/), so two machines
# train different evaluators and their FIDs do not compare exactly. Every metric records the SHA-256 of the
# evaluator that made it; a run keeps the evaluator of its first evaluation, and reports say which they used.
def get_evaluator(dataset: str = "fashion_mnist", device="cpu", root: str | None = None,
                  sha: str | None = None) -> Evaluator:
    """The cached evaluator for ``dataset``; trained (once, with a message) when there is none.

    ``sha``: the one that scored a run's earlier tasks. It is used when it is in the cache; otherwise a warning
    says that the run's later FIDs come from another evaluator and how to bring the first one back."""
    if sha:
        path = find_evaluator(dataset, sha=sha)
        if path is not None:
            return load_evaluator(path, device)
        print(f"warning: this run was scored so far by the {dataset} evaluator {sha[:16]}, which is not "
              f"in {cache_dir() / 'evaluator'}; another evaluator scores it now, and FIDs from two evaluators "
              "do not compare exactly (each metric row records its evaluator_sha256). To keep one "
              f"evaluator, copy the file *-evaluator-{sha[:16]}.pt (and its .json) from the machine that made it "
              "into that folder before resuming", file=sys.stderr)
    path = find_evaluator(dataset)
    if path is not None:
        try:
            return load_evaluator(path, device)
        except ValueError as e:
            print(f"warning: {e}", file=sys.stderr)
    where = cache_dir() / "evaluator"
    print(f"no {dataset} evaluator in {where}: training one now (deterministic, a few minutes on a CPU, "
          "done once; `cldiff evaluator train` does the same ahead of time)", file=sys.stderr)
    net, info = train_evaluator(dataset, root)
    path = save_evaluator(net, info)
    print(f"evaluator saved: {path} (test accuracy {info['test_accuracy']:.4f})", file=sys.stderr)
    return load_evaluator(path, device)


# --------------------------------------------------------------------------- metrics


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D), float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if len(feats) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(feats)}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64.

    tr((S1 S2)^(1/2)) is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner
    matrix is symmetric PSD, so both roots come from eigh and stay real and
    stable even for singular covariances (Dowson & Landau 1982).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = _psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def class_histogram(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Normalised histogram (num_classes,) of integer labels."""
    h = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    return h / max(h.sum(), 1.0)


def kld(p_true: np.ndarray, p_pred: np.ndarray, eps: float = 1e-8) -> float:
    """KL(p_true || p_pred) = sum p_true log(p_true / p_pred), with eps added to both (docs/protocol.md §4)."""
    p, q = np.asarray(p_true, np.float64) + eps, np.asarray(p_pred, np.float64) + eps
    return float(np.sum(p * np.log(p / q)))


def ard(p_true: np.ndarray, p_pred: np.ndarray) -> float:
    """Absolute ratio difference: 0.5 sum |p_true - p_pred| (total variation)."""
    return float(0.5 * np.abs(np.asarray(p_true, np.float64) - np.asarray(p_pred, np.float64)).sum())


def real_stats(evaluator: Evaluator, dataset: str, split: str, classes, root=None, data=None, image_size: int = 32):
    """(mu, sigma, label histogram) of real images, cached by extractor, data set, split, classes, preprocessing."""
    classes = sorted(int(c) for c in classes)
    key = json.dumps([evaluator.sha256, dataset, split, classes, image_size, PREPROCESS_VERSION])
    fname = cache_dir() / "fid_stats" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")
    if fname.exists():
        z = np.load(fname)
        return z["mu"], z["sigma"], z["hist"]
    if data is None:
        from .data import ContinualData
        data = ContinualData(dataset, [tuple(classes)], root, image_size=image_size)
    x, y = data.test(classes) if split == "test" else data.train(classes)
    feats, _ = evaluator.run(x)
    mu, sigma = feature_stats(feats)
    hist = class_histogram(y.numpy(), evaluator.net.head[-1].out_features)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, hist=hist, key=np.array(key))
    atomic_write_bytes(fname, buf.getvalue())
    return mu, sigma, hist


def evaluate_task(model, schedule, data, k: int, ecfg, evaluator: Evaluator, device, autocast, env=None) -> dict | None:
    """The metrics after task k: FID vs the test images of the classes seen so far, KLD, ARD, histogram, and
    the per-class FIDs (:func:`score_features`).

    A class-conditional model is asked for the seen classes in equal shares (in a fixed cycle), with
    classifier-free guidance ``ecfg.guidance``. With several ranks (``env``, cldiff.dist) the samples are split
    across ranks, each rank computes its features and predicted classes, and rank 0 gathers them and returns
    the metrics (the others None).
    """
    seen = data.seen_classes(k)
    shape = (data.spec.channels, data.image_size, data.image_size)
    labels = balanced_labels(sorted(seen), ecfg.n_samples) if getattr(model, "conditional", False) else None
    gen_args = (model, schedule, ecfg.n_samples, ecfg.steps, ecfg.eta, ecfg.seed, ecfg.batch_size, device, autocast,
                shape)
    if env is None or not env.active:
        samples = generate(*gen_args, labels=labels, guidance=ecfg.guidance)
        return score_samples(samples, evaluator, data.spec.name, seen, data=data, labels=labels)
    idx, samples = generate(*gen_args, shard=(env.rank, env.world), labels=labels, guidance=ecfg.guidance)
    feats, preds = evaluator.run(samples)
    parts = env.gather_objects((idx.numpy(), feats, preds))
    if not env.main:
        return None
    order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
    feats = np.concatenate([p[1] for p in parts])[order]
    preds = np.concatenate([p[2] for p in parts])[order]
    out = score_features(feats, preds, evaluator, data.spec.name, seen, data=data, labels=labels)
    out["ranks"] = env.world
    return out


def score_samples(samples: torch.Tensor, evaluator: Evaluator, dataset: str, classes, data=None,
                  labels=None) -> dict:
    feats, preds = evaluator.run(samples)
    return score_features(feats, preds, evaluator, dataset, classes, data=data, labels=labels)


# A class's FID needs a covariance of its samples' features; classes with fewer samples than this count as
# missing (their FID is not computed). FID's small-sample bias grows as the count falls: per-class FIDs of
# classes with few samples read high.
MIN_CLASS_SAMPLES = 10


def score_features(feats: np.ndarray, preds: np.ndarray, evaluator: Evaluator, dataset: str, classes,
                   data=None, labels=None) -> dict:
    """FID, KLD and ARD of generated images given their evaluator features and predicted classes.

    Also per class c of ``classes``: the FID of the samples of class c against the test images of class c
    (``class_fid``), their mean over the classes that have samples (``class_fid_mean``) and the number that
    have fewer than MIN_CLASS_SAMPLES (``classes_missing``). A sample's class is its label when ``labels`` are
    given (a conditional model's requested classes; then ``label_acc``, the share of samples the evaluator
    puts in the class asked for, is reported too, and ``label_acc_class``, that share among the samples asked
    for each class c, None for a class asked for by no sample), else the evaluator's predicted class. With
    labels, ``class_fid_pred`` and ``class_fid_pred_mean`` are the same figures with the samples grouped by the
    evaluator's predicted class, as an unconditional model's are: the like-for-like comparison between the two
    kinds of model (grouped by label, a sample drawn as another class counts against the class asked for).
    """
    # the real statistics are always those of the 32x32 test images (a 28x28 run's data, resized like all data)
    data = data.at_size(EVAL_SIZE) if data is not None else None
    mu_r, sig_r, p_true = real_stats(evaluator, dataset, "test", classes, data=data)
    mu_g, sig_g = feature_stats(feats)
    p_pred = class_histogram(preds, len(p_true))
    out = {evaluator.fid_key: frechet_distance(mu_g, sig_g, mu_r, sig_r), "kld": kld(p_true, p_pred),
           "ard": ard(p_true, p_pred), "hist_pred": p_pred.round(6).tolist(), "hist_true": p_true.round(6).tolist(),
           "n_samples": len(feats), "seen_classes": sorted(int(c) for c in classes),
           "evaluator_sha256": evaluator.sha256[:16]}
    group = np.asarray(labels) if labels is not None else np.asarray(preds)
    per, mean = _class_fids(feats, group, evaluator, dataset, classes, data)
    out.update({"class_fid": per, "class_fid_mean": mean, "classes_missing": sum(v is None for v in per.values()),
                "class_source": "label" if labels is not None else "predicted"})
    if labels is not None:
        out["class_fid_pred"], out["class_fid_pred_mean"] = _class_fids(feats, np.asarray(preds), evaluator,
                                                                        dataset, classes, data)
        hit = np.asarray(preds) == group  # group: the labels asked for
        out["label_acc"] = float(hit.mean())
        out["label_acc_class"] = {str(c): float(hit[group == c].mean()) if (group == c).any() else None
                                  for c in sorted(int(c) for c in classes)}
    return out


def _class_fids(feats: np.ndarray, group: np.ndarray, evaluator: Evaluator, dataset: str, classes,
                data) -> tuple[dict, float | None]:
    """Per class c of ``classes``: the FID of the samples whose group is c against the test images of class c
    (None below MIN_CLASS_SAMPLES samples), and the mean over the classes scored (None if none is)."""
    per = {}
    for c in sorted(int(c) for c in classes):
        m = group == c
        if m.sum() < MIN_CLASS_SAMPLES:
            per[str(c)] = None
            continue
        mu_c, sig_c, _ = real_stats(evaluator, dataset, "test", [c], data=data)
        per[str(c)] = frechet_distance(*feature_stats(feats[m]), mu_c, sig_c)
    have = [v for v in per.values() if v is not None]
    return per, float(np.mean(have)) if have else None


def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights_path: str | Path) -> float:
    """Inception-v3 FID (torchmetrics) from a *local* weights file; never downloads.

    real, fake: (N, C, H, W) in [-1, 1]. Only for users who have the FID
    Inception weights (pt_inception-2015-12-05-6726825d.pth, as used by
    pytorch-fid and torch-fidelity) on disk.
    """
    p = Path(weights_path)
    if not p.is_file():
        raise ValueError(f"Inception weights {p}: no such file. cldiff never downloads weights; pass the local "
                         "file of the FID Inception network (pt_inception-2015-12-05-6726825d.pth), or use our "
                         "evaluator FID without --inception-weights")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise ValueError("Inception FID needs torchmetrics and torch-fidelity, which cldiff does not install by "
                         "default: pip install torchmetrics torch-fidelity (check that it keeps your torch)") from None
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(p))

    def rgb_u8(x):
        u = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return u.repeat(1, 3, 1, 1) if u.shape[1] == 1 else u

    for i in range(0, len(real), 500):
        metric.update(rgb_u8(real[i:i + 500]), real=True)
    for i in range(0, len(fake), 500):
        metric.update(rgb_u8(fake[i:i + 500]), real=False)
    return float(metric.compute())


# --------------------------------------------------------------------------- image sets for `cldiff fid`
