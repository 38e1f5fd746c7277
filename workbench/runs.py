"""Run folders: how the notebooks hand their work to each other, and what a run records.

A run folder (under ``runs/``, git-ignored) holds one pass of the pipeline, ``runs/<timestamp>/``:
``steps/<notebook>.json`` (each step's parameters, versions, seconds, headline results and the
outputs later steps read), then what :data:`ARTIFACTS` lists, each with the notebook that makes it
(:func:`contract` shows it as a table), and ``notebooks/``, the executed notebooks (``make run``).

``runs/latest`` points at the newest run. Notebook 01 starts a run (:func:`start_run`); the others
open one (:func:`open_run`): the one given, else ``$WORKBENCH_RUN``, else ``runs/latest``. What a
step needs and cannot find raises :class:`MissingStepError`, naming the notebook that makes it.
``$WORKBENCH_RUNS`` moves the whole ``runs/`` folder (tests use it).

A step's record keeps two things apart: ``results``, the headline a person reads (a notebook shows
it, the pipeline's summary prints it, its keys are display text), and ``outputs``, the values a later
step reads (:meth:`Run.output`), with stable keys. Code never reads ``results``.

Profiles (:data:`PROFILES`) hold the defaults of every notebook parameter: ``quick`` runs the
chain on the embedded default data and model in minutes, ``full`` is for real experiments.

Example::

    from workbench import runs

    run = runs.start_run()                       # runs/<timestamp>, and runs/latest -> it
    settings = runs.settings("quick", contrastive_steps=100)
    run.record("02_contrastive_training", settings, {"ndcg@10": 0.71})
    runs.open_run().require("models/contrastive")   # or MissingStepError: "... 02_contrastive_training.ipynb makes it"
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.data import NANOBEIR_DATASETS
from workbench.provenance import describe

__all__ = [
    "PROFILES",
    "ARTIFACTS",
    "TIME_UNITS",
    "MissingStepError",
    "Run",
    "contract",
    "maker_of",
    "open_run",
    "runs_root",
    "settings",
    "setup_display",
    "start_run",
    "with_time_units",
]

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seed": 0,
        "data": "docstrings",  # the embedded standard-library docstring set
        "base_model": None,  # None: the embedded all-MiniLM-L6-v2 (offline)
        "contrastive_steps": 30,
        "contrastive_batch_size": 16,
        "contrastive_negatives": 1,  # BM25 hard negatives per query, besides in-batch negatives
        "distillation_steps": 20,
        "distillation_batch_size": 8,
        "distillation_queries": 160,  # training queries the teacher scores (20 steps of 8)
        "distillation_negatives": 3,  # BM25 negatives per query the teacher scores with the positive
        "teacher": None,  # None: the contrastive model of notebook 02
        "evaluation_datasets": None,  # None: the run's own evaluation collections (data/eval)
        "learning_rate": 3e-5,
        # Its outputs are committed and compared on every machine: the CPU everywhere, GPU or not.
        "device": "cpu",
    },
    "full": {
        "seed": 0,
        "data": "docstrings",
        "base_model": None,
        "contrastive_steps": 2000,
        "contrastive_batch_size": 32,
        "contrastive_negatives": 1,
        "distillation_steps": 2000,
        "distillation_batch_size": 16,
        "distillation_queries": None,  # all of them
        "distillation_negatives": 8,
        "teacher": "cross-encoder/ms-marco-MiniLM-L-6-v2",
        "evaluation_datasets": list(NANOBEIR_DATASETS),
        "learning_rate": 3e-5,
        "device": None,  # None: CUDA, else MPS, else the CPU
    },
}


# The run-folder contract: every artifact a notebook leaves for others, the step that makes it, what it holds.
# A path under an artifact (``index/<collection>``) is made by the same step.
ARTIFACTS: dict[str, tuple[str, str]] = {
    "data/train": ("01_build_dataset", "the training collection, a BEIR folder"),
    "data/eval": ("01_build_dataset", "evaluation collections, one BEIR folder each (the test split, its crops)"),
    "data/triplets": ("01_build_dataset", "contrastive triplets with hard negatives (a datasets folder)"),
    "models/contrastive": ("02_contrastive_training", "the contrastive model (a Sentence Transformers folder)"),
    "results/history-contrastive.csv": ("02_contrastive_training", "loss and evaluation per step"),
    "models/distilled": ("03_distillation", "the distilled model"),
    "results/history-distillation.csv": ("03_distillation", "loss and evaluation per step"),
    "index": ("04_indexing", "a Voyager index per test collection, index/<collection>"),
    "index-comparison": ("04_indexing", "the Exact, Voyager and PLAID indexes compared"),
    "results/recall-latency.csv": ("04_indexing", "the recall-against-latency sweep"),
    "results/index-comparison.csv": ("04_indexing", "bytes, build time, latency and recall per index"),
    "results/retrieval.csv": ("05_retrieval_and_rerank", "retrieval and rerank metrics per system"),
    "results/evaluation.csv": ("06_nanobeir_evaluation", "metrics per model and dataset"),
    "card": ("07_model_card", "the model card (README.md)"),
}


def maker_of(part: str) -> str | None:
    """The notebook (file name) that makes ``part`` of a run folder by :data:`ARTIFACTS`, else None."""
    parts = Path(part).parts
    for length in range(len(parts), 0, -1):
        entry = ARTIFACTS.get("/".join(parts[:length]))
        if entry:
            return f"{entry[0]}.ipynb"
    if parts[:1] == ("steps",) and len(parts) == 2:
        return f"{Path(parts[1]).stem}.ipynb"
    return None


def contract() -> pd.DataFrame:
    """:data:`ARTIFACTS` as a table: artifact, the notebook that makes it, what it holds."""
    return pd.DataFrame(
        [{"artifact": part, "made by": f"{step}.ipynb", "holds": holds} for part, (step, holds) in ARTIFACTS.items()]
    ).set_index("artifact")


class MissingStepError(FileNotFoundError):
    """A notebook needs what an earlier notebook makes, and it is not there."""


def settings(profile: str = "quick", **overrides: Any) -> dict[str, Any]:
    """The profile's defaults, with every override that is not ``None`` applied."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}.")
    unknown = set(overrides) - set(PROFILES[profile])
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; known: {sorted(PROFILES[profile])}.")
    chosen = dict(PROFILES[profile], profile=profile)
    chosen.update({key: value for key, value in overrides.items() if value is not None})
    return chosen


def runs_root() -> Path:
    """``$WORKBENCH_RUNS``, else ``runs/`` in the project (the folder holding ``pyproject.toml``)."""
    if os.environ.get("WORKBENCH_RUNS"):
        return Path(os.environ["WORKBENCH_RUNS"])
    project = Path(__file__).resolve().parents[1]
    return (project if (project / "pyproject.toml").exists() else Path.cwd()) / "runs"


@dataclass(frozen=True)
class Run:
    """One run folder; ``run / "models/contrastive"`` is a path inside it."""

    path: Path

    def __truediv__(self, part: str) -> Path:
        return self.path / part

    def require(self, part: str, made_by: str | None = None) -> Path:
        """The path of ``part``, or a :class:`MissingStepError` that names the notebook making it
        (``made_by``, by default the one :data:`ARTIFACTS` names)."""
        path = self.path / part
        if not path.exists():
            maker = made_by or maker_of(part)
            raise MissingStepError(
                f"{path} is missing: {f'notebooks/{maker}' if maker else 'an earlier notebook'} makes it. "
                "Run that notebook first "
                "(or `make run` for the whole chain)."
            )
        return path

    def record(
        self,
        step: str,
        parameters: dict[str, Any],
        results: dict[str, Any] | None = None,
        seconds: float | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``steps/<step>.json``: parameters, headline ``results`` (display text), ``outputs`` (what
        later steps read, :meth:`output`), seconds, and what made them (:func:`workbench.provenance.describe`:
        package versions, the workbench's git commit, the machine, torch's precision). Returns the results,
        so that a notebook cell ending with this call shows them."""
        path = self.path / "steps" / f"{step}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "step": step,
            "parameters": parameters,
            "results": results or {},
            "outputs": outputs or {},
            "seconds": None if seconds is None else round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **describe(),
        }
        path.write_text(json.dumps(entry, indent=2, default=str) + "\n", encoding="utf-8")
        return entry["results"]

    def steps(self) -> dict[str, dict[str, Any]]:
        """Every recorded step, by name, in name order."""
        return {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((self.path / "steps").glob("*.json"))
        }

    def output(self, step: str, key: str) -> Any:
        """A value ``step`` recorded for later steps (its ``outputs``), or a :class:`MissingStepError`."""
        path = self.require(f"steps/{step}.json")
        outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs", {})
        if key not in outputs:
            raise MissingStepError(
                f"{path} records no output {key!r} (it has {sorted(outputs)}): "
                f"run notebooks/{step}.ipynb again with this version of the workbench."
            )
        return outputs[key]

    def load_model(self, name: str, device: str | None = None):
        """A model this run trained (``"contrastive"``, ``"distilled"``: ``models/<name>``), else a hub id or path.

        ``device`` None: CUDA, else MPS, else the CPU (Sentence Transformers' choice).
        """
        from workbench.models import ColBERT

        # a bare name is one of this run's models; a path (absolute or not) or hub id is loaded as it is
        if f"models/{name}" in ARTIFACTS or ("/" not in name and (self.path / "models" / name).exists()):
            return ColBERT(str(self.require(f"models/{name}")), device=device)
        return ColBERT(name, device=device)

    def test_collection(self):
        """The held-out test collection notebook 01 saved (its name is one of 01's outputs)."""
        from workbench.data import load_beir

        name = self.output("01_build_dataset", "test_collection")
        return load_beir(self.require(f"data/eval/{name}"), name=name)

    def evaluation_collections(self) -> list:
        """Every collection notebook 01 saved for evaluation (``data/eval/*``), by name."""
        from workbench.data import load_beir

        folders = sorted(path for path in self.require("data/eval").iterdir() if path.is_dir())
        return [load_beir(folder) for folder in folders]

    def save_table(self, table: pd.DataFrame, name: str) -> Path:
        path = self.path / "results" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path)
        return path

    def table(self, name: str, made_by: str | None = None) -> pd.DataFrame:
        """``results/<name>.csv``, as :meth:`save_table` wrote it."""
        return pd.read_csv(self.require(f"results/{name}.csv", made_by), index_col=0)

    def save_figure(self, figure, name: str) -> None:
        """Save ``figure`` as ``plots/<name>.png`` (returns nothing: in a notebook, the figure shows itself)."""
        path = self.path / "plots" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")


# Columns that hold timings, and their units: shown as "12.3 ms" so that a reader (and the notebook
# check's replace patterns, nbconfig/tolerances.yaml) can tell a timing, which varies from run to run, from a result.
TIME_UNITS = {"ms_per_query": "ms", "seconds": "s", "build_seconds": "s"}


def with_time_units(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with its timing columns written with their unit."""
    shown = table.copy()
    for column, unit in TIME_UNITS.items():
        if column in shown.columns:
            shown[column] = [f"{value:.2f} {unit}" for value in shown[column]]
    return shown


class _QueryTruncationNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "filled the entire query_expansion length" not in record.getMessage()


def setup_display() -> None:
    """Notebook display settings: 3-decimal tables, small figures (committed outputs stay small).

    It also drops Sentence Transformers' notice that a query reached ``query_length``: ColBERT
    cuts queries at that length by design (PyLate does so silently), and a notebook should not
    show that as a warning.
    """
    import matplotlib

    transformer_log = logging.getLogger("sentence_transformers.base.modules.transformer")
    if not any(isinstance(f, _QueryTruncationNotice) for f in transformer_log.filters):
        transformer_log.addFilter(_QueryTruncationNotice())
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_colwidth", 80)
    matplotlib.rcParams.update({"figure.dpi": 72, "savefig.dpi": 100})


def start_run(run_dir: str | Path | None = None) -> Run:
    """A run to fill: ``run_dir`` (or ``$WORKBENCH_RUN``) when given, else a new timestamped folder.

    ``runs/latest`` then points at it, so the next notebooks find it.
    """
    chosen = run_dir or os.environ.get("WORKBENCH_RUN")
    root = runs_root()
    if chosen:
        path = Path(chosen)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, suffix = root / stamp, 1
        while path.exists():
            suffix += 1
            path = root / f"{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    _point_latest(root, path)
    return Run(path)


def open_run(run_dir: str | Path | None = None) -> Run:
    """The run given, else ``$WORKBENCH_RUN``, else ``runs/latest``; it must exist."""
    chosen = run_dir or os.environ.get("WORKBENCH_RUN")
    path = Path(chosen) if chosen else runs_root() / "latest"
    if not path.is_dir():
        raise MissingStepError(
            f"No run folder at {path}: notebooks/01_build_dataset.ipynb starts one. Run it first "
            "(or `make run` for the whole chain)."
        )
    return Run(path.resolve())


def _point_latest(root: Path, path: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    if latest.resolve() == path.resolve():
        return
    temporary = root / f".latest-{os.getpid()}"
    if temporary.is_symlink():
        temporary.unlink()
    temporary.symlink_to(os.path.relpath(path.resolve(), root.resolve()), target_is_directory=True)
    os.replace(temporary, latest)
