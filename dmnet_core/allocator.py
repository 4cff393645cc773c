"""Keep freed CPU memory in the process so per-frame activations stop page-faulting.

PyTorch's CPU tensors come straight from malloc. glibc serves blocks above its mmap
threshold (128 KiB, raised dynamically) with fresh `mmap`s and returns the top of the heap to
the kernel once 128 KiB are free, so every frame's activations (a few MB each at 256x320)
arrive as new zero-filled pages: about 4,000-9,500 page faults per `Segmenter.step` here, and
on a virtual machine they cost 20-40 % of the step and most of its run-to-run spread (measured
with `python -m bench.latency`, see docs/performance.md). A fixed, high mmap threshold and no
trimming let the next frame reuse the same heap pages: RSS stays at the peak of one frame,
which it reaches anyway.

Process-wide and idempotent; a no-op where the C library is not glibc (musl, macOS, Windows).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit; blocks above it
# (a 1024x1280 full-resolution feature map) still come from mmap.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1        # mallopt takes an int: 2 GiB, i.e. never trim in practice
OPT_OUT_ENV = 'DMNET_DEFAULT_MALLOC'

_applied: bool | None = None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc: musl's mallopt is a stub.
    return libc if hasattr(libc, 'gnu_get_libc_version') and hasattr(libc, 'mallopt') else None


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once; True if they are in effect.

    Set `DMNET_DEFAULT_MALLOC=1` to leave the allocator alone (e.g. when LD_PRELOAD-ing
    jemalloc or tcmalloc, which reuse memory by themselves).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(OPT_OUT_ENV, '') not in ('', '0'):
        log.info('%s is set: glibc malloc left at its defaults', OPT_OUT_ENV)
        return False
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _applied = ok_mmap and ok_trim
    if not _applied:
        log.warning('mallopt refused the thresholds (mmap %s, trim %s): per-frame page faults '
                    'stay', ok_mmap, ok_trim)
    return _applied
