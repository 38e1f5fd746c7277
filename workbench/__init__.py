"""workbench: a Jupyter-first research workbench for late-interaction (ColBERT) retrieval."""

__version__ = "0.1.0"
