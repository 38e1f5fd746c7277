"""Notebook 08's search widget, driven in a real browser: JupyterLab + headless Chromium (Playwright).

What it proves: in JupyterLab, notebook ``notebooks/08_widget_search_demo.ipynb`` runs from top to
bottom ("Run" → "Run All Cells"), its search widget renders, and typing a query into the widget's
text box and pressing Enter lists, first, the document that exact MaxSim search ranks first for that
query, and draws the token heatmap. The expected document is computed here, without the widget:
exact search (:func:`workbench.scores.colbert_scores`) over the same document embeddings the
notebook's index holds.

How: a module fixture builds a small run folder (the docstring test collection, the untrained
default model as ``models/contrastive``, a Voyager index of its embeddings), another starts
JupyterLab on a free port with ``WORKBENCH_RUN`` pointing at that folder, and the test opens a copy
of the notebook (in the git-ignored ``.cache/browser-test/``, so the committed notebook is never
saved over) in Chromium.

Needs: Chromium at ``/usr/bin/chromium`` and the ``playwright`` Python package (the set-up fixture
tries ``apt-get install -y chromium`` and ``pip install playwright``; Playwright's own browser
download is not used). When either cannot be had, the test skips and says why.

The screenshot: ``.cache/artifacts/notebook-08-search.png`` after the results show (the test prints
its path); on a failure, ``.cache/artifacts/notebook-08-failure.png`` shows the page as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "08_widget_search_demo.ipynb"
# The copy JupyterLab opens: inside root_dir (the server only serves files under it) and git-ignored.
NOTEBOOK_COPY = ROOT / ".cache" / "browser-test" / NOTEBOOK.name
ARTIFACTS = ROOT / ".cache" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLACEHOLDER = "Type a query, then press Enter"  # workbench.widgets.SearchDemo's query box
MARGIN = 1.0  # the expected top document beats the second by more than this MaxSim


# -- set-up: a browser and Playwright ------------------------------------------------------------------


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _attempt(command: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``command``; (return code, last stderr line, or why it could not run)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError as error:
        return 127, str(error)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout:.0f} s"
    return done.returncode, _last_line(done.stderr or done.stdout)


def _install_chromium() -> str | None:
    """None when /usr/bin/chromium is there (installed now if it was missing), else why not."""
    if CHROMIUM.exists():
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "chromium"]
    code, last = _attempt(install, 600, env)
    if code != 0:
        update_code, update_last = _attempt(["apt-get", "update"], 300, env)
        if update_code != 0:
            return (
                f"`{' '.join(install)}` failed (exit {code}): {last}; "
                f"then `apt-get update` failed (exit {update_code}): {update_last}"
            )
        code, last = _attempt(install, 600, env)
    if code != 0:
        return f"`{' '.join(install)}` failed (exit {code}): {last}"
    if not CHROMIUM.exists():
        return f"`{' '.join(install)}` succeeded but {CHROMIUM} is still missing"
    return None


def _install_playwright() -> str | None:
    """None when the playwright package imports (installed now if it was missing), else why not."""
    try:
        importlib.import_module("playwright.sync_api")
        return None
    except ImportError:
        pass
    command = [sys.executable, "-m", "pip", "install", "playwright"]
    code, last = _attempt(command, 600)
    if code != 0:
        return f"`{' '.join(command)}` failed (exit {code}): {last}"
    importlib.invalidate_caches()
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError as error:
        return f"`{' '.join(command)}` ran but `import playwright.sync_api` still fails: {error}"
    return None


@pytest.fixture(scope="module")
def browser_tools() -> Path:
    """Chromium and Playwright, installed when missing; the test skips, saying why, when they cannot be."""
    problems = [problem for problem in (_install_chromium(), _install_playwright()) if problem]
    if problems:
        pytest.skip(
            "The browser test needs Chromium at /usr/bin/chromium and the playwright package: " + "; ".join(problems)
        )
    return CHROMIUM


# -- a run folder for notebook 08 --------------------------------------------------------------------


@dataclass(frozen=True)
class SearchRun:
    run: Path  # what $WORKBENCH_RUN names
    runs_root: Path  # what $WORKBENCH_RUNS names (so the project's runs/latest stays as it is)
    query: str  # a test query whose exact top document is unambiguous
    expected_id: str
    expected_title: str
    margin: float  # MaxSim of the top document minus the second's


@pytest.fixture(scope="module")
def search_run(browser_tools, tmp_path_factory) -> SearchRun:
    """A run with what notebook 08 reads, and a query with its exact top document.

    Depends on ``browser_tools`` so that a machine without a browser skips before the ~30 s build.
    """
    import numpy as np

    base = tmp_path_factory.mktemp("browser-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_RUNS", str(base / "runs"))
        patch.delenv("WORKBENCH_RUN", raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        from workbench import data, indexes, models, retrieve, runs, training_sets
        from workbench.scores import colbert_scores, pack

        run = runs.start_run(base / "run")
        _, test = training_sets.train_test("docstrings")
        data.save_beir(test, run / "data/eval" / test.name)
        run.record("01_build_dataset", {}, outputs={"test_collection": test.name})
        model = models.load_model()  # the embedded untrained default model, offline, seeded
        model.save(str(run / "models/contrastive"))
        ids = list(test.corpus)
        embeddings = model.encode([test.corpus[i] for i in ids], is_query=False)
        index = indexes.Voyager(index_folder=run / "index", index_name=test.name, override=True)
        index.add_documents(ids, embeddings)
        index.close()

        # The first test query (in id order) whose exact top-1 is its relevant document, ahead of the
        # second by more than MARGIN, and which the saved Voyager index (read back as notebook 08
        # reads it, default search settings) ranks first too.
        documents = pack(embeddings)
        saved = retrieve.ColBERT(indexes.Voyager(index_folder=run / "index", index_name=test.name))
        query_ids = sorted(test.judged_queries)
        batch = 16
        for start in range(0, len(query_ids), batch):
            chosen = query_ids[start : start + batch]
            encoded = model.encode([test.queries[q] for q in chosen], is_query=True)
            scores = colbert_scores(encoded, documents).numpy()
            for query_id, embedding, row in zip(chosen, encoded, scores):
                first, second = np.argsort(-row)[:2]
                relevant = {d for d, grade in test.qrels[query_id].items() if grade >= 1}
                if ids[first] not in relevant or row[first] - row[second] <= MARGIN:
                    continue
                voyager_top = saved.retrieve([embedding], k=5)[0][0]["id"]
                if voyager_top != ids[first]:
                    continue
                return SearchRun(
                    run=run.path,
                    runs_root=base / "runs",
                    query=test.queries[query_id],
                    expected_id=ids[first],
                    expected_title=test.titles[ids[first]],
                    margin=float(row[first] - row[second]),
                )
    pytest.fail(
        f"No test query of {test.name} has an unambiguous exact top document that Voyager also "
        f"ranks first (top-1 relevant, margin > {MARGIN}): the test needs one."
    )


# -- JupyterLab ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    base_url: str
    token: str
    log: Path

    def url(self, path: str) -> str:
        separator = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{separator}token={self.token}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_settings(config_dir: Path) -> None:
    """JupyterLab user settings for the test: no autosave, no news or update checks (no network)."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, values in settings.items():
        path = config_dir / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def _stop(process: subprocess.Popen, lab: Lab) -> None:
    """Shut the server down (it stops its kernels), then make sure it and its children are gone."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # psutil missing, or the server already gone
        children = []
    if process.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            request = urllib.request.Request(lab.url("/api/shutdown"), method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    for child in children:  # only processes this server started (its kernel)
        with contextlib.suppress(Exception):
            if child.is_running():
                child.kill()


@pytest.fixture(scope="module")
def lab(search_run, tmp_path_factory):
    """JupyterLab serving the project, with $WORKBENCH_RUN naming the run; shut down afterwards."""
    home = tmp_path_factory.mktemp("jupyter")
    _write_settings(home / "config")
    port, token = _free_port(), secrets.token_hex(24)
    env = {
        **os.environ,
        "WORKBENCH_RUN": str(search_run.run),
        "WORKBENCH_RUNS": str(search_run.runs_root),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Nothing into the user's ~/.jupyter, ~/.local/share/jupyter or ~/.ipython.
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        "--ServerApp.open_browser=False",
        "--ContentsManager.allow_hidden=True",  # the notebook's copy is under .cache/
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the test reads the kernel's state
        "--LabApp.workspaces_dir=" + str(home / "workspaces"),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI often run as root
    log = home / "jupyterlab.log"
    lab = Lab(f"http://127.0.0.1:{port}", token, log)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {process.returncode}:\n{lab.log_tail()}")
            try:
                with urllib.request.urlopen(lab.url("/api/status"), timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on port {port} within 120 s:\n{lab.log_tail()}")
            time.sleep(0.5)
        yield lab
    finally:
        _stop(process, lab)


# -- the test ------------------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_clean(path: Path) -> bool:
    """``path`` is tracked and ``git diff --quiet`` holds for it (False when untracked or without git)."""
    with contextlib.suppress(OSError):
        tracked = (
            subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True).returncode
            == 0
        )
        return tracked and subprocess.run(["git", "diff", "--quiet", "--", str(path)], cwd=ROOT).returncode == 0
    return False


# The notebook's kernel is ready (needs --LabApp.expose_app_in_browser: window.jupyterapp).
KERNEL_READY = """name => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const session = panel && panel.sessionContext;
  const kernel = session && session.session && session.session.kernel;
  return !!(kernel && session.isReady && panel.context.path.endsWith(name)
            && kernel.status === 'idle' && kernel.connectionStatus === 'connected');
}"""

# Code cells' prompts ("[3]:", "[*]:", "[ ]:") and the text of error outputs (tracebacks are stderr
# outputs; the search results are not, though document snippets may well say "Error:").
CELL_STATE = """() => ({
  prompts: [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
             .map(p => p.textContent.trim()),
  errors: [...document.querySelectorAll(
             '.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]')]
             .map(o => o.textContent).filter(t => /Traceback|\\w+(Error|Exception): /.test(t)),
})"""


def _run_all_and_wait(page, timeout: float) -> None:
    """Run all cells from the "Run" menu; wait until every code cell ran; fail on an error output."""
    page.locator("li.lm-MenuBar-item").filter(
        has=page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$"))
    ).click()
    page.locator("li.lm-Menu-item").filter(
        has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
    ).click()
    deadline = time.monotonic() + timeout
    started = False
    while True:
        state = page.evaluate(CELL_STATE)
        prompts, errors = state["prompts"], state["errors"]
        if errors:
            pytest.fail("Notebook 08 raised an error in the browser:\n" + "\n".join(e[-2000:] for e in errors))
        running = any("*" in prompt for prompt in prompts)
        started = started or running
        if prompts and all(re.fullmatch(r"\[\d+\]:", prompt) for prompt in prompts):
            return
        if started and not running:
            pytest.fail(f"Run All stopped before the last cell (prompts {prompts}).")
        if time.monotonic() > deadline:
            pytest.fail(f"Notebook 08 did not finish running within {timeout:.0f} s (prompts {prompts}).")
        time.sleep(0.5)


def test_notebook_08_search_in_browser(browser_tools, search_run, lab, tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    committed, clean_before = _digest(NOTEBOOK), _git_clean(NOTEBOOK)
    NOTEBOOK_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NOTEBOOK, NOTEBOOK_COPY)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot, failure_shot = ARTIFACTS / "notebook-08-search.png", ARTIFACTS / "notebook-08-failure.png"
    page_errors: list[str] = []

    with sync_playwright() as playwright:
        # launch() refuses --user-data-dir in args: a persistent context takes the (fresh) profile folder.
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(browser_tools),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1400},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        try:
            relative = NOTEBOOK_COPY.relative_to(ROOT).as_posix()
            page.goto(lab.url(f"/lab/tree/{relative}"), wait_until="domcontentloaded", timeout=60_000)
            # The notebook is open and its kernel started, connected and idle. (The toolbar's execution
            # indicator says "idle" before there is a kernel at all: Run All clicked then runs nothing.)
            expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=90_000)
            page.wait_for_function(KERNEL_READY, arg=NOTEBOOK_COPY.name, timeout=120_000, polling=250)

            _run_all_and_wait(page, timeout=150)

            widget = page.locator(".widget-vbox").filter(has=page.get_by_placeholder(PLACEHOLDER))
            box = widget.get_by_placeholder(PLACEHOLDER)
            expect(box).to_be_visible(timeout=30_000)
            results = widget.locator("table.workbench-results")
            heatmap = widget.locator("img.widget-image")
            # The notebook itself searched its example query: those results and that heatmap come first.
            expect(results).to_be_visible(timeout=30_000)
            results_before = results.inner_html()
            heatmap_before = heatmap.get_attribute("src") or ""

            box.fill(search_run.query)
            expect(box).to_have_value(search_run.query)
            box.press("Enter")  # continuous_update=False: the value goes to the kernel on Enter

            first_title = widget.locator("table.workbench-results td.workbench-hit b").first
            deadline = time.monotonic() + 60
            while results.inner_html() == results_before or (heatmap.get_attribute("src") or "") == heatmap_before:
                if time.monotonic() > deadline:
                    pytest.fail(
                        "The results or the heatmap did not change within 60 s of typing the query "
                        f"{search_run.query!r} and pressing Enter."
                    )
                time.sleep(0.25)
            expect(first_title).to_have_text(search_run.expected_title, timeout=60_000)
            assert first_title.inner_text().strip() == search_run.expected_title

            source = heatmap.get_attribute("src") or ""
            assert source, "The heatmap <img> has no src."
            expect(heatmap).to_be_visible()
            assert page.evaluate("image => image.complete && image.naturalWidth > 0", heatmap.element_handle()), (
                "The heatmap <img> did not decode to a picture."
            )

            widget.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))
            print(f"\nscreenshot: {screenshot}")
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(failure_shot))
                (ARTIFACTS / "notebook-08-failure.html").write_text(page.content(), encoding="utf-8")
                print(f"\nfailure screenshot: {failure_shot}")
            if page_errors:
                print("page errors:\n" + "\n".join(page_errors))
            print("JupyterLab log (tail):\n" + lab.log_tail())
            raise
        finally:
            context.close()

    # JupyterLab ran a copy and autosave is off: the notebook itself must be as it was (a change here
    # means a save reached it, or someone edited it while the test ran).
    assert _digest(NOTEBOOK) == committed, f"{NOTEBOOK} changed while the browser test ran."
    if clean_before:
        assert _git_clean(NOTEBOOK), f"git diff shows changes to {NOTEBOOK} after the browser test."
