"""One table across run folders, with paired significance: the table a paper cites.

:func:`compare` reads the per-query TREC runs that each run folder kept (``trec/<part>/``,
:meth:`workbench.runs.Run.save_trec`: notebook 05 writes ``part="retrieval"``, notebook 06
``"evaluation"``) and returns a :class:`Comparison`: the configuration keys whose values differ
between the runs, the metric per (system, run) and dataset, each run's p-value against a baseline run,
and the table as Markdown and LaTeX.

Conventions (a reader of the table needs them; the legend under it states them):

* A dataset's value is the metric's mean over its judged queries (a judgement of grade >= 1); a judged
  query missing from a run counts 0 (trec_eval's ``-c``, :func:`workbench.metrics.per_query`).
* ``mean`` is the unweighted mean over the datasets (BEIR's and NanoBEIR's convention: every dataset
  counts the same, however many queries it has). It is not tested: its p-value is NaN, since a test
  pooling the datasets' queries would test the query-weighted mean, another number.
* Tests are two-sided and paired over the queries of one dataset, run against the baseline:
  ``"student"`` (scipy's ``ttest_rel``, as ranx), ``"fisher"`` (paired randomisation: exact up to 13
  queries, else 9999 seeded resamples) or ``"tukey"`` (Tukey's HSD over every run at once, as ranx).
  Two runs equal on every query get p = 1 (a t statistic would be 0/0).
* Significant means p < ``max_p``. No multiple-comparison correction is applied unless
  ``correction="bonferroni"`` (each p times the number of tests in the table, at most 1).
* Best (bold) is the highest value of a system's runs at the shown precision (every metric here is
  higher-is-better); ties are all bold.
* Only what every run holds is compared: the datasets (a warning names those left out, since they would
  change the mean) and the systems. A dataset's qrels must be identical in every run: numbers judged
  on different qrels are not comparable.

Example::

    from workbench import runs

    comparison = runs.compare(["runs/20250101-120000", "runs/20250102-090000"], labels=["1 neg", "8 neg"])
    comparison.differences          # the settings that differ, e.g. contrastive_negatives: 1 and 8
    comparison                      # in a notebook: the Markdown table and its legend
    print(comparison.to_latex())    # booktabs, for the paper
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import metrics
from workbench.runs import TREC_PARTS, Run, open_run

__all__ = ["ABSENT", "CORRECTIONS", "MEAN", "TESTS", "Comparison", "compare"]

TESTS = {
    "student": "paired two-sided Student's t-test",
    "fisher": "paired two-sided randomisation test (Fisher)",
    "tukey": "Tukey's HSD test over all runs",
}
CORRECTIONS = (None, "bonferroni")
MEAN = "mean"  # the column of the unweighted mean over datasets
ABSENT = "(not recorded)"  # a configuration key one run has and another has not


@dataclass(repr=False)
class Comparison:
    """What :func:`compare` returns.

    ``table``: the metric, one row per (system, run), one column per dataset and ``mean``.
    ``pvalues``: the same shape; each run's p-value against the baseline (NaN for the baseline's rows and
    the mean). ``differences``: the configuration keys that differ, one column per run.
    """

    table: pd.DataFrame
    pvalues: pd.DataFrame
    differences: pd.DataFrame
    metric: str
    baseline: str
    test: str
    max_p: float
    correction: str | None

    @property
    def significant(self) -> pd.DataFrame:
        """True where a run differs from the baseline at p < ``max_p`` (NaN compares False)."""
        return self.pvalues < self.max_p

    def best(self, digits: int = 3) -> pd.DataFrame:
        """True where a run has its system's highest value in that column, at ``digits`` decimals."""
        shown = self.table.round(digits)
        return shown.eq(shown.groupby(level="system").transform("max"))

    def legend(self, latex: bool = False) -> str:
        """The line under the table: metric, mean, bold, dagger, test, threshold, correction, baseline."""
        escape = _latex_escape if latex else str
        dagger, threshold = (r"$^{\dagger}$", f"$p < {self.max_p}$") if latex else ("†", f"p < {self.max_p}")
        tests = int(self.pvalues.count().sum())
        correction = (
            f"Bonferroni-corrected over the table's {tests} tests"
            if self.correction == "bonferroni"
            else "no multiple-comparison correction"
        )
        datasets = len(self.table.columns) - 1
        return (
            f"{escape(self.metric)}; {MEAN}: unweighted mean over the {datasets} datasets (not tested). "
            f"Bold: the best run of each system. {dagger}: differs from the baseline ({escape(self.baseline)}) "
            f"at {threshold} ({TESTS[self.test]} over each dataset's queries, {correction})."
        )

    def to_markdown(self, digits: int = 3) -> str:
        """The table in Markdown (the system named on its first row), then the legend."""
        header = ["system", "run", *self.table.columns]
        rows = self._rows(digits, lambda text: f"**{text}**", "†", _markdown_escape)
        rule = ["---", "---"] + ["---:"] * len(self.table.columns)
        lines = [_markdown_row(map(_markdown_escape, header)), _markdown_row(rule), *map(_markdown_row, rows)]
        return "\n".join(lines) + f"\n\n{self.legend()}\n"

    def to_latex(self, digits: int = 3, caption: bool = True) -> str:
        """The table as a booktabs ``tabular`` (a rule between systems), in a ``table`` float whose caption
        is the legend (``caption=False``: the ``tabular`` alone). Needs ``\\usepackage{booktabs}``."""
        header = ["System", "Run", *map(_latex_escape, self.table.columns)]
        lines = [rf"\begin{{tabular}}{{ll{'r' * len(self.table.columns)}}}", r"\toprule", _latex_row(header)]
        for row in self._rows(digits, lambda text: rf"\textbf{{{text}}}", r"$^{\dagger}$", _latex_escape):
            if row[0]:  # a system's first row
                lines.append(r"\midrule")
            lines.append(_latex_row(row))
        lines += [r"\bottomrule", r"\end{tabular}"]
        if caption:
            lines = [r"\begin{table}", r"\centering", rf"\caption{{{self.legend(latex=True)}}}", *lines, r"\end{table}"]
        return "\n".join(lines) + "\n"

    def _rows(self, digits: int, strong, dagger: str, escape) -> list[list[str]]:
        """The table's cells as text: the system on its first row only, best values ``strong``, then ``dagger``."""
        values, best, significant = self.table.to_numpy(), self.best(digits).to_numpy(), self.significant.to_numpy()
        rows, previous = [], None
        for i, (system, label) in enumerate(self.table.index):
            cells = []
            for j, value in enumerate(values[i]):
                text = f"{value:.{digits}f}"
                cells.append((strong(text) if best[i, j] else text) + (dagger if significant[i, j] else ""))
            rows.append([escape(system) if system != previous else "", escape(label), *cells])
            previous = system
        return rows

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return self.to_markdown()


def compare(
    runs: Sequence[Run | str | Path],
    labels: Sequence[str] | None = None,
    part: str = "evaluation",
    systems: Sequence[str] | str | None = None,
    metric: str = metrics.PRIMARY_METRIC,
    baseline: int | str = 0,
    test: str = "student",
    max_p: float = 0.05,
    relevance_level: int = 1,
    correction: str | None = None,
) -> Comparison:
    """Compare run folders on the per-query runs they kept under ``trec/<part>`` (see the module docstring).

    ``runs``: two or more :class:`~workbench.runs.Run` objects or run-folder paths; ``labels``: one name
    per run (default: the folders' names). ``part``: ``"evaluation"`` (notebook 06: BM25 and the models on
    each evaluation dataset) or ``"retrieval"`` (notebook 05: the systems on the test collection).
    ``systems``: which systems, in which order (default: every system that every run holds on every
    dataset). ``metric``: a ranx metric (``"ndcg@10"``, ``"recall@100"``) or a card name
    (``"accuracy@10"``). ``baseline``: the run the others are tested against, by index or label.
    ``test``: one of :data:`TESTS`; ``correction``: None or ``"bonferroni"``; ``relevance_level``: as in
    :func:`workbench.metrics.evaluate`. Raises ``ValueError`` on fewer than two runs, an unknown system,
    metric, test or baseline, no dataset in common, or a dataset judged differently in two runs, and
    :class:`~workbench.runs.MissingStepError` (naming the notebook to run) for a run without ``trec/<part>``.

    Example::

        comparison = compare(["runs/a", "runs/b"], systems=["contrastive", "distilled"], baseline="a")
        comparison.table.loc["distilled"]       # one row per run: the datasets, then the mean
        comparison.pvalues.loc["distilled"]     # run b against run a, per dataset
    """
    opened = [run if isinstance(run, Run) else open_run(run) for run in runs]
    if len(opened) < 2:
        raise ValueError(f"compare needs at least 2 runs, got {len(opened)}.")
    labels = [str(label) for label in labels] if labels is not None else [run.path.name for run in opened]
    if len(labels) != len(opened) or len(set(labels)) < len(labels):
        raise ValueError(f"labels must name each of the {len(opened)} runs once, got {labels}: pass labels=[...].")
    baseline = _baseline_label(baseline, labels)
    if test not in TESTS:
        raise ValueError(f"test must be one of {sorted(TESTS)}, got {test!r}.")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}.")
    if part not in TREC_PARTS:
        raise ValueError(f"part must be one of {TREC_PARTS}, got {part!r}.")
    ranx_metric = _ranx_metric(metric)

    kept = {label: run.trec(part) for label, run in zip(labels, opened)}
    datasets, systems = _in_every_run(kept, systems)
    index = pd.MultiIndex.from_product([systems, labels], names=["system", "run"])
    table = pd.DataFrame(np.nan, index=index, columns=pd.Index(datasets, name="dataset"))
    pvalues = table.copy()
    for dataset in datasets:
        qrels = _same_qrels(dataset, kept)
        for system in systems:
            # Identical qrels give every run the same judged queries, in the same (sorted) order: the pairs.
            scores = {
                label: metrics.per_query(qrels, kept[label][dataset][1][system], ranx_metric, relevance_level)
                for label in labels
            }
            for label, values in scores.items():
                table.loc[(system, label), dataset] = values.mean()
            for label, p in _p_values({label: values.to_numpy() for label, values in scores.items()}, baseline, test):
                pvalues.loc[(system, label), dataset] = p
    table[MEAN] = table[datasets].mean(axis=1)
    pvalues[MEAN] = np.nan
    if correction == "bonferroni":
        pvalues = (pvalues * pvalues.count().sum()).clip(upper=1.0)
    differences = _differences({label: run.configuration() for label, run in zip(labels, opened)})
    return Comparison(table, pvalues, differences, metric, baseline, test, max_p, correction)


def _baseline_label(baseline: int | str, labels: list[str]) -> str:
    if isinstance(baseline, int) and 0 <= baseline < len(labels):
        return labels[baseline]
    if isinstance(baseline, str) and baseline in labels:
        return baseline
    raise ValueError(f"baseline must be a run's index (0 to {len(labels) - 1}) or label {labels}, got {baseline!r}.")


def _ranx_metric(metric: str) -> str:
    """ranx's name for ``metric`` (a card name such as ``accuracy@10`` is mapped), checked on a one-query run."""
    ranx_name = dict(metrics.SEED_METRICS).get(metric, metric)
    try:
        metrics.per_query({"q": {"d": 1}}, {"q": {"d": 1.0}}, ranx_name)
    except ValueError as error:
        raise ValueError(f"Unknown metric {metric!r}: {error}") from None
    return ranx_name


def _in_every_run(kept: Mapping[str, dict], systems: Sequence[str] | str | None) -> tuple[list[str], list[str]]:
    """The datasets every run holds (in the first run's order) and the chosen systems, each in every run."""
    first = next(iter(kept.values()))
    datasets = [dataset for dataset in first if all(dataset in trec for trec in kept.values())]
    if not datasets:
        held = {label: sorted(trec) for label, trec in kept.items()}
        raise ValueError(f"No dataset is in every run: {held}.")
    left_out = sorted(set().union(*kept.values()) - set(datasets))
    if left_out:
        warnings.warn(f"Datasets {left_out} are not in every run: the table and its mean leave them out.", stacklevel=3)
    everywhere = [
        system
        for system in first[datasets[0]][1]
        if all(system in trec[dataset][1] for trec in kept.values() for dataset in datasets)
    ]
    chosen = everywhere if systems is None else [systems] if isinstance(systems, str) else list(systems)
    unknown = [system for system in chosen if system not in everywhere]
    if unknown or not chosen:
        raise ValueError(f"Systems {unknown or chosen} are not in every run on every dataset; these are: {everywhere}.")
    return datasets, chosen


def _same_qrels(dataset: str, kept: Mapping[str, dict]) -> dict:
    """The qrels of ``dataset``, or a ValueError when two runs judged it differently."""
    (first, (qrels, _)), *others = ((label, trec[dataset]) for label, trec in kept.items())
    for label, (other, _) in others:
        if other != qrels:
            raise ValueError(
                f"The qrels of dataset {dataset!r} differ between runs {first!r} and {label!r}: "
                "numbers judged on different qrels are not comparable."
            )
    return qrels


def _p_values(scores: Mapping[str, np.ndarray], baseline: str, test: str) -> list[tuple[str, float]]:
    """(label, p-value against the baseline) for every other run; ``scores`` are per query, in one order."""
    from scipy import stats

    others = [label for label in scores if label != baseline]
    if test == "tukey":  # one test over every run at once, as ranx runs it
        matrix = stats.tukey_hsd(*scores.values()).pvalue
        column = list(scores).index(baseline)
        return [(label, float(matrix[list(scores).index(label), column])) for label in others]
    control, found = scores[baseline], []
    for label in others:
        treatment = scores[label]
        if np.array_equal(treatment, control):
            p = 1.0
        elif test == "student":
            p = stats.ttest_rel(treatment, control).pvalue
        else:
            # Flipping a query's pair is the randomisation; random_state (not rng) works from scipy 1.11 on.
            p = stats.permutation_test(
                (treatment, control), _mean_difference, permutation_type="samples", vectorized=True, random_state=0
            ).pvalue
        found.append((label, float(p)))
    return found


def _mean_difference(treatment: np.ndarray, control: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(treatment - control, axis=axis)


def _differences(configurations: Mapping[str, Mapping]) -> pd.DataFrame:
    """The keys whose values differ between the configurations (JSON-equal values are equal), one column each.

    Every key is kept: even ``device`` can change the numbers (kernels, precision)."""
    keys = dict.fromkeys(key for configuration in configurations.values() for key in configuration)
    rows = {key: [configuration.get(key, ABSENT) for configuration in configurations.values()] for key in keys}
    differing = {key: row for key, row in rows.items() if len({_canonical(value) for value in row}) > 1}
    index = pd.Index(list(differing), name="setting")
    return pd.DataFrame(list(differing.values()), index=index, columns=list(configurations), dtype=object)


def _canonical(value) -> str:
    # JSON, so that a list and a tuple, or a dict in another key order, are the same setting.
    return json.dumps(value, sort_keys=True, default=str)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text) -> str:
    # One pass, so that the backslashes of the replacements are not escaped again.
    return re.sub(r"[\\&%$#_{}~^]", lambda match: _LATEX_SPECIAL[match.group()], str(text))


def _latex_row(cells) -> str:
    return " & ".join(cells) + r" \\"


def _markdown_escape(text) -> str:
    return str(text).replace("|", r"\|")


def _markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"
