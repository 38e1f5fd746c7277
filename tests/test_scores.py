"""Exact MaxSim against a plain reference loop."""

import numpy as np
import pytest
import torch

from workbench import scores
from workbench.scores import PackedEmbeddings, colbert_scores, colbert_scores_pairwise, pack

from helpers import reference_maxsim


def random_texts(rng, lengths, dim=16, dtype=np.float32):
    return [rng.standard_normal((n, dim)).astype(dtype) for n in lengths]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_list_inputs_match_reference_including_one_token_and_long_documents(rng):
    queries = random_texts(rng, [5, 1, 9])
    documents = random_texts(rng, [1, 3, 40, 7, 1])  # a one-token document and one much longer
    result = colbert_scores(queries, documents)
    assert result.shape == (3, 5) and result.dtype == torch.float32
    for i, query in enumerate(queries):
        for j, document in enumerate(documents):
            assert result[i, j].item() == pytest.approx(reference_maxsim(query, document), abs=1e-5)


def test_many_chunks_and_a_document_longer_than_a_chunk(rng, monkeypatch):
    monkeypatch.setattr(scores, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(scores, "MIN_CHUNK_TOKENS", 8)
    queries = random_texts(rng, [4, 6])
    documents = random_texts(rng, [3, 30, 2, 9, 1, 8, 8, 5])
    result = colbert_scores(queries, documents)
    expected = [[reference_maxsim(q, d) for d in documents] for q in queries]
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)


def test_padding_cannot_win_a_max(rng):
    documents = random_texts(rng, [2, 5])
    queries = random_texts(rng, [3])
    padded = np.full((2, 6, 16), 1e6, dtype=np.float32)  # padding that would win every max
    mask = np.zeros((2, 6), dtype=bool)
    for i, document in enumerate(documents):
        padded[i, : len(document)] = document
        mask[i, : len(document)] = True
    query_padded = np.full((1, 4, 16), 1e6, dtype=np.float32)
    query_padded[0, :3] = queries[0]
    query_mask = torch.tensor([[1, 1, 1, 0]])
    result = colbert_scores(torch.from_numpy(query_padded), padded, queries_mask=query_mask, documents_mask=mask)
    expected = [[reference_maxsim(queries[0], d) for d in documents]]
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)


def test_fp16_inputs_accumulate_in_fp32(rng):
    # 256 query tokens with fp16-exact values: an fp16 accumulator would round the sum visibly.
    queries = random_texts(rng, [256], dtype=np.float16)
    documents = random_texts(rng, [3, 12], dtype=np.float16)
    result = colbert_scores(queries, [torch.from_numpy(d) for d in documents])
    expected = [[reference_maxsim(queries[0], d) for d in documents]]
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6, atol=1e-3)
    assert result.dtype == torch.float32


def test_pairwise_matches_reference(rng):
    queries = random_texts(rng, [4, 2, 7])
    documents = random_texts(rng, [1, 20, 3])
    result = colbert_scores_pairwise(queries, documents)
    expected = [reference_maxsim(q, d) for q, d in zip(queries, documents)]
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)


def test_packed_documents_score_like_the_list_and_select_keeps_order(rng):
    queries = random_texts(rng, [4])
    documents = random_texts(rng, [3, 8, 2, 5])
    packed = pack(documents)
    assert isinstance(packed, PackedEmbeddings) and len(packed) == 4 and packed.lengths.tolist() == [3, 8, 2, 5]
    np.testing.assert_array_equal(colbert_scores(queries, packed).numpy(), colbert_scores(queries, documents).numpy())
    chosen = packed.select([3, 0])
    np.testing.assert_array_equal(chosen[0], documents[3])
    np.testing.assert_array_equal(chosen[1], documents[0])


def test_bad_inputs_are_named(rng):
    with pytest.raises(ValueError, match="dimension"):
        colbert_scores(random_texts(rng, [2], dim=8), random_texts(rng, [2], dim=16))
    with pytest.raises(ValueError, match="Text 1 has no tokens"):
        colbert_scores(random_texts(rng, [2]), [np.ones((2, 16), np.float32), np.ones((0, 16), np.float32)])
    with pytest.raises(ValueError, match="as many queries as documents"):
        colbert_scores_pairwise(random_texts(rng, [2, 2]), random_texts(rng, [2]))
    with pytest.raises(ValueError, match="mask has shape"):
        colbert_scores(np.ones((1, 3, 16), np.float32), random_texts(rng, [2]), queries_mask=np.ones((1, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_tokens_are_refused_naming_the_text(rng, bad):
    texts = random_texts(rng, [2, 3, 4])
    texts[1][2, 5] = bad
    with pytest.raises(ValueError, match=r"Embedding 1 holds NaN or infinite values \(token 2\)"):
        pack(texts)
    padded = np.zeros((3, 4, 16), np.float32)
    mask = np.zeros((3, 4), bool)
    for i, text in enumerate(texts):
        padded[i, : len(text)], mask[i, : len(text)] = text, True
    with pytest.raises(ValueError, match=r"Embedding 1 holds NaN or infinite values \(token 2\)"):
        pack(torch.from_numpy(padded), mask)
    with pytest.raises(ValueError, match="Embedding 1 holds NaN"):
        colbert_scores(random_texts(rng, [2]), texts)


def test_masked_padding_may_hold_anything(rng):
    texts = random_texts(rng, [2, 3])
    padded = np.full((2, 3, 16), np.nan, np.float32)
    for i, text in enumerate(texts):
        padded[i, : len(text)] = text
    packed = pack(padded, np.arange(3) < np.array([[2], [3]]))
    np.testing.assert_array_equal(packed.tokens, np.concatenate(texts))


def test_retrieve_and_rerank_name_a_nan_query(rng, tmp_path):
    from workbench import indexes, rank, retrieve

    documents = random_texts(rng, [3, 5])
    queries = random_texts(rng, [4, 4, 4])
    queries[2][0, 0] = np.nan
    with pytest.raises(ValueError, match="Embedding 2 holds NaN"):
        retrieve.exact(queries, documents, ["a", "b"], k=2)
    with pytest.raises(ValueError, match="Embedding 2 holds NaN"):
        rank.rerank([["a", "b"]] * 3, queries, [documents] * 3)
    index = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(["a", "b"], documents)
    with pytest.raises(ValueError, match="Embedding 2 holds NaN"):
        retrieve.ColBERT(index).retrieve(queries, k=2)
    index.close()


def test_scores_on_a_torch_device_equal_the_numpy_path():
    """The CUDA/MPS path is the same torch code on any device: checked here on the CPU against numpy."""
    from workbench.scores import _colbert_scores_on

    rng = np.random.default_rng(4)
    queries = [rng.normal(size=(n, 16)).astype(np.float32) for n in (3, 32)]
    documents = [rng.normal(size=(n, 16)).astype(np.float16) for n in (1, 7, 40, 2, 13)]
    expected = np.array([[reference_maxsim(q, d) for d in documents] for q in queries])
    on_device = _colbert_scores_on(torch.device("cpu"), pack(queries), pack(documents), chunk_tokens=16).numpy()
    np.testing.assert_allclose(on_device, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(colbert_scores(queries, documents, device="cpu").numpy(), expected, rtol=1e-5, atol=1e-4)


def test_retrieve_and_rerank_pass_their_device_to_the_scorer(monkeypatch, tmp_path):
    """retrieve(device=...) and rerank(device=...) are honoured, not accepted and ignored."""
    from workbench import indexes, rank, retrieve

    seen = []
    original = scores.colbert_scores

    def recording(*args, device=None, **kwargs):
        seen.append(device)
        return original(*args, device=device, **kwargs)

    rng = np.random.default_rng(0)
    documents = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 5, 4)]
    query = [rng.normal(size=(4, 8)).astype(np.float32)]
    index = indexes.Exact(index_folder=tmp_path, index_name="toy", override=True)
    index.add_documents(["a", "b", "c"], documents)
    # Each index module scores with its own imported colbert_scores (workbench.indexes is a package).
    from workbench.indexes import exact, plaid, voyager

    for module in (exact, plaid, voyager, rank, retrieve):
        monkeypatch.setattr(module, "colbert_scores", recording)
    retrieve.ColBERT(index).retrieve(query, k=2, device="cpu")
    rank.rerank([["a", "b"]], query, [documents[:2]], device="cpu")
    retrieve.exact(query, documents, ["a", "b", "c"], k=2, device="cpu")
    assert seen == ["cpu", "cpu", "cpu"]
