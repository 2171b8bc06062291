"""Data-parallel training with torchrun and DDP (gloo on CPU, nccl on GPU).

``torchrun --nproc_per_node=N -m cldiff train ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`setup` reads them. Without
them (a plain ``cldiff train``) everything here is a no-op for one process.

Semantics (the same experiment, spread over N ranks):

- ``train.batch_size`` is the *global* batch: every rank draws the same
  minibatch indices (one data generator, same seed on every rank) and trains
  on its own slice ``idx[rank::N]``; each rank draws its own replay for its
  slice with its own noise (the training generator is seeded per rank), so a
  step sees B real and B replay images in all, as with one process.
- DDP averages the gradients; clipping and Adam then run identically on every
  rank, so the parameters stay identical. The frozen teacher is never wrapped.
- Metrics, sample grids and checkpoints are written by rank 0; checkpoints
  carry every rank's generator state, so a resume with the same N is exact.
- Evaluation samples are split across ranks by batch; features and predicted
  classes are gathered on rank 0, which computes FID, KLD and ARD.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # --------------------------------------------------------------- collectives (no-ops for one process)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def _comm_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the process group torchrun describes; returns the environment and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistEnv(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30))
    return DistEnv(rank, world, local), device


def teardown(env: DistEnv) -> None:
    if env.active and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """The DDP wrapper of ``model`` (the module itself for one process)."""
    if not env.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)
