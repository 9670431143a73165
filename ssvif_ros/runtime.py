"""Process set-up shared by every ROS 2 process of the package (node, publisher, recorder).

By default glibc serves every multi-megabyte buffer (a received image message, its Python copy,
NumPy temporaries) with a fresh mmap and unmaps it when it is freed, so every frame page-faults
its whole working set in again. :func:`tune_malloc` keeps such buffers on the heap for reuse.
Measured on the dev VM (2 vCPUs) with 640 x 480 rgb8 images between two Python processes over
Fast DDS shared memory: one publish-to-callback hop 2.3 ms -> 1.2 ms median with the receiving
process tuned; the node's decode of one pair (``frames.prepare_pair``) 4.3 ms -> 0.3 ms; max-luma
fusion 13.6 ms -> 5.1 ms.
"""
from __future__ import annotations

import os
import sys


def tune_malloc() -> bool:
    """Let glibc keep freed image-sized buffers for reuse; True when applied (Linux/glibc).

    With a 64 MiB mmap threshold and a 256 MiB trim threshold the per-frame buffers are recycled
    from the heap instead of being mapped and unmapped per frame; the resident size settles at
    the working set of a few frames and stays flat (bench/node_latency.py). Set
    ``SSVIF_MALLOC_TUNING=0`` to disable. Any other process (a Python camera driver or consumer)
    gets the same with ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=67108864:``
    ``glibc.malloc.trim_threshold=268435456`` in its environment.
    """
    if os.environ.get('SSVIF_MALLOC_TUNING', '1') == '0' or not sys.platform.startswith('linux'):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(
            libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):  # not glibc (musl, ...): keep the defaults
        return False


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``); True if any.

    :func:`tune_malloc` keeps freed image buffers for reuse, which is right for a steady
    stream but keeps, e.g., the buffers of a few dropped 4K frames resident for good. The node
    calls this after a period with dropped frames; it costs a walk over the heap's free lists.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        import ctypes
        return bool(ctypes.CDLL('libc.so.6').malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False
