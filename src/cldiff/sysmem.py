"""Resident memory of this process: its peak, and giving freed memory back to the operating system.

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
