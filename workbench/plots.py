"""The pictures of the workbench, one function each; every one returns its matplotlib Figure.

- :func:`loss_curve`: training loss per step (one line per run), from :func:`workbench.training.train`'s tables.
- :func:`metric_bars`: one metric, per dataset (groups) and per model (bars), from an evaluation table.
- :func:`recall_latency`: recall against milliseconds per query, from :func:`workbench.retrieve.recall_latency`.
- :func:`maxsim_heatmap`: query tokens against document tokens, each query token's match outlined,
  from :func:`workbench.explain.token_matches`.

Example::

    from workbench import plots

    figure = plots.loss_curve({"contrastive": history})
    figure.savefig("loss.png")
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from workbench.explain import TokenMatches

__all__ = ["loss_curve", "metric_bars", "recall_latency", "maxsim_heatmap"]


def loss_curve(histories: Mapping[str, pd.DataFrame], title: str = "Training loss") -> plt.Figure:
    """Loss against step, one line per named history (``step`` and ``loss`` columns)."""
    figure, axes = plt.subplots(figsize=(6, 3.2))
    for name, history in histories.items():
        if not {"step", "loss"} <= set(history.columns):
            raise ValueError(f"History {name!r} needs 'step' and 'loss' columns, has {list(history.columns)}.")
        axes.plot(history["step"], history["loss"], marker="o", markersize=3, label=name)
    axes.set(xlabel="step", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def metric_bars(
    table: pd.DataFrame, metric: str, dataset_column: str = "dataset", model_column: str = "model"
) -> plt.Figure:
    """Grouped bars of ``metric``: one group per dataset, one bar per model, values written on top."""
    for column in (dataset_column, model_column, metric):
        if column not in table.columns:
            raise ValueError(f"The table has no {column!r} column; it has {list(table.columns)}.")
    wide = table.pivot(index=dataset_column, columns=model_column, values=metric)
    wide = wide[list(dict.fromkeys(table[model_column]))]  # models in the table's order
    figure, axes = plt.subplots(figsize=(max(5, 1.6 * len(wide) + 2), 3.4))
    width = 0.8 / len(wide.columns)
    positions = np.arange(len(wide))
    for offset, model in enumerate(wide.columns):
        bars = axes.bar(positions + offset * width - 0.4 + width / 2, wide[model], width, label=model)
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks(positions, wide.index)
    axes.set(ylabel=metric, ylim=(0, 1.05), title=f"{metric} per dataset")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    figure.tight_layout()
    return figure


def recall_latency(
    sweep: pd.DataFrame, recall_column: str | None = None, exact_ms_per_query: float | None = None
) -> plt.Figure:
    """Recall against ms per query, each point labelled with its search settings (the sweep's other
    columns, for example ``k_token/n_full_scores`` for Voyager, ``n_ivf_probe/n_full_scores`` for PLAID).

    ``exact_ms_per_query`` draws exhaustive exact search (recall 1) as a reference line.
    """
    recall_column = recall_column or next((c for c in sweep.columns if c.startswith("recall@")), None)
    if recall_column is None or "ms_per_query" not in sweep.columns:
        raise ValueError(f"The sweep needs 'ms_per_query' and a 'recall@k' column; it has {list(sweep.columns)}.")
    knobs = [c for c in sweep.columns if c != "ms_per_query" and not c.startswith("recall@")]
    ordered = sweep.sort_values("ms_per_query")
    figure, axes = plt.subplots(figsize=(6, 3.4))
    axes.plot(ordered["ms_per_query"], ordered[recall_column], marker="o")
    for _, row in ordered.iterrows():
        axes.annotate(
            "/".join(str(int(row[c])) for c in knobs),
            (row["ms_per_query"], row[recall_column]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    if exact_ms_per_query is not None:
        axes.axvline(
            exact_ms_per_query, color="grey", linestyle="--", label=f"exact search ({exact_ms_per_query:.1f} ms)"
        )
        axes.legend(fontsize=8, loc="lower right")
    axes.set(
        xlabel="ms per query",
        ylabel=f"{recall_column} of exact top-k",
        title=f"Recall against latency (labels: {'/'.join(knobs)})",
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def maxsim_heatmap(matches: TokenMatches, title: str | None = None, max_document_tokens: int = 60) -> plt.Figure:
    """Similarity of each query token (rows) with each document token (columns); each row's max is outlined.

    ``[MASK]`` expansion rows are kept: they take part in the score. Documents longer than
    ``max_document_tokens`` are cut to their first tokens, so the picture stays readable.
    """
    similarities = matches.similarities[:, :max_document_tokens]
    document_tokens = matches.document_tokens[:max_document_tokens]
    height = 1.2 + 0.22 * len(matches.query_tokens)
    figure, axes = plt.subplots(figsize=(min(2 + 0.22 * len(document_tokens), 16), height))
    image = axes.imshow(similarities, cmap="viridis", aspect="auto")
    for row, column in enumerate(matches.best):
        if column < similarities.shape[1]:
            axes.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    axes.set_yticks(range(len(matches.query_tokens)), matches.query_tokens, fontsize=7)
    axes.set_xticks(range(len(document_tokens)), document_tokens, rotation=90, fontsize=7)
    axes.set_title(
        title or f"Token-level MaxSim (score {matches.score:.2f}; red: each query token's match)", fontsize=9
    )
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.01)
    figure.tight_layout()
    return figure
