"""Evaluators that plug into Sentence Transformers' training loop (and work standalone).

:class:`ColBERTTripletEvaluator` (PyLate's name): for (anchor, positive, negative) triplets, the
share where MaxSim(anchor, positive) > MaxSim(anchor, negative). Anchors are encoded as queries,
positives and negatives as documents. Reported as ``accuracy`` (the primary metric), with the
evaluator's ``name`` as prefix when given, as in PyLate's model cards.

:func:`evaluate_collection`: exact search of a collection's judged queries over its corpus
with a ColBERT model, scored with the seed metric set; returns the table and the ranx-ready run.

Example::

    from workbench import evaluation

    table, run = evaluation.evaluate_collection(model, collection)
    evaluator = evaluation.ColBERTTripletEvaluator(anchors=["q"], positives=["relevant"], negatives=["other"])
    print(evaluator(model))  # {'accuracy': 1.0}
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorTripletEvaluator

from workbench import metrics
from workbench.data import Collection
from workbench.scores import colbert_scores, pack


class ColBERTTripletEvaluator(MultiVectorTripletEvaluator):
    """Triplet accuracy under MaxSim; see the module docstring."""

    def __init__(self, anchors: list[str], positives: list[str], negatives: list[str], name: str = "",
                 batch_size: int = 32, show_progress_bar: bool = False, **kwargs) -> None:
        if not (len(anchors) == len(positives) == len(negatives)):
            raise ValueError(f"{len(anchors)} anchors, {len(positives)} positives, {len(negatives)} negatives.")
        super().__init__(anchors=anchors, positives=positives, negatives=negatives, name=name,
                         batch_size=batch_size, show_progress_bar=show_progress_bar,
                         similarity_fn_names=["maxsim"], **kwargs)

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        metrics = super().__call__(model, output_path, epoch, steps)
        self.primary_metric = f"{self.name}_accuracy" if self.name else "accuracy"
        return {key.replace("maxsim_accuracy", "accuracy"): value for key, value in metrics.items()}


def evaluate_collection(model, collection: Collection, depth: int = 100, batch_size: int = 32,
                        show_progress_bar: bool = False, relevance_level: int = 1) -> tuple[pd.DataFrame, dict]:
    """Exact MaxSim search of the judged queries over the whole corpus; (metric table, run)."""
    document_ids = list(collection.corpus)
    query_ids = list(collection.judged_queries)
    documents = pack(model.encode([collection.corpus[i] for i in document_ids], is_query=False,
                                  batch_size=batch_size, show_progress_bar=show_progress_bar))
    queries = model.encode([collection.queries[q] for q in query_ids], is_query=True, batch_size=batch_size)
    scores = colbert_scores(queries, documents).numpy()
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    run = {q: {document_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}
    table = metrics.evaluate(collection.qrels, run, relevance_level=relevance_level, name=collection.name)
    return table, run
