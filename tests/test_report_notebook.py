"""notebooks/analysis.ipynb runs top to bottom on a synthetic run, with this interpreter's kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakeruns import standard_cases, write_run
from notebookkit import write_kernelspec

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "RUN_DIR" in code[0].source and "HARNESS_RUN_DIR" in code[0].source


def test_notebook_runs_on_a_synthetic_run(tmp_path, monkeypatch):
    run = write_run(tmp_path / "results", standard_cases())
    write_kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HARNESS_RUN_DIR", str(run))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel imports harness from this checkout even where it is not installed
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert str(run) in text
    assert "tiny-l" in text and "co2e_g_per_1000_queries" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the Pareto figure is shown"
