"""PLAID (residual-compressed tokens) and the Index contract every kind of index keeps.

Synthetic corpora throughout: "clustered" documents are unit tokens drawn around a few hundred
topic directions, as real ColBERT tokens cluster; queries are noisy copies of some document's
tokens, so that a top 10 has a meaningful order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from index_writer import BATCH, embeddings_for

from workbench import evaluation, indexes, retrieve
from workbench.data import Collection
from workbench.indexes import plaid, voyager
from workbench.indexes.codecs import codec_of
from workbench.indexes.store import IndexCorruptError, IndexLockedError, TokenStore
from workbench.scores import colbert_scores, pack, top_k

from helpers import reference_maxsim, unit


def clustered(
    rng: np.random.Generator,
    n_docs: int,
    dim: int = 96,
    n_topics: int = 256,
    spread: float = 0.05,
    lengths: tuple[int, int] = (5, 30),
) -> list[np.ndarray]:
    """``n_docs`` documents of unit tokens, each a topic direction plus Gaussian noise of ``spread`` per dimension."""
    topics = rng.standard_normal((n_topics, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    documents = []
    for n in rng.integers(*lengths, size=n_docs):
        tokens = topics[rng.integers(0, n_topics, size=int(n))] + spread * rng.standard_normal((int(n), dim))
        documents.append((tokens / np.linalg.norm(tokens, axis=1, keepdims=True)).astype(np.float32))
    return documents


def queries_from(
    rng: np.random.Generator, documents: list[np.ndarray], n: int, noise: float = 0.05, tokens: int = 8
) -> list[np.ndarray]:
    """``n`` queries, each ``tokens`` of one random document's tokens plus noise."""
    queries = []
    for _ in range(n):
        document = documents[int(rng.integers(len(documents)))]
        query = document[rng.integers(0, len(document), size=tokens)]
        query = query + noise * rng.standard_normal(query.shape)
        queries.append((query / np.linalg.norm(query, axis=1, keepdims=True)).astype(np.float32))
    return queries


def cosines(decoded: list[np.ndarray], originals: list[np.ndarray]) -> np.ndarray:
    """Cosine of every decoded token with its original (both unit norm)."""
    return np.concatenate([(a.astype(np.float64) * b).sum(axis=1) for a, b in zip(decoded, originals)])


def ids_of(results) -> list[list[str]]:
    return [[hit["id"] for hit in hits] for hits in results]


def scores_of(results) -> np.ndarray:
    return np.array([[hit["score"] for hit in hits] for hits in results])


def overlap(results, reference, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(results, reference)]))


def exact_top(queries, documents, ids, k) -> list[list[str]]:
    return ids_of(retrieve.exact(queries, documents, ids, k=k))


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (writer.lock aside: taking the lock is not a write)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "writer.lock"
    }


def strays(folder: Path) -> set[str]:
    """Files of the index folder its committed manifest does not reference, and bytes past committed sizes."""
    manifest = json.loads((folder / "manifest.json").read_text())
    extra = set(os.listdir(folder)) - set(manifest["files"].values()) - {"manifest.json", "writer.lock"}
    torn = {
        file for name, file in manifest["files"].items() if (folder / file).stat().st_size > manifest["sizes"][name]
    }
    return extra | torn


@pytest.fixture(scope="module")
def small():
    """300 clustered documents of dimension 32 with 12 queries."""
    rng = np.random.default_rng(1)
    documents = clustered(rng, 300, dim=32, n_topics=64, lengths=(4, 20))
    return [f"d{i}" for i in range(len(documents))], documents, queries_from(rng, documents, 12)


# -- PyLate's surface -----------------------------------------------------------------------------


def test_the_seed_cards_plaid_snippet_runs_with_workbench(answerai, tmp_path, monkeypatch):
    """The seed card's PLAID example with ``from workbench import indexes, models, retrieve`` for pylate's."""
    monkeypatch.chdir(tmp_path)  # the snippet writes ./pylate-index
    model = answerai  # models.ColBERT(model_name_or_path=...), loaded once for the session
    index = indexes.PLAID(index_folder="pylate-index", index_name="index", override=True)
    documents_ids = ["1", "2", "3"]
    documents = ["document 1 text", "document 2 text", "document 3 text"]
    documents_embeddings = model.encode(documents, batch_size=32, is_query=False, show_progress_bar=True)
    index.add_documents(documents_ids=documents_ids, documents_embeddings=documents_embeddings)
    index = indexes.PLAID(index_folder="pylate-index", index_name="index")
    retriever = retrieve.ColBERT(index=index)
    queries_embeddings = model.encode(
        ["query for document 3", "query for document 1"], batch_size=32, is_query=True, show_progress_bar=True
    )
    scores = retriever.retrieve(queries_embeddings=queries_embeddings, k=10)

    assert isinstance(scores, list) and len(scores) == 2
    assert all(isinstance(hits, list) and len(hits) == 3 for hits in scores)
    assert all(
        set(hit) == {"id", "score"} and isinstance(hit["id"], str) and isinstance(hit["score"], float)
        for hits in scores
        for hit in hits
    )
    assert [hits[0]["id"] for hits in scores] == ["3", "1"]
    decoded = index.get_documents_embeddings(documents_ids)
    assert cosines(decoded, documents_embeddings).mean() > 0.98
    for query, hits in zip(queries_embeddings, scores):
        assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
        for hit in hits:
            position = documents_ids.index(hit["id"])
            # exact MaxSim of the stored (decompressed) tokens, and close to that of the originals
            assert hit["score"] == pytest.approx(reference_maxsim(query, decoded[position]), abs=1e-4)
            assert hit["score"] == pytest.approx(reference_maxsim(query, documents_embeddings[position]), rel=1e-2)
    assert "tokens" not in index.store.manifest["files"], "a PLAID index keeps no full-precision tokens"


# -- lifecycle ------------------------------------------------------------------------------------


def test_lifecycle_batches_retrain_reopen_remove(tmp_path):
    rng = np.random.default_rng(2)
    documents = clustered(rng, 600, dim=32, n_topics=128, lengths=(5, 20))
    ids = [f"d{i}" for i in range(len(documents))]
    queries = queries_from(rng, documents, 8)
    index = indexes.PLAID(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:50], documents[:50])
    first = sum(len(d) for d in documents[:50])
    centroids = index.store.file_path("centroids").read_bytes()
    assert index.store.extra["centroids_trained_on"] == first

    index.add_documents(ids[50:100], documents[50:100])  # 2x growth: encoded with the same codec
    assert index.store.extra["centroids_trained_on"] == first
    assert index.store.file_path("centroids").read_bytes() == centroids

    index.add_documents(ids[100:], documents[100:])  # > 4x growth: retrained, every token re-encoded
    total = sum(len(d) for d in documents)
    assert index.store.extra["centroids_trained_on"] == total
    assert index.store.file_path("centroids").read_bytes() != centroids
    assert len(codec_of(index.store.snapshot).centroids) == indexes.default_centroid_count(total)
    assert len(index.store.side_array("codes")) == len(index.store.side_array("residuals")) == total
    assert len(index) == 600 and index.ids == ids and index.dim == 32

    decoded = index.get_documents_embeddings(ids)
    assert cosines(decoded, documents).mean() > 0.98
    assert cosines(decoded[:100], documents[:100]).mean() > 0.97, "tokens re-encoded by the retrain stay close"
    nested = index.get_documents_embeddings([["d1"], ["d2", "d599"]])
    assert [len(group) for group in nested] == [1, 2]
    np.testing.assert_array_equal(nested[1][1], decoded[599])
    assert index.get_documents_embeddings([]) == []
    before = retrieve.ColBERT(index).retrieve(queries, k=10)
    assert all(len(hits) == 10 for hits in before)
    index.close()

    reopened = indexes.PLAID(index_folder=tmp_path, index_name="i", nbits=2)  # the saved build parameters win
    assert reopened.nbits == 4 and len(reopened) == 600
    assert retrieve.ColBERT(reopened).retrieve(queries, k=10) == before
    removed = sorted({hit["id"] for hit in before[0][:3]})
    reopened.remove_documents(removed)
    assert len(reopened) == 597
    after = retrieve.ColBERT(reopened).retrieve(queries, k=10)
    assert not set(removed) & set(ids_of(after)[0])
    kept = [i for i in ids if i not in removed]
    for got, want in zip(reopened.get_documents_embeddings(kept[::50]), [decoded[ids.index(i)] for i in kept[::50]]):
        np.testing.assert_array_equal(got, want)  # removal moves codes and residuals, it does not re-encode
    with pytest.raises(KeyError, match="Unknown document ids"):
        reopened.get_documents_embeddings(removed)
    reopened.close()

    fresh = indexes.PLAID(index_folder=tmp_path, index_name="i", override=True)
    assert len(fresh) == 0 and retrieve.ColBERT(fresh).retrieve(queries[:2], k=3) == [[], []]


@pytest.mark.parametrize("nbits, mean_cosine", [(4, 0.98), (2, 0.93)])
def test_decoded_embeddings_are_close_to_the_originals(nbits, mean_cosine, tmp_path):
    rng = np.random.default_rng(4)
    documents = clustered(rng, 400, dim=96)
    ids = [str(i) for i in range(len(documents))]
    index = indexes.PLAID(index_folder=tmp_path, index_name="i", nbits=nbits)
    index.add_documents(ids, documents)
    decoded = index.get_documents_embeddings(ids)
    assert [d.shape for d in decoded] == [d.shape for d in documents]
    assert all(d.dtype == np.float32 for d in decoded)
    found = cosines(decoded, documents)
    assert found.mean() > mean_cosine
    if nbits == 2:
        four = indexes.PLAID(index_folder=tmp_path, index_name="four", nbits=4)
        four.add_documents(ids, documents)
        assert cosines(four.get_documents_embeddings(ids), documents).mean() > found.mean() + 0.01


def test_subset_filtering(small, tmp_path):
    ids, documents, queries = small
    index = indexes.PLAID(index_folder=tmp_path, index_name="i", n_full_scores=64)  # exact stage: 16 documents
    index.add_documents(ids, documents)
    retriever = retrieve.ColBERT(index)
    decoded = dict(zip(ids, index.get_documents_embeddings(ids)))
    few = ids[10:22]  # at most the exact stage's size: scored whole, so exactly
    many = ids[::2]  # more: candidates filtered to the subset
    for subset in (few, many):
        for hits in retriever.retrieve(queries, k=5, subset=subset):
            assert len(hits) == 5 and {hit["id"] for hit in hits} <= set(subset)
    got = retriever.retrieve(queries, k=5, subset=few)
    want = retrieve.exact(queries, [decoded[i] for i in few], few, k=5)
    assert ids_of(got) == ids_of(want)
    np.testing.assert_allclose(scores_of(got), scores_of(want), atol=1e-4)
    with pytest.raises(KeyError, match="Unknown document ids"):
        retriever.retrieve(queries, k=5, subset=["nope"])


def test_a_subset_out_of_the_probed_centroids_returns_no_error(tmp_path):
    """Candidates of a filtered search can be none at all (decoding zero tokens once raised ValueError)."""
    rng = np.random.default_rng(0)
    near_a = [unit(rng, 4) * 0.05 + np.eye(32, dtype=np.float32)[0] for _ in range(20)]
    near_b = [unit(rng, 4) * 0.05 + np.eye(32, dtype=np.float32)[1] for _ in range(20)]
    documents = [(d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32) for d in near_a + near_b]
    ids = [str(i) for i in range(40)]
    index = indexes.PLAID(index_folder=tmp_path, index_name="i", n_centroids=2)
    index.add_documents(ids, documents)
    hits = retrieve.ColBERT(index).retrieve([documents[0][:3]], k=1, subset=ids[20:], n_ivf_probe=1, n_full_scores=4)
    assert {hit["id"] for hit in hits[0]} <= set(ids[20:])
    assert index.store.snapshot.documents(np.array([], dtype=np.int64)).tokens.shape == (0, 32)


# -- search quality -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_2000():
    rng = np.random.default_rng(0)
    documents = clustered(rng, 2000, dim=96)
    return [str(i) for i in range(len(documents))], documents, queries_from(rng, documents, 16)


def test_search_finds_the_exact_top_10_and_scores_decompressed_tokens_exactly(corpus_2000, tmp_path):
    ids, documents, queries = corpus_2000
    index = indexes.PLAID(index_folder=tmp_path, index_name="plaid")
    index.add_documents(ids, documents)
    exact = indexes.Exact(index_folder=tmp_path, index_name="exact", dtype="float32")
    exact.add_documents(ids, documents)
    truth = ids_of(retrieve.ColBERT(exact).retrieve(queries, k=10))
    results = retrieve.ColBERT(index).retrieve(queries, k=10)
    assert overlap(ids_of(results), truth, 10) >= 0.9

    decoded = index.get_documents_embeddings(ids)
    scores = colbert_scores(queries, decoded).numpy()
    on_decoded = [[ids[p] for p in positions] for positions, _ in top_k(scores, 10)]
    assert ids_of(results) == on_decoded, "at its defaults the search is exhaustive on 2000 documents"
    for row, hits in zip(scores, results):
        assert [hit["score"] for hit in hits] == pytest.approx([float(row[int(hit["id"])]) for hit in hits], abs=1e-5)

    # A cheap setting (exact MaxSim on 128 of 2000 documents) keeps the decoded top 10: candidate
    # generation and centroid interaction do their job; one probe and 64 exact scores cannot.
    cheap = ids_of(retrieve.ColBERT(index).retrieve(queries, k=10, n_ivf_probe=4, n_full_scores=512))
    cheapest = ids_of(retrieve.ColBERT(index).retrieve(queries, k=10, n_ivf_probe=1, n_full_scores=256))
    assert overlap(cheap, on_decoded, 10) >= 0.95
    assert overlap(cheapest, on_decoded, 10) < overlap(cheap, on_decoded, 10)


@pytest.fixture(scope="module")
def tokens_200k():
    """6250 documents of 32 clustered tokens each, dimension 96: 200,000 tokens."""
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((256, 96)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    tokens = topics[rng.integers(0, 256, size=200_000)] + 0.05 * rng.standard_normal((200_000, 96), dtype=np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    return [str(i) for i in range(6250)], list(tokens.reshape(6250, 32, 96))


@pytest.mark.parametrize("nbits, limit", [(4, 58), (2, 34)])
def test_bytes_on_disk_per_token(nbits, limit, tokens_200k, tmp_path):
    ids, documents = tokens_200k
    n_tokens, dim = 200_000, 96
    index = indexes.PLAID(index_folder=tmp_path, index_name="i", nbits=nbits, n_centroids=256)
    index.add_documents(ids, documents)
    assert index.nbytes / n_tokens <= limit
    folder = index.store.folder
    on_disk = sum(p.stat().st_size for p in folder.iterdir() if p.name != "writer.lock")
    assert on_disk == index.nbytes, "the folder holds nothing beyond the committed state"
    files = index.store.manifest["files"]
    assert "tokens" not in files
    assert index.store.manifest["sizes"]["residuals"] == n_tokens * dim * nbits // 8
    assert index.store.manifest["sizes"]["codes"] == 2 * n_tokens  # uint16 centroid ids
    assert all((folder / file).stat().st_size < n_tokens * dim * 2 for file in files.values()), (
        "no file is the size of a float16 token matrix"
    )


# -- durability and one writer --------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing may catch it."""


def arm_crash(monkeypatch, crash_at: int) -> dict:
    """Make the crash_at-th file write of the store write half its bytes and die; past every write,
    die just before the manifest switch. Returns the write count."""
    writes = {"count": 0}

    def torn(original):
        def write(self, manifest, name, content):
            writes["count"] += 1
            if writes["count"] == crash_at:
                original(self, manifest, name, content[: len(content) // 2])
                raise Crash
            return original(self, manifest, name, content)

        return write

    original_commit = TokenStore._commit

    def commit(self, manifest):
        writes["count"] += 1
        if writes["count"] == crash_at:
            raise Crash
        return original_commit(self, manifest)

    monkeypatch.setattr(TokenStore, "_append_bytes", torn(TokenStore._append_bytes))
    monkeypatch.setattr(TokenStore, "_write_new", torn(TokenStore._write_new))
    monkeypatch.setattr(TokenStore, "_commit", commit)
    return writes


@pytest.mark.parametrize("path", ["append", "retrain"])
def test_a_writer_dying_at_any_write_leaves_the_last_commit(path, small, tmp_path):
    ids, documents, queries = small
    base = indexes.PLAID(index_folder=tmp_path, index_name="i")
    base.add_documents(ids[:40], documents[:40])
    base.close()
    new = slice(40, 60) if path == "append" else slice(40, None)  # 1.5x growth, or more than 4x
    state = tree(tmp_path / "i")
    before = retrieve.ColBERT(indexes.PLAID(index_folder=tmp_path, index_name="i")).retrieve(queries, k=5)
    crashes = 0
    for crash_at in range(1, 100):
        with pytest.MonkeyPatch.context() as patch:
            arm_crash(patch, crash_at)
            writer = indexes.PLAID(index_folder=tmp_path, index_name="i")
            try:
                writer.add_documents(ids[new], documents[new])
            except Crash:
                crashes += 1
            else:
                break
            finally:
                writer.close()
        reopened = indexes.PLAID(index_folder=tmp_path, index_name="i")
        assert len(reopened) == 40 and reopened.ids == ids[:40], f"crash at write {crash_at}"
        assert retrieve.ColBERT(reopened).retrieve(queries, k=5) == before, f"crash at write {crash_at}"
        now = tree(tmp_path / "i")
        assert all(now[name][: len(data)] == data for name, data in state.items()), (
            f"crash at write {crash_at} changed committed bytes"
        )
        assert now["manifest.json"] == state["manifest.json"]
    # An append writes lengths, ids, codes and residuals, then commits (5 points to die at); a retrain
    # also rewrites codes and residuals into fresh files and writes centroids and buckets (11 today).
    assert (crashes == 5) if path == "append" else (crashes >= 10)
    writer = indexes.PLAID(index_folder=tmp_path, index_name="i")
    assert len(writer) == len(ids[:40]) + len(ids[new])
    assert not strays(tmp_path / "i"), "the successful writer cleans what the crashed ones left"
    trained = documents if path == "retrain" else documents[:40]  # the codec is retrained on every token, or kept
    trained_on = sum(len(d) for d in trained)
    assert writer.store.extra["centroids_trained_on"] == trained_on
    assert retrieve.ColBERT(writer).retrieve([documents[55]], k=1)[0][0]["id"] == ids[55]


def run_writer(folder: Path, start_batch: int, crash_at: int) -> subprocess.Popen:
    script = Path(__file__).with_name("index_writer.py")
    return subprocess.Popen(
        [sys.executable, str(script), "--kind=plaid", str(folder), str(start_batch), str(crash_at)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("crash_at", [4, 11])
def test_a_plaid_writer_killed_during_a_retrain_loses_nothing(crash_at, tmp_path):
    """A real SIGKILL in another process: mid re-encoding (write 4) or just before the manifest switch."""
    first = indexes.PLAID(index_folder=tmp_path, index_name="index")
    for batch in (0, 1):  # trained on batch 0: the add of batch 3 quadruples the tokens and retrains
        first.add_documents([f"{batch}-{i}" for i in range(BATCH)], embeddings_for(batch))
    first.close()
    child = run_writer(tmp_path, 2, crash_at)  # commits batch 2, dies adding batch 3
    output, _ = child.communicate(timeout=120)
    reported = [line for line in output.splitlines(keepends=True) if line.startswith("committed")]
    assert child.returncode == -signal.SIGKILL and reported == ["committed 2\n"]
    assert strays(tmp_path / "index"), "the kill should leave a torn write behind"

    index = indexes.PLAID(index_folder=tmp_path, index_name="index")
    assert len(index) == 3 * BATCH and index.store.extra["centroids_trained_on"] == BATCH * 30
    for batch in (0, 2):
        assert (
            cosines(
                index.get_documents_embeddings([f"{batch}-{i}" for i in range(BATCH)]), embeddings_for(batch)
            ).mean()
            > 0.9
        )
    assert retrieve.ColBERT(index).retrieve([embeddings_for(2)[7]], k=1)[0][0]["id"] == "2-7"
    index.add_documents([f"3-{i}" for i in range(BATCH)], embeddings_for(3))  # the next writer retrains
    assert index.store.extra["centroids_trained_on"] == 4 * BATCH * 30
    assert not strays(tmp_path / "index")
    assert retrieve.ColBERT(index).retrieve([embeddings_for(3)[5]], k=1)[0][0]["id"] == "3-5"


def test_one_writer_at_a_time(small, tmp_path):
    ids, documents, queries = small
    writer = indexes.PLAID(index_folder=tmp_path, index_name="i")
    writer.add_documents(ids[:50], documents[:50])
    other = indexes.PLAID(index_folder=tmp_path, index_name="i")
    assert len(retrieve.ColBERT(other).retrieve(queries[:1], k=3)[0]) == 3, "readers need no lock"
    with pytest.raises(IndexLockedError, match="one writer at a time"):
        other.add_documents(ids[50:60], documents[50:60])
    with pytest.raises(IndexLockedError):
        indexes.PLAID(index_folder=tmp_path, index_name="i", override=True)
    writer.add_documents(ids[60:70], documents[60:70])
    writer.close()
    other.add_documents(ids[50:60], documents[50:60])
    assert len(other) == 70, "a writer builds on the latest commit"
    assert len(indexes.PLAID(index_folder=tmp_path, index_name="i")) == 70


def test_override_replaces_only_a_workbench_index(small, tmp_path):
    ids, documents, _ = small
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("years of work")
    with pytest.raises(IndexCorruptError, match="not a workbench index"):
        indexes.PLAID(index_folder=tmp_path, index_name="users", override=True)
    assert sorted(os.listdir(users)) == ["thesis.tex"] and (users / "thesis.tex").read_text() == "years of work"


def test_one_index_kind_per_folder(small, tmp_path):
    ids, documents, _ = small
    plaid = indexes.PLAID(index_folder=tmp_path, index_name="i")
    plaid.add_documents(ids[:20], documents[:20])
    plaid.close()
    state = tree(tmp_path / "i")
    with pytest.raises(ValueError, match="holds a PLAID index, not a Voyager one.*open it as PLAID"):
        indexes.Voyager(index_folder=tmp_path, index_name="i")
    with pytest.raises(ValueError, match="holds a PLAID index, not an Exact one"):
        indexes.Exact(index_folder=tmp_path, index_name="i")
    assert tree(tmp_path / "i") == state
    voyager = indexes.Voyager(index_folder=tmp_path, index_name="v")
    voyager.add_documents(ids[:20], documents[:20])
    voyager.close()
    with pytest.raises(ValueError, match="holds a Voyager index, not a PLAID one"):
        indexes.PLAID(index_folder=tmp_path, index_name="v")


# -- bad input ------------------------------------------------------------------------------------


def test_bad_parameters_and_input_are_refused_before_anything_is_written(small, tmp_path):
    ids, documents, queries = small
    with pytest.raises(ValueError, match=r"nbits must be one of \(1, 2, 4, 8\), got 3"):
        indexes.PLAID(index_folder=tmp_path, index_name="i", nbits=3)
    with pytest.raises(ValueError, match="dimension 7 do not pack into bytes at nbits=2"):
        indexes.PLAID(index_folder=tmp_path, index_name="i", nbits=2, embedding_size=7)
    with pytest.raises(ValueError, match="n_ivf_probe must be a positive integer"):
        indexes.PLAID(index_folder=tmp_path, index_name="i", n_ivf_probe=0)
    assert not (tmp_path / "i").exists()

    index = indexes.PLAID(index_folder=tmp_path, index_name="i", override=True, nbits=2)
    empty = tree(tmp_path / "i")
    odd = [np.ones((3, 7), np.float32) / np.sqrt(7)] * 2
    with pytest.raises(ValueError, match="dimension 7 do not pack into bytes at nbits=2.*multiple of 4"):
        index.add_documents(["a", "b"], odd)
    assert tree(tmp_path / "i") == empty and len(index) == 0 and index.dim is None
    index.close()
    reopened = indexes.PLAID(index_folder=tmp_path, index_name="i")
    assert len(reopened) == 0 and reopened.dim is None

    reopened.add_documents(ids[:30], documents[:30])
    state = tree(tmp_path / "i")
    nan = documents[40].copy()
    nan[0, 0] = np.nan
    for bad_ids, bad_embeddings, message in [
        (["x", "x"], documents[40:42], "appears twice"),
        (["d3"], documents[40:41], "already in the index"),
        (["x"], [np.ones((3, 16), np.float32)], "dimension 16; the index holds 32"),
        (["x"], [nan], "NaN"),
    ]:
        with pytest.raises(ValueError, match=message):
            reopened.add_documents(bad_ids, bad_embeddings)
    assert tree(tmp_path / "i") == state and len(reopened) == 30

    retriever = retrieve.ColBERT(reopened)
    with pytest.raises(ValueError, match="PLAID has no search setting k_token.*n_ivf_probe, n_full_scores"):
        retriever.retrieve(queries, k=5, k_token=5)
    with pytest.raises(ValueError, match="n_ivf_probe"):
        reopened.search(pack(queries), 5, k_token=5)
    with pytest.raises(ValueError, match="n_ivf_probe must be a positive integer"):
        retriever.retrieve(queries, k=5, n_ivf_probe=0)
    assert len(retriever.retrieve(queries, k=5, n_ivf_probe=2, n_full_scores=16)[0]) == 5


# -- the Index contract, for every kind and for one written here ----------------------------------


class FirstK(indexes.Index):
    """Exact MaxSim over the first ``limit`` documents only: the smallest index with a setting of its own."""

    sweep = ({"limit": 10}, {"limit": 100}, {"limit": 1_000_000})

    def __init__(self, index_folder, index_name, override=False, limit=1_000_000):
        super().__init__(index_folder, index_name, override, payload="float32")
        self.search_settings = {"limit": limit}

    def search(self, queries, k, subset=None, snapshot=None, device=None, **settings):
        settings = self.settings(**settings)
        snapshot = self.snapshot() if snapshot is None else snapshot
        positions = np.arange(min(settings["limit"], len(snapshot.ids)))
        if subset is not None:
            positions = positions[subset[positions]]
        return top_k(colbert_scores(queries, snapshot.documents(positions), device=device).numpy(), k, positions)


@pytest.mark.parametrize("kind", [*indexes.KINDS, FirstK])
def test_every_index_keeps_the_contract(kind, small, tmp_path):
    ids, documents, queries = small
    index = indexes.make(kind, tmp_path, "i")
    assert isinstance(index, indexes.Index) and type(index) is indexes.kind_of(kind)
    index.add_documents(ids, documents)
    assert len(index) == len(ids) and index.ids == ids and index.dim == 32 and index.nbytes > 0
    packed = pack(queries)
    results = index.search(packed, 5)
    assert len(results) == len(queries)
    decoded = index.get_documents_embeddings(ids)
    for query, (positions, scores) in zip(queries, results):
        assert len(positions) == len(scores) == 5 and len(set(positions.tolist())) == 5
        assert np.all(np.diff(scores) <= 0), "best first"
        # the float64 loop, not colbert_scores: every index scores with colbert_scores itself
        np.testing.assert_allclose(scores, [reference_maxsim(query, decoded[p]) for p in positions], atol=1e-4)
    snapshot = index.snapshot()
    assert [p.tolist() for p, _ in index.search(packed, 5, snapshot=snapshot)] == [p.tolist() for p, _ in results]
    mask = index.subset_mask(ids[::3], snapshot)
    for positions, _ in index.search(packed, 5, subset=mask, snapshot=snapshot):
        assert mask[positions].all()

    assert index.settings() == index.search_settings
    with pytest.raises(ValueError, match=f"{type(index).__name__} has no search setting bogus"):
        index.settings(bogus=3)
    with pytest.raises(ValueError, match="bogus"):
        retrieve.ColBERT(index).retrieve(queries, k=5, bogus=3)
    for setting in index.sweep:
        assert set(setting) <= set(index.search_settings)
        assert index.settings(**setting) == {**index.search_settings, **setting}

    reference = exact_top(queries, decoded, ids, 5)
    sweep = retrieve.recall_latency(index, queries, reference, k=5, repeats=1)
    settings = list(dict.fromkeys(name for setting in index.sweep for name in setting))
    assert list(sweep.columns) == [*settings, "ms_per_query", "recall@5"] and len(sweep) == len(index.sweep)
    assert (sweep["ms_per_query"] > 0).all()
    assert sweep["recall@5"].iloc[-1] >= 0.9 and sweep["recall@5"].iloc[-1] >= sweep["recall@5"].iloc[0]
    # Each row is its own setting's search: recall recomputed here from that setting's hits.
    for setting, recall in zip(index.sweep, sweep["recall@5"], strict=True):
        found = overlap(ids_of(retrieve.ColBERT(index).retrieve(queries, k=5, **setting)), reference, 5)
        assert recall == pytest.approx(found), setting
    index.close()


class HashModel:
    """A stand-in ColBERT: every word a unit token seeded by the word, so shared words match."""

    def encode(self, texts, is_query=True, **_):
        encoded = []
        for text in texts:
            rows = [np.random.default_rng(zlib.crc32(word.encode())).standard_normal(16) for word in text.split()]
            tokens = np.array(rows, dtype=np.float32)
            encoded.append(tokens / np.linalg.norm(tokens, axis=1, keepdims=True))
        return encoded


def test_a_custom_index_works_with_retrieval_and_evaluation(small, tmp_path):
    """How to add an index: subclass Index, give search (and settings, a sweep); no registration needed."""
    ids, documents, queries = small
    custom = FirstK(index_folder=tmp_path, index_name="first", override=True)
    custom.add_documents(ids, documents)
    exact = indexes.Exact(index_folder=tmp_path, index_name="exact", dtype="float32")
    exact.add_documents(ids, documents)
    got, want = retrieve.ColBERT(custom).retrieve(queries, k=7), retrieve.ColBERT(exact).retrieve(queries, k=7)
    assert ids_of(got) == ids_of(want)
    np.testing.assert_allclose(scores_of(got), scores_of(want), atol=1e-5)
    limited = retrieve.ColBERT(custom).retrieve(queries, k=3, limit=20, subset=ids[10:])
    assert {hit["id"] for hits in limited for hit in hits} <= set(ids[10:20])
    with pytest.raises(ValueError, match="FirstK has no search setting k_token.*limit"):
        retrieve.ColBERT(custom).retrieve(queries, k=3, k_token=4)

    words = [f"w{i}" for i in range(40)]
    rng = np.random.default_rng(8)
    corpus = {f"doc{i}": " ".join(rng.choice(words, size=6)) for i in range(30)}
    queries_text = {f"q{i}": " ".join(corpus[f"doc{3 * i}"].split()[:3]) for i in range(5)}
    qrels = {f"q{i}": {f"doc{3 * i}": 1} for i in range(5)}
    collection = Collection("toy", corpus, queries_text, qrels)
    model = HashModel()
    assert indexes.kind_of(FirstK) is FirstK
    # depth 30: the whole corpus, so that float ties at a cut-off cannot make the runs differ
    run = evaluation.search_collection(model, collection, depth=30, index=FirstK)
    truth = evaluation.search_collection(model, collection, depth=30, index="exact")
    assert set(run) == set(truth) == set(qrels)
    for query in truth:
        assert run[query] == pytest.approx(truth[query], abs=1e-5)
    with pytest.raises(ValueError, match="Unknown index kind 'firstk'"):
        evaluation.search_collection(model, collection, index="firstk")


# -- retraining without holding the corpus --------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_voyager_retrain_reassigns_every_stored_token(dtype, tmp_path):
    rng = np.random.default_rng(3)
    documents = [unit(rng, int(n)) for n in rng.integers(3, 40, size=800)]
    ids = [f"d{i}" for i in range(len(documents))]
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", dtype=dtype)
    index.add_documents(ids[:50], documents[:50])
    index.add_documents(ids[50:100], documents[50:100])
    before_retrain = index.store.snapshot.n_tokens
    index.add_documents(ids[100:], documents[100:])  # crosses RETRAIN_GROWTH
    snapshot = index.store.snapshot
    total = sum(len(d) for d in documents)
    assert total >= indexes.RETRAIN_GROWTH * sum(len(d) for d in documents[:50])
    assert index.store.extra["centroids_trained_on"] == snapshot.n_tokens == total
    codes = np.asarray(snapshot.side["codes"])
    centroids = indexes.centroids_of(snapshot)
    assert len(codes) == total and len(centroids) == indexes.default_centroid_count(total, voyager.CENTROIDS_PER_ROOT)
    expected = indexes.assign(snapshot.tokens, centroids)
    np.testing.assert_array_equal(codes[:before_retrain], expected[:before_retrain])  # re-assigned from the store
    if dtype == "float32":
        np.testing.assert_array_equal(codes, expected)
    else:  # the retraining batch's own tokens are assigned from their fp32 input, not the stored fp16
        assert np.mean(codes == expected) > 0.999


def test_voyager_queries_run_with_one_blas_thread_and_the_limit_is_lifted_after():
    """numpy's BLAS pool would make parallel queries' products fight for the cores (see voyager._per_query)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    # An OpenMP-built BLAS (faiss's) reads the calling thread's OpenMP setting instead, which the search's
    # workers set for themselves; numpy's wheels bring a pthreads OpenBLAS, whose setting is the process's.
    # (Apple's Accelerate, numpy's BLAS on macOS, is not one threadpoolctl can limit: nothing to check there.)
    limited = {
        library.filepath
        for library in voyager._blas_threads().lib_controllers
        if library.user_api == "blas" and getattr(library, "threading_layer", None) != "openmp"
    }

    def blas_threads(_=None):
        return sorted({library["num_threads"] for library in threadpool_info() if library["filepath"] in limited})

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()  # [2] here; a one-core machine's BLAS may keep [1]
        assert voyager._per_query(blas_threads, 4) == [[1] if limited else []] * 4
        assert blas_threads() == before


def test_voyager_trains_its_centroids_on_a_bounded_share_of_the_tokens(tmp_path, monkeypatch):
    """16 tokens per centroid, at most a quarter of the tokens above MIN_SAMPLE, every token below it."""
    assert voyager.kmeans_sample_size(2048, 72_926) == 18_231  # a quarter: 16 per centroid would be 32,768
    assert voyager.kmeans_sample_size(4096, 356_900) == 65_536  # 16 per centroid, under a quarter (89,225)
    assert voyager.kmeans_sample_size(2048, 40_000) == 16_384  # a quarter (10,000) is below MIN_SAMPLE
    assert voyager.kmeans_sample_size(256, 1_000) == 1_000  # fewer tokens than MIN_SAMPLE: every one
    trained = []
    kmeans = voyager.spherical_kmeans

    def recording_kmeans(sample, k, **options):
        trained.append((len(sample), k, options))
        return kmeans(sample, k, **options)

    monkeypatch.setattr(voyager, "spherical_kmeans", recording_kmeans)
    rng = np.random.default_rng(5)
    documents = [unit(rng, 40, dim=16) for _ in range(2_500)]  # 100,000 tokens: 2,048 centroids
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", seed=7)
    index.add_documents([f"d{i}" for i in range(len(documents))], documents)
    assert trained == [(25_000, 2048, {"iterations": voyager.KMEANS_ITERATIONS, "seed": 7})]
    assert len(indexes.centroids_of(index.snapshot())) == 2048


@pytest.mark.parametrize("kind", [indexes.Voyager, indexes.PLAID])
def test_a_retrain_read_in_small_chunks_builds_the_same_index(kind, small, tmp_path, monkeypatch):
    """The retrain streams the stored tokens chunk by chunk; the chunking must not change the result."""
    ids, documents, queries = small
    built = []
    for name in ("whole", "chunked"):
        if name == "chunked":
            original = TokenStore.rows
            monkeypatch.setattr(
                TokenStore,
                "rows",
                lambda self, names, token_rows=None, chunk=0, original=original: original(
                    self, names, token_rows, chunk=97
                ),
            )
        index = kind(index_folder=tmp_path, index_name=name)
        index.add_documents(ids[:20], documents[:20])
        index.add_documents(ids[20:], documents[20:])  # retrains
        assert index.store.extra["centroids_trained_on"] == sum(len(d) for d in documents)
        arrays = {key: np.asarray(array).copy() for key, array in index.store.snapshot.side.items()}
        built.append((arrays, retrieve.ColBERT(index).retrieve(queries, k=5)))
        index.remove_documents(ids[:7])  # removal copies rows in chunks too
        built[-1] += ({key: np.asarray(array).copy() for key, array in index.store.snapshot.side.items()},)
        index.close()
    (whole, whole_hits, whole_removed), (chunked, chunked_hits, chunked_removed) = built
    assert whole.keys() == chunked.keys() and whole_hits == chunked_hits
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key])
        np.testing.assert_array_equal(whole_removed[key], chunked_removed[key])


def test_a_batch_searched_in_blocks_of_centroid_scores_finds_the_same(small, tmp_path, monkeypatch):
    """A large batch is split so its centroid scores stay bounded; the split must not change a result."""
    ids, documents, queries = small
    index = indexes.PLAID(index_folder=tmp_path, index_name="plaid")
    index.add_documents(ids, documents)
    whole = retrieve.ColBERT(index).retrieve(queries, k=5, n_full_scores=16)
    blocks, chunks = [], plaid.text_chunks
    monkeypatch.setattr(plaid, "text_chunks", lambda offsets, size: blocks.append(chunks(offsets, size)) or blocks[-1])
    n_centroids = len(codec_of(index.snapshot()).centroids)
    monkeypatch.setattr(plaid, "SCORE_BLOCK", 16 * n_centroids)  # two queries of 8 tokens a block
    assert retrieve.ColBERT(index).retrieve(queries, k=5, n_full_scores=16) == whole
    assert blocks == [[(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]]
