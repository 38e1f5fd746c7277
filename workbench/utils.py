"""Training glue: the collator that tokenises ColBERT columns, distillation rows joined on the fly, and the
Markdown tables of cards and benchmarks.

Example (PyLate's README, unchanged but for the import)::

    from sentence_transformers import SentenceTransformerTrainer
    from workbench import losses, models, utils

    model = models.ColBERT(model_name_or_path="sentence-transformers/all-MiniLM-L6-v2")
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=losses.Contrastive(model=model),
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    )
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sentence_transformers.multi_vector_encoder import MultiVectorEncoderDataCollator

__all__ = ["ColBERTCollator", "KDProcessing", "LABEL_COLUMNS", "numbered_columns", "markdown_table"]

LABEL_COLUMNS = ("label", "scores")


class ColBERTCollator:
    """Tokenise a batch of rows: the first text column as queries, the others as documents.

    ``tokenize_fn`` is ``model.tokenize`` (it marks, expands and truncates as the model does).
    A ``label`` or ``scores`` column (teacher scores, for distillation) becomes the batch's label.
    Each column is stamped with its task, so the model's mask (expansion, skiplist) applies.
    """

    def __init__(self, tokenize_fn: Callable[..., dict], valid_label_columns: Sequence[str] = LABEL_COLUMNS) -> None:
        self.tokenize_fn = tokenize_fn
        self.valid_label_columns = list(valid_label_columns)
        self._collator = MultiVectorEncoderDataCollator(
            preprocess_fn=self._tokenize, valid_label_columns=self.valid_label_columns
        )

    def _tokenize(self, texts: list[str], prompt: str | None = None, task: str | None = None, **kwargs: Any) -> dict:
        if prompt:
            raise ValueError(
                f"The trainer passed the prompt {prompt!r}: ColBERT models carry their markers themselves. "
                "Remove `prompts` from the training arguments."
            )
        return self.tokenize_fn(texts, is_query=task == "query", **kwargs)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collator(features)


class KDProcessing:
    """Join distillation rows with query and document tables, as a ``datasets`` transform.

    Rows hold ``query_id``, ``document_ids`` (n ids) and ``scores`` (n teacher scores); ``queries``
    and ``documents`` are tables with ``query_id``/``text`` and ``document_id``/``text`` columns
    (or dicts from id to text). The transform yields ``query``, ``document_0`` ... ``document_{n-1}``
    and ``scores``: the columns :class:`workbench.losses.Distillation` trains on.

    Example::

        train = train.set_transform(utils.KDProcessing(queries=queries, documents=documents).transform)
        # or, joined once: train = utils.KDProcessing(queries=queries, documents=documents).dataset(train)
    """

    def __init__(self, queries: Any, documents: Any, n_ways: int | None = None) -> None:
        self.queries = _as_mapping(queries, "query_id")
        self.documents = _as_mapping(documents, "document_id")
        self.n_ways = n_ways

    def transform(self, rows: dict[str, list]) -> dict[str, list]:
        ways = self.n_ways or min(len(ids) for ids in rows["document_ids"])
        out: dict[str, list] = {"query": [self.queries[str(q)] for q in rows["query_id"]]}
        for position in range(ways):
            out[f"document_{position}"] = [self.documents[str(ids[position])] for ids in rows["document_ids"]]
        out["scores"] = [list(scores[:ways]) for scores in rows["scores"]]
        return out

    def dataset(self, rows):
        """``rows`` joined with their texts once (not on the fly), columns in the loss's order:
        ``query``, ``document_0`` ... ``document_{n-1}``, ``scores``."""
        joined = rows.map(self.transform, batched=True, remove_columns=rows.column_names)
        return joined.select_columns(["query", *numbered_columns(joined.column_names, "document_"), "scores"])


def numbered_columns(column_names: Sequence[str], prefix: str) -> list[str]:
    """The ``<prefix><number>`` columns among ``column_names``, in numeric order (``_10`` after ``_9``)."""
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)")
    numbered = [(int(match.group(1)), name) for name in column_names if (match := pattern.fullmatch(name))]
    return [name for _, name in sorted(numbered)]


def _as_mapping(table: Any, id_column: str) -> dict[str, str]:
    if isinstance(table, dict):
        return {str(key): value for key, value in table.items()}
    missing = {id_column, "text"} - set(table.column_names)
    if missing:
        raise ValueError(f"The table needs columns {id_column!r} and 'text'; missing {sorted(missing)}.")
    return {str(key): text for key, text in zip(table[id_column], table["text"])}


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub Markdown table as text: the header row, the separator, one line per row.

    Cells are written with ``str``; a ``|`` in a cell is escaped (one already escaped is left as it
    is). ``align`` has one letter per column, ``l`` (left, the default) or ``r`` (right).

    >>> print(markdown_table(["name", "score"], [["a|b", 0.5]], align="lr"))
    | name | score |
    |:--|--:|
    | a\\|b | 0.5 |
    """

    def cells(values: Sequence[Any]) -> list[str]:
        return [re.sub(r"(?<!\\)\|", r"\\|", str(value)) for value in values]

    # Spaced as the model cards have always been (their text is compared byte for byte): an empty
    # header cell, the corner above row labels, is one space wide, an empty body cell two.
    header = "|" + "|".join(f" {cell} " if cell else " " for cell in cells(headers)) + "|"
    separator = "|" + "|".join("--:" if side == "r" else ":--" for side in align or "l" * len(headers)) + "|"
    return "\n".join([header, separator, *("| " + " | ".join(cells(row)) + " |" for row in rows)])
