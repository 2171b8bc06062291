import gzip

import numpy as np
import pytest
import torch

from cldiff.data import (FASHION_MNIST, PAPER_ORDERS, ContinualData, DataError, find_dataset_dir, load_idx_dataset,
                         parse_idx, resolve_class_order, to_model_range, to_uint8, write_idx)
from cldiff.data import _load_file

from conftest import needs_real_data, write_fake_fmnist


def test_idx_roundtrip_plain_and_gzip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for compress in (False, True):
        p = write_idx(tmp_path / f"x{compress}-idx3-ubyte", arr, compress)
        raw = gzip.open(p).read() if compress else p.read_bytes()
        np.testing.assert_array_equal(parse_idx(raw, p), arr)


def test_truncated_and_non_idx_files_are_named(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    p = write_idx(tmp_path / "a-idx3-ubyte", arr)
    raw = p.read_bytes()
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:-10], p)
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04" + raw[4:], p)
    bad_gz = tmp_path / "b-idx3-ubyte.gz"
    bad_gz.write_bytes(gzip.compress(raw)[:500])
    with pytest.raises(DataError, match="b-idx3-ubyte.gz"):
        _load_file(str(bad_gz), None, None)


def test_checksum_failure_gives_the_clear_error(tmp_path):
    # right size (60,008 bytes) but not the official labels: only the SHA-256 can tell
    d = write_fake_fmnist(tmp_path / "d", compress=False)
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(60000, np.uint8))
    name, size, sha = FASHION_MNIST.files["train_labels"]
    with pytest.raises(DataError) as e:
        _load_file(str(d / name), size, sha)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and "SHA-256" in msg and "fetch it again" in msg
    # and the size check catches the small synthetic images file
    with pytest.raises(DataError, match="bytes after decompression"):
        load_idx_dataset(FASHION_MNIST, str(d), verify=True)


def test_missing_data_lists_places_and_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv("CLDIFF_DATA", raising=False)
    spec = type(FASHION_MNIST)(**{**FASHION_MNIST.__dict__, "system_dirs": (str(tmp_path / "nowhere"),)})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError) as e:
        find_dataset_dir(spec, str(tmp_path / "mine"))
    msg = str(e.value)
    assert str(tmp_path / "mine") in msg and "nowhere" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_search_order_root_env_torchvision(tmp_path, monkeypatch):
    a = write_fake_fmnist(tmp_path / "a")
    tv = write_fake_fmnist(tmp_path / "tv" / "FashionMNIST" / "raw", compress=False)
    monkeypatch.setenv("CLDIFF_DATA", str(tmp_path / "tv"))
    assert find_dataset_dir(FASHION_MNIST, str(a)) == a  # data.root first
    assert find_dataset_dir(FASHION_MNIST, None) == tv  # then $CLDIFF_DATA, torchvision layout


def test_paper_class_orders():
    assert resolve_class_order("paper", 42, 5, 2, 10) == [(2, 6), (1, 8), (4, 5), (0, 9), (3, 7)]
    assert resolve_class_order("paper", 69, 5, 2, 10)[0] == (0, 2)
    assert resolve_class_order("paper", 1714, 5, 2, 10)[-1] == (9, 5)
    for seed, order in PAPER_ORDERS.items():
        assert sorted(c for t in order for c in t) == list(range(10))
    assert resolve_class_order("sorted", 0, 3, 2, 10) == [(0, 1), (2, 3), (4, 5)]
    with pytest.raises(ValueError, match="seeds"):
        resolve_class_order("paper", 7, 5, 2, 10)
    with pytest.raises(ValueError, match="partition"):
        resolve_class_order([[0, 1], [1, 2]], 0, 2, 2, 10)
    with pytest.raises(ValueError, match="0..9"):
        resolve_class_order([[0, 10]], 0, 1, 2, 10)


def test_pixel_conversion_range_and_size():
    u8 = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8).repeat(1, 14, 14)  # (1, 28, 28)
    x = to_model_range(u8)
    assert x.shape == (1, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    flat = to_model_range(torch.full((2, 28, 28), 255, dtype=torch.uint8))
    assert torch.allclose(flat, torch.ones_like(flat))  # white stays exactly +1 after resizing
    assert to_model_range(torch.zeros((1, 28, 28), dtype=torch.uint8)).eq(-1).all()
    with pytest.raises(TypeError):
        to_model_range(torch.zeros((1, 28, 28)))  # floats: no guessing of the range
    back = to_uint8(to_model_range(torch.full((1, 32, 32), 77, dtype=torch.uint8)))
    assert back.shape == (1, 32, 32, 1) and int(back[0, 0, 0, 0]) == 77


def test_task_split_selects_the_right_classes(fake_fmnist):
    d = ContinualData("fashion_mnist", [(2, 6), (1, 8)], str(fake_fmnist), verify=False)
    x, y = d.train([2, 6])
    assert set(y.tolist()) == {2, 6} and len(x) == 120 and x.shape[1:] == (1, 32, 32)
    assert d.seen_classes(1) == [2, 6, 1, 8]
    xt, yt = d.test([1])
    assert set(yt.tolist()) == {1} and len(xt) == 20


@needs_real_data
def test_real_fashion_mnist_verifies_and_splits():
    d = ContinualData("fashion_mnist", resolve_class_order("paper", 42, 5, 2, 10))
    x, y = d.train(d.tasks[0])
    assert len(x) == 12000 and set(y.tolist()) == {2, 6}
    xt, _ = d.test(d.tasks[0])
    assert len(xt) == 2000
    assert -1.0 <= x.min() < -0.99 and 0.99 < x.max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "not_idx", "missing", "checksum"])
def test_cli_broken_data_is_one_line_error(tmp_path, damage, monkeypatch):
    import subprocess
    import sys
    from conftest import CONFIGS
    d = write_fake_fmnist(tmp_path / "d", compress=False)
    f = d / "train-images-idx3-ubyte"
    verify = "false"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "not_idx":
        f.write_bytes(b"<html>not found</html>" * 10)
    elif damage == "missing":
        f.unlink()
    else:
        verify = "true"
    env = {**__import__("os").environ, "HOME": str(tmp_path), "CLDIFF_DATA": ""}
    r = subprocess.run([sys.executable, "-m", "cldiff", "train", "--config", str(CONFIGS / "split_fmnist" / "smoke.yaml"),
                        "--out", str(tmp_path / "r"), "--set", f"data.root={d}", "--set", f"data.verify={verify}",
                        "--set", "data.dataset=fashion_mnist"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    if damage != "missing":
        assert "train-images-idx3-ubyte" in lines[0] and ("fetch it again" in lines[0] or "expected the" in lines[0])
    else:
        assert "not found" in lines[0] and "missing: train-images-idx3-ubyte" in lines[0]


def test_mnist_and_cifar10_from_local_files(tmp_path):
    import pickle
    from cldiff.data import CIFAR10, MNIST, load_dataset
    # MNIST: same IDX reader and discovery, torchvision layout
    write_fake_fmnist(tmp_path / "m" / "MNIST" / "raw")
    tx, ty, vx, vy = load_dataset(MNIST, str(tmp_path / "m"), verify=False)
    assert tx.shape[1:] == (28, 28) and set(ty.tolist()) == set(range(10))
    with pytest.raises(DataError, match="bytes after decompression"):
        load_dataset(MNIST, str(tmp_path / "m"), verify=True)  # sizes are still checked
    # CIFAR-10 python batches
    d = tmp_path / "c" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (d / name).write_bytes(pickle.dumps(batch))
    tx, ty, vx, vy = load_dataset(CIFAR10, str(tmp_path / "c"))
    assert tx.shape == (100, 3, 32, 32) and vx.shape == (20, 3, 32, 32) and ty.dtype == np.uint8
    data = ContinualData("cifar10", [(0, 1)], str(tmp_path / "c"))
    x, y = data.train([0, 1])
    assert x.shape == (20, 3, 32, 32) and -1 <= x.min() and x.max() <= 1
    # a pickle that tries to run code is refused
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="not a CIFAR-10"):
        load_dataset(CIFAR10, str(tmp_path / "c"))
