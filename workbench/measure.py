"""What the benchmarks and notebooks measure, written once: the best of N timings, bytes on disk.

Standard library only, so a script in another environment (PyLate's, for the benchmarks) can import
it from the source tree.

Example::

    >>> from workbench.measure import best_ms
    >>> milliseconds, result = best_ms(lambda: sum(range(1000)), repeats=3)
    >>> result, milliseconds >= 0
    (499500, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["best_ms", "folder_bytes"]


def best_ms(function: Callable[[], Any], repeats: int = 3, per: int = 1, warm_up: bool = True) -> tuple[float, Any]:
    """(the fastest of ``repeats`` calls of ``function`` in ms, divided by ``per``; the last call's result).

    A warm-up call comes first (page faults, thread pools, caches). The fastest pass is the one closest
    to the cost: on a shared machine timings are noisy upwards only.
    """
    if repeats < 1 or per < 1:
        raise ValueError(f"repeats and per must be at least 1, got {repeats} and {per}.")
    if warm_up:
        function()
    timings, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        timings.append((time.perf_counter() - started) * 1000 / per)
    return min(timings), result


def folder_bytes(folder: str | Path) -> int:
    """Bytes of every file under ``folder``, recursively."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
