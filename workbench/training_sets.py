"""Building training sets from collections: the embedded default data, negatives, teacher scores.

- :func:`docstring_collection`: the embedded default retrieval set, built offline from the Python
  standard library's docstrings (every installation has them): a function's or class's summary
  line is the query, the rest of its docstring is the relevant document (titled with its qualified
  name). The query is the docstring's first sentence, the document what follows it. Split by module,
  so no module has queries in both splits.
- :func:`train_test`: the (train, test) pair the notebooks use, from the docstring set or any
  NanoBEIR/BEIR data; :func:`cropped_collection` derives a second test set from a test set.
- :func:`pseudo_queries`: queries for a corpus that has none: titles, or Contriever-style
  independent cropping (a random span of the document is the query).
- :func:`bm25_negatives` (bm25s) and :func:`model_negatives` (any ColBERT): hard negatives mined for
  each query, relevant documents excluded; the result is a ``datasets.Dataset`` of
  ``query, positive, negative_1 ... negative_n`` rows, ready for :class:`workbench.losses.Contrastive`.
- :func:`load_teacher` and :func:`teacher_scores`: a teacher (a ``sentence_transformers.CrossEncoder`` or a
  ColBERT) scores each query against its positive and its negatives, giving PyLate-style distillation rows
  ``query_id, document_ids, scores`` plus the query and document tables
  (:class:`workbench.utils.KDProcessing` joins them back for training).

Collections are saved with :func:`workbench.data.save_beir`, the datasets this module returns with
``Dataset.save_to_disk`` (Hugging Face datasets).

Example::

    from workbench import data, training_sets

    train, test = training_sets.docstring_collection()
    data.save_beir(test, "runs/docstrings-test")
    triplets = training_sets.bm25_negatives(train, n_negatives=1)
    triplets.save_to_disk("runs/docstrings-triplets")
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.data import Collection, load
from workbench.scores import ranked_ids
from workbench.utils import numbered_columns

__all__ = [
    "DOCSTRING_MODULES",
    "bm25_negatives",
    "cropped_collection",
    "docstring_collection",
    "held_out",
    "load_teacher",
    "model_negatives",
    "pseudo_queries",
    "teacher_scores",
    "train_test",
    "triplet_columns",
]

# Standard-library modules with rich docstrings; every Python installation has them. Not pdb:
# IPython kernels replace parts of it, so the set would differ between a notebook and a script.
DOCSTRING_MODULES = (
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email.message",
    "email.utils",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "http.server",
    "imaplib",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "linecache",
    "locale",
    "logging",
    "logging.handlers",
    "lzma",
    "mailbox",
    "mimetypes",
    "multiprocessing",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "pstats",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sysconfig",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)


def docstring_collection(
    test_fraction: float = 0.2, min_summary_words: int = 4, min_document_words: int = 12
) -> tuple[Collection, Collection]:
    """The embedded default data: (train, test) collections from standard-library docstrings.

    Query: a docstring's first sentence; relevant document: the rest of it, titled with the
    qualified name. Only summaries of at least ``min_summary_words`` and documents of at least
    ``min_document_words`` words are kept.

    A module goes to the test split when a hash of its name says so (stable across runs and
    machines); documents whose text appears twice (inherited docstrings) are kept once.
    """
    splits: dict[str, tuple[dict, dict, dict, dict]] = {"train": ({}, {}, {}, {}), "test": ({}, {}, {}, {})}
    seen_texts: set[str] = set()
    for module_name in DOCSTRING_MODULES:
        module = _import_quietly(module_name)
        if module is None:
            continue
        corpus, titles, queries, qrels = splits["test" if _bucket(module_name) < test_fraction else "train"]
        for qualified_name, docstring in _docstrings(module, module_name):
            summary, body = _split_summary(docstring)
            if len(summary.split()) < min_summary_words or len(body.split()) < min_document_words:
                continue
            if body in seen_texts:
                continue
            seen_texts.add(body)
            identifier = qualified_name
            corpus[identifier] = f"{qualified_name} {body}"
            titles[identifier] = qualified_name
            queries[f"q:{identifier}"] = summary
            qrels[f"q:{identifier}"] = {identifier: 1}
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return tuple(
        Collection(f"docstrings-{name}-py{python}", corpus, queries, qrels, titles)
        for name, (corpus, titles, queries, qrels) in splits.items()
    )


def _bucket(name: str) -> float:
    """A number in [0, 1) fixed by ``name``: the same split on every run and machine."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 1000 / 1000


def _split_summary(docstring: str) -> tuple[str, str]:
    """The docstring's first sentence, and everything after it (whitespace folded)."""
    text = " ".join(docstring.split())
    match = re.search(r"(?<=[.!?])\s+(?=[A-Z(`'\"])", text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.end() :]


def _import_quietly(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:  # a module missing from a trimmed installation is simply left out
            return None


def _docstrings(module, module_name: str):
    """(qualified name, cleaned docstring) of the public functions, classes and methods defined in ``module``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading deprecated aliases (typing.io, typing.re) warns
        members = sorted(vars(module).items())
        return list(_public_docstrings(members, module, module_name))


def _public_docstrings(members, module, module_name: str):
    for name, value in members:
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(value) or inspect.isclass(value):
            doc = inspect.getdoc(value)
            if doc:
                yield f"{module_name}.{name}", doc
        if inspect.isclass(value):
            for method_name, method in sorted(vars(value).items()):
                if method_name.startswith("_") or not inspect.isfunction(method):
                    continue
                doc = inspect.getdoc(method)
                if doc:
                    yield f"{module_name}.{name}.{method_name}", doc


def train_test(data: str = "docstrings", test_fraction: float = 0.2) -> tuple[Collection, Collection]:
    """(train, test) collections for the pipeline: the embedded docstring set, or any NanoBEIR/BEIR data.

    ``"docstrings"``: :func:`docstring_collection`, its test queries searched over *every*
    document (the training documents are the distractors). Otherwise ``data`` is a NanoBEIR name,
    a hub id or a local folder (anything :func:`workbench.data.load` reads); its judged queries are split
    by a hash of their ids (stable across runs and machines), and both splits keep the whole corpus.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    if data == "docstrings":
        train, test = docstring_collection(test_fraction)
        return train, Collection(
            "docstrings", {**train.corpus, **test.corpus}, test.queries, test.qrels, {**train.titles, **test.titles}
        )
    collection = load(data)
    splits: dict[str, set[str]] = {"train": set(), "test": set()}
    for query_id in collection.judged_queries:
        splits["test" if _bucket(query_id) < test_fraction else "train"].add(query_id)
    if not splits["train"] or not splits["test"]:
        raise ValueError(f"{data}: {len(collection.judged_queries)} judged queries are too few to split.")
    return tuple(
        Collection(
            f"{collection.name}-{name}" if name == "train" else collection.name,
            collection.corpus,
            {q: collection.queries[q] for q in sorted(ids)},
            {q: collection.qrels[q] for q in sorted(ids)},
            collection.titles,
        )
        for name, ids in splits.items()
    )


def cropped_collection(collection: Collection, seed: int = 0) -> Collection:
    """A second test of the same corpus: a random span of each relevant document is its query.

    Named ``<name>-crops``; queries are :func:`pseudo_queries` crops of the documents the
    collection's judged queries find relevant, searched over the whole corpus.
    """
    relevant = sorted({d for q in collection.judged_queries for d in collection.relevant(q)})
    queries, qrels = pseudo_queries({d: collection.corpus[d] for d in relevant}, strategy="crop", seed=seed)
    return Collection(f"{collection.name}-crops", collection.corpus, queries, qrels, collection.titles)


def held_out(collection: Collection, train: Collection) -> tuple[Collection, int]:
    """``collection`` without the queries ``train`` trained on, and how many were dropped.

    A query is a training query when ``train`` holds the same id with the same text: evaluating on it
    would report memory as retrieval (the ``full`` profile trains on part of NanoMSMARCO and evaluates on
    all of NanoBEIR). The corpus and the other queries stay as they are.
    """
    seen = {query_id for query_id, text in collection.queries.items() if train.queries.get(query_id) == text}
    if not seen:
        return collection, 0
    kept = {query_id: text for query_id, text in collection.queries.items() if query_id not in seen}
    qrels = {query_id: judgements for query_id, judgements in collection.qrels.items() if query_id not in seen}
    return Collection(collection.name, collection.corpus, kept, qrels, collection.titles), len(seen)


def load_teacher(name_or_path: str, device: str | None = None):
    """A distillation teacher from a hub id or local path: a ``CrossEncoder`` for a sequence
    classifier (its config's architecture says so), else a :class:`workbench.models.ColBERT`.
    ``device`` None: CUDA, else MPS, else the CPU (Sentence Transformers' choice)."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(name_or_path).architectures or []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        from sentence_transformers import CrossEncoder

        return CrossEncoder(name_or_path, device=device)
    from workbench.models import ColBERT

    return ColBERT(name_or_path, device=device)


def pseudo_queries(
    corpus: dict[str, str],
    titles: dict[str, str] | None = None,
    strategy: str = "crop",
    min_words: int = 5,
    max_words: int = 12,
    seed: int = 0,
) -> tuple[dict[str, str], dict]:
    """Queries and qrels for a corpus without queries.

    ``strategy="title"``: each titled document's title is its query. ``strategy="crop"``: an
    independent random span of ``min_words`` to ``max_words`` words of each document (Contriever).
    """
    rng = random.Random(seed)
    queries, qrels = {}, {}
    for document_id, text in corpus.items():
        if strategy == "title":
            if not titles or not titles.get(document_id):
                continue
            query = titles[document_id]
        elif strategy == "crop":
            words = text.split()
            if len(words) < min_words * 2:
                continue
            length = rng.randint(min_words, min(max_words, len(words) // 2))
            start = rng.randint(0, len(words) - length)
            query = " ".join(words[start : start + length])
        else:
            raise ValueError(f"strategy must be 'title' or 'crop', got {strategy!r}.")
        queries[f"pq:{document_id}"] = query
        qrels[f"pq:{document_id}"] = {document_id: 1}
    return queries, qrels


def bm25_negatives(collection: Collection, n_negatives: int = 1, depth: int = 30, seed: int = 0):
    """A Dataset of ``query, positive, negative_1..n``: BM25's top documents that are not relevant.

    Negatives are drawn at random from BM25's top ``depth`` non-relevant documents (seeded), which
    avoids always taking the single closest one (often an unjudged positive).
    """
    from workbench.baselines import bm25_run

    return _triplets(collection, bm25_run(collection, depth=depth + 10), n_negatives, depth, seed)


def model_negatives(
    collection: Collection, model, n_negatives: int = 1, depth: int = 30, seed: int = 0, batch_size: int = 32
):
    """Like :func:`bm25_negatives`, with a ColBERT model's exact MaxSim ranking as the miner."""
    from workbench.retrieve import search_collection

    run = search_collection(model, collection, depth=depth + 10, batch_size=batch_size, show_progress_bar=True)
    return _triplets(collection, run, n_negatives, depth, seed)


def _triplets(collection: Collection, run: dict[str, dict[str, float]], n_negatives: int, depth: int, seed: int):
    from datasets import Dataset

    if n_negatives < 1:
        raise ValueError(f"n_negatives must be at least 1, got {n_negatives}.")
    rng = random.Random(seed)
    rows = []
    for query_id, scores in run.items():
        ranked = ranked_ids(scores)
        relevant = set(collection.relevant(query_id))
        pool = [d for d in ranked if d not in relevant][:depth]
        if len(pool) < n_negatives:
            continue
        negatives = rng.sample(pool, n_negatives)
        for positive in sorted(relevant & collection.corpus.keys()):
            row = {"query_id": query_id, "query": collection.queries[query_id], "positive": collection.corpus[positive]}
            row.update({f"negative_{i + 1}": collection.corpus[d] for i, d in enumerate(negatives)})
            row["positive_id"], row["negative_ids"] = positive, negatives
            rows.append(row)
    return Dataset.from_list(rows)


def teacher_scores(triplets, teacher: Any, batch_size: int = 32):
    """Distillation rows from a triplet Dataset (with ``positive_id`` and ``negative_ids``), scored by a teacher.

    ``teacher`` is a ``sentence_transformers.CrossEncoder`` (scores each (query, document) pair) or
    a :class:`workbench.models.ColBERT` (exact MaxSim). Returns ``(rows, queries, documents)``:
    ``rows`` has ``query_id``, ``document_ids`` (positive first) and ``scores``; ``queries`` and
    ``documents`` are tables with ``query_id``/``document_id`` and ``text``.
    """
    from datasets import Dataset

    negative_columns = numbered_columns(triplets.column_names, "negative_")
    if "positive_id" not in triplets.column_names or "negative_ids" not in triplets.column_names:
        raise ValueError("teacher_scores needs the positive_id and negative_ids columns that the miners write.")
    pairs, document_texts, query_texts = [], {}, {}
    for row in triplets:
        query_texts[row["query_id"]] = row["query"]
        ids = [row["positive_id"], *row["negative_ids"]]
        texts = [row["positive"], *(row[c] for c in negative_columns)]
        document_texts.update(zip(ids, texts))
        pairs.extend((row["query"], text) for text in texts)
    scores = _score_pairs(teacher, pairs, batch_size)
    ways = 1 + len(negative_columns)
    rows = [
        {
            "query_id": row["query_id"],
            "document_ids": [row["positive_id"], *row["negative_ids"]],
            "scores": [float(s) for s in scores[i * ways : (i + 1) * ways]],
        }
        for i, row in enumerate(triplets)
    ]
    queries = Dataset.from_dict({"query_id": list(query_texts), "text": list(query_texts.values())})
    documents = Dataset.from_dict({"document_id": list(document_texts), "text": list(document_texts.values())})
    return Dataset.from_list(rows), queries, documents


def _score_pairs(teacher: Any, pairs: Sequence[tuple[str, str]], batch_size: int) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    if isinstance(teacher, CrossEncoder):
        import torch

        # Raw logits: a sigmoid squeezes scores towards 0 and 1 and flattens the teacher's softmax.
        logits = teacher.predict(
            list(pairs), batch_size=batch_size, show_progress_bar=True, activation_fn=torch.nn.Identity()
        )
        return np.asarray(logits, dtype=np.float32)
    from workbench.scores import colbert_scores_pairwise

    # Each query comes with all its documents, and documents recur across queries: encode each text once.
    query_texts = list(dict.fromkeys(q for q, _ in pairs))
    document_texts = list(dict.fromkeys(d for _, d in pairs))
    query_embeddings = dict(zip(query_texts, teacher.encode(query_texts, is_query=True, batch_size=batch_size)))
    document_embeddings = dict(
        zip(
            document_texts,
            teacher.encode(document_texts, is_query=False, batch_size=batch_size, show_progress_bar=True),
        )
    )
    return colbert_scores_pairwise(
        [query_embeddings[q] for q, _ in pairs], [document_embeddings[d] for _, d in pairs]
    ).numpy()


def triplet_columns(triplets) -> list[str]:
    """The text columns a contrastive loss trains on, in order (ids dropped)."""
    names = triplets.column_names
    return [c for c in ("query", "positive") if c in names] + numbered_columns(names, "negative_")
