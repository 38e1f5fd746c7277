"""Indexes refuse what would make results untrustworthy, and never touch files they did not write."""

import json
import os

import numpy as np
import pytest

from workbench import indexes, retrieve
from workbench.store import IndexCorruptError

from helpers import reference_maxsim, unit


@pytest.fixture
def documents():
    rng = np.random.default_rng(5)
    return [f"d{i}" for i in range(30)], [unit(rng, int(n)) for n in rng.integers(3, 12, size=30)]


def tree(folder):
    """Every file under ``folder`` with its bytes (writer.lock aside: taking the lock is not a write)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "writer.lock"
    }


def test_values_beyond_float16_are_refused_by_a_float16_store_and_kept_by_a_float32_one(documents, tmp_path):
    ids, embeddings = documents
    index = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:10], embeddings[:10])
    before = tree(tmp_path)
    huge = embeddings[11] * 1e6  # finite, but fp16 would store it as inf and score it NaN
    with pytest.raises(ValueError, match=r"'d11' \(position 1 of this call\).*float16.*dtype='float32'"):
        index.add_documents(ids[10:12], [embeddings[10], huge])
    assert tree(tmp_path) == before and len(index) == 10

    wide = indexes.Exact(index_folder=tmp_path, index_name="wide", override=True, dtype="float32")
    wide.add_documents(ids[10:12], [embeddings[10], huge])
    hit = retrieve.ColBERT(wide).retrieve([embeddings[11]], k=1)[0][0]
    assert hit["id"] == "d11" and hit["score"] == pytest.approx(reference_maxsim(embeddings[11], huge), rel=1e-5)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_path_like_index_names_are_refused_and_delete_nothing(name, tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "a" / "b" / "theirs.txt").write_text("another")
    before = tree(tmp_path)
    for kind in (indexes.Exact, indexes.Voyager):
        with pytest.raises(ValueError, match="index_name"):
            kind(index_folder=tmp_path, index_name=name, override=True)
    assert tree(tmp_path) == before


def test_override_deletes_only_a_workbench_index_and_only_its_own_files(documents, tmp_path):
    ids, embeddings = documents
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("years of work")
    with pytest.raises(IndexCorruptError, match="not a workbench index"):
        indexes.Exact(index_folder=tmp_path, index_name="users", override=True)
    assert (users / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(users)) == ["thesis.tex"]

    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:20], embeddings[:20])
    index.close()
    folder = tmp_path / "i"
    (folder / "notes.txt").write_text("kept beside the index")
    (folder / "plots").mkdir()
    (folder / "plots" / "recall.png").write_bytes(b"png")
    written = set(os.listdir(folder)) - {"notes.txt", "plots"}

    index = indexes.Voyager(index_folder=tmp_path, index_name="i")
    index.add_documents(ids[20:], embeddings[20:])  # a write cleans up after killed writers: only its own files
    index.remove_documents(ids[:5])
    index.close()
    fresh = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    assert len(fresh) == 0
    assert (folder / "notes.txt").read_text() == "kept beside the index"
    assert (folder / "plots" / "recall.png").read_bytes() == b"png"
    assert not written & set(os.listdir(folder)) - {"manifest.json", "writer.lock"}, "the old index's files remain"


@pytest.mark.parametrize("outside", ["../outside.bin", "absolute"])
def test_manifest_names_outside_the_index_folder_are_refused(outside, documents, tmp_path):
    ids, embeddings = documents
    index = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:10], embeddings[:10])
    index.close()
    victim = tmp_path / "outside.bin"
    path = tmp_path / "i" / "manifest.json"
    manifest = json.loads(path.read_text())
    victim.write_bytes((tmp_path / "i" / manifest["files"]["lengths"]).read_bytes())
    manifest["files"]["lengths"] = str(victim) if outside == "absolute" else outside
    path.write_text(json.dumps(manifest))
    before = victim.read_bytes()
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        indexes.Exact(index_folder=tmp_path, index_name="i").add_documents(ids[10:], embeddings[10:])
    assert victim.read_bytes() == before


def test_one_index_kind_per_folder(documents, tmp_path):
    ids, embeddings = documents
    voyager = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    voyager.add_documents(ids[:20], embeddings[:20])
    voyager.close()
    with pytest.raises(ValueError, match="holds a Voyager index.*not an Exact"):
        indexes.Exact(index_folder=tmp_path, index_name="i")
    reopened = indexes.Voyager(index_folder=tmp_path, index_name="i")
    assert retrieve.ColBERT(reopened).retrieve([embeddings[3]], k=1)[0][0]["id"] == "d3"
    reopened.close()

    exact = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)  # override replaces it
    exact.add_documents(ids[:5], embeddings[:5])
    assert len(exact) == 5
    with pytest.raises(ValueError, match="holds an Exact index.*not a Voyager"):
        indexes.Voyager(index_folder=tmp_path, index_name="i")


def test_ids_must_be_a_list_of_str_or_int(documents, tmp_path):
    ids, embeddings = documents
    index = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:5], embeddings[:5])
    before = tree(tmp_path)
    with pytest.raises(ValueError, match="None"):
        index.add_documents(["a", None], embeddings[5:7])
    with pytest.raises(ValueError, match="a single string"):
        index.add_documents("ab", embeddings[5:7])
    with pytest.raises(ValueError, match="a single string"):
        index.remove_documents("d1")
    with pytest.raises(ValueError, match="a single string"):
        retrieve.ColBERT(index).retrieve([embeddings[0]], k=1, subset="d1")
    assert tree(tmp_path) == before and len(index) == 5
    index.add_documents([7, 8], embeddings[5:7])  # ints are accepted, and kept as strings
    assert index.store.ids[-2:] == ["7", "8"]
    assert len(index.get_documents_embeddings([7])[0]) == len(embeddings[5])


@pytest.mark.parametrize(
    "setting",
    [{"k_token": -1}, {"k_token": 0}, {"batch_size": -1}, {"batch_size": 0}, {"n_full_scores": 0}, {"k_token": 2.5}],
)
def test_search_settings_must_be_positive_integers(setting, documents, tmp_path):
    ids, embeddings = documents
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids, embeddings)
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        retrieve.ColBERT(index).retrieve([embeddings[0]], k=3, **setting)
    if name != "batch_size":
        from workbench.scores import pack

        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            index.search(pack([embeddings[0]]), 3, **setting)


@pytest.mark.parametrize("damage", ["random bytes", "missing key", "not an object", "bad size"])
def test_malformed_manifests_are_named(damage, documents, tmp_path):
    ids, embeddings = documents
    index = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:5], embeddings[:5])
    index.close()
    path = tmp_path / "i" / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif damage == "missing key":
        del manifest["sizes"]
        path.write_text(json.dumps(manifest))
    elif damage == "not an object":
        path.write_text("[1, 2]")
    else:
        manifest["sizes"]["tokens"] = "many"
        path.write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match=str(path)):
        indexes.Exact(index_folder=tmp_path, index_name="i")
