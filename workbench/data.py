"""Retrieval collections: BEIR folders and NanoBEIR, loaded into one :class:`Collection` type.

What goes in: :func:`load` takes a folder or a name and tries the formats of :data:`READERS` in
order; the first that recognises it reads it:

- a BEIR folder (``corpus.jsonl`` with ``_id``/``title``/``text``, ``queries.jsonl`` with
  ``_id``/``text``, ``qrels/<split>.tsv`` with query id, document id, score; a header line is
  optional, TREC's four-column form is accepted too), also :func:`load_beir`;
- a NanoBEIR folder (``corpus/``, ``queries/``, ``qrels/`` holding parquet or jsonl files);
- one of the 13 NanoBEIR datasets by name (``"scifact"``, ``"NanoSciFact"``) or hub id
  (``"zeta-alpha-ai/NanoSciFact"``; configs ``corpus``, ``queries``, ``qrels``, split ``train``).

:func:`load_nanobeir` is :func:`load` under its older name. Nothing recognised raises
:class:`DataFormatError` listing the formats tried.

A format is a :class:`Format`: ``detects(source)`` is a cheap check (no parsing) that ``source`` (a
path or a name, as given to :func:`load`) is in this format; ``read(source, split)`` returns the
:class:`Collection` (``split``: which qrels file, where a format has several). A reader turns its
files into rows, ``(path, line number, row dict)`` triples, and builds the collection with
``_documents`` and ``_qrels_from_rows``, so a malformed row raises :class:`DataFormatError` naming
``path:line``. Once it has detected its format, a reader raises on anything wrong rather than
letting another format try. A new format is one reader and one entry in :data:`READERS`.

Rows whose title and text are both empty are left out: there is nothing to embed. Ids are
strings or integers (a null or a list is an error); texts and titles are strings or null.

What comes out: a :class:`Collection` with ``corpus`` (document id -> text, the title joined in
front of the text), ``titles``, ``queries`` (query id -> text) and ``qrels`` (query id ->
{document id: grade}, zero grades kept: they are judged non-relevant documents). Metrics cover the
queries that have both a text and a judgement of grade >= 1 (:attr:`Collection.judged_queries`,
:attr:`Collection.judged_qrels`, BEIR's convention); judged queries without a text cannot be run:
they are counted (:attr:`Collection.judged_without_text`, the repr, :func:`statistics`) and a
warning names them when the collection is loaded. :func:`is_relevant` is that grade rule, and
:meth:`Collection.relevant` a query's relevant documents. :meth:`Collection.document_ids` and
:meth:`Collection.texts` give the corpus as two lists in corpus order, the order embeddings follow.

Files are read as UTF-8 with an optional byte-order mark. Lines are split on ``\\n`` only: passage
texts contain U+2028, which ``str.splitlines`` would treat as a line break. The first qrels line is a
header only when its score field is a header word (``score``); any other non-integer score is an
error. A malformed line or a missing file raises an error that names the file and line.

Example (a doctest, run by ``tests/test_doctests.py``; ``data.load("path/to/beir-folder")`` reads one
from disk the same way)::

    >>> from workbench import data
    >>> collection = data.Collection("toy", corpus={"d2": "a cat", "d1": "a dog"}, queries={"q1": "cat"},
    ...                              qrels={"q1": {"d2": 2, "d1": 0}})
    >>> collection.relevant("q1"), collection.document_ids(), collection.texts()
    ({'d2': 2}, ['d2', 'd1'], ['a cat', 'a dog'])
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "NANOBEIR_DATASETS",
    "NANOBEIR_ORGANISATION",
    "NANOBEIR_PARTS",
    "QRELS_HEADER_WORDS",
    "READERS",
    "Collection",
    "DataFormatError",
    "Format",
    "is_relevant",
    "load",
    "load_beir",
    "load_nanobeir",
    "nanobeir_hub_id",
    "save_beir",
    "statistics",
]

NANOBEIR_DATASETS = {
    "climatefever": "NanoClimateFEVER",
    "dbpedia": "NanoDBPedia",
    "fever": "NanoFEVER",
    "fiqa2018": "NanoFiQA2018",
    "hotpotqa": "NanoHotpotQA",
    "msmarco": "NanoMSMARCO",
    "nfcorpus": "NanoNFCorpus",
    "nq": "NanoNQ",
    "quoraretrieval": "NanoQuoraRetrieval",
    "scidocs": "NanoSCIDOCS",
    "arguana": "NanoArguAna",
    "scifact": "NanoSciFact",
    "touche2020": "NanoTouche2020",
}
NANOBEIR_ORGANISATION = "zeta-alpha-ai"
NANOBEIR_PARTS = ("corpus", "queries", "qrels")  # the hub configs, and the folders of a NanoBEIR folder
# What the third field of a qrels header line says (BEIR writes "query-id corpus-id score").
QRELS_HEADER_WORDS = {"score", "relevance", "grade", "label"}


class DataFormatError(ValueError):
    """A collection file is missing or has a malformed line (the message names file and line)."""


def is_relevant(grade: float) -> bool:
    """Whether a judgement's grade makes the document relevant: grade >= 1 (BEIR's and trec_eval's
    rule; grade 0 is a judged non-relevant document). The one place the rule is written."""
    return grade >= 1


@dataclass
class Collection:
    """A retrieval collection: documents, queries and graded relevance judgements."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    titles: dict[str, str] = field(default_factory=dict)

    def relevant(self, query_id: str) -> dict[str, int]:
        """The documents judged relevant to a query (:func:`is_relevant`): document id -> grade, in qrels order."""
        return {document_id: grade for document_id, grade in self.qrels.get(query_id, {}).items() if is_relevant(grade)}

    def document_ids(self) -> list[str]:
        """Every document id, in corpus order: the order of :meth:`texts` and of the embeddings built from it."""
        return list(self.corpus)

    def texts(self, ids: Sequence[str] | None = None) -> list[str]:
        """The texts of documents ``ids``, in that order; None: every document, in corpus order."""
        if ids is None:
            return list(self.corpus.values())
        return [self.corpus[identifier] for identifier in ids]

    @property
    def judged_queries(self) -> dict[str, str]:
        """Queries with a text and at least one relevant judgement, the ones that enter the metrics."""
        return {query_id: text for query_id, text in self.queries.items() if self.relevant(query_id)}

    @property
    def judged_qrels(self) -> dict[str, dict[str, int]]:
        """The judgements of :attr:`judged_queries`: the qrels a collection's metrics are computed on."""
        return {query_id: self.qrels[query_id] for query_id in self.judged_queries}

    @property
    def judged_without_text(self) -> list[str]:
        """Ids of queries with a relevant judgement that have no text: they cannot be run."""
        return [query_id for query_id in self.qrels if query_id not in self.queries and self.relevant(query_id)]

    def warn_judged_without_text(self) -> None:
        """Warn (``UserWarning``) when judged queries have no text, saying the metrics leave them out."""
        missing = self.judged_without_text
        if missing:
            warnings.warn(
                f"{self.name}: {len(missing)} judged queries have no text (e.g. {missing[:3]}); they cannot be "
                f"run and are left out of the metrics, which cover the {len(self.judged_queries)} judged queries "
                "with a text (BEIR's convention).",
                stacklevel=3,
            )

    def __repr__(self) -> str:
        without_text = len(self.judged_without_text)
        return (
            f"Collection({self.name!r}: {len(self.corpus)} documents, {len(self.queries)} queries, "
            f"{len(self.judged_queries)} judged" + (f", {without_text} judged without text)" if without_text else ")")
        )


def statistics(collections: list[Collection]) -> pd.DataFrame:
    """Sizes of collections: documents, queries, judged queries (and judged ones without text),
    relevant documents per judged query, mean words per text; one row per collection."""
    rows = {}
    for collection in collections:
        judged = collection.judged_queries
        rows[collection.name] = {
            "documents": len(collection.corpus),
            "queries": len(collection.queries),
            "judged queries": len(judged),
            "judged without text": len(collection.judged_without_text),
            "relevant per query": sum(len(collection.relevant(q)) for q in judged) / max(len(judged), 1),
            "words per query": _mean_words(collection.queries.values()),
            "words per document": _mean_words(collection.corpus.values()),
        }
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def _mean_words(texts) -> float:
    texts = list(texts)
    return sum(len(text.split()) for text in texts) / max(len(texts), 1)


def load(name_or_path: str | Path, split: str = "test", name: str | None = None) -> Collection:
    """Load a collection in the first format of :data:`READERS` that detects ``name_or_path``.

    ``split`` names the BEIR qrels file (NanoBEIR has one split); ``name`` replaces the collection's
    name (default: the folder's or the dataset's). Raises :class:`DataFormatError` listing the formats
    tried when none detects it, or naming the file and line of a malformed row.
    """
    for reader in READERS:
        if reader.detects(name_or_path):
            return _loaded(reader.read(name_or_path, split), name)
    missing = "" if Path(name_or_path).exists() else " (no such file or folder)"
    raise DataFormatError(
        f"{name_or_path}{missing}: not a collection format this workbench reads; tried, in order: "
        + "; ".join(reader.name for reader in READERS)
        + "."
    )


def load_beir(folder: str | Path, split: str = "test", name: str | None = None) -> Collection:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    if not Path(folder).is_dir():
        raise DataFormatError(f"{folder}: no such collection folder.")
    return _loaded(_read_beir(folder, split), name)


def save_beir(collection: Collection, folder: str | Path, split: str = "test") -> Path:
    """Write a collection as a BEIR folder (``load_beir`` reads it back as it was).

    Ids in the qrels may not hold a tab, newline or carriage return: the qrels file is tab- and
    line-separated, so neither ``load_beir`` nor BEIR's own reader could split them back. Such ids
    raise ``ValueError`` before anything is written (ids are not escaped: other tools read the file).
    """
    for query_id, judgements in collection.qrels.items():
        for identifier in (query_id, *judgements):
            if any(separator in identifier for separator in "\t\n\r"):
                raise ValueError(
                    f"Id {identifier!r} holds a tab, newline or carriage return, which the tab-separated "
                    "qrels file cannot hold; rename it before saving (nothing was written)."
                )
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for identifier, text in collection.corpus.items():
            title = collection.titles.get(identifier, "")
            body = text[len(title) :].strip() if title and text.startswith(title) else text
            handle.write(json.dumps({"_id": identifier, "title": title, "text": body}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for identifier, text in collection.queries.items():
            handle.write(json.dumps({"_id": identifier, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query_id, judgements in collection.qrels.items():
            for document_id, grade in judgements.items():
                handle.write(f"{query_id}\t{document_id}\t{grade}\n")
    return folder


def load_nanobeir(name_or_path: str | Path) -> Collection:
    """Load a NanoBEIR dataset from a local folder (NanoBEIR or BEIR layout), a name or a hub id: :func:`load`."""
    return load(name_or_path)


def nanobeir_hub_id(name: str) -> str:
    """``"scifact"``, ``"NanoSciFact"`` or ``"zeta-alpha-ai/NanoSciFact"`` -> the hub id."""
    short = _nanobeir_short_name(name)
    if short not in NANOBEIR_DATASETS:
        raise ValueError(f"{name!r} is neither a folder nor a NanoBEIR dataset; known: {sorted(NANOBEIR_DATASETS)}.")
    return f"{NANOBEIR_ORGANISATION}/{NANOBEIR_DATASETS[short]}"


def _nanobeir_short_name(name: str) -> str:
    return name.split("/")[-1].lower().removeprefix("nano")


def _is_beir_folder(source: str | Path) -> bool:
    return (Path(source) / "corpus.jsonl").exists()


def _read_beir(source: str | Path, split: str) -> Collection:
    folder = Path(source)
    corpus, titles = _documents(_read_jsonl(folder / "corpus.jsonl"), folder / "corpus.jsonl")
    queries, _ = _documents(_read_jsonl(folder / "queries.jsonl"), folder / "queries.jsonl")
    return Collection(folder.name, corpus, queries, _read_qrels_tsv(folder / "qrels" / f"{split}.tsv"), titles)


def _is_nanobeir_folder(source: str | Path) -> bool:
    return (Path(source) / "corpus").is_dir()


def _read_nanobeir_folder(source: str | Path, split: str) -> Collection:
    folder = Path(source)
    parts = {}
    for part in NANOBEIR_PARTS:
        files = sorted(file for file in (folder / part).glob("*") if file.suffix in (".parquet", ".jsonl", ".json"))
        if not files:
            raise DataFormatError(f"{folder / part}: no parquet or jsonl files (NanoBEIR layout expected).")
        rows: list[tuple[Path, int, dict]] = []
        for file in files:
            rows.extend(_read_table(file))
        parts[part] = rows
    return _from_parts(folder.name, parts, folder)


def _is_nanobeir_name(source: str | Path) -> bool:
    # A folder is never a name: one the folder formats did not detect must not fall through to the hub.
    return not Path(source).is_dir() and _nanobeir_short_name(str(source)) in NANOBEIR_DATASETS


def _read_nanobeir_hub(source: str | Path, split: str) -> Collection:
    import datasets

    hub_id = nanobeir_hub_id(str(source))
    parts = {}
    for part in NANOBEIR_PARTS:
        try:
            table = datasets.load_dataset(hub_id, part, split="train")
        except Exception as error:  # the hub client raises many types; the cause is kept
            raise DataFormatError(
                f"Could not load {hub_id} ({part}) from the hub: {error}. Offline, pass a local folder instead."
            ) from error
        parts[part] = [(Path(hub_id) / part, number, row) for number, row in enumerate(table, start=1)]
    return _from_parts(hub_id.split("/")[-1], parts, Path(hub_id))


def _from_parts(name: str, parts: dict[str, list[tuple[Path, int, dict]]], source: Path) -> Collection:
    """A collection from NanoBEIR's three parts, each a list of ``(path, line number, row)``."""
    corpus, titles = _documents(parts["corpus"], source / "corpus")
    queries, _ = _documents(parts["queries"], source / "queries")
    return Collection(name, corpus, queries, _qrels_from_rows(parts["qrels"], source / "qrels"), titles)


class Format(NamedTuple):
    """A collection format :func:`load` reads; the contract is in the module docstring."""

    name: str  # what the error of an unrecognised source calls it
    detects: Callable[[str | Path], bool]
    read: Callable[[str | Path, str], Collection]


# The formats load() tries, in order: a folder holding corpus.jsonl is BEIR even if it has a corpus/ folder too.
READERS: tuple[Format, ...] = (
    Format(
        "BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv, TREC qrels accepted)", _is_beir_folder, _read_beir
    ),
    Format(
        "NanoBEIR folder (corpus/, queries/, qrels/ of parquet or jsonl files)",
        _is_nanobeir_folder,
        _read_nanobeir_folder,
    ),
    Format(
        f"NanoBEIR name or hub id (one of {', '.join(sorted(NANOBEIR_DATASETS))})",
        _is_nanobeir_name,
        _read_nanobeir_hub,
    ),
)


def _loaded(collection: Collection, name: str | None = None) -> Collection:
    collection.name = name or collection.name
    collection.warn_judged_without_text()
    return collection


def _read_jsonl(path: Path) -> list[tuple[Path, int, dict]]:
    rows = []
    for number, line in _numbered_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}.")
        rows.append((path, number, row))
    return rows


def _read_table(path: Path) -> list[tuple[Path, int, dict]]:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        # Missing values become None, as JSON's null: pandas gives NaN for a missing string.
        frame = frame.astype(object).where(frame.notna(), None)
        return [(path, number, row) for number, row in enumerate(frame.to_dict("records"), start=1)]
    return _read_jsonl(path)


def _documents(rows: list[tuple[Path, int, dict]], source: Path) -> tuple[dict[str, str], dict[str, str]]:
    texts: dict[str, str] = {}
    titles: dict[str, str] = {}
    for path, number, row in rows:
        if "_id" not in row or "text" not in row:
            raise DataFormatError(f"{path}:{number}: a row needs '_id' and 'text', got keys {sorted(row)}.")
        identifier = _identifier(row, "_id", path, number)
        if identifier in texts:
            raise DataFormatError(f"{path}:{number}: duplicate id {identifier!r}.")
        title, text = _text(row, "title", path, number), _text(row, "text", path, number)
        joined = f"{title} {text}".strip() if title else text
        if not joined:
            continue  # nothing to embed; such a row cannot be retrieved either
        texts[identifier] = joined
        if title:
            titles[identifier] = title
    if not texts:
        raise DataFormatError(f"{source}: no rows.")
    return texts, titles


def _read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    rows = []
    for number, line in _numbered_lines(path):
        fields = line.rstrip("\r").split("\t") if "\t" in line else line.split()
        if len(fields) == 4:  # TREC: query-id, iteration, document-id, grade
            fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise DataFormatError(
                f"{path}:{number}: expected 3 columns (query-id, corpus-id, score), got {len(fields)}."
            )
        if number == 1 and fields[2].strip().lower() in QRELS_HEADER_WORDS:
            continue  # header line, e.g. "query-id corpus-id score"; any other score must be an integer
        rows.append((path, number, {"query-id": fields[0], "corpus-id": fields[1], "score": fields[2]}))
    return _qrels_from_rows(rows, path)


def _qrels_from_rows(rows: list[tuple[Path, int, dict]], source: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for path, number, row in rows:
        if "query-id" not in row or "corpus-id" not in row:
            raise DataFormatError(f"{path}:{number}: a qrels row needs 'query-id' and 'corpus-id'.")
        grade = row.get("score", 1)
        if not _is_integer(grade):
            raise DataFormatError(f"{path}:{number}: score {grade!r} is not an integer.")
        query_id, document_id = _identifier(row, "query-id", path, number), _identifier(row, "corpus-id", path, number)
        qrels.setdefault(query_id, {})[document_id] = int(float(grade))
    if not qrels:
        raise DataFormatError(f"{source}: no judgements.")
    return qrels


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of a file's non-blank lines; a missing file is an error."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found.")
    # utf-8-sig drops a byte-order mark, which would otherwise stick to the first id or break JSON.
    # Split on "\n" only: texts may hold U+2028, which str.splitlines() would break on.
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _identifier(row: dict, key: str, path: Path, number: int) -> str:
    """An id as text; only strings and integers are ids (str() would turn null into "None")."""
    value = row[key]
    if isinstance(value, str) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
        return str(value)
    raise DataFormatError(f"{path}:{number}: {key!r} must be a string or an integer, got {value!r:.60}.")


def _text(row: dict, key: str, path: Path, number: int) -> str:
    """A title or text, stripped; null or absent is empty, anything but a string is an error."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"{path}:{number}: {key!r} must be a string, got {type(value).__name__} {value!r:.60}.")
    return value.strip()


def _is_integer(value: object) -> bool:
    try:
        return float(value) == int(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: "inf"
        return False
