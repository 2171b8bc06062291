"""Datasets, task splits and the one pixel conversion.

Pixel convention (the only one in cldiff): models see float images in [-1, 1],
shape (N, C, S, S). :func:`to_model_range` converts uint8 images to it and
:func:`to_uint8` converts back; nothing else in the package rescales pixels.
"""
from __future__ import annotations

import gzip
import math
import hashlib
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class DataError(RuntimeError):
    """A data problem the user can fix (missing, truncated or corrupt files)."""


# --------------------------------------------------------------------------- specs

SPLIT_FILES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    channels: int
    # key -> (file name without .gz, uncompressed size in bytes, SHA-256 of the uncompressed bytes)
    files: dict = field(default_factory=dict)
    torchvision_folder: str = ""  # where torchvision keeps the files under its root
    system_dirs: tuple = ()
    howto: str = ""
    loader: str = "idx"  # idx | cifar_pickle
    class_names: tuple = ()  # what each label means, for reports


FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    class_names=("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"),
    num_classes=10,
    channels=1,
    # Checksums of the *decompressed* IDX bytes, so gzip, plain and recompressed
    # copies (Debian's package recompresses) all verify against the same value.
    files={
        "train_images": ("train-images-idx3-ubyte", 47040016,
                         "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train_labels": ("train-labels-idx1-ubyte", 60008,
                         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "test_images": ("t10k-images-idx3-ubyte", 7840016,
                        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "test_labels": ("t10k-labels-idx1-ubyte", 10008,
                        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    torchvision_folder="FashionMNIST/raw",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    howto=(
        "get Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
        "/usr/share/datasets/fashion-mnist), or download the four *-ubyte.gz files from "
        "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder and pass it with "
        "`--set data.root=FOLDER` or `export CLDIFF_DATA=FOLDER`"
    ),
)

MNIST = DatasetSpec(
    name="mnist",
    class_names=tuple(str(d) for d in range(10)),
    num_classes=10,
    channels=1,
    # Sizes are checked; no SHA-256 is pinned for MNIST yet (None), so a same-size damaged copy is not caught.
    files={
        "train_images": ("train-images-idx3-ubyte", 47040016, None),
        "train_labels": ("train-labels-idx1-ubyte", 60008, None),
        "test_images": ("t10k-images-idx3-ubyte", 7840016, None),
        "test_labels": ("t10k-labels-idx1-ubyte", 10008, None),
    },
    torchvision_folder="MNIST/raw",
    howto=("put the four MNIST *-ubyte(.gz) files (yann.lecun.com/exdb/mnist or a mirror) into a folder and pass it "
           "with `--set data.root=FOLDER` or `export CLDIFF_DATA=FOLDER`"),
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    num_classes=10,
    channels=3,
    # the python batches: data_batch_1..5 and test_batch, each a pickled dict of 10,000 images
    files={**{f"train_{i}": (f"data_batch_{i}", None, None) for i in range(1, 6)},
           "test": ("test_batch", None, None)},
    torchvision_folder="cifar-10-batches-py",
    howto=("extract cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) and pass the folder that holds "
           "cifar-10-batches-py with `--set data.root=FOLDER` or `export CLDIFF_DATA=FOLDER`"),
    loader="cifar_pickle",
)

# A procedurally generated 10-class set (oriented bars), for tests and health
# checks on machines without any data files. Not a benchmark.
SYNTHETIC = DatasetSpec(name="synthetic", num_classes=10, channels=1)

DATASETS = {"fashion_mnist": FASHION_MNIST, "mnist": MNIST, "cifar10": CIFAR10, "synthetic": SYNTHETIC}

# The class orders of the paper's runs (docs/protocol.md §1), by seed.
PAPER_ORDERS = {
    42: [(2, 6), (1, 8), (4, 5), (0, 9), (3, 7)],
    69: [(0, 2), (3, 5), (1, 4), (6, 9), (8, 7)],
    1714: [(7, 3), (8, 0), (1, 4), (6, 2), (9, 5)],
}


def resolve_class_order(order, seed: int, num_tasks: int, classes_per_task: int,
                        num_classes: int) -> list[tuple[int, ...]]:
    """The tasks as tuples of class ids; raises ValueError with the fix."""
    if order == "paper":
        if seed not in PAPER_ORDERS:
            raise ValueError(
                f"'paper' orders exist for seeds {sorted(PAPER_ORDERS)}, got seed {seed}; "
                "use class_order: random (a seeded permutation) or an explicit list")
        tasks = [tuple(t) for t in PAPER_ORDERS[seed]]
        if classes_per_task != 2:
            raise ValueError(f"'paper' orders have 2 classes per task, got classes_per_task={classes_per_task}")
    elif order in ("sorted", "random"):
        perm = list(range(num_classes))
        if order == "random":
            perm = [int(c) for c in np.random.default_rng(seed).permutation(num_classes)]
        n = num_classes // classes_per_task
        tasks = [tuple(perm[i * classes_per_task:(i + 1) * classes_per_task]) for i in range(n)]
    elif isinstance(order, list):
        tasks = []
        for i, t in enumerate(order):
            if not isinstance(t, list) or not t or not all(isinstance(c, int) and not isinstance(c, bool) for c in t):
                raise ValueError(f"task {i} must be a non-empty list of class ids, got {t!r}")
            tasks.append(tuple(t))
        flat = [c for t in tasks for c in t]
        bad = [c for c in flat if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"class ids must be in 0..{num_classes - 1}, got {bad}")
        dup = sorted({c for c in flat if flat.count(c) > 1})
        if dup:
            raise ValueError(f"the tasks must not share classes (a partition), but {dup} appear more than once")
    else:
        raise ValueError(f"must be 'paper', 'sorted', 'random' or a list of class lists, got {order!r}")
    if num_tasks > len(tasks):
        raise ValueError(f"asks for {num_tasks} tasks but the order has only {len(tasks)}")
    return tasks[:num_tasks]


# --------------------------------------------------------------------------- IDX files


def _candidate_dirs(spec: DatasetSpec, root: str | None) -> list[Path]:
    out: list[Path] = []
    bases = []
    if root:
        bases.append(Path(root).expanduser())
    if os.environ.get("CLDIFF_DATA"):
        bases.append(Path(os.environ["CLDIFF_DATA"]).expanduser())
    for b in bases:
        out += [b, b / spec.torchvision_folder, b / spec.name]
    out += [Path(d) for d in spec.system_dirs]
    for b in (Path.cwd() / "data", Path.home() / "data", Path.home() / ".cache" / "cldiff" / "data"):
        out.append(b / spec.torchvision_folder)
    return out


def _file_in(d: Path, name: str) -> Path | None:
    for cand in (d / name, d / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


def find_dataset_dir(spec: DatasetSpec, root: str | None = None) -> Path:
    """The first folder holding all four IDX files (plain or .gz), in search order."""
    searched = _candidate_dirs(spec, root)
    for d in searched:
        have = [k for k in spec.files if _file_in(d, spec.files[k][0])]
        if len(have) == len(spec.files):
            return d
        if have:  # an incomplete copy is reported, not silently skipped for another one
            missing = [spec.files[k][0] for k in spec.files if k not in have]
            raise DataError(f"{spec.name} not found complete: {d} holds only some of the files (missing: "
                            f"{', '.join(missing)}). To fix: {spec.howto}")
    raise DataError(
        f"{spec.name} not found. Searched: {', '.join(str(d) for d in searched)}. To fix: {spec.howto}")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); the file is damaged: delete it and fetch it again") from None


def parse_idx(raw: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (uint8 payload) into an array of the shape the header gives."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); expected the *-ubyte files of the data set")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: IDX type 0x{dtype_code:02x} is not unsigned bytes; expected *-ubyte files")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; the file is damaged: fetch it again")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    n = int(np.prod(dims))
    if len(raw) != header + n:
        raise DataError(f"{path}: IDX payload has {len(raw) - header} bytes, the header promises {n}; "
                        "the file is truncated or damaged: fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@lru_cache(maxsize=8)
def _load_file(path: str, size: int | None, sha: str | None) -> np.ndarray:
    p = Path(path)
    raw = _read_bytes(p)
    if size is not None and len(raw) != size:
        raise DataError(f"{p}: {len(raw)} bytes after decompression, expected {size}; the file is truncated "
                        "or is not the official one: fetch it again (or set data.verify: false for a custom copy)")
    if sha is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha:
            raise DataError(f"{p}: SHA-256 {digest[:16]}... does not match the official {sha[:16]}...; the file "
                            "is corrupt or modified: fetch it again (or set data.verify: false for a custom copy)")
    return parse_idx(raw, p)


class _ArrayOnlyUnpickler(__import__("pickle").Unpickler):
    """Unpickles CIFAR-10 batches: dicts, lists, bytes and numpy arrays only; never arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"CIFAR-10 batch refers to {module}.{name}; not a CIFAR-10 python batch")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import io
    import pickle
    try:
        d = _ArrayOnlyUnpickler(io.BytesIO(_read_bytes(path)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({e}); fetch it again") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{path}: not a CIFAR-10 python batch (no data/labels); fetch it again")
    x, y = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{path}: data has shape {x.shape}, expected (N, 3072) with N labels; fetch it again")
    return x.reshape(-1, 3, 32, 32), y.astype(np.uint8)


def load_dataset(spec: DatasetSpec, root: str | None = None, verify: bool = True):
    """(train_x, train_y, test_x, test_y) as uint8 arrays; x is (N, H, W) or (N, C, H, W)."""
    if spec.loader == "idx":
        return load_idx_dataset(spec, root, verify)
    d = find_dataset_dir(spec, root)
    parts = [_load_cifar_batch(_file_in(d, spec.files[f"train_{i}"][0])) for i in range(1, 6)]
    vx, vy = _load_cifar_batch(_file_in(d, spec.files["test"][0]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), vx, vy


def load_idx_dataset(spec: DatasetSpec, root: str | None = None, verify: bool = True):
    """(train_x, train_y, test_x, test_y) as uint8 arrays; x has shape (N, 28, 28)."""
    d = find_dataset_dir(spec, root)
    arrays = []
    for key in SPLIT_FILES:
        name, size, sha = spec.files[key]
        arrays.append(_load_file(str(_file_in(d, name)), size if verify else None, sha if verify else None))
    tx, ty, vx, vy = arrays
    for x, y, split in ((tx, ty, "train"), (vx, vy, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{d}: {split} images {x.shape} and labels {y.shape} do not match")
    return tx, ty, vx, vy


def synthetic_dataset(n_train_per_class: int = 300, n_test_per_class: int = 60, seed: int = 0):
    """Ten classes of oriented, shifted bars at 28x28 (uint8). Deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32) - 13.5

    def make(n_per_class):
        xs, ys = [], []
        for c in range(10):
            ang = np.pi * c / 10 + rng.normal(0, 0.05, n_per_class)
            off = rng.normal(0, 1.5, n_per_class)
            width = 2.0 + (c % 3)
            d = np.abs(np.cos(ang)[:, None, None] * xx + np.sin(ang)[:, None, None] * yy - off[:, None, None])
            img = np.clip(255 * (1 - d / width), 0, 255) + rng.normal(0, 8, (n_per_class, 28, 28))
            xs.append(np.clip(img, 0, 255).astype(np.uint8))
            ys.append(np.full(n_per_class, c, np.uint8))
        return np.concatenate(xs), np.concatenate(ys)

    tx, ty = make(n_train_per_class)
    vx, vy = make(n_test_per_class)
    return tx, ty, vx, vy


def write_idx(path: Path, arr: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (used by tests and by `cldiff` users exporting data)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path = Path(path)
    if compress:
        path = path.with_name(path.name + ".gz") if path.suffix != ".gz" else path
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


# --------------------------------------------------------------------------- pixels


def to_model_range(images: np.ndarray | torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) in [0, 255] -> float32 (N, C, size, size) in [-1, 1].

    Resizing is bilinear with antialiasing (docs/protocol.md §1: 28x28 -> 32x32).
    """
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8:
        raise TypeError(f"to_model_range expects uint8 images in [0, 255], got {x.dtype}")
    x = x.float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C) for saving."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# --------------------------------------------------------------------------- continual splits


class ContinualData:
    """The tasks of a class-incremental split and their images.

    ``tasks[k]`` is a tuple of class ids. Images come back in the model range.
    """

    def __init__(self, dataset: str, tasks: list[tuple[int, ...]], root: str | None = None,
                 verify: bool = True, image_size: int = 32, max_train_per_task: int | None = None):
        self.spec = DATASETS[dataset]
        self.tasks = tasks
        self.image_size = image_size
        self.root, self.verify = root, verify
        self.max_train_per_task = max_train_per_task
        if dataset == "synthetic":
            self.train_x, self.train_y, self.test_x, self.test_y = synthetic_dataset()
        else:
            self.train_x, self.train_y, self.test_x, self.test_y = load_dataset(self.spec, root, verify)

    @classmethod
    def from_config(cls, cfg) -> "ContinualData":
        d = cfg.data
        tasks = resolve_class_order(d.class_order, cfg.seed, d.num_tasks, d.classes_per_task,
                                    DATASETS[d.dataset].num_classes)
        return cls(d.dataset, tasks, d.root, d.verify, d.image_size, d.max_train_per_task)

    def at_size(self, image_size: int) -> "ContinualData":
        """The same images and tasks at another size (shares the loaded arrays; nothing is read again)."""
        if image_size == self.image_size:
            return self
        other = object.__new__(ContinualData)
        other.__dict__.update(self.__dict__)
        other.image_size = image_size
        return other

    def _select(self, x, y, classes, cap=None):
        idx = np.flatnonzero(np.isin(y, np.asarray(classes)))
        if cap is not None and len(idx) > cap:
            # A fixed, class-stratified subset: the first `cap` in a seeded shuffle.
            idx = np.sort(np.random.default_rng(0).permutation(idx)[:cap])
        return to_model_range(x[idx], self.image_size), torch.as_tensor(y[idx].astype(np.int64))

    def train(self, classes) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images of the given classes: (N, C, S, S) in [-1, 1], labels (N,)."""
        cap = None
        if self.max_train_per_task is not None:
            # the cap is per task: a union of tasks (joint) gets the cap per task in it
            per_class = self.max_train_per_task / max(1, len(self.tasks[0]))
            cap = int(round(per_class * len(classes)))
        return self._select(self.train_x, self.train_y, classes, cap)

    def test(self, classes) -> tuple[torch.Tensor, torch.Tensor]:
        """Test images of the given classes: (N, C, S, S) in [-1, 1], labels (N,)."""
        return self._select(self.test_x, self.test_y, classes)

    def seen_classes(self, k: int) -> list[int]:
        return [c for t in self.tasks[: k + 1] for c in t]


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, pad: int = 2) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid (nrow per row; default ~square)."""
    from PIL import Image

    u8 = to_uint8(images)  # (N, H, W, C)
    n, h, w, c = u8.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = u8[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def load_image_set(spec: str, root: str | None = None) -> tuple[torch.Tensor, str | None, list | None]:
    """Images (N, C, 32, 32) in [-1, 1] from a PNG folder, an .npz/.npy array or a data set spec.

    Data set spec: ``fmnist:test:classes=0,1`` (split train|test; classes optional).
    Arrays: uint8 in [0, 255] (N, H, W) / (N, H, W, C) / (N, C, H, W), or float in [-1, 1].
    Returns (images, dataset or None, classes or None).
    """
    names = {"fmnist": "fashion_mnist", "fashion_mnist": "fashion_mnist", "synthetic": "synthetic", "mnist": "mnist",
             "cifar10": "cifar10"}
    head = spec.split(":", 1)[0]
    if head in names and not Path(spec).exists():
        parts = spec.split(":")
        dataset = names[head]
        split = parts[1] if len(parts) > 1 else "test"
        if split not in ("train", "test"):
            raise ValueError(f"{spec!r}: split must be train or test, got {split!r}")
        classes = list(range(DATASETS[dataset].num_classes))
        for p in parts[2:]:
            if p.startswith("classes="):
                try:
                    classes = [int(c) for c in p[len("classes="):].split(",") if c != ""]
                except ValueError:
                    raise ValueError(f"{spec!r}: classes must be comma-separated integers") from None
            else:
                raise ValueError(f"{spec!r}: unknown option {p!r}; expected classes=0,1,...")
        data = ContinualData(dataset, [tuple(classes)], root)
        x, _ = data.test(classes) if split == "test" else data.train(classes)
        return x, dataset, classes
    p = Path(spec)
    if not p.exists():
        raise ValueError(f"{spec!r} is neither a file, a folder nor a data set spec like fmnist:test:classes=0,1")
    if p.is_dir():
        from PIL import Image
        files = sorted(list(p.glob("*.png")) + list(p.glob("*.PNG")))
        if not files:
            raise ValueError(f"{p}: no PNG files in this folder")
        arr = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
        return to_model_range(arr), None, None
    if p.suffix == ".npz":
        z = np.load(p)
        keys = list(z.keys())
        arr = z["images"] if "images" in keys else z[keys[0]]
    elif p.suffix == ".npy":
        arr = np.load(p)
    else:
        raise ValueError(f"{p}: expected a folder of PNGs, an .npz or .npy file")
    if arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.dtype == np.uint8:
        return to_model_range(arr), None, None
    if np.issubdtype(arr.dtype, np.floating):
        if arr.min() < -1.0001 or arr.max() > 1.0001:
            raise ValueError(f"{p}: float images must be in [-1, 1] (got {arr.min():.3g}..{arr.max():.3g}); "
                             "save uint8 in [0, 255] instead")
        x = torch.as_tensor(arr, dtype=torch.float32)
        x = x.unsqueeze(1) if x.ndim == 3 else x
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        return x, None, None
    raise ValueError(f"{p}: unsupported array dtype {arr.dtype}; use uint8 in [0, 255] or float in [-1, 1]")
