"""Shared test helpers: paths, the skip-or-fail rule for missing assets, and the MaxSim oracle.

Test files import these with ``from helpers import ...``: pytest's default (prepend) import mode
puts ``tests/`` on ``sys.path`` because it holds ``conftest.py``, and conftest.py keeps only
fixtures and hooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WORKBENCH_SHARED", ROOT.parent / "shared"))
ANSWERAI = SHARED / "models" / "answerai-colbert-small-v1"
SHARED_DATA = SHARED / "data"


def missing(reason: str) -> None:
    """Skip on a user's machine; fail in CI, where every asset must be present and every test run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs every test: a missing asset is a failure there)")
    pytest.skip(reason)


def require(path: Path) -> Path:
    """``path``, or a skip (a failure in CI) naming where the offline assets are expected."""
    if not path.exists():
        missing(
            f"{path} is not on this machine (the real offline assets live in ../shared; "
            "set WORKBENCH_SHARED if yours are elsewhere)."
        )
    return path


def reference_maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """sum over query tokens of the best dot product with any document token, in float64."""
    total = 0.0
    for q in query.astype(np.float64):
        total += max(float(np.dot(q, d)) for d in document.astype(np.float64))
    return total


def unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    """``n`` random unit vectors of dimension ``dim`` (float32): stand-ins for token embeddings."""
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
