"""Run folders: profiles, starting and opening runs, what is missing, what a step records."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from workbench import runs


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("WORKBENCH_RUN", raising=False)
    return tmp_path / "runs"


def test_settings_take_the_profile_and_apply_only_given_overrides():
    quick = runs.settings("quick", contrastive_steps=7, teacher=None)
    assert quick["contrastive_steps"] == 7
    assert quick["teacher"] is None and quick["profile"] == "quick"
    assert quick["distillation_steps"] == runs.PROFILES["quick"]["distillation_steps"]
    assert runs.settings("full")["evaluation_datasets"], "the full profile evaluates NanoBEIR"


def test_settings_reject_unknown_profiles_and_names():
    with pytest.raises(ValueError, match="profile must be one of"):
        runs.settings("fast")
    with pytest.raises(ValueError, match="contrastive_step"):
        runs.settings("quick", contrastive_step=3)


def test_start_run_makes_a_new_folder_and_points_latest_at_it(runs_root):
    first = runs.start_run()
    second = runs.start_run()
    assert first.path != second.path and first.path.parent == second.path.parent == runs_root
    assert (runs_root / "latest").resolve() == second.path.resolve()
    assert runs.open_run().path == second.path.resolve()
    assert runs.open_run(first.path).path == first.path.resolve()


def test_workbench_run_names_the_run_to_fill_and_open(runs_root, tmp_path, monkeypatch):
    chosen = tmp_path / "my-run"
    monkeypatch.setenv("WORKBENCH_RUN", str(chosen))
    assert runs.start_run().path == chosen and chosen.is_dir()
    assert runs.open_run().path == chosen.resolve()


def test_a_notebook_run_alone_is_told_which_notebook_comes_first(runs_root):
    with pytest.raises(runs.MissingStepError, match="01_build_dataset.ipynb"):
        runs.open_run()
    run = runs.start_run()
    with pytest.raises(runs.MissingStepError, match="02_contrastive_training.ipynb"):
        run.load_model("contrastive")
    with pytest.raises(runs.MissingStepError, match="01_build_dataset.ipynb"):
        run.test_collection()
    with pytest.raises(runs.MissingStepError, match="06_nanobeir_evaluation.ipynb"):
        run.table("evaluation", made_by="06_nanobeir_evaluation.ipynb")


def test_record_writes_parameters_results_and_versions(runs_root):
    run = runs.start_run()
    shown = run.record("02_contrastive_training", {"steps": 3}, {"ndcg@10": 0.5}, seconds=1.234)
    assert shown == {"ndcg@10": 0.5}
    entry = json.loads((run / "steps" / "02_contrastive_training.json").read_text())
    assert entry["parameters"] == {"steps": 3} and entry["results"] == {"ndcg@10": 0.5}
    assert entry["seconds"] == 1.2
    assert "torch" in entry["versions"] and "sentence-transformers" in entry["versions"]
    assert list(run.steps()) == ["02_contrastive_training"]


def test_record_says_which_backend_and_precision_each_encoder_ran(runs_root, minilm_colbert, minilm_path):
    run = runs.start_run()
    half = runs.open_run(run.path).load_model(minilm_path, device="cpu", model_kwargs={"torch_dtype": "bfloat16"})
    run.record("04_indexing", {"model": "minilm"}, encoders={"fp32": minilm_colbert, "half": half})
    encoders = json.loads((run / "steps" / "04_indexing.json").read_text())["encoders"]
    assert {name: (e["backend"], e["precision"]) for name, e in encoders.items()} == {
        "fp32": ("torch", "fp32"),
        "half": ("torch", "bf16"),
    }
    assert encoders["fp32"]["runtime"].startswith("torch ") and encoders["fp32"]["device"] == "cpu"
    assert json.loads((run / "steps" / "04_indexing.json").read_text())["parameters"] == {"model": "minilm"}
    with pytest.raises(ValueError, match="backend"):
        run.load_model(minilm_path, backend="tensorrt")


def test_tables_round_trip_and_timings_get_units(runs_root):
    run = runs.start_run()
    table = pd.DataFrame({"k_token": [1, 8], "ms_per_query": [0.5, 12.345], "recall@10": [0.9, 1.0]})
    run.save_table(table, "sweep")
    assert run.table("sweep", made_by="04").equals(table)
    shown = runs.with_time_units(table)
    assert list(shown["ms_per_query"]) == ["0.50 ms", "12.35 ms"]
    assert shown["recall@10"].tolist() == [0.9, 1.0] and table["ms_per_query"].dtype.kind == "f"


def test_latest_is_a_relative_link(runs_root):
    run = runs.start_run()
    assert not os.path.isabs(os.readlink(runs_root / "latest"))
    assert (runs_root / "latest").resolve() == run.path.resolve()


def test_the_run_folder_contract_names_real_notebooks_and_finds_the_maker_of_nested_paths():
    notebooks = {path.stem for path in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {step for step, _ in runs.ARTIFACTS.values()} <= notebooks
    assert runs.maker_of("index/my-collection/manifest.json") == "04_indexing.ipynb"
    assert runs.maker_of("results/evaluation.csv") == "06_nanobeir_evaluation.ipynb"
    assert runs.maker_of("steps/03_distillation.json") == "03_distillation.ipynb"
    assert runs.maker_of("scratch/notes.txt") is None
    assert list(runs.contract().columns) == ["made by", "holds"] and len(runs.contract()) == len(runs.ARTIFACTS)


def test_later_steps_read_outputs_not_the_headline_text(runs_root):
    run = runs.start_run()
    with pytest.raises(runs.MissingStepError, match="06_nanobeir_evaluation.ipynb"):
        run.table("evaluation")  # the maker comes from the contract
    # A record whose headline names the collection, but which has no machine-read output, is not read.
    shown = run.record("01_build_dataset", {}, {"test collection": "docstrings-test"})
    assert shown == {"test collection": "docstrings-test"}
    with pytest.raises(runs.MissingStepError, match="no output 'test_collection'"):
        run.test_collection()
    run.record("01_build_dataset", {}, {"test collection": "shown"}, outputs={"test_collection": "docstrings-test"})
    assert run.output("01_build_dataset", "test_collection") == "docstrings-test"
    with pytest.raises(runs.MissingStepError, match="data/eval/docstrings-test is missing: notebooks/01_build"):
        run.test_collection()
