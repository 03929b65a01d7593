"""Process-wide memory settings for a long run: decoded frames must go back to the OS when freed.

Owns one glibc setting and nothing else. Every frame is a 1–6 MB buffer allocated and freed on
several threads. glibc's malloc serves blocks that large with mmap at first, but its *dynamic*
mmap threshold rises after the first such block is freed, and from then on the frames come from
per-thread heap arenas, which fragment and do not shrink: a live run's RSS then climbs for hours.
`benchmarks/memory_churn.py` measures it (3 minutes of cameras added, reloaded and removed in one
process; two runs each): native memory beyond live Python objects grew 568→605 and 524→701 MB
with glibc's defaults, 350→380 and 362→386 MB with this setting. Fixing the threshold keeps frames
on mmap (blocks of 512 KiB and more), returned to the OS as soon as they are freed. On other C libraries this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
FRAME_MMAP_THRESHOLD = 512 * 1024  # blocks of 512 KiB and more: any decoded frame from 480x360 up


def keep_frames_off_the_heap(threshold: int = FRAME_MMAP_THRESHOLD) -> bool:
    """Fixes glibc's mmap threshold at `threshold` bytes (which also stops its dynamic raising).

    Args:
        threshold: allocations of at least this many bytes use mmap.

    Returns:
        True when set (glibc), False where the C library has no `mallopt`.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return False
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return ok
