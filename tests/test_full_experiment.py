"""A real experiment's configuration, run end to end offline: the ``full`` profile from the command
line, with every hub asset swapped for a local one and the step counts made small.

- ``data``: a BEIR folder this test writes (docstring queries and documents);
- ``base_model``: the embedded all-MiniLM-L6-v2, by its local path;
- ``teacher``: a local ColBERT folder (answerai-colbert-small-v1, ../shared/models);
- ``evaluation_datasets``: two NanoBEIR-layout folders (parquet parts) cut from the shared collections,
  and the training folder itself, whose training queries notebook 06 must leave out.
"""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from workbench import data, pipeline, runs, training_sets

from helpers import ANSWERAI, SHARED_DATA, require

# Notebook 09 forks the run and executes 03 and 06 again (minutes): the notebook check runs it, twice.
EXPERIMENT_NOTEBOOKS = ["01", "02", "03", "04", "05", "06", "07", "08"]
STEPS = {"contrastive_steps": 4, "distillation_steps": 3, "distillation_queries": 24, "distillation_negatives": 2}


def _nanobeir_folder(source: data.Collection, folder, queries: int, documents: int) -> str:
    """A NanoBEIR-layout folder (corpus/, queries/, qrels/ parquet) of ``queries`` judged queries of
    ``source`` over ``documents`` documents: judged ones first, taken from the queries in turn (TREC DL
    judges hundreds per query: every query keeps its most relevant ones), then others."""
    chosen = list(source.judged_queries)[:queries]
    per_query = [
        sorted((d for d in source.qrels[q] if d in source.corpus), key=lambda d: -source.qrels[q][d]) for q in chosen
    ]
    in_turn = (column[i] for i in range(max(map(len, per_query))) for column in per_query if i < len(column))
    judged = list(dict.fromkeys(in_turn))
    others = [d for d in source.corpus if d not in set(judged)]
    corpus = (judged + others)[:documents]
    kept = set(corpus)
    parts = {
        "corpus": [{"_id": d, "title": source.titles.get(d, ""), "text": source.corpus[d]} for d in corpus],
        "queries": [{"_id": q, "text": source.queries[q]} for q in chosen],
        "qrels": [
            {"query-id": q, "corpus-id": d, "score": grade}
            for q in chosen
            for d, grade in source.qrels[q].items()
            if d in kept
        ],
    }
    for part, rows in parts.items():
        (folder / part).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(folder / part / "train-00000-of-00001.parquet")
    return str(folder)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, minilm_path):
    """The experiment file and folders, and the run the pipeline made from them."""
    root = tmp_path_factory.mktemp("experiment")
    train, test = training_sets.docstring_collection()
    chosen = list(train.judged_queries)[:240] + list(test.judged_queries)[:60]
    documents = {d for q in chosen for d in train.qrels.get(q, test.qrels.get(q, {}))}
    merged = data.Collection(
        "docstrings-beir",
        {d: text for d, text in {**train.corpus, **test.corpus}.items() if d in documents},
        {q: {**train.queries, **test.queries}[q] for q in chosen},
        {q: {**train.qrels, **test.qrels}[q] for q in chosen},
    )
    beir = data.save_beir(merged, root / "docstrings-beir")
    evaluation = [
        _nanobeir_folder(data.load_beir(require(SHARED_DATA / name)), root / f"{name}-mini", 12, 120)
        for name in ("msmarco-dl19-5k", "dbpedia-entity-5k")
    ]
    experiment_file = root / "experiment.yaml"
    experiment_file.write_text(
        "profile: full\n"
        f"data: {beir}\n"
        f"base_model: {minilm_path}\n"
        f"teacher: {require(ANSWERAI)}\n"
        f"evaluation_datasets: {json.dumps([*evaluation, str(beir)])}\n"
        "device: cpu\n"
        "contrastive_batch_size: 8\n"
        "distillation_batch_size: 8\n"
    )
    arguments = ["-f", str(experiment_file), "--run-dir", str(root / "run"), "--only", *EXPERIMENT_NOTEBOOKS]
    for name, value in STEPS.items():
        arguments += ["-p", name, str(value)]
    pipeline.main(arguments)
    return runs.open_run(root / "run"), [*evaluation, str(beir)]


def test_every_notebook_completes_with_the_experiment_configuration(experiment):
    run, _ = experiment
    executed = sorted(path.name for path in (run / "notebooks").glob("*.ipynb"))
    assert executed == [path.name for path in pipeline.notebooks() if path.name[:2] in EXPERIMENT_NOTEBOOKS]
    for name in executed:
        notebook = nbformat.read(run / "notebooks" / name, as_version=4)
        errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[:1]}"
    assert sorted(json.loads((run / "pipeline.json").read_text())["seconds"]) == [n[:-6] for n in executed]


def test_the_run_records_the_configuration_it_was_given(experiment):
    run, evaluation = experiment
    recorded = json.loads((run / runs.CONFIG).read_text())
    assert recorded["profile"] == "full" and recorded["configuration"]["evaluation_datasets"] == evaluation
    assert {name: recorded["configuration"][name] for name in STEPS} == STEPS
    assert recorded["sources"]["contrastive_steps"] == "-p" and recorded["sources"]["teacher"].startswith("-f ")
    assert run.configuration() == recorded["configuration"]
    step = run.steps()["03_distillation"]
    assert step["parameters"]["teacher"] == str(require(ANSWERAI)) and step["parameters"]["distillation_steps"] == 3
    assert {"git", "machine", "versions"} <= set(step), "every step says what made it"
    encoders = run.steps()["06_nanobeir_evaluation"]["encoders"]
    assert sorted(encoders) == ["contrastive", "distilled", "untrained"], "and which backend and precision encoded"
    assert {(e["backend"], e["precision"]) for e in encoders.values()} == {("torch", "fp32")}


def test_results_name_the_experiment_datasets_and_keep_per_query_runs(experiment):
    run, evaluation = experiment
    names = [data.load(folder).name for folder in evaluation]
    results = run.table("evaluation")
    assert sorted(results["dataset"].unique()) == sorted(names)
    assert set(results["model"]) == {"BM25", "untrained", "contrastive", "distilled"}
    kept = run.trec("evaluation")
    assert sorted(kept) == sorted(names)
    for qrels, systems in kept.values():
        assert qrels and set(systems) == set(results["model"]) and all(systems.values())
    assert list(run.trec("retrieval")) == ["docstrings-beir"], "notebook 05 keeps its systems' runs too"


def test_the_training_queries_are_left_out_of_the_evaluation(experiment):
    run, evaluation = experiment
    train = data.load_beir(run / "data" / "train")
    qrels, _ = run.trec("evaluation")["docstrings-beir"]
    assert qrels and not set(qrels) & set(train.queries), "no model is scored on a query it trained on"
    notebook = nbformat.read(run / "notebooks" / "06_nanobeir_evaluation.ipynb", as_version=4)
    shown = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert f"docstrings-beir: {len(train.queries)} training queries left out" in shown
