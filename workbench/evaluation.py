"""Evaluators that plug into Sentence Transformers' training loop (and work standalone).

:class:`ColBERTTripletEvaluator` (PyLate's name): for (anchor, positive, negative) triplets, the
share where MaxSim(anchor, positive) > MaxSim(anchor, negative). Anchors are encoded as queries,
positives and negatives as documents. Reported as ``accuracy`` (the primary metric), with the
evaluator's ``name`` as prefix when given, as in PyLate's model cards.

:func:`evaluate_collection`: exact search of a collection's judged queries over its corpus
with a ColBERT model, scored with the seed metric set; returns the table and the ranx-ready run.
Metrics cover the queries that have both a text and a judgement of grade >= 1
(``collection.judged_qrels``, BEIR's convention); judged queries without a text cannot be run, and a
warning counts them.
:func:`evaluate_models` does it for several models (and BM25) on several collections, as one
long table for plots (:func:`rank_collections` gives the rankings themselves, to keep as TREC runs);
:func:`model_table` cuts one model's rows out for its card. The run alone is
:func:`workbench.retrieve.search_collection` (importable from here too, as is ``encode_corpus``).

Example::

    from workbench import evaluation

    table, run = evaluation.evaluate_collection(model, collection)
    evaluator = evaluation.ColBERTTripletEvaluator(anchors=["q"], positives=["relevant"], negatives=["other"])
    print(evaluator(model))  # {'accuracy': 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorTripletEvaluator

from workbench import metrics
from workbench.data import NANOBEIR_DATASETS, Collection, load
from workbench.retrieve import encode_corpus, search_collection

__all__ = [
    "BM25",
    "ColBERTInformationRetrievalEvaluator",
    "ColBERTTripletEvaluator",
    "NanoBEIREvaluator",
    "PyLateInformationRetrievalEvaluator",
    "encode_corpus",
    "evaluate_collection",
    "evaluate_models",
    "evaluate_rankings",
    "model_table",
    "rank_collections",
    "search_collection",
]


class ColBERTTripletEvaluator(MultiVectorTripletEvaluator):
    """Triplet accuracy under MaxSim; see the module docstring."""

    def __init__(
        self,
        anchors: list[str],
        positives: list[str],
        negatives: list[str],
        name: str = "",
        batch_size: int = 32,
        show_progress_bar: bool = False,
        **kwargs,
    ) -> None:
        if not (len(anchors) == len(positives) == len(negatives)):
            raise ValueError(f"{len(anchors)} anchors, {len(positives)} positives, {len(negatives)} negatives.")
        super().__init__(
            anchors=anchors,
            positives=positives,
            negatives=negatives,
            name=name,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            similarity_fn_names=["maxsim"],
            **kwargs,
        )

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        metrics = super().__call__(model, output_path, epoch, steps)
        self.primary_metric = f"{self.name}_accuracy" if self.name else "accuracy"
        return {key.replace("maxsim_accuracy", "accuracy"): value for key, value in metrics.items()}


def evaluate_collection(
    model,
    collection: Collection,
    depth: int = 100,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    relevance_level: int = 1,
    index: str | type = "exact",
) -> tuple[pd.DataFrame, dict]:
    """:func:`workbench.retrieve.search_collection`, scored with the seed metric set: (metric table, run).

    The table covers ``collection.judged_queries``; judged queries without a text are left out,
    with a warning.
    """
    collection.warn_judged_without_text()
    run = search_collection(model, collection, depth, batch_size, show_progress_bar, index)
    table = metrics.evaluate(collection.judged_qrels, run, relevance_level=relevance_level, name=collection.name)
    return table, run


class ColBERTInformationRetrievalEvaluator(BaseEvaluator):
    """Retrieval metrics of a ColBERT on one collection, standalone or during training.

    Give a :class:`~workbench.data.Collection`, or PyLate's ``queries``/``corpus``/``relevant_docs``
    dicts. Calling it returns ``{"<name>_MaxSim_ndcg@10": ..., ...}`` (the seed metric set) with
    ``MaxSim_ndcg@10`` as primary metric; ``.table`` and ``.run`` keep the last result.
    """

    def __init__(
        self,
        collection: Collection | None = None,
        *,
        queries: dict | None = None,
        corpus: dict | None = None,
        relevant_docs: dict | None = None,
        name: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        index: str | type = "exact",
        relevance_level: int = 1,
    ) -> None:
        super().__init__()
        if collection is None:
            if queries is None or corpus is None or relevant_docs is None:
                raise ValueError("Give a collection, or queries, corpus and relevant_docs.")
            qrels = {
                q: ({d: 1 for d in docs} if not isinstance(docs, dict) else dict(docs))
                for q, docs in relevant_docs.items()
            }
            collection = Collection(name or "collection", dict(corpus), dict(queries), qrels)
        self.collection = collection
        self.name = name or collection.name
        self.batch_size, self.show_progress_bar = batch_size, show_progress_bar
        self.index, self.relevance_level = index, relevance_level
        self.primary_metric = f"{metrics.SIMILARITY}_{metrics.PRIMARY_METRIC}"
        self.table: pd.DataFrame | None = None
        self.run: dict | None = None

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        self.table, self.run = evaluate_collection(
            model,
            self.collection,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            relevance_level=self.relevance_level,
            index=self.index,
        )
        results = {column: float(value) for column, value in self.table.iloc[0].items()}
        results = self.prefix_name_to_metrics(results, self.name)
        self.store_metrics_in_model_card_data(model, results, epoch, steps)
        return results


PyLateInformationRetrievalEvaluator = ColBERTInformationRetrievalEvaluator


class NanoBEIREvaluator(BaseEvaluator):
    """The NanoBEIR benchmark (or any subset of it, or local folders) with the seed metric set.

    ``dataset_names``: NanoBEIR names (``"scifact"``, ``"NanoSciFact"``), hub ids, or local folders
    in the NanoBEIR or BEIR layout (anything :func:`workbench.data.load` reads); default: all 13 from
    the hub. Calling it evaluates each dataset (exact search by default; ``index="voyager"``,
    ``"plaid"`` or an Index subclass on request) and returns
    ``{"<dataset>_MaxSim_ndcg@10": ..., "NanoBEIR_mean_MaxSim_ndcg@10": ...}``; the primary metric
    is the mean nDCG@10. ``.table`` holds one row per dataset and the mean row, as PyLate's cards
    show them; ``.runs`` the runs.
    """

    def __init__(
        self,
        dataset_names: list[str] | None = None,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        index: str | type = "exact",
        name: str = "NanoBEIR_mean",
    ) -> None:
        super().__init__()
        names = dataset_names or list(NANOBEIR_DATASETS)
        self.collections = [load(dataset) for dataset in names]
        self.batch_size, self.show_progress_bar, self.index, self.name = batch_size, show_progress_bar, index, name
        self.primary_metric = f"{name}_{metrics.SIMILARITY}_{metrics.PRIMARY_METRIC}"
        self.table: pd.DataFrame | None = None
        self.runs: dict[str, dict] = {}

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        from tqdm.auto import tqdm

        rows = []
        for collection in tqdm(self.collections, desc="NanoBEIR", disable=not self.show_progress_bar):
            table, self.runs[collection.name] = evaluate_collection(
                model, collection, batch_size=self.batch_size, index=self.index
            )
            rows.append(table)
        per_dataset = pd.concat(rows)
        mean = per_dataset.mean().to_frame(self.name).T
        self.table = pd.concat([per_dataset, mean])
        results = {
            f"{row}_{column}": float(value) for row, values in self.table.iterrows() for column, value in values.items()
        }
        self.store_metrics_in_model_card_data(model, results, epoch, steps)
        return results


BM25 = "BM25"


def rank_collections(
    models: Mapping[str, Any], collections: Sequence[Collection], batch_size: int = 32, index: str | type = "exact"
) -> dict[str, dict[str, dict]]:
    """Every model's ranking of every collection: ``{collection name: {model name: run}}``, ranx-ready runs.

    ``models`` maps a display name to a ColBERT, or to :data:`BM25` for the BM25 baseline (bm25s).
    Each ColBERT searches its collection's judged queries that have a text over the corpus with
    ``index`` (exact MaxSim by default); collections that share a corpus encode it once per model.
    Collection names must differ: they key the result.
    """
    from tqdm.auto import tqdm

    from workbench.baselines import bm25_run

    if not models or not collections:
        raise ValueError("Give at least one model and one collection.")
    names = [collection.name for collection in collections]
    if len(set(names)) < len(names):
        raise ValueError(f"Collection names must differ, got {names}.")
    rankings: dict[str, dict[str, dict]] = {name: {} for name in names}
    encoded: dict[str, tuple[dict, list]] = {}  # model name -> (corpus, its embeddings): collections may share a corpus
    pairs = [(collection, name) for collection in collections for name in models]
    for collection in collections:
        collection.warn_judged_without_text()
    for collection, name in tqdm(pairs, desc="evaluations"):
        model = models[name]
        if isinstance(model, str) and model == BM25:
            rankings[collection.name][name] = bm25_run(collection)
            continue
        if name not in encoded or encoded[name][0] != collection.corpus:
            encoded[name] = (collection.corpus, encode_corpus(model, collection, batch_size))
        rankings[collection.name][name] = search_collection(
            model, collection, batch_size=batch_size, index=index, documents_embeddings=encoded[name][1]
        )
    return rankings


def evaluate_rankings(rankings: Mapping[str, Mapping[str, dict]], collections: Sequence[Collection]) -> pd.DataFrame:
    """:func:`rank_collections`' rankings scored: one row per (dataset, model), one column per seed metric.

    Columns: ``dataset``, ``model``, then the seed metrics without the similarity prefix
    (``ndcg@10``...), so that BM25 and ColBERT rows line up. Metrics cover each collection's judged
    queries that have a text (``collection.judged_qrels``), as :func:`evaluate_collection`'s do.
    """
    rows = []
    for collection in collections:
        for name, run in rankings[collection.name].items():
            table = metrics.evaluate(collection.judged_qrels, run, prefix="")
            rows.append({"dataset": collection.name, "model": name, **table.iloc[0].to_dict()})
    return pd.DataFrame(rows)


def evaluate_models(
    models: Mapping[str, Any], collections: Sequence[Collection], batch_size: int = 32, index: str | type = "exact"
) -> pd.DataFrame:
    """Every model on every collection (:func:`rank_collections`, then :func:`evaluate_rankings`): one
    long table for plots; :func:`model_table` turns one model's rows into the table a model card shows."""
    return evaluate_rankings(rank_collections(models, collections, batch_size, index), collections)


def model_table(results: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's rows of :func:`evaluate_models`, shaped as :class:`NanoBEIREvaluator` tables are
    (datasets as rows, ``MaxSim_`` metric columns, a mean row): what :func:`workbench.cards.render_card` takes."""
    chosen = results[results["model"] == model]
    if chosen.empty:
        raise ValueError(f"No results for model {model!r}; there are {sorted(results['model'].unique())}.")
    table = chosen.drop(columns="model").set_index("dataset").add_prefix(f"{metrics.SIMILARITY}_")
    table.index.name = None
    if len(table) > 1:
        table = pd.concat([table, table.mean().to_frame("mean").T])
    return table
