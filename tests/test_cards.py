"""Model cards survive a save and a reload: what training recorded is saved with the model."""

import json
import shutil
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import tomllib
from datasets import Dataset

from workbench import cards, losses, models, provenance, training, utils

from helpers import ROOT

ROWS = [
    {
        "query": f"what does function {i} do",
        "positive": f"function {i} returns the number {i}",
        "negative_1": f"class {i} holds a list of {i} items",
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def trained(minilm_path, tmp_path_factory):
    model = models.load_model(minilm_path, seed=0)
    training.train(
        model,
        Dataset.from_list(ROWS),
        losses.Contrastive(model=model),
        steps=2,
        batch_size=4,
        output_dir=str(tmp_path_factory.mktemp("checkpoints")),
    )
    folder = tmp_path_factory.mktemp("model") / "contrastive"
    model.save(str(folder))
    return model, folder


def test_a_card_rendered_after_a_reload_equals_the_card_written_at_save_time(trained):
    model, folder = trained
    reloaded = models.ColBERT(model_name_or_path=str(folder), device="cpu")
    card = cards.render_card(reloaded)
    assert card == (folder / "README.md").read_text(encoding="utf-8")
    assert "No training was recorded" not in card and "- **Base model:** unknown" not in card
    assert f"- **Base model:** {model.model_card_data.base_model}" in card
    assert "workbench.losses.Contrastive" in card and "- `max_steps`: 2" in card and "### Training logs" in card


def test_evaluations_passed_to_a_card_after_a_reload_are_shown_beside_the_training_record(trained):
    _, folder = trained
    reloaded = models.ColBERT(model_name_or_path=str(folder), device="cpu")
    table = pd.DataFrame({"MaxSim_ndcg@10": [0.61234]}, index=["docstrings"])
    card = cards.render_card(reloaded, evaluations={"Retrieval": table})
    assert "| **MaxSim_ndcg@10** | **0.6123** |" in card and "### Training dataset" in card
    assert cards.front_matter(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.61234


def test_a_model_built_from_a_base_has_no_record_and_a_corrupt_record_is_named(trained, minilm_path, tmp_path):
    assert "No training was recorded" in cards.render_card(models.load_model(minilm_path, seed=0))
    _, folder = trained
    record = json.loads((folder / cards.RECORD_FILE).read_text())
    assert record["all_hyperparameters"]["max_steps"] == "2" and record["train_datasets"]
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / cards.RECORD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=cards.RECORD_FILE):
        models.ColBERT(model_name_or_path=str(broken), device="cpu")


def test_every_card_template_ships_with_the_package():
    # cards.TEMPLATE is read from the source folder, so a template left out of the wheel would only fail
    # after installation: the package-data patterns must cover every file under workbench/templates.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["workbench"]
    templates = resources.files("workbench").joinpath("templates")
    files = [path.name for path in templates.iterdir() if path.is_file()]
    assert "model_card.md" in files
    assert all(any(Path("templates", name).match(pattern) for pattern in patterns) for name in files), patterns


def test_markdown_table_writes_the_header_the_separator_and_escapes_a_pipe_once():
    table = utils.markdown_table(["", "score"], [["a|b", 0.5], ["c\\|d", ""]], align="lr")
    assert table.splitlines() == ["| | score |", "|:--|--:|", "| a\\|b | 0.5 |", "| c\\|d |  |"]
    assert utils.markdown_table(["x"], []) == "| x |\n|:--|"


def test_the_public_names_cards_had_before_the_template_moved_stay_importable():
    before = [
        "evaluation_tables",
        "save_record",
        "load_record",
        "render_card",
        "save_card",
        "front_matter",
        "versions",
        "COLBERT_CITATION",
        "TEMPLATE",
        "RECORD_FILE",
        "RECORDED_FIELDS",
    ]  # workbench 0.1.0, bdf290b
    assert [name for name in before if name not in cards.__all__ or not hasattr(cards, name)] == []
    assert cards.versions is provenance.versions
