"""Keep freed host memory in the process, so that a CPU training step reuses the pages of the last one.

glibc's malloc hands large blocks back to the kernel when they are freed (by `munmap`, or by trimming the
top of the heap), and the next step's activations then fault in fresh pages that the kernel must zero:
thousands of page faults a step, a quarter of a small CNN's CPU step on a 2-core machine, and a different
share in each process (measured in benchmarks/time_to_accuracy.py, 2026-12-03: 6,000-10,000 faults a step,
none with this setting; steps of 71-94 ms became 67-74 ms). Intel's CPU tuning guide for PyTorch makes the
same point with jemalloc or tcmalloc; this asks glibc for it, with no preloaded library.

The cost: the process keeps its peak heap, which a training loop reaches again at every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap, and up to 2 GiB of free heap top is kept (mallopt takes a C int).
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = 2**31 - 1


def reuse_freed_host_memory() -> bool:
    """Sets glibc's thresholds for this process (and the data workers it forks later); False where the C
    library is not glibc (macOS, musl), which keep their own policy."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # Setting either threshold also stops glibc from moving them as blocks are freed; both are needed:
    # the trim threshold alone would send every large block to mmap.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
