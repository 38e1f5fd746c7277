"""The main job (``make run``): execute the numbered notebooks headless, in order, into a new run folder.

    python -m workbench.pipeline [--profile quick|full] [-f experiment.yaml] [-y YAML] [-p NAME VALUE ...]
                                 [--run-dir runs/my-run] [--only 04 05 ...]

The settings (:data:`workbench.runs.SETTINGS`) start from the profile and take, in this order, the
settings of ``-f`` files (YAML: ``profile:`` and any settings), ``-y`` YAML texts and ``-p NAME VALUE``
pairs, papermill's conventions (a ``-p`` value is read as YAML: ``500`` an int, ``3e-5`` a float,
``[a, b]`` a list, ``None`` or ``null`` nothing). Every name and value is checked before anything
runs (an unknown name lists the known ones), a value that names an existing file or folder is made
absolute (the notebooks run in ``notebooks/``), and the run folder records the result in
``config.json`` (:func:`configure`).

papermill executes each notebook: it puts a cell tagged ``injected-parameters`` after the one tagged
``parameters``, setting ``profile`` (the resolved configuration) and ``run_dir``. The executed
notebooks land in ``<run>/notebooks/`` beside what they made (data, models, index, results, card,
plots), and a summary table closes the job. A failing notebook is saved as far as it ran, and the
job stops with its name and the error.

``--refresh-committed`` executes the notebooks in place, with their own defaults, to refresh the
outputs committed with them (what the notebook check, ``workbench.nbcheck``, compares in ``make test``);
with ``--only`` just those (``make notebooks ONLY="04 05"``). That runs on nbclient directly:
papermill would write its own metadata into every committed cell.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import yaml
from nbclient import NotebookClient
from tqdm.auto import tqdm

from workbench import runs

__all__ = [
    "NOTEBOOKS",
    "PATH_SETTINGS",
    "notebooks",
    "selected",
    "configure",
    "fork",
    "settings_read",
    "execute",
    "run_pipeline",
    "summary",
    "refresh_committed",
    "main",
]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# Settings that may name a file or folder: one that exists is made absolute, as the notebooks run in notebooks/.
# Not "docstrings", the embedded data's name, whatever the current folder holds; not device ("cpu").
PATH_SETTINGS = ("data", "base_model", "teacher", "evaluation_datasets")


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks, in order."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"No numbered notebooks in {folder}.")
    return found


def selected(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, or those whose numbers ``only`` lists (``["04", "05"]``)."""
    found = notebooks()
    chosen = [path for path in found if not only or path.name[:2] in only]
    if only and len(chosen) != len(set(only)):
        raise ValueError(f"--only {only}: not all of them are notebooks; there are {[p.name for p in found]}.")
    return chosen


def execute(
    notebook: nbformat.NotebookNode,
    working_directory: Path,
    timeout: int = 4 * 3600,
    record_timing: bool = True,
    allow_errors: bool = False,
) -> None:
    """Run every cell of ``notebook`` in a fresh kernel of this Python, in ``working_directory``.

    ``record_timing`` keeps each cell's start and end times in its metadata (a run's notebooks
    keep them; the committed ones do not, so that a refresh changes only what the cells show).
    ``allow_errors`` runs on past a failing cell (its error stays in its outputs) instead of raising.
    """
    # The kernel's own log (a notice that it talks over local TCP) is not the job's output. Widget
    # state (progress bars, the demo's heatmap) lives in the kernel: saving it would only bloat the file.
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        extra_arguments=["--log-level=ERROR"],
        store_widget_state=False,
        record_timing=record_timing,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(working_directory)}},
    )
    client.execute()


def configure(
    profile: str | None = None,
    files: Sequence[str | Path] = (),
    yaml_texts: Sequence[str] = (),
    parameters: Sequence[tuple[str, str]] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's configuration, checked: what ``config.json`` records and the notebooks receive.

    Settings apply in order: the profile's, then each ``-f`` file's, each ``-y`` text's, each
    ``-p`` pair's (its value read as YAML, ``None`` meaning nothing) and ``overrides``. The profile is
    ``profile``, else the one the files name, else ``"quick"``; a file naming another profile than
    ``profile`` or than another file is an error. Returns ``{"profile", "configuration" (every
    setting), "overrides" (name -> value as applied), "sources" (name -> where it was set)}``.
    Raises ValueError before anything is written.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    named = {}
    for file in files:
        text = Path(file).read_text(encoding="utf-8")
        values = _mapping(text, f"-f {file}")
        if "profile" in values:
            named[str(file)] = values.pop("profile")
        layers.append((f"-f {file}", values))
    for text in yaml_texts:
        values = _mapping(text, "-y")
        if "profile" in values:
            named["-y"] = values.pop("profile")
        layers.append(("-y", values))
    layers.extend(("-p", {name: _value(value)}) for name, value in parameters)
    layers.append(("overrides", dict(overrides or {})))
    chosen = {profile} if profile else set()
    if len(chosen | set(named.values())) > 1:
        where = ", ".join(f"{source}: {name!r}" for source, name in named.items())
        raise ValueError(f"Two profiles asked for: --profile {profile!r} and {where}. Name one.")
    profile = profile or next(iter(named.values()), "quick")
    if profile not in runs.PROFILES:
        raise ValueError(f"profile must be one of {sorted(runs.PROFILES)}, got {profile!r}.")
    applied: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        for name, value in values.items():
            value = _number_if_meant(name, value)
            if name in PATH_SETTINGS:
                value = _absolute_if_path(value)
            runs.check_setting(name, value)
            applied[name], sources[name] = value, source
    configuration = {**runs.PROFILES[profile], **applied, "profile": profile}
    runs.settings(configuration)
    return {"profile": profile, "configuration": configuration, "overrides": applied, "sources": sources}


def _mapping(text: str, source: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML ({error}).") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of setting names to values, got {type(values).__name__}.")
    return values


def _value(text: str) -> Any:
    # papermill's -p reads None as None; YAML reads null, numbers, booleans and [lists].
    if text == "None":
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _number_if_meant(name: str, value: Any) -> Any:
    # YAML 1.1 reads 3e-5 (no dot) as text; a setting that takes a float but no text means the number.
    kinds = runs.SETTINGS.get(name, ("", ()))[1]
    if isinstance(value, str) and float in kinds and str not in kinds:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _absolute_if_path(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute_if_path(item) for item in value]
    if isinstance(value, str) and value and value != "docstrings" and Path(value).exists():
        return str(Path(value).resolve())
    return value


def settings_read(path: Path) -> set[str]:
    """The settings a notebook reads: every ``settings["name"]`` in its code cells (the notebooks'
    convention, notebooks/README.md)."""
    notebook = nbformat.read(path, as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    return set(re.findall(r"""settings\[["'](\w+)["']\]""", code))


def fork(source: runs.Run, config: Mapping[str, Any], first: str, run_dir: str | None = None) -> runs.Run:
    """A new run holding what ``source``'s notebooks before ``first`` (a number, ``"03"``) made, so that
    only the notebooks from ``first`` on run again with ``config``.

    Refused (ValueError, before anything is written) when a kept notebook reads a setting that
    ``config`` changes: its outputs would not be what the new configuration makes. ``runs/latest``
    stays where it was. Returns the new run.
    """
    kept = [path for path in notebooks() if path.name[:2] < first]
    before = source.configuration()
    changed = {name for name in runs.SETTINGS if before.get(name) != config["configuration"][name]}
    for path in kept:
        stale = settings_read(path) & changed
        if stale:
            raise ValueError(
                f"{path.name} reads {sorted(stale)}, which this configuration changes: run it again too "
                f"(only notebooks from {first} on run again in a fork of {source.path})."
            )
    if run_dir and Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        raise ValueError(f"{run_dir} is not empty: a fork starts a new run folder.")
    run = runs.start_run(run_dir, point_latest=False)
    for path in kept:
        (run / "steps").mkdir(exist_ok=True)
        shutil.copy2(source.require(f"steps/{path.stem}.json"), run / "steps")
        for part, (maker, _) in runs.ARTIFACTS.items():
            if maker == path.stem and (source / part).exists():
                copy = shutil.copytree if (source / part).is_dir() else shutil.copy2
                (run / part).parent.mkdir(parents=True, exist_ok=True)
                copy(source / part, run / part)
    return run


def run_pipeline(
    profile: str | None = None,
    run_dir: str | None = None,
    only: list[str] | None = None,
    config: Mapping[str, Any] | None = None,
    fork_of: runs.Run | None = None,
) -> runs.Run:
    """Execute the notebooks into a run folder; returns the run. See the module docstring.

    ``config`` is what :func:`configure` returned (default: ``configure(profile)``). ``fork_of``: a run
    whose notebooks before the first of ``only`` are kept (:func:`fork`) in a new run (``run_dir``).
    """
    config = dict(config or configure(profile))  # a bad profile or setting fails here, before any folder is made
    if profile and profile != config["profile"]:
        raise ValueError(f"profile {profile!r} but the configuration is of profile {config['profile']!r}.")
    chosen = selected(only)
    if fork_of is not None:
        if not only:
            raise ValueError("A fork runs some notebooks again: say which with only.")
        run = fork(fork_of, config, min(only), run_dir)
    else:
        run = runs.start_run(run_dir) if not only or "01" in only else runs.open_run(run_dir)
    (run / runs.CONFIG).write_text(
        json.dumps({**config, "command": shlex.join(sys.argv)}, indent=2, default=str) + "\n", encoding="utf-8"
    )
    timings = {}
    for path in tqdm(chosen, desc="notebooks", unit="notebook"):
        output = run / "notebooks" / path.name
        output.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                path,
                output,
                parameters={"profile": config["configuration"], "run_dir": str(run.path)},
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                extra_arguments=["--log-level=ERROR"],
                store_widget_state=False,
            )
        except papermill.PapermillExecutionError as error:
            raise SystemExit(
                f"{path.name} failed; the notebook as far as it ran: {output}\n{error.ename}: {error.evalue}"
            ) from None
        finally:
            timings[path.stem] = round(time.perf_counter() - started, 1)
    record = run / "pipeline.json"
    if only and record.exists():  # a partial re-run keeps the other notebooks' timings
        timings = {**json.loads(record.read_text())["seconds"], **timings}
    record.write_text(json.dumps({"profile": config["profile"], "seconds": timings}, indent=2) + "\n")
    return run


def summary(run: runs.Run) -> pd.DataFrame:
    """One row per notebook: seconds it took and the headline results it recorded."""
    timings = {}
    if (run / "pipeline.json").exists():
        timings = json.loads((run / "pipeline.json").read_text())["seconds"]
    steps = run.steps()
    rows = []
    for step in sorted(set(timings) | set(steps)):
        entry = steps.get(step, {})
        headline = ", ".join(f"{key} {_short(value)}" for key, value in entry.get("results", {}).items())
        rows.append({"notebook": step, "seconds": timings.get(step, entry.get("seconds")), "results": headline})
    return pd.DataFrame(rows).set_index("notebook") if rows else pd.DataFrame(columns=["seconds", "results"])


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def refresh_committed(only: list[str] | None = None) -> None:
    """Execute the committed notebooks (or ``only`` these) in place with their defaults: the outputs the
    notebook check compares. A notebook refreshed alone opens ``runs/latest``, as it does in JupyterLab."""
    for path in tqdm(selected(only), desc="notebooks", unit="notebook"):
        notebook = nbformat.read(path, as_version=4)
        execute(notebook, path.parent, record_timing=False)
        nbformat.write(notebook, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="settings: " + "; ".join(f"{name}: {text}" for name, (text, _) in runs.SETTINGS.items()),
    )
    parser.add_argument("--profile", choices=sorted(runs.PROFILES), help="the defaults (default: quick)")
    parser.add_argument("-f", "--file", action="append", default=[], metavar="YAML", help="an experiment file")
    parser.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML", help="settings as YAML text")
    parser.add_argument(
        "-p", "--parameter", action="append", default=[], nargs=2, metavar=("NAME", "VALUE"), help="one setting"
    )
    parser.add_argument("--run-dir", help="the run folder to fill (default: a new runs/<timestamp>)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (by number)")
    parser.add_argument(
        "--refresh-committed", action="store_true", help="execute notebooks/ in place with their defaults (developers)"
    )
    options = parser.parse_args(argv)
    if options.refresh_committed:
        refresh_committed(options.only)
        return
    try:
        config = configure(options.profile, options.file, options.yaml, [tuple(pair) for pair in options.parameter])
    except (ValueError, OSError) as error:
        parser.error(str(error))
    started = time.perf_counter()
    run = run_pipeline(run_dir=options.run_dir, only=options.only, config=config)
    minutes = (time.perf_counter() - started) / 60
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print(f"\nRun folder: {run.path}  (profile {config['profile']}, {minutes:.1f} minutes)\n")
        print(summary(run).to_string())
        evaluation = run / "results" / "evaluation.csv"
        if evaluation.exists():
            print("\nnDCG@10 on each evaluation collection (notebook 06):\n")
            print(
                pd.read_csv(evaluation).pivot(index="model", columns="dataset", values="ndcg@10").round(4).to_string()
            )


if __name__ == "__main__":
    sys.exit(main())
