"""workbench: a Jupyter-first research workbench for late-interaction (ColBERT) retrieval.

The modules sit in four layers. A module imports only from its own layer and the layers above it in
this list (``tests/test_layers.py`` enforces it, and that matplotlib, ipywidgets, IPython, nbclient
and nbformat are imported in the notebook layer only):

1. core: numbers and collections, with no model in sight.
   ``scores`` (exact MaxSim, top-k), ``metrics`` (ranx, BEIR conventions), ``data`` (collections,
   loaders), ``measure`` (timings, bytes), ``provenance`` (versions).
2. PyLate surface: PyLate's modules by PyLate's names, so that its users' code runs unchanged.
   ``models`` (and ``backends``: ONNX Runtime and OpenVINO under it), ``losses``, ``utils``, ``training``,
   ``indexes`` (and the ``store`` shim), ``retrieve``, ``rank``, ``evaluation``, ``cards``, ``baselines``.
3. research layer: what a researcher builds from the surface.
   ``training_sets`` (training data from collections, negatives and teachers), ``explain`` (which
   token matched which).
4. notebook layer: display and orchestration.
   ``runs`` (run folders), ``comparison`` (one table across run folders, with significance),
   ``pipeline`` (the notebooks, headless), ``nbcheck`` (the notebook check), ``plots``, ``widgets``.
"""

__version__ = "0.1.0"

LAYERS = {
    "core": ("scores", "metrics", "data", "measure", "provenance"),
    "PyLate surface": (
        "models",
        "backends",
        "losses",
        "utils",
        "training",
        "indexes",
        "store",
        "retrieve",
        "rank",
        "evaluation",
        "cards",
        "baselines",
    ),
    "research": ("training_sets", "explain"),
    "notebook": ("runs", "comparison", "pipeline", "nbcheck", "plots", "widgets"),
}
