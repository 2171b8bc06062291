import json

import numpy as np
import pytest
import scipy.linalg
import torch

from cldiff import evaluate as ev
from cldiff.data import ContinualData
from cldiff.evaluate import (ard, class_histogram, feature_stats, frechet_distance, kld, real_stats, score_samples)

from conftest import needs_real_data


def _scipy_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_frechet_distance_matches_scipy_on_random_data():
    rng = np.random.default_rng(0)
    for dim in (3, 16, 64):
        a = rng.normal(size=(500, dim)) @ rng.normal(size=(dim, dim))
        b = rng.normal(size=(400, dim)) * 1.5 + 0.3
        mine = frechet_distance(*feature_stats(a), *feature_stats(b))
        ref = _scipy_fid(*feature_stats(a), *feature_stats(b))
        assert mine == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_fid_of_a_set_with_itself_is_zero_even_when_singular():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 200))  # fewer samples than dimensions: singular covariance
    assert frechet_distance(*feature_stats(x), *feature_stats(x)) < 1e-6
    y = x + 1.0
    assert frechet_distance(*feature_stats(x), *feature_stats(y)) == pytest.approx(200.0, rel=1e-6)


def test_kld_and_ard_on_hand_computed_histograms():
    p = np.array([0.5, 0.5, 0, 0])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    assert kld(p, q) == pytest.approx(np.log(2), abs=1e-6)  # 2 * 0.5 * log(0.5 / 0.25)
    assert ard(p, q) == pytest.approx(0.5)
    assert kld(p, p) == pytest.approx(0.0, abs=1e-12) and ard(p, p) == 0
    # a class missing from the prediction: the 1e-8 smoothing keeps it finite and large
    assert kld([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0 * np.log((1 + 1e-8) / 1e-8), rel=1e-6)
    np.testing.assert_allclose(class_histogram([0, 0, 1, 3], 4), [0.5, 0.25, 0, 0.25])


def test_fid_small_for_same_classes_large_for_different(synthetic_evaluator, tmp_path):
    data = ContinualData("synthetic", [(0, 1), (5, 6)])
    xa, _ = data.train([0, 1])
    xb, _ = data.train([5, 6])
    m_same = score_samples(xa, synthetic_evaluator, "synthetic", [0, 1], data=data)
    m_diff = score_samples(xb, synthetic_evaluator, "synthetic", [0, 1], data=data)
    fid = synthetic_evaluator.fid_key
    assert fid == "fid_synthetic"
    assert m_same[fid] * 5 < m_diff[fid]
    assert m_same["kld"] < 0.1 < m_diff["kld"]
    assert set(np.flatnonzero(m_same["hist_pred"])) <= {0, 1} or m_same["ard"] < 0.1


def test_real_stats_are_cached_by_key(synthetic_evaluator, monkeypatch):
    data = ContinualData("synthetic", [(0, 1)])
    a = real_stats(synthetic_evaluator, "synthetic", "test", [1, 0], data=data)
    calls = []
    monkeypatch.setattr(synthetic_evaluator, "run", lambda *a, **k: calls.append(1))
    b = real_stats(synthetic_evaluator, "synthetic", "test", [0, 1], data=data)  # same set, other order
    assert not calls and np.array_equal(a[0], b[0])
    with pytest.raises(TypeError):  # another class set is not served from the cache
        real_stats(synthetic_evaluator, "synthetic", "test", [0, 2], data=data)


def test_evaluator_cache_is_reused_not_retrained(monkeypatch):
    from cldiff.evaluate import get_evaluator, save_evaluator, train_evaluator
    net, info = train_evaluator("synthetic", epochs=1, verbose=False, max_train=500)
    path = save_evaluator(net, info)
    assert path.name.startswith("synthetic-evaluator-") and path.parent.name == "evaluator"
    monkeypatch.setattr(ev, "train_evaluator", lambda *a, **k: pytest.fail("retrained"))
    e = get_evaluator("synthetic")
    assert path.name.split("-")[-1][:-3] == e.sha256[:16]
    # a damaged file is detected by its name/hash mismatch
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="damaged"):
        ev.load_evaluator(path)


def test_evaluator_training_is_deterministic():
    from cldiff.evaluate import train_evaluator
    a, _ = train_evaluator("synthetic", epochs=1, verbose=False, max_train=300)
    b, _ = train_evaluator("synthetic", epochs=1, verbose=False, max_train=300)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_image_set_specs(tmp_path):
    from PIL import Image
    from cldiff.data import load_image_set
    x, ds, cls = load_image_set("synthetic:test:classes=0,3")
    assert ds == "synthetic" and cls == [0, 3] and x.shape[1:] == (1, 32, 32)
    arr = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=arr)
    xa, _, _ = load_image_set(str(tmp_path / "a.npz"))
    assert xa.shape == (6, 1, 32, 32) and xa.min() >= -1
    (tmp_path / "pngs").mkdir()
    for i in range(3):
        Image.fromarray(arr[i]).save(tmp_path / "pngs" / f"{i}.png")
    xp, _, _ = load_image_set(str(tmp_path / "pngs"))
    assert torch.allclose(xp, xa[:3])
    np.save(tmp_path / "bad.npy", arr.astype(np.float32))  # floats in [0, 255]: refused, not guessed
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        load_image_set(str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="classes"):
        load_image_set("fmnist:test:classes=a")


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_train_with_eval_writes_metrics_and_csv(fake_fmnist, tmp_path, synthetic_evaluator):
    from cldiff.config import load_config
    from cldiff.train import train
    from conftest import CONFIGS, smoke_overrides
    cfg = load_config(CONFIGS / "split_fmnist" / "smoke.yaml", smoke_overrides(fake_fmnist) +
                      ["eval.enabled=true", "eval.n_samples=40", "eval.steps=2"])
    out = train(cfg, out=str(tmp_path / "r"), progress=False, evaluator=synthetic_evaluator)
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["task"] for e in evals] == [0, 1]
    assert evals[0]["seen_classes"] == [2, 6] and evals[1]["seen_classes"] == [1, 2, 6, 8]
    assert evals[1]["hist_true"][1] == pytest.approx(0.25) and evals[1]["n_samples"] == 40
    rows = (out / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("task,fid_synthetic,kld,ard") and len(rows) == 3


@pytest.mark.slow  # long (tens of seconds), not a process of its own
def test_evaluate_recomputes_a_checkpoint_and_other_steps_leave_the_run_alone(fake_fmnist, tmp_path,
                                                                               synthetic_evaluator, monkeypatch,
                                                                               capsys):
    from cldiff.cli import main
    from cldiff.config import load_config
    from cldiff.train import train
    from conftest import CONFIGS, smoke_overrides
    cfg = load_config(CONFIGS / "split_fmnist" / "smoke.yaml", smoke_overrides(fake_fmnist) +
                      ["eval.enabled=true", "eval.n_samples=40", "eval.steps=2", "data.num_tasks=1"])
    out = train(cfg, out=str(tmp_path / "r"), progress=False, evaluator=synthetic_evaluator)
    monkeypatch.setattr(ev, "get_evaluator", lambda *a, **k: synthetic_evaluator)
    written = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][0]
    csv_before = (out / "eval.csv").read_text()

    def evaluate(*args):
        capsys.readouterr()
        rc = main(["evaluate", str(out), "--task", "0", *args])
        o = capsys.readouterr()
        return rc, (json.loads(o.out.splitlines()[-1]) if rc == 0 else o.err)

    rc, same = evaluate()  # the run's own settings: the figures written at the task's end, recomputed
    assert rc == 0 and same["fid_synthetic"] == pytest.approx(written["fid_synthetic"], rel=1e-6)
    assert same["kld"] == pytest.approx(written["kld"], rel=1e-6)
    rc, other = evaluate("--steps", "5")  # other DDIM steps: other samples, other figures, printed only
    assert rc == 0 and other["fid_synthetic"] != pytest.approx(same["fid_synthetic"], rel=1e-6)
    assert (same["steps"], other["steps"]) == (2, 5) and "guidance" not in other  # unconditional: no guidance
    assert (out / "eval.csv").read_text() == csv_before
    rc, err = evaluate("--steps", "0")
    assert rc == 2 and "--steps 0" in err and "at least 1" in err
    rc, err = evaluate("--guidance", "2")  # guidance needs a class-conditional model
    assert rc == 2 and "unconditional" in err and "model.conditional" in err


@pytest.mark.slow  # long (tens of seconds), not a process of its own
@needs_real_data
def test_real_fid_same_classes_small_different_large():
    from cldiff.evaluate import find_evaluator, load_evaluator
    import os
    path = find_evaluator("fashion_mnist", directory=None)
    home = os.path.expanduser("~/.cache/cldiff/evaluator")
    from pathlib import Path
    cands = sorted(Path(home).glob("fmnist-evaluator-*.pt"))
    if path is None and not cands:
        pytest.skip("no cached Fashion-MNIST evaluator (cldiff evaluator train)")
    e = load_evaluator(path or cands[-1])
    data = ContinualData("fashion_mnist", [(0, 1), (2, 3)])
    tr01, _ = data.train([0, 1])
    tr23, _ = data.train([2, 3])
    same = score_samples(tr01[:2000], e, "fashion_mnist", [0, 1], data=data)["fid_fmnist"]
    diff = score_samples(tr23[:2000], e, "fashion_mnist", [0, 1], data=data)["fid_fmnist"]
    assert same * 10 < diff


@pytest.mark.slow
def test_inception_fid_never_downloads_and_says_so(tmp_path):
    import subprocess
    import sys
    from cldiff.evaluate import inception_fid
    with pytest.raises(ValueError, match="never downloads"):
        inception_fid(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), tmp_path / "missing.pth")
    r = subprocess.run([sys.executable, "-m", "cldiff", "fid", "synthetic:test", "synthetic:train",
                        "--inception-weights", str(tmp_path / "missing.pth")], capture_output=True, text=True)
    assert r.returncode == 2 and "never downloads" in r.stderr and "Traceback" not in r.stderr


def test_generation_batch_changes_neither_the_noise_nor_the_samples():
    """eval.batch_size is only memory and speed: the noise is one fixed stream, drawn batch by batch."""
    import contextlib

    import torch

    from cldiff.model import generate
    from cldiff.model import EpsModel, NoiseSchedule
    torch.manual_seed(0)
    m = EpsModel("tiny").eval()
    s = NoiseSchedule()
    a = generate(m, s, 12, 3, 0.0, 7, 12, torch.device("cpu"), contextlib.nullcontext)
    b = generate(m, s, 12, 3, 0.0, 7, 5, torch.device("cpu"), contextlib.nullcontext)
    c = generate(m, s, 12, 3, 0.0, 8, 12, torch.device("cpu"), contextlib.nullcontext)
    assert (a - b).abs().max() < 1e-4  # float rounding of other batch shapes only
    assert (a - c).abs().max() > 0.1  # another seed: other samples, so the comparison can fail


def test_28px_images_are_scored_like_their_32px_resize(fake_fmnist, synthetic_evaluator):
    """A model trained at data.image_size 28 is evaluated on its samples resized to the evaluator's 32x32, the way
    the data loader resizes real images: the same images at 28 and at 32 get the same features."""
    from cldiff.data import ContinualData
    from cldiff.evaluate import score_samples
    d28 = ContinualData("fashion_mnist", [(2, 6)], str(fake_fmnist), verify=False, image_size=28)
    d32 = ContinualData("fashion_mnist", [(2, 6)], str(fake_fmnist), verify=False, image_size=32)
    x28, _ = d28.train([2, 6])
    x32, _ = d32.train([2, 6])
    assert x28.shape[-1] == 28 and x32.shape[-1] == 32
    f28, p28 = synthetic_evaluator.run(x28)
    f32, p32 = synthetic_evaluator.run(x32)
    np.testing.assert_allclose(f28, f32, atol=1e-4)
    assert (p28 == p32).all()
    a = score_samples(x28, synthetic_evaluator, "fashion_mnist", [2, 6], data=d28)
    b = score_samples(x32, synthetic_evaluator, "fashion_mnist", [2, 6], data=d32)
    assert a["fid_synthetic"] == pytest.approx(b["fid_synthetic"], rel=1e-4)


def test_a_run_is_scored_by_the_evaluator_of_its_earlier_tasks(capsys, monkeypatch, tmp_path):
    # two evaluators in the cache (as after training one on another machine): the one a run started with is
    # found by its SHA even when another is newer; an absent one is named in a warning, and the newest is used
    import os
    import time
    from cldiff.evaluate import find_evaluator, get_evaluator, save_evaluator, train_evaluator
    monkeypatch.setenv("CLDIFF_CACHE", str(tmp_path / "cache"))
    first = save_evaluator(*train_evaluator("synthetic", epochs=1, verbose=False, max_train=300, seed=1))
    second = save_evaluator(*train_evaluator("synthetic", epochs=1, verbose=False, max_train=300, seed=2))
    os.utime(second, (time.time() + 5, time.time() + 5))  # newest, whatever the clock's resolution
    sha1, sha2 = (p.name.split("-")[-1][:-3] for p in (first, second))
    assert sha1 != sha2
    assert find_evaluator("synthetic") == second and find_evaluator("synthetic", sha=sha1) == first
    assert get_evaluator("synthetic", sha=sha1).sha256.startswith(sha1)
    assert "warning" not in capsys.readouterr().err
    e = get_evaluator("synthetic", sha="f" * 16)
    assert e.sha256.startswith(sha2)
    err = capsys.readouterr().err
    assert "ffffffffffffffff" in err and "do not compare" in err and "copy the file" in err
