"""Keep freed memory in the process for reuse: glibc's malloc, tuned for training loops.

Every update frees and allocates again the same tens of megabytes (activations, gradients,
the decoder's feature maps). With glibc's defaults, blocks above a moving threshold are mapped
from the kernel and unmapped on free, and free memory at the top of the heap is given back,
so each update faults in freshly zeroed pages, a good part of its time on a small CPU
(BENCHMARKS.md). Fixed thresholds keep that memory in
the heap; the process's peak is unchanged, it is simply not given back until exit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses a mapping threshold above half its largest heap (32 MB on 64-bit systems);
# only larger blocks, such as a test split's evaluation batch, are still mapped.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set the thresholds; False, changing nothing, where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
