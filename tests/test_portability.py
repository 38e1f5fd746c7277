"""Discrete steps do not depend on float noise: the same data on every CPU, thread count and SIMD level."""

import json
import os
import subprocess
import sys

import pytest
from datasets import load_from_disk

from workbench import data, pipeline
from workbench.nbcheck import kernel_variant
from workbench.scores import ranked_ids
from workbench.training_sets import _triplets


def test_scores_that_agree_to_five_digits_tie_and_are_ordered_by_id():
    # float32 noise between CPUs moves a BM25 or MaxSim score around its 7th significant digit
    here = {"set_seq2": 12.345671, "set_seq1": 12.345669, "other": 3.0, "best": 20.0}
    there = {"set_seq2": 12.345668, "set_seq1": 12.345672, "other": 3.0, "best": 20.0}
    assert ranked_ids(here) == ranked_ids(there) == ["best", "set_seq1", "set_seq2", "other"]
    assert ranked_ids({"a": 1.5, "b": 1.6}) == ["b", "a"], "scores that really differ keep their order"


def test_hard_negatives_are_the_same_when_scores_move_by_float_noise():
    collection = data.Collection("toy", {f"d{i}": f"text {i}" for i in range(12)}, {"q": "query"}, {"q": {"d0": 1}})
    base = {f"d{i}": 10.0 - 0.5 * (i // 2) for i in range(12)}  # pairs of exactly tied documents
    noisy = {d: s * (1 + (1e-7 if int(d[1:]) % 2 else -1e-7)) for d, s in base.items()}
    rows = [_triplets(collection, {"q": run}, n_negatives=3, depth=6, seed=0).to_list() for run in (base, noisy)]
    assert rows[0] == rows[1]


def _build_dataset(run_dir, env):
    """Notebook 01 into ``run_dir``, its kernel started with ``env`` added (papermill, as the pipeline runs it)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        pipeline.run_pipeline(run_dir=str(run_dir), only=["01"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _fields(run_dir):
    """Every field of every data set notebook 01 writes, keyed by data set and field."""
    fields = {}
    for folder in [run_dir / "data" / "train", *sorted((run_dir / "data" / "eval").iterdir())]:
        collection = data.load_beir(folder)
        for name in ("corpus", "queries", "qrels", "titles"):
            fields[f"{folder.name}.{name}"] = json.dumps(getattr(collection, name), sort_keys=True)
    triplets = load_from_disk(str(run_dir / "data" / "triplets"))
    for column in triplets.column_names:
        fields[f"triplets.{column}"] = json.dumps(list(triplets[column]))
    return fields


def test_notebook_01_builds_identical_data_under_other_numeric_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    _build_dataset(tmp_path / "default", {})
    _build_dataset(tmp_path / "variant", kernel_variant())
    default, variant = _fields(tmp_path / "default"), _fields(tmp_path / "variant")
    assert sorted(default) == sorted(variant)
    assert len(json.loads(default["triplets.negative_1"])) > 100
    differing = [name for name in default if default[name] != variant[name]]
    assert not differing, f"fields that changed with the numeric kernels: {differing}"


@pytest.mark.parametrize("variable", ["ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS"])
def test_the_kernel_variant_really_changes_the_kernels(variable):
    """The variant is no placebo: each variable is honoured by the library it targets."""
    probe = {
        "ATEN_CPU_CAPABILITY": "import torch; print(torch.backends.cpu.get_cpu_capability())",
        "NPY_DISABLE_CPU_FEATURES": "import numpy as np; core = getattr(np, '_core', None) or np.core; "
        "print(sorted(k for k, v in core._multiarray_umath.__cpu_features__.items() if v))",
        "OMP_NUM_THREADS": "import torch; print(torch.get_num_threads())",
    }[variable]
    variant = kernel_variant()
    outputs = [
        subprocess.run(
            [sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True, check=True
        ).stdout
        for env in ({}, {variable: variant[variable]})
    ]
    if (
        (variable == "OMP_NUM_THREADS" and os.cpu_count() == 1)
        or outputs[0].strip() == "DEFAULT"
        or not variant[variable]
    ):
        pytest.skip(f"{variable}: this machine runs the variant's kernels by default already")
    assert outputs[0] != outputs[1]
