"""glibc's malloc kept from handing freed buffers back to the kernel in processes that make training examples.

An example allocates a few megabytes of short-lived buffers: its records, decoded JPEG windows or frames,
crops, float outputs. By default glibc serves a block above its mmap threshold (128 KiB, raised dynamically
up to the largest block freed so far) with a fresh `mmap` and unmaps it on `free`, and returns free memory
at the top of a heap above its trim threshold. The next buffer then page-faults on every 4 KiB page it
touches, and the kernel zeroes each one: with several read threads (each with its own malloc arena) the
dynamic threshold does not settle. On the pre-cropped path that was ~700 faults and ~2 ms of kernel time per
sample, a fifth of the sample's CPU (docs/performance.md).

`tune_malloc()` sets the mmap threshold to glibc's maximum (32 MiB: larger blocks are still mapped) and the
trim threshold to TRIM_THRESHOLD, so freed buffers stay in the process and are reused without faults. The
cost is that a process keeps up to its peak of such buffers (the read-ahead's, a few hundred MB at most)
instead of returning them between examples.

A user who sets glibc's own knobs (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`,
`MALLOC_MMAP_MAX_`, or `glibc.malloc.*` in `GLIBC_TUNABLES`) keeps them: nothing is changed then. Nor is it on
a C library without glibc's `mallopt` (macOS, musl). TCMalloc or jemalloc preloaded with `LD_PRELOAD` do
not return memory this eagerly and ignore glibc's settings.
"""

from __future__ import annotations

import ctypes
import logging
import os

logger = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit): mallopt refuses more
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_state: tuple[int, bool] | None = None  # (process id, whether the tuning is in effect) once tried


def tune_malloc() -> bool:
  """Tunes this process's malloc as the module docstring says, once per process (a forked or spawned
  worker tunes its own). Returns whether the tuning is in effect: False when the user set glibc's knobs
  or the C library has no glibc `mallopt`."""
  global _state
  if _state is None or _state[0] != os.getpid():
    _state = (os.getpid(), _tune())
  return _state[1]


def _tune() -> bool:
  if any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
    logger.info("malloc: the environment sets glibc's malloc thresholds; leaving them as set")
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  # glibc returns 1 on success; musl's stub returns 0.
  return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
