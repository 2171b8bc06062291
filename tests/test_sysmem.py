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


def test_busy_cores_warning_says_how_many_threads_to_give():
    from cldiff.sysmem import busy_cores_warning
    assert busy_cores_warning(2, busy=0.1, cores=2) is None  # an idle machine
    assert busy_cores_warning(1, busy=1.0, cores=2) is None  # one thread beside one busy core: fits
    w = busy_cores_warning(2, busy=1.0, cores=2)  # a second run with every core beside a busy one
    assert w is not None and "train.threads=1" in w
    assert "train.threads=2" in busy_cores_warning(8, busy=6.0, cores=8)
    assert "--threads 1," in busy_cores_warning(2, busy=1.0, cores=2, fix="--threads {free}")


def test_use_threads_sets_torch_threads_and_warns_beside_busy_cores(monkeypatch, capsys):
    import os

    from cldiff import sysmem
    before = torch.get_num_threads()
    monkeypatch.setenv("CLDIFF_BUSY_CHECK", "1")
    monkeypatch.setattr(sysmem, "busy_cores", lambda seconds=0.3: 1.0)  # another process keeps one core busy
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # two cores
    try:
        sysmem.use_threads(1)  # one thread beside the busy core fits: no warning
        assert torch.get_num_threads() == 1 and capsys.readouterr().err == ""
        sysmem.use_threads(2)
        assert torch.get_num_threads() == 2 and "--threads 1," in capsys.readouterr().err
        monkeypatch.setenv("CLDIFF_BUSY_CHECK", "0")
        sysmem.use_threads(2)
        assert capsys.readouterr().err == ""
        with pytest.raises(ValueError, match="--threads must be at least 1, got 0"):
            sysmem.use_threads(0)
    finally:
        torch.set_num_threads(before)


def test_busy_cores_reads_this_machines_cpu_time():
    import os

    from cldiff.sysmem import busy_cores
    b = busy_cores(0.05)
    assert b is None or 0.0 <= b <= (os.cpu_count() or 1) + 1e-9
