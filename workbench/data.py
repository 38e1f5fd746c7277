"""Retrieval collections: BEIR folders and NanoBEIR, loaded into one :class:`Collection` type.

What goes in:

- :func:`load_beir`: a BEIR folder (``corpus.jsonl`` with ``_id``/``title``/``text``,
  ``queries.jsonl`` with ``_id``/``text``, ``qrels/<split>.tsv`` with query id, document id, score;
  a header line is optional, TREC's four-column form is accepted too).
- :func:`load_nanobeir`: one of the 13 NanoBEIR datasets by name (``"scifact"``, ``"NanoSciFact"``)
  or hub id (``"zeta-alpha-ai/NanoSciFact"``; configs ``corpus``, ``queries``, ``qrels``, split
  ``train``), or a local folder in that layout (``corpus/``, ``queries/``, ``qrels/`` holding
  parquet or jsonl files), or a BEIR folder.

Rows whose title and text are both empty are left out: there is nothing to embed. Ids are
strings or integers (a null or a list is an error); texts and titles are strings or null.

What comes out: a :class:`Collection` with ``corpus`` (document id -> text, the title joined in
front of the text), ``titles``, ``queries`` (query id -> text) and ``qrels`` (query id ->
{document id: grade}, zero grades kept: they are judged non-relevant documents). Metrics cover the
queries that have both a text and a judgement of grade >= 1 (:attr:`Collection.judged_queries`,
:attr:`Collection.judged_qrels`, BEIR's convention); judged queries without a text cannot be run:
they are counted (:attr:`Collection.judged_without_text`, the repr, :func:`statistics`) and a
warning names them when the collection is loaded.

Files are read as UTF-8 with an optional byte-order mark. Lines are split on ``\\n`` only: passage
texts contain U+2028, which ``str.splitlines`` would treat as a line break. The first qrels line is a
header only when its score field is a header word (``score``); any other non-integer score is an
error. A malformed line or a missing file raises an error that names the file and line.

Example::

    from workbench import data

    collection = data.load_beir("../shared/data/msmarco-dl19-5k")
    print(collection)  # Collection('msmarco-dl19-5k': 5000 documents, 50 queries, 43 judged)
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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
# What the third field of a qrels header line says (BEIR writes "query-id corpus-id score").
QRELS_HEADER_WORDS = {"score", "relevance", "grade", "label"}


class DataFormatError(ValueError):
    """A collection file is missing or has a malformed line (the message names file and line)."""


@dataclass
class Collection:
    """A retrieval collection: documents, queries and graded relevance judgements."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    titles: dict[str, str] = field(default_factory=dict)

    @property
    def judged_queries(self) -> dict[str, str]:
        """Queries with a text and at least one judgement of grade >= 1, the ones that enter the metrics."""
        return {
            query_id: text
            for query_id, text in self.queries.items()
            if any(grade >= 1 for grade in self.qrels.get(query_id, {}).values())
        }

    @property
    def judged_qrels(self) -> dict[str, dict[str, int]]:
        """The judgements of :attr:`judged_queries`: the qrels a collection's metrics are computed on."""
        return {query_id: self.qrels[query_id] for query_id in self.judged_queries}

    @property
    def judged_without_text(self) -> list[str]:
        """Ids of queries judged relevant (grade >= 1) that have no text: they cannot be run."""
        return [
            query_id for query_id, judgements in self.qrels.items()
            if query_id not in self.queries and any(grade >= 1 for grade in judgements.values())
        ]

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
            f"{len(self.judged_queries)} judged"
            + (f", {without_text} judged without text)" if without_text else ")")
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
            "relevant per query": sum(sum(g >= 1 for g in collection.qrels[q].values()) for q in judged) / max(len(judged), 1),
            "words per query": sum(len(t.split()) for t in collection.queries.values()) / max(len(collection.queries), 1),
            "words per document": sum(len(t.split()) for t in collection.corpus.values()) / max(len(collection.corpus), 1),
        }
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def load_beir(folder: str | Path, split: str = "test", name: str | None = None) -> Collection:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: no such collection folder.")
    corpus, titles = _documents(_read_jsonl(folder / "corpus.jsonl"), folder / "corpus.jsonl")
    queries, _ = _documents(_read_jsonl(folder / "queries.jsonl"), folder / "queries.jsonl")
    qrels = _read_qrels_tsv(folder / "qrels" / f"{split}.tsv")
    return _loaded(Collection(name or folder.name, corpus, queries, qrels, titles))


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
            body = text[len(title):].strip() if title and text.startswith(title) else text
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
    """Load a NanoBEIR dataset from a local folder (NanoBEIR or BEIR layout), a name or a hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        if (path / "corpus.jsonl").exists():
            return load_beir(path)
        return _load_nanobeir_folder(path)
    return _load_nanobeir_hub(nanobeir_hub_id(str(name_or_path)))


def nanobeir_hub_id(name: str) -> str:
    """``"scifact"``, ``"NanoSciFact"`` or ``"zeta-alpha-ai/NanoSciFact"`` -> the hub id."""
    short = name.split("/")[-1].lower().removeprefix("nano")
    if short not in NANOBEIR_DATASETS:
        raise ValueError(
            f"{name!r} is neither a folder nor a NanoBEIR dataset; known: {sorted(NANOBEIR_DATASETS)}."
        )
    return f"{NANOBEIR_ORGANISATION}/{NANOBEIR_DATASETS[short]}"


def _load_nanobeir_folder(folder: Path) -> Collection:
    parts = {}
    for part in ("corpus", "queries", "qrels"):
        files = sorted(
            file for file in (folder / part).glob("*") if file.suffix in (".parquet", ".jsonl", ".json")
        )
        if not files:
            raise DataFormatError(f"{folder / part}: no parquet or jsonl files (NanoBEIR layout expected).")
        rows: list[tuple[Path, int, dict]] = []
        for file in files:
            rows.extend(_read_table(file))
        parts[part] = rows
    corpus, titles = _documents(parts["corpus"], folder / "corpus")
    queries, _ = _documents(parts["queries"], folder / "queries")
    return _loaded(Collection(folder.name, corpus, queries, _qrels_from_rows(parts["qrels"], folder / "qrels"), titles))


def _load_nanobeir_hub(hub_id: str) -> Collection:
    import datasets

    parts = {}
    for part in ("corpus", "queries", "qrels"):
        try:
            table = datasets.load_dataset(hub_id, part, split="train")
        except Exception as error:  # the hub client raises many types; the cause is kept
            raise DataFormatError(
                f"Could not load {hub_id} ({part}) from the hub: {error}. Offline, pass a local folder instead."
            ) from error
        parts[part] = [(Path(hub_id) / part, number, row) for number, row in enumerate(table, start=1)]
    corpus, titles = _documents(parts["corpus"], Path(hub_id) / "corpus")
    queries, _ = _documents(parts["queries"], Path(hub_id) / "queries")
    qrels = _qrels_from_rows(parts["qrels"], Path(hub_id) / "qrels")
    return _loaded(Collection(hub_id.split("/")[-1], corpus, queries, qrels, titles))


def _loaded(collection: Collection) -> Collection:
    collection.warn_judged_without_text()
    return collection


def _read_jsonl(path: Path) -> list[tuple[Path, int, dict]]:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found.")
    rows = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
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
        import pandas as pd

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
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found.")
    rows = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t") if "\t" in line else line.split()
        if len(fields) == 4:  # TREC: query-id, iteration, document-id, grade
            fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise DataFormatError(f"{path}:{number}: expected 3 columns (query-id, corpus-id, score), got {len(fields)}.")
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


def _lines(path: Path) -> list[str]:
    # utf-8-sig drops a byte-order mark, which would otherwise stick to the first id or break JSON.
    # Split on "\n" only: texts may hold U+2028, which str.splitlines() would break on.
    return path.read_text(encoding="utf-8-sig").split("\n")


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
