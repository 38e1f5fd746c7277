"""The main job's machinery and the committed notebooks' hygiene (make test executes them; see nbconfig/)."""

import json

import nbformat
import pytest

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
    "09_compare_runs",
]
# Committed outputs stay small: tables, a few small figures, no data dumps.
MAX_NOTEBOOK_BYTES = 250_000


def _parameters_cell(notebook):
    return next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))


def test_the_numbered_notebooks_in_order():
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


def test_a_notebook_run_alone_says_which_notebook_comes_first_and_keeps_what_ran(tmp_path):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    config = pipeline.configure("quick", parameters=[("contrastive_steps", "7")])
    with pytest.raises(SystemExit) as raised:
        pipeline.run_pipeline(run_dir=str(empty_run), only=["02"], config=config)
    assert "MissingStepError" in str(raised.value) and "01_build_dataset.ipynb" in str(raised.value)
    executed = nbformat.read(empty_run / "notebooks" / "02_contrastive_training.ipynb", as_version=4)
    position = executed.cells.index(_parameters_cell(executed))
    injected = executed.cells[position + 1]
    assert "injected-parameters" in injected.metadata["tags"]
    namespace = {}
    exec(injected.source, namespace)
    assert namespace["profile"] == config["configuration"] and namespace["run_dir"] == str(empty_run)
    assert namespace["profile"]["contrastive_steps"] == 7
    recorded = json.loads((empty_run / runs.CONFIG).read_text())
    assert recorded["configuration"]["contrastive_steps"] == 7 and recorded["sources"] == {"contrastive_steps": "-p"}


def test_settings_apply_profile_then_files_then_yaml_then_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "beir").mkdir()
    (tmp_path / "cpu").mkdir()  # a folder named like a value of another setting changes nothing
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("profile: full\ndata: beir\ncontrastive_steps: 500\nseed: 3\n")
    config = pipeline.configure(
        files=[experiment],
        yaml_texts=["seed: 4\nevaluation_datasets: [nfcorpus, scifact]"],
        parameters=[("seed", "5"), ("teacher", "None"), ("learning_rate", "1e-4"), ("device", "cpu")],
    )
    chosen = config["configuration"]
    assert config["profile"] == chosen["profile"] == "full"
    assert chosen["data"] == str(tmp_path / "beir"), "an existing path is made absolute: notebooks run elsewhere"
    assert (chosen["contrastive_steps"], chosen["seed"], chosen["teacher"]) == (500, 5, None)
    assert chosen["learning_rate"] == 1e-4 and chosen["evaluation_datasets"] == ["nfcorpus", "scifact"]
    assert chosen["device"] == "cpu", "only settings that name files or folders are made absolute"
    assert chosen["distillation_steps"] == runs.PROFILES["full"]["distillation_steps"], "the rest is the profile's"
    assert config["sources"]["seed"] == "-p" and config["sources"]["data"] == f"-f {experiment}"
    assert runs.settings(chosen)["contrastive_steps"] == 500, "what the notebooks receive resolves the same"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"parameters": [("contrastive_step", "5")]}, "Did you mean 'contrastive_steps'.*Known settings: seed"),
        ({"parameters": [("contrastive_steps", "many")]}, "takes int, got 'many'"),
        ({"parameters": [("contrastive_steps", "0")]}, "must be a positive integer"),
        ({"parameters": [("seed", "true")]}, "takes int, got True"),
        ({"yaml_texts": ["[1, 2]"]}, "expected a mapping"),
        ({"yaml_texts": ["seed: [1"]}, "not valid YAML"),
        ({"profile": "quick", "yaml_texts": ["profile: full"]}, "Two profiles"),
        ({"profile": "fast"}, "profile must be one of"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(arguments, message):
    with pytest.raises(ValueError, match=message):
        pipeline.configure(**arguments)


def test_the_command_line_refuses_a_bad_setting_before_any_folder_is_made(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    with pytest.raises(SystemExit) as raised:
        pipeline.main(["-p", "negatives", "2"])
    assert raised.value.code == 2 and "Unknown setting 'negatives'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


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


def _finished_run(root, configuration):
    """A run folder as notebooks 01 and 02 leave it, in small."""
    run = runs.start_run(root / "source")
    for step in ("01_build_dataset", "02_contrastive_training"):
        run.record(step, configuration)
    (run / "data" / "train").mkdir(parents=True)
    (run / "data" / "train" / "corpus.jsonl").write_text('{"_id": "d1", "text": "kept"}\n')
    (run / "models" / "contrastive").mkdir(parents=True)
    (run / "models" / "contrastive" / "config.json").write_text("{}")
    return run


def test_a_fork_keeps_the_steps_the_changed_setting_does_not_touch(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path))
    source = _finished_run(tmp_path, runs.settings("quick"))
    config = pipeline.configure("quick", parameters=[("distillation_negatives", "1")])
    fork = pipeline.fork(source, config, "03")
    assert fork.path != source.path and (tmp_path / "latest").resolve() == source.path, "latest stays"
    assert sorted(fork.steps()) == ["01_build_dataset", "02_contrastive_training"]
    assert (fork / "data" / "train" / "corpus.jsonl").read_text() == '{"_id": "d1", "text": "kept"}\n'
    assert (fork / "models" / "contrastive" / "config.json").exists()
    assert not (fork / "models" / "distilled").exists(), "what 03 makes is made again"


def test_a_fork_is_refused_when_a_kept_notebook_reads_the_changed_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path))
    source = _finished_run(tmp_path, runs.settings("quick"))
    config = pipeline.configure("quick", parameters=[("contrastive_negatives", "4")])
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"01_build_dataset.ipynb reads \['contrastive_negatives'\]"):
        pipeline.fork(source, config, "03")
    assert sorted(path.name for path in tmp_path.iterdir()) == before, "nothing is written"
    assert "contrastive_negatives" in pipeline.settings_read(ROOT / "notebooks" / "01_build_dataset.ipynb")
