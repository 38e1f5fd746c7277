"""The main job's machinery and the committed notebooks' hygiene (make test executes them; see nbconfig/)."""

import json

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from workbench import pipeline, runs

from helpers import ROOT

EXPECTED = [
    "01_build_dataset",
    "02_contrastive_training",
    "03_distillation",
    "04_indexing",
    "05_retrieval_and_rerank",
    "06_nanobeir_evaluation",
    "07_model_card",
    "08_widget_search_demo",
]
# Committed outputs stay small: tables, a few small figures, no data dumps.
MAX_NOTEBOOK_BYTES = 250_000


def _parameters_cell(notebook):
    return next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))


def test_the_eight_numbered_notebooks_in_order():
    assert [path.stem for path in pipeline.notebooks()] == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_is_explained_parameterised_executed_and_clean(name):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith(f"# {name[:2]}")
    parameters = _parameters_cell(notebook)
    assert "profile = " in parameters.source and "run_dir = None" in parameters.source
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "run top to bottom, once"
    for cell in code:
        assert "NBVAL_SKIP" not in cell.source and "NBVAL_IGNORE_OUTPUT" not in cell.source
        for output in cell.outputs:
            assert output.output_type != "error", f"cell {cell.execution_count} failed"
            assert not (output.output_type == "stream" and output.name == "stderr"), (
                f"cell {cell.execution_count} spills to stderr: {output.text[:200]}"
            )
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES


def test_injected_parameters_follow_the_parameters_cell():
    notebook = nbformat.read(ROOT / "notebooks" / "04_indexing.ipynb", as_version=4)
    injected = pipeline.inject_parameters(notebook, {"profile": "full", "run_dir": "/tmp/x"})
    position = injected.cells.index(_parameters_cell(injected))
    cell = injected.cells[position + 1]
    assert cell.metadata["tags"] == ["injected-parameters"]
    assert "profile = 'full'" in cell.source and "run_dir = '/tmp/x'" in cell.source
    assert len(injected.cells) == len(notebook.cells) + 1, "the original is left as it was"
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        pipeline.inject_parameters(bare, {"x": 2})


def test_a_notebook_run_alone_says_which_notebook_comes_first(tmp_path):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    notebook = pipeline.inject_parameters(
        nbformat.read(ROOT / "notebooks" / "02_contrastive_training.ipynb", as_version=4), {"run_dir": str(empty_run)}
    )
    with pytest.raises(CellExecutionError) as raised:
        pipeline.execute(notebook, ROOT / "notebooks")
    assert "MissingStepError" in str(raised.value) and "01_build_dataset.ipynb" in str(raised.value)


def test_summary_lists_each_step_with_its_time_and_results(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path))
    run = runs.start_run()
    run.record("01_build_dataset", {}, {"triplets": 690})
    run.record("02_contrastive_training", {}, {"contrastive ndcg@10": 0.61234})
    (run / "pipeline.json").write_text(json.dumps({"seconds": {"01_build_dataset": 2.5, "08_widget_search_demo": 9.0}}))
    table = pipeline.summary(run)
    assert list(table.index) == ["01_build_dataset", "02_contrastive_training", "08_widget_search_demo"]
    assert table.loc["01_build_dataset", "seconds"] == 2.5 and table.loc["08_widget_search_demo", "results"] == ""
    assert table.loc["02_contrastive_training", "results"] == "contrastive ndcg@10 0.6123"


def test_a_bad_profile_stops_the_job_before_any_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="profile must be one of"):
        pipeline.run_pipeline(profile="fast")
    assert not (tmp_path / "runs").exists()


def test_committed_notebooks_carry_no_cell_timestamps():
    for path in pipeline.notebooks():
        notebook = nbformat.read(path, as_version=4)
        assert not [cell for cell in notebook.cells if "execution" in cell.metadata], path.name


def test_refreshing_one_committed_notebook_executes_and_writes_only_that_one(monkeypatch):
    executed, written = [], []
    monkeypatch.setattr(
        pipeline, "execute", lambda notebook, folder, **_: executed.append(notebook.cells[0].source[:4])
    )
    monkeypatch.setattr(pipeline.nbformat, "write", lambda notebook, path: written.append(path.name))
    pipeline.refresh_committed(["04"])
    assert executed == ["# 04"] and written == ["04_indexing.ipynb"]
    with pytest.raises(ValueError, match="not all of them are notebooks"):
        pipeline.refresh_committed(["04", "99"])
    assert written == ["04_indexing.ipynb"]  # a bad number is refused before anything runs
