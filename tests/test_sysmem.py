"""release_memory hands freed heap pages back to the OS; peak_rss_mib reads the process's peak."""
import sys

import pytest
import torch

from cldiff.sysmem import peak_rss_mib, release_memory, rss_mib


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_release_memory_returns_freed_heap_pages():
    release_memory()
    # 96 KiB blocks stay under glibc's mmap threshold, so they come from the heap; keeping every 8th block
    # alive pins the heap's top, so the freed ones stay resident until they are trimmed.
    blocks = [torch.ones(24 * 1024) for _ in range(3000)]  # ~280 MiB
    before = rss_mib()
    assert peak_rss_mib() >= before - 1
    keep = blocks[7::8]
    del blocks
    held = rss_mib()
    assert held > before - 80, "the freed blocks were returned without a trim; the test cannot tell anything"
    assert release_memory() is True
    after = rss_mib()
    assert held - after > 150, (before, held, after)
    assert all(float(k[0]) == 1.0 for k in keep)  # the live blocks are untouched
