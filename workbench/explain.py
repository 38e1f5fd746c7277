"""Token-level MaxSim: which document token each query token matched, and what it contributed.

What goes in: a ColBERT, one query and one document (texts).

What comes out: a :class:`TokenMatches` with the token strings of exactly the embeddings the model
scores (query markers and ``[MASK]`` expansion included, skiplisted document punctuation left
out), their similarity matrix, each query token's best document token and its contribution. The
contributions add up to the MaxSim score of the pair.

Example::

    from workbench import explain, models

    model = models.load_model()
    matches = explain.token_matches(model, "capital of france", "Paris is the capital of France.")
    matches.score                  # MaxSim of the pair
    matches.table()                # one row per query token: best document token, similarity
    workbench.plots.maxsim_heatmap(matches)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TokenMatches", "token_matches"]


@dataclass(frozen=True)
class TokenMatches:
    """Similarities of every scored query token (rows) with every scored document token (columns)."""

    query_tokens: list[str]
    document_tokens: list[str]
    similarities: np.ndarray

    @property
    def best(self) -> np.ndarray:
        """For each query token, the position of the document token it matched."""
        return self.similarities.argmax(axis=1)

    @property
    def contributions(self) -> np.ndarray:
        """Each query token's share of the score: its best similarity."""
        return self.similarities.max(axis=1)

    @property
    def score(self) -> float:
        return float(self.contributions.sum())

    def table(self) -> pd.DataFrame:
        """One row per query token: the document token it matched and the similarity."""
        return pd.DataFrame(
            {
                "query token": self.query_tokens,
                "matched document token": [self.document_tokens[j] for j in self.best],
                "position": self.best,
                "similarity": self.contributions,
            }
        )


def token_matches(model, query: str, document: str) -> TokenMatches:
    """Encode ``query`` and ``document`` as the model scores them, keeping each embedding's token."""
    query_tokens, query_embeddings = _scored_tokens(model, query, is_query=True)
    document_tokens, document_embeddings = _scored_tokens(model, document, is_query=False)
    similarities = query_embeddings @ document_embeddings.T
    return TokenMatches(query_tokens, document_tokens, similarities)


def _scored_tokens(model, text: str, is_query: bool) -> tuple[list[str], np.ndarray]:
    # output_value=None keeps the model's features; their attention mask is the one scoring uses
    # (expansion tokens in, skiplisted tokens out), so it picks exactly the embeddings encode() returns.
    features = model.encode([text], is_query=is_query, output_value=None)[0]
    kept = features["attention_mask"].bool()
    tokens = model.tokenizer.convert_ids_to_tokens(features["input_ids"][kept].tolist())
    embeddings = features["token_embeddings"][kept].float().cpu().numpy()
    return tokens, embeddings
