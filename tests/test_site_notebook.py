"""notebooks/trends.ipynb runs top to bottom on nightly runs the test makes, and marks the
regression that harness compare flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from notebookkit import write_kernelspec
from sitekit import nightly_runs

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "trends.ipynb"


def test_trends_notebook_is_committed_as_its_maker_writes_it():
    sys.path.insert(0, str(ROOT / "notebooks"))
    try:
        import make_trends
    finally:
        sys.path.remove(str(ROOT / "notebooks"))
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert committed == make_trends.build(), "run python notebooks/make_trends.py"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_trends_notebook_runs_on_nightly_runs(tmp_path, monkeypatch):
    runs = nightly_runs(tmp_path / "results")
    write_kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "suite nightly: 3 runs" in text
    # the third run costs 50% more: harness compare flags each setup's energy, nothing else
    assert "in 2 comparisons" in text
    assert runs[2].name in text and runs[0].name not in text.split("regressions (threshold")[1]
    assert "+50.0%" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the trends figure is shown"
