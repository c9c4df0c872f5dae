"""notebooks/own_training.ipynb runs top to bottom: a Trainer with EnergyCallback, the forecast
against the actual, a second run stopped on a budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from notebookkit import write_kernelspec

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "own_training.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow  # ~35 s on a loaded 2-core machine, most of it importing transformers
def test_notebook_trains_forecasts_and_stops_on_a_budget(tmp_path, monkeypatch):
    write_kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert f"run folder: {tmp_path / 'results'}" in text
    assert "forecast after" in text and "the interval" in text and "actual" in text
    assert "produce_j" in text and "tiny-xs" in text
    assert "stopped after" in text and "energy budget" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the forecast figure is shown"
    runs = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert len(runs) == 2 and runs[0].startswith("own-training-")
