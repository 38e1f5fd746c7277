"""Notebook outputs checked as a reader reads them: exactly where no machine can change them, within a
stated tolerance where floating point can.

A pytest plugin (installed with the package, off until asked for)::

    pytest --nbcheck notebooks/ --nbcheck-tolerances nbconfig/tolerances.yaml

Each committed notebook is executed top to bottom in a fresh kernel, and every code cell becomes a
test that compares what the cell shows now with what it showed when it was committed:

- Outputs: the same number, kinds and order (consecutive stream chunks are joined first). Figures
  must be there on both sides; their pixels are not compared.
- Text (streams, ``text/plain``, ``text/markdown``) is compared line by line, and tables
  (a DataFrame's ``text/html``, Markdown pipe tables) cell by cell. Everything but numbers must be
  equal, after the tolerance file's ``replace`` patterns (progress bars, timings, run folder names)
  and with runs of white space folded. So ids, texts, column names and shapes are exact.
- Integers are exact. A decimal number is exact too, unless a rule of the tolerance file names
  its context (a table cell's column header, the table's corner label and the row's label; else the
  text before the number on its line): the first rule whose ``where`` pattern is found there gives
  an ``absolute`` and/or ``relative`` tolerance.
- Near ties: a rule with ``ties: true`` decides a ranking or a choice (a score, a similarity). A
  table row whose exact cells differ passes when that column agrees within its tolerance: the row's
  item was near-tied with another on the committed machine, so either order is right.

Everything the tolerances let through is listed at the end of the test session, never silently.

Example tolerance file::

    replace:
      - {name: timings, regex: '\\d+(\\.\\d+)? ms', with: TIME}
    tolerances:
      - name: retrieval metrics
        where: 'ndcg|recall'
        absolute: 0.02
        why: a mean over about 160 queries, trained on another CPU's floating point
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

__all__ = [
    "Rule",
    "Tolerances",
    "compare_cells",
    "kernel_variant",
    "pytest_addoption",
    "pytest_collect_file",
    "pytest_terminal_summary",
]

TOLERATED = pytest.StashKey[list]()
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)(?!\.\d)")
FIGURES = ("image/png", "image/jpeg", "image/svg+xml")


@dataclass(frozen=True)
class Rule:
    name: str
    where: re.Pattern
    absolute: float = 0.0
    relative: float = 0.0
    ties: bool = False
    why: str = ""

    def admits(self, expected: float, actual: float) -> bool:
        return abs(actual - expected) <= self.absolute + self.relative * abs(expected)

    def describe(self) -> str:
        bounds = [f"absolute {self.absolute:g}"] * bool(self.absolute) + [f"relative {self.relative:g}"] * bool(
            self.relative
        )
        return f"{self.name} ({', '.join(bounds)})"


class Tolerances:
    """The ``replace`` patterns and tolerance rules of one YAML file (see the module docstring)."""

    def __init__(self, replace: list[tuple[re.Pattern, str]], rules: list[Rule]) -> None:
        self.replace, self.rules = replace, rules

    @classmethod
    def load(cls, path: str | Path) -> Tolerances:
        import yaml

        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        unknown = set(config) - {"replace", "tolerances"}
        if unknown:
            raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected 'replace' and 'tolerances'.")
        replace = [(re.compile(entry["regex"]), entry["with"]) for entry in config.get("replace", [])]
        rules = []
        for entry in config.get("tolerances", []):
            if not entry.get("why"):
                raise ValueError(f"{path}: the tolerance {entry.get('name')!r} needs a 'why'.")
            rules.append(
                Rule(
                    name=entry["name"],
                    where=re.compile(entry["where"], re.IGNORECASE),
                    absolute=float(entry.get("absolute", 0)),
                    relative=float(entry.get("relative", 0)),
                    ties=bool(entry.get("ties", False)),
                    why=entry["why"],
                )
            )
        return cls(replace, rules)

    def sanitize(self, text: str) -> str:
        for pattern, replacement in self.replace:
            text = pattern.sub(replacement, text)
        return text

    def rule_for(self, context: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.where.search(context)), None)


# ---------------------------------------------------------------------------------------------
# Values: a piece of text with the context that decides its tolerance


def _compare_text(
    expected: str, actual: str, context: str | None, tolerances: Tolerances, where: str
) -> tuple[list[str], list[str], list[str]]:
    """(exact differences, numbers beyond their tolerance, tolerated differences) of one line or cell.

    ``context`` picks a number's rule; None means the text before the number on its line.
    """
    wanted, got = list(NUMBER.finditer(expected)), list(NUMBER.finditer(actual))
    skeleton = [" ".join(part.split()) for part in NUMBER.split(expected)]
    if skeleton != [" ".join(part.split()) for part in NUMBER.split(actual)] or len(wanted) != len(got):
        return [f"{where}: expected {expected.strip()!r}, got {actual.strip()!r}"], [], []
    exact, beyond, tolerated = [], [], []
    for number, got_number in zip(wanted, got):
        if number[0] == got_number[0]:
            continue
        rule = tolerances.rule_for(expected[: number.start()] if context is None else context)
        decimal = any(mark in (number[0] + got_number[0]).lower() for mark in ".e")
        if not (rule and decimal):
            exact.append(f"{where}: expected {number[0]}, got {got_number[0]} (exact) in {expected.strip()[:120]!r}")
        elif rule.admits(float(number[0]), float(got_number[0])):
            tolerated.append(f"{where}: {number[0]} -> {got_number[0]} within {rule.describe()}")
        else:
            beyond.append(
                f"{where}: expected {number[0]}, got {got_number[0]}, beyond {rule.describe()}"
                f" in {expected.strip()[:120]!r}"
            )
    return exact, beyond, tolerated


def _pipe_cells(line: str) -> list[str] | None:
    stripped = line.strip()
    if not (stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1):
        return None
    return [cell.strip() for cell in stripped[1:-1].split("|")]


def _compare_lines(expected: str, actual: str, tolerances: Tolerances, where: str) -> tuple[list[str], list[str]]:
    """Line by line; the cells of a Markdown pipe table take their column header as context."""
    expected_lines, actual_lines = expected.rstrip("\n").split("\n"), actual.rstrip("\n").split("\n")
    if len(expected_lines) != len(actual_lines):
        return [f"{where}: {len(expected_lines)} lines expected, got {len(actual_lines)}:\n{actual[:2000]}"], []
    failures, tolerated, header = [], [], None
    for number, (wanted, got) in enumerate(zip(expected_lines, actual_lines), start=1):
        cells = _pipe_cells(wanted)
        if cells is None:
            header = None
            found = [_compare_text(wanted, got, None, tolerances, f"{where}, line {number}")]
        elif header is None or set("".join(cells)) <= set("-: "):
            header = header or cells
            found = [_compare_text(wanted, got, None, tolerances, f"{where}, line {number}")]
        elif len(_pipe_cells(got) or []) != len(cells):
            found = [([f"{where}, line {number}: expected {wanted!r}, got {got!r}"], [], [])]
        else:
            labels = header + [""] * len(cells)
            found = [
                _compare_text(
                    cell, got_cell, f"{label} {cells[0]}", tolerances, f"{where}, line {number}, column {label!r}"
                )
                for cell, got_cell, label in zip(cells, _pipe_cells(got), labels)
            ]
        for exact, beyond, fine in found:
            failures += exact + beyond
            tolerated += fine
    return failures, tolerated


class _Table(HTMLParser):
    """The header rows and body rows of the first ``<table>`` in a DataFrame's HTML: ``(tag, text)`` cells."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[list[str]] = []
        self.body: list[list[tuple[str, str]]] = []
        self._section, self._cell, self._row = None, None, None

    def handle_starttag(self, tag, attrs):
        if tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._section:
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = (tag, [])

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._row.append((self._cell[0], "".join(self._cell[1]).strip()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._section == "thead":
                self.header.append([text for _, text in self._row])
            else:
                self.body.append(self._row)
            self._row = None
        elif tag in ("thead", "tbody"):
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)


def _table(html: str) -> _Table:
    parser = _Table()
    parser.feed(html)
    return parser


def _compare_tables(expected: str, actual: str, tolerances: Tolerances, where: str) -> tuple[list[str], list[str]]:
    wanted, got = _table(expected), _table(actual)
    if wanted.header != got.header:
        return [f"{where}: columns {wanted.header} expected, got {got.header}"], []
    if len(wanted.body) != len(got.body):
        return [f"{where}: {len(wanted.body)} rows expected, got {len(got.body)}"], []
    labels = wanted.header[0] if wanted.header else []
    failures, tolerated = [], []
    for number, (row, got_row) in enumerate(zip(wanted.body, got.body)):
        if [tag for tag, _ in row] != [tag for tag, _ in got_row]:
            failures.append(f"{where}, row {number}: expected {row}, got {got_row}")
            continue
        data_columns = sum(tag == "td" for tag, _ in row)
        # pandas writes the index as th cells first; the data columns are the header's last labels
        data_labels = ([""] * data_columns + labels)[-data_columns:] if data_columns else []
        columns = ["(index)"] * (len(row) - data_columns) + data_labels
        row_name = next((text for tag, text in row if tag == "th"), str(number))
        corner = labels[0] if len(labels) > data_columns else ""
        exact, tied = [], False
        for (tag, text), (_, got_text), column in zip(row, got_row, columns):
            context = f"{corner} {column} {row_name}" if tag == "td" else ""
            found = _compare_text(text, got_text, context, tolerances, f"{where}, row {row_name!r}, column {column!r}")
            exact += found[0]
            failures += found[1]
            tolerated += found[2]
            rule = tolerances.rule_for(context) if tag == "td" else None
            tied = tied or bool(rule and rule.ties and not found[1] and NUMBER.fullmatch(text.strip()))
        if exact and tied:
            tolerated += [
                f"{difference} (a near tie: the row's score agrees within its tolerance)" for difference in exact
            ]
        else:
            failures += exact
    return failures, tolerated


# ---------------------------------------------------------------------------------------------
# Cells


def _outputs(cell) -> list[dict]:
    """The cell's outputs with consecutive chunks of one stream joined (their split is not a result)."""
    joined = []
    for output in cell.get("outputs", []):
        if (
            output["output_type"] == "stream"
            and joined
            and joined[-1]["output_type"] == "stream"
            and joined[-1]["name"] == output["name"]
        ):
            joined[-1] = {**joined[-1], "text": joined[-1]["text"] + output["text"]}
        else:
            joined.append(output)
    return joined


def _describe(output: dict) -> str:
    if output["output_type"] == "stream":
        return f"stream {output['name']}"
    if output["output_type"] == "error":
        return f"error {output.get('ename')}"
    return f"{output['output_type']} {sorted(output.get('data', {}))}"


def _shown(output: dict, tolerances: Tolerances) -> tuple[str, str]:
    """(how to compare, sanitized text) of what the output shows."""
    if output["output_type"] == "stream":
        return "lines", tolerances.sanitize(output["text"])
    data = output.get("data", {})
    html = data.get("text/html", "")
    if "<table" in html:
        return "table", tolerances.sanitize(html)
    if "text/markdown" in data:
        return "lines", tolerances.sanitize(data["text/markdown"])
    return "lines", tolerances.sanitize(data.get("text/plain", ""))


def compare_cells(expected, actual, tolerances: Tolerances, where: str = "") -> tuple[list[str], list[str]]:
    """(failures, tolerated differences) between a committed code cell and the same cell run again."""
    errors = [output for output in actual.get("outputs", []) if output["output_type"] == "error"]
    if errors:
        return [
            f"{where}: the cell raised {errors[0]['ename']}: {errors[0]['evalue']}\n"
            + re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0].get("traceback", [])))
        ], []
    wanted, got = _outputs(expected), _outputs(actual)
    kinds = [_describe(output) for output in wanted], [_describe(output) for output in got]
    if [kind.split(" [")[0] for kind in kinds[0]] != [kind.split(" [")[0] for kind in kinds[1]]:
        return [f"{where}: outputs {kinds[0]} expected, got {kinds[1]}"], []
    failures, tolerated = [], []
    for number, (output, got_output) in enumerate(zip(wanted, got), start=1):
        label = f"{where} output {number}"
        data, got_data = output.get("data", {}), got_output.get("data", {})
        missing = [kind for kind in FIGURES if kind in data and kind not in got_data]
        if missing:
            failures.append(f"{label}: the figure ({missing[0]}) is missing")
            continue
        (how, text), (_, got_text) = _shown(output, tolerances), _shown(got_output, tolerances)
        compare = _compare_tables if how == "table" else _compare_lines
        found = compare(text, got_text, tolerances, label)
        failures += found[0]
        tolerated += found[1]
    return failures, tolerated


# ---------------------------------------------------------------------------------------------
# The pytest plugin


def pytest_addoption(parser):
    group = parser.getgroup("nbcheck", "notebook outputs within stated tolerances")
    group.addoption("--nbcheck", action="store_true", help="execute .ipynb files and compare their outputs")
    group.addoption("--nbcheck-tolerances", default=None, help="the YAML file of replace patterns and tolerances")
    group.addoption("--nbcheck-cell-timeout", type=int, default=3600, help="seconds a cell may take")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tolerated = config.stash.get(TOLERATED, [])
    if tolerated:
        terminalreporter.section(f"nbcheck: {len(tolerated)} differences within their stated tolerance")
        for line in tolerated:
            terminalreporter.write_line(line)


def pytest_collect_file(file_path, parent):
    if (
        parent.config.getoption("nbcheck")
        and file_path.suffix == ".ipynb"
        and ".ipynb_checkpoints" not in file_path.parts
    ):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    """One notebook: its code cells are the tests; the notebook is executed once, by the first of them."""

    def collect(self):
        import nbformat

        self.notebook = nbformat.read(self.path, as_version=4)
        self._executed = None
        for index, cell in enumerate(self.notebook.cells):
            if cell.cell_type == "code":
                yield CellItem.from_parent(self, name=f"Cell {cell.execution_count or index}", index=index)

    def executed(self):
        if self._executed is None:
            from workbench.pipeline import execute

            fresh = copy.deepcopy(self.notebook)
            for cell in fresh.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            execute(
                fresh,
                self.path.parent,
                timeout=self.config.getoption("nbcheck_cell_timeout"),
                record_timing=False,
                allow_errors=True,
            )
            self._executed = fresh
        return self._executed

    def tolerances(self) -> Tolerances:
        path = self.config.getoption("nbcheck_tolerances")
        return Tolerances.load(path) if path else Tolerances([], [])


class CellItem(pytest.Item):
    def __init__(self, *, index: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.index = index

    def runtest(self):
        expected = self.parent.notebook.cells[self.index]
        actual = self.parent.executed().cells[self.index]
        failures, tolerated = compare_cells(expected, actual, self.parent.tolerances(), where=self.name)
        self.config.stash.setdefault(TOLERATED, []).extend(f"{self.path.name}::{line}" for line in tolerated)
        if failures:
            raise NotebookMismatch(failures)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, NotebookMismatch):
            return "\n".join(excinfo.value.args[0])
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::{self.name}"


class NotebookMismatch(AssertionError):
    """What a cell shows differs from its committed output beyond the stated tolerances."""


def kernel_variant() -> dict[str, str]:
    """Environment variables that send torch, MKL, oneDNN and numpy down other SIMD paths than this
    CPU's defaults, on one thread: how one machine plays another (``make test-kernels``).

    ``python -m workbench.nbcheck`` prints them as ``NAME=value`` words for a shell or a Makefile.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 moved its internals to numpy._core
    return {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": ",".join(core._multiarray_umath.__cpu_dispatch__),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


if __name__ == "__main__":
    print(" ".join(f"{name}={value}" for name, value in kernel_variant().items()))
