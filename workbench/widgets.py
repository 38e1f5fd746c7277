"""An interactive search over an index, for JupyterLab: query box, top-k list, token heatmap.

What goes in: a ColBERT, an index holding its document embeddings, and the documents' texts
(and titles, when there are some), e.g. a :class:`~workbench.data.Collection`'s ``corpus`` and ``titles``.

What comes out: a widget. Typing a query and pressing Enter (the box reports its ``value`` on
Enter, and the demo ``observe``s it) lists the top ``k`` documents with their MaxSim scores; the
"Explain" menu draws, for the chosen result, which query token matched which document token.
The same steps run without a browser: :meth:`SearchDemo.search` and :meth:`SearchDemo.explain`.

Example::

    from workbench import widgets

    demo = widgets.SearchDemo(model, index, collection.corpus, collection.titles, k=5)
    demo            # in a notebook: displays the widget
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping

import ipywidgets
import matplotlib.pyplot as plt
import pandas as pd

from workbench import explain, plots, retrieve

__all__ = ["SearchDemo"]


class SearchDemo:
    """Query box, results list and token heatmap over ``index``; see the module docstring."""

    def __init__(
        self,
        model,
        index,
        documents: Mapping[str, str],
        titles: Mapping[str, str] | None = None,
        k: int = 5,
        snippet_characters: int = 160,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        self.model, self.documents, self.titles = model, documents, dict(titles or {})
        self.retriever = retrieve.ColBERT(index)
        self.k, self.snippet_characters = k, snippet_characters
        self.hits = pd.DataFrame(columns=["id", "title", "score"])
        self.matches: explain.TokenMatches | None = None
        self._listing = False
        self.last_query: str | None = None

        self.query = ipywidgets.Text(
            placeholder="Type a query, then press Enter",
            description="Query",
            continuous_update=False,
            layout=ipywidgets.Layout(width="90%"),
        )
        self.results = ipywidgets.HTML(value="<i>No query yet.</i>")
        self.choice = ipywidgets.Dropdown(description="Explain", options=[], layout=ipywidgets.Layout(width="90%"))
        self.heatmap = ipywidgets.Image(format="png")
        self.query.observe(self._on_query, names="value")
        self.choice.observe(self._on_choice, names="value")
        self.widget = ipywidgets.VBox([self.query, self.results, self.choice, self.heatmap])

    def search(self, query: str) -> pd.DataFrame:
        """The top ``k`` documents for ``query``: rank (index), id, title, score."""
        if not query.strip():
            raise ValueError("The query is empty.")
        embeddings = self.model.encode([query], is_query=True)
        hits = self.retriever.retrieve(embeddings, k=self.k)[0]
        self.last_query = query
        self.hits = pd.DataFrame(
            [{"id": hit["id"], "title": self.titles.get(hit["id"], ""), "score": hit["score"]} for hit in hits],
            index=pd.RangeIndex(1, len(hits) + 1, name="rank"),
            columns=["id", "title", "score"],
        )
        return self.hits

    def explain(self, document_id: str) -> explain.TokenMatches:
        """Token matches of the last query searched (typed or ``search``) with ``document_id``, drawn into the
        heatmap."""
        if document_id not in self.documents:
            raise KeyError(f"No document {document_id!r} in this demo's documents.")
        if self.last_query is None:
            raise ValueError(
                "Search first (type a query, or call search): the heatmap explains a query against a document."
            )
        self.matches = explain.token_matches(self.model, self.last_query, self.documents[document_id])
        figure = plots.maxsim_heatmap(
            self.matches, title=f"{self.titles.get(document_id) or document_id}: MaxSim {self.matches.score:.2f}"
        )
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(figure)
        self.heatmap.value = buffer.getvalue()
        return self.matches

    def _on_query(self, change) -> None:
        if not change["new"].strip():
            return
        hits = self.search(change["new"])
        self.results.value = self._results_html(hits)
        self._listing = True  # new options move the menu's value: explain the top hit once, below
        try:
            self.choice.options = [(f"{rank}. {row.title or row.id}", row.id) for rank, row in hits.iterrows()]
            self.choice.value = hits["id"].iloc[0] if len(hits) else None
        finally:
            self._listing = False
        if len(hits):
            self.explain(hits["id"].iloc[0])

    def _on_choice(self, change) -> None:
        if change["new"] is not None and not self._listing:
            self.explain(change["new"])

    def _results_html(self, hits: pd.DataFrame) -> str:
        if hits.empty:
            return "<i>No documents in the index.</i>"
        rows = []
        for rank, row in hits.iterrows():
            text = self.documents.get(row.id, "")
            snippet = text[: self.snippet_characters] + ("…" if len(text) > self.snippet_characters else "")
            rows.append(
                f"<tr><td>{rank}</td><td class='workbench-hit'><b>{html.escape(row.title or row.id)}</b>"
                f"<br><small>{html.escape(snippet)}</small></td><td>{row.score:.2f}</td></tr>"
            )
        return (
            "<table class='workbench-results' style='line-height:1.3'>"
            "<tr><th>#</th><th>document</th><th>MaxSim</th></tr>" + "".join(rows) + "</table>"
        )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
