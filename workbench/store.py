"""A durable, append-only store of document token embeddings: the data under every index.

On disk, in one folder:

- ``manifest.json``: the committed state: which files hold what, and how many bytes of each count;
- ``tokens-N.bin``: every document's token embeddings in one contiguous row-major array (fp16 by
  default, fp32 on request), memory-mapped for reading;
- ``lengths-N.bin`` (int64 tokens per document), ``ids-N.jsonl`` (one JSON string per document),
  and any per-token side arrays an index adds (``codes-N.bin`` for centroid codes).

Writes never touch committed bytes: new rows are appended past the committed size (or written
into new files), flushed and fsync'ed, and only then is a new manifest written beside the old one
and switched in with an atomic rename. A writer killed at any point leaves the previous manifest,
which still describes complete files: the index reopens in its last committed state. Bytes past a
committed size and unreferenced files are cleaned by the next writer.

One writer at a time: the first write takes an exclusive lock on ``writer.lock`` (``flock``, so it
dies with its process) and keeps it until :meth:`TokenStore.close`; a second writer is refused
with :class:`IndexLockedError`. Readers take no lock and see the last committed state.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.scores import PackedEmbeddings, token_rows_of

FORMAT = "workbench-token-store/1"
DTYPES = {"float16": np.float16, "float32": np.float32}


class IndexLockedError(RuntimeError):
    """Another writer holds the index."""


class IndexCorruptError(RuntimeError):
    """The index files do not match their manifest."""


class TokenStore:
    """Document token embeddings with their ids, durable and memory-mapped. See the module docstring."""

    def __init__(self, folder: str | Path, dtype: str = "float16", override: bool = False) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
        self.folder = Path(folder)
        self._lock_file = None
        self._manifest_stamp = None
        if override:
            self._lock()
            self._reset(dtype)
        elif not (self.folder / "manifest.json").exists():
            if self.folder.exists() and any(self.folder.iterdir()):
                raise IndexCorruptError(f"{self.folder} holds files but no manifest.json: not an index, or a damaged one.")
            self._lock()
            self._reset(dtype)
        self._load()

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

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
        return PackedEmbeddings(self.tokens, self.offsets)

    def positions(self, document_ids: Sequence[str]) -> np.ndarray:
        unknown = [i for i in document_ids if str(i) not in self.position_of]
        if unknown:
            raise KeyError(f"Unknown document ids: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}.")
        return np.array([self.position_of[str(i)] for i in document_ids], dtype=np.int64)

    def side_array(self, name: str) -> np.ndarray | None:
        return self._side.get(name)

    def refresh(self) -> bool:
        """Reload if another process committed since this one read; True when it did."""
        if self._stamp() != self._manifest_stamp:
            self._load()
            return True
        return False

    # -- writing ---------------------------------------------------------------------------------

    def append(self, document_ids: Sequence[str], embeddings: Sequence[Any], derive: Callable | None = None) -> None:
        """Validate, append documents, and commit. Nothing is written if validation fails.

        ``derive(arrays)``, called after validation with the writer lock held, returns what an index
        adds to the commit: ``{"side": {name: per-token array for the new tokens},
        "replace_side": {name: per-token array for all tokens}, "files": {name: bytes},
        "extra": {metadata}}`` (every key optional).
        """
        ids = [str(i) for i in document_ids]
        self.begin_write()
        arrays = self.validate(ids, embeddings)
        additions = derive(arrays) if derive is not None else {}
        side, replace_side = additions.get("side", {}), additions.get("replace_side", {})
        manifest = json.loads(json.dumps(self.manifest))
        if manifest["dim"] is None:
            manifest["dim"] = int(arrays[0].shape[1])
        dtype = DTYPES[manifest["dtype"]]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        self._append_bytes(manifest, "tokens", _cast(np.concatenate(arrays), dtype).tobytes())
        self._append_bytes(manifest, "lengths", lengths.tobytes())
        self._append_bytes(manifest, "ids", "".join(json.dumps(i) + "\n" for i in ids).encode())
        for name, values in side.items():
            if name not in manifest["files"]:
                self._write_new(manifest, name, b"")
            self._append_bytes(manifest, name, np.ascontiguousarray(values).tobytes())
        for name, values in replace_side.items():
            self._write_new(manifest, name, np.ascontiguousarray(values).tobytes())
        for name, values in (side | replace_side).items():
            manifest["side_dtypes"][name] = str(values.dtype)
        for name, content in additions.get("files", {}).items():
            self._write_new(manifest, name, content)
        manifest["extra"].update(additions.get("extra", {}))
        self._commit(manifest)

    def remove(self, document_ids: Sequence[str]) -> None:
        """Remove documents and commit (rewrites the files without them)."""
        self.begin_write()
        drop = set(self.positions(document_ids).tolist())
        if len(drop) != len(document_ids):
            raise ValueError("Duplicate ids in the removal list.")
        keep = np.array([p for p in range(len(self)) if p not in drop], dtype=np.int64)
        token_rows = token_rows_of(self.offsets, keep)
        manifest = json.loads(json.dumps(self.manifest))
        self._write_new(manifest, "tokens", np.ascontiguousarray(self.tokens[token_rows]).tobytes())
        self._write_new(manifest, "lengths", np.diff(self.offsets)[keep].astype(np.int64).tobytes())
        self._write_new(manifest, "ids", "".join(json.dumps(self.ids[p]) + "\n" for p in keep).encode())
        for name, values in self._side.items():
            self._write_new(manifest, name, np.ascontiguousarray(values[token_rows]).tobytes())
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
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} document ids but {len(embeddings)} embeddings.")
        if not ids:
            raise ValueError("No documents to add.")
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise ValueError(f"Document id {i!r} appears twice in this call.")
            seen.add(i)
        already = [i for i in ids if i in self.position_of]
        if already:
            raise ValueError(f"Document ids already in the index: {already[:5]} (remove them first).")
        arrays = []
        expected_dim = self.dim
        for position, embedding in enumerate(embeddings):
            array = embedding.detach().cpu().float().numpy() if hasattr(embedding, "detach") else np.asarray(embedding)
            if array.ndim != 2 or len(array) == 0:
                raise ValueError(f"Embedding of document {ids[position]!r} has shape {array.shape}; expected [n_tokens > 0, dim].")
            if expected_dim is not None and array.shape[1] != expected_dim:
                raise ValueError(
                    f"Embedding of document {ids[position]!r} has dimension {array.shape[1]}; the index holds {expected_dim}."
                )
            expected_dim = array.shape[1]
            if not np.isfinite(array).all():
                raise ValueError(f"Embedding of document {ids[position]!r} contains NaN or infinite values.")
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
        for path in self.folder.iterdir():
            if path.name != "writer.lock":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        manifest = {"format": FORMAT, "dtype": dtype, "dim": None, "files": {}, "sizes": {}, "next_file": 0,
                    "side_dtypes": {}, "extra": {}}
        for name in ("tokens", "lengths", "ids"):
            self._write_new(manifest, name, b"")
        self._commit(manifest)

    def _load(self) -> None:
        path = self.folder / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise IndexCorruptError(f"{path} is missing.") from None
        except json.JSONDecodeError as error:
            raise IndexCorruptError(f"{path} is not valid JSON ({error.msg}).") from None
        if manifest.get("format") != FORMAT:
            raise IndexCorruptError(f"{path} is not a {FORMAT} manifest.")
        for name, file in manifest["files"].items():
            actual = (self.folder / file).stat().st_size if (self.folder / file).exists() else -1
            if actual < manifest["sizes"][name]:
                raise IndexCorruptError(
                    f"{self.folder / file} holds {max(actual, 0)} bytes, the manifest commits {manifest['sizes'][name]}."
                )
        self.manifest = manifest
        self._manifest_stamp = self._stamp()
        lengths = np.fromfile(self.file_path("lengths"), dtype=np.int64, count=manifest["sizes"]["lengths"] // 8)
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        with open(self.file_path("ids"), "rb") as handle:
            raw = handle.read(manifest["sizes"]["ids"]).decode()
        self.ids = [json.loads(line) for line in raw.split("\n") if line]
        self.position_of = {identifier: position for position, identifier in enumerate(self.ids)}
        dim, dtype = manifest["dim"], DTYPES[manifest["dtype"]]
        n_tokens = int(self.offsets[-1])
        if dim is None or n_tokens == 0:
            self.tokens = np.zeros((0, dim or 0), dtype=dtype)
        else:
            self.tokens = np.memmap(self.file_path("tokens"), dtype=dtype, mode="r", shape=(n_tokens, dim))
        self._side = {
            name: np.fromfile(self.file_path(name), dtype=np.dtype(kind), count=manifest["sizes"][name] // np.dtype(kind).itemsize)
            for name, kind in manifest["side_dtypes"].items()
        }

    def file_path(self, name: str) -> Path:
        return self.folder / self.manifest["files"][name]

    def _stamp(self):
        stat = (self.folder / "manifest.json").stat()
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _write_new(self, manifest: dict, name: str, content: bytes) -> None:
        suffix = {"ids": ".jsonl"}.get(name, ".voy" if name == "voyager" else ".bin")
        file = f"{name}-{manifest['next_file']}{suffix}"
        manifest["next_file"] += 1
        with open(self.folder / file, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        manifest["files"][name] = file
        manifest["sizes"][name] = len(content)

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
        """Delete files no manifest references (left by a replaced generation or a killed writer)."""
        referenced = set(self.manifest["files"].values()) | {"manifest.json", "writer.lock"}
        for path in self.folder.iterdir():
            if path.name not in referenced and path.is_file():
                path.unlink()



def _cast(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as ``dtype``; torch casts fp32 to fp16 several times faster than numpy."""
    if array.dtype == dtype:
        return array
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(getattr(torch, np.dtype(dtype).name)).numpy()
