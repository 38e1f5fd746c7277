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

import difflib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.data import NANOBEIR_DATASETS
from workbench.provenance import describe

__all__ = [
    "PROFILES",
    "SETTINGS",
    "ARTIFACTS",
    "CONFIG",
    "TIME_UNITS",
    "TREC_PARTS",
    "MissingStepError",
    "Run",
    "check_setting",
    "compare",
    "contract",
    "maker_of",
    "open_run",
    "runs_root",
    "settings",
    "setup_display",
    "start_run",
    "with_time_units",
]

_TEXT_OR_NONE = (str, type(None))

# Every setting a run has: what it holds, and the kinds of value it takes (:func:`check_setting`).
SETTINGS: dict[str, tuple[str, tuple[type, ...]]] = {
    "seed": ("the seed of Python, numpy and torch in every step", (int,)),
    "data": ("training data: 'docstrings' (embedded), a NanoBEIR name or a BEIR/NanoBEIR folder", (str,)),
    "base_model": (
        "the model trained: a hub id or local path (None: the embedded all-MiniLM-L6-v2)",
        _TEXT_OR_NONE,
    ),
    "contrastive_steps": ("contrastive training steps (notebook 02)", (int,)),
    "contrastive_batch_size": ("contrastive batch size", (int,)),
    "contrastive_negatives": ("BM25 hard negatives per query, besides in-batch negatives", (int,)),
    "distillation_steps": ("distillation steps (notebook 03)", (int,)),
    "distillation_batch_size": ("distillation batch size", (int,)),
    "distillation_queries": ("training queries the teacher scores (None: all of them)", (int, type(None))),
    "distillation_negatives": ("BM25 negatives per query the teacher scores with the positive", (int,)),
    "teacher": (
        "a cross-encoder or ColBERT: hub id or local folder (None: this run's contrastive model)",
        _TEXT_OR_NONE,
    ),
    "evaluation_datasets": (
        "NanoBEIR names or NanoBEIR/BEIR folders notebook 06 evaluates on (None: the run's own test collections)",
        (list, type(None)),
    ),
    "learning_rate": ("the learning rate of both trainings", (float, int)),
    "device": ("'cpu', 'cuda', 'mps' (None: CUDA, else MPS, else the CPU)", _TEXT_OR_NONE),
}

# Settings counted in steps, examples or queries: a positive integer when given.
_COUNTS = {
    "contrastive_steps",
    "contrastive_batch_size",
    "distillation_steps",
    "distillation_batch_size",
    "distillation_queries",
    "distillation_negatives",
    "contrastive_negatives",
}

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seed": 0,
        "data": "docstrings",  # the embedded standard-library docstring set
        "base_model": None,  # None: the embedded all-MiniLM-L6-v2 (offline)
        # A step takes 7 to 10 s on two cores, and the notebook check trains in both of its passes:
        # 15 and 10 steps at twice the full profile's learning rate keep the lifts the notebooks assert
        # (02: nDCG@10 +0.14 against > 0.05; 09: three negatives against one, +0.10 and +0.07 against > 0.05).
        "contrastive_steps": 15,
        "contrastive_batch_size": 16,
        "contrastive_negatives": 1,  # BM25 hard negatives per query, besides in-batch negatives
        "distillation_steps": 10,
        "distillation_batch_size": 8,
        "distillation_queries": 80,  # training queries the teacher scores (10 steps of 8)
        "distillation_negatives": 3,  # BM25 negatives per query the teacher scores with the positive
        "teacher": None,  # None: the contrastive model of notebook 02
        "evaluation_datasets": None,  # None: the run's own evaluation collections (data/eval)
        "learning_rate": 6e-5,
        # Its outputs are committed and compared on every machine: the CPU everywhere, GPU or not.
        "device": "cpu",
    },
    # A real experiment, for a GPU: train bert-base-uncased on MS MARCO's NanoBEIR queries (the test split
    # held out by notebook 01, and those queries kept out of every evaluation), distil from a MiniLM
    # cross-encoder, evaluate on the 13 NanoBEIR datasets. Point data at a BEIR folder for more training data.
    "full": {
        "seed": 0,
        "data": "NanoMSMARCO",
        "base_model": "google-bert/bert-base-uncased",
        "contrastive_steps": 2000,
        "contrastive_batch_size": 32,
        "contrastive_negatives": 1,
        "distillation_steps": 2000,
        "distillation_batch_size": 16,
        "distillation_queries": None,  # all of them
        "distillation_negatives": 8,
        "teacher": "cross-encoder/ms-marco-MiniLM-L6-v2",
        "evaluation_datasets": list(NANOBEIR_DATASETS),
        "learning_rate": 3e-5,
        "device": None,  # None: CUDA, else MPS, else the CPU
    },
}

# The pipeline's record of how the run was configured (workbench.pipeline.configure).
CONFIG = "config.json"

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
    "trec/retrieval": ("05_retrieval_and_rerank", "per-query runs of every system, trec/retrieval/<dataset>/"),
    "trec/evaluation": ("06_nanobeir_evaluation", "per-query runs of every model, trec/evaluation/<dataset>/"),
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


def check_setting(name: str, value: Any) -> None:
    """ValueError unless ``name`` is a setting (:data:`SETTINGS`) and ``value`` a value it takes."""
    if name not in SETTINGS:
        close = difflib.get_close_matches(name, SETTINGS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown setting {name!r}.{hint} Known settings: {', '.join(SETTINGS)}.")
    kinds = SETTINGS[name][1]
    # bool is an int to Python, never a count or a seed to a user
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
        raise ValueError(f"Setting {name!r} takes {wanted}, got {value!r} ({type(value).__name__}).")
    if name in _COUNTS and value is not None and value < 1:
        raise ValueError(f"Setting {name!r} must be a positive integer, got {value}.")
    if name == "evaluation_datasets" and value is not None and not (value and all(isinstance(v, str) for v in value)):
        raise ValueError(f"Setting 'evaluation_datasets' takes a non-empty list of names or folders, got {value!r}.")


def settings(profile: str | Mapping[str, Any] = "quick", **overrides: Any) -> dict[str, Any]:
    """The profile's settings, with every override that is not ``None`` applied and checked.

    ``profile`` is a name in :data:`PROFILES`, or a resolved configuration (every setting, as the
    pipeline injects it from ``-p``/``-y``/``-f``, :func:`workbench.pipeline.configure`) whose
    ``"profile"`` names the profile it came from.
    """
    if isinstance(profile, Mapping):
        base = dict(profile)
        missing = set(SETTINGS) - set(base)
        if missing or base.get("profile") not in PROFILES:
            raise ValueError(
                f"A configuration needs every setting and a 'profile' in {sorted(PROFILES)}; "
                f"missing {sorted(missing | ({'profile'} - set(base)))}."
            )
    elif profile in PROFILES:
        base = dict(PROFILES[profile], profile=profile)
    else:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}.")
    chosen = {**base, **{key: value for key, value in overrides.items() if value is not None}}
    for name, value in chosen.items():
        if name != "profile":
            check_setting(name, value)
    return chosen


def compare(run_folders: Sequence[str | Path | Run], **options: Any):
    """One table across run folders, with paired significance against a baseline run: a
    :class:`workbench.comparison.Comparison` (its ``to_markdown()`` and ``to_latex()`` are for papers).
    ``options`` are :func:`workbench.comparison.compare`'s (labels, part, systems, metric, baseline, test, ...).

    Example: ``runs.compare(["runs/20250101-120000", "runs/20250102-090000"]).to_latex()``
    """
    from workbench.comparison import compare as compare_runs  # it imports this module

    return compare_runs(run_folders, **options)


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
        encoders: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``steps/<step>.json``: parameters, headline ``results`` (display text), ``outputs`` (what
        later steps read, :meth:`output`), seconds, and what made them (:func:`workbench.provenance.describe`:
        package versions, the workbench's git commit, the machine, torch's precision). ``encoders``, the
        models the step encoded with by name, are recorded as :func:`workbench.backends.describe` gives
        them: backend, the precision that ran (OpenVINO's bf16 on an AMX CPU, say), runtime, device, threads.
        Returns the results, so that a notebook cell ending with this call shows them."""
        from workbench.backends import describe as describe_encoder

        path = self.path / "steps" / f"{step}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "step": step,
            "parameters": parameters,
            "results": results or {},
            "outputs": outputs or {},
            "seconds": None if seconds is None else round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "encoders": {name: describe_encoder(model) for name, model in (encoders or {}).items()},
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

    def configuration(self) -> dict[str, Any]:
        """The run's resolved configuration: what the pipeline recorded in ``config.json`` (every profile
        key, :func:`workbench.pipeline.configure`), else the parameters its steps recorded, merged in
        step order (notebooks run by hand)."""
        if (self.path / CONFIG).exists():
            return json.loads((self.path / CONFIG).read_text(encoding="utf-8"))["configuration"]
        merged: dict[str, Any] = {}
        for entry in self.steps().values():  # a step may record its own knobs too (04's k): settings only
            merged.update({k: v for k, v in entry.get("parameters", {}).items() if k in SETTINGS or k == "profile"})
        return merged

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

    def load_model(
        self, name: str, device: str | None = None, backend: str = "torch", model_kwargs: dict | None = None
    ):
        """A model this run trained (``"contrastive"``, ``"distilled"``: ``models/<name>``), else a hub id or path.

        ``device`` None: CUDA, else MPS, else the CPU (Sentence Transformers' choice). ``backend`` and
        ``model_kwargs`` go to :class:`~workbench.models.ColBERT` (``"onnx"``, ``"openvino"``, INT8, half
        precision); pass the model to :meth:`record`'s ``encoders`` so the step says what ran.
        """
        from workbench.models import ColBERT

        options = {"device": device, "backend": backend, "model_kwargs": model_kwargs}
        # a bare name is one of this run's models; a path (absolute or not) or hub id is loaded as it is
        if f"models/{name}" in ARTIFACTS or ("/" not in name and (self.path / "models" / name).exists()):
            return ColBERT(str(self.require(f"models/{name}")), **options)
        return ColBERT(name, **options)

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

    def save_trec(self, part: str, dataset: str, qrels: Mapping, systems: Mapping[str, Mapping]) -> Path:
        """Keep every system's per-query ranking on ``dataset``, so significance can be computed later.

        Writes ``trec/<part>/<dataset>/``: ``qrels.txt`` (TREC qrels: ``qid 0 docid grade``), one TREC run
        per system (``qid Q0 docid rank score tag``, :func:`workbench.metrics.save_run`) and
        ``index.json``: the dataset's name and each system's display name -> file. ``part`` is
        ``"retrieval"`` (notebook 05) or ``"evaluation"`` (06). Every id is checked before anything is written.
        """
        from workbench.metrics import check_trec_ids, save_run

        if part not in TREC_PARTS:
            raise ValueError(f"part must be one of {TREC_PARTS}, got {part!r}.")
        folder = self.path / "trec" / part / _file_name(dataset)
        files = {name: f"{_file_name(name)}.trec" for name in systems}
        if len(set(files.values())) < len(files):
            raise ValueError(f"System names {sorted(systems)} give the same file name twice.")
        for run in systems.values():
            check_trec_ids(run)
        check_trec_ids(qrels)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "qrels.txt", "w", encoding="utf-8") as out:
            for query_id, judgements in qrels.items():
                for document_id, grade in judgements.items():
                    out.write(f"{query_id} 0 {document_id} {int(grade)}\n")
        for name, run in systems.items():
            save_run(run, str(folder / files[name]), name=name)
        index = {"dataset": dataset, "systems": files}
        (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return folder

    def trec(self, part: str) -> dict[str, tuple[dict, dict[str, dict]]]:
        """What :meth:`save_trec` kept under ``trec/<part>``: dataset -> (qrels, {system: run})."""
        from workbench.metrics import load_run

        found = {}
        for folder in sorted(self.require(f"trec/{part}").iterdir()):
            if not (folder / "index.json").exists():
                continue
            qrels: dict[str, dict[str, int]] = {}
            for line in (folder / "qrels.txt").read_text(encoding="utf-8").splitlines():
                query_id, _, document_id, grade = line.split()
                qrels.setdefault(query_id, {})[document_id] = int(grade)
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            systems = {name: load_run(str(folder / file)) for name, file in index["systems"].items()}
            found[index["dataset"]] = (qrels, systems)
        return found

    def save_figure(self, figure, name: str) -> None:
        """Save ``figure`` as ``plots/<name>.png`` (returns nothing: in a notebook, the figure shows itself)."""
        path = self.path / "plots" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")


# Where per-query runs come from: notebook 05's systems on the test collection, notebook 06's models on each dataset.
TREC_PARTS = ("retrieval", "evaluation")

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


def start_run(run_dir: str | Path | None = None, point_latest: bool = True) -> Run:
    """A run to fill: ``run_dir`` (or ``$WORKBENCH_RUN``) when given, else a new timestamped folder.

    ``runs/latest`` then points at it (unless ``point_latest`` is False), so the next notebooks find it.
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
    if point_latest:
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


def _file_name(name: str) -> str:
    """``name`` as one safe file name: runs of anything but letters, digits, ``.``, ``_`` and ``-`` become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not safe:
        raise ValueError(f"{name!r} cannot name a file.")
    return safe


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
