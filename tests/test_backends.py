"""workbench.backends: ColBERT's transformer in ONNX Runtime and OpenVINO, against torch fp32.

Thresholds are per precision, with margin over what this project's machine measured:
- fp32 runtimes differ from torch only in summation order: per-token cosine 1 - 1e-7; asserted 0.9999.
- bf16 (OpenVINO's default on CPUs with AVX512-BF16 or AMX) rounds products to an 8-bit mantissa; over 384-wide sums the
  errors mostly cancel: measured min 0.99987; asserted 0.999.
- ONNX Runtime's int8 (dynamic quantisation) puts a whole tensor's activations on 256 levels, so tokens
  with small activations lose most: measured mean 0.979 / min 0.93 on the MiniLM build (random
  projection); asserted 0.95 / 0.8. Its kernels differ by CPU (VNNI or not), so only "mostly the same
  ranking" is asserted for it.
- OpenVINO's int8 gives each token's activations a scale per group of 128 channels, and its weights one
  per output channel: measured mean 0.99777 / min 0.99392 on the MiniLM build (AMD Zen 4, AVX512-VNNI;
  ONNX Runtime's int8 gave 0.97844 / 0.9241 in the same run); asserted 0.995 / 0.98, and the same best
  document. Where the CPU has no VNNI it runs fp32 products on the same int8 weights (closer still).
benchmarks/encode.py measures all of them on answerai-colbert-small-v1.
"""

import doctest
import pickle

import numpy as np
import pytest
import torch

from workbench import backends, models
from workbench.provenance import machine
from workbench.scores import colbert_scores

from helpers import reference_maxsim

QUERIES = ["what is the capital of france", "how do plants make food", "who wrote hamlet", "when did the war end"]
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Plants make their food by photosynthesis, using sunlight, water and carbon dioxide.",
    "Hamlet is a tragedy written by William Shakespeare around 1600.",
    "The Second World War ended in 1945 with the surrender of Germany and then Japan.",
    "The Great Barrier Reef is the world's largest coral reef system, off the coast of Australia.",
    "A sourdough starter is flour and water fermented by wild yeast and bacteria; " * 6,  # longest: padding
]
VARIANTS = {
    "onnx-fp32": ("onnx", {}),
    "onnx-int8": ("onnx", {"quantize": "int8"}),
    "openvino-fp32": ("openvino", {"precision": "fp32"}),
    "openvino-default": ("openvino", {}),
    "openvino-int8": ("openvino", {"quantize": "int8"}),
}
# (min, mean) per token, per precision; OpenVINO's int8 (activations per token and group) by its own.
COSINE = {"fp32": (0.9999, 0.9999), "bf16": (0.999, 0.999), "int8": (0.8, 0.95), "openvino-int8": (0.98, 0.995)}
FEATURES = set(machine()["cpu_features"])


def encode(model):
    return model.encode(QUERIES, is_query=True), model.encode(DOCUMENTS, is_query=False)


def token_cosines(embeddings, reference) -> np.ndarray:
    """Per-token cosine of two lists of L2-normalised [n_tokens, dim] arrays (shapes checked first)."""
    assert [e.shape for e in embeddings] == [r.shape for r in reference], "token counts differ"
    return np.concatenate([np.sum(e * r, axis=1) for e, r in zip(embeddings, reference)])


def expected_precision(backend: str, options: dict) -> str | None:
    """What the backend must report; None when it is OpenVINO's choice on a CPU this test cannot predict."""
    if options.get("quantize"):
        return "int8" if backend == "onnx" or backends.int8_products() else "fp32"
    if backend == "onnx" or options.get("precision"):
        return options.get("precision", "fp32")
    if "amx_bf16" in FEATURES:
        return "bf16"
    return None if "avx512_bf16" in FEATURES else "fp32"


@pytest.fixture(scope="module")
def torch_reference(minilm_colbert):
    queries, documents = encode(minilm_colbert)
    return queries, documents, colbert_scores(queries, documents).numpy()


@pytest.fixture(scope="module")
def runtime_models(minilm_path, minilm_colbert) -> dict:
    """Each of VARIANTS: the MiniLM build of the minilm_colbert fixture (same seed), run by a backend."""
    built = {}
    for name, (backend, options) in VARIANTS.items():
        torch.manual_seed(0)
        built[name] = models.ColBERT(minilm_path, device="cpu", backend=backend, model_kwargs=options)
        # The comparisons with torch mean something only if the weights are the same.
        assert backends.fingerprint(built[name].transformer.model.model) == backends.fingerprint(
            minilm_colbert.transformer.model
        )
    return built


@pytest.fixture(params=list(VARIANTS))
def variant(request, runtime_models):
    return request.param, runtime_models[request.param]


def test_a_backend_gives_torchs_tokens_close_to_torchs_values_and_says_its_precision(variant, torch_reference):
    name, model = variant
    backend, options = VARIANTS[name]
    info = model.backend_info
    expected = expected_precision(backend, options)
    assert info["backend"] == backend and model.get_backend() == backend
    assert info["precision"] in COSINE and info["precision"] == (expected or info["precision"])
    assert (info["quantization"] is not None) == ("quantize" in options)
    queries, documents = encode(model)
    reference_queries, reference_documents, _ = torch_reference
    cosines = token_cosines(queries + documents, reference_queries + reference_documents)
    least, mean = COSINE[name if name in COSINE else info["precision"]]
    assert cosines.min() >= least and cosines.mean() >= mean, (cosines.min(), cosines.mean())


def test_a_backend_ranks_the_documents_as_torch_does(variant, torch_reference):
    name, model = variant
    queries, documents = encode(model)
    scores = colbert_scores(queries, documents).numpy()
    reference = torch_reference[2]
    assert scores.dtype == np.float32
    precision = model.backend_info["precision"]
    same_best = np.mean(scores.argmax(axis=1) == reference.argmax(axis=1))
    if name == "openvino-int8":  # int8 weights whatever the CPU: measured up to 7 % off, the same best document
        np.testing.assert_allclose(scores, reference, rtol=0.1)
        assert same_best == 1
    elif precision == "fp32":
        np.testing.assert_allclose(scores, reference, atol=1e-3)
        assert (np.argsort(-scores, axis=1) == np.argsort(-reference, axis=1)).all()
    elif precision == "bf16":
        np.testing.assert_allclose(scores, reference, rtol=1e-2)
        assert same_best == 1
    else:
        assert same_best >= 0.75


def test_save_keeps_the_backend_files_and_reloading_uses_them_without_exporting(variant, tmp_path, monkeypatch):
    name, model = variant
    backend, options = VARIANTS[name]
    before = model.encode(DOCUMENTS, is_query=False)
    model.save(str(tmp_path))
    file_name = model.backend_info["file"]
    assert (tmp_path / file_name).is_file() and (tmp_path / backend / backends.RECORD).is_file()
    if backend == "openvino":
        assert (tmp_path / file_name).with_suffix(".bin").is_file()

    def no_export(*args, **kwargs):
        raise AssertionError("re-exported although the saved file is from these weights")

    monkeypatch.setattr(backends, "_export_onnx", no_export)
    monkeypatch.setattr(backends, "_export_openvino", no_export)
    reloaded = models.ColBERT(str(tmp_path), device="cpu", backend=backend, model_kwargs=options)
    assert reloaded.transformer.model.folder == tmp_path / backend
    assert reloaded.backend_info["precision"] == model.backend_info["precision"]
    for after, saved in zip(reloaded.encode(DOCUMENTS, is_query=False), before):
        np.testing.assert_allclose(after, saved, atol=1e-5)


def test_a_file_exported_from_other_weights_is_not_used(runtime_models, minilm_colbert, tmp_path):
    runtime_models["onnx-fp32"].save(str(tmp_path))
    changed = models.ColBERT(str(tmp_path), device="cpu")
    # The torch weights are saved beside the backend's file: the folder loads with the default backend too.
    for loaded, original in zip(encode(changed)[1], encode(minilm_colbert)[1]):
        np.testing.assert_allclose(loaded, original, atol=1e-5)
    with torch.no_grad():
        changed.transformer.model.encoder.layer[0].output.dense.weight.mul_(0.5)  # as fine-tuning would
    changed.save(str(tmp_path))  # the torch backend leaves onnx/, exported from the old weights, in place
    reloaded = models.ColBERT(str(tmp_path), device="cpu", backend="onnx")
    assert reloaded.transformer.model.folder != tmp_path / "onnx"  # exported anew
    cosines = token_cosines(reloaded.encode(DOCUMENTS, is_query=False), changed.encode(DOCUMENTS, is_query=False))
    assert cosines.min() >= COSINE["fp32"][0]


def test_the_answerai_pylate_checkpoint_runs_in_openvino(answerai, answerai_path):
    model = models.ColBERT(model_name_or_path=answerai_path, device="cpu", backend="openvino")
    queries, documents = encode(model)
    reference_queries, reference_documents = encode(answerai)
    cosines = token_cosines(queries + documents, reference_queries + reference_documents)
    least, mean = COSINE[model.backend_info["precision"]]
    assert cosines.min() >= least and cosines.mean() >= mean, (cosines.min(), cosines.mean())
    assert queries[0].shape == (32, 96)
    assert model.document_length == answerai.document_length == 300  # the checkpoint's settings are kept


def test_a_runtime_model_pickles_for_multi_process_pools_and_refuses_to_train(runtime_models):
    model = runtime_models["onnx-fp32"]
    copy = pickle.loads(pickle.dumps(model))  # what a pool's spawned process receives
    for a, b in zip(copy.encode(DOCUMENTS, is_query=False), model.encode(DOCUMENTS, is_query=False)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    copy.train()
    features = copy.tokenize(DOCUMENTS[:1], is_query=False)
    with pytest.raises(RuntimeError, match="inference only"):
        copy(features)


@pytest.mark.parametrize(
    ("backend", "model_kwargs", "message"),
    [
        ("tensorrt", None, "backend='tensorrt' is not one of 'torch', 'onnx', 'openvino'"),
        ("torch", {"quantize": "int8"}, r"\['quantize'\] are runtime options: pass backend='onnx' or 'openvino'"),
        ("onnx", {"torch_dtype": "bfloat16"}, r"\['torch_dtype'\] are not options of backend='onnx'.*quantize"),
        ("openvino", {"provider": "CPUExecutionProvider"}, "its options are file_name, precision, quantize, threads"),
        ("openvino", {"quantize": "int8", "precision": "bf16"}, "quantises fp32 activations: precision must be None"),
        ("openvino", {"precision": "f32"}, "precision='f32' is not one of None, 'fp32', 'bf16', 'fp16'"),
        ("onnx", {"quantize": "int4"}, "quantize='int4' is not one of None, 'int8'"),
        ("onnx", {"threads": 0}, "threads must be a positive int"),
    ],
)
def test_a_wrong_backend_or_option_is_refused_before_anything_is_loaded(backend, model_kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        models.ColBERT(str(tmp_path / "nowhere"), backend=backend, model_kwargs=model_kwargs)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_half_precision_is_honoured_and_maxsim_sums_in_fp32(dtype, minilm_path, torch_reference):
    torch.manual_seed(0)
    model = models.ColBERT(model_name_or_path=minilm_path, device="cpu", model_kwargs={"torch_dtype": dtype})
    assert model.backend_info["precision"] == {"bfloat16": "bf16", "float16": "fp16"}[dtype]
    assert model.transformer.model.dtype == getattr(torch, dtype)
    for convert_to_numpy in (True, False):
        queries = model.encode(QUERIES, is_query=True, convert_to_numpy=convert_to_numpy)
        documents = model.encode(DOCUMENTS, is_query=False, convert_to_numpy=convert_to_numpy)
        if not convert_to_numpy:  # numpy has no bf16: Sentence Transformers gives fp32 arrays for it
            assert documents[0].dtype == getattr(torch, dtype)
        scores = colbert_scores(queries, documents)
        assert scores.dtype == torch.float32
        # Summed in fp32: within float32 rounding of the float64 sum of the same half-precision values
        # (a half-precision sum of 32 maxima near 0.5 would be off by 1e-2 or more).
        exact = [[reference_maxsim(as_float(q), as_float(d)) for d in documents] for q in queries]
        np.testing.assert_allclose(scores.numpy(), exact, atol=1e-4)
        np.testing.assert_allclose(scores.numpy(), torch_reference[2], rtol=2e-2)
        assert (scores.numpy().argmax(axis=1) == torch_reference[2].argmax(axis=1)).all()


def as_float(embedding) -> np.ndarray:
    return embedding.float().numpy() if isinstance(embedding, torch.Tensor) else embedding.astype(np.float32)


def test_openvino_int8_stores_int8_weights_and_quantises_activations_per_group(runtime_models):
    model = runtime_models["openvino-int8"]
    runtime = model.transformer.model
    assert runtime.record["quantize"] == "int8" and runtime.file_name == "openvino_model_int8_weights.xml"
    assert runtime._session.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == backends.DYNAMIC_QUANTIZATION_GROUP
    assert runtime._session.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    # Every matrix product's weight is an 8-bit constant: the file holds a quarter of the fp32 bytes.
    import openvino

    graph = openvino.Core().read_model(str(runtime.folder / runtime.file_name))
    products = [op for op in graph.get_ops() if op.get_type_name() == "MatMul"]
    weights = [_constant_source(op.input_value(1).get_node()) for op in products]
    constant_weights = [w for w in weights if w is not None]
    assert len(constant_weights) == 6 * 6  # all-MiniLM-L6-v2: q, k, v, attention output, FFN in and out
    assert {w.get_element_type().get_type_name() for w in constant_weights} == {"u8"}
    fp32 = runtime_models["openvino-fp32"].transformer.model
    int8_bytes = (runtime.folder / runtime.file_name).with_suffix(".bin").stat().st_size
    fp32_bytes = (fp32.folder / fp32.file_name).with_suffix(".bin").stat().st_size
    assert int8_bytes < 0.4 * fp32_bytes, (int8_bytes, fp32_bytes)


def _constant_source(node):
    """The Constant a weight is decompressed from (through Convert, Subtract, Multiply, Reshape), or None."""
    while node.get_type_name() != "Constant":
        if node.get_type_name() not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
            return None
        node = node.input_value(0).get_node()
    return node


def test_openvino_int8_says_so_where_the_cpu_runs_fp32_products_on_its_weights(runtime_models, monkeypatch, caplog):
    monkeypatch.setattr(backends, "int8_products", lambda cpu_features=None: False)
    with caplog.at_level("WARNING", logger="workbench.backends"):
        copy = pickle.loads(pickle.dumps(runtime_models["openvino-int8"]))  # compiles anew, on "this" CPU
    assert "runs fp32 products on the int8 weights" in caplog.text
    info = copy.backend_info
    assert info["precision"] == "fp32" and "decompressed to fp32" in info["quantization"]


def test_describe_gives_one_set_of_keys_for_every_backend(minilm_colbert, variant):
    torch_record = backends.describe(minilm_colbert)
    assert torch_record["backend"] == "torch" and torch_record["precision"] == "fp32"
    assert torch_record["file"] is None and torch_record["runtime"].startswith("torch ")
    record = backends.describe(variant[1])
    assert set(torch_record) - {"float32_matmul_precision"} == set(record)
    assert record["runtime"].split()[0] in ("onnxruntime", "openvino") and record["threads"] == torch.get_num_threads()


def test_the_docstring_examples_run():
    result = doctest.testmod(backends, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
