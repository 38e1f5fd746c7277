"""What a result was made with: the versions of Python and of the packages it depends on.

Run folders (``steps/<notebook>.json``) and model cards record them.

Example::

    >>> import workbench
    >>> from workbench.provenance import versions
    >>> found = versions()
    >>> found["workbench"] == workbench.__version__, "torch" in found
    (True, True)
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform

from workbench import __version__

__all__ = ["versions", "PACKAGES"]

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


def versions() -> dict[str, str]:
    """Versions of Python, the workbench, and those of :data:`PACKAGES` that are installed."""
    found = {"Python": platform.python_version(), "workbench": __version__}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found
