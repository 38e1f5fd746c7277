"""Faster CPU encoding: a ColBERT's transformer run by ONNX Runtime or OpenVINO, its precision on record.

Only the transformer changes hands. It is exported from the loaded torch weights (ONNX with
``torch.onnx.export``, OpenVINO with ``openvino.convert_model``) and :class:`RuntimeModel` takes the
torch model's place inside Sentence Transformers' ``Transformer`` module, returning what that module
reads (``last_hidden_state``). Everything after it is untouched: the projection, the skiplist, the
normalisation, token pooling, multi-process pools.

Backends and their ``model_kwargs`` (:data:`OPTIONS`; anything else is refused before loading):

- ``"torch"`` (the default): ``model_kwargs`` go to transformers' ``from_pretrained`` as in Sentence
  Transformers, e.g. ``{"torch_dtype": "bfloat16"}``.
- ``"onnx"``: ``quantize`` (None, or ``"int8"``: dynamic quantisation, int8 weights per channel and
  activations quantised at run time), ``provider`` (default ``"CPUExecutionProvider"``),
  ``threads``, ``file_name`` (default ``model.onnx``, ``model_qint8_quantized.onnx`` when quantised).
- ``"openvino"``: ``precision`` (None: OpenVINO's choice for the CPU, which is bf16 on CPUs with
  AVX512-BF16 or AMX; or ``"fp32"``, ``"bf16"``, ``"fp16"``), ``quantize`` (None, or ``"int8"``: int8
  weights per output channel, and each token's activations quantised to int8 at run time in groups of
  :data:`DYNAMIC_QUANTIZATION_GROUP` channels; the products run in int8 on x86 CPUs with VNNI, see
  :func:`int8_products`), ``threads``, ``file_name`` (default
  ``openvino_model.xml``, ``openvino_model_int8_weights.xml`` when quantised).

``threads`` defaults to ``torch.get_num_threads()``, so one setting governs every backend.

Files sit where Sentence Transformers puts its own backends' (``onnx/model.onnx``,
``openvino/openvino_model.xml``), beside ``workbench_export.json``, which records the fingerprint of
the weights each file was exported from. Loading uses a file only when its fingerprint is that of the
loaded weights (so a file left from before fine-tuning, or a base model's own export, is never run);
otherwise it exports into a temporary folder. ``model.save(path)`` writes the file and its record.

Example::

    from workbench import backends, models

    model = models.ColBERT("../shared/models/answerai-colbert-small-v1", backend="openvino")
    backends.describe(model)["precision"]  # "bf16" on an AMX CPU: what OpenVINO compiled
    model.save("colbert-openvino")  # reloading with backend="openvino" uses openvino/ as it is
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import logging as transformers_logging

from workbench.provenance import machine

__all__ = [
    "BACKENDS",
    "DYNAMIC_QUANTIZATION_GROUP",
    "OPTIONS",
    "RECORD",
    "RuntimeModel",
    "attach",
    "check_options",
    "describe",
    "fingerprint",
    "int8_products",
]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
OPTIONS = {
    "onnx": ("file_name", "quantize", "provider", "threads"),
    "openvino": ("file_name", "precision", "quantize", "threads"),
}
CHOICES = {"quantize": (None, "int8"), "precision": (None, "fp32", "bf16", "fp16")}
FILE_NAMES = {
    "onnx": "model.onnx",
    "onnx-int8": "model_qint8_quantized.onnx",
    "openvino": "openvino_model.xml",
    "openvino-int8": "openvino_model_int8_weights.xml",
}
# OpenVINO quantises each token's activations in groups of this many channels, each group with its own
# scale: an outlier channel costs precision to its group only, not to the whole tensor as in ONNX
# Runtime's dynamic int8. Measured on answerai-colbert-small-v1 (benchmarks/encode.py): token cosine to
# torch fp32 0.99983 mean at 128 (0.99992 at 32, 11 % slower; 0.9986 for ONNX Runtime's int8).
DYNAMIC_QUANTIZATION_GROUP = 128
# The CPU features with which OpenVINO's CPU plugin runs those int8 products on x86 (its oneDNN
# FullyConnected executor asks for avx2_vnni or avx512_core_vnni, and fp32 activations). Without them it
# decompresses the int8 weights to fp32 and runs fp32 products: smaller files, no speed-up. On Arm its
# int8 executor (KleidiAI) takes one scale per token only, not per group, so none is claimed there.
INT8_PRODUCT_FEATURES = ("avx512_vnni", "avx_vnni")
RECORD = "workbench_export.json"
OPENVINO_TYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
TORCH_PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OPSET = 17  # the first with LayerNormalization as one operator


def check_options(backend: str, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``backend`` and its ``model_kwargs``; returns the runtime's options ({} for torch).

    Raises ``ValueError`` naming the choices, before anything is loaded.

    >>> check_options("onnx", {"quantize": "int8"})
    {'quantize': 'int8'}
    >>> check_options("openvino", {"precision": "f32"})
    Traceback (most recent call last):
    ...
    ValueError: precision='f32' is not one of None, 'fp32', 'bf16', 'fp16'.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(map(repr, BACKENDS))}.")
    options = dict(model_kwargs or {})
    if backend == "torch":
        # transformers would take these as config attributes and say nothing: torch fp32 would run unasked.
        misplaced = sorted(set(options) & {key for keys in OPTIONS.values() for key in keys})
        if misplaced:
            raise ValueError(f"model_kwargs {misplaced} are runtime options: pass backend='onnx' or 'openvino' too.")
        return {}
    unknown = sorted(set(options) - set(OPTIONS[backend]))
    if unknown:
        raise ValueError(
            f"model_kwargs {unknown} are not options of backend={backend!r}; its options are "
            f"{', '.join(OPTIONS[backend])} (torch's loading arguments go with backend='torch')."
        )
    for key, choices in CHOICES.items():
        if key in options and options[key] not in choices:
            raise ValueError(f"{key}={options[key]!r} is not one of {', '.join(map(repr, choices))}.")
    if "threads" in options and not (isinstance(options["threads"], int) and options["threads"] > 0):
        raise ValueError(f"threads must be a positive int, got {options['threads']!r}.")
    if backend == "openvino" and options.get("quantize") and options.get("precision") not in (None, "fp32"):
        # OpenVINO quantises activations from fp32 only; from bf16 it would run bf16 products, unasked.
        raise ValueError(
            f"quantize='int8' quantises fp32 activations: precision must be None or 'fp32', "
            f"got {options['precision']!r}."
        )
    return options


def int8_products(cpu_features: list[str] | None = None) -> bool:
    """Whether OpenVINO runs int8 products for ``quantize="int8"`` on this CPU (else fp32 ones).

    True with any of :data:`INT8_PRODUCT_FEATURES`, read from ``/proc/cpuinfo`` through
    :func:`workbench.provenance.machine` (``cpu_features`` replaces what this machine reports): AVX512-VNNI
    (Intel Xeon since Cascade Lake, AMD Zen 4 and later) or AVX-VNNI (Intel Core since Alder Lake).

    >>> int8_products(["avx2", "avx512f", "avx512_vnni"])
    True
    >>> int8_products(["avx2"])  # AMD Zen 2 and 3, Intel before Cascade Lake
    False
    >>> int8_products(["neon", "asimd", "asimddp"])  # Arm: OpenVINO's int8 there takes per-token scales only
    False
    """
    features = machine()["cpu_features"] if cpu_features is None else cpu_features
    return any(feature in features for feature in INT8_PRODUCT_FEATURES)


def fingerprint(model: torch.nn.Module) -> str:
    """A digest of ``model``'s weights (names, dtypes, shapes, bytes): which weights a file was exported from."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class RuntimeModel(torch.nn.Module):
    """The Hugging Face model's stand-in inside a ``Transformer`` module: the forward pass runs in a runtime.

    In: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them) as
    torch tensors. Out: ``BaseModelOutput(last_hidden_state=[batch, tokens, hidden] float32)`` on
    the inputs' device. The torch model stays inside: it is what ``save_pretrained`` writes beside
    the backend file (so the folder loads with every backend) and it holds ``config`` and the device.
    Inference only: training needs ``backend="torch"``.

    ``folder / file_name`` is the runtime's file; ``record`` is what :data:`RECORD` keeps for it.
    """

    def __init__(self, model: torch.nn.Module, backend: str, options: dict[str, Any], folder: Path, record: dict):
        super().__init__()
        self.model = model
        self.backend, self.options, self.folder, self.record = backend, options, Path(folder), record
        self.temporary: tempfile.TemporaryDirectory | None = None  # set when folder is an export of our own
        self._session = self._compile()  # now, so that describe() reports what was compiled

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def file_name(self) -> str:
        return self.record["file"]

    def forward(self, input_ids, attention_mask, token_type_ids=None, return_dict=True) -> BaseModelOutput:
        if self.training and torch.is_grad_enabled():
            raise RuntimeError(f"backend={self.backend!r} runs inference only: load with backend='torch' to train.")
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {name: given[name].cpu().numpy() for name in self._input_names}
        if self.backend == "onnx":
            hidden = self._session.run(None, feed)[0]
        else:
            hidden = self._session(feed)[0]
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden).to(input_ids.device))

    def _compile(self):
        path, threads = str(self.folder / self.file_name), self.options.get("threads") or torch.get_num_threads()
        if self.backend == "onnx":
            import onnxruntime

            settings = onnxruntime.SessionOptions()
            settings.intra_op_num_threads = threads
            # Named, not "the first available": that list starts with Azure's provider on a CPU install.
            provider = self.options.get("provider", "CPUExecutionProvider")
            session = onnxruntime.InferenceSession(path, settings, providers=[provider])
            self._input_names = [node.name for node in session.get_inputs()]
            return session
        import openvino

        config = {"INFERENCE_NUM_THREADS": threads}
        if self.record.get("quantize"):
            # fp32 activations: the plugin quantises only those (from bf16 it would run bf16 products).
            config.update(INFERENCE_PRECISION_HINT="f32", DYNAMIC_QUANTIZATION_GROUP_SIZE=DYNAMIC_QUANTIZATION_GROUP)
            if not int8_products():
                logger.warning(
                    "quantize='int8': this CPU has none of %s, so OpenVINO runs fp32 products on the int8 "
                    "weights (no speed-up over precision='fp32').",
                    ", ".join(INT8_PRODUCT_FEATURES),
                )
        elif self.options.get("precision"):
            config["INFERENCE_PRECISION_HINT"] = OPENVINO_TYPES[self.options["precision"]]
        compiled = openvino.Core().compile_model(path, "CPU", config)
        self._input_names = [node.get_any_name() for node in compiled.inputs]
        return compiled

    def describe(self) -> dict[str, Any]:
        """What runs: backend, precision as compiled, quantisation, runtime version, provider or device, threads."""
        session, quantization = self._session, None
        if self.backend == "onnx":
            precision = "int8" if self.record["quantize"] else "fp32"
            device, threads = session.get_providers()[0], session.get_session_options().intra_op_num_threads
            if self.record["quantize"]:
                quantization = "dynamic int8: int8 weights per output channel, activations per tensor at run time"
        else:
            compiled = session.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            precision = {value: key for key, value in OPENVINO_TYPES.items()}.get(compiled, compiled)
            device, threads = "CPU", session.get_property("INFERENCE_NUM_THREADS")
            if self.record.get("quantize"):
                group = session.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
                if int8_products():
                    precision = "int8"
                    quantization = (
                        f"dynamic int8: int8 weights per output channel, activations per token in groups of "
                        f"{group} channels at run time"
                    )
                else:
                    quantization = "int8 weights per output channel, decompressed to fp32 (no VNNI on this CPU)"
        runtime = {"onnx": "onnxruntime", "openvino": "openvino"}[self.backend]
        return {
            "backend": self.backend,
            "precision": precision,
            "quantization": quantization,
            "runtime": f"{runtime} {metadata.version(runtime)}",
            "device": device,
            "threads": threads,
            "file": f"{self.backend}/{self.file_name}",
            "options": dict(self.options),
        }

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """The torch model as transformers saves it, and ``<backend>/<file>`` with its record."""
        self.model.save_pretrained(path, **kwargs)
        target = Path(path) / self.backend
        target.mkdir(parents=True, exist_ok=True)
        if target.resolve() != self.folder.resolve():
            for source in _files(self.folder / self.file_name):
                shutil.copy2(source, target / source.name)
        _write_record(target, self.record)

    def __getstate__(self) -> dict[str, Any]:
        # Sessions do not pickle: a process of a multi-process pool compiles its own from the files,
        # which stay while the model they were copied from lives.
        state = self.__dict__.copy()
        state.update(_session=None, temporary=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._session = self._compile()


def attach(model: Any, backend: str, options: dict[str, Any], source: str | None = None) -> None:
    """Run ``model``'s transformer in ``backend`` from now on (``options`` from :func:`check_options`).

    ``source``: the folder the model was loaded from; its ``<backend>/`` files are used when they were
    exported from these weights, else the transformer is exported (seconds) into a temporary folder.
    """
    transformer = _transformer(model)
    torch_model = transformer.model
    quantize = options.get("quantize")
    file_name = options.get("file_name") or FILE_NAMES[backend + ("-int8" if quantize else "")]
    record = {"file": file_name, "weights": fingerprint(torch_model), "quantize": quantize}
    saved = Path(source) / backend if source and Path(source).is_dir() else None
    if saved is not None and (found := _saved_record(saved, record)):
        runtime = RuntimeModel(torch_model, backend, options, saved, found)
    else:
        logger.info("Exporting the transformer to %s (no %s/%s from these weights).", backend, backend, file_name)
        temporary = tempfile.TemporaryDirectory(prefix=f"workbench-{backend}-")
        folder = Path(temporary.name)
        record["exported_with"] = {"torch": torch.__version__, "transformers": metadata.version("transformers")}
        if backend == "openvino":
            _export_openvino(torch_model, transformer.tokenizer, folder / file_name, quantize)
        elif quantize:
            _export_onnx(torch_model, transformer.tokenizer, folder / "unquantized.onnx")
            _quantize_int8(folder / "unquantized.onnx", folder / file_name)
        else:
            _export_onnx(torch_model, transformer.tokenizer, folder / file_name)
        runtime = RuntimeModel(torch_model, backend, options, folder, record)
        runtime.temporary = temporary
    transformer.model = runtime
    # Sentence Transformers' flag too: it turns off what assumes torch (flash-attention unpadding).
    transformer.backend = model.backend = backend


def describe(model: Any) -> dict[str, Any]:
    """What computes ``model``'s embeddings, JSON-ready: for run folders and benchmarks beside provenance.

    Keys: ``backend``, ``precision`` (what ran: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``),
    ``quantization``, ``runtime`` (name and version), ``device`` (torch device, ONNX provider or
    OpenVINO device), ``threads``, ``file`` (the runtime's file, None for torch), ``options``; for torch
    also ``float32_matmul_precision`` (below "highest", torch may run fp32 products in lower precision).
    """
    inner = _transformer(model).model
    if isinstance(inner, RuntimeModel):
        return inner.describe()
    return {
        "backend": "torch",
        "precision": TORCH_PRECISIONS.get(inner.dtype, str(inner.dtype)),
        "quantization": None,
        "runtime": f"torch {torch.__version__}",
        "device": str(inner.device),
        "threads": torch.get_num_threads(),
        "file": None,
        "options": {},
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def _transformer(model: Any) -> Transformer:
    return next(module for module in model.modules() if isinstance(module, Transformer))


def _saved_record(folder: Path, record: dict) -> dict | None:
    """The saved record of ``record``'s file in ``folder`` when it was exported from the same weights
    and quantisation (a file without a record is someone else's export, of weights unknown), else None."""
    path = folder / RECORD
    if not (folder / record["file"]).exists() or not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8")).get(record["file"], {})
    return saved if all(saved.get(key) == record[key] for key in ("weights", "quantize")) else None


def _write_record(folder: Path, record: dict) -> None:
    """Add ``record`` under its file's name to ``folder``'s record, keeping other files' entries."""
    path = folder / RECORD
    records = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    records[record["file"]] = record
    path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _files(path: Path) -> list[Path]:
    """The runtime's file and the weights beside it (OpenVINO's ``.bin``)."""
    return [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])


class _LastHiddenState(torch.nn.Module):
    """The transformer with tensors in and the last hidden state out: the graph an exporter traces."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}  # not every model takes them
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


def _example(tokenizer, device: torch.device) -> dict[str, torch.Tensor]:
    # Two texts of different lengths: with padding in the batch the traced graph applies the
    # attention mask (a batch without padding may be traced with the mask left out).
    encoded = tokenizer(["a short text", "a"], padding=True, return_tensors="pt")
    return {name: encoded[name].to(device) for name in INPUTS if name in encoded}


@contextlib.contextmanager
def _quiet_export():
    """No gradients, and none of the exporters' warnings: the tracer's about conditions on shapes and
    indexing, transformers' about attributes the converters read, deprecations. The graph is checked
    instead: tests compare it with torch at other batch sizes and lengths than the traced ones."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # The TorchScript exporter (the dynamo one needs onnxscript) and tracer announce their deprecation.
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def _export_onnx(model: torch.nn.Module, tokenizer, path: Path) -> None:
    example = _example(tokenizer, model.device)
    names = list(example)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with _quiet_export():
        torch.onnx.export(
            _LastHiddenState(model).eval(),
            tuple(example.values()),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,  # the dynamo exporter needs onnxscript; the TorchScript one does not
        )


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic advises static-quantisation pre-processing on the root logger
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def _int8_weights(converted):
    """The OpenVINO model with the weights of its matrix products in int8, asymmetric per output channel
    (NNCF's weight compression; asymmetric kept the worst token's cosine at 0.996 where symmetric gave 0.97)."""
    import io

    import nncf

    level = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bar and statistics table
            return nncf.compress_weights(converted, mode=nncf.CompressWeightsMode.INT8_ASYM)
    finally:
        nncf.set_log_level(level)


def _export_openvino(model: torch.nn.Module, tokenizer, path: Path, quantize: str | None = None) -> None:
    import openvino

    with _quiet_export():
        converted = openvino.convert_model(
            _LastHiddenState(model).eval(), example_input=_example(tokenizer, model.device)
        )
    if quantize:
        converted = _int8_weights(converted)
    # Keep float weights fp32 on disk (save_model halves them by default): precision is chosen when compiling.
    openvino.save_model(converted, str(path), compress_to_fp16=False)
