"""A durable, append-only store of document token embeddings: the data under every index.

On disk, in one folder:

- ``manifest.json``: the committed state: which files hold what, and how many bytes of each count;
- ``lengths-N.bin`` (int64 tokens per document) and ``ids-N.jsonl`` (one JSON string per document):
  the document registry;
- the token payload, in per-token arrays, memory-mapped for reading: ``tokens-N.bin`` (every
  token in one row-major array, fp16 by default or fp32) for the ``"float16"``/``"float32"``
  payloads, or the arrays an index's codec writes for the ``"residual"`` payload (PLAID's
  ``codes-N.bin`` and ``residuals-N.bin``); an index may add per-token side arrays of its own
  (Voyager's centroid ``codes``);
- any other file an index commits with its state (centroids, a graph, bucket weights).

How a payload turns back into fp32 embeddings is the business of :mod:`workbench.indexes.codecs`;
the store only keeps per-token arrays aligned with the registry, and appends, rewrites and removes
rows of all of them together, chunk by chunk, so no step holds the corpus in memory.

Writes never touch committed bytes: new rows are appended past the committed size (or written
into new files), flushed and fsync'ed, and only then is a new manifest written beside the old one
and switched in with an atomic rename. A writer killed at any point leaves the previous manifest,
which still describes complete files: the index reopens in its last committed state. Bytes past a
committed size and unreferenced files are cleaned by the next writer.

One writer at a time: the first write takes an exclusive lock on ``writer.lock`` (``flock``, so it
dies with its process) and keeps it until :meth:`TokenStore.close`; a second writer is refused
with :class:`IndexLockedError`. Readers take no lock: each (re)load reads one committed state whole
into a :class:`Snapshot` (ids, lengths, tokens and side data of the same commit), which stays valid
however many commits land while a search uses it.

A store only ever opens, writes or deletes its own files: ``manifest.json``, ``writer.lock`` and
the names it gives its data files (``name-N.bin``/``.jsonl``). A manifest naming anything
else (an absolute path, ``..``) is refused as damaged, ``override`` replaces only a folder that
holds a store's manifest, and whatever else a folder holds is left alone. The manifest records the
``kind`` of index that created the store; opening it as another kind is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.scores import PackedEmbeddings, cast, to_numpy, token_rows_of

__all__ = [
    "Additions",
    "IndexCorruptError",
    "IndexLockedError",
    "Snapshot",
    "TokenStore",
    "check_batch",
    "document_ids_of",
]

FORMAT = "workbench-token-store/1"
DTYPES = {"float16": np.float16, "float32": np.float32}  # payloads kept as a plain token matrix
PAYLOADS = (*DTYPES, "residual")  # "residual": the index's codec writes the per-token arrays
CORE = ("lengths", "ids")  # the files every store has; an index may add others
ROW_CHUNK = 1 << 18  # tokens per chunk when rows are copied or rewritten
FILE_KEY = re.compile(r"[a-z_]+")
OWN_FILE = re.compile(r"[a-z_]+-[0-9]+\.(?:bin|jsonl|voy)")  # the names _write_new gives (.voy: older stores)
MANIFEST_TYPES = {
    "format": str,
    "dtype": str,
    "dim": (int, type(None)),
    "files": dict,
    "sizes": dict,
    "next_file": int,
    "side_dtypes": dict,
    "extra": dict,
}


class IndexLockedError(RuntimeError):
    """Another writer holds the index."""


class IndexCorruptError(RuntimeError):
    """The index files do not match their manifest, or the manifest is not a sound one."""


@dataclass
class Additions:
    """What an index adds to a commit of new documents (every field optional).

    ``side``: per-token arrays for the new tokens only (rows in the order they are added).
    ``rewrite``: a callable yielding, chunk by chunk, per-token arrays for every token (the stored
    ones, then the new ones): the store writes them to fresh files, so the corpus is never held
    in memory. An array named in ``rewrite`` must not be in ``side``.
    ``files``: whole files (centroids, a graph) replaced by this commit.
    ``extra``: metadata merged into the manifest's ``extra``.
    """

    side: dict[str, np.ndarray] = field(default_factory=dict)
    rewrite: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One committed state of a store, read whole. Committed bytes are never rewritten and a reader's
    open files outlive their deletion, so a search that keeps one snapshot sees one commit throughout."""

    manifest: dict
    ids: list[str]
    offsets: np.ndarray  # document i's tokens are rows offsets[i]:offsets[i + 1] of every per-token array
    tokens: np.ndarray | None  # memory-mapped token matrix (None for a "residual" payload)
    side: dict[str, np.ndarray]  # the other per-token arrays, memory-mapped (read-only)
    contents: dict[str, bytes]  # the index's other files (centroids, graph)
    position_of: dict[str, int] = field(init=False)
    derived: dict[str, Any] = field(default_factory=dict)  # what an index computes from this state, once

    def __post_init__(self) -> None:
        object.__setattr__(self, "position_of", {identifier: p for p, identifier in enumerate(self.ids)})

    @property
    def dim(self) -> int | None:
        return self.manifest["dim"]

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def embeddings(self) -> PackedEmbeddings:
        """All tokens with document offsets: memory-mapped for a token matrix, decoded (fp32, in memory)
        for a compressed payload."""
        return self.documents(None)

    def documents(self, positions: Sequence[int] | np.ndarray | None) -> PackedEmbeddings:
        """The embeddings of the documents at ``positions`` (None: all), in that order.

        A token matrix is returned as stored (fp16 rows of the memory map); a compressed payload is
        decoded to fp32 by the index's codec.
        """
        if positions is None:
            if self.tokens is not None:
                return PackedEmbeddings(self.tokens, self.offsets)
            positions = np.arange(len(self.ids))
        positions = np.asarray(positions, dtype=np.int64)
        offsets = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(self.offsets[positions + 1] - self.offsets[positions], out=offsets[1:])  # O(positions) per query
        rows = token_rows_of(self.offsets, positions)
        if self.tokens is not None:
            return PackedEmbeddings(self.tokens[rows], offsets)
        from workbench.indexes.codecs import codec_of

        return PackedEmbeddings(codec_of(self).decode(self, rows), offsets)

    def positions(self, document_ids: Sequence[str]) -> np.ndarray:
        """Positions of ``document_ids`` (checked by :func:`document_ids_of`); KeyError naming unknown ones."""
        wanted = document_ids_of(document_ids)
        unknown = [i for i in wanted if i not in self.position_of]
        if unknown:
            raise KeyError(f"Unknown document ids: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}.")
        return np.array([self.position_of[i] for i in wanted], dtype=np.int64)


class TokenStore:
    """Document token embeddings with their ids, durable and memory-mapped. See the module docstring."""

    def __init__(
        self, folder: str | Path, dtype: str = "float16", override: bool = False, kind: str | None = None
    ) -> None:
        """``dtype``: the payload, ``"float16"``, ``"float32"`` or ``"residual"`` (written by the index's
        codec); ``kind``: the index kind recorded at creation and required on open (None: any)."""
        if dtype not in PAYLOADS:
            raise ValueError(f"dtype must be one of {sorted(PAYLOADS)}, got {dtype!r}.")
        self.folder = Path(folder)
        self.kind = kind
        self._lock_file = None
        if (self.folder / "manifest.json").exists():
            if not override:
                self._load()
                return
            self._read_manifest()  # override replaces a store only: any other manifest.json raises here
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise IndexCorruptError(
                f"{self.folder} holds files but no manifest.json: not a workbench index (override=True replaces "
                "only those, and never deletes other files), or a damaged one."
            )
        self._lock()
        self._reset(dtype)

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def manifest(self) -> dict:
        return self.snapshot.manifest

    @property
    def ids(self) -> list[str]:
        return self.snapshot.ids

    @property
    def position_of(self) -> dict[str, int]:
        return self.snapshot.position_of

    @property
    def offsets(self) -> np.ndarray:
        return self.snapshot.offsets

    @property
    def tokens(self) -> np.ndarray | None:
        return self.snapshot.tokens

    @property
    def dim(self) -> int | None:
        return self.manifest["dim"]

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def extra(self) -> dict[str, Any]:
        """Free-form, committed metadata of the index built on this store."""
        return self.manifest["extra"]

    def embeddings(self) -> PackedEmbeddings:
        """All tokens (memory-mapped) with document offsets."""
        return self.snapshot.embeddings()

    def positions(self, document_ids: Sequence[str]) -> np.ndarray:
        return self.snapshot.positions(document_ids)

    def side_array(self, name: str) -> np.ndarray | None:
        return self.snapshot.side.get(name)

    def refresh(self) -> bool:
        """Reload if another process committed since this one read; True when it did."""
        if self._stamp() != self._snapshot_stamp:
            self._load()
            return True
        return False

    # -- writing ---------------------------------------------------------------------------------

    def append(
        self,
        document_ids: Sequence[str],
        embeddings: Sequence[Any],
        derive: Callable[[list[np.ndarray]], Additions] | None = None,
    ) -> None:
        """Validate, append documents, and commit. Nothing is written if validation fails.

        ``derive(arrays)``, called after validation with the writer lock held, returns the
        :class:`Additions` an index makes to the commit (a ``"residual"`` payload is written there).
        """
        ids = document_ids_of(document_ids)
        self.begin_write()
        arrays = self.validate(ids, embeddings)
        additions = derive(arrays) if derive is not None else Additions()
        manifest = json.loads(json.dumps(self.manifest))
        if manifest["dim"] is None:
            manifest["dim"] = int(arrays[0].shape[1])
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        if manifest["dtype"] in DTYPES:
            self._append_bytes(manifest, "tokens", cast(np.concatenate(arrays), DTYPES[manifest["dtype"]]).tobytes())
        self._append_bytes(manifest, "lengths", lengths.tobytes())
        self._append_bytes(manifest, "ids", "".join(json.dumps(i) + "\n" for i in ids).encode())
        for name, values in additions.side.items():
            if name not in manifest["files"]:
                self._write_new(manifest, name, b"")
            self._append_bytes(manifest, name, np.ascontiguousarray(values).tobytes())
            _record_side(manifest, name, values)
        if additions.rewrite is not None:
            self._write_chunks(manifest, additions.rewrite())
        for name, content in additions.files.items():
            self._write_new(manifest, name, content)
        manifest["extra"].update(additions.extra)
        self._commit(manifest)

    def rows(self, names: Sequence[str], token_rows: np.ndarray | None = None, chunk: int = ROW_CHUNK):
        """The per-token arrays ``names`` (``"tokens"`` for the token matrix), at ``token_rows`` (None:
        all), chunk by chunk: dicts of arrays of at most ``chunk`` rows each."""
        snapshot = self.snapshot
        sources = {name: snapshot.tokens if name == "tokens" else snapshot.side[name] for name in names}
        total = snapshot.n_tokens if token_rows is None else len(token_rows)
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            selection = slice(start, stop) if token_rows is None else token_rows[start:stop]
            yield {name: np.asarray(source[selection]) for name, source in sources.items()}

    def remove(self, document_ids: Sequence[str]) -> None:
        """Remove documents and commit (rewrites the files without them)."""
        document_ids = document_ids_of(document_ids)
        self.begin_write()
        drop = set(self.positions(document_ids).tolist())
        if len(drop) != len(document_ids):
            raise ValueError("Duplicate ids in the removal list.")
        keep = np.array([p for p in range(len(self)) if p not in drop], dtype=np.int64)
        token_rows = token_rows_of(self.offsets, keep)
        manifest = json.loads(json.dumps(self.manifest))
        per_token = (["tokens"] if self.tokens is not None else []) + list(self.snapshot.side)
        self._write_chunks(manifest, self.rows(per_token, token_rows))
        self._write_new(manifest, "lengths", np.diff(self.offsets)[keep].astype(np.int64).tobytes())
        self._write_new(manifest, "ids", "".join(json.dumps(self.ids[p]) + "\n" for p in keep).encode())
        self._commit(manifest)

    def begin_write(self) -> bool:
        """Take the writer lock and read the latest commit (another writer may have committed since
        this store was read); True when that changed what this store holds."""
        self._lock()
        changed = self.refresh()
        self._clean()
        return changed

    def validate(self, ids: list[str], embeddings: Sequence[Any]) -> list[np.ndarray]:
        """Check ids and embeddings for an append; returns them as 2D float arrays."""
        check_batch(ids, embeddings)
        already = [i for i in ids if i in self.position_of]
        if already:
            raise ValueError(f"Document ids already in the index: {already[:5]} (remove them first).")
        arrays = []
        expected_dim = self.dim
        limit = float(np.finfo(DTYPES.get(self.dtype, np.float32)).max)
        for position, embedding in enumerate(embeddings):
            array = to_numpy(embedding)
            if array.ndim != 2 or len(array) == 0:
                raise ValueError(
                    f"Embedding of document {ids[position]!r} has shape {array.shape}; expected [n_tokens > 0, dim]."
                )
            if expected_dim is not None and array.shape[1] != expected_dim:
                raise ValueError(
                    f"Embedding of document {ids[position]!r} has dimension {array.shape[1]}; "
                    f"the index holds {expected_dim}."
                )
            expected_dim = array.shape[1]
            if not np.isfinite(array).all():
                raise ValueError(f"Embedding of document {ids[position]!r} contains NaN or infinite values.")
            largest = float(np.abs(array).max())
            if largest > limit:  # the cast would store inf, and every score of the document would be NaN
                raise ValueError(
                    f"Embedding of document {ids[position]!r} (position {position} of this call) holds {largest:.3g}, "
                    f"beyond {self.dtype}'s range (+-{limit:.6g}). Scale it, or store the index with dtype='float32'."
                )
            arrays.append(array)
        return arrays

    def close(self) -> None:
        """Release the writer lock (readers keep working)."""
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __del__(self) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _lock(self) -> None:
        if self._lock_file is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / "writer.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another writer"
            handle.close()
            raise IndexLockedError(
                f"{self.folder} is being written by {holder}; one writer at a time (readers may open it freely)."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self._lock_file = handle

    def _reset(self, dtype: str) -> None:
        """Commit an empty store (lock held). The commit's clean-up then deletes the previous
        generation's files: only those, and only once the empty store is committed."""
        previous = self._read_manifest()[0] if (self.folder / "manifest.json").exists() else {}
        # File numbers go on from the previous generation's: a reader may still be reading its files.
        manifest = {
            "format": FORMAT,
            "kind": self.kind,
            "dtype": dtype,
            "dim": None,
            "files": {},
            "sizes": {},
            "next_file": previous.get("next_file", 0),
            "side_dtypes": {},
            "extra": {},
        }
        for name in CORE + (("tokens",) if dtype in DTYPES else ()):
            self._write_new(manifest, name, b"")
        self._commit(manifest)

    def _read_manifest(self) -> tuple[dict, tuple]:
        """The committed manifest, checked, and the stamp of the very file it was read from."""
        path = self.folder / "manifest.json"
        try:
            with open(path, "rb") as handle:
                stamp = _stamp_of(os.fstat(handle.fileno()))
                raw = handle.read()
        except FileNotFoundError:
            raise IndexCorruptError(f"{path} is missing.") from None
        try:
            manifest = json.loads(raw)
        except ValueError as error:  # not JSON, or not text at all
            raise IndexCorruptError(f"{path} is not valid JSON ({error}).") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexCorruptError(f"{path} is not a {FORMAT} manifest.")
        problem = next(_manifest_problems(manifest), None)
        if problem:
            raise IndexCorruptError(f"{path} is damaged: {problem}.")
        return manifest, stamp

    def _load(self) -> None:
        """Read the committed state whole into ``self.snapshot``.

        Another process may commit meanwhile and delete the files of the state being read: then the
        newer manifest is read instead. Once open, files stay readable whatever a writer deletes.
        """
        while True:
            manifest, stamp = self._read_manifest()
            with ExitStack() as stack:
                try:
                    handles = {
                        name: stack.enter_context(open(self.folder / file, "rb"))
                        for name, file in manifest["files"].items()
                    }
                except FileNotFoundError as error:
                    if self._stamp() != stamp:
                        continue  # a newer commit replaced these files
                    raise IndexCorruptError(
                        f"{error.filename} is missing; {self.folder / 'manifest.json'} commits it."
                    ) from None
                self._check_kind(manifest)
                self.snapshot = self._read_files(manifest, handles)
                self._snapshot_stamp = stamp
                return

    def _check_kind(self, manifest: dict) -> None:
        """ValueError naming both kinds when ``manifest`` was written by another kind of index."""
        recorded = manifest.get("kind")  # None: a store written before kinds were recorded
        if self.kind and recorded and recorded != self.kind:
            raise ValueError(
                f"{self.folder} holds {_article(recorded)} {recorded} index, not {_article(self.kind)} {self.kind} one "
                f"(one index kind per folder): open it as {recorded}, or pass override=True to replace it."
            )

    def _read_files(self, manifest: dict, handles: dict) -> Snapshot:
        """The snapshot of ``manifest``, read from its open ``handles``."""
        sizes = manifest["sizes"]
        for name, handle in handles.items():
            actual = os.fstat(handle.fileno()).st_size
            if actual < sizes[name]:
                raise IndexCorruptError(f"{handle.name} holds {actual} bytes, the manifest commits {sizes[name]}.")
        lengths = np.frombuffer(handles["lengths"].read(sizes["lengths"]), dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = [json.loads(line) for line in handles["ids"].read(sizes["ids"]).decode().split("\n") if line]
        dim, n_tokens = manifest["dim"], int(offsets[-1])
        if len(ids) != len(lengths):
            raise IndexCorruptError(
                f"{self.folder / 'manifest.json'} commits {len(ids)} ids but {len(lengths)} lengths."
            )
        per_token = {
            name: (np.dtype(kind), tuple(manifest.get("side_shapes", {}).get(name, ())))
            for name, kind in manifest["side_dtypes"].items()
        }
        if manifest["dtype"] in DTYPES:
            per_token["tokens"] = (np.dtype(DTYPES[manifest["dtype"]]), (dim or 0,))
        arrays = {}
        for name, (kind, width) in per_token.items():
            if sizes[name] != n_tokens * kind.itemsize * int(np.prod(width)):
                raise IndexCorruptError(
                    f"{self.folder / 'manifest.json'} commits {sizes[name]} bytes of {name!r} "
                    f"for {n_tokens} tokens of {width or 'one'} {kind}."
                )
            arrays[name] = (
                np.zeros((n_tokens, *width), dtype=kind)
                if sizes[name] == 0
                else np.memmap(handles[name], dtype=kind, mode="r", shape=(n_tokens, *width))
            )
        tokens = arrays.pop("tokens", None)
        contents = {
            name: handle.read(sizes[name])
            for name, handle in handles.items()
            if name not in CORE and name not in per_token
        }
        return Snapshot(manifest, ids, offsets, tokens, arrays, contents)

    def file_path(self, name: str) -> Path:
        return self.folder / self.manifest["files"][name]

    def _stamp(self) -> tuple:
        return _stamp_of((self.folder / "manifest.json").stat())

    def _write_new(self, manifest: dict, name: str, content: bytes) -> None:
        suffix = ".jsonl" if name == "ids" else ".bin"
        file = f"{name}-{manifest['next_file']}{suffix}"
        manifest["next_file"] += 1
        with open(self.folder / file, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        manifest["files"][name] = file
        manifest["sizes"][name] = len(content)

    def _write_chunks(self, manifest: dict, chunks: Iterable[dict[str, np.ndarray]]) -> None:
        """Write per-token arrays to fresh files, chunk by chunk (each chunk: name -> rows)."""
        written: set[str] = set()
        for chunk in chunks:
            for name, values in chunk.items():
                if name not in written:
                    self._write_new(manifest, name, b"")
                    written.add(name)
                    if name != "tokens":
                        _record_side(manifest, name, values)
                self._append_bytes(manifest, name, np.ascontiguousarray(values).tobytes())

    def _append_bytes(self, manifest: dict, name: str, content: bytes) -> None:
        path = self.folder / manifest["files"][name]
        with open(path, "r+b") as handle:
            handle.truncate(manifest["sizes"][name])  # drop bytes a killed writer left past the commit
            handle.seek(manifest["sizes"][name])
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        manifest["sizes"][name] += len(content)

    def _commit(self, manifest: dict) -> None:
        manifest.setdefault("kind", self.kind)  # a store written before kinds were recorded gets its kind now
        staged = self.folder / "manifest.json.next"
        with open(staged, "w") as handle:
            json.dump(manifest, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, self.folder / "manifest.json")
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._load()
        self._clean()

    def _clean(self) -> None:
        """Delete the store's files no manifest references (left by a replaced generation or a killed
        writer). Only names the store gives its files: whatever else the folder holds stays."""
        referenced = set(self.manifest["files"].values())
        for path in self.folder.iterdir():
            ours = OWN_FILE.fullmatch(path.name) or path.name == "manifest.json.next"
            if ours and path.name not in referenced and path.is_file():
                path.unlink()


def document_ids_of(ids: Sequence[str | int]) -> list[str]:
    """``ids`` (str or int each) as the strings documents are keyed by.

    Refuses a bare string, which would be read as one id per character, and ids of any other type:
    ``None`` would silently become the id ``"None"``.
    """
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"Document ids must be a list of ids, not a single string ({ids!r}).")
    ids = list(ids)
    for position, identifier in enumerate(ids):
        if isinstance(identifier, bool) or not isinstance(identifier, (str, int, np.integer)):
            raise ValueError(f"Document ids must be str or int; position {position} holds {identifier!r}.")
    return [str(i) for i in ids]


def _manifest_problems(manifest: dict):
    """What is wrong with a manifest, one message at a time (nothing, for a sound one)."""
    for key, kind in MANIFEST_TYPES.items():
        if not isinstance(manifest.get(key), kind):
            yield f"{key!r} is missing or of the wrong type"
            return
    if manifest["dtype"] not in PAYLOADS:
        yield f"unknown dtype {manifest['dtype']!r}"
    files, sizes = manifest["files"], manifest["sizes"]
    for name in CORE + (("tokens",) if manifest["dtype"] in DTYPES else ()):
        if name not in files:
            yield f"it names no {name!r} file"
    for name, file in files.items():
        # These names are the only paths a store opens: anything else (an absolute path, "..") would
        # let a damaged manifest make the next write truncate a file outside the index.
        if not (isinstance(file, str) and FILE_KEY.fullmatch(name) and OWN_FILE.fullmatch(file)):
            yield f"{name!r} names {file!r}, not one of the index folder's own files"
        if not isinstance(sizes.get(name), int) or sizes[name] < 0:
            yield f"no committed size for {name!r}"
    for name, kind in manifest["side_dtypes"].items():
        if name not in files or not _numeric(kind):
            yield f"side array {name!r} has no file or a non-numeric dtype {kind!r}"


def _record_side(manifest: dict, name: str, values: np.ndarray) -> None:
    """Record the dtype and row shape of the per-token array ``name`` in ``manifest``."""
    manifest["side_dtypes"][name] = str(values.dtype)
    if values.ndim > 1:
        manifest.setdefault("side_shapes", {})[name] = list(values.shape[1:])


def _numeric(kind: Any) -> bool:
    try:
        return np.dtype(kind).kind in "iuf"
    except (TypeError, ValueError):
        return False


def _article(word: str) -> str:
    return "an" if word[:1] in "AEIOU" else "a"


def _stamp_of(stat: os.stat_result) -> tuple:
    """What changes whenever a new manifest is switched in."""
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def check_batch(ids: list[str], embeddings: Sequence[Any]) -> None:
    """ValueError unless ``ids`` and ``embeddings`` pair up one to one, hold something and no id twice:
    the checks every index makes of an ``add_documents`` call before looking at its embeddings."""
    if len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} document ids but {len(embeddings)} embeddings.")
    if not ids:
        raise ValueError("No documents to add.")
    seen: set[str] = set()
    for identifier in ids:
        if identifier in seen:
            raise ValueError(f"Document id {identifier!r} appears twice in this call.")
        seen.add(identifier)
