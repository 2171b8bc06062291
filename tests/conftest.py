"""Shared fixtures: synthetic IDX files, an isolated cache, a tiny evaluator."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cldiff.data import FASHION_MNIST, find_dataset_dir, synthetic_dataset, write_idx

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N (scripts/test.sh): N workers share the cores, so each computes on one thread, and so do the
    # processes its tests start (torch reads OMP_NUM_THREADS; a test's train.threads still wins). Two processes
    # with several OpenMP threads each on the same cores slow each other many times over.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def real_fmnist_dir() -> Path | None:
    try:
        return find_dataset_dir(FASHION_MNIST, None)
    except Exception:
        return None


needs_real_data = pytest.mark.skipif(real_fmnist_dir() is None, reason="Fashion-MNIST files not installed "
                                     "(apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Never touch the user's cache from a test.
    monkeypatch.setenv("CLDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # no busy-cores measurement (0.3 s) at the start of every test run; test_sysmem tests it
    monkeypatch.setenv("CLDIFF_BUSY_CHECK", "0")


def write_fake_fmnist(folder: Path, compress: bool = True, n_train_per_class=60, n_test_per_class=20) -> Path:
    """The four Fashion-MNIST IDX files, filled with the synthetic set (small; checksums do not match)."""
    folder.mkdir(parents=True, exist_ok=True)
    tx, ty, vx, vy = synthetic_dataset(n_train_per_class, n_test_per_class)
    for key, arr in (("train_images", tx), ("train_labels", ty), ("test_images", vx), ("test_labels", vy)):
        write_idx(folder / FASHION_MNIST.files[key][0], arr, compress=compress)
    return folder


@pytest.fixture
def fake_fmnist(tmp_path) -> Path:
    return write_fake_fmnist(tmp_path / "fmnist")


@pytest.fixture(scope="session")
def synthetic_evaluator():
    """A small evaluator on the synthetic set (seconds to train)."""
    from cldiff.evaluate import Evaluator, train_evaluator

    net, info = train_evaluator("synthetic", epochs=2, verbose=False)
    return Evaluator(net.eval(), "synthetic", "0" * 64, info)


def step_context(k=1, b=4, seed=0):
    """A StepContext on random real images: k, (B, 1, 32, 32) in [-1, 1], its own seeded generator."""
    from cldiff.model import NoiseSchedule
    from cldiff.strategies import StepContext
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 1, 32, 32) * 2 - 1
    t = s.sample_timesteps(b, g, "cpu")
    eps = torch.randn(x0.shape, generator=g)
    return StepContext(k, x0, t, eps, s.add_noise(x0, t, eps), s, g)


def smoke_overrides(data_root: Path) -> list[str]:
    return [f"data.root={data_root}", "data.verify=false"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` has not ended (from /proc): a zombie that nobody reaps has ended too."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc), sorted."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return sorted(out)
