"""Model cards: a Hugging Face README with YAML front matter, written in the workbench's own words.

What goes in: a :class:`workbench.models.ColBERT`, and optionally evaluation tables (a pandas table
per evaluator, one row per dataset, as :class:`workbench.evaluation.NanoBEIREvaluator` and
:class:`workbench.evaluation.ColBERTInformationRetrievalEvaluator` keep in ``.table``). What the
trainer recorded (dataset sizes and token statistics, loss, hyperparameters, logs, versions) is
read from ``model.model_card_data``; evaluators that ran during training are picked up too.

What comes out: the card's text (:func:`render_card`), or a README.md (:func:`save_card`;
``model.save_pretrained`` writes one as well). The front matter has ``model-index`` with one
result block per dataset, whose values are exactly the evaluators' numbers.

The trainer keeps what it records in memory only, so saving a model also writes that record
(``workbench_card.json``, :func:`save_record`) and loading restores it (:func:`load_record`): a card
rendered after a reload is the card rendered at save time.

Example::

    from workbench import cards, evaluation

    evaluator = evaluation.NanoBEIREvaluator(dataset_names=["../shared/data/msmarco-dl19-5k"])
    evaluator(model)
    cards.save_card(model, "my-colbert", evaluations={"NanoBEIR": evaluator.table})
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jinja2 import Environment

from workbench import __version__, metrics
from workbench.provenance import versions
from workbench.utils import markdown_table

__all__ = [
    "COLBERT_CITATION",
    "TEMPLATE",
    "RECORD_FILE",
    "RECORDED_FIELDS",
    "render_card",
    "save_card",
    "front_matter",
    "evaluation_tables",
    "save_record",
    "load_record",
    "versions",  # workbench.provenance.versions, still importable from here
]

COLBERT_CITATION = """@inproceedings{khattab2020colbert,
    title = {ColBERT: Efficient and Effective Passage Search via Contextualized Late Interaction over BERT},
    author = {Khattab, Omar and Zaharia, Matei},
    booktitle = {Proceedings of the 43rd International ACM SIGIR Conference on Research and Development in Information Retrieval},
    pages = {39--48},
    year = {2020}
}"""  # noqa: E501 (the citation as its authors give it)

# The card's Jinja2 template: a package data file (pyproject.toml ships it), read and edited as Markdown.
TEMPLATE = resources.files("workbench").joinpath("templates/model_card.md").read_text(encoding="utf-8")

RECORD_FILE = "workbench_card.json"
# What a card reads from ``model.model_card_data``, saved beside the weights.
RECORDED_FIELDS = (
    "base_model",
    "language",
    "license",
    "model_id",
    "tags",
    "train_datasets",
    "non_default_hyperparameters",
    "all_hyperparameters",
    "training_logs",
    "citations",
)


def evaluation_tables(model, evaluations: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """The given tables, else those of workbench evaluators recorded in ``model.model_card_data``
    (or restored with the model's record)."""
    if evaluations:
        return dict(evaluations)
    found = dict(getattr(model, "recorded_evaluations", {}))
    for evaluator in getattr(model.model_card_data, "eval_results_dict", {}) or {}:
        table = getattr(evaluator, "table", None)
        if isinstance(table, pd.DataFrame):
            found[getattr(evaluator, "name", type(evaluator).__name__)] = table
    return found


def save_record(model, folder: str | Path) -> Path:
    """Write what the card reads (training data, loss, hyperparameters, logs, evaluations) as JSON."""
    data = model.model_card_data
    record: dict[str, Any] = {name: getattr(data, name, None) for name in RECORDED_FIELDS}
    for name in ("non_default_hyperparameters", "all_hyperparameters"):
        # kept as the card shows them: a value's text is what the card prints
        record[name] = {key: str(value) for key, value in (record[name] or {}).items()}
    record["evaluations"] = {name: table.to_dict(orient="split") for name, table in evaluation_tables(model).items()}
    path = Path(folder) / RECORD_FILE
    path.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def load_record(model, model_name_or_path: str) -> bool:
    """Restore a saved record into ``model`` (a local folder, or a hub id when the hub is reachable)."""
    from sentence_transformers.util import load_file_path

    try:
        path = load_file_path(str(model_name_or_path), RECORD_FILE)
    except OSError:  # the hub cannot be reached: the model loads without its record
        return False
    if path is None:
        return False
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not a workbench card record ({error}); delete it or save the model again."
        ) from None
    for name in RECORDED_FIELDS:
        if record.get(name) is not None:
            setattr(model.model_card_data, name, record[name])
    model.recorded_evaluations = {
        name: pd.DataFrame(**split) for name, split in (record.get("evaluations") or {}).items()
    }
    return True


def render_card(
    model,
    evaluations: dict[str, pd.DataFrame] | None = None,
    model_id: str | None = None,
    title: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
) -> str:
    """The card as Markdown text; see the module docstring."""
    card_data = model.model_card_data
    tables = evaluation_tables(model, evaluations)
    base_model = getattr(card_data, "base_model", None)
    language = language or (card_data.language or None)
    license = license or card_data.license
    datasets = [_dataset_section(entry) for entry in (card_data.train_datasets or [])]
    training_datasets = ", ".join(d["name"] or f"unnamed ({d['size']} rows)" for d in datasets)
    context = {
        "front_matter": yaml.safe_dump(
            _front_matter(model, tables, base_model, language, license, model_id), sort_keys=False, allow_unicode=True
        ),
        "title": title or (f"ColBERT model based on {base_model}" if base_model else "ColBERT model"),
        "workbench_version": __version__,
        "base_model": base_model,
        "document_length": model.document_length,
        "query_length": model.query_length,
        "expansion": model.do_query_expansion,
        "dimension": model.get_embedding_dimension(),
        "query_prefix": model.query_prefix.strip(),
        "document_prefix": model.document_prefix.strip(),
        "training_datasets": training_datasets,
        "language": ", ".join(language) if isinstance(language, list) else language,
        "license": license,
        "architecture": str(model),
        "model_id": model_id or getattr(card_data, "model_id", None) or "path/to/this-model",
        "evaluations": [{"name": name, "markdown": _metric_table(table)} for name, table in tables.items()],
        "datasets": datasets,
        "non_default_hyperparameters": card_data.non_default_hyperparameters or {},
        "all_hyperparameters": card_data.all_hyperparameters or {},
        "training_logs": _logs_table(card_data.training_logs),
        "versions": versions(),
        "citations": {"ColBERT": COLBERT_CITATION, **(card_data.citations or {})},
    }
    # Jinja's default drops the template file's final newline: the card ends as its last section does
    return Environment().from_string(TEMPLATE).render(**context)


def save_card(model, folder: str | Path, **options: Any) -> Path:
    """Write the card as ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_card(model, **options), encoding="utf-8")
    return path


def front_matter(card_text: str) -> dict:
    """Parse the YAML front matter of a card."""
    if not card_text.startswith("---\n"):
        raise ValueError("The card has no YAML front matter.")
    return yaml.safe_load(card_text.split("---\n", 2)[1])


def _front_matter(model, tables, base_model, language, license, model_id) -> dict:
    metric_names = [f"{metrics.SIMILARITY}_{display}" for display, _ in metrics.SEED_METRICS]
    matter: dict[str, Any] = {}
    if language:
        matter["language"] = language if isinstance(language, list) else [language]
    matter["tags"] = ["ColBERT", "workbench", "sentence-transformers", "sentence-similarity", "feature-extraction"]
    if "generated_from_trainer" in (model.model_card_data.tags or []):
        matter["tags"].append("generated_from_trainer")
    if base_model:
        matter["base_model"] = base_model
    names = [d.get("name") for d in (model.model_card_data.train_datasets or []) if d.get("name")]
    if names:
        matter["datasets"] = names
    matter["pipeline_tag"] = "sentence-similarity"
    matter["library_name"] = "sentence-transformers"
    if license:
        matter["license"] = license
    if tables:
        matter["metrics"] = [name for name in metric_names if any(name in t.columns for t in tables.values())]
        results = []
        for table in tables.values():
            for dataset, row in table.iterrows():
                results.append(
                    {
                        "task": {"type": "information-retrieval", "name": "Information Retrieval"},
                        "dataset": {"name": str(dataset), "type": str(dataset)},
                        "metrics": [
                            {"type": column, "value": float(value), "name": _metric_label(column)}
                            for column, value in row.items()
                        ],
                    }
                )
        matter["model-index"] = [{"name": model_id or "ColBERT model", "results": results}]
    return matter


def _metric_label(column: str) -> str:
    similarity, _, metric = column.partition("_")
    name, _, cutoff = metric.partition("@")
    return f"{similarity} {name.capitalize()}@{cutoff}" if cutoff else column


def _metric_table(table: pd.DataFrame) -> str:
    """Metrics as rows, datasets as columns; the primary metric's row in bold."""
    primary = f"{metrics.SIMILARITY}_{metrics.PRIMARY_METRIC}"
    rows = []
    for column in table.columns:
        cells = [column, *(f"{value:.4f}" for value in table[column])]
        rows.append([f"**{cell}**" for cell in cells] if column == primary else cells)
    return markdown_table(["Metric", *table.index], rows, align="l" + "r" * len(table.index))


def _dataset_section(entry: dict) -> dict:
    stats = entry.get("stats") or {}
    stat_rows = [["type", *(s.get("dtype", "") for s in stats.values())]]
    for key in ("min", "mean", "max"):
        stat_rows.append([key, *((s.get("data") or {}).get(key, "") for s in stats.values())])
    examples = entry.get("examples") or {}  # column -> values, as Sentence Transformers records them
    samples = ""
    if examples:
        columns = list(examples)
        rows = list(zip(*(examples[c] for c in columns)))[:3]
        samples = markdown_table([f"`{c}`" for c in columns], [[_cell(value) for value in row] for row in rows])
    loss = entry.get("loss") or {}
    return {
        "name": entry.get("name"),
        "size": entry.get("size"),
        "columns": ", ".join(c.replace("<code>", "`").replace("</code>", "`") for c in entry.get("columns", [])),
        "stats_markdown": markdown_table(["", *(f"`{c}`" for c in stats)], stat_rows) if stats else "(not recorded)",
        "samples_markdown": samples,
        "loss": loss.get("fullname") if isinstance(loss, dict) else str(loss),
        "loss_parameters": loss.get("config_code", "") if isinstance(loss, dict) else "",
    }


def _cell(value: Any) -> str:
    # escaped before the cut, so that the 120 characters are those the card prints (markdown_table
    # leaves an escaped | as it is)
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text[:120] + ("…" if len(text) > 120 else "")


def _logs_table(logs: list[dict] | None) -> str:
    if not logs:
        return ""
    frame = pd.DataFrame(logs)
    rows = [
        ["-" if pd.isna(v) else (f"{v:.4f}" if isinstance(v, float) else v) for v in row]
        for row in frame.itertuples(index=False)
    ]
    return markdown_table(list(frame.columns), rows)
