"""Checkpoints: state dicts plus JSON metadata, written atomically, verified on load.

A checkpoint is two files in ``RUN/checkpoints``:

- ``NAME.pt``: ``torch.save`` of a dict of state dicts and tensors only (loaded
  with ``weights_only=True``; never a pickled module);
- ``NAME.json``: format version, task, step, the SHA-256 of the ``.pt`` file,
  and the resolved config. It is written last, so a checkpoint without its
  JSON (a crash mid-write) is ignored, and the ``.pt`` is verified against the
  recorded hash before it is used.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, damaged, or of another format)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, then rename over ``path``.

    A failure at any point (a full disk included) leaves the old ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_checkpoint(run_dir: Path, name: str, state: dict, meta: dict, keep: int | None = None) -> Path:
    """Save ``state`` (state dicts / tensors) and ``meta`` (JSON-able) as checkpoint ``name``."""
    ckdir = Path(run_dir) / "checkpoints"
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    pt = ckdir / f"{name}.pt"
    atomic_write_bytes(pt, data)
    meta = {"format_version": FORMAT_VERSION, "name": name, "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), **meta}
    atomic_write_bytes(ckdir / f"{name}.json", json.dumps(meta, indent=1, sort_keys=True).encode())
    if keep is not None:
        prune(ckdir, keep)
    return pt


def _order(meta: dict) -> tuple:
    """Progress order: by task, then step; at equal step an end-of-task checkpoint is newer."""
    return (meta.get("task", -1), meta.get("step", -1), bool(meta.get("complete", True)))


def list_checkpoints(run_dir: Path) -> list[dict]:
    """Metadata of every checkpoint with a readable JSON, oldest first (by task, then step)."""
    ckdir = Path(run_dir) / "checkpoints"
    out = []
    for j in ckdir.glob("*.json") if ckdir.is_dir() else []:
        try:
            meta = json.loads(j.read_text())
            meta["path"] = str(j.with_suffix(".pt"))
            out.append(meta)
        except (OSError, json.JSONDecodeError):
            print(f"warning: ignoring unreadable checkpoint metadata {j}", file=sys.stderr)
    return sorted(out, key=_order)


def prune(ckdir: Path, keep: int) -> None:
    """Keep the newest ``keep`` end-of-task checkpoints (task 0's always: runs share it) and only the newest
    mid-task one, if it is newer than every end-of-task checkpoint."""
    metas = list_checkpoints(ckdir.parent)
    complete = [m for m in metas if m.get("complete", True)]
    mid = [m for m in metas if not m.get("complete", True)]
    newest = _order(complete[-1]) if complete else None
    drop = [m for m in complete[:-keep] if m.get("task") != 0] if keep > 0 else []
    drop += mid[:-1]
    if mid and newest is not None and _order(mid[-1]) < newest:
        drop.append(mid[-1])
    for meta in drop:
        for suffix in (".json", ".pt"):  # JSON first: a half-pruned checkpoint is never "found"
            try:
                Path(meta["path"]).with_suffix(suffix).unlink()
            except FileNotFoundError:
                pass


def load_checkpoint_file(pt_path: Path, meta: dict | None = None, map_location="cpu") -> tuple[dict, dict]:
    """Load a ``.pt`` after checking format version and hash; returns (state, meta)."""
    pt_path = Path(pt_path)
    if meta is None:
        j = pt_path.with_suffix(".json")
        if not j.is_file():
            raise CheckpointError(f"{pt_path}: no metadata file {j.name} beside it; not a cldiff checkpoint "
                                  "or an interrupted write")
        try:
            meta = json.loads(j.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{j}: damaged metadata ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{pt_path}: checkpoint format {meta.get('format_version')} is not supported by this "
                              f"cldiff (format {FORMAT_VERSION}); use the cldiff version that wrote it")
    if not pt_path.is_file():
        raise CheckpointError(f"{pt_path}: file missing")
    data = pt_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.get("sha256"):
        raise CheckpointError(f"{pt_path}: checksum mismatch ({len(data)} bytes, expected {meta.get('bytes')}); "
                              "the file is truncated or corrupted")
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    return state, meta


def load_latest(run_dir: Path, map_location="cpu") -> tuple[dict, dict] | None:
    """The newest checkpoint that verifies; damaged ones are reported in one line each and skipped."""
    for meta in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint_file(Path(meta["path"]), meta, map_location)
        except CheckpointError as e:
            print(f"warning: {e}; falling back to the previous checkpoint", file=sys.stderr)
    return None
