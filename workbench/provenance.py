"""What a result was made with: package versions, the workbench's commit, the machine, torch's precision.

Run folders (``steps/<notebook>.json``), model cards and the benchmarks record them, so that a number
can be traced to the code and the hardware that computed it: float results differ in their last
digits between CPUs (AVX2, AVX-512, AMX) and between precisions.

Example::

    >>> import workbench
    >>> from workbench.provenance import describe, versions
    >>> found = versions()
    >>> found["workbench"] == workbench.__version__, "torch" in found
    (True, True)
    >>> sorted(describe())
    ['git', 'machine', 'torch', 'versions']
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from workbench import __version__

__all__ = ["PACKAGES", "describe", "git", "machine", "torch_settings", "versions"]

# The packages a model, an index or a metric depends on: what a reader needs to reproduce a number.
PACKAGES = (
    "sentence-transformers",
    "transformers",
    "torch",
    "accelerate",
    "datasets",
    "tokenizers",
    "voyager",
    "faiss-cpu",
    "ranx",
)
# The CPU features that change which numeric kernels run (and so the last digits of a float result).
CPU_FEATURES = (
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "neon",
    "asimd",
)
PROJECT = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str]:
    """Versions of Python, the workbench, and those of :data:`PACKAGES` that are installed."""
    found = {"Python": platform.python_version(), "workbench": __version__}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU (model, the features of :data:`CPU_FEATURES` it has, logical cores), the OS and any GPU."""
    model, flags = platform.processor() or platform.machine(), set()
    path = Path(cpuinfo)
    if path.exists():  # Linux; elsewhere the platform's own processor string
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    return {
        "cpu": model,
        "cpu_features": [feature for feature in CPU_FEATURES if feature in flags],
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "gpus": _gpus(),
    }


def _gpus() -> list[str]:
    import torch

    if torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return ["Apple MPS"]
    return []


def torch_settings() -> dict[str, Any]:
    """What decides torch's float results besides the data: default dtype, fp32 matmul precision, threads."""
    import torch

    return {
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def git(folder: str | Path = PROJECT) -> dict[str, Any] | None:
    """The commit ``folder`` is checked out at and whether its tracked files differ from it (``dirty``);
    None when it is not a git checkout (an installed wheel) or git is missing."""
    if not (Path(folder) / ".git").exists():  # not a checkout of its own, even inside someone else's repository
        return None
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        changed = _git(folder, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(changed)}


def _git(folder: str | Path, *arguments: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *arguments], capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def describe() -> dict[str, Any]:
    """Everything above, as one JSON-ready dict: what a run folder's step records beside its results."""
    return {"versions": versions(), "git": git(), "machine": machine(), "torch": torch_settings()}
