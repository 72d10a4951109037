"""The server's memory budget: whether loading TensorFlow would take the process past it.

A public demo serves every visitor from one process, on a small box (Streamlit Community Cloud's
smallest holds 690 MB). TensorFlow, once one visitor's Grad-CAM has loaded it, stays for the life of
that process, so a visitor's click could stop the server for everyone. ``CXR_PUBLIC_DEMO=1`` sets a
budget of DEMO_BUDGET_MB; ``CXR_MEMORY_BUDGET_MB`` sets another, with or without it (docs/deployment.md).
"""
from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from pathlib import Path

PUBLIC_DEMO_ENV = "CXR_PUBLIC_DEMO"
MEMORY_BUDGET_ENV = "CXR_MEMORY_BUDGET_MB"
# Below the smallest Community Cloud box (690 MB) with room for Streamlit's own growth: a visit to
# every page with its defaults holds about 330 MB (python -m benchmarks.launch).
DEMO_BUDGET_MB = 400.0
# What the first Grad-CAM adds to the server: TensorFlow and the Keras model. Measured on 2026-12-06
# (TensorFlow 2.21 CPU, default model): about 600 MB in a running server (issue #39), 500 MB in an
# AppTest process; the larger figure, as a budget errs on the side of the server staying up.
TENSORFLOW_MB = 600.0
_ON = {"1", "true", "yes", "on"}
# glibc's mallopt parameter M_MMAP_THRESHOLD (malloc.h), and the value set under a budget.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def memory_budget_mb(environ: Mapping[str, str] = os.environ) -> float | None:
    """The budget in MB: CXR_MEMORY_BUDGET_MB, else DEMO_BUDGET_MB where CXR_PUBLIC_DEMO is on,
    else None (no budget). Raises ValueError for a budget that is not a number."""
    configured = environ.get(MEMORY_BUDGET_ENV, "").strip()
    if configured:
        try:
            return float(configured)
        except ValueError:
            raise ValueError(f"{MEMORY_BUDGET_ENV} must be a number of megabytes, not '{configured}'") from None
    return DEMO_BUDGET_MB if environ.get(PUBLIC_DEMO_ENV, "").strip().lower() in _ON else None


def resident_mb() -> float | None:
    """This process's resident memory now (VmRSS), in MB; None where there is no /proc (not Linux)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def refuse_tensorflow(resident: float | None, budget: float | None, loaded: bool,
                      cost: float = TENSORFLOW_MB) -> str | None:
    """Why TensorFlow may not be loaded, in plain words, or None where it may: always without a
    budget or once it is loaded (its memory is spent); never where the memory cannot be measured."""
    if budget is None or loaded:
        return None
    if resident is None:
        return (f"This server cannot measure its own memory, so it does not load TensorFlow (about "
                f"{cost:.0f} MB) under its memory budget of {budget:.0f} MB.")
    if resident + cost <= budget:
        return None
    return (f"Loading TensorFlow would take this server to about {resident + cost:.0f} MB, past its memory "
            f"budget of {budget:.0f} MB: the server would stop for every visitor.")


def tensorflow_refusal() -> str | None:
    """refuse_tensorflow for this process now, under the budget its environment sets."""
    return refuse_tensorflow(resident_mb(), memory_budget_mb(), "tensorflow" in sys.modules)


def return_freed_memory() -> None:
    """Have the C allocator give every freed block of 1 MB or more back to the system at once.

    glibc raises its threshold for that (up to 32 MB) once a large block is freed, then keeps later
    ones in its heaps: the server's resident memory grew by 35-45 MB with an Explain heat map and
    stayed so. Fixed at 1 MB, a visit to every page with every toggle peaked at 383-392 MB (four runs)
    instead of 412-416 MB (two; python -m benchmarks.launch --demo, 2026-12-06). Nothing is done where
    the C library is not glibc (not Linux, or musl)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
