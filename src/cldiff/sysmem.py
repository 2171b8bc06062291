"""What this machine has and how busy it is: resident memory of this process (its peak, and giving freed memory
back to the operating system), the cores other work keeps busy, and the CPU's matrix features.

PyTorch's CPU tensors come from the C library's malloc. glibc keeps freed blocks in its heaps for reuse, and
after a large block is freed it raises its mmap threshold so later large blocks come from the heap too. A
training step's activations (about 1 GB for a generative-distillation step of the small UNet at batch 64)
therefore stay resident after the step, and the next phase (DDIM sampling for evaluation, with tensors of
other sizes) cannot always fit into the fragments and grows the heap further. ``release_memory`` hands the
free heap pages back (``malloc_trim``) between phases, so each phase's peak is its own working set on top of
what is really alive, not on top of the previous phase's leftovers.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys

_libc = None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> float | None:
    """Resident memory now (Linux /proc), or None where that is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def release_memory() -> bool:
    """Collect garbage and return the C heap's free pages to the OS (glibc only; elsewhere a no-op).
    Returns whether malloc_trim ran."""
    global _libc
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # musl and others have no malloc_trim
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True


def busy_cores(seconds: float = 0.3) -> float | None:
    """How many cores other processes keep busy right now: the non-idle share of /proc/stat's CPU time over
    ``seconds`` (this process sleeps meanwhile), times the number of cores; None where /proc/stat is missing.
    Unlike the load average, it does not remember a run that ended a moment ago."""
    import time

    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals) - idle, sum(vals)
    try:
        b0, t0 = sample()
        time.sleep(seconds)
        b1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


TRAIN_THREADS_FIX = "--set train.threads={free} (or set it in the config)"


def busy_cores_warning(threads: int, busy: float | None = None, cores: int | None = None,
                       fix: str = TRAIN_THREADS_FIX) -> str | None:
    """A warning when this process's ``threads`` and the work already running (``busy`` cores, measured by
    :func:`busy_cores` when not given) ask for more cores than there are, else None. ``fix`` is the option that
    gives the process its share, with ``{free}`` for the threads to give.

    Two training runs that each use every core spin their OpenMP threads against each other: on a 2-core
    machine a second run with torch's default threads took the first from 0.45 s to 3.6 s per step (8x) and made
    no visible progress itself; with one thread each, each run gets a core of its own.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if busy is None:
        busy = busy_cores()
        if busy is None:
            return None
    if busy < 0.75 or busy + threads <= cores + 0.5:
        return None
    free = max(1, int(round(cores - busy)))
    return (f"warning: {cores} cores, {busy:.1f} of them busy with other work; this process's {threads} threads "
            f"would make the processes slow each other down many times over (OpenMP threads spin against each "
            f"other). Give each its share: {fix.format(free=free)}, or start this one when the other work ends.")


def use_threads(threads: int | None) -> None:
    """Torch's threads for `cldiff evaluate`, `sample` and `classify` (their --threads; None: torch's choice), with
    the warning of :func:`busy_cores_warning` when more than one thread meets cores that other work keeps busy
    (CLDIFF_BUSY_CHECK=0: no check)."""
    import torch
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    warn_if_cores_busy(torch.get_num_threads(), "--threads {free}")


def warn_if_cores_busy(threads: int, fix: str = TRAIN_THREADS_FIX) -> None:
    """Print :func:`busy_cores_warning`'s warning, if any, for a process about to use ``threads`` CPU threads (one
    thread fits anywhere; CLDIFF_BUSY_CHECK=0: no check)."""
    if threads > 1 and os.environ.get("CLDIFF_BUSY_CHECK", "1") != "0":
        warning = busy_cores_warning(threads, fix=fix)
        if warning:
            print(warning, file=sys.stderr)


def cpu_features(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and the matrix features that decide bf16 speed (amx_bf16, avx512_bf16), from
    /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model or "unknown", "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}
