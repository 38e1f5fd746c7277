"""What a run records about how it was made: versions, the workbench's commit, the CPU's features, precision."""

import json
import subprocess

from workbench import provenance, runs

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu
"""


def test_the_cpu_model_and_the_kernel_deciding_features_are_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    found = provenance.machine(path)
    assert found["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert found["cpu_features"] == ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]  # the first CPU's
    assert isinstance(found["gpus"], list) and found["logical_cores"] >= 1
    assert provenance.machine(tmp_path / "absent")["cpu_features"] == []


def git(folder, *arguments):
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.org"]
    return subprocess.run(
        ["git", "-C", str(folder), *identity, *arguments], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_commit_and_whether_tracked_files_changed_since(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    assert provenance.git(tmp_path) == {"commit": git(tmp_path, "rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "notes.txt").write_text("untracked files do not make a checkout dirty\n")
    assert provenance.git(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git(tmp_path)["dirty"] is True
    # An installed copy inside someone else's repository is not that repository's commit.
    (tmp_path / "site-packages").mkdir()
    assert provenance.git(tmp_path / "site-packages") is None


def test_every_step_records_what_made_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("WORKBENCH_RUN", raising=False)
    run = runs.start_run()
    run.record("04_indexing", {"seed": 3}, {"shown": 1})
    entry = json.loads((run / "steps" / "04_indexing.json").read_text())
    assert entry["parameters"] == {"seed": 3}
    assert entry["machine"]["cpu_features"] == provenance.machine()["cpu_features"]
    assert entry["torch"]["float32_matmul_precision"] in {"highest", "high", "medium"}
    assert entry["versions"]["workbench"] == provenance.versions()["workbench"]
    expected = provenance.git()
    assert entry["git"] == expected
    # a clone records its commit; an installed copy (no .git of its own) records None rather than a guess
    assert (expected is not None) == (provenance.PROJECT / ".git").exists()
    assert expected is None or len(expected["commit"]) == 40
