"""The main job (``make run``): execute notebooks 01 to 08 headless, in order, into a new run folder.

    python -m workbench.pipeline [--profile quick|full] [--run-dir runs/my-run] [--only 04 05 ...]

Each notebook gets its parameters the way papermill gives them: a cell tagged ``injected-parameters``
after the cell tagged ``parameters`` sets ``profile`` and ``run_dir``. The executed notebooks land
in ``<run>/notebooks/`` beside what they made (data, models, index, results, card, plots), and a
summary table closes the job. A failing notebook is saved as far as it ran, and the job stops
with its name and the error.

``--refresh-committed`` executes the notebooks in place, with their own defaults, to refresh the
outputs committed with them (what the notebook check, ``workbench.nbcheck``, compares in ``make test``);
with ``--only`` just those (``make notebooks ONLY="04 05"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from tqdm.auto import tqdm

from workbench import runs

__all__ = [
    "NOTEBOOKS",
    "notebooks",
    "selected",
    "inject_parameters",
    "execute",
    "run_pipeline",
    "summary",
    "refresh_committed",
    "main",
]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


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


def inject_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with ``parameters`` set in a cell right after its ``parameters`` cell."""
    position = next(
        (i for i, cell in enumerate(notebook.cells) if "parameters" in cell.get("metadata", {}).get("tags", [])), None
    )
    if position is None:
        raise ValueError("The notebook has no cell tagged 'parameters'.")
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    source = "# Parameters injected by workbench.pipeline\n" + "\n".join(
        f"{name} = {value!r}" for name, value in parameters.items()
    )
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(position + 1, cell)
    return notebook


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


def run_pipeline(profile: str = "quick", run_dir: str | None = None, only: list[str] | None = None) -> runs.Run:
    """Execute the notebooks into a run folder; returns the run. See the module docstring."""
    runs.settings(profile)  # a bad profile fails here, before any folder is made
    chosen = selected(only)
    run = runs.start_run(run_dir) if not only or "01" in only else runs.open_run(run_dir)
    timings = {}
    for path in tqdm(chosen, desc="notebooks", unit="notebook"):
        notebook = inject_parameters(nbformat.read(path, as_version=4), {"profile": profile, "run_dir": str(run.path)})
        output = run / "notebooks" / path.name
        output.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            execute(notebook, path.parent)
        except CellExecutionError as error:
            nbformat.write(notebook, output)
            raise SystemExit(f"{path.name} failed; the notebook as far as it ran: {output}\n{error}") from None
        finally:
            timings[path.stem] = round(time.perf_counter() - started, 1)
        nbformat.write(notebook, output)
    record = run / "pipeline.json"
    if only and record.exists():  # a partial re-run keeps the other notebooks' timings
        timings = {**json.loads(record.read_text())["seconds"], **timings}
    record.write_text(json.dumps({"profile": profile, "seconds": timings}, indent=2) + "\n")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=sorted(runs.PROFILES))
    parser.add_argument("--run-dir", help="the run folder to fill (default: a new runs/<timestamp>)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (by number)")
    parser.add_argument(
        "--refresh-committed", action="store_true", help="execute notebooks/ in place with their defaults (developers)"
    )
    options = parser.parse_args(argv)
    if options.refresh_committed:
        refresh_committed(options.only)
        return
    started = time.perf_counter()
    run = run_pipeline(options.profile, options.run_dir, options.only)
    minutes = (time.perf_counter() - started) / 60
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print(f"\nRun folder: {run.path}  (profile {options.profile}, {minutes:.1f} minutes)\n")
        print(summary(run).to_string())
        evaluation = run / "results" / "evaluation.csv"
        if evaluation.exists():
            print("\nnDCG@10 on each evaluation collection (notebook 06):\n")
            print(
                pd.read_csv(evaluation).pivot(index="model", columns="dataset", values="ndcg@10").round(4).to_string()
            )


if __name__ == "__main__":
    sys.exit(main())
